//! Creation and migration of the `security_events` table on any ClickHouse
//! from 18.16 (Debian's package, what the tests run) to current releases.
//! Newer features (TTL) are used only after `version()` says they exist;
//! without TTL the indexer drops expired daily partitions itself.

use clickhouse::Client;
use serde::Deserialize;

/// Name of the events table.
pub const TABLE: &str = "security_events";

/// Columns of `security_events` with their types, in insert order. A column
/// added here is added to existing tables by [`migrate`].
pub const COLUMNS: &[(&str, &str)] = &[
    ("event_id", "String"),
    ("org", "String"),
    ("workload", "String"),
    ("host", "String"),
    ("kind", "String"),
    ("ts", "DateTime"),
    ("ts_ns", "UInt64"),
    ("pid", "UInt32"),
    ("ppid", "UInt32"),
    ("uid", "UInt32"),
    ("gid", "UInt32"),
    ("comm", "String"),
    ("parent_comm", "String"),
    ("exe", "String"),
    ("cgroup", "String"),
    ("source", "String"),
    ("argv", "Array(String)"),
    ("argv_truncated", "UInt8"),
    ("cwd", "String"),
    ("remote_ip", "String"),
    ("remote_port", "UInt16"),
    ("local_port", "UInt16"),
    ("protocol", "String"),
    ("path", "String"),
    ("open_flags", "UInt32"),
    ("anomaly_score", "Float32"),
    ("nearest_distance", "Float32"),
    ("threat_category", "String"),
    ("tactic", "String"),
    ("technique", "String"),
    ("confidence", "Float32"),
    ("verdict", "String"),
    ("explanation", "String"),
    ("scored_at_ns", "UInt64"),
    ("scorer_version", "String"),
    ("behaviour_key", "UInt64"),
    // The classifier's top contributions (exact TreeSHAP), in rank order.
    ("contrib_features", "Array(String)"),
    ("contrib_values", "Array(Float64)"),
    ("contrib_shap", "Array(Float64)"),
    ("contrib_sentences", "Array(String)"),
    // The suppression that kept the flagged event from alerting.
    ("suppressed_by", "String"),
    // The fleet signature (immune memory) the event matched.
    ("signature_id", "String"),
    ("inserted_at", "DateTime DEFAULT now()"),
];

