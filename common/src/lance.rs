//! LanceDB tables written in many small appends, as the scorer (an org's
//! baseline shards) and the indexer (one search table per org) use
//! them: [`Tables`] opens each table once and keeps the handle, creates a
//! table on its first write (or joins the one another process created
//! first), and counts writes to compact a table every
//! [`Tables::compact_every`]: every append adds files and a version, and
//! LanceDB never removes either by itself.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;

use arrow_array::RecordBatch;
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::table::optimize::Duration;
use lancedb::table::{CompactionOptions, OptimizeAction};
use lancedb::{Connection, Table};
use tokio::sync::Mutex;

/// Brings a table written by an older version up to date when it is first
/// opened (adds a column, say).
pub type Migration =
    for<'t> fn(&'t Table) -> Pin<Box<dyn Future<Output = Result<(), lancedb::Error>> + Send + 't>>;

/// The tables of one LanceDB database that this process uses.
pub struct Tables {
    db: Connection,
    open: Mutex<HashMap<String, Table>>,
    /// Writes per table since its last compaction.
    writes: Mutex<HashMap<String, u32>>,
    compact_every: u32,
    migrate: Option<Migration>,
}

impl Tables {
    /// Tables of `db`, each compacted every `compact_every` counted writes.
    pub fn new(db: Connection, compact_every: u32) -> Self {
        Self {
            db,
            open: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            compact_every: compact_every.max(1),
            migrate: None,
        }
    }

    /// Runs `migrate` on every table when this process first opens it.
    pub fn with_migration(mut self, migrate: Migration) -> Self {
        self.migrate = Some(migrate);
        self
    }

    pub fn db(&self) -> &Connection {
        &self.db
    }

    /// Writes between compactions of a table.
    pub fn compact_every(&self) -> u32 {
        self.compact_every
    }

    /// Whether LanceDB answers at all (it lists its tables): tells an
    /// outage from a write that fails on its own.
    pub async fn probe(&self) -> bool {
        self.db.table_names().limit(1).execute().await.is_ok()
    }

