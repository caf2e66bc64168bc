//! The trust boundary of the query services, on the real stack: TLS with a
//! CA made here by openssl (as scripts/stack does), bearer tokens mapped to
//! the orgs each identity may read. A call without a token is
//! UNAUTHENTICATED, a call for another org PERMISSION_DENIED, a resume
//! cursor of another org refused, a plaintext client cannot talk to the
//! server at all — and the right token reads its org's events. Feedback by
//! event id needs an identity allowed it, and is audited under its name.
#![cfg(feature = "services")]

use std::time::Duration;

use outlier_collector::publish::Publisher;
use outlier_collector::replay::replay;
use outlier_e2e::TestEnv;
use outlier_indexer::auth::token_sha256;
use outlier_proto::alert_stream_client::AlertStreamClient;
use outlier_proto::event_query_client::EventQueryClient;
use outlier_proto::feedback_service_client::FeedbackServiceClient;
use outlier_proto::{
    FeedbackLabel, QueryEventsRequest, StreamAlertsRequest, SubmitFeedbackRequest,
};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

fn query(org: &str) -> tonic::Request<QueryEventsRequest> {
    tonic::Request::new(QueryEventsRequest {
        org: org.into(),
        page_size: 100,
        ..QueryEventsRequest::default()
    })
}

