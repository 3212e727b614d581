//! ResultStore: write → list → query → delete, the manifest, corruption detection, fault
//! injection at every request of a write, concurrent writers and recovery.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array};
use futures::TryStreamExt;
use jammi_db::JammiError;
use jammi_db::catalog::Catalog;
use jammi_db::index::{IndexParams, Metric};
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::storage::{StorageRegistry, StorageUrl};
use jammi_db::store::{FileRole, ResultStore, TableSpec};
use object_store::ObjectStore;

use crate::common::{memory_root, sample_batch, sample_schema, tempdir};

fn spec(vector: bool) -> TableSpec {
    TableSpec {
        source: "papers".into(),
        task: "text_embedding".into(),
        model: "BAAI/bge-m3".into(),
        key_column: Some("id".into()),
        vector_column: vector.then(|| "embedding".into()),
        index: IndexParams::default(),
        ..Default::default()
    }
}

fn store_at(root: &str, registry: StorageRegistry) -> ResultStore {
    let url = StorageUrl::parse(root).unwrap();
    let catalog = Catalog::new(url.clone(), registry.clone(), None);
    ResultStore::with_root(url, registry, catalog).unwrap()
}

async fn names_under(store: &Arc<dyn ObjectStore>, root: &StorageUrl) -> Vec<String> {
    let mut v: Vec<String> = store
        .list(Some(&root.object_path().unwrap()))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    v.sort();
    v
}

