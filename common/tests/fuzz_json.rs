//! Property-based fuzzing of the JSON Lines decoder (`outlier replay`,
//! feedback files): any line yields an event that passes the contract's
//! bounds, or an error — never a panic. Bounded in CI; set
//! `PROPTEST_CASES` for a longer run.

use outlier_common::{json, names};
use proptest::prelude::*;

fn arb_json() -> impl Strategy<Value = String> {
    let s = "\\PC{0,300}";
    (
        (s, s, s, s),
        proptest::collection::vec(s, 0..6),
        any::<u64>(),
        prop_oneof!["exec", "connect", "open", s],
        s,
        any::<u32>(),
    )
        .prop_map(|((org, wl, host, comm), argv, ts, kind, text, n)| {
            serde_json::json!({
                "org": org, "workload": wl, "host": host, "comm": comm, "ts_ns": ts,
                "kind": kind, "argv": argv, "remote_ip": text, "remote_port": n,
                "path": text, "flags": n, "pid": n,
            })
            .to_string()
        })
}

proptest! {
    #[test]
    fn arbitrary_text_never_panics(line in "\\PC{0,2000}") {
        let _ = json::parse_line(&line, 1, || "id".to_string());
    }

    #[test]
    fn decoded_events_respect_the_contract(line in arb_json()) {
        if let Ok(e) = json::parse_line(&line, 1, || "id".to_string()) {
            prop_assert!(names::validate("org", &e.org).is_ok());
            prop_assert!(names::validate("workload", &e.workload).is_ok());
            prop_assert!(e.detail.is_some());
        }
    }
}
