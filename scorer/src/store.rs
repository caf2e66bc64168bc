//! Baseline persistence in LanceDB. An org's baselines live in
//! [`SHARDS`] tables (its *shards*, named by
//! [`outlier_common::names::shard_storage_name`] so no org string can
//! escape or collide); a workload's rows are in the shard its
//! [`workload_id`] picks, tagged with that id. A table per workload made a
//! million workloads a million tables, created at about 140 per second;
//! shards make the number of tables a property of the org count, and let
//! the persister write many workloads in one commit and the scorer load
//! many in one scan.
//!
//! Every write is an append: a new behaviour's first row, or a repeated
//! behaviour's increment (events since its previous write, its latest
//! last-seen time). Loading adds up a (workload, key)'s rows. Appends stay
//! cheap however large the table. When a shard holds more than twice as
//! many rows as behaviours (plus [`FOLD_SLACK`]) it is folded: rewritten
//! with one row per behaviour. Every [`COMPACT_EVERY`] writes a shard's
//! small files are compacted, and after that and after a fold, versions
//! older than [`outlier_common::lance::KEEP_VERSIONS_MINUTES`] are deleted.
//!
//! Within a process, one writer per shard: a fold's read and rewrite see
//! no append, delete or migration of this process between them. Scorers
//! that share an org (its partitions are spread over them) share its
//! shards: a fold is put off when the shard changed since its read, but
//! LanceDB's rewrite is not conditional, so a write of another scorer
//! landing in the milliseconds between that check and the commit is lost
//! (a repeat's count, a behaviour learnt again at its next event, or a
//! delete undone). Folds are rare: a shard's rows must double first.
//!
//! Baselines written by earlier versions (a table per workload, `wl_…` or
//! `wh_…`) are moved into their shard when the workload is first loaded.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::Table;
use lancedb::query::{ExecutableQuery, QueryBase};
use lancedb::table::AddDataMode;
use outlier_common::featurize::{DIM, FEATURIZER_VERSION};
use outlier_common::lance::{Created, Tables};
pub use outlier_common::names::workload_id;
use outlier_common::names::{shard_storage_name, storage_name};
use thiserror::Error;
use tokio::sync::Mutex;

use crate::baseline::{Baseline, Behaviour, IndexParams};

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("lancedb: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("table {table} has an unexpected schema: {detail}")]
    Schema { table: String, detail: String },
}

impl StoreError {
    /// Whether the error is this record's (a name, schema or value the
    /// store refuses: retrying cannot help) or may pass.
    pub fn failure(&self) -> outlier_common::retry::Failure {
        use outlier_common::retry::Failure;
        match self {
            StoreError::Schema { .. } | StoreError::Arrow(_) => Failure::Poison,
            StoreError::Lance(
                lancedb::Error::InvalidTableName { .. }
                | lancedb::Error::InvalidInput { .. }
                | lancedb::Error::Schema { .. },
            ) => Failure::Poison,
            StoreError::Lance(_) => Failure::Retriable,
        }
    }
}

/// Baseline tables per org. Fixed: a workload's shard is its id modulo
/// this, so changing it would strand every stored baseline.
pub const SHARDS: u32 = 64;

/// Writes to one table between compactions.
pub const COMPACT_EVERY: u32 = 50;

/// Rows beyond twice a table's behaviours that it may hold before a fold.
pub const FOLD_SLACK: u64 = 1024;

/// The table holding a workload's baseline.
pub fn shard_of(org: &str, workload: &str) -> String {
    shard_storage_name(org, (workload_id(workload) as u64 % SHARDS as u64) as u32)
}

/// One row to append: a behaviour (or an increment of one) of a workload.
pub type Row = (i64, Behaviour);

/// A workload's behaviours as rows of its shard (tagged with its id).
pub fn rows_of(
    workload: &str,
    behaviours: impl IntoIterator<Item = Behaviour>,
) -> impl Iterator<Item = Row> {
    let id = workload_id(workload);
    behaviours.into_iter().map(move |b| (id, b))
}

/// Rows and distinct behaviours of a table, as far as this process knows.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Shape {
    rows: u64,
    behaviours: u64,
}

impl Shape {
    /// A table just read or rewritten.
    fn new(rows: u64, behaviours: u64) -> Self {
        Self { rows, behaviours }
    }
}

