//! Upkeep of LanceDB tables written in many small appends: every append
//! adds files and a version, and LanceDB never removes either by itself.

use lancedb::Table;
use lancedb::table::optimize::Duration;
use lancedb::table::{CompactionOptions, OptimizeAction};

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
}
