//! Creation and migration of the `security_events` table on any ClickHouse
//! from 18.16 (Debian's package, what the tests run) to current releases.
//! Newer features (TTL) are used only after `version()` says they exist;
//! without TTL the indexer drops expired daily partitions itself.
//!
//! Two layouts ([`Layout`]): one server, where each table is a
//! `ReplacingMergeTree`; or a ClickHouse cluster (`clickhouse.cluster`),
//! where each table's rows live in `<table>_local`, a
//! `ReplicatedReplacingMergeTree` on every replica (coordinated by
//! ZooKeeper), and `<table>` is a `Distributed` table over them: the rest of
//! the indexer reads and writes `<table>` in both layouts. Cluster DDL runs
//! `ON CLUSTER`: a replica that is down when the indexer starts runs it
//! when it is back.

use clickhouse::Client;
use serde::Deserialize;

/// The `TTL` tail of a side table whose rows expire `ttl_days` after
/// their `ts` (empty: no TTL, or a server without table TTLs).
pub fn ttl_clause(ttl_days: Option<u32>) -> String {
    match ttl_days {
        Some(d) if d > 0 => format!("\nTTL ts + INTERVAL {d} DAY"),
        _ => String::new(),
    }
}

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
    // The workload's baseline when the event was scored (the console's
    // baselines page), and whether the event's behaviour was learned.
    ("baseline_size", "UInt64"),
    ("learned", "UInt8"),
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

/// Where the indexer's tables live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One server.
    Single,
    /// Replicas of the named cluster (the server's `remote_servers`), one
    /// shard: every replica holds every row.
    Cluster(String),
}

impl Layout {
    /// The layout of `clickhouse.cluster` (empty: one server).
    pub fn of(cluster: &str) -> Self {
        if cluster.is_empty() {
            Layout::Single
        } else {
            Layout::Cluster(cluster.to_string())
        }
    }

    /// The table that stores `table`'s rows (partitions, parts, columns).
    pub fn storage(&self, table: &str) -> String {
        match self {
            Layout::Single => table.to_string(),
            Layout::Cluster(_) => format!("{table}_local"),
        }
    }

    /// ` ON CLUSTER <name>` for DDL that every replica must run.
    fn on_cluster(&self) -> String {
        match self {
            Layout::Single => String::new(),
            Layout::Cluster(c) => format!(" ON CLUSTER {c}"),
        }
    }

    /// The statements that create `db.table`: `columns` (the parenthesised
    /// list), a replacing engine with `version_column` (may be empty) and
    /// `tail` (PARTITION BY, ORDER BY, TTL, SETTINGS). In a cluster, the
    /// replicated storage table first, then the Distributed table over it.
    pub fn create(
        &self,
        db: &str,
        table: &str,
        columns: &str,
        version_column: &str,
        tail: &str,
    ) -> Vec<String> {
        match self {
            Layout::Single => vec![format!(
                "CREATE TABLE IF NOT EXISTS {db}.{table} {columns} \
                 ENGINE = ReplacingMergeTree({version_column})\n{tail}"
            )],
            Layout::Cluster(cluster) => {
                let local = self.storage(table);
                let on = self.on_cluster();
                let version = if version_column.is_empty() {
                    String::new()
                } else {
                    format!(", {version_column}")
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{local}{on} {columns} \
                         ENGINE = ReplicatedReplacingMergeTree(\
                         '/clickhouse/tables/{{shard}}/{db}/{table}', '{{replica}}'{version})\n{tail}"
                    ),
                    format!(
                        "CREATE TABLE IF NOT EXISTS {db}.{table}{on} AS {db}.{local} \
                         ENGINE = Distributed({cluster}, {db}, {local})"
                    ),
                ]
            }
        }
    }

    /// The statements that add `name type` to `db.table` (after `after`,
    /// when not empty), storage table first.
    fn add_column(&self, db: &str, table: &str, name: &str, ty: &str, after: &str) -> Vec<String> {
        let position = if after.is_empty() {
            String::new()
        } else {
            format!(" AFTER {after}")
        };
        let on = self.on_cluster();
        let mut tables = vec![self.storage(table)];
        if matches!(self, Layout::Cluster(_)) {
            // A Distributed table's columns are its own.
            tables.push(table.to_string());
        }
        tables
            .into_iter()
            .map(|t| format!("ALTER TABLE {db}.{t}{on} ADD COLUMN {name} {ty}{position}"))
            .collect()
    }
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct VersionRow {
    v: String,
}

