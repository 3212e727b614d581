//! `vector_search` in SQL: index path, exact path, pre-filters, options, errors, caching,
//! indexing an existing Parquet file from SQL, and the distance functions.

use std::collections::HashSet;

use datafusion::arrow::array::{Array, Float32Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use std::sync::Arc;

use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::store::TableSpec;

use crate::common::{
    FaultyStore, memory_root, parquet_bytes, sample_batch, sample_corpus_path, sample_schema,
    sample_vector, search_sql, session_with_table, tempdir, vec_sql,
};

fn ids(batches: &[RecordBatch]) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap();
            (0..c.len()).map(|i| c.value(i)).collect::<Vec<_>>()
        })
        .collect()
}

fn distances(batches: &[RecordBatch]) -> Vec<f32> {
    batches
        .iter()
        .flat_map(|b| {
            let c = b
                .column_by_name("_distance")
                .unwrap()
                .as_any()
                .downcast_ref::<Float32Array>()
                .unwrap();
            c.values().to_vec()
        })
        .collect()
}

/// The sample data repeats almost exactly every 17 rows (0.37 * 17 ≈ 2π), so an ANN search
/// may rank a near-duplicate (distance ~1e-5) first: the expected row must be among the hits
/// and the first hit must be (almost) identical to the query.
fn assert_hit(r: &[RecordBatch], expected: i64) {
    let got = ids(r);
    assert!(got.contains(&expected), "{expected} not in {got:?}");
    if got[0] != expected
        && let Some(d) = r[0].column_by_name("_distance")
    {
        let d = d.as_any().downcast_ref::<Float32Array>().unwrap().value(0);
        assert!(d < 1e-3, "first hit {} at distance {d}", got[0]);
    }
}

/// Runs a statement and collects its batches (panics on error).
async fn collect_sql(s: &JammiSession, sql: &str) -> Vec<RecordBatch> {
    s.sql(sql).await.unwrap().collect().await.unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn nearest_rows_come_back_nearest_first_with_all_columns_and_distance() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let q = sample_vector(777, 16);
    let (r, st) = search_sql(
        &s,
        &format!("SELECT * FROM vector_search('{t}', {}, 5)", vec_sql(&q)),
    )
    .await;
    let b = concat_batches(&r[0].schema(), &r).unwrap();
    let names: Vec<&str> = b
        .schema_ref()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["id", "title", "score", "embedding", "_distance"]);
    assert_eq!(b.num_rows(), 5);
    assert_hit(&r, 777);
    let d = distances(&r);
    assert!(
        d[0].abs() < 1e-4 && d.windows(2).all(|w| w[0] <= w[1]),
        "{d:?}"
    );
    assert_eq!(st.mode, "index");
    // The exact answer agrees (same rows for this easy query).
    let (e, st) = search_sql(
        &s,
        &format!(
            "SELECT id, _distance FROM vector_search('{t}', {}, 5, 'exact=true')",
            vec_sql(&q)
        ),
    )
    .await;
    assert_eq!(st.mode, "exact");
    assert_hit(&e, 777);
    assert_eq!(ids(&e).len(), 5);
}

/// `SELECT *` serves index hits' vectors from the index: they must be the stored values,
/// bit for bit (the cosine index must not hand back normalised copies).
#[tokio::test(flavor = "multi_thread")]
async fn hit_vectors_equal_the_stored_vectors() {
    use datafusion::arrow::array::FixedSizeListArray;
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = sample_vector(321, 16);
    let (hits, st) = search_sql(
        &s,
        &format!(
            "SELECT id, embedding FROM vector_search('{t}', {}, 8) ORDER BY id",
            vec_sql(&q)
        ),
    )
    .await;
    assert_eq!(st.mode, "index");
    let hits = concat_batches(&hits[0].schema(), &hits).unwrap();
    let list = ids(std::slice::from_ref(&hits))
        .iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let stored = collect_sql(
        &s,
        &format!("SELECT id, embedding FROM jammi.public.\"{t}\" WHERE id IN ({list}) ORDER BY id"),
    )
    .await;
    let stored = concat_batches(&stored[0].schema(), &stored).unwrap();
    assert_eq!(hits.num_rows(), 8);
    let values = |b: &RecordBatch| -> Vec<u32> {
        let l = b
            .column(1)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let v = l.values().as_any().downcast_ref::<Float32Array>().unwrap();
        v.values().iter().map(|x| x.to_bits()).collect()
    };
    assert_eq!(hits.column(0), stored.column(0));
    assert_eq!(values(&hits), values(&stored));
    assert_eq!(hits.schema().field(1), stored.schema().field(1));
}

