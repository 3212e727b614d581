//! Sidecars belong to exactly one file: dotted names keep their own, an index is never used
//! for another version of its file, sidecars of the older naming still load, and two
//! indexers of one file end with one valid set.

use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::Compression;
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use jammi_db::session::JammiSession;

use crate::common::{sample_vector, tempdir, vec_sql};
use jammi_db::session::OpenOptions;
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};

/// Parquet of rows `ids` with 8-d vectors pointing at `angle(id)`, written uncompressed,
/// without dictionaries or statistics: its size depends only on the row count.
fn fixed_size_parquet(ids: &[i64], angle: impl Fn(i64) -> i64) -> Vec<u8> {
    parquet_in_groups(ids, angle, None)
}

/// [`fixed_size_parquet`] with row groups of at most `group_rows` rows.
fn parquet_in_groups(
    ids: &[i64],
    angle: impl Fn(i64) -> i64,
    group_rows: Option<usize>,
) -> Vec<u8> {
    let dims = 8;
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|i| sample_vector(angle(*i), dims))
        .collect();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), dims),
            true,
        ),
    ]));
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids.to_vec())),
        Arc::new(FixedSizeListArray::new(
            item,
            dims,
            Arc::new(Float32Array::from(values)),
            None,
        )),
    ];
    let batch = RecordBatch::try_new(schema.clone(), cols).unwrap();
    let props = WriterProperties::builder()
        .set_compression(Compression::UNCOMPRESSED)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::None)
        .set_max_row_group_row_count(group_rows)
        .build();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, Some(props)).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