async fn write_query_delete(root: &str) {
    let rs = store_at(root, StorageRegistry::new());
    let batches = vec![sample_batch(0, 300, 8), sample_batch(300, 200, 8)];
    let m = rs
        .write_batches(&spec(true), sample_schema(8), batches)
        .await
        .unwrap();

    // Naming and manifest contents (DESIGN §4).
    let parts: Vec<&str> = m.table.split("__").collect();
    assert_eq!(&parts[..3], &["papers", "text_embedding", "BAAI_bge-m3"]);
    assert_eq!(m.rows, 500);
    assert_eq!(m.key_column.as_deref(), Some("id"));
    let info = m.index.as_ref().unwrap();
    assert_eq!(
        (info.dimensions, info.metric, info.vectors),
        (8, Metric::Cosine, 500)
    );
    assert_eq!(info.usearch_version, usearch::version());
    for role in [FileRole::Parquet, FileRole::Index, FileRole::Rowmap] {
        let f = m.file(role).unwrap();
        assert!(f.size > 0 && f.name.starts_with(&m.table), "{f:?}");
    }
    assert_eq!(rs.list_tables().await.unwrap(), vec![m.table.clone()]);
    rs.verify(&m.table).await.unwrap();

    // Query through a session on the same root.
    let s = JammiSession::open_with(
        root,
        OpenOptions {
            registry: Some(rs.registry().clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = s
        .sql(&format!(
            "SELECT count(*), sum(id) FROM jammi.public.\"{}\"",
            m.table
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let c0 = r[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let c1 = r[0]
        .column(1)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!((c0, c1), (500, (0..500).sum::<i64>()));

    // Delete: gone from listing, from SQL, and from storage. Deleting it again is an
    // error naming it; the store's own delete is idempotent.
    s.delete_table(&m.table).await.unwrap();
    let again = s.delete_table(&m.table).await.unwrap_err();
    assert!(
        matches!(again, JammiError::NotFound { .. }) && again.to_string().contains(&m.table),
        "{again}"
    );
    rs.delete_table_files(&m.table).await.unwrap();
    assert!(rs.list_tables().await.unwrap().is_empty());
    assert!(matches!(
        rs.manifest(&m.table).await,
        Err(JammiError::NotFound { .. })
    ));
    let store = rs.object_store().await.unwrap();
    let left: Vec<String> = names_under(&store, rs.root())
        .await
        .into_iter()
        .filter(|n| n.contains(&m.table))
        .collect();
    assert!(left.is_empty(), "objects left after delete: {left:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn local_write_list_query_delete() {
    let dir = tempdir();
    write_query_delete(dir.path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn memory_write_list_query_delete() {
    write_query_delete(&memory_root("store")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn nulls_in_the_vector_column_are_skipped_and_the_rowmap_points_at_parquet_rows() {
    use datafusion::arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, RecordBatch};
    use datafusion::arrow::datatypes::{DataType, Field};
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let b = sample_batch(0, 6, 2);
    let emb = b
        .column(3)
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap();
    let nulls =
        datafusion::arrow::buffer::NullBuffer::from(vec![true, false, true, false, false, true]);
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        2,
        Arc::new(
            emb.values()
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap()
                .clone(),
        ),
        Some(nulls),
    );
    let mut cols: Vec<ArrayRef> = b.columns().to_vec();
    cols[3] = Arc::new(emb);
    let b = RecordBatch::try_new(b.schema(), cols).unwrap();
    let m = rs
        .write_batches(&spec(true), b.schema(), vec![b])
        .await
        .unwrap();
    assert_eq!(m.index.as_ref().unwrap().vectors, 3);
    let loaded = rs.index(&m).await.unwrap();
    assert_eq!(loaded.rowmap(), [0, 2, 5]);
    // The rowmap carries the key of each indexed row, in index-key order.
    let keys = loaded.keys().expect("keys in the rowmap");
    let keys = keys
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap();
    assert_eq!(keys.values().to_vec(), vec![0, 2, 5]);
}

#[tokio::test(flavor = "multi_thread")]
async fn one_large_batch_is_written_as_row_groups_of_bounded_size() {
    use datafusion::parquet::file::reader::FileReader;
    use datafusion::parquet::file::serialized_reader::SerializedFileReader;
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    // One 24k-row batch of 64-d vectors: ~7 MiB encoded, held as one row group unless
    // the writer is fed slices.
    let m = rs
        .write_batches(
            &spec(true),
            sample_schema(64),
            vec![sample_batch(0, 24_000, 64)],
        )
        .await
        .unwrap();
    let path = rs.parquet_url(&m.table).unwrap().local_path().unwrap();
    let reader = SerializedFileReader::new(std::fs::File::open(path).unwrap()).unwrap();
    let groups = reader.metadata().row_groups();
    assert!(groups.len() >= 2, "{} row groups", groups.len());
    for g in groups {
        assert!(
            g.compressed_size() <= (9 << 19),
            "row group of {} bytes",
            g.compressed_size()
        );
    }
    let rows: i64 = groups.iter().map(|g| g.num_rows()).sum();
    assert_eq!(rows, 24_000);
}

#[tokio::test(flavor = "multi_thread")]
async fn result_parquet_has_a_page_index_small_pages_and_no_dictionaries() {
    use datafusion::parquet::file::reader::FileReader;
    use datafusion::parquet::file::serialized_reader::{ReadOptionsBuilder, SerializedFileReader};
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let batches = vec![sample_batch(0, 3000, 64), sample_batch(3000, 2000, 64)];
    let m = rs
        .write_batches(&spec(true), sample_schema(64), batches)
        .await
        .unwrap();
    let path = rs.parquet_url(&m.table).unwrap().local_path().unwrap();
    let reader = SerializedFileReader::new_with_options(
        std::fs::File::open(path).unwrap(),
        ReadOptionsBuilder::new().with_page_index().build(),
    )
    .unwrap();
    let md = reader.metadata();
    let offsets = md.offset_index().expect("page index written");
    let mut pages = 0;
    for (g, rg) in md.row_groups().iter().enumerate() {
        for (c, chunk) in rg.columns().iter().enumerate() {
            let name = chunk.column_path().string();
            assert_eq!(
                chunk.dictionary_page_offset(),
                None,
                "{name} has a dictionary"
            );
            let starts: Vec<i64> = offsets[g][c]
                .page_locations
                .iter()
                .map(|p| p.first_row_index)
                .chain([rg.num_rows()])
                .collect();
            pages += starts.len() - 1;
            if !name.starts_with("embedding") {
                let widest = starts.windows(2).map(|w| w[1] - w[0]).max().unwrap();
                assert!(widest < 1024, "{name}: a page of {widest} rows");
            }
        }
    }
    assert!(pages >= 4 * 5, "{pages} pages for 5000 rows of 4 columns");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_write_requests_are_refused_without_leaving_objects() {
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let mut s = spec(true);
    s.vector_column = Some("nope".into());
    let e = rs
        .write_batches(&s, sample_schema(4), vec![sample_batch(0, 5, 4)])
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope"), "{e}");
    let mut s = spec(true);
    s.vector_column = Some("title".into());
    let e = rs
        .write_batches(&s, sample_schema(4), vec![sample_batch(0, 5, 4)])
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("title") && e.to_string().contains("FixedSizeList"),
        "{e}"
    );
    let mut s = spec(false);
    s.key_column = Some("missing_key".into());
    assert!(
        rs.write_batches(&s, sample_schema(4), vec![])
            .await
            .unwrap_err()
            .to_string()
            .contains("missing_key")
    );
    let mut s = spec(false);
    s.name = Some("../escape".into());
    assert!(
        rs.write_batches(&s, sample_schema(4), vec![])
            .await
            .is_err()
    );
    let store = rs.object_store().await.unwrap();
    let left = names_under(&store, rs.root()).await;
    assert!(left.iter().all(|n| !n.ends_with(".parquet")), "{left:?}");
    let report = rs.recover().await.unwrap();
    assert!(report.is_clean(), "{report:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn truncated_or_flipped_sidecars_are_reported_as_broken() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let rs = store_at(root, StorageRegistry::new());
    let m = rs
        .write_batches(&spec(true), sample_schema(8), vec![sample_batch(0, 200, 8)])
        .await
        .unwrap();
    let idx = dir.path().join(&m.file(FileRole::Index).unwrap().name);
    let original = std::fs::read(&idx).unwrap();

    // One byte flipped: sizes still match, the checksum does not.
    let mut flipped = original.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    std::fs::write(&idx, &flipped).unwrap();
    rs.manifest(&m.table).await.unwrap();
    let e = rs.verify(&m.table).await.unwrap_err();
    assert!(
        matches!(e, JammiError::Corrupt { .. }) && e.to_string().contains("checksum"),
        "{e}"
    );
    let e = rs.index(&m).await.unwrap_err();
    assert!(matches!(e, JammiError::Corrupt { .. }), "{e}");

    // Truncated: the manifest check itself reports it; the table still lists, and a query
    // of it fails naming it.
    std::fs::write(&idx, &original[..original.len() - 10]).unwrap();
    let e = rs.manifest(&m.table).await.unwrap_err();
    assert!(e.to_string().contains("bytes, the manifest says"), "{e}");
    let s = JammiSession::open(root).await.unwrap();
    let listed = s
        .sql("SELECT table_name FROM information_schema.tables WHERE table_catalog = 'jammi'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let listed = datafusion::arrow::util::pretty::pretty_format_batches(&listed)
        .unwrap()
        .to_string();
    assert!(listed.contains(&m.table), "{listed}");
    let e = s
        .sql(&format!(
            "SELECT count(*) FROM jammi.public.\"{}\"",
            m.table
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("broken") && e.contains(&m.table), "{e}");
    // Recovery reports it and keeps it.
    let report = s.recover().await.unwrap();
    assert_eq!(report.broken_tables, vec![m.table.clone()]);
    assert!(report.removed_objects.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_writers_on_one_root_all_land() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap().to_string();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            let rs = store_at(&root, StorageRegistry::new());
            rs.write_batches(
                &spec(true),
                sample_schema(8),
                vec![sample_batch(i * 100, 100, 8)],
            )
            .await
            .unwrap()
        }));
    }
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap().table);
    }
    let rs = store_at(&root, StorageRegistry::new());
    let mut listed = rs.list_tables().await.unwrap();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    for n in &names {
        let m = rs.verify(n).await.unwrap();
        assert_eq!(m.rows, 100);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn tables_written_with_other_metrics_record_them() {
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    for metric in [Metric::L2, Metric::Ip] {
        let mut s = spec(true);
        s.index.metric = metric;
        s.index.connectivity = 8;
        let m = rs
            .write_batches(&s, sample_schema(4), vec![sample_batch(0, 30, 4)])
            .await
            .unwrap();
        let i = m.index.unwrap();
        assert_eq!((i.metric, i.connectivity), (metric, 8));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn drop_table_deletes_a_result_table_and_nothing_else() {
    let dir = crate::common::tempdir();
    let (s, t) = crate::common::session_with_table(&dir, 500).await;
    // A user's file named like the table's siblings stays.
    let theirs = dir.path().join(format!("{t}.idx.notes.txt"));
    std::fs::write(&theirs, b"mine").unwrap();
    let n = s
        .sql(&format!("SELECT count(*) FROM jammi.public.\"{t}\""))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(n[0].num_rows(), 1);
    s.sql(&format!("DROP TABLE jammi.public.\"{t}\""))
        .await
        .unwrap();
    assert!(s.list_tables().await.unwrap().is_empty());
    assert!(!dir.path().join(format!("{t}.parquet")).exists());
    assert!(!dir.path().join(format!("{t}.idx.manifest.json")).exists());
    assert_eq!(std::fs::read(&theirs).unwrap(), b"mine");
    let e = s
        .sql(&format!("SELECT count(*) FROM jammi.public.\"{t}\""))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&t), "{e}");
    s.sql(&format!("DROP TABLE IF EXISTS jammi.public.\"{t}\""))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_search_of_a_damaged_table_names_the_damaged_file() {
    let dir = crate::common::tempdir();
    let (_, t) = crate::common::session_with_table(&dir, 500).await;
    std::fs::remove_file(dir.path().join(format!("{t}.idx.rowmap"))).unwrap();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let q = crate::common::vec_sql(&crate::common::sample_vector(3, 16));
    let e = match s
        .sql(&format!("SELECT id FROM vector_search('{t}', {q}, 3)"))
        .await
    {
        Ok(df) => df.collect().await.unwrap_err().to_string(),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains(&format!("{t}.idx.rowmap")) && e.contains("missing"),
        "{e}"
    );
    assert!(!e.contains("not backed by one Parquet file"), "{e}");
}

/// Each kind of damage — a truncated index, a missing rowmap, a garbage manifest, a
/// manifest of a newer format — is reported by a search naming the damaged file and what is
/// wrong with it, and by `recover --dry-run` as a broken table, kept.
#[tokio::test(flavor = "multi_thread")]
async fn each_kind_of_damage_is_reported_naming_the_damaged_file() {
    type Damage = fn(&std::path::Path, &str);
    let cases: [(&str, Damage, &str, &str); 4] = [
        (
            "truncated_index",
            |dir, t| {
                let p = dir.join(format!("{t}.idx.usearch"));
                let b = std::fs::read(&p).unwrap();
                std::fs::write(&p, &b[..b.len() / 2]).unwrap();
            },
            ".idx.usearch",
            "bytes, the manifest says",
        ),
        (
            "missing_rowmap",
            |dir, t| std::fs::remove_file(dir.join(format!("{t}.idx.rowmap"))).unwrap(),
            ".idx.rowmap",
            "missing",
        ),
        (
            "garbage_manifest",
            |dir, t| std::fs::write(dir.join(format!("{t}.idx.manifest.json")), b"{ nope").unwrap(),
            ".idx.manifest.json",
            "not valid",
        ),
        (
            "newer_manifest",
            |dir, t| {
                let p = dir.join(format!("{t}.idx.manifest.json"));
                let mut m: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
                m["format_version"] = serde_json::json!(99);
                std::fs::write(&p, serde_json::to_vec(&m).unwrap()).unwrap();
            },
            ".idx.manifest.json",
            "newer than this build",
        ),
    ];
    for (table, damage, file, what) in cases {
        let dir = tempdir();
        let root = dir.path().to_str().unwrap();
        let s = JammiSession::open(root).await.unwrap();
        s.sql(&format!(
            "CREATE TABLE jammi.public.{table} AS SELECT 1 AS id, [1.0, 2.0] AS v"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
        drop(s);
        damage(dir.path(), table);
        let s = JammiSession::open(root).await.unwrap();
        let e = match s
            .sql(&format!(
                "SELECT id FROM vector_search('{table}', [1.0, 2.0], 1)"
            ))
            .await
        {
            Ok(df) => df.collect().await.unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(
            e.contains(&format!("{table}{file}")) && e.contains(what),
            "{table}: {e}"
        );
        assert!(
            !e.contains("not backed by one Parquet file"),
            "{table}: {e}"
        );
        let report = s.result_store().recover_dry_run().await.unwrap();
        assert_eq!(report.broken_tables, vec![table.to_string()], "{table}");
        assert!(report.removed_objects.is_empty(), "{table}: {report:?}");
    }
}