/// A query given as a string holding a JSON array is the same query as the array literal.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_string_query_equals_the_array_literal() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = sample_vector(42, 16);
    let run = |query: String| {
        let s = &s;
        let t = &t;
        async move {
            collect_sql(
                s,
                &format!("SELECT id, _distance FROM vector_search('{t}', {query}, 6)"),
            )
            .await
        }
    };
    let literal = run(vec_sql(&q)).await;
    let text = run(format!("'{}'", vec_sql(&q))).await;
    assert_eq!(ids(&literal), ids(&text));
    assert_eq!(distances(&literal), distances(&text));
    assert_hit(&text, 42);
}

/// The query vector means the same whichever way the statement is planned: through
/// `JammiSession::sql` (which hands it to the parser as a string), through the plain
/// `SessionContext` (the relation planner reads the numbers from the syntax tree), as a
/// string, under an alias and in a join.
#[tokio::test(flavor = "multi_thread")]
async fn the_query_vector_means_the_same_through_every_planning_path() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let mut q = sample_vector(42, 16);
    q[3] = -0.0;
    q[7] = 1e-39;
    let literal = vec_sql(&q);
    let sql = |query: &str| {
        format!(
            "SELECT v.id, v._distance FROM vector_search('{t}', {query}, 6) AS v \
             JOIN vector_search('{t}', {query}, 6) w ON v.id = w.id ORDER BY v._distance, v.id"
        )
    };
    let plain = |sql: String| {
        let ctx = s.context().clone();
        async move { ctx.sql(&sql).await.unwrap().collect().await.unwrap() }
    };
    let folded = collect_sql(&s, &sql(&literal)).await;
    let from_tree = plain(sql(&literal)).await;
    let text = plain(sql(&format!("'{literal}'"))).await;
    assert_eq!(ids(&folded).len(), 6);
    for other in [&from_tree, &text] {
        assert_eq!(ids(&folded), ids(other));
        assert_eq!(distances(&folded), distances(other));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_selective_prefilter_still_returns_k_matching_rows() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 3000).await;
    let q = sample_vector(5, 16);
    for filter in ["score = 0.3", "id % 2 = 1", "id < 40 AND score > 0.5"] {
        let (r, st) = search_sql(
            &s,
            &format!(
                "SELECT id, score, _distance FROM vector_search('{t}', {}, 10, 'filter={filter}')",
                vec_sql(&q)
            ),
        )
        .await;
        let got = ids(&r);
        assert_eq!(got.len(), 10, "{filter}: {got:?} ({st:?})");
        // Same rows as an exact search with the same filter.
        let e = collect_sql(
            &s,
            &format!(
                "SELECT id FROM vector_search('{t}', {}, 10, 'exact=true; filter={filter}')",
                vec_sql(&q)
            ),
        )
        .await;
        let want: HashSet<i64> = ids(&e).into_iter().collect();
        let have: HashSet<i64> = got.iter().copied().collect();
        assert!(
            have.intersection(&want).count() >= 9,
            "{filter}: {got:?} vs {want:?}"
        );
        match filter {
            "score = 0.3" => assert!(got.iter().all(|i| i % 10 == 3)),
            "id % 2 = 1" => assert!(got.iter().all(|i| i % 2 == 1)),
            _ => assert!(got.iter().all(|i| *i < 40 && i % 10 > 5)),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn projection_reads_only_the_requested_columns_and_options_apply() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = vec_sql(&sample_vector(10, 16));
    let r = collect_sql(&s, &format!("SELECT id, _distance FROM vector_search('{t}', {q}, 3, 'ef_search=200; columns=id,title')")).await;
    assert_eq!(r[0].num_columns(), 2);
    assert_hit(&r, 10);
    let r = collect_sql(
        &s,
        &format!("SELECT * FROM vector_search('{t}', {q}, 3, 'columns=title')"),
    )
    .await;
    let names: Vec<String> = r[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, ["title", "_distance"]);
}

/// Hits spread over many row groups of a remote file: their pages are fetched together
/// (one `get_ranges`, which the store coalesces), not one row group after another.
#[tokio::test(flavor = "multi_thread")]
async fn remote_hydration_fetches_the_pages_of_all_hits_at_once() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    let count = Arc::new(AtomicUsize::new(0));
    let armed = Arc::new(AtomicBool::new(false));
    let (c, a) = (count.clone(), armed.clone());
    let registry = jammi_db::storage::StorageRegistry::with_layer(Arc::new(move |inner| {
        Arc::new(FaultyStore::new(
            inner,
            c.clone(),
            0,
            a.clone(),
            crate::common::Fault::Before,
        )) as Arc<dyn object_store::ObjectStore>
    }));
    let root = memory_root("hydrate");
    let s = JammiSession::open_with(
        &root,
        OpenOptions {
            registry: Some(registry),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let batches: Vec<RecordBatch> = (0..4).map(|i| sample_batch(i * 250, 250, 16)).collect();
    let mem = datafusion::datasource::MemTable::try_new(sample_schema(16), vec![batches]).unwrap();
    s.context()
        .register_table("papers_mem", Arc::new(mem))
        .unwrap();
    collect_sql(
        &s,
        &format!(
            "COPY (SELECT * FROM papers_mem) TO '{root}papers.parquet' STORED AS PARQUET \
         OPTIONS ('format.max_row_group_size' '100')"
        ),
    )
    .await;
    s.sql(&format!(
        "CREATE EXTERNAL TABLE papers STORED AS PARQUET LOCATION '{root}papers.parquet' \
         OPTIONS ('jammi.vector_column' 'embedding')"
    ))
    .await
    .unwrap();
    let sql = format!(
        "SELECT id, title, _distance FROM vector_search('papers', {}, 10)",
        vec_sql(&sample_vector(3, 16))
    );
    collect_sql(&s, &sql).await;
    armed.store(true, Ordering::SeqCst);
    let r = collect_sql(&s, &sql).await;
    armed.store(false, Ordering::SeqCst);
    let groups: HashSet<i64> = ids(&r).iter().map(|id| id / 100).collect();
    assert!(groups.len() >= 3, "hits in row groups {groups:?}");
    // The version check (HEAD) and one coalesced read of every hit's pages.
    assert_eq!(
        count.load(Ordering::SeqCst),
        2,
        "requests of a warm query over {} row groups",
        groups.len()
    );
    assert_eq!(
        concat_batches(&r[0].schema(), &r)
            .unwrap()
            .column(1)
            .null_count(),
        0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_query_only_checks_the_files_version() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = vec_sql(&sample_vector(3, 16));
    let sql = format!("SELECT id, _distance FROM vector_search('{t}', {q}, 4)");
    let (_, first) = search_sql(&s, &sql).await;
    let (_, warm) = search_sql(&s, &sql).await;
    assert_eq!(warm.mode, "index");
    assert!(
        first.index_loaded && !warm.index_loaded,
        "{first:?} {warm:?}"
    );
    // Cold: the rowmap, which carries the keys, and a HEAD of the Parquet file (an index
    // is only used for the version of the file it was built for). Warm: that HEAD only.
    assert_eq!(first.requests.get, 1, "{first:?}");
    assert_eq!(first.requests.head, 1, "{first:?}");
    assert_eq!(first.requests.total(), 2, "{first:?}");
    assert_eq!(warm.requests.head, 1, "{warm:?}");
    assert_eq!(warm.requests.total(), 1, "{warm:?}");
    // Another column needs the Parquet file: the version check gives its size, so footer
    // and page index come without another HEAD.
    let with_title = sql.replace("id, _distance", "id, title, _distance");
    let (_, hydrated) = search_sql(&s, &with_title).await;
    assert_eq!(hydrated.requests.head, 1, "{hydrated:?}");
    assert!(
        hydrated.requests.get + hydrated.requests.get_range >= 1,
        "{hydrated:?}"
    );
    // By URL the table is resolved at each planning: its manifest is read and verified
    // (one HEAD per sibling); the search itself makes the version check only, the index
    // still comes from memory.
    let url = s.result_store().parquet_url(&t).unwrap();
    let by_url = sql.replace(&format!("'{t}'"), &format!("'{url}'"));
    let before = s.registry().request_counts();
    let (_, warm_url) = search_sql(&s, &by_url).await;
    let statement = s.registry().request_counts().since(&before);
    assert_eq!(warm_url.requests.total(), 1, "{warm_url:?}");
    assert_eq!(statement.get, 1, "{statement:?}");
    assert_eq!(statement.head, 4, "{statement:?}");
    assert_eq!(statement.total(), 5, "{statement:?}");
    let c = s.search_context().index_cache().stats();
    assert!(c.hits >= 1 && c.misses == 1 && c.entries == 1, "{c:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_from_the_rowmap_match_the_keys_read_from_parquet() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let q = vec_sql(&sample_vector(1234, 16));
    let keys_only = collect_sql(
        &s,
        &format!("SELECT id, _distance FROM vector_search('{t}', {q}, 7)"),
    )
    .await;
    let from_parquet = collect_sql(
        &s,
        &format!("SELECT id, _distance, title FROM vector_search('{t}', {q}, 7)"),
    )
    .await;
    let pairs = |b: &[RecordBatch]| -> Vec<(i64, f32)> {
        let b = concat_batches(&b[0].schema(), b).unwrap();
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let d = b.column(1).as_any().downcast_ref::<Float32Array>().unwrap();
        (0..b.num_rows())
            .map(|i| (ids.value(i), d.value(i)))
            .collect()
    };
    let got = pairs(&keys_only);
    assert_eq!(got.len(), 7);
    // The sample vectors repeat with a period of ~17 rows: a near-duplicate may rank first.
    assert!(got.iter().any(|(id, _)| *id == 1234), "{got:?}");
    assert!(got[0].1 < 1e-3, "{got:?}");
    assert_eq!(got, pairs(&from_parquet));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_corrupt_index_falls_back_to_exact_search_with_a_reason() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let idx = dir.path().join(format!("{t}.idx.usearch"));
    let mut bytes = std::fs::read(&idx).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 0xff;
    std::fs::write(&idx, bytes).unwrap();
    let q = vec_sql(&sample_vector(42, 16));
    let (r, last) = search_sql(&s, &format!("SELECT id FROM vector_search('{t}', {q}, 3)")).await;
    assert_hit(&r, 42);
    assert_eq!(last.mode, "exact");
    assert!(last.fallback_reason.unwrap().contains("checksum"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_arguments_are_clear_errors() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 500).await;
    let q = vec_sql(&sample_vector(1, 16));
    let cases = [
        (
            format!("SELECT * FROM vector_search('no_such_table', {q}, 3)"),
            "no_such_table",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', [1.0, 2.0], 3)"),
            "2 dimensions",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 0)"),
            "k must be between 1 and 10000",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 10001)"),
            "k must be between",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, NULL)"),
            "k is NULL",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', NULL, 3)"),
            "NULL",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', ['a', 'b'], 3)"),
            "array of numbers",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', 'cat', 3)"),
            "array of numbers",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', '[1.0, \"x\"]', 3)"),
            "'[1.0, \"x\"]' is not",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', '[]', 3)"),
            "empty",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', '[1.0, 2.0]', 3)"),
            "2 dimensions",
        ),
        (
            format!(
                "SELECT * FROM vector_search('{t}', '[1e60, {}]', 3)",
                vec!["0.0"; 15].join(",")
            ),
            "non-finite",
        ),
        (format!("SELECT * FROM vector_search(NULL, {q}, 3)"), "NULL"),
        (
            format!("SELECT * FROM vector_search('{t}', {q})"),
            "3 or 4 arguments",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 3, 'metric=l2')"),
            "built with metric cosine",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 3, 'bogus=1')"),
            "unknown vector_search option 'bogus'",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 3, 'columns=nope')"),
            "unknown column 'nope'",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 3, 'filter=nope > 1')"),
            "nope",
        ),
        (
            format!("SELECT * FROM vector_search('{t}', {q}, 3, 'ef_search=0')"),
            "ef_search",
        ),
        (
            "SELECT * FROM vector_search('papers', [1.0, 'nan'::float], 3)".to_string(),
            "",
        ),
    ];
    for (sql, needle) in cases {
        let e = match s.sql(&sql).await {
            Ok(df) => df.collect().await.map(|_| ()).unwrap_err().to_string(),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{sql}: '{e}' lacks '{needle}'");
    }
    // Values are checked when the plan runs (they may be parameters).
    let df = s
        .sql(&format!(
            "SELECT * FROM vector_search('{t}', [1.0, 'NaN'::float, {}], 3)",
            vec!["0.0"; 14].join(",")
        ))
        .await
        .unwrap();
    let e = df.collect().await.unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_key_column_declared_in_sql_lets_key_searches_skip_the_parquet_file() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let loc = data.join("emb.parquet");
    std::fs::write(&loc, parquet_bytes(&[sample_batch(0, 800, 8)])).unwrap();
    let s = JammiSession::open(dir.path().join("root").to_str().unwrap())
        .await
        .unwrap();
    let create = |name: &str, key: &str| {
        format!(
            "CREATE EXTERNAL TABLE {name} STORED AS PARQUET LOCATION '{}' \
             OPTIONS ('jammi.vector_column' 'embedding', 'jammi.key_column' '{key}')",
            loc.display()
        )
    };
    // An unknown key column is refused by name, before anything is built.
    let err = s.sql(&create("bad", "nope")).await.unwrap_err().to_string();
    assert!(err.contains("key column 'nope' not found"), "{err}");
    assert!(!data.join("emb.idx.manifest.json").exists());

    s.sql(&create("emb", "id")).await.unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("emb.idx.manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["key_column"], "id", "{manifest}");
    let q = vec_sql(&sample_vector(321, 8));
    let sql = format!("SELECT id, _distance FROM vector_search('emb', {q}, 4)");
    let (keys_only, cold) = search_sql(&s, &sql).await;
    assert_hit(&keys_only, 321);
    // Cold: the rowmap (the index is mapped in place) and the file's version (HEAD); warm:
    // the version. Never the Parquet file's bytes.
    assert_eq!(cold.requests.total(), 2, "{cold:?}");
    assert_eq!(cold.rows_hydrated, 0, "{cold:?}");
    let (_, warm) = search_sql(&s, &sql).await;
    assert_eq!(
        (warm.requests.head, warm.requests.total()),
        (1, 1),
        "{warm:?}"
    );
    let with_title = collect_sql(&s, &sql.replace("id, _distance", "id, _distance, title")).await;
    assert_eq!(ids(&keys_only), ids(&with_title));

    // The sidecars carry key 'id' now: another key is refused rather than silently ignored.
    let err = s
        .sql(&create("emb3", "title"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("built with key column 'id'"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_existing_parquet_file_is_indexed_from_sql_and_searched() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(
        data.join("emb.parquet"),
        parquet_bytes(&[sample_batch(0, 800, 8)]),
    )
    .unwrap();
    let root = dir.path().join("root");
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let loc = data.join("emb.parquet");
    s.sql(&format!(
        "CREATE EXTERNAL TABLE emb STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'embedding', 'jammi.metric' 'l2')",
        loc.display()
    ))
    .await
    .unwrap();
    for f in ["emb.idx.usearch", "emb.idx.rowmap", "emb.idx.manifest.json"] {
        assert!(data.join(f).exists(), "{f} built beside the file");
    }
    let q = vec_sql(&sample_vector(123, 8));
    let (r, st) = search_sql(
        &s,
        &format!("SELECT id, _distance FROM vector_search('emb', {q}, 3)"),
    )
    .await;
    assert_hit(&r, 123);
    assert_eq!(st.mode, "index");
    // A second CREATE reuses the sidecars (same manifest), and the URL form works too.
    let before = std::fs::read(data.join("emb.idx.manifest.json")).unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE emb2 STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'embedding')",
        loc.display()
    ))
    .await
    .unwrap();
    assert_eq!(
        before,
        std::fs::read(data.join("emb.idx.manifest.json")).unwrap()
    );
    let url = jammi_db::storage::StorageUrl::parse(loc.to_str().unwrap()).unwrap();
    let r = collect_sql(
        &s,
        &format!("SELECT id FROM vector_search('{url}', {q}, 2)"),
    )
    .await;
    assert_hit(&r, 123);
    // Asking for another metric than the index was built with is an error.
    let e = s
        .sql(&format!(
            "CREATE EXTERNAL TABLE emb3 STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'embedding', 'jammi.metric' 'cosine')",
            loc.display()
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("metric l2"), "{e}");
    let e = s
        .sql(&format!(
            "CREATE EXTERNAL TABLE emb4 STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'title')",
            loc.display()
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("title"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plain_parquet_table_without_sidecars_is_searched_exactly() {
    let dir = tempdir();
    std::fs::write(
        dir.path().join("plain.parquet"),
        parquet_bytes(&[sample_batch(0, 300, 8)]),
    )
    .unwrap();
    let s = JammiSession::open(dir.path().join("root").to_str().unwrap())
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE plain STORED AS PARQUET LOCATION '{}'",
        dir.path().join("plain.parquet").display()
    ))
    .await
    .unwrap();
    let q = vec_sql(&sample_vector(200, 8));
    let (r, last) = search_sql(
        &s,
        &format!("SELECT id FROM vector_search('plain', {q}, 2)"),
    )
    .await;
    assert_hit(&r, 200);
    assert_eq!(last.mode, "exact");
    assert!(last.fallback_reason.unwrap().contains("no index"));
}

#[tokio::test(flavor = "multi_thread")]
async fn ctas_into_the_jammi_catalog_writes_an_indexed_result_table() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 500).await;
    collect_sql(&s, &format!("CREATE TABLE jammi.public.copy_of AS SELECT id, title, embedding FROM jammi.public.\"{t}\" WHERE id < 100")).await;
    let m = s.describe_table("copy_of").await.unwrap();
    assert_eq!(m.rows, 100);
    assert_eq!(m.index.unwrap().column, "embedding");
    let q = vec_sql(&sample_vector(50, 16));
    let r = collect_sql(
        &s,
        &format!("SELECT id, _distance FROM vector_search('copy_of', {q}, 3)"),
    )
    .await;
    assert_hit(&r, 50);
}

#[tokio::test(flavor = "multi_thread")]
async fn distance_functions_agree_with_vector_search() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 500).await;
    let q = vec_sql(&sample_vector(9, 16));
    let r = collect_sql(&s, &format!(
            "SELECT v.id, v._distance, cosine_distance(v.embedding, {q}) AS d FROM vector_search('{t}', {q}, 5) v"
        )).await;
    // `_distance` (Float32) is DataFusion's cosine_distance (Float64) of the same vectors.
    let b = &r[0];
    let a = b.column(1).as_any().downcast_ref::<Float32Array>().unwrap();
    let c = b
        .column(2)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap();
    for i in 0..b.num_rows() {
        assert!(
            (a.value(i) as f64 - c.value(i)).abs() < 1e-4,
            "{} vs {}",
            a.value(i),
            c.value(i)
        );
    }
    for (metric, function) in [
        ("l2", "l2_distance(v.embedding, {q})"),
        ("ip", "1 - inner_product(v.embedding, {q})"),
    ] {
        let sql = format!(
            "SELECT v._distance, {} AS d FROM vector_search('{t}', {q}, 5, 'exact=true; metric={metric}') v",
            function.replace("{q}", &q)
        );
        let r = collect_sql(&s, &sql).await;
        let b = &r[0];
        let a = b.column(0).as_any().downcast_ref::<Float32Array>().unwrap();
        let d = b
            .column(1)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::Float64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            assert!(
                (a.value(i) as f64 - d.value(i)).abs() < 1e-4,
                "{metric}: {sql}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn real_minilm_vectors_find_themselves() {
    // The repository's 1,001-row slice of the MiniLM corpus (real text, real embeddings).
    let corpus = sample_corpus_path();
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE corpus STORED AS PARQUET LOCATION '{}'",
        corpus.display()
    ))
    .await
    .unwrap();
    let df = s
        .sql("SELECT id, package, section, embedding FROM corpus")
        .await
        .unwrap();
    let m = s
        .write_result_table(
            &TableSpec {
                source: "debian".into(),
                task: "text_embedding".into(),
                model: "all-MiniLM-L6-v2".into(),
                key_column: Some("id".into()),
                vector_column: Some("embedding".into()),
                ..Default::default()
            },
            df,
        )
        .await
        .unwrap();
    assert_eq!(m.index.as_ref().unwrap().dimensions, 384);
    let probe = collect_sql(
        &s,
        "SELECT id, embedding FROM corpus ORDER BY id LIMIT 1 OFFSET 500",
    )
    .await;
    let probe_id = probe[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0);
    let emb = probe[0]
        .column(1)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::FixedSizeListArray>()
        .unwrap();
    let v = emb.value(0);
    let v: Vec<f32> = v
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
        .to_vec();
    let r = collect_sql(&s, &format!("SELECT id, section, _distance FROM vector_search('{}', {}, 10, 'filter=section = ''libs''')", m.table, vec_sql(&v))).await;
    assert_eq!(r.iter().map(|b| b.num_rows()).sum::<usize>(), 10);
    let r = s
        .search(&m.table, &v, 3, Default::default())
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_hit(&r, probe_id);
}