pub struct Store {
    tables: Tables,
    shapes: Mutex<HashMap<String, Shape>>,
    /// Per-workload tables of earlier versions not moved into a shard yet.
    legacy: Mutex<HashSet<String>>,
    /// One writer per shard in this process: an append, a delete or a
    /// migration never lands between a fold's read and its rewrite.
    writers: std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>,
    schema: SchemaRef,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("workload_id", DataType::Int64, false),
        Field::new("key", DataType::Int64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                DIM as i32,
            ),
            false,
        ),
        Field::new("count", DataType::Int64, false),
        Field::new("first_seen_ns", DataType::Int64, false),
        Field::new("last_seen_ns", DataType::Int64, false),
        Field::new("featurizer_version", DataType::Int32, false),
    ]))
}

impl Store {
    /// Connects to LanceDB at `uri` (a directory, or an object-store URI),
    /// and notes the per-workload tables of earlier versions.
    pub async fn open(uri: &str) -> Result<Self, StoreError> {
        Self::open_with_cache(uri, 64).await
    }

    /// [`Store::open`] with LanceDB's metadata cache bounded at `cache_mb`
    /// MiB. (Baseline tables have no LanceDB index: the index cache is
    /// kept small too.)
    pub async fn open_with_cache(uri: &str, cache_mb: usize) -> Result<Self, StoreError> {
        let session = lancedb::Session::new(
            4 << 20,
            cache_mb.max(1) << 20,
            Arc::new(lancedb::ObjectStoreRegistry::default()),
        );
        let db = lancedb::connect(uri)
            .session(Arc::new(session))
            .execute()
            .await?;
        // One listing (each page of a paged one lists the whole directory).
        let legacy: HashSet<String> = db
            .table_names()
            .execute()
            .await?
            .into_iter()
            .filter(|n| n.starts_with("wl_") || n.starts_with("wh_"))
            .collect();
        if !legacy.is_empty() {
            tracing::info!(
                tables = legacy.len(),
                "baselines of an earlier version (a table per workload) move into shards as their workloads load"
            );
        }
        Ok(Self {
            tables: Tables::new(db, COMPACT_EVERY),
            shapes: Mutex::new(HashMap::new()),
            legacy: Mutex::new(legacy),
            writers: Default::default(),
            schema: schema(),
        })
    }

    /// Whether LanceDB answers at all (it lists its tables): tells an
    /// outage from a record that fails on its own.
    pub async fn probe(&self) -> bool {
        self.tables.probe().await
    }

    /// Open table handles: at most [`SHARDS`] per org this process scored.
    pub async fn open_tables(&self) -> usize {
        self.tables.open_count().await
    }

    /// The shard's writer lock (see `writers`).
    async fn writing(&self, name: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = self
            .writers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(name.to_string())
            .or_default()
            .clone();
        lock.lock_owned().await
    }

    async fn table(&self, name: &str) -> Result<Option<Table>, StoreError> {
        Ok(self.tables.get(name).await?)
    }

    /// Loads the baseline of a workload (empty when it has none), leaving out
    /// behaviours last seen before `cutoff_ns` or made by another featurizer
    /// version.
    pub async fn load(
        &self,
        org: &str,
        workload: &str,
        cutoff_ns: u64,
        params: IndexParams,
    ) -> Result<Baseline, StoreError> {
        let mut b = self.load_many(org, &[workload], cutoff_ns, params).await?;
        Ok(b.pop().unwrap_or_else(|| Baseline::with_params(params)))
    }

    /// Loads the baselines of several workloads of one org, in their order:
    /// one scan per shard they fall in.
    pub async fn load_many(
        &self,
        org: &str,
        workloads: &[&str],
        cutoff_ns: u64,
        params: IndexParams,
    ) -> Result<Vec<Baseline>, StoreError> {
        let mut by_shard: HashMap<String, Vec<i64>> = HashMap::new();
        let migrating = !self.legacy.lock().await.is_empty();
        for w in workloads {
            if migrating {
                self.migrate(org, w).await?;
            }
            by_shard
                .entry(shard_of(org, w))
                .or_default()
                .push(workload_id(w));
        }
        let mut found: HashMap<i64, Vec<Behaviour>> = HashMap::new();
        for (name, ids) in by_shard {
            let Some(table) = self.table(&name).await? else {
                continue;
            };
            for (id, b) in self.read(&name, &table, Some(ids.as_slice())).await? {
                found.entry(id).or_default().push(b);
            }
        }
        Ok(workloads
            .iter()
            .map(|w| {
                let rows = found.remove(&workload_id(w)).unwrap_or_default();
                Baseline::from_behaviours(
                    rows.into_iter().filter(|b| b.last_seen_ns >= cutoff_ns),
                    params,
                )
            })
            .collect())
    }