/// A server version, e.g. 18.16.1 or 24.8.4.13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split('.');
        Some(Self {
            major: parts.next()?.parse().ok()?,
            minor: parts.next()?.parse().ok()?,
        })
    }

    /// Table-level TTL arrived in 19.6.
    pub fn has_ttl(self) -> bool {
        self >= Version {
            major: 19,
            minor: 6,
        }
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct VersionRow {
    v: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct NameRow {
    name: String,
}

/// Asks the server for its version.
pub async fn server_version(client: &Client) -> Result<Version, clickhouse::error::Error> {
    let row: VersionRow = client.query("SELECT version() AS v").fetch_one().await?;
    Version::parse(&row.v).ok_or_else(|| {
        clickhouse::error::Error::Custom(format!("unparsable server version `{}`", row.v))
    })
}

/// The `CREATE TABLE` statement for `db`, for a server of `version`.
pub fn create_table_sql(db: &str, version: Version, retention_days: u32) -> String {
    let cols = COLUMNS
        .iter()
        .map(|(n, t)| format!("    {n} {t}"))
        .collect::<Vec<_>>()
        .join(",\n");
    let ttl = if version.has_ttl() && retention_days > 0 {
        format!("\nTTL ts + INTERVAL {retention_days} DAY")
    } else {
        String::new()
    };
    // ReplacingMergeTree + ORDER BY ending in event_id: a replayed event (same
    // id, same timestamp) collapses into one row; queries read with FINAL.
    format!(
        "CREATE TABLE IF NOT EXISTS {db}.{TABLE} (\n{cols}\n) ENGINE = ReplacingMergeTree()\n\
         PARTITION BY toYYYYMMDD(ts)\nORDER BY (org, ts, event_id){ttl}\nSETTINGS index_granularity = 8192"
    )
}

/// Creates the database and table if missing and adds any missing columns.
pub async fn migrate(
    client: &Client,
    db: &str,
    retention_days: u32,
) -> Result<Version, clickhouse::error::Error> {
    let version = server_version(client).await?;
    client
        .query(&format!("CREATE DATABASE IF NOT EXISTS {db}"))
        .execute()
        .await?;
    client
        .query(&create_table_sql(db, version, retention_days))
        .execute()
        .await?;
    client
        .query(&crate::audit::create_table_sql(db))
        .execute()
        .await?;
    client
        .query(&crate::hosts::create_table_sql(db))
        .execute()
        .await?;
    client
        .query(&crate::incidents::create_table_sql(
            db,
            version.has_ttl().then_some(retention_days),
        ))
        .execute()
        .await?;
    let existing: Vec<NameRow> = client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(db)
        .bind(TABLE)
        .fetch_all()
        .await?;
    let mut after = "";
    for (name, ty) in COLUMNS {
        if !existing.iter().any(|r| r.name == *name) {
            let position = if after.is_empty() {
                String::new()
            } else {
                format!(" AFTER {after}")
            };
            tracing::info!(column = name, "adding column to {TABLE}");
            client
                .query(&format!(
                    "ALTER TABLE {db}.{TABLE} ADD COLUMN {name} {ty}{position}"
                ))
                .execute()
                .await?;
        }
        after = name;
    }
    Ok(version)
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct PartitionRow {
    partition: String,
}

/// Drops daily partitions older than `retention_days` (servers without TTL).
/// Returns the partitions dropped.
pub async fn drop_expired_partitions(
    client: &Client,
    db: &str,
    retention_days: u32,
    today_yyyymmdd: u32,
) -> Result<Vec<String>, clickhouse::error::Error> {
    let cutoff = yyyymmdd_minus_days(today_yyyymmdd, retention_days);
    let parts: Vec<PartitionRow> = client
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
        .bind(db)
        .bind(TABLE)
        .fetch_all()
        .await?;
    let mut dropped = Vec::new();
    for p in parts {
        let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        if day < cutoff {
            client
                .query(&format!("ALTER TABLE {db}.{TABLE} DROP PARTITION {day}"))
                .execute()
                .await?;
            dropped.push(p.partition);
        }
    }
    Ok(dropped)
}

/// `YYYYMMDD` of `days` days before `yyyymmdd` (civil calendar).
pub fn yyyymmdd_minus_days(yyyymmdd: u32, days: u32) -> u32 {
    let (y, m, d) = (yyyymmdd / 10000, (yyyymmdd / 100) % 100, yyyymmdd % 100);
    let n = days_from_civil(y as i64, m, d) - i64::from(days);
    let (y, m, d) = civil_from_days(n);
    (y as u32) * 10000 + m * 100 + d
}

/// `YYYYMMDD` of a Unix time in seconds (UTC).
pub fn yyyymmdd_of_unix(secs: u64) -> u32 {
    let (y, m, d) = civil_from_days((secs / 86_400) as i64);
    (y as u32) * 10000 + m * 100 + d
}

// Howard Hinnant's algorithms for the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_only_where_supported() {
        let old = create_table_sql("outlier", Version::parse("18.16.1").unwrap(), 30);
        assert!(!old.contains("TTL"));
        assert!(old.contains("ReplacingMergeTree"));
        let new = create_table_sql("outlier", Version::parse("24.8.4.13").unwrap(), 30);
        assert!(new.contains("TTL ts + INTERVAL 30 DAY"));
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(yyyymmdd_minus_days(20260301, 1), 20260228);
        assert_eq!(yyyymmdd_minus_days(20240301, 1), 20240229);
        assert_eq!(yyyymmdd_minus_days(20260105, 30), 20251206);
        assert_eq!(yyyymmdd_of_unix(1_763_800_000), 20251122);
    }
}
