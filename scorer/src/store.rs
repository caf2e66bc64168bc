//! Baseline persistence in LanceDB: one table per (org, workload), named by
//! [`outlier_common::names::storage_name`] so no org or workload string can
//! escape or collide. Every write is an append: a new behaviour's first row,
//! or a repeated behaviour's increment (events since its previous write, its
//! latest last-seen time). Loading adds up a key's rows. Appends stay cheap
//! however large the table; the `merge_insert` that updated rows in place
//! joined each write with the whole table and took most of a core under a
//! fleet's load. When a table holds more than twice as many rows as
//! behaviours (plus [`FOLD_SLACK`]) it is folded: rewritten with one row per
//! behaviour. Every [`COMPACT_EVERY`] writes a table's small files are
//! compacted, and after that and after a fold, versions older than
//! [`outlier_common::lance::KEEP_VERSIONS_MINUTES`] are deleted.
//!
//! A fold reads the table's latest version and replaces it: an append by
//! another scorer between the two (only during a partition hand-over, and
//! the fold takes milliseconds for a workload's table) would be lost.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::Table;
use lancedb::query::ExecutableQuery;
use lancedb::table::AddDataMode;
use outlier_common::featurize::{DIM, FEATURIZER_VERSION};
use outlier_common::lance::{Created, Tables};
use outlier_common::names::storage_name;
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

/// Writes to one table between compactions.
pub const COMPACT_EVERY: u32 = 50;

/// Rows beyond twice a table's behaviours that it may hold before a fold.
pub const FOLD_SLACK: u64 = 1024;

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
    schema: SchemaRef,
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
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
    /// Connects to LanceDB at `uri` (a directory, or an object-store URI).
    pub async fn open(uri: &str) -> Result<Self, StoreError> {
        let db = lancedb::connect(uri).execute().await?;
        Ok(Self {
            tables: Tables::new(db, COMPACT_EVERY),
            shapes: Mutex::new(HashMap::new()),
            schema: schema(),
        })
    }

    /// Whether LanceDB answers at all (it lists its tables): tells an
    /// outage from a record that fails on its own.
    pub async fn probe(&self) -> bool {
        self.tables.probe().await
    }

    /// Drops what this process holds of a workload's table (its handle and
    /// shape), when its baseline is unloaded.
    pub async fn forget(&self, org: &str, workload: &str) {
        let name = storage_name(org, workload);
        self.tables.forget(&name).await;
        self.shapes.lock().await.remove(&name);
    }

    /// Open table handles (bounded by the loaded baselines).
    pub async fn open_tables(&self) -> usize {
        self.tables.open_count().await
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
        let name = storage_name(org, workload);
        let Some(table) = self.table(&name).await? else {
            return Ok(Baseline::with_params(params));
        };
        let (rows, behaviours) = self.read(&name, &table).await?;
        self.shapes
            .lock()
            .await
            .insert(name, Shape::new(rows, behaviours.len() as u64));
        Ok(Baseline::from_behaviours(
            behaviours
                .into_iter()
                .filter(|b| b.last_seen_ns >= cutoff_ns),
            params,
        ))
    }

    /// Reads a table whole: how many rows it has, and its behaviours (a
    /// key's rows added up).
    async fn read(&self, name: &str, table: &Table) -> Result<(u64, Vec<Behaviour>), StoreError> {
        // The handle stays at the version it last read or wrote: another
        // scorer may have written since (the workload was theirs a while).
        table.checkout_latest().await?;
        let mut stream = table.query().execute().await?;
        let mut rows = Vec::new();
        let mut n = 0;
        while let Some(batch) = stream.try_next().await? {
            n += batch.num_rows() as u64;
            decode(name, &batch, &mut rows)?;
        }
        Ok((n, add_up(rows)))
    }

    /// Deletes behaviours by key (they were confirmed malicious).
    pub async fn delete(&self, org: &str, workload: &str, keys: &[u64]) -> Result<(), StoreError> {
        if keys.is_empty() {
            return Ok(());
        }
        let name = storage_name(org, workload);
        if let Some(table) = self.table(&name).await? {
            let list = keys
                .iter()
                .map(|k| (*k as i64).to_string())
                .collect::<Vec<_>>()
                .join(", ");
            table.delete(format!("key IN ({list})").as_str()).await?;
        }
        Ok(())
    }

    /// Appends behaviours of a workload: a new behaviour's first row or a
    /// repeated one's increment (see [`Baseline::take_dirty`]). One write is
    /// one commit: a write that failed left nothing, and may be retried.
    /// Folds the table when it is due; a failed fold is logged (the write
    /// itself landed) and tried again at a later write.
    pub async fn persist(
        &self,
        org: &str,
        workload: &str,
        rows: &[Behaviour],
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let name = storage_name(org, workload);
        let table = match self.table(&name).await? {
            Some(t) => t,
            None => match self
                .tables
                .create(&name, encode(&self.schema, rows)?)
                .await?
            {
                Created::New(_) => {
                    self.count_write(&name, rows, Shape::default()).await;
                    return Ok(());
                }
                // Another scorer created it first: append to theirs.
                Created::Joined(t) => t,
            },
        };
        table.add(encode(&self.schema, rows)?).execute().await?;
        let before = match self.shapes.lock().await.get(&name) {
            Some(s) => *s,
            None => {
                // Not loaded by this process: take its rows as behaviours.
                // (No `?`: the write landed, and a retry would repeat it.)
                let n = table.count_rows(None).await.unwrap_or(0) as u64;
                let n = n.saturating_sub(rows.len() as u64);
                Shape::new(n, n)
            }
        };
        // Failures are logged and the upkeep comes round again.
        if self.count_write(&name, rows, before).await {
            if let Err(e) = self.fold_table(&name, &table, 0).await {
                tracing::warn!(table = name, error = %e, "baseline fold failed");
            }
        } else {
            self.tables.wrote(&name, &table).await;
        }
        Ok(())
    }

    /// Records a write of `rows` to a table that had shape `before` (unless
    /// this process knows it already), and says whether a fold is due: the
    /// table holds more than twice as many rows as behaviours plus
    /// [`FOLD_SLACK`]. Otherwise the write counts towards the table's
    /// compaction every [`COMPACT_EVERY`] writes (each adds files, and
    /// loads read all of them), which also deletes old versions.
    async fn count_write(&self, name: &str, rows: &[Behaviour], before: Shape) -> bool {
        let mut shapes = self.shapes.lock().await;
        let shape = shapes.entry(name.to_string()).or_insert(before);
        shape.rows += rows.len() as u64;
        shape.behaviours += rows.iter().filter(|r| !r.stored).count() as u64;
        shape.rows > 2 * shape.behaviours + FOLD_SLACK
    }

    /// Rewrites a workload's table with one row per behaviour, leaving out
    /// behaviours last seen before `cutoff_ns` (0: none). Returns how many
    /// behaviours it kept.
    pub async fn fold(
        &self,
        org: &str,
        workload: &str,
        cutoff_ns: u64,
    ) -> Result<usize, StoreError> {
        let name = storage_name(org, workload);
        match self.table(&name).await? {
            Some(table) => self.fold_table(&name, &table, cutoff_ns).await,
            None => Ok(0),
        }
    }

    async fn fold_table(
        &self,
        name: &str,
        table: &Table,
        cutoff_ns: u64,
    ) -> Result<usize, StoreError> {
        let (_, mut behaviours) = self.read(name, table).await?;
        behaviours.retain(|b| b.last_seen_ns >= cutoff_ns);
        table
            .add(encode(&self.schema, &behaviours)?)
            .mode(AddDataMode::Overwrite)
            .execute()
            .await?;
        let n = behaviours.len() as u64;
        self.shapes
            .lock()
            .await
            .insert(name.to_string(), Shape::new(n, n));
        self.tables.rewritten(name).await;
        tracing::debug!(table = name, behaviours = n, "baseline folded");
        if let Err(e) = outlier_common::lance::clean_up(table).await {
            tracing::warn!(table = name, error = %e, "baseline clean-up failed");
        }
        Ok(behaviours.len())
    }
}