    /// Moves a workload's table of an earlier version into its shard (one
    /// append, then the old table is dropped). A crash between the two
    /// moves it again at the next load: its counts doubled, nothing lost.
    async fn migrate(&self, org: &str, workload: &str) -> Result<(), StoreError> {
        let old = storage_name(org, workload);
        if !self.legacy.lock().await.contains(&old) {
            return Ok(());
        }
        match self.tables.db().open_table(&old).execute().await {
            Ok(t) => {
                let mut rows = Vec::new();
                let mut stream = t.query().execute().await?;
                while let Some(batch) = stream.try_next().await? {
                    decode_behaviours(&old, &batch, &mut rows)?;
                }
                // One row per behaviour: each counts as one in the shard.
                let rows: Vec<Row> = add_up(rows_of(workload, rows).collect())
                    .into_iter()
                    .map(|(id, b)| (id, Behaviour { stored: false, ..b }))
                    .collect();
                let n = rows.len();
                self.append(&shard_of(org, workload), &rows).await?;
                // Moved: a failed drop must not move it again.
                self.legacy.lock().await.remove(&old);
                if let Err(e) = self.tables.db().drop_table(&old, &[]).await {
                    tracing::warn!(table = old, error = %e, "moved baseline table not dropped");
                }
                tracing::info!(
                    org,
                    workload,
                    behaviours = n,
                    "baseline moved into its shard"
                );
            }
            Err(lancedb::Error::TableNotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.legacy.lock().await.remove(&old);
        Ok(())
    }

    /// Reads a shard's rows, of the workloads `ids` or all, and adds up
    /// each (workload, key)'s rows.
    async fn read(
        &self,
        name: &str,
        table: &Table,
        ids: Option<&[i64]>,
    ) -> Result<Vec<Row>, StoreError> {
        Ok(add_up(self.read_rows(name, table, ids).await?.1))
    }

    /// A shard's rows (of the workloads `ids`, or all) as stored, and how
    /// many were read.
    async fn read_rows(
        &self,
        name: &str,
        table: &Table,
        ids: Option<&[i64]>,
    ) -> Result<(u64, Vec<Row>), StoreError> {
        // The handle stays at the version it last read or wrote: another
        // scorer may have written since.
        table.checkout_latest().await?;
        let query = match ids {
            Some(ids) => table.query().only_if(in_list(ids)),
            None => table.query(),
        };
        let mut stream = query.execute().await?;
        let mut rows = Vec::new();
        let mut n = 0;
        while let Some(batch) = stream.try_next().await? {
            n += batch.num_rows() as u64;
            decode(name, &batch, &mut rows)?;
        }
        Ok((n, rows))
    }

    /// Deletes behaviours of a workload by key (they were confirmed
    /// malicious).
    pub async fn delete(&self, org: &str, workload: &str, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let name = shard_of(org, workload);
        let _writing = self.writing(&name).await;
        if let Some(table) = self.table(&name).await? {
            let list = keys
                .iter()
                .map(|k| (*k as i64).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            table
                .delete(&format!(
                    "workload_id = {} AND key IN ({list})",
                    workload_id(workload)
                ))
                .await?;
        }
        Ok(())
    }

    /// Appends behaviours of one workload: a new behaviour's first row or
    /// a repeated one's increment (see [`Baseline::take_dirty`]).
    pub async fn persist(
        &self,
        org: &str,
        workload: &str,
        rows: &[Behaviour],
    ) -> Result<(), StoreError> {
        let rows: Vec<Row> = rows_of(workload, rows.iter().cloned()).collect();
        self.append(&shard_of(org, workload), &rows).await
    }

    /// Appends rows to one shard (every row's workload must fall in it; see
    /// [`shard_of`]). One write is one commit: a write that failed left
    /// nothing, and may be retried. Folds the shard when it is due; a
    /// failed fold is logged (the write itself landed) and tried again at a
    /// later write.
    pub async fn append(&self, name: &str, rows: &[Row]) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let _writing = self.writing(name).await;
        let table = match self.table(name).await? {
            Some(t) => t,
            None => match self
                .tables
                .create(name, encode(&self.schema, rows)?)
                .await?
            {
                Created::New(_) => {
                    self.count_write(name, rows, Shape::default()).await;
                    return Ok(());
                }
                // Another scorer created it first: append to theirs.
                Created::Joined(t) => t,
            },
        };
        table.add(encode(&self.schema, rows)?).execute().await?;
        let before = match self.shapes.lock().await.get(name) {
            Some(s) => *s,
            None => {
                // Not seen by this process: take its rows as behaviours.
                // (No `?`: the write landed, and a retry would repeat it.)
                let n = table.count_rows(None).await.unwrap_or(0) as u64;
                let n = n.saturating_sub(rows.len() as u64);
                Shape::new(n, n)
            }
        };
        // Failures are logged and the upkeep comes round again.
        if self.count_write(name, rows, before).await {
            if let Err(e) = self.fold_table(name, &table).await {
                tracing::warn!(table = name, error = %e, "baseline fold failed");
            }
        } else {
            self.tables.wrote(name, &table).await;
        }
        Ok(())
    }

    /// Records a write of `rows` to a table that had shape `before` (unless
    /// this process knows it already), and says whether a fold is due: the
    /// table holds more than twice as many rows as behaviours plus
    /// [`FOLD_SLACK`]. Otherwise the write counts towards the table's
    /// compaction every [`COMPACT_EVERY`] writes (each adds files, and
    /// loads read all of them), which also deletes old versions.
    async fn count_write(&self, name: &str, rows: &[Row], before: Shape) -> bool {
        let mut shapes = self.shapes.lock().await;
        let shape = shapes.entry(name.to_string()).or_insert(before);
        shape.rows += rows.len() as u64;
        shape.behaviours += rows.iter().filter(|(_, r)| !r.stored).count() as u64;
        shape.rows > 2 * shape.behaviours + FOLD_SLACK
    }

    /// Drops a workload's behaviours last seen before `cutoff_ns`. Returns
    /// how many behaviours it kept.
    pub async fn prune(
        &self,
        org: &str,
        workload: &str,
        cutoff_ns: u64,
    ) -> Result<usize, StoreError> {
        let name = shard_of(org, workload);
        let Some(table) = self.table(&name).await? else {
            return Ok(0);
        };
        let id = workload_id(workload);
        let rows = self.read(&name, &table, Some(&[id][..])).await?;
        let (keep, old): (Vec<_>, Vec<_>) = rows
            .into_iter()
            .partition(|(_, b)| b.last_seen_ns >= cutoff_ns);
        if !old.is_empty() {
            let keys: Vec<u64> = old.iter().map(|(_, b)| b.key).collect();
            self.delete(org, workload, &keys).await?;
        }
        Ok(keep.len())
    }

    /// Rewrites the shard holding a workload with one row per behaviour
    /// (of every workload in it). Returns how many behaviours it kept.
    pub async fn fold(&self, org: &str, workload: &str) -> Result<usize, StoreError> {
        let name = shard_of(org, workload);
        let _writing = self.writing(&name).await;
        match self.table(&name).await? {
            Some(table) => self.fold_table(&name, &table).await,
            None => Ok(0),
        }
    }

    /// Rewrites a shard with one row per behaviour.
    async fn fold_table(&self, name: &str, table: &Table) -> Result<usize, StoreError> {
        let rows = self.read(name, table, None).await?;
        let read_at = table.version().await?;
        // Another scorer wrote since the read (they share an org's
        // shards): fold at a later write rather than lose theirs. (The
        // rewrite is not conditional in LanceDB: a write landing between
        // this check and the commit is lost; see docs/reliability.md.)
        table.checkout_latest().await?;
        if table.version().await? != read_at {
            tracing::debug!(
                table = name,
                "baseline fold put off: the shard changed meanwhile"
            );
            // Tried again after FOLD_SLACK more rows, not at every write.
            let b = rows.len() as u64;
            self.shapes
                .lock()
                .await
                .insert(name.to_string(), Shape::new(2 * b, b));
            return Ok(rows.len());
        }
        table
            .add(encode(&self.schema, &rows)?)
            .mode(AddDataMode::Overwrite)
            .execute()
            .await?;
        let n = rows.len() as u64;
        self.shapes
            .lock()
            .await
            .insert(name.to_string(), Shape::new(n, n));
        self.tables.rewritten(name).await;
        tracing::debug!(table = name, behaviours = n, "baseline shard folded");
        if let Err(e) = outlier_common::lance::clean_up(table).await {
            tracing::warn!(table = name, error = %e, "baseline clean-up failed");
        }
        Ok(rows.len())
    }
}

/// `workload_id IN (…)` for a scan.
fn in_list(ids: &[i64]) -> String {
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    format!("workload_id IN ({list})")
}

fn encode(schema: &SchemaRef, rows: &[Row]) -> Result<RecordBatch, StoreError> {
    let vectors = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter()
            .map(|(_, r)| Some(r.vector.iter().copied().map(Some).collect::<Vec<_>>())),
        DIM as i32,
    );
    let int64 =
        |f: &dyn Fn(&Row) -> i64| Arc::new(Int64Array::from_iter_values(rows.iter().map(f)));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            int64(&|(id, _)| *id),
            int64(&|(_, r)| r.key as i64),
            Arc::new(vectors),
            int64(&|(_, r)| r.count as i64),
            int64(&|(_, r)| r.first_seen_ns as i64),
            int64(&|(_, r)| r.last_seen_ns as i64),
            Arc::new(Int32Array::from_iter_values(
                rows.iter().map(|_| FEATURIZER_VERSION as i32),
            )),
        ],
    )?;
    Ok(batch)
}