    /// The table `name`, opened once per process; `None` when it does not
    /// exist.
    pub async fn get(&self, name: &str) -> Result<Option<Table>, lancedb::Error> {
        if let Some(t) = self.open.lock().await.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.db.open_table(name).execute().await {
            Ok(t) => {
                if let Some(migrate) = self.migrate {
                    migrate(&t).await?;
                }
                self.open.lock().await.insert(name.to_string(), t.clone());
                Ok(Some(t))
            }
            Err(lancedb::Error::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates `name` with `first` as its rows. When another process
    /// created it meanwhile, `Joined` is that table and `first` was not
    /// written.
    pub async fn create(&self, name: &str, first: RecordBatch) -> Result<Created, lancedb::Error> {
        match self.db.create_table(name, first).execute().await {
            Ok(t) => {
                // Version 1 unless another process created the table
                // meanwhile: Lance lets both creates commit, the later as
                // an overwrite that hides the earlier one's rows.
                let version = t.version().await?;
                if version > 1 {
                    self.restore_overwritten(name, &t, version).await;
                }
                self.open.lock().await.insert(name.to_string(), t.clone());
                self.writes.lock().await.insert(name.to_string(), 1);
                Ok(Created::New(t))
            }
            Err(lancedb::Error::TableAlreadyExists { .. }) => match self.get(name).await? {
                Some(t) => Ok(Created::Joined(t)),
                None => Err(lancedb::Error::TableNotFound {
                    name: name.to_string(),
                    source: "created by another process, then dropped".into(),
                }),
            },
            Err(e) => Err(e),
        }
    }

    /// Appends back the rows that this process's create, committed as
    /// `version` over a table another process created meanwhile, hid: the
    /// table as it was just before. Each racing creator restores the one
    /// before it, so none of their rows is lost. A failure is logged (the
    /// rows stay in the older version until it is cleaned up).
    async fn restore_overwritten(&self, name: &str, created: &Table, version: u64) {
        let restored = async {
            let before = self.db.open_table(name).execute().await?;
            before.checkout(version - 1).await?;
            let batches: Vec<RecordBatch> = before.query().execute().await?.try_collect().await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if rows > 0 {
                created.add(batches).execute().await?;
            }
            Ok::<_, lancedb::Error>(rows)
        }
        .await;
        match restored {
            Ok(rows) => tracing::info!(
                table = name,
                version,
                rows,
                "table created by two processes at once: the other's rows appended back"
            ),
            Err(e) => tracing::error!(
                table = name,
                version,
                error = %e,
                "table created by two processes at once: the other's rows could not be appended back"
            ),
        }
    }

    /// Counts a write to `table`; every [`Tables::compact_every`] writes it
    /// is compacted (a failure is logged, and the compaction comes round
    /// again).
    pub async fn wrote(&self, name: &str, table: &Table) {
        let due = {
            let mut writes = self.writes.lock().await;
            let n = writes.entry(name.to_string()).or_default();
            *n += 1;
            if *n >= self.compact_every {
                *n = 0;
                true
            } else {
                false
            }
        };
        if due && let Err(e) = compact(table).await {
            tracing::warn!(table = name, error = %e, "table compaction failed");
        }
    }

    /// Starts a table's write count again (it was just rewritten whole).
    pub async fn rewritten(&self, name: &str) {
        self.writes.lock().await.remove(name);
    }

    /// Handles held.
    pub async fn open_count(&self) -> usize {
        self.open.lock().await.len()
    }
}

/// What [`Tables::create`] found.
pub enum Created {
    /// Created with the first rows.
    New(Table),
    /// Another process created it first; the rows were not written.
    Joined(Table),
}

/// Versions older than this are deleted with the files only they use. A
/// read takes seconds; a reader that still lost a file is retried.
pub const KEEP_VERSIONS_MINUTES: i64 = 10;

/// Merges a table's small files (files of 20k rows and more are left
/// alone: compacting into one file rewrote a growing table at every turn),
/// then deletes versions older than [`KEEP_VERSIONS_MINUTES`].
pub async fn compact(table: &Table) -> Result<(), lancedb::Error> {
    compact_keeping(table, Duration::try_minutes(KEEP_VERSIONS_MINUTES)).await
}

/// Deletes versions older than [`KEEP_VERSIONS_MINUTES`], and the files
/// only they use.
pub async fn clean_up(table: &Table) -> Result<(), lancedb::Error> {
    clean_up_keeping(table, Duration::try_minutes(KEEP_VERSIONS_MINUTES)).await
}

async fn compact_keeping(table: &Table, keep: Option<Duration>) -> Result<(), lancedb::Error> {
    table
        .optimize(OptimizeAction::Compact {
            options: CompactionOptions {
                target_rows_per_fragment: 20_000,
                ..CompactionOptions::default()
            },
            remap_options: None,
        })
        .await?;
    clean_up_keeping(table, keep).await
}

async fn clean_up_keeping(table: &Table, keep: Option<Duration>) -> Result<(), lancedb::Error> {
    table
        .optimize(OptimizeAction::Prune {
            older_than: keep,
            delete_unverified: None,
            error_if_tagged_old_versions: None,
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Int64Array, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use super::*;

    fn files(dir: &std::path::Path) -> usize {
        std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    #[tokio::test]
    async fn compaction_merges_appends_and_old_versions_go_with_their_files() {
        let dir = tempfile::tempdir().unwrap();
        let db = lancedb::connect(dir.path().to_str().unwrap())
            .execute()
            .await
            .unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |i: i64| {
            RecordBatch::try_new(
                schema.clone(),
                vec![Arc::new(Int64Array::from_iter_values(i * 10..i * 10 + 10))],
            )
            .unwrap()
        };
        let table = db.create_table("t", batch(0)).execute().await.unwrap();
        for i in 1..20 {
            table.add(batch(i)).execute().await.unwrap();
        }
        let data = dir.path().join("t.lance").join("data");
        assert_eq!(files(&data), 20);
        // Kept for the default time, nothing is deleted yet.
        compact(&table).await.unwrap();
        assert_eq!(table.count_rows(None).await.unwrap(), 200);
        assert_eq!(table.stats().await.unwrap().fragment_stats.num_fragments, 1);
        assert!(files(&data) > 20, "the old files stay for a while");
        let versions = table.list_versions().await.unwrap().len();
        // Kept for no time, the old versions and files go.
        compact_keeping(&table, Duration::try_seconds(0))
            .await
            .unwrap();
        assert!(table.list_versions().await.unwrap().len() < versions);
        assert_eq!(files(&data), 1);
        assert_eq!(table.count_rows(None).await.unwrap(), 200);
    }

    fn numbers(schema: &Arc<Schema>, from: i64, to: i64) -> RecordBatch {
        RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(Int64Array::from_iter_values(from..to))],
        )
        .unwrap()
    }

    async fn values(table: &Table) -> Vec<i64> {
        let batches: Vec<RecordBatch> = table
            .query()
            .execute()
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        let mut v: Vec<i64> = batches
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        v.sort_unstable();
        v
    }

    #[tokio::test]
    async fn a_create_that_overwrote_another_processs_appends_its_rows_back() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        // What a losing racer's create commits: an overwrite of the table
        // the other process created an instant before.
        let first = lancedb::connect(uri).execute().await.unwrap();
        first
            .create_table("t", numbers(&schema, 0, 10))
            .execute()
            .await
            .unwrap();
        let second = Tables::new(lancedb::connect(uri).execute().await.unwrap(), 50);
        let t = second
            .db()
            .create_table("t", numbers(&schema, 10, 15))
            .mode(lancedb::database::CreateTableMode::Overwrite)
            .execute()
            .await
            .unwrap();
        assert_eq!(values(&t).await, (10..15).collect::<Vec<_>>());
        second.restore_overwritten("t", &t, 2).await;
        assert_eq!(values(&t).await, (0..15).collect::<Vec<_>>());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_processes_creating_one_table_at_once_keep_both_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let a = Arc::new(Tables::new(
            lancedb::connect(uri).execute().await.unwrap(),
            50,
        ));
        let b = Arc::new(Tables::new(
            lancedb::connect(uri).execute().await.unwrap(),
            50,
        ));
        for i in 0..40 {
            let name = format!("t{i}");
            let write = |tables: Arc<Tables>, rows: RecordBatch| {
                let name = name.clone();
                tokio::spawn(async move {
                    match tables.create(&name, rows.clone()).await.unwrap() {
                        Created::New(_) => {}
                        Created::Joined(t) => {
                            t.add(rows).execute().await.unwrap();
                        }
                    }
                })
            };
            let (x, y) = tokio::join!(
                write(a.clone(), numbers(&schema, 0, 10)),
                write(b.clone(), numbers(&schema, 10, 20))
            );
            x.unwrap();
            y.unwrap();
            let t = a.db().open_table(&name).execute().await.unwrap();
            assert_eq!(
                values(&t).await,
                (0..20).collect::<Vec<_>>(),
                "table {name}"
            );
        }
    }
}
