//! Property-based fuzzing of the scorer's record decoder (the protobuf
//! envelope of the events topic) and of its configuration loader: any
//! bytes yield an input or a dead letter with a reason, any TOML a config
//! or an error naming the problem — never a panic. Bounded in CI; set
//! `PROPTEST_CASES` for a longer run.

use outlier_common::kafka::Topics;
use outlier_proto::{Event, Exec, Feedback, FeedbackLabel, event::Detail};
use outlier_scorer::config::ScorerConfig;
use outlier_scorer::decode::{Input, Reason, decode};
use proptest::prelude::*;
use prost::Message as _;
use rdkafka::Timestamp;
use rdkafka::message::{OwnedHeaders, OwnedMessage};

fn topics() -> Topics {
    Topics::default()
}

fn msg(payload: Vec<u8>, headers: Option<OwnedHeaders>) -> OwnedMessage {
    on_topic(payload, headers, &topics().events)
}

fn on_topic(payload: Vec<u8>, headers: Option<OwnedHeaders>, topic: &str) -> OwnedMessage {
    OwnedMessage::new(
        Some(payload),
        None,
        topic.into(),
        Timestamp::NotAvailable,
        0,
        0,
        headers,
    )
}

const MAX: usize = 256 * 1024;

proptest! {
    #[test]
    fn arbitrary_bytes_decode_or_dead_letter(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        match decode(&msg(b, None), &topics(), MAX) {
            Ok(_) => {}
            Err(dl) => prop_assert!(!dl.reason.is_empty()),
        }
    }

    #[test]
    fn arbitrary_feedback_bytes_decode_or_dead_letter(b in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let m = on_topic(b, None, &topics().feedback);
        if let Err(dl) = decode(&m, &topics(), MAX) {
            prop_assert!(!dl.reason.is_empty());
        }
    }

    #[test]
    fn events_are_accepted_exactly_when_their_names_are_valid(
        org in "\\PC{0,140}",
        workload in "\\PC{0,140}",
        argv in proptest::collection::vec("\\PC{0,50}", 0..5),
    ) {
        let e = Event {
            org: org.clone(),
            workload: workload.clone(),
            detail: Some(Detail::Exec(Exec { argv, ..Exec::default() })),
            ..Event::default()
        };
        let valid = outlier_common::names::validate("org", &org).is_ok()
            && outlier_common::names::validate("workload", &workload).is_ok();
        let out = decode(&msg(e.encode_to_vec(), None), &topics(), MAX);
        prop_assert_eq!(out.is_ok(), valid);
        if let Ok(Input::Event(d)) = out {
            prop_assert_eq!(d.org, org);
        }
    }

    #[test]
    fn config_text_loads_or_names_the_problem(text in "\\PC{0,400}") {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scorer.toml");
        std::fs::write(&path, &text).unwrap();
        if let Err(e) = outlier_common::config::load::<ScorerConfig>("OUTLIER_FUZZ_NONE", Some(&path)) {
            prop_assert!(!outlier_common::config::describe(&e).is_empty());
        }
    }
}

#[test]
fn oversize_records_are_dead_lettered_with_the_limit() {
    let e = Event {
        org: "o".into(),
        workload: "w".into(),
        detail: Some(Detail::Exec(Exec {
            argv: vec!["x".repeat(MAX)],
            ..Exec::default()
        })),
        ..Event::default()
    };
    let Err(dl) = decode(&msg(e.encode_to_vec(), None), &topics(), MAX) else {
        panic!("an oversize record was accepted");
    };
    assert_eq!(dl.label, Reason::Oversize);
    assert!(dl.reason.contains("max_event_bytes"), "{}", dl.reason);
}

fn event(org: &str) -> Event {
    Event {
        org: org.into(),
        workload: "web".into(),
        detail: Some(Detail::Exec(Exec {
            argv: vec!["id".into()],
            ..Exec::default()
        })),
        ..Event::default()
    }
}

#[test]
fn an_org_topic_carries_only_its_own_org() {
    let t = topics();
    let acme = t.events_for_org("acme").unwrap();
    let own = decode(
        &on_topic(event("acme").encode_to_vec(), None, &acme),
        &t,
        MAX,
    );
    assert!(matches!(own, Ok(Input::Event(e)) if e.org == "acme"));
    let Err(dl) = decode(
        &on_topic(event("globex").encode_to_vec(), None, &acme),
        &t,
        MAX,
    ) else {
        panic!("an event of another org was accepted on acme's topic");
    };
    assert_eq!(dl.label, Reason::OrgMismatch);
    assert!(
        dl.reason.contains("globex") && dl.reason.contains("acme"),
        "{}",
        dl.reason
    );
    // The shared topic takes any org (its writers are trusted for all).
    assert!(decode(&msg(event("globex").encode_to_vec(), None), &t, MAX).is_ok());
}

#[test]
fn feedback_is_taken_from_the_feedback_topic_only() {
    let t = topics();
    let fb = Feedback {
        event: Some(event("acme")),
        label: FeedbackLabel::Benign as i32,
        actor: "ops".into(),
        ..Feedback::default()
    };
    let ok = decode(&on_topic(fb.encode_to_vec(), None, &t.feedback), &t, MAX);
    assert!(matches!(ok, Ok(Input::Feedback(f)) if f.actor == "ops"));
    // The old way (a header on the events topic) is what a collector's
    // credentials could forge: refused.
    let h = OwnedHeaders::new().insert(rdkafka::message::Header {
        key: outlier_common::kafka::RECORD_KIND_HEADER,
        value: Some(b"feedback".as_slice()),
    });
    let Err(dl) = decode(&msg(fb.encode_to_vec(), Some(h)), &t, MAX) else {
        panic!("feedback on the events topic was accepted");
    };
    assert_eq!(dl.label, Reason::FeedbackOnEvents);
}