fn column<'a, T: 'static>(
    table: &str,
    batch: &'a RecordBatch,
    name: &str,
) -> Result<&'a T, StoreError> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| StoreError::Schema {
            table: table.to_string(),
            detail: format!("column {name} missing or of another type"),
        })
}

/// Adds up the rows of each (workload, key): counts summed, the earliest
/// first-seen and the latest last-seen time; in the order they first
/// appear.
fn add_up(rows: Vec<Row>) -> Vec<Row> {
    let mut at: HashMap<(i64, u64), usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Row> = Vec::with_capacity(rows.len());
    for (id, row) in rows {
        match at.get(&(id, row.key)) {
            Some(&i) => {
                let b = &mut out[i].1;
                b.count += row.count;
                b.first_seen_ns = b.first_seen_ns.min(row.first_seen_ns);
                b.last_seen_ns = b.last_seen_ns.max(row.last_seen_ns);
            }
            None => {
                at.insert((id, row.key), out.len());
                out.push((id, row));
            }
        }
    }
    out
}

/// Decodes a shard's rows (of this featurizer version).
fn decode(table: &str, batch: &RecordBatch, out: &mut Vec<Row>) -> Result<(), StoreError> {
    let ids = column::<Int64Array>(table, batch, "workload_id")?;
    let mut rows = Vec::with_capacity(batch.num_rows());
    let kept = decode_behaviours(table, batch, &mut rows)?;
    out.extend(kept.into_iter().zip(rows).map(|(i, b)| (ids.value(i), b)));
    Ok(())
}