async fn ids_of(s: &JammiSession, sql: &str) -> Vec<i64> {
    let batches = s
        .sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn index_sql(table: &str, file: &std::path::Path) -> String {
    format!(
        "CREATE EXTERNAL TABLE {table} STORED AS PARQUET LOCATION '{}' \
         OPTIONS ('jammi.vector_column' 'embedding')",
        file.display()
    )
}

/// The ids a search returns, and how it was answered.
async fn searched(s: &JammiSession, sql: &str) -> (Vec<i64>, jammi_db::sql::SearchStats) {
    let (batches, stats) = crate::common::search_sql(s, sql).await;
    let ids = batches
        .iter()
        .flat_map(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<datafusion::arrow::array::Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect();
    (ids, stats)
}

fn search_sql(table: &str, angle: i64) -> String {
    format!(
        "SELECT id FROM vector_search('{table}', {}, 3)",
        vec_sql(&sample_vector(angle, 8))
    )
}

fn sidecars(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".idx."))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn dotted_file_names_keep_their_own_sidecars() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let a: Vec<i64> = (0..300).collect();
    let b: Vec<i64> = (1000..1300).collect();
    std::fs::write(data.join("emb.2024.parquet"), fixed_size_parquet(&a, |i| i)).unwrap();
    std::fs::write(data.join("emb.2025.parquet"), fixed_size_parquet(&b, |i| i)).unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    for (t, f) in [("e24", "emb.2024.parquet"), ("e25", "emb.2025.parquet")] {
        s.sql(&index_sql(t, &data.join(f))).await.unwrap();
    }
    let expected: Vec<String> = ["emb.2024", "emb.2025"]
        .iter()
        .flat_map(|stem| {
            ["manifest.json", "rowmap", "usearch"]
                .iter()
                .map(move |s| format!("{stem}.idx.{s}"))
        })
        .collect();
    assert_eq!(sidecars(&data), expected);
    // Each table is searched with its own index and finds its own rows.
    let (got, st) = searched(&s, &search_sql("e24", 5)).await;
    assert!(got.iter().all(|i| (0..300).contains(i)), "{got:?}");
    assert_eq!(st.mode, "index");
    let (got, st) = searched(&s, &search_sql("e25", 1005)).await;
    assert!(got.iter().all(|i| (1000..1300).contains(i)), "{got:?}");
    assert_eq!(st.mode, "index");
    let by_url = search_sql(&data.join("emb.2025.parquet").display().to_string(), 1005);
    let (got, st) = searched(&s, &by_url).await;
    assert!(got.iter().all(|i| (1000..1300).contains(i)), "{got:?}");
    assert_eq!(st.mode, "index");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rewritten_file_of_the_same_size_is_never_searched_with_its_old_index() {
    let dir = tempdir();
    let file = dir.path().join("docs.parquet");
    let ids: Vec<i64> = (0..400).collect();
    let first = fixed_size_parquet(&ids, |i| i);
    std::fs::write(&file, &first).unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    let (before, st) = searched(&s, &search_sql("docs", 7)).await;
    assert!(before.contains(&7), "{before:?}");
    assert_eq!(st.mode, "index");

    // The same ids, each now pointing where id + 200 pointed: same size, other content.
    let second = fixed_size_parquet(&ids, |i| i + 200);
    assert_eq!(first.len(), second.len(), "the rewrite keeps the size");
    std::fs::write(&file, &second).unwrap();

    // The running session (its caches warm) does not use the old index: exact search on
    // the new file finds id 7, which now points at angle 207 (the old index says id 207).
    let (after, stats) = searched(&s, &search_sql("docs", 207)).await;
    assert_eq!(stats.mode, "exact", "{stats:?}");
    assert!(
        stats
            .fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("docs.parquet") && r.contains("rewritten")),
        "{stats:?}"
    );
    assert_eq!(after[0], 7, "row 7 now points at angle 207: {after:?}");

    // DDL rebuilds the index for the new file; searches use it again.
    let s2 = JammiSession::open(dir.path().join("db2").to_str().unwrap())
        .await
        .unwrap();
    s2.sql(&index_sql("docs", &file)).await.unwrap();
    let (rebuilt, st) = searched(&s2, &search_sql("docs", 207)).await;
    assert_eq!(st.mode, "index");
    assert!(
        rebuilt.contains(&7) && !rebuilt.contains(&207),
        "{rebuilt:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_of_the_older_naming_still_load() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let ids: Vec<i64> = (0..300).collect();
    std::fs::write(
        data.join("emb.2024.parquet"),
        fixed_size_parquet(&ids, |i| i),
    )
    .unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("e", &data.join("emb.2024.parquet")))
        .await
        .unwrap();
    // Turn them into what older versions wrote: `emb.idx.*`, a format-1 manifest.
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("emb.2024.idx.manifest.json")).unwrap())
            .unwrap();
    let m = manifest.as_object_mut().unwrap();
    m.insert("format_version".into(), 1.into());
    m.remove("writer");
    m.remove("kind");
    for f in m["files"].as_array_mut().unwrap() {
        let name = f["name"].as_str().unwrap().to_string();
        if let Some(suffix) = name.strip_prefix("emb.2024.idx.") {
            std::fs::rename(data.join(&name), data.join(format!("emb.idx.{suffix}"))).unwrap();
            f["name"] = format!("emb.idx.{suffix}").into();
        }
    }
    std::fs::remove_file(data.join("emb.2024.idx.manifest.json")).unwrap();
    std::fs::write(
        data.join("emb.idx.manifest.json"),
        serde_json::to_vec(&manifest).unwrap(),
    )
    .unwrap();
    let legacy = sidecars(&data);

    let s = JammiSession::open(dir.path().join("db2").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("e", &data.join("emb.2024.parquet")))
        .await
        .unwrap();
    assert_eq!(
        sidecars(&data),
        legacy,
        "the older sidecars were used, none built"
    );
    let (got, st) = searched(&s, &search_sql("e", 5)).await;
    assert!(got.contains(&5), "{got:?}");
    assert_eq!(st.mode, "index");
    // Another dotted file of the directory is not searched with them: it gets its own.
    std::fs::write(
        data.join("emb.2025.parquet"),
        fixed_size_parquet(&(1000..1300).collect::<Vec<_>>(), |i| i),
    )
    .unwrap();
    s.sql(&index_sql("f", &data.join("emb.2025.parquet")))
        .await
        .unwrap();
    assert!(data.join("emb.2025.idx.manifest.json").exists());
    let got = ids_of(&s, &search_sql("f", 1005)).await;
    assert!(got.iter().all(|i| (1000..1300).contains(i)), "{got:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_indexers_of_one_file_end_with_one_valid_set_of_sidecars() {
    let dir = tempdir();
    let file = dir.path().join("big.parquet");
    let ids: Vec<i64> = (0..40_000).collect();
    std::fs::write(&file, fixed_size_parquet(&ids, |i| i)).unwrap();
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (root, file) = (dir.path().join(format!("db{i}")), file.clone());
        tasks.push(tokio::spawn(async move {
            let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
            s.sql(&index_sql("big", &file)).await.unwrap();
            let (got, st) = searched(&s, &search_sql("big", 31_337)).await;
            (got, st.mode)
        }));
    }
    for t in tasks {
        let (got, mode) = t.await.unwrap();
        assert!(got.contains(&31_337), "{got:?}");
        assert_eq!(mode, "index");
    }
    assert_eq!(
        sidecars(dir.path()),
        ["big.idx.manifest.json", "big.idx.rowmap", "big.idx.usearch"]
    );
    // The one set verifies: every file matches the manifest's size and checksum.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("big.idx.manifest.json")).unwrap())
            .unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(dir.path().join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(bytes.len() as u64, f["size"].as_u64().unwrap());
        assert_eq!(crc32c::crc32c(&bytes) as u64, f["crc32c"].as_u64().unwrap());
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cached_sidecar_that_fails_its_checksum_is_fetched_again() {
    use jammi_db::index::cache::IndexCache;
    use jammi_db::storage::cache::LocalCache;
    let cache_dir = tempdir();
    let root = crate::common::memory_root("refetch");
    let s = JammiSession::open(&root).await.unwrap();
    let rs = s.result_store();
    let m = rs
        .write_batches(
            &jammi_db::store::TableSpec {
                name: Some("t".into()),
                vector_column: Some("embedding".into()),
                ..Default::default()
            },
            crate::common::sample_schema(8),
            vec![crate::common::sample_batch(0, 300, 8)],
        )
        .await
        .unwrap();
    let store = rs.object_store().await.unwrap();
    let local = || LocalCache::new(cache_dir.path(), 1 << 30).unwrap();
    let first = IndexCache::new(1 << 30, local());
    first.get(rs.root(), &store, &m).await.unwrap();
    assert_eq!(first.stats().downloads, 1);
    // Same size, one byte flipped: a later process must not trust it.
    let cached: Vec<_> = std::fs::read_dir(cache_dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    let good = std::fs::read(&cached[0]).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0x10;
    std::fs::write(&cached[0], &bad).unwrap();
    let second = IndexCache::new(1 << 30, local());
    let loaded = second.get(rs.root(), &store, &m).await.unwrap();
    assert_eq!(second.stats().downloads, 1, "fetched again");
    assert_eq!(std::fs::read(&cached[0]).unwrap(), good);
    assert_eq!(loaded.rowmap().len(), 300);
}

/// Dotted names and a same-size rewrite on any store: `base` is a prefix URL, `cloud` its
/// settings (a live lane) — files are put and searched through storage URLs.
pub(crate) async fn sidecars_follow_their_file_on(base: &str, cloud: Option<CloudConfig>) {
    use object_store::ObjectStoreExt;
    let registry = StorageRegistry::new();
    let baseu = StorageUrl::parse(base).unwrap();
    let store = registry.store(&baseu, cloud.as_ref()).await.unwrap();
    let put = |name: &str, bytes: Vec<u8>| {
        let store = store.clone();
        let url = baseu.join(name).unwrap();
        async move {
            store
                .put(&url.object_path().unwrap(), bytes.into())
                .await
                .unwrap();
        }
    };
    let a: Vec<i64> = (0..300).collect();
    let b: Vec<i64> = (1000..1300).collect();
    put("emb.2024.parquet", fixed_size_parquet(&a, |i| i)).await;
    put("emb.2025.parquet", fixed_size_parquet(&b, |i| i)).await;
    let root = tempdir();
    let s = JammiSession::open_with(
        root.path().to_str().unwrap(),
        OpenOptions {
            registry: Some(registry.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let options = match &cloud {
        Some(c) => format!(", {}", crate::common::live_options(c)),
        None => String::new(),
    };
    for (t, f) in [("e24", "emb.2024.parquet"), ("e25", "emb.2025.parquet")] {
        s.sql(&format!(
            "CREATE EXTERNAL TABLE {t} STORED AS PARQUET LOCATION '{base}{f}' \
             OPTIONS ('jammi.vector_column' 'embedding'{options})"
        ))
        .await
        .unwrap();
    }
    let (got, st) = searched(&s, &search_sql("e25", 1005)).await;
    assert!(got.iter().all(|i| (1000..1300).contains(i)), "{got:?}");
    assert_eq!(st.mode, "index");
    for stem in ["emb.2024", "emb.2025"] {
        let m = baseu.join(&format!("{stem}.idx.manifest.json")).unwrap();
        store.head(&m.object_path().unwrap()).await.unwrap();
    }
    // Same size, other content: the old index is not used.
    let first = fixed_size_parquet(&a, |i| i);
    let second = fixed_size_parquet(&a, |i| i + 200);
    assert_eq!(first.len(), second.len());
    put("emb.2024.parquet", second).await;
    let (after, stats) = searched(&s, &search_sql("e24", 207)).await;
    assert_eq!(stats.mode, "exact", "{stats:?}");
    assert_eq!(after[0], 7, "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sidecars_follow_their_file_on_a_memory_store() {
    sidecars_follow_their_file_on(&crate::common::memory_root("follow"), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_files_keys_are_read_once_per_version_and_never_from_an_older_one() {
    let dir = tempdir();
    let file = dir.path().join("docs.parquet");
    let ids: Vec<i64> = (0..400).collect();
    std::fs::write(&file, fixed_size_parquet(&ids, |i| i)).unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    let (cold, _) = searched(&s, &search_sql("docs", 7)).await;
    assert_eq!(cold[0], 7, "{cold:?}");
    // Warm: the file's version (one HEAD) and nothing else; the ids come from the id
    // column read whole by the first search.
    let (warm, st) = searched(&s, &search_sql("docs", 7)).await;
    assert_eq!(warm, cold);
    assert_eq!(
        (st.requests.head, st.requests.total(), st.rows_hydrated),
        (1, 1, 0),
        "{st:?}"
    );

    // Rewritten in place at the same size with other ids (the vector of id 1007 is the
    // old vector of id 7): the hits carry the new file's ids.
    let moved: Vec<i64> = (1000..1400).collect();
    std::fs::write(&file, fixed_size_parquet(&moved, |i| i - 1000)).unwrap();
    let (after, st) = searched(&s, &search_sql("docs", 7)).await;
    assert_eq!(after[0], 1007, "{after:?} {st:?}");
    assert!(after.iter().all(|i| *i >= 1000), "{after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_remote_files_keys_are_read_in_one_request_set_not_one_per_row_group() {
    use object_store::ObjectStoreExt;
    let base = crate::common::memory_root("keys");
    let registry = StorageRegistry::new();
    let url = StorageUrl::parse(&format!("{base}docs.parquet")).unwrap();
    let store = registry.store(&url, None).await.unwrap();
    let ids: Vec<i64> = (0..400).collect();
    let bytes = parquet_in_groups(&ids, |i| i, Some(20));
    store
        .put(&url.object_path().unwrap(), bytes.into())
        .await
        .unwrap();
    let root = tempdir();
    let s = JammiSession::open_with(
        root.path().to_str().unwrap(),
        OpenOptions {
            registry: Some(registry),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE docs STORED AS PARQUET LOCATION '{url}' \
         OPTIONS ('jammi.vector_column' 'embedding')"
    ))
    .await
    .unwrap();
    let (cold, st) = searched(&s, &search_sql("docs", 7)).await;
    assert_eq!(cold[0], 7, "{cold:?}");
    // 20 row groups: the id column's 20 chunks come in one coalesced read.
    let reads = st.requests.get + st.requests.get_range;
    assert!(reads < 20, "{reads} reads: {st:?}");
}

/// Parquet of the given columns, in the given order.
fn parquet_of(columns: Vec<(&str, ArrayRef)>) -> Vec<u8> {
    let fields: Vec<Field> = columns
        .iter()
        .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
        .collect();
    let batch = RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .unwrap();
    crate::common::parquet_bytes(&[batch])
}

/// 8-d vectors of rows `ids`, row i pointing at `angle(i)`.
fn vectors(ids: &[i64], angle: impl Fn(i64) -> i64) -> ArrayRef {
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|i| sample_vector(angle(*i), 8))
        .collect();
    Arc::new(FixedSizeListArray::new(
        item,
        8,
        Arc::new(Float32Array::from(values)),
        None,
    ))
}

fn int64s(b: &RecordBatch, name: &str) -> Vec<i64> {
    b.column_by_name(name)
        .unwrap()
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .values()
        .to_vec()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_with_its_columns_reordered_is_read_by_column_name() {
    let dir = tempdir();
    let file = dir.path().join("docs.parquet");
    let ids: Vec<i64> = (0..300).collect();
    let a: ArrayRef = Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| i * 10)));
    let b: ArrayRef = Arc::new(Int64Array::from_iter_values(ids.iter().map(|i| -i)));
    let id: ArrayRef = Arc::new(Int64Array::from(ids.clone()));
    std::fs::write(
        &file,
        parquet_of(vec![
            ("id", id.clone()),
            ("a", a.clone()),
            ("b", b.clone()),
            ("embedding", vectors(&ids, |i| i)),
        ]),
    )
    .unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    let q = vec_sql(&sample_vector(7, 8));
    let search = format!("SELECT id, a, b FROM vector_search('docs', {q}, 3)");
    crate::common::search_sql(&s, &search).await;

    // The same rows, each now pointing where id + 100 pointed, columns in another order.
    std::fs::write(
        &file,
        parquet_of(vec![
            ("b", b),
            ("embedding", vectors(&ids, |i| i + 100)),
            ("a", a),
            ("id", id),
        ]),
    )
    .unwrap();
    let q = vec_sql(&sample_vector(207, 8));
    for sql in [
        format!("SELECT id, a, b FROM vector_search('docs', {q}, 3)"),
        format!("SELECT id, a, b FROM vector_search('docs', {q}, 3, 'filter=a >= 0 AND b <= 0')"),
    ] {
        let (batches, stats) = crate::common::search_sql(&s, &sql).await;
        assert_eq!(stats.mode, "exact", "{stats:?}");
        let got =
            datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
        let found = int64s(&got, "id");
        assert_eq!(found[0], 107, "row 107 now points at angle 207: {found:?}");
        assert_eq!(
            int64s(&got, "a"),
            found.iter().map(|i| i * 10).collect::<Vec<_>>()
        );
        assert_eq!(
            int64s(&got, "b"),
            found.iter().map(|i| -i).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_named_column_without_an_index_is_searched_exactly_on_its_own_vectors() {
    let dir = tempdir();
    let file = dir.path().join("two.parquet");
    let ids: Vec<i64> = (0..300).collect();
    std::fs::write(
        &file,
        parquet_of(vec![
            ("id", Arc::new(Int64Array::from(ids.clone()))),
            ("embedding", vectors(&ids, |i| i)),
            ("other", vectors(&ids, |i| i + 100)),
        ]),
    )
    .unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("two", &file)).await.unwrap();
    let q = sample_vector(150, 8);
    let (on_index, st) = searched(
        &s,
        &format!("SELECT id FROM vector_search('two', {}, 3)", vec_sql(&q)),
    )
    .await;
    assert_eq!((on_index[0], st.mode.as_str()), (150, "index"));
    let sql = format!(
        "SELECT id, other FROM vector_search('two', {}, 3, 'column=other')",
        vec_sql(&q)
    );
    let (batches, st) = crate::common::search_sql(&s, &sql).await;
    assert_eq!(st.mode, "exact", "{st:?}");
    assert!(
        st.fallback_reason
            .as_deref()
            .is_some_and(|r| r.contains("'other'") && r.contains("'embedding'")),
        "{st:?}"
    );
    let got = datafusion::arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap();
    // Row 50's `other` points at angle 150.
    assert_eq!(int64s(&got, "id")[0], 50);
    let other = got
        .column_by_name("other")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap()
        .value(0);
    let other = other.as_any().downcast_ref::<Float32Array>().unwrap();
    assert_eq!(other.values().to_vec(), q, "the named column's own vector");
}

#[tokio::test(flavor = "multi_thread")]
async fn running_the_indexing_ddl_again_on_a_changed_file_rebuilds_its_sidecars() {
    let dir = tempdir();
    let file = dir.path().join("docs.parquet");
    std::fs::write(
        &file,
        fixed_size_parquet(&(0..300).collect::<Vec<_>>(), |i| i),
    )
    .unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    // Refreshed embeddings: more rows, another size.
    let ids: Vec<i64> = (0..450).collect();
    std::fs::write(&file, fixed_size_parquet(&ids, |i| i + 1000)).unwrap();
    // Until the DDL runs again, searches answer exactly from the new rows.
    let (got, st) = searched(&s, &search_sql("docs", 1420)).await;
    assert_eq!((got[0], st.mode.as_str()), (420, "exact"), "{st:?}");
    s.sql("DROP TABLE docs").await.unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    let (got, st) = searched(&s, &search_sql("docs", 1420)).await;
    assert_eq!((got[0], st.mode.as_str()), (420, "index"), "{st:?}");
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("docs.idx.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(m["rows"], 450, "{m}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_file_rewritten_in_place_with_its_mtime_put_back_is_not_searched_with_its_old_index() {
    let dir = tempdir();
    let file = dir.path().join("docs.parquet");
    let ids: Vec<i64> = (0..400).collect();
    std::fs::write(&file, fixed_size_parquet(&ids, |i| i)).unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    assert_eq!(searched(&s, &search_sql("docs", 7)).await.1.mode, "index");
    // Same inode, same size, modification time put back (`cp -p`, `rsync -t`).
    let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.write_all(&fixed_size_parquet(&ids, |i| i + 200)).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let url = format!("file://{}", file.display());
    for table in ["docs", url.as_str()] {
        let (after, st) = searched(&s, &search_sql(table, 207)).await;
        assert_eq!(
            (after[0], st.mode.as_str()),
            (7, "exact"),
            "{table}: {st:?}"
        );
    }
    // The DDL again rebuilds the sidecars for the new bytes.
    s.sql("DROP TABLE docs").await.unwrap();
    s.sql(&index_sql("docs", &file)).await.unwrap();
    let (rebuilt, st) = searched(&s, &search_sql("docs", 207)).await;
    assert_eq!((rebuilt[0], st.mode.as_str()), (7, "index"), "{st:?}");
}
