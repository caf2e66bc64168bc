//! Indexer configuration (`indexer.toml`, `OUTLIER_INDEXER__*`).

use std::net::SocketAddr;

use outlier_common::kafka::KafkaConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IndexerConfig {
    pub kafka: KafkaConfig,
    /// Consumer group; indexers in one group share the scored topic.
    pub group_id: String,
    /// Address of `/metrics` and `/health`.
    pub http_addr: SocketAddr,
    pub clickhouse: ClickHouseConfig,
    pub batch: BatchConfig,
    /// Address of the gRPC services (query, search, alert stream).
    pub grpc_addr: SocketAddr,
    pub search: SearchConfig,
    /// Seconds a batch may keep failing while ClickHouse answers before
    /// the rows it refuses are found and dead-lettered.
    pub poison_budget_s: u64,
    pub auth: AuthConfig,
    pub tls: TlsConfig,
    pub incidents: IncidentsConfig,
    /// Push output of OCSF findings to an HTTP webhook (off by default).
    pub webhook: crate::webhook::WebhookConfig,
    /// The web console (off unless `console.addr` is set).
    pub console: crate::console::ConsoleConfig,
}

/// How flagged events are grouped into incidents (see `incidents.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IncidentsConfig {
    /// A flagged event joins an incident of its host's process tree or
    /// behaviour if it happened within this many seconds of it.
    pub window_s: u64,
    /// Open incidents held in memory; beyond it the least recent close.
    pub max_open: usize,
}

impl Default for IncidentsConfig {
    fn default() -> Self {
        Self {
            window_s: 900,
            max_open: 100_000,
        }
    }
}

/// Who may call the gRPC services (see `auth.rs`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// TOML file mapping token hashes to identities and their orgs.
    pub tokens_file: String,
    /// Serve without TLS or authentication; refused unless `grpc_addr` is
    /// a loopback address. For tests and a laptop, never a fleet.
    pub insecure: bool,
}

/// TLS of the gRPC services (PEM files).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Server certificate chain.
    pub cert: String,
    /// Its private key.
    pub key: String,
}