fn encode(schema: &SchemaRef, rows: &[Behaviour]) -> Result<RecordBatch, StoreError> {
    let vectors = FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
        rows.iter()
            .map(|r| Some(r.vector.iter().copied().map(Some).collect::<Vec<_>>())),
        DIM as i32,
    );
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.key as i64),
            )),
            Arc::new(vectors),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.count as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.first_seen_ns as i64),
            )),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.last_seen_ns as i64),
            )),
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

/// Adds up the rows of each key: counts summed, the earliest first-seen
/// and the latest last-seen time; in the order keys first appear.
fn add_up(rows: Vec<Behaviour>) -> Vec<Behaviour> {
    let mut at: HashMap<u64, usize> = HashMap::with_capacity(rows.len());
    let mut out: Vec<Behaviour> = Vec::with_capacity(rows.len());
    for row in rows {
        match at.get(&row.key) {
            Some(&i) => {
                let b = &mut out[i];
                b.count += row.count;
                b.first_seen_ns = b.first_seen_ns.min(row.first_seen_ns);
                b.last_seen_ns = b.last_seen_ns.max(row.last_seen_ns);
            }
            None => {
                at.insert(row.key, out.len());
                out.push(row);
            }
        }
    }
    out
}

fn decode(table: &str, batch: &RecordBatch, out: &mut Vec<Behaviour>) -> Result<(), StoreError> {
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
    }
    Ok(())
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

        // A prune folds the table: one row per behaviour, the old ones gone.
        let store2 = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        assert_eq!(store2.fold(org, wl, 250).await.unwrap(), 2);
        let table = store2.table(&storage_name(org, wl)).await.unwrap().unwrap();
        assert_eq!(table.count_rows(None).await.unwrap(), 2);
        let after = reload(&dir, org, wl, 0).await;
        assert_eq!(after.len(), 2);
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

        // Pruning everything leaves an empty table, not an error.
        assert_eq!(store2.fold(org, wl, u64::MAX).await.unwrap(), 0);
        assert!(reload(&dir, org, wl, 0).await.is_empty());

        // Table names never contain the raw strings.
        let names = store2.tables.db().table_names().execute().await.unwrap();
        assert_eq!(names, vec![storage_name(org, wl)]);
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
        let table = store.table(&storage_name("o", "w")).await.unwrap().unwrap();
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
        assert_eq!(a.fold("o", "w", 0).await.unwrap(), 2);
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
        let table = store.table(&storage_name("o", "w")).await.unwrap().unwrap();
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
