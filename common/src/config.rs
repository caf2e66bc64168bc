//! Layered configuration: defaults < TOML file < environment < flags.
//!
//! Every binary has one serde struct with `deny_unknown_fields`, so a typo in
//! a config file or variable is an error that names the key, never a silently
//! ignored setting. Environment variables are `PREFIX__SECTION__KEY`, for
//! example `OUTLIER_SCORER__KAFKA__BROKERS=10.0.0.5:9092`.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Loads `T` from its defaults, then `file` (if given; it must exist), then
/// environment variables starting with `env_prefix` followed by `__`.
pub fn load<T>(env_prefix: &str, file: Option<&Path>) -> Result<T, Box<figment::Error>>
where
    T: Default + Serialize + DeserializeOwned,
{
    let mut figment = Figment::from(Serialized::defaults(T::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(Box::new(figment::Error::from(format!(
                "config file {} does not exist",
                path.display()
            ))));
        }
        figment = figment.merge(Toml::file(path));
    }
    figment = figment.merge(Env::prefixed(&format!("{env_prefix}__")).split("__"));
    figment.extract().map_err(Box::new)
}

/// Reads a secret (a password) from the file a config key names; a
/// trailing newline is not part of it. The error names the key.
pub fn read_secret_file(key: &str, path: &str) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
        .map_err(|e| format!("{key} {path}: {e}"))
}

/// The effective configuration as pretty JSON for `--print-config`, with
/// secrets masked: any value under a key naming a password, secret or token
/// (ClickHouse passwords, `sasl.password`, `ssl.key.password`, ...).
pub fn to_redacted_json<T: Serialize>(cfg: &T) -> String {
    fn redact(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    let k = k.to_ascii_lowercase();
                    let secret = ["password", "secret", "token"]
                        .iter()
                        .any(|s| k.contains(s))
                        && !k.ends_with("_file");
                    match x {
                        serde_json::Value::String(s) if secret && !s.is_empty() => {
                            *s = "<redacted>".into();
                        }
                        _ => redact(x),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter_mut().for_each(redact),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(cfg).unwrap_or_default();
    redact(&mut v);
    serde_json::to_string_pretty(&v).unwrap_or_default()
}

/// Renders a figment error on one line per problem, each naming its key.
pub fn describe(err: &figment::Error) -> String {
    err.clone()
        .into_iter()
        .map(|e| {
            let key = if e.path.is_empty() {
                String::new()
            } else {
                format!("key `{}`: ", e.path.join("."))
            };
            let source = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            format!("{key}{}{source}", e.kind)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod redact_tests {
    #[test]
    fn printed_configs_hide_secrets_but_not_paths() {
        let cfg = serde_json::json!({
            "clickhouse": {"user": "default", "password": "hunter2"},
            "kafka": {"properties": {"sasl.password": "p", "sasl.username": "u"}},
            "auth": {"tokens_file": "/etc/outlier/tokens.toml"},
        });
        let out = super::to_redacted_json(&cfg);
        assert!(!out.contains("hunter2") && !out.contains("\"p\""), "{out}");
        assert!(out.contains("<redacted>") && out.contains("\"u\""), "{out}");
        assert!(out.contains("/etc/outlier/tokens.toml"), "{out}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Inner {
        brokers: String,
        batch: u32,
    }

    #[derive(Debug, Default, Serialize, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields, default)]
    struct Conf {
        name: String,
        kafka: Inner,
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment's Jail API
    fn file_and_env_layer_over_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "name = \"x\"\n[kafka]\nbrokers = \"h:1\"\nbatch = 5\n",
        )
        .unwrap();
        figment::Jail::expect_with(|jail| {
            jail.set_env("OUTLIER_TEST__KAFKA__BATCH", "9");
            let c: Conf = load("OUTLIER_TEST", Some(&path)).map_err(|e| e.to_string())?;
            assert_eq!(c.name, "x");
            assert_eq!(c.kafka.brokers, "h:1");
            assert_eq!(c.kafka.batch, 9);
            Ok(())
        });
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbrokrs = \"h:1\"\n").unwrap();
        let err = load::<Conf>("OUTLIER_TEST2", Some(&path)).unwrap_err();
        let msg = describe(&err);
        assert!(msg.contains("brokrs"), "{msg}");
        assert!(msg.contains("kafka"), "{msg}");
    }

    #[test]
    fn bad_value_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[kafka]\nbatch = \"many\"\n").unwrap();
        let msg = describe(&load::<Conf>("OUTLIER_TEST3", Some(&path)).unwrap_err());
        assert!(msg.contains("kafka.batch"), "{msg}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err =
            load::<Conf>("OUTLIER_TEST4", Some(Path::new("/nonexistent/c.toml"))).unwrap_err();
        assert!(describe(&err).contains("does not exist"));
    }
}