impl IndexerConfig {
    /// Checks the security settings at start-up; the error names the key.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        self.clickhouse.validate()?;
        if self.incidents.window_s == 0 || self.incidents.window_s > 86_400 {
            return Err(format!(
                "incidents.window_s = {} is out of range (1..=86400 seconds)",
                self.incidents.window_s
            ));
        }
        self.webhook.validate()?;
        if self.poison_budget_s == 0 {
            return Err("poison_budget_s must be at least 1".into());
        }
        if self.batch.max_rows == 0 {
            return Err("batch.max_rows must be at least 1".into());
        }
        if self.batch.max_bytes < 1 << 20 {
            return Err(format!(
                "batch.max_bytes = {} is below 1 MiB (one record may be that large)",
                self.batch.max_bytes
            ));
        }
        if self.batch.max_inflight == 0 {
            return Err("batch.max_inflight must be at least 1".into());
        }
        if self.incidents.max_open == 0 {
            return Err("incidents.max_open must be at least 1".into());
        }
        self.console.address(self.auth.insecure)?;
        if self.auth.insecure {
            if !self.grpc_addr.ip().is_loopback() {
                return Err(format!(
                    "auth.insecure serves without TLS or tokens and is refused on {} (not loopback); set tls.cert, tls.key and auth.tokens_file",
                    self.grpc_addr
                ));
            }
            return Ok(());
        }
        for (key, v) in [
            ("tls.cert", &self.tls.cert),
            ("tls.key", &self.tls.key),
            ("auth.tokens_file", &self.auth.tokens_file),
        ] {
            if v.is_empty() {
                return Err(format!(
                    "{key} is not set: the gRPC services serve TLS with tokens (or, on loopback only, auth.insecure = true)"
                ));
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SearchConfig {
    /// LanceDB location of the search index (a directory or an object-store
    /// URI); every indexer and the search service must share it.
    pub uri: String,
    /// An org's table gets a vector index (IVF-SQ) once it has this many
    /// distinct behaviours; new rows are added to it without training, and
    /// it is trained again once the table has four times the rows.
    pub index_min_rows: usize,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            uri: ".outlier/search".to_string(),
            index_min_rows: 100_000,
        }
    }
}

impl Default for IndexerConfig {
    fn default() -> Self {
        Self {
            kafka: KafkaConfig::default(),
            group_id: "outlier-indexer".to_string(),
            http_addr: "127.0.0.1:9102".parse().expect("valid address"),
            clickhouse: ClickHouseConfig::default(),
            batch: BatchConfig::default(),
            grpc_addr: "127.0.0.1:50051".parse().expect("valid address"),
            search: SearchConfig::default(),
            poison_budget_s: 30,
            auth: AuthConfig::default(),
            tls: TlsConfig::default(),
            incidents: IncidentsConfig::default(),
            webhook: crate::webhook::WebhookConfig::default(),
            console: crate::console::ConsoleConfig::default(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClickHouseConfig {
    /// HTTP endpoint of the server.
    pub url: String,
    pub database: String,
    pub user: String,
    /// The user's password; prefer `password_file`.
    pub password: String,
    /// File holding the password (trailing newline ignored).
    pub password_file: String,
    /// Days of events kept: a TTL where the server supports one, otherwise
    /// the indexer drops older daily partitions itself.
    pub retention_days: u32,
    /// Name of a ClickHouse cluster (the servers' `remote_servers`) whose
    /// replicas hold the tables: replicated storage tables behind
    /// Distributed ones, created `ON CLUSTER`. Empty: one server.
    pub cluster: String,
}

impl Default for ClickHouseConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8123".to_string(),
            database: "outlier".to_string(),
            user: "default".to_string(),
            password: String::new(),
            password_file: String::new(),
            retention_days: 30,
            cluster: String::new(),
        }
    }
}

impl ClickHouseConfig {
    /// The password, from `password` or `password_file`.
    pub fn password(&self) -> Result<String, String> {
        if self.password_file.is_empty() {
            return Ok(self.password.clone());
        }
        outlier_common::config::read_secret_file("clickhouse.password_file", &self.password_file)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.password.is_empty() && !self.password_file.is_empty() {
            return Err("clickhouse.password and clickhouse.password_file are both set".into());
        }
        // Part of DDL: a plain identifier only.
        if !self
            .cluster
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(format!(
                "clickhouse.cluster `{}`: letters, digits and _ only",
                self.cluster
            ));
        }
        self.password().map(|_| ())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Insert when this many rows are buffered...
    pub max_rows: usize,
    /// ...or this many bytes of scored records (a batch holds at least one)...
    pub max_bytes: usize,
    /// ...or when the oldest buffered row has waited this long.
    pub max_wait_ms: u64,
    /// Batches being written at once (offsets are stored in order, each
    /// only once its batch and every earlier one are stored).
    pub max_inflight: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            max_rows: 50_000,
            max_bytes: 64 << 20,
            max_wait_ms: 200,
            max_inflight: 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_settings_are_required_unless_insecure_on_loopback() {
        let mut c = IndexerConfig::default();
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("tls.cert is not set"), "{e}");
        c.auth.insecure = true;
        assert!(c.validate().is_ok());
        c.grpc_addr = "0.0.0.0:50051".parse().unwrap();
        assert!(c.validate().unwrap_err().contains("not loopback"));
        c.auth.insecure = false;
        c.tls.cert = "c.pem".into();
        c.tls.key = "k.pem".into();
        assert!(c.validate().unwrap_err().starts_with("auth.tokens_file"));
        c.auth.tokens_file = "t.toml".into();
        assert!(c.validate().is_ok());
    }

    #[test]
    fn out_of_range_settings_are_refused_at_load_by_name() {
        let bad = |f: fn(&mut IndexerConfig)| {
            let mut c = IndexerConfig::default();
            c.auth.insecure = true;
            assert_eq!(c.validate(), Ok(()));
            f(&mut c);
            c.validate().unwrap_err()
        };
        assert!(bad(|c| c.batch.max_inflight = 0).starts_with("batch.max_inflight"));
        assert!(bad(|c| c.batch.max_rows = 0).starts_with("batch.max_rows"));
        assert!(bad(|c| c.batch.max_bytes = 0).starts_with("batch.max_bytes"));
        assert!(bad(|c| c.poison_budget_s = 0).starts_with("poison_budget_s"));
        assert!(bad(|c| c.clickhouse.cluster = "a b".into()).contains("clickhouse.cluster"));
    }

    #[test]
    fn example_config_is_the_default() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../compose/indexer.toml");
        let cfg: IndexerConfig =
            outlier_common::config::load("OUTLIER_INDEXER_EXAMPLE_TEST", Some(&path)).unwrap();
        assert_eq!(cfg, IndexerConfig::default());
    }
}
