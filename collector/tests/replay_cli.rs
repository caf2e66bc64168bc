//! The `collector replay` command as a user runs it.
#![cfg(feature = "services")]

use std::io::Write;
use std::process::{Command, Stdio};

fn collector() -> Command {
    Command::new(env!("CARGO_BIN_EXE_collector"))
}

#[test]
fn unreachable_kafka_is_reported_and_fails() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        f,
        r#"{{"org":"o","workload":"w","host":"h","kind":"exec","argv":["true"]}}"#
    )
    .unwrap();
    let out = collector()
        .args(["--brokers", "127.0.0.1:1", "replay", "--file"])
        .arg(f.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kafka unreachable at 127.0.0.1:1"), "{err}");
}

#[test]
fn missing_file_is_reported() {
    let out = collector()
        .args([
            "--brokers",
            "127.0.0.1:1",
            "replay",
            "--file",
            "/nonexistent/events.jsonl",
        ])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
}

#[test]
fn bad_config_key_is_named() {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "[kafka]\nbrokerz = \"x:1\"").unwrap();
    let out = collector()
        .arg("--config")
        .arg(f.path())
        .args(["replay", "--file", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("brokerz"), "{err}");
}

/// Needs the Kafka of the test stack (scripts/stack up --infra).
#[test]
fn input_with_nothing_valid_fails_after_reporting_each_line() {
    let brokers =
        std::env::var("OUTLIER_TEST_KAFKA").unwrap_or_else(|_| "127.0.0.1:9092".to_string());
    let sasl = outlier_common::kafka::SaslConfig::from_env()
        .map(|s| s.env_vars("OUTLIER_COLLECTOR"))
        .unwrap_or_default();
    let mut child = collector()
        .envs(sasl)
        .args([
            "--brokers",
            &brokers,
            "replay",
            "--file",
            "-",
            "--topic",
            "outlier.test.nothing-valid",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"{oops\n\n{\"org\":\"o\",\"workload\":\"w\",\"host\":\"h\",\"kind\":\"exec\",\"uid\":\"root\"}\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("kafka unreachable"),
        "the test stack must be up: {err}"
    );
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(err.contains("line=1"), "{err}");
    assert!(
        err.contains("line=3"),
        "blank line 2 is not counted as an error: {err}"
    );
    assert!(err.contains("2 invalid"), "{err}");
}