fn with_token<T>(mut r: tonic::Request<T>, token: &str) -> tonic::Request<T> {
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_a_known_token_reads_and_only_its_orgs() {
    let env = TestEnv::new("auth").await;
    let org = format!("acme-{}", env.id);
    let other = format!("globex-{}", env.id);
    let cfg = env.secure_indexer_config(&format!(
        "[[identity]]\nname = \"acme-soc\"\ntoken_sha256 = \"{}\"\norgs = [\"{org}\"]\n\
         [[identity]]\nname = \"alice\"\ntoken_sha256 = \"{}\"\norgs = [\"{org}\"]\nfeedback = true\n",
        token_sha256("t-acme"),
        token_sha256("t-alice")
    ));
    let addr = cfg.grpc_addr;
    let shutdown = CancellationToken::new();
    let scorer = tokio::spawn(outlier_scorer::run(env.scorer_config(), shutdown.clone()));
    let indexer = tokio::spawn(outlier_indexer::run(cfg, shutdown.clone()));

    let publisher = Publisher::new(&env.kafka, "e2e").unwrap();
    let line = |o: &str, id: &str| {
        format!(
            r#"{{"event_id":"{id}","org":"{o}","workload":"web","host":"h","kind":"exec","comm":"nginx","argv":["nginx"]}}"#
        )
    };
    let text = format!("{}\n{}\n", line(&org, "mine"), line(&other, "theirs"));
    replay(text.as_bytes(), &publisher).await.unwrap();

    let ca = env.ca_pem();
    outlier_indexer::install_crypto_provider();
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca));
    let mut channel = None;
    for _ in 0..120 {
        if let Ok(c) = Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(tls.clone())
            .unwrap()
            .connect()
            .await
        {
            channel = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let channel = channel.expect("the indexer serves TLS");
    let mut q = EventQueryClient::new(channel.clone());

    // The right token reads its org's event.
    let mut mine = Vec::new();
    for _ in 0..240 {
        mine = q
            .query_events(with_token(query(&org), "t-acme"))
            .await
            .expect("the acme token reads acme")
            .into_inner()
            .events;
        if !mine.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(mine.len(), 1, "acme's event is readable with acme's token");
    assert_eq!(mine[0].event.as_ref().unwrap().event_id, "mine");

    // No token, a wrong token, another org.
    let e = q.query_events(query(&org)).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = q
        .query_events(with_token(query(&org), "guess"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = q
        .query_events(with_token(query(&other), "t-acme"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // The alert stream: another org refused, and a cursor made for
    // another org does not resume in this one.
    let mut a = AlertStreamClient::new(channel.clone());
    let req = |o: &str, cursor: &str| {
        with_token(
            tonic::Request::new(StreamAlertsRequest {
                org: o.into(),
                resume_cursor: cursor.into(),
                ..StreamAlertsRequest::default()
            }),
            "t-acme",
        )
    };
    let e = a.stream_alerts(req(&other, "")).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let foreign = format!("v2.{}.{}", hex_encode(&other), hex_encode("0=0"));
    let e = a.stream_alerts(req(&org, &foreign)).await.unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");

    // Feedback by event id: only an identity allowed it, only on its orgs,
    // only on an event that exists; audited under the caller's name.
    let mut f = FeedbackServiceClient::new(channel.clone());
    let fb = |o: &str, id: &str, token: &str| {
        with_token(
            tonic::Request::new(SubmitFeedbackRequest {
                org: o.into(),
                event_id: id.into(),
                label: FeedbackLabel::Benign as i32,
                reason: "our deploy script".into(),
                ..SubmitFeedbackRequest::default()
            }),
            token,
        )
    };
    let e = f
        .submit_feedback(fb(&org, "mine", "t-acme"))
        .await
        .unwrap_err();
    assert_eq!(
        e.code(),
        Code::PermissionDenied,
        "a reader gave feedback: {e}"
    );
    let e = f
        .submit_feedback(fb(&other, "mine", "t-alice"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    let e = f
        .submit_feedback(fb(&org, "no-such-event", "t-alice"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    let applied = outlier_e2e::feedback_applied;
    let before = applied();
    let done = f
        .submit_feedback(fb(&org, "mine", "t-alice"))
        .await
        .expect("alice gives feedback")
        .into_inner()
        .feedback
        .unwrap();
    assert_eq!(done.actor, "alice");
    assert_eq!(done.event.as_ref().unwrap().event_id, "mine");
    #[derive(serde::Deserialize, clickhouse::Row)]
    struct Audit {
        actor: String,
        note: String,
        label: String,
    }
    let ch = env.clickhouse();
    let mut audited = Vec::new();
    for _ in 0..240 {
        audited = ch
            .query("SELECT actor, note, label FROM feedback_audit FINAL WHERE org = ? AND event_id = 'mine'")
            .bind(&org)
            .fetch_all::<Audit>()
            .await
            .unwrap_or_default();
        if !audited.is_empty() && applied() > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(audited.len(), 1, "audited once");
    assert_eq!(
        (
            audited[0].actor.as_str(),
            audited[0].note.as_str(),
            audited[0].label.as_str()
        ),
        ("alice", "our deploy script", "benign")
    );
    assert!(applied() > before, "the scorer applied the feedback");

    // Beyond the workload: benign for the host is a suppression of exactly
    // this behaviour there, malicious for the org a fleet signature, both
    // authored by the caller; malicious for one host is refused.
    let scoped = |label: FeedbackLabel, scope: outlier_proto::FeedbackScope| {
        with_token(
            tonic::Request::new(SubmitFeedbackRequest {
                org: org.clone(),
                event_id: "mine".into(),
                label: label as i32,
                reason: "reviewed".into(),
                scope: scope as i32,
                expires_in_s: 3600,
            }),
            "t-alice",
        )
    };
    let r = f
        .submit_feedback(scoped(
            FeedbackLabel::Benign,
            outlier_proto::FeedbackScope::Host,
        ))
        .await
        .expect("host-scoped benign feedback")
        .into_inner();
    let sup = r.suppression.expect("a suppression for the host");
    assert_eq!(sup.author, "alice");
    assert_eq!(
        sup.host,
        r.feedback.as_ref().unwrap().event.as_ref().unwrap().host
    );
    assert!(!sup.program.is_empty() && !sup.argv.is_empty(), "{sup:?}");
    assert!(r.signature.is_none());
    let e = f
        .submit_feedback(scoped(
            FeedbackLabel::Malicious,
            outlier_proto::FeedbackScope::Host,
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let r = f
        .submit_feedback(scoped(
            FeedbackLabel::Malicious,
            outlier_proto::FeedbackScope::Org,
        ))
        .await
        .expect("org-scoped malicious feedback")
        .into_inner();
    let sig = r.signature.expect("a fleet signature");
    assert_eq!(
        (sig.author.as_str(), sig.org.as_str()),
        ("alice", org.as_str())
    );
    assert_eq!(sig.event_id, "mine");

    // Plaintext cannot talk to the TLS server.
    let plain = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(c) = plain {
        let e = EventQueryClient::new(c)
            .query_events(with_token(query(&org), "t-acme"))
            .await
            .unwrap_err();
        assert_ne!(e.code(), Code::Ok);
    }

    shutdown.cancel();
    scorer.await.unwrap().unwrap();
    indexer.await.unwrap().unwrap();
    env.cleanup().await;
}

fn hex_encode(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn an_indexer_without_tls_and_tokens_refuses_to_start_off_loopback() {
    let env = TestEnv::new("auth-config").await;
    let mut cfg = env.indexer_config();
    cfg.auth.insecure = true;
    cfg.grpc_addr = "0.0.0.0:0".parse().unwrap();
    let e = outlier_indexer::run(cfg, CancellationToken::new())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("auth.insecure") && e.contains("not loopback"),
        "{e}"
    );
}