/// Decodes the behaviour columns (of a shard, or of a per-workload table
/// of an earlier version); returns the indices of the rows kept (those of
/// this featurizer version), in the order pushed to `out`.
fn decode_behaviours(
    table: &str,
    batch: &RecordBatch,
    out: &mut Vec<Behaviour>,
) -> Result<Vec<usize>, StoreError> {
    let key = column::<Int64Array>(table, batch, "key")?;
    let vector = column::<FixedSizeListArray>(table, batch, "vector")?;
    let count = column::<Int64Array>(table, batch, "count")?;
    let first = column::<Int64Array>(table, batch, "first_seen_ns")?;
    let last = column::<Int64Array>(table, batch, "last_seen_ns")?;
    let version = column::<Int32Array>(table, batch, "featurizer_version")?;
    let values = vector
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .ok_or_else(|| StoreError::Schema {
            table: table.to_string(),
            detail: "vector is not float32".into(),
        })?;
    if vector.value_length() as usize != DIM {
        return Err(StoreError::Schema {
            table: table.to_string(),
            detail: format!("vector has {} dimensions", vector.value_length()),
        });
    }
    let mut kept = Vec::with_capacity(batch.num_rows());
    for i in 0..batch.num_rows() {
        if version.value(i) != FEATURIZER_VERSION as i32 {
            continue;
        }
        let start = vector.value_offset(i) as usize;
        let mut v = [0f32; DIM];
        v.copy_from_slice(&values.values()[start..start + DIM]);
        out.push(Behaviour {
            key: key.value(i) as u64,
            vector: v,
            count: count.value(i) as u64,
            first_seen_ns: first.value(i) as u64,
            last_seen_ns: last.value(i) as u64,
            stored: true,
        });
        kept.push(i);
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_common::featurize::embed;
    use outlier_proto::{Event, Exec, event::Detail};

    fn vec_of(cmd: &str) -> [f32; DIM] {
        embed(&Event {
            comm: "sh".into(),
            detail: Some(Detail::Exec(Exec {
                argv: cmd.split(' ').map(String::from).collect(),
                ..Exec::default()
            })),
            ..Event::default()
        })
    }

    async fn reload(dir: &tempfile::TempDir, org: &str, wl: &str, cutoff: u64) -> Baseline {
        Store::open(dir.path().to_str().unwrap())
            .await
            .unwrap()
            .load(org, wl, cutoff, IndexParams::default())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn persists_increments_reloads_and_prunes_in_real_lancedb() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let (org, wl) = ("acme/../x", "web's");
        assert!(
            store
                .load(org, wl, 0, IndexParams::default())
                .await
                .unwrap()
                .is_empty(),
            "no table yet"
        );

        let mut b = Baseline::default();
        b.observe(&vec_of("nginx -s reload"), 100);
        b.observe(&vec_of("logrotate /etc/logrotate.conf"), 200);
        store.persist(org, wl, &b.take_dirty()).await.unwrap();
        // A repeat (an increment) and a new behaviour in one write.
        b.observe(&vec_of("nginx -s reload"), 300);
        b.observe(&vec_of("nginx -s reload"), 310);
        b.observe(&vec_of("crontab -l"), 300);
        let rows = b.take_dirty();
        assert_eq!(rows.iter().filter(|r| r.stored).count(), 1);
        store.persist(org, wl, &rows).await.unwrap();

        // A fresh store (a restarted scorer) rebuilds the same baseline.
        let loaded = reload(&dir, org, wl, 0).await;
        assert_eq!(loaded.len(), 3, "a repeated behaviour is one behaviour");
        assert_eq!(loaded.events(), b.events());
        let (d, i) = loaded.min_distance(&vec_of("nginx -s reload")).unwrap();
        assert!(d < 1e-6);
        let nginx = loaded.get(i);
        assert_eq!(
            (nginx.count, nginx.first_seen_ns, nginx.last_seen_ns),
            (3, 100, 310)
        );

        // Behaviours last seen before the cutoff are left out on load; the
        // repeat's first row is older than the cutoff, its latest is not.
        let recent = reload(&dir, org, wl, 250).await;
        assert_eq!(recent.len(), 2);
        let (_, i) = recent.min_distance(&vec_of("nginx -s reload")).unwrap();
        assert_eq!(recent.get(i).count, 3, "every increment counts");

        // A prune deletes what was last seen before the cutoff.
        let store2 = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        assert_eq!(store2.prune(org, wl, 250).await.unwrap(), 2);
        let after = reload(&dir, org, wl, 0).await;
        assert_eq!(after.len(), 2);
        let (_, i) = after.min_distance(&vec_of("nginx -s reload")).unwrap();
        assert_eq!(after.get(i).count, 3, "pruning keeps the sum");
        // A fold leaves one row per behaviour and keeps the sums.
        assert_eq!(store2.fold(org, wl).await.unwrap(), 2);
        let table = store2.table(&shard_of(org, wl)).await.unwrap().unwrap();
        assert_eq!(table.count_rows(None).await.unwrap(), 2);
        let after = reload(&dir, org, wl, 0).await;
        let (_, i) = after.min_distance(&vec_of("nginx -s reload")).unwrap();
        assert_eq!(after.get(i).count, 3, "folding keeps the sum");

        // Deleting by key (malicious feedback) removes that behaviour.
        store2.delete(org, wl, &[nginx.key]).await.unwrap();
        let after = reload(&dir, org, wl, 0).await;
        assert_eq!(
            after.len(),
            1,
            "the pruned and the deleted behaviour are gone"
        );
        assert!(after.min_distance(&vec_of("crontab -l")).unwrap().0 < 1e-6);

        // Pruning everything leaves nothing, not an error.
        assert_eq!(store2.prune(org, wl, u64::MAX).await.unwrap(), 0);
        assert!(reload(&dir, org, wl, 0).await.is_empty());

        // Table names never contain the raw strings.
        let names = store2.tables.db().table_names().execute().await.unwrap();
        assert_eq!(names, vec![shard_of(org, wl)]);
        assert!(names[0].starts_with("bs_") && !names[0].contains('.'));
    }

    #[tokio::test]
    async fn many_workloads_share_an_orgs_shards_and_never_see_each_other() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let n = 2000;
        let workloads: Vec<String> = (0..n).map(|i| format!("container-{i:08x}")).collect();
        // Each workload learns its own command, and workload 0's is also
        // learnt by the first workload sharing its shard (same key, two
        // workloads, one table).
        let twin = (1..n)
            .find(|&j| shard_of("fleet", &workloads[j]) == shard_of("fleet", &workloads[0]))
            .expect("2000 workloads over 64 shards");
        let mut shards: HashMap<String, Vec<Row>> = HashMap::new();
        for (i, w) in workloads.iter().enumerate() {
            let mut b = Baseline::default();
            b.observe(&vec_of(&format!("job-{i} --run")), i as u64 + 1);
            if i == twin {
                b.observe(&vec_of("job-0 --run"), 1);
            }
            let id = workload_id(w);
            shards
                .entry(shard_of("fleet", w))
                .or_default()
                .extend(b.take_dirty().into_iter().map(|r| (id, r)));
        }
        assert!(shards.len() <= SHARDS as usize);
        for (name, rows) in &shards {
            store.append(name, rows).await.unwrap();
        }
        let names = store.tables.db().table_names().execute().await.unwrap();
        assert_eq!(
            names.len(),
            shards.len(),
            "a table per shard, not per workload"
        );

        let fresh = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let asked: Vec<&str> = workloads.iter().map(String::as_str).collect();
        let loaded = fresh
            .load_many("fleet", &asked, 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(loaded.len(), n);
        for (i, b) in loaded.iter().enumerate() {
            let want = if i == twin { 2 } else { 1 };
            assert_eq!(b.len(), want, "workload {i}");
            assert!(
                b.min_distance(&vec_of(&format!("job-{i} --run")))
                    .unwrap()
                    .0
                    < 1e-6
            );
        }
        // Another org with the same workload names sees none of it.
        let other = fresh
            .load("globex", &workloads[0], 0, IndexParams::default())
            .await
            .unwrap();
        assert!(other.is_empty());
        // A prune or a delete of one workload leaves the other's copy of
        // the key.
        let key = loaded[0].get(0).key;
        fresh.delete("fleet", &workloads[0], &[key]).await.unwrap();
        assert!(
            fresh
                .load("fleet", &workloads[0], 0, IndexParams::default())
                .await
                .unwrap()
                .is_empty()
        );
        let both = fresh
            .load("fleet", &workloads[twin], 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(both.len(), 2, "the twin keeps the deleted key");
        assert_eq!(fresh.prune("fleet", &workloads[twin], 2).await.unwrap(), 1);
        let pruned = fresh
            .load("fleet", &workloads[twin], 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(pruned.len(), 1);
        assert!(
            pruned
                .min_distance(&vec_of(&format!("job-{twin} --run")))
                .unwrap()
                .0
                < 1e-6
        );
    }

    #[tokio::test]
    async fn a_per_workload_table_of_an_earlier_version_moves_into_its_shard() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        let mut b = Baseline::default();
        b.observe(&vec_of("nginx -s reload"), 10);
        b.observe(&vec_of("nginx -s reload"), 20);
        b.observe(&vec_of("certbot renew"), 30);
        let rows: Vec<Row> = b.take_dirty().into_iter().map(|r| (0, r)).collect();
        // The layout before shards: the same columns without workload_id,
        // a table per workload.
        let v1 = encode(&schema(), &rows)
            .unwrap()
            .project(&[1, 2, 3, 4, 5, 6])
            .unwrap();
        let db = lancedb::connect(uri).execute().await.unwrap();
        db.create_table(storage_name("acme", "web"), v1)
            .execute()
            .await
            .unwrap();

        let store = Store::open(uri).await.unwrap();
        let loaded = store
            .load("acme", "web", 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!((loaded.len(), loaded.events()), (2, 3));
        let names = db.table_names().execute().await.unwrap();
        assert_eq!(
            names,
            vec![shard_of("acme", "web")],
            "the old table is gone"
        );
        // A restarted scorer finds it in the shard, counted once.
        let again = Store::open(uri)
            .await
            .unwrap()
            .load("acme", "web", 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!((again.len(), again.events()), (2, 3));
    }

    #[tokio::test]
    async fn a_table_of_piled_up_increments_is_folded_and_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let mut b = Baseline::default();
        let n = 100u64;
        for i in 0..n {
            b.observe(&vec_of(&format!("worker-{i} --serve")), 1);
        }
        store.persist("o", "w", &b.take_dirty()).await.unwrap();
        let table = store.table(&shard_of("o", "w")).await.unwrap().unwrap();
        // Every behaviour repeats, and each write appends its increment.
        let mut writes = 0;
        let mut folded_at = None;
        for round in 2..40u64 {
            for i in 0..n {
                b.observe(&vec_of(&format!("worker-{i} --serve")), round);
            }
            store.persist("o", "w", &b.take_dirty()).await.unwrap();
            writes += 1;
            let rows = table.count_rows(None).await.unwrap() as u64;
            if rows == n {
                folded_at.get_or_insert(writes);
            }
            assert!(
                rows <= 2 * n + FOLD_SLACK + n,
                "{rows} rows after {writes} writes"
            );
        }
        // 100 rows per write: the first fold comes once the table holds more
        // than 2 × 100 + FOLD_SLACK rows.
        let expected = ((2 * n + FOLD_SLACK) / n) as i32;
        assert_eq!(folded_at, Some(expected));
        let loaded = reload(&dir, "o", "w", 0).await;
        assert_eq!(loaded.len(), n as usize);
        assert_eq!(loaded.events(), b.events());
        let (_, i) = loaded.min_distance(&vec_of("worker-7 --serve")).unwrap();
        let e = loaded.get(i);
        assert_eq!((e.count, e.first_seen_ns, e.last_seen_ns), (39, 1, 39));
    }

    #[tokio::test]
    async fn a_workload_coming_back_sees_what_another_scorer_wrote_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        shared_by_two_scorers(dir.path().to_str().unwrap()).await;
    }

    /// A fresh prefix of the stack's object store (`scripts/stack env`:
    /// OUTLIER_S3_BUCKET and the AWS_* variables object_store reads), or
    /// None without one. scripts/test sets OUTLIER_REQUIRE_S3=1: there, a
    /// missing object store fails instead of skipping.
    fn object_store_uri(test: &str) -> Option<String> {
        match std::env::var("OUTLIER_S3_BUCKET") {
            Ok(bucket) if !bucket.is_empty() => {
                let nonce = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos();
                Some(format!("s3://{bucket}/tests/{test}-{nonce:x}"))
            }
            _ => {
                assert_ne!(
                    std::env::var("OUTLIER_REQUIRE_S3").as_deref(),
                    Ok("1"),
                    "OUTLIER_REQUIRE_S3=1 but no object store: eval \"$(scripts/stack env)\""
                );
                eprintln!("no object store (OUTLIER_S3_BUCKET unset): skipped");
                None
            }
        }
    }

    #[tokio::test]
    async fn baselines_in_the_object_store_are_shared_by_scorers_on_other_machines() {
        let Some(uri) = object_store_uri("shared") else {
            return;
        };
        shared_by_two_scorers(&uri).await;
        // A scorer started later (another machine, nothing on its disk)
        // loads the workload's baseline from the object store.
        let late = Store::open(&uri).await.unwrap();
        let loaded = late
            .load("o", "w", 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!((loaded.len(), loaded.events()), (2, 3));
        let (d, _) = loaded.min_distance(&vec_of("certbot renew")).unwrap();
        assert!(d < 1e-6, "the behaviour learnt elsewhere is known: {d}");
    }

    async fn shared_by_two_scorers(uri: &str) {
        let (a, b) = (
            Store::open(uri).await.unwrap(),
            Store::open(uri).await.unwrap(),
        );
        let mut mine = Baseline::default();
        mine.observe(&vec_of("nginx -s reload"), 10);
        a.persist("o", "w", &mine.take_dirty()).await.unwrap();
        // The workload moves to scorer b, which learns more, then back to a.
        let mut theirs = b.load("o", "w", 0, IndexParams::default()).await.unwrap();
        theirs.observe(&vec_of("nginx -s reload"), 20);
        theirs.observe(&vec_of("certbot renew"), 20);
        b.persist("o", "w", &theirs.take_dirty()).await.unwrap();
        let back = a.load("o", "w", 0, IndexParams::default()).await.unwrap();
        assert_eq!(
            back.len(),
            2,
            "a's handle must not stay at its own last write"
        );
        assert_eq!(back.events(), 3);
        // A fold by a keeps b's rows too.
        assert_eq!(a.fold("o", "w").await.unwrap(), 2);
        assert_eq!(
            b.load("o", "w", 0, IndexParams::default())
                .await
                .unwrap()
                .events(),
            3
        );
    }

    #[tokio::test]
    async fn appends_are_compacted_and_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let mut b = Baseline::default();
        let n = COMPACT_EVERY as usize + 5;
        for i in 0..n {
            b.observe(&vec_of(&format!("job-{i} --run")), i as u64 + 1);
            if i % 3 == 0 {
                b.observe(&vec_of("job-0 --run"), i as u64 + 1);
            }
            store.persist("o", "w", &b.take_dirty()).await.unwrap();
        }
        let table = store.table(&shard_of("o", "w")).await.unwrap().unwrap();
        let stats = table.stats().await.unwrap();
        assert!(
            stats.fragment_stats.num_fragments < 10,
            "{} writes left {} files",
            n,
            stats.fragment_stats.num_fragments
        );
        let loaded = Store::open(dir.path().to_str().unwrap())
            .await
            .unwrap()
            .load("o", "w", 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(loaded.len(), n);
        assert_eq!(loaded.events(), b.events());
        let (_, i) = loaded.min_distance(&vec_of("job-0 --run")).unwrap();
        assert_eq!(loaded.get(i).count, b.get(0).count);
    }
}
