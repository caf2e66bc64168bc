//! Baseline persistence in LanceDB: one table per (org, workload), named by
//! [`outlier_common::names::storage_name`] so no org or workload string can
//! escape or collide. New behaviour is appended; a behaviour seen again is
//! written with `merge_insert` on the behaviour key, so it updates its count
//! and last-seen time instead of adding a row. (A merge joins with the whole
//! table, an append does not: most writes are new behaviour.) Every
//! [`COMPACT_EVERY`] writes a table's small files are compacted.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::types::Float32Type;
use arrow_array::{
    Array, FixedSizeListArray, Float32Array, Int32Array, Int64Array, RecordBatch,
    RecordBatchIterator, RecordBatchReader,
};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use lancedb::query::ExecutableQuery;
use lancedb::table::{CompactionOptions, OptimizeAction};
use lancedb::{Connection, Table};
use outlier_common::featurize::{DIM, FEATURIZER_VERSION};
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

/// Writes to one table between compactions.
pub const COMPACT_EVERY: u32 = 50;

pub struct Store {
    db: Connection,
    tables: Mutex<HashMap<String, Table>>,
    /// Writes since the last compaction, per table.
    writes: Mutex<HashMap<String, u32>>,
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
            db,
            tables: Mutex::new(HashMap::new()),
            writes: Mutex::new(HashMap::new()),
            schema: schema(),
        })
    }

    async fn table(&self, name: &str) -> Result<Option<Table>, StoreError> {
        if let Some(t) = self.tables.lock().await.get(name) {
            return Ok(Some(t.clone()));
        }
        match self.db.open_table(name).execute().await {
            Ok(t) => {
                self.tables.lock().await.insert(name.to_string(), t.clone());
                Ok(Some(t))
            }
            Err(lancedb::Error::TableNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Loads the baseline of a workload (empty when it has none), leaving out
    /// rows older than `cutoff_ns` or made by another featurizer version.
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
        let mut stream = table.query().execute().await?;
        let mut rows = Vec::new();
        while let Some(batch) = stream.try_next().await? {
            decode(&name, &batch, cutoff_ns, &mut rows)?;
        }
        Ok(Baseline::from_behaviours(rows, params))
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

    /// Writes (inserts or updates) behaviours of a workload. With
    /// `append_new`, behaviours not stored before are appended; without it
    /// (a retry, when an earlier attempt may have written them) everything
    /// is merged on the key.
    pub async fn persist(
        &self,
        org: &str,
        workload: &str,
        rows: &[Behaviour],
        append_new: bool,
    ) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let name = storage_name(org, workload);
        let table = match self.table(&name).await? {
            Some(t) => t,
            None => match self
                .db
                .create_table(&name, encode(&self.schema, rows)?)
                .execute()
                .await
            {
                Ok(t) => {
                    self.tables.lock().await.insert(name, t);
                    return Ok(());
                }
                // Another scorer created it first: merge into theirs.
                Err(lancedb::Error::TableAlreadyExists { .. }) => {
                    self.table(&name).await?.ok_or_else(|| StoreError::Schema {
                        table: name.clone(),
                        detail: "vanished".into(),
                    })?
                }
                Err(e) => return Err(e.into()),
            },
        };
        let (new, known): (Vec<Behaviour>, Vec<Behaviour>) = if append_new {
            rows.iter().cloned().partition(|r| !r.stored)
        } else {
            (Vec::new(), rows.to_vec())
        };
        if !new.is_empty() {
            table.add(encode(&self.schema, &new)?).execute().await?;
        }
        if !known.is_empty() {
            let reader: Box<dyn RecordBatchReader + Send> = Box::new(RecordBatchIterator::new(
                vec![Ok(encode(&self.schema, &known)?)],
                self.schema.clone(),
            ));
            let mut merge = table.merge_insert(&["key"]);
            merge
                .when_matched_update_all(None)
                .when_not_matched_insert_all();
            merge.execute(reader).await?;
        }
        self.maybe_compact(&name, &table).await;
        Ok(())
    }

    /// Compacts a table's small files every [`COMPACT_EVERY`] writes
    /// (each write adds files; loads and merges read all of them). A failed
    /// compaction is logged and retried at the next turn.
    async fn maybe_compact(&self, name: &str, table: &Table) {
        {
            let mut writes = self.writes.lock().await;
            let n = writes.entry(name.to_string()).or_default();
            *n += 1;
            if *n < COMPACT_EVERY {
                return;
            }
            *n = 0;
        }
        let action = OptimizeAction::Compact {
            // Files of 20k rows and more are left alone: compacting into
            // one file per table rewrote a growing table at every turn.
            options: CompactionOptions {
                target_rows_per_fragment: 20_000,
                ..CompactionOptions::default()
            },
            remap_options: None,
        };
        if let Err(e) = table.optimize(action).await {
            tracing::warn!(table = name, error = %e, "baseline compaction failed");
        }
    }

    /// Deletes behaviours last seen before `cutoff_ns`.
    pub async fn prune(&self, org: &str, workload: &str, cutoff_ns: u64) -> Result<(), StoreError> {
        let name = storage_name(org, workload);
        if let Some(table) = self.table(&name).await? {
            table
                .delete(format!("last_seen_ns < {}", cutoff_ns as i64).as_str())
                .await?;
        }
        Ok(())
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

fn decode(
    table: &str,
    batch: &RecordBatch,
    cutoff_ns: u64,
    out: &mut Vec<Behaviour>,
) -> Result<(), StoreError> {
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
        if version.value(i) != FEATURIZER_VERSION as i32 || (last.value(i) as u64) < cutoff_ns {
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

    #[tokio::test]
    async fn persists_merges_reloads_and_prunes_in_real_lancedb() {
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
        store.persist(org, wl, &b.take_dirty(), true).await.unwrap();
        // A repeat (merged) and a new behaviour (appended) in one write; the
        // write retried without appending (as after a failure) adds nothing.
        b.observe(&vec_of("nginx -s reload"), 300);
        b.observe(&vec_of("crontab -l"), 300);
        let rows = b.take_dirty();
        assert_eq!(rows.iter().filter(|r| r.stored).count(), 1);
        store.persist(org, wl, &rows, true).await.unwrap();
        store.persist(org, wl, &rows, false).await.unwrap();

        // A fresh store (a restarted scorer) rebuilds the same baseline.
        let store2 = Store::open(dir.path().to_str().unwrap()).await.unwrap();
        let loaded = store2
            .load(org, wl, 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(loaded.len(), 3, "repeated behaviour stored once");
        let (d, i) = loaded.min_distance(&vec_of("nginx -s reload")).unwrap();
        assert!(d < 1e-6);
        assert_eq!(loaded.get(i).count, 2);
        assert_eq!(loaded.get(i).last_seen_ns, 300);

        // Rows older than the cutoff are left out on load and deleted by prune.
        assert_eq!(
            store2
                .load(org, wl, 250, IndexParams::default())
                .await
                .unwrap()
                .len(),
            2
        );
        store2.prune(org, wl, 250).await.unwrap();
        assert_eq!(
            Store::open(dir.path().to_str().unwrap())
                .await
                .unwrap()
                .load(org, wl, 0, IndexParams::default())
                .await
                .unwrap()
                .len(),
            2
        );

        // Deleting by key (malicious feedback) removes exactly that row.
        let doomed = loaded.get(i).key;
        store2.delete(org, wl, &[doomed]).await.unwrap();
        let after = Store::open(dir.path().to_str().unwrap())
            .await
            .unwrap()
            .load(org, wl, 0, IndexParams::default())
            .await
            .unwrap();
        assert_eq!(
            after.len(),
            1,
            "the pruned row and the deleted row are gone"
        );
        assert!(after.min_distance(&vec_of("crontab -l")).unwrap().0 < 1e-6);

        // Table names never contain the raw strings.
        let names = store2.db.table_names().execute().await.unwrap();
        assert_eq!(names, vec![storage_name(org, wl)]);
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
            store
                .persist("o", "w", &b.take_dirty(), true)
                .await
                .unwrap();
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