#[derive(Debug, Deserialize, clickhouse::Row)]
struct EngineRow {
    engine: String,
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

/// The statements that create the events table in `db`, for a server of
/// `version`.
pub fn create_table_sql(
    db: &str,
    layout: &Layout,
    version: Version,
    retention_days: u32,
) -> Vec<String> {
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
    layout.create(
        db,
        TABLE,
        &format!("(\n{cols}\n)"),
        "",
        &format!(
            "PARTITION BY toYYYYMMDD(ts)\nORDER BY (org, ts, event_id){ttl}\nSETTINGS index_granularity = 8192"
        ),
    )
}

/// In a cluster, DDL waits this long for every replica; one that is down
/// runs it when it is back.
const CLUSTER_DDL_WAIT_S: &str = "20";

/// Runs one DDL statement. In a cluster, a replica that did not answer in
/// time (code 159) is not an error: the statement is queued for it.
async fn ddl(client: &Client, layout: &Layout, sql: &str) -> Result<(), clickhouse::error::Error> {
    match layout {
        Layout::Single => client.query(sql).execute().await,
        Layout::Cluster(_) => {
            let r = client
                .query(sql)
                .with_setting("distributed_ddl_task_timeout", CLUSTER_DDL_WAIT_S)
                .execute()
                .await;
            match r {
                Err(e) if e.to_string().contains("Code: 159") => {
                    tracing::warn!(error = %e, "a ClickHouse replica did not run the schema change in time; it runs it when it is back");
                    Ok(())
                }
                r => r,
            }
        }
    }
}

async fn columns_of(
    client: &Client,
    db: &str,
    table: &str,
) -> Result<Vec<String>, clickhouse::error::Error> {
    let rows: Vec<NameRow> = client
        .query("SELECT name FROM system.columns WHERE database = ? AND table = ?")
        .bind(db)
        .bind(table)
        .fetch_all()
        .await?;
    Ok(rows.into_iter().map(|r| r.name).collect())
}

/// Creates the database and tables if missing and adds any missing columns.
pub async fn migrate(
    client: &Client,
    db: &str,
    layout: &Layout,
    retention_days: u32,
) -> Result<Version, clickhouse::error::Error> {
    let version = server_version(client).await?;
    ddl(
        client,
        layout,
        &format!("CREATE DATABASE IF NOT EXISTS {db}{}", layout.on_cluster()),
    )
    .await?;
    let mut statements = create_table_sql(db, layout, version, retention_days);
    statements.extend(crate::audit::create_table_sql(db, layout));
    statements.extend(crate::hosts::create_table_sql(db, layout));
    statements.extend(crate::deadletters::create_table_sql(
        db,
        layout,
        version.has_ttl().then_some(retention_days),
    ));
    statements.extend(crate::incidents::create_table_sql(
        db,
        layout,
        version.has_ttl().then_some(retention_days),
    ));
    for sql in &statements {
        ddl(client, layout, sql).await?;
    }
    if let Layout::Cluster(cluster) = layout {
        // CREATE ... IF NOT EXISTS leaves a one-server table where the
        // Distributed one belongs: say so instead of writing past the
        // replicas.
        for table in [
            TABLE,
            crate::audit::TABLE,
            crate::hosts::TABLE,
            crate::incidents::TABLE,
            crate::deadletters::TABLE,
        ] {
            let row: EngineRow = client
                .query("SELECT engine FROM system.tables WHERE database = ? AND name = ?")
                .bind(db)
                .bind(table)
                .fetch_one()
                .await?;
            if row.engine != "Distributed" {
                return Err(clickhouse::error::Error::Custom(format!(
                    "{db}.{table} is a {} table, not a Distributed table over cluster \
                     {cluster}: it was made for one server; move its rows into \
                     {db}.{}_local and drop it (docs/deploy.md)",
                    row.engine, table
                )));
            }
        }
    }
    let existing = columns_of(client, db, TABLE).await?;
    let mut after = "";
    for (name, ty) in COLUMNS {
        if !existing.iter().any(|c| c == name) {
            tracing::info!(column = name, "adding column to {TABLE}");
            for sql in layout.add_column(db, TABLE, name, ty, after) {
                if let Err(e) = ddl(client, layout, &sql).await {
                    // Another indexer of the cluster may have added it first.
                    let table = sql.split_whitespace().nth(2).unwrap_or_default();
                    let table = table.rsplit('.').next().unwrap_or_default();
                    if !columns_of(client, db, table)
                        .await?
                        .iter()
                        .any(|c| c == name)
                    {
                        return Err(e);
                    }
                }
            }
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
    layout: &Layout,
    retention_days: u32,
    today_yyyymmdd: u32,
) -> Result<Vec<String>, clickhouse::error::Error> {
    let cutoff = yyyymmdd_minus_days(today_yyyymmdd, retention_days);
    let parts: Vec<PartitionRow> = client
        .query("SELECT DISTINCT partition FROM system.parts WHERE database = ? AND table = ? AND active")
        .bind(db)
        .bind(layout.storage(TABLE))
        .fetch_all()
        .await?;
    let mut dropped = Vec::new();
    for p in parts {
        let Ok(day) = p.partition.trim_matches('\'').parse::<u32>() else {
            continue;
        };
        if day < cutoff {
            client
                // A replicated table drops it on every replica.
                .query(&format!(
                    "ALTER TABLE {db}.{} DROP PARTITION {day}",
                    layout.storage(TABLE)
                ))
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

pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
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
        let sql = |v| {
            create_table_sql("outlier", &Layout::Single, Version::parse(v).unwrap(), 30).join("\n")
        };
        let old = sql("18.16.1");
        assert!(!old.contains("TTL"));
        assert!(old.contains("ReplacingMergeTree"));
        let new = sql("24.8.4.13");
        assert!(new.contains("TTL ts + INTERVAL 30 DAY"));
    }

    #[test]
    fn a_cluster_stores_rows_in_replicated_tables_behind_distributed_ones() {
        let layout = Layout::of("outlier");
        let v = Version::parse("24.8.4.13").unwrap();
        let sql = create_table_sql("db", &layout, v, 30);
        assert_eq!(sql.len(), 2, "{sql:?}");
        assert!(
            sql[0].starts_with(
                "CREATE TABLE IF NOT EXISTS db.security_events_local ON CLUSTER outlier ("
            ),
            "{}",
            sql[0]
        );
        assert!(
            sql[0].contains("ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/db/security_events', '{replica}')"),
            "{}",
            sql[0]
        );
        // The TTL and keys belong to the storage table.
        assert!(sql[0].contains("TTL ts + INTERVAL 30 DAY"));
        assert_eq!(
            sql[1],
            "CREATE TABLE IF NOT EXISTS db.security_events ON CLUSTER outlier AS db.security_events_local \
             ENGINE = Distributed(outlier, db, security_events_local)"
        );
        // A version column follows the replica's name.
        let hosts = crate::hosts::create_table_sql("db", &layout).join("\n");
        assert!(
            hosts.contains("'/clickhouse/tables/{shard}/db/hosts', '{replica}', ts_ns)"),
            "{hosts}"
        );
        assert_eq!(layout.storage("hosts"), "hosts_local");
        assert_eq!(
            layout.add_column("db", "t", "c", "String", "b"),
            vec![
                "ALTER TABLE db.t_local ON CLUSTER outlier ADD COLUMN c String AFTER b".to_string(),
                "ALTER TABLE db.t ON CLUSTER outlier ADD COLUMN c String AFTER b".to_string(),
            ]
        );
        // One server: the table itself, no ON CLUSTER.
        let single = Layout::of("");
        assert_eq!(single.storage("hosts"), "hosts");
        assert_eq!(
            single.add_column("db", "t", "c", "String", ""),
            vec!["ALTER TABLE db.t ADD COLUMN c String".to_string()]
        );
        let hosts = crate::hosts::create_table_sql("db", &single);
        assert_eq!(hosts.len(), 1);
        assert!(
            hosts[0].contains("ENGINE = ReplacingMergeTree(ts_ns)"),
            "{}",
            hosts[0]
        );
    }

    #[test]
    fn calendar_arithmetic() {
        assert_eq!(yyyymmdd_minus_days(20260301, 1), 20260228);
        assert_eq!(yyyymmdd_minus_days(20240301, 1), 20240229);
        assert_eq!(yyyymmdd_minus_days(20260105, 30), 20251206);
        assert_eq!(yyyymmdd_of_unix(1_763_800_000), 20251122);
    }
}
