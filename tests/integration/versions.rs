//! Result tables that change: appends as segments committed as versions, the layout on
//! storage, readers seeing one version, searches over segments, racing writers.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Float32Array, Int64Array, RecordBatch};
use jammi_db::JammiError;
use jammi_db::session::JammiSession;
use jammi_db::store::TableSpec;

use crate::common::{memory_root, sample_batch, sample_schema, sample_vector, tempdir, vec_sql};

const DIMS: i32 = 8;

fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: Some(name.into()),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    }
}

async fn rows(s: &JammiSession, sql: &str) -> Vec<RecordBatch> {
    s.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn ints(batches: &[RecordBatch], col: &str) -> Vec<i64> {
    batches
        .iter()
        .flat_map(|b| {
            b.column_by_name(col)
                .unwrap()
                .as_any()
                .downcast_ref::<Int64Array>()
                .unwrap()
                .values()
                .to_vec()
        })
        .collect()
}

fn hits(batches: &[RecordBatch]) -> Vec<(i64, u32)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b
            .column_by_name("id")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        let d = b
            .column_by_name("_distance")
            .unwrap()
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            out.push((ids.value(i), d.value(i).to_bits()));
        }
    }
    out
}

async fn count(s: &JammiSession, table: &str) -> i64 {
    ints(
        &rows(
            s,
            &format!("SELECT count(*) AS n FROM jammi.public.{table}"),
        )
        .await,
        "n",
    )[0]
}

/// A table written once, appended to twice (SQL and Rust): the first file is untouched,
/// each append is a segment with its own index and a version record, scans see every
/// row, and searches over the segments equal those over one table of the same rows.
/// A session whose writes leave their segments as written (no merge of small ones), for
/// tests of the segments themselves.
async fn open_unmerged(root: &str) -> jammi_db::Result<JammiSession> {
    let options = jammi_db::session::OpenOptions {
        auto_compact: Some(false),
        ..Default::default()
    };
    JammiSession::open_with(root, options).await
}

async fn appends_on(root: &str) {
    let s = open_unmerged(root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 300, DIMS)],
    )
    .await
    .unwrap();
    let store = rs.object_store().await.unwrap();
    let base = rs.parquet_url("t").unwrap();
    let read = |url: jammi_db::storage::StorageUrl| {
        let store = store.clone();
        async move {
            use object_store::ObjectStoreExt;
            store
                .get(&url.object_path().unwrap())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap()
        }
    };
    let before = read(base.clone()).await;
    s.refresh_tables().await.unwrap();
    // A source of new rows: a second table, inserted from SQL.
    rs.write_batches(
        &spec("more"),
        sample_schema(DIMS),
        vec![sample_batch(300, 200, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    let inserted = rows(
        &s,
        "INSERT INTO jammi.public.t SELECT * FROM jammi.public.more",
    )
    .await;
    assert_eq!(
        inserted[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .unwrap()
            .value(0),
        200
    );
    assert_eq!(count(&s, "t").await, 500);
    let v = rs
        .append_table(
            "t",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(500, 100, DIMS))]),
        )
        .await
        .unwrap();
    assert_eq!((v.version, v.segments.len(), v.rows()), (2, 3, 600));
    assert_eq!(count(&s, "t").await, 600);
    assert_eq!(
        read(base).await,
        before,
        "version 0's file is never rewritten"
    );
    for seg in &v.segments[1..] {
        assert!(seg.path.starts_with("t.jammi/segments/"), "{}", seg.path);
        assert!(
            seg.manifest.index.is_some(),
            "each segment has its own index"
        );
    }
    // Every id once.
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
    ids.sort();
    assert_eq!(ids, (0..600).collect::<Vec<i64>>());

    // The same rows as one table: exact searches equal bit for bit, index searches too
    // (small segments are searched exhaustively).
    rs.write_batches(
        &spec("one"),
        sample_schema(DIMS),
        vec![sample_batch(0, 600, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    for probe in [3, 333, 577] {
        let q = vec_sql(&sample_vector(probe, DIMS));
        for opts in [
            "exact=true",
            "ef_search=64",
            "exact=true; filter=id % 3 = 0",
        ] {
            let search = |t: &str| {
                format!("SELECT id, _distance FROM vector_search('{t}', {q}, 10, '{opts}')")
            };
            let got = hits(&rows(&s, &search("t")).await);
            let expected = hits(&rows(&s, &search("one")).await);
            assert_eq!(got, expected, "{opts} probe {probe}");
        }
        let batch = |t: &str| {
            format!(
                "SELECT query_id, id, _rank FROM vector_search_batch('{t}', \
                 (SELECT id, embedding FROM jammi.public.one WHERE id IN ({probe}, 599)), 4, 'exact=true') \
                 ORDER BY query_id, _rank"
            )
        };
        let got = rows(&s, &batch("t")).await;
        let expected = rows(&s, &batch("one")).await;
        assert_eq!(
            ints(&got, "id"),
            ints(&expected, "id"),
            "batch probe {probe}"
        );
        assert_eq!(ints(&got, "query_id"), ints(&expected, "query_id"));
    }
    // ORDER BY <distance> LIMIT k over the segments: the function's values, as over one table.
    let q = vec_sql(&sample_vector(41, DIMS));
    let order_by = |t: &str| {
        format!(
            "SELECT id, cosine_distance(embedding, {q}) AS d FROM jammi.public.{t} ORDER BY d LIMIT 7"
        )
    };
    let plan = rows(&s, &format!("EXPLAIN {}", order_by("t"))).await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    assert!(plan.contains("SegmentMergeExec"), "{plan}");
    let pairs = |b: &[RecordBatch]| -> Vec<(i64, u64)> {
        b.iter()
            .flat_map(|b| {
                let ids = b
                    .column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .clone();
                let d = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::Float64Array>()
                    .unwrap()
                    .clone();
                (0..b.num_rows()).map(move |i| (ids.value(i), d.value(i).to_bits()))
            })
            .collect()
    };
    assert_eq!(
        pairs(&rows(&s, &order_by("t")).await),
        pairs(&rows(&s, &order_by("one")).await)
    );
    let plan = rows(
        &s,
        &format!(
            "EXPLAIN SELECT id FROM vector_search('t', {}, 5)",
            vec_sql(&sample_vector(1, DIMS))
        ),
    )
    .await;
    let plan = datafusion::arrow::util::pretty::pretty_format_batches(&plan)
        .unwrap()
        .to_string();
    // The merge over the search's partitions, one per segment (of its segment numbers).
    assert!(plan.contains("SegmentMergeExec: k=5"), "{plan}");
    assert!(plan.contains("segments=3"), "{plan}");
    assert!(plan.contains("CoalescePartitionsExec"), "{plan}");
    assert!(plan.contains("partitions=3"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_are_segments_committed_as_versions_on_a_local_root() {
    let dir = tempdir();
    appends_on(dir.path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn appends_are_segments_committed_as_versions_in_memory() {
    appends_on(&memory_root("versions")).await;
}

/// Rows whose columns differ from the table's are refused before anything is written,
/// naming the column; an indexed file takes no INSERT.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_of_other_columns_is_refused_naming_the_column_and_writes_nothing() {
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    let wrong = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
    let e = rs
        .append_table("t", wrong, futures::stream::empty())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("column 'id'"), "{e}");
    let e = rs
        .append_table("t", sample_schema(4), futures::stream::empty())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("'embedding'"), "{e}");
    assert!(!dir.path().join("t.jammi").exists());
    let e = rs
        .append_table("nope", sample_schema(DIMS), futures::stream::empty())
        .await
        .unwrap_err();
    assert!(matches!(e, JammiError::NotFound { .. }), "{e}");
    // An indexed file is not a result table.
    let file = dir.path().join("f.parquet");
    std::fs::write(
        &file,
        crate::common::parquet_bytes(&[sample_batch(0, 10, DIMS)]),
    )
    .unwrap();
    rows(
        &s,
        &format!(
            "CREATE EXTERNAL TABLE f STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'embedding')",
            file.display()
        ),
    )
    .await;
    let e = rows_err(&s, "INSERT INTO f SELECT * FROM jammi.public.t").await;
    assert!(e.contains("only result tables can change"), "{e}");
    let e = rows_err(&s, "DELETE FROM f WHERE id = 1").await;
    assert!(e.contains("only result tables can change"), "{e}");
}

async fn rows_err(s: &JammiSession, sql: &str) -> String {
    match s.sql(sql).await {
        Err(e) => e.to_string(),
        Ok(df) => df.collect().await.unwrap_err().to_string(),
    }
}

/// A query planned before an append answers from the version it was planned at; the
/// next query sees the new one.
#[tokio::test(flavor = "multi_thread")]
async fn a_query_reads_one_version_from_start_to_end() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    let planned = s
        .sql("SELECT count(*) AS n FROM jammi.public.t")
        .await
        .unwrap();
    let search = s
        .sql(&format!(
            "SELECT id FROM vector_search('t', {}, 100, 'exact=true')",
            vec_sql(&sample_vector(1, DIMS))
        ))
        .await
        .unwrap();
    rs.append_table(
        "t",
        sample_schema(DIMS),
        futures::stream::iter(vec![Ok(sample_batch(10, 5, DIMS))]),
    )
    .await
    .unwrap();
    assert_eq!(ints(&planned.collect().await.unwrap(), "n"), vec![10]);
    assert_eq!(ints(&search.collect().await.unwrap(), "id").len(), 10);
    assert_eq!(count(&s, "t").await, 15);
}

/// Four writers appending at once (each its own store, as four processes would be) lose
/// no row and add none twice: every version number is taken once.
const WRITER: &str = "JAMMI_TEST_WRITER";

/// Run by `racing_appends_from_four_processes_all_land_once`: writer `w` appends ids
/// `1000 (w + 1) + 10 i ..+10` for i in 0..3, each as its own version.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by racing_appends_from_four_processes_all_land_once"]
async fn appends_three_batches() {
    let dir = std::env::var(APPENDER_DIR).expect("run by its test");
    let w: i64 = std::env::var(WRITER).unwrap().parse().unwrap();
    let s = JammiSession::open(&dir).await.unwrap();
    for i in 0..3i64 {
        let start = 1000 * (w + 1) + 10 * i;
        s.result_store()
            .append_table(
                "t",
                sample_schema(DIMS),
                futures::stream::iter(vec![Ok(sample_batch(start, 10, DIMS))]),
            )
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_appends_from_four_processes_all_land_once() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap().to_string();
    let s = JammiSession::open(&root).await.unwrap();
    s.result_store()
        .write_batches(
            &spec("t"),
            sample_schema(DIMS),
            vec![sample_batch(0, 10, DIMS)],
        )
        .await
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "versions::appends_three_batches",
                    "--ignored",
                    "--quiet",
                ])
                .env(APPENDER_DIR, &root)
                .env(WRITER, w.to_string())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("the test binary runs")
        })
        .collect();
    for mut w in writers {
        assert!(w.wait().unwrap().success(), "a writer failed");
    }
    // Twelve appends, each a version, and the merges of small segments they set off
    // (racing each other and the appends: one of two merges of the same segments lands).
    let history = s.result_store().versions("t").await.unwrap();
    let appends = history
        .iter()
        .filter(|v| v.version > 0 && v.operation == jammi_db::store::versions::Operation::Append)
        .count();
    assert_eq!(appends, 12, "{history:?}");
    let v = s.result_store().latest_version("t").await.unwrap();
    assert!(v.segments.len() < 13, "{} segments", v.segments.len());
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
    ids.sort();
    let mut expected: Vec<i64> = (0..10).collect();
    for w in 0..4i64 {
        for i in 0..3i64 {
            expected.extend((0..10).map(|j| 1000 * (w + 1) + 10 * i + j));
        }
    }
    expected.sort();
    assert_eq!(ids, expected);
}

/// The latest version is found with one LIST page and one GET, however many versions
/// there are.
#[tokio::test(flavor = "multi_thread")]
async fn opening_the_latest_version_costs_two_requests_whatever_the_count() {
    let root = memory_root("versions-open");
    let s = open_unmerged(&root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    let mut n = 0;
    for target in [1u64, 40] {
        while n < target {
            rs.append_table(
                "t",
                sample_schema(DIMS),
                futures::stream::iter(vec![Ok(sample_batch(100 + n as i64, 1, DIMS))]),
            )
            .await
            .unwrap();
            n += 1;
        }
        let before = s.registry().request_counts();
        let latest = rs.latest_version_number("t").await.unwrap();
        let after = s.registry().request_counts();
        assert_eq!(latest, Some(target));
        assert_eq!(
            after.total() - before.total(),
            1,
            "{target} versions: {after:?}"
        );
    }
}

/// Deleting a table that changed removes its segments and version records — only those —
/// and a user's files named like them stay byte-identical; a new table of the same name
/// starts at version 0.
#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_table_that_changed_removes_only_what_its_versions_prove() {
    let dir = tempdir();
    let d = dir.path();
    let s = open_unmerged(d.to_str().unwrap()).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    for i in 0..2 {
        rs.append_table(
            "t",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(10 + i * 5, 5, DIMS))]),
        )
        .await
        .unwrap();
    }
    s.refresh_tables().await.unwrap();
    rows(&s, "DELETE FROM jammi.public.t WHERE id % 2 = 0").await;
    assert!(d.join("t.jammi/deletions").read_dir().unwrap().count() >= 3);
    std::fs::create_dir_all(d.join("t.jammi/deletions")).unwrap();
    let user = [
        "t.jammi/deletions/1-00-mine.roaring",
        "t.jammi/segments/mine.parquet",
        "t.jammi/segments/1-00000000.parquet",
        "t.jammi/versions/notes.json",
        "t.jammi/versions/00000000000000000001.json.bak",
        "t.jammi.parquet",
    ];
    for (i, f) in user.iter().enumerate() {
        std::fs::write(d.join(f), format!("user file {i}")).unwrap();
    }
    s.delete_table("t").await.unwrap();
    for (i, f) in user.iter().enumerate() {
        assert_eq!(
            std::fs::read(d.join(f)).unwrap(),
            format!("user file {i}").into_bytes(),
            "{f}"
        );
    }
    let mut left: Vec<String> = walk(d)
        .into_iter()
        .filter(|f| f.starts_with("t.") || f.starts_with("t/"))
        .collect();
    left.sort();
    let mut expected: Vec<String> = user.iter().map(|f| f.to_string()).collect();
    expected.sort();
    assert_eq!(left, expected);
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 3, DIMS)],
    )
    .await
    .unwrap();
    assert_eq!(rs.latest_version("t").await.unwrap().version, 0);
    s.refresh_tables().await.unwrap();
    assert_eq!(count(&s, "t").await, 3);
}

/// Files under `dir`, relative, with `/` separators.
fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            } else {
                let rel = e
                    .path()
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .replace('\\', "/");
                out.push(rel);
            }
        }
    }
    out
}

/// `DELETE FROM` records the deleted rows per segment (no data rewritten); scans, counts
/// and every search form skip them, and equal the same queries over a table holding only
/// the live rows.
async fn deletes_on(root: &str) {
    let s = JammiSession::open(root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 300, DIMS)],
    )
    .await
    .unwrap();
    rs.append_table(
        "t",
        sample_schema(DIMS),
        futures::stream::iter(vec![Ok(sample_batch(300, 200, DIMS))]),
    )
    .await
    .unwrap();
    let live = |i: i64| i % 10 != 3 && !(450..480).contains(&i);
    let kept: Vec<RecordBatch> = vec![sample_batch(0, 500, DIMS)]
        .into_iter()
        .map(|b| {
            let mask: datafusion::arrow::array::BooleanArray = ints(std::slice::from_ref(&b), "id")
                .into_iter()
                .map(|i| Some(live(i)))
                .collect();
            datafusion::arrow::compute::filter_record_batch(&b, &mask).unwrap()
        })
        .collect();
    rs.write_batches(&spec("live"), sample_schema(DIMS), kept)
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    let store = rs.object_store().await.unwrap();
    let before = {
        use object_store::ObjectStoreExt;
        let v = rs.latest_version("t").await.unwrap();
        let mut out = Vec::new();
        for seg in &v.segments {
            let url = rs.root().join(&seg.path).unwrap();
            out.push(
                store
                    .get(&url.object_path().unwrap())
                    .await
                    .unwrap()
                    .bytes()
                    .await
                    .unwrap(),
            );
        }
        out
    };
    let n = |b: &[RecordBatch]| {
        b[0].column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!(
        n(&rows(&s, "DELETE FROM jammi.public.t WHERE id % 10 = 3").await),
        50
    );
    assert_eq!(
        n(&rows(
            &s,
            "DELETE FROM jammi.public.t WHERE id >= 450 AND id < 480"
        )
        .await),
        27
    );
    // Deleting deleted rows again deletes nothing.
    assert_eq!(
        n(&rows(&s, "DELETE FROM jammi.public.t WHERE id = 3").await),
        0
    );
    assert_eq!(count(&s, "t").await, 423);
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
    ids.sort();
    assert_eq!(ids, (0..500).filter(|&i| live(i)).collect::<Vec<i64>>());
    let sums = |t: &str| {
        format!(
            "SELECT count(*) AS n, sum(id) AS s, max(id) AS m FROM jammi.public.{t} WHERE score > 0.2"
        )
    };
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&rows(&s, &sums("t")).await)
            .unwrap()
            .to_string(),
        datafusion::arrow::util::pretty::pretty_format_batches(&rows(&s, &sums("live")).await)
            .unwrap()
            .to_string()
    );
    let v = rs.latest_version("t").await.unwrap();
    // Two deletes, two versions: the delete that matched nothing committed none.
    assert_eq!((v.version, v.rows()), (3, 423));
    {
        use object_store::ObjectStoreExt;
        for (seg, bytes) in v.segments.iter().zip(&before) {
            let url = rs.root().join(&seg.path).unwrap();
            let now = store
                .get(&url.object_path().unwrap())
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(&now, bytes, "{} was rewritten", seg.path);
            assert!(
                seg.deleted
                    .as_ref()
                    .unwrap()
                    .path
                    .starts_with("t.jammi/deletions/")
            );
        }
    }
    for probe in [3i64, 13, 333, 463] {
        let q = vec_sql(&sample_vector(probe, DIMS));
        for opts in [
            "exact=true",
            "ef_search=64",
            "exact=true; filter=id % 2 = 0",
            "filter=id % 2 = 0",
        ] {
            let search = |t: &str| {
                format!("SELECT id, _distance FROM vector_search('{t}', {q}, 10, '{opts}')")
            };
            let got = hits(&rows(&s, &search("t")).await);
            let expected = hits(&rows(&s, &search("live")).await);
            if opts.starts_with("exact") {
                assert_eq!(got, expected, "{opts} probe {probe}");
            } else {
                // A filtered search may score its candidates exactly (another kernel than
                // the graph's): the same rows, distances equal up to f32 rounding.
                let ids = |h: &[(i64, u32)]| h.iter().map(|x| x.0).collect::<Vec<_>>();
                assert_eq!(ids(&got), ids(&expected), "{opts} probe {probe}");
                for (a, b) in got.iter().zip(&expected) {
                    let (a, b) = (f32::from_bits(a.1), f32::from_bits(b.1));
                    assert!((a - b).abs() < 1e-5, "{opts} probe {probe}: {a} vs {b}");
                }
            }
            assert!(got.iter().all(|(id, _)| live(*id)), "{got:?}");
        }
        let order_by = |t: &str| {
            format!(
                "SELECT id FROM jammi.public.{t} ORDER BY cosine_distance(embedding, {q}) LIMIT 5"
            )
        };
        assert_eq!(
            ints(&rows(&s, &order_by("t")).await, "id"),
            ints(&rows(&s, &order_by("live")).await, "id")
        );
    }
    // A search returns k rows whenever k live rows exist.
    rows(&s, "DELETE FROM jammi.public.t WHERE id > 2").await;
    let q = vec_sql(&sample_vector(400, DIMS));
    for (k, expected) in [(10, 3), (3, 3), (2, 2)] {
        let got = rows(&s, &format!("SELECT id FROM vector_search('t', {q}, {k})")).await;
        let mut got = ints(&got, "id");
        got.sort();
        assert_eq!(got.len(), expected, "k={k}");
        assert!(got.iter().all(|i| *i <= 2), "{got:?}");
    }
    rows(&s, "DELETE FROM jammi.public.t").await;
    assert_eq!(count(&s, "t").await, 0);
    assert!(
        rows(&s, &format!("SELECT id FROM vector_search('t', {q}, 5)"))
            .await
            .iter()
            .all(|b| b.num_rows() == 0)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_rows_are_skipped_by_every_read_on_a_local_root() {
    let dir = tempdir();
    deletes_on(dir.path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_rows_are_skipped_by_every_read_in_memory() {
    deletes_on(&memory_root("deletes")).await;
}

/// `UPDATE` commits one version: the matched rows deleted and their new values in a new
/// segment; an updated vector is searchable at once and the old one never comes back.
#[tokio::test(flavor = "multi_thread")]
async fn an_update_replaces_rows_and_their_vectors_in_one_version() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 100, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    let new_vec = vec_sql(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
    let got = rows(
        &s,
        &format!("UPDATE jammi.public.t SET score = score + 10, embedding = {new_vec} WHERE id < 5 OR id = 50"),
    )
    .await;
    assert_eq!(
        got[0]
            .column(0)
            .as_any()
            .downcast_ref::<datafusion::arrow::array::UInt64Array>()
            .unwrap()
            .value(0),
        6
    );
    let v = rs.latest_version("t").await.unwrap();
    assert_eq!((v.version, v.segments.len(), v.rows()), (1, 2, 100));
    assert_eq!(count(&s, "t").await, 100);
    let updated = rows(
        &s,
        "SELECT id FROM jammi.public.t WHERE score >= 10 ORDER BY id",
    )
    .await;
    assert_eq!(ints(&updated, "id"), vec![0, 1, 2, 3, 4, 50]);
    // The new vector finds the updated rows first (distance 0), by index and exactly.
    for opts in ["ef_search=64", "exact=true"] {
        let near = rows(
            &s,
            &format!("SELECT id, _distance FROM vector_search('t', {new_vec}, 6, '{opts}')"),
        )
        .await;
        let mut ids = ints(&near, "id");
        ids.sort();
        assert_eq!(ids, vec![0, 1, 2, 3, 4, 50], "{opts}");
    }
    // Row 7's own old vector still finds row 7; row 3's old vector no longer finds row 3.
    for (probe, present) in [(7i64, true), (3, false)] {
        let q = vec_sql(&sample_vector(probe, DIMS));
        let got = rows(
            &s,
            &format!("SELECT id, _distance FROM vector_search('t', {q}, 1, 'exact=true')"),
        )
        .await;
        let h = hits(&got);
        assert_eq!(
            h[0].0 == probe && f32::from_bits(h[0].1) < 1e-6,
            present,
            "{probe}: {h:?}"
        );
    }
    // Updating nothing commits nothing.
    rows(&s, "UPDATE jammi.public.t SET score = 0 WHERE id > 1000").await;
    assert_eq!(rs.latest_version("t").await.unwrap().version, 1);
    // A second update of updated rows replaces them again (rows of the new segment).
    rows(&s, "UPDATE jammi.public.t SET score = -1 WHERE id = 50").await;
    assert_eq!(count(&s, "t").await, 100);
    let scores = rows(&s, "SELECT id FROM jammi.public.t WHERE score = -1").await;
    assert_eq!(ints(&scores, "id"), vec![50]);
}

/// A fault at every request of an append, then of a delete — failing before the store
/// sees it, or after it performed it (a lost response): afterwards (and after a recovery
/// pass) the table is at the old version or the new one, never in between, a success is
/// always the new one, and no row is ever lost or applied twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_fault_at_any_request_of_an_append_or_delete_leaves_the_old_version_or_the_new() {
    use crate::common::{Fault, FaultyStore};
    use jammi_db::storage::StorageRegistry;
    use object_store::ObjectStore;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for op in ["append", "delete"] {
        for fault in [Fault::Before, Fault::After] {
            let mut n = 1;
            loop {
                let count = Arc::new(AtomicUsize::new(0));
                let armed = Arc::new(AtomicBool::new(false));
                let (c, a) = (count.clone(), armed.clone());
                let registry = StorageRegistry::with_layer(Arc::new(move |inner| {
                    Arc::new(FaultyStore::new(inner, c.clone(), n, a.clone(), fault))
                        as Arc<dyn ObjectStore>
                }));
                let root = memory_root("faults");
                let opts = jammi_db::session::OpenOptions {
                    registry: Some(registry),
                    ..Default::default()
                };
                let s = JammiSession::open_with(&root, opts).await.unwrap();
                let rs = s.result_store();
                rs.write_batches(
                    &spec("t"),
                    sample_schema(DIMS),
                    vec![sample_batch(0, 20, DIMS)],
                )
                .await
                .unwrap();
                let base = rs.latest_version("t").await.unwrap();
                armed.store(true, Ordering::SeqCst);
                let outcome = match op {
                    "append" => rs
                        .append_table(
                            "t",
                            sample_schema(DIMS),
                            futures::stream::iter(vec![Ok(sample_batch(100, 5, DIMS))]),
                        )
                        .await
                        .map(|_| ()),
                    _ => {
                        let rows: roaring::RoaringBitmap = (0..4).collect();
                        rs.delete_rows("t", &base, vec![("t.parquet".into(), rows)])
                            .await
                            .map(|_| ())
                    }
                };
                armed.store(false, Ordering::SeqCst);
                let what = format!("{op} {fault:?} at request {n}: {outcome:?}");
                rs.recover()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: recovery: {e}"));
                s.refresh_tables().await.unwrap();
                let v = rs.latest_version("t").await.unwrap();
                let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
                ids.sort();
                let old: Vec<i64> = (0..20).collect();
                let new: Vec<i64> = match op {
                    "append" => (0..20).chain(100..105).collect(),
                    _ => (4..20).collect(),
                };
                match v.version {
                    0 => assert_eq!(ids, old, "{what}"),
                    1 => assert_eq!(ids, new, "{what}"),
                    other => panic!("{what}: version {other}"),
                }
                if outcome.is_ok() {
                    assert_eq!(v.version, 1, "{what}");
                }
                if count.load(Ordering::SeqCst) < n {
                    break;
                }
                n += 1;
                assert!(n < 200, "{op} makes more requests than expected");
            }
        }
    }
}

/// Time travel: `jammi.public."t@N"` and the `version=N` search option read the table as
/// version N left it; an unknown version is not found; an older version takes no change.
#[tokio::test(flavor = "multi_thread")]
async fn older_versions_are_read_as_they_were() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    rs.append_table(
        "t",
        sample_schema(DIMS),
        futures::stream::iter(vec![Ok(sample_batch(10, 5, DIMS))]),
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    rows(&s, "DELETE FROM jammi.public.t WHERE id < 3").await;
    for (v, n) in [(0, 10), (1, 15), (2, 12)] {
        assert_eq!(count(&s, &format!("\"t@{v}\"")).await, n, "version {v}");
        let q = vec_sql(&sample_vector(1, DIMS));
        for form in [
            format!("SELECT id FROM vector_search('t', {q}, 50, 'exact=true; version={v}')"),
            format!("SELECT id FROM vector_search('t@{v}', {q}, 50)"),
        ] {
            assert_eq!(
                ints(&rows(&s, &form).await, "id").len(),
                n as usize,
                "{form}"
            );
        }
    }
    assert_eq!(count(&s, "t").await, 12);
    let e = rows_err(&s, "SELECT count(*) FROM jammi.public.\"t@9\"").await;
    assert!(e.contains("t@9"), "{e}");
    let e = rows_err(&s, "DELETE FROM jammi.public.\"t@1\"").await;
    assert!(e.contains("read-only"), "{e}");
    let listed = rs.versions("t").await.unwrap();
    let ops: Vec<String> = listed
        .iter()
        .map(|v| {
            format!(
                "{}:{:?}:{}:{}",
                v.version, v.operation, v.rows_added, v.rows_deleted
            )
        })
        .collect();
    assert_eq!(ops, ["0:Append:10:0", "1:Append:5:0", "2:Delete:0:3"]);
}

/// An append larger than the segment budget streams into several segments of about the
/// budget each — all in one version — and reads back whole.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_over_the_segment_budget_is_split_into_segments_in_one_version() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    s.result_store()
        .write_batches(
            &spec("t"),
            sample_schema(DIMS),
            vec![sample_batch(0, 10, DIMS)],
        )
        .await
        .unwrap();
    let one = sample_batch(0, 1000, DIMS).get_array_memory_size() as u64;
    let root = jammi_db::storage::StorageUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let rs = jammi_db::store::ResultStore::with_root(
        root.clone(),
        s.registry().clone(),
        jammi_db::catalog::Catalog::new(root, s.registry().clone(), None),
    )
    .unwrap()
    .with_segment_max_bytes(one)
    .unwrap();
    // 4,500 rows in batches of 1,000 and one of 500, against a budget of 1,000 rows' bytes.
    let batches: Vec<_> = (0..5)
        .map(|i| {
            Ok(sample_batch(
                10 + i * 1000,
                if i == 4 { 500 } else { 1000 },
                DIMS,
            ))
        })
        .collect();
    let v = rs
        .append_table("t", sample_schema(DIMS), futures::stream::iter(batches))
        .await
        .unwrap();
    assert_eq!((v.version, v.rows_added), (1, 4500));
    let sizes: Vec<u64> = v.segments[1..].iter().map(|s| s.manifest.rows).collect();
    assert_eq!(sizes.iter().sum::<u64>(), 4500);
    assert!(sizes.len() >= 4, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 1000 && *n > 0), "{sizes:?}");
    s.refresh_tables().await.unwrap();
    assert_eq!(count(&s, "t").await, 4510);
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
    ids.sort();
    assert_eq!(ids, (0..4510).collect::<Vec<i64>>());
    let root = jammi_db::storage::StorageUrl::parse(dir.path().to_str().unwrap()).unwrap();
    let e = jammi_db::store::ResultStore::with_root(
        root.clone(),
        s.registry().clone(),
        jammi_db::catalog::Catalog::new(root, s.registry().clone(), None),
    )
    .unwrap()
    .with_segment_max_bytes(0)
    .unwrap_err();
    assert!(e.to_string().contains("segment_max_bytes"), "{e}");
}

/// DML on a source is refused before anything is written (its files are the user's);
/// DataFusion's own tables keep their DML.
#[tokio::test(flavor = "multi_thread")]
async fn dml_on_a_source_is_refused_and_datafusions_tables_keep_theirs() {
    use jammi_db::source::{SourceConnection, SourceType};
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("papers.parquet");
    let bytes = crate::common::parquet_bytes(&[sample_batch(0, 10, DIMS)]);
    std::fs::write(&file, &bytes).unwrap();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    let conn = SourceConnection {
        url: Some(format!("{}/", data.display())),
        ..Default::default()
    };
    s.add_source("papers", SourceType::File, conn)
        .await
        .unwrap();
    for sql in [
        "DELETE FROM papers.public.papers WHERE id = 1",
        "UPDATE papers.public.papers SET score = 0",
        "INSERT INTO papers.public.papers SELECT * FROM papers.public.papers",
        // EXPLAIN ANALYZE runs the write it holds.
        "EXPLAIN ANALYZE INSERT INTO papers.public.papers SELECT * FROM papers.public.papers",
        "EXPLAIN ANALYZE DELETE FROM papers.public.papers WHERE id = 1",
    ] {
        let e = rows_err(&s, sql).await;
        assert!(
            e.contains("only result tables") && e.contains("papers.public.papers"),
            "{sql}: {e}"
        );
    }
    assert_eq!(std::fs::read(&file).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 1);
    // A DataFusion memory table still takes DELETE.
    rows(&s, "CREATE TABLE m AS VALUES (1), (2), (3)").await;
    rows(&s, "DELETE FROM m WHERE column1 = 2").await;
    let n = rows(&s, "SELECT count(*) AS n FROM m").await;
    assert_eq!(ints(&n, "n"), vec![2]);
}

/// Rows for a MERGE source: ids `ids`, score 42, title `new <id>`, vector of `id + 1000`.
fn merge_rows(ids: &[i64]) -> RecordBatch {
    use datafusion::arrow::array::{FixedSizeListArray, Float64Array, StringArray};
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|&i| sample_vector(i + 1000, DIMS))
        .collect();
    let emb = FixedSizeListArray::new(
        Arc::new(datafusion::arrow::datatypes::Field::new(
            "item",
            datafusion::arrow::datatypes::DataType::Float32,
            true,
        )),
        DIMS,
        Arc::new(Float32Array::from(values)),
        None,
    );
    RecordBatch::try_new(
        sample_schema(DIMS),
        vec![
            Arc::new(Int64Array::from(ids.to_vec())),
            Arc::new(StringArray::from_iter_values(
                ids.iter().map(|i| format!("new {i}")),
            )),
            Arc::new(Float64Array::from(vec![42.0; ids.len()])),
            Arc::new(emb),
        ],
    )
    .unwrap()
}

fn count_of(batches: &[RecordBatch]) -> u64 {
    batches[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        .unwrap()
        .value(0)
}

/// The top hit of an exact search for `v`: its id and whether it is at distance 0.
async fn nearest(s: &JammiSession, v: &[f32]) -> (i64, bool) {
    let q = vec_sql(v);
    let got = rows(
        s,
        &format!("SELECT id, _distance FROM vector_search('t', {q}, 1, 'exact=true')"),
    )
    .await;
    let h = hits(&got);
    (h[0].0, f32::from_bits(h[0].1) < 1e-6)
}

const UPSERT: &str = "MERGE INTO jammi.public.t AS t USING upd AS s ON t.id = s.id \
     WHEN MATCHED AND s.id = 99 THEN DELETE \
     WHEN MATCHED THEN UPDATE SET title = s.title, score = s.score, embedding = s.embedding \
     WHEN NOT MATCHED THEN INSERT (id, title, score, embedding) \
     VALUES (s.id, s.title, s.score, s.embedding)";

async fn merges_on(root: &str) {
    let s = open_unmerged(root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 100, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    let src: Vec<i64> = (95..105).collect();
    s.context().register_batch("upd", merge_rows(&src)).unwrap();
    // One deleted, four updated, five inserted.
    assert_eq!(count_of(&rows(&s, UPSERT).await), 10, "{root}");
    let v = rs.latest_version("t").await.unwrap();
    assert_eq!(
        (v.version, v.segments.len(), v.rows_added, v.rows_deleted),
        (1, 2, 9, 5),
        "{root}"
    );
    assert_eq!(
        v.operation,
        jammi_db::store::versions::Operation::Merge,
        "{root}"
    );
    let ids = ints(
        &rows(&s, "SELECT id FROM jammi.public.t ORDER BY id").await,
        "id",
    );
    let want: Vec<i64> = (0..99).chain(100..105).collect();
    assert_eq!(ids, want, "{root}");
    let new = rows(
        &s,
        "SELECT id FROM jammi.public.t WHERE score = 42 AND title = concat('new ', CAST(id AS VARCHAR)) ORDER BY id",
    )
    .await;
    assert_eq!(
        ints(&new, "id"),
        vec![95, 96, 97, 98, 100, 101, 102, 103, 104]
    );
    // Updated vectors are found at once, the old ones never again, the deleted row neither.
    assert_eq!(nearest(&s, &sample_vector(1097, DIMS)).await, (97, true));
    assert_ne!(nearest(&s, &sample_vector(97, DIMS)).await, (97, true));
    assert_ne!(nearest(&s, &sample_vector(99, DIMS)).await.0, 99);
    assert_eq!(nearest(&s, &sample_vector(1102, DIMS)).await, (102, true));
    let by_index = rows(
        &s,
        &format!(
            "SELECT id FROM vector_search('t', {}, 1)",
            vec_sql(&sample_vector(1096, DIMS))
        ),
    )
    .await;
    assert_eq!(ints(&by_index, "id"), vec![96]);
    // NOT MATCHED BY SOURCE reaches the table's rows the source does not name.
    let gone = rows(
        &s,
        "MERGE INTO jammi.public.t AS t USING upd AS s ON t.id = s.id \
         WHEN NOT MATCHED BY SOURCE AND t.id < 3 THEN DELETE",
    )
    .await;
    assert_eq!(count_of(&gone), 3, "{root}");
    assert_eq!(count(&s, "t").await, 101, "{root}");
    // Merging the same rows again updates them in place of themselves: still 101 rows.
    s.context().deregister_table("upd").unwrap();
    s.context()
        .register_batch("upd", merge_rows(&[100, 101]))
        .unwrap();
    assert_eq!(count_of(&rows(&s, UPSERT).await), 2, "{root}");
    assert_eq!(count(&s, "t").await, 101, "{root}");
    // The Rust upsert call: matched keys replaced, new keys inserted.
    let data = s.context().read_batch(merge_rows(&[7, 200])).unwrap();
    assert_eq!(s.merge("t", data, &["id"]).await.unwrap(), 2, "{root}");
    assert_eq!(count(&s, "t").await, 102, "{root}");
    assert_eq!(nearest(&s, &sample_vector(1007, DIMS)).await, (7, true));
    assert_eq!(nearest(&s, &sample_vector(1200, DIMS)).await, (200, true));
    let v = rs.latest_version("t").await.unwrap();
    assert_eq!(v.version, 4, "{root}");
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_into_upserts_and_deletes_in_one_version_on_a_local_root() {
    let dir = tempdir();
    merges_on(dir.path().to_str().unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn merge_into_upserts_and_deletes_in_one_version_in_memory() {
    merges_on(&memory_root("merge")).await;
}

/// A target row two source rows would change fails the MERGE naming its key, and nothing is
/// committed; the Rust call refuses a key that is not a column.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_matching_one_row_to_two_source_rows_fails_naming_the_key() {
    let s = JammiSession::open(&memory_root("merge-dup")).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    s.context()
        .register_batch("upd", merge_rows(&[3, 5, 5, 20]))
        .unwrap();
    let err = rows_err(&s, UPSERT).await;
    assert!(
        err.contains("id = 5") && err.contains("more than one source row"),
        "{err}"
    );
    assert!(rs.latest_version_number("t").await.unwrap().is_none());
    assert_eq!(count(&s, "t").await, 10);
    let data = s.context().read_batch(merge_rows(&[1])).unwrap();
    let err = s.merge("t", data, &["nope"]).await.unwrap_err().to_string();
    assert!(err.contains("'nope'"), "{err}");
}

/// Two MERGEs planned on the same version: the first commits, the second fails with a
/// conflict (the rows the first added could hold its keys) and changes nothing.
#[tokio::test(flavor = "multi_thread")]
async fn two_racing_merges_commit_one_and_refuse_the_other() {
    let s = JammiSession::open(&memory_root("merge-race"))
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    s.context()
        .register_batch("upd", merge_rows(&[3, 50]))
        .unwrap();
    let first = s.sql(UPSERT).await.unwrap();
    let second = s.sql(UPSERT).await.unwrap();
    assert_eq!(count_of(&first.collect().await.unwrap()), 2);
    let err = second.collect().await.unwrap_err().to_string();
    assert!(err.contains("nothing was committed"), "{err}");
    assert_eq!(rs.latest_version("t").await.unwrap().version, 1);
    let ids = ints(
        &rows(&s, "SELECT id FROM jammi.public.t ORDER BY id").await,
        "id",
    );
    let want: Vec<i64> = (0..10).chain([50]).collect();
    assert_eq!(ids, want);
}

/// `SET jammi.segment_max_bytes` splits the session's INSERTs; a table's own budget
/// (recorded when it was written) splits appends that give none; bad sizes and unknown
/// settings are errors naming them; unset, the setting lists nothing.
#[tokio::test(flavor = "multi_thread")]
async fn the_segment_budget_is_a_session_setting_and_a_table_option() {
    let s = JammiSession::open(&memory_root("budget")).await.unwrap();
    let listed = rows(
        &s,
        "SELECT name FROM information_schema.df_settings WHERE name LIKE 'jammi.%'",
    )
    .await;
    assert_eq!(listed.iter().map(|b| b.num_rows()).sum::<usize>(), 0);
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    rows(&s, "CREATE TABLE src AS SELECT * FROM jammi.public.t").await;
    let insert = "INSERT INTO jammi.public.t SELECT id + 100, title, score, embedding FROM src";
    // Default budget: one segment.
    rows(&s, insert).await;
    assert_eq!(rs.latest_version("t").await.unwrap().segments.len(), 2);
    // A budget of a few rows' bytes: the same ten rows become several segments of one version.
    let row = (sample_batch(0, 10, DIMS).get_array_memory_size() / 10) as u64;
    rows(&s, &format!("SET jammi.segment_max_bytes = '{}'", row * 3)).await;
    let listed = rows(
        &s,
        "SELECT value FROM information_schema.df_settings WHERE name = 'jammi.segment_max_bytes'",
    )
    .await;
    assert_eq!(listed[0].num_rows(), 1);
    rows(&s, insert).await;
    let v = rs.latest_version("t").await.unwrap();
    assert_eq!(v.version, 2);
    assert!(v.segments.len() >= 2 + 3, "{} segments", v.segments.len());
    assert_eq!(count(&s, "t").await, 30);
    for (bad, named) in [
        ("SET jammi.segment_max_bytes = 'lots'", "'lots'"),
        ("SET jammi.segment_max_bytes = '0'", "'0'"),
        (
            "SET jammi.segment_maxbytes = '1MiB'",
            "jammi.segment_maxbytes",
        ),
    ] {
        let err = rows_err(&s, bad).await;
        assert!(err.contains(named), "{bad}: {err}");
    }
    // A table's own budget, recorded in its manifest, splits an append that gives none.
    let own = TableSpec {
        segment_max_bytes: Some(row * 2),
        ..spec("u")
    };
    let m = rs
        .write_batches(&own, sample_schema(DIMS), vec![sample_batch(0, 4, DIMS)])
        .await
        .unwrap();
    assert_eq!(m.segment_max_bytes, Some(row * 2));
    let v = rs
        .append_table(
            "u",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(10, 10, DIMS))]),
        )
        .await
        .unwrap();
    assert!(v.segments.len() > 4, "{} segments", v.segments.len());
    // A write's own budget wins over the table's.
    let v = rs
        .append_table_with(
            "u",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(30, 10, DIMS))]),
            Some(1 << 30),
        )
        .await
        .unwrap();
    assert_eq!(
        v.segments.len() - rs.version("u", 1).await.unwrap().segments.len(),
        1
    );
}

/// `CREATE TABLE jammi.public.<t> AS SELECT` streams: within the session's budget the table
/// has the one-file layout; over it, the first budget of rows is the table and the rest
/// budget-sized segments of version 1, every row there and every search answering as on
/// the source; a query failing after the first segment was written leaves no table.
#[tokio::test(flavor = "multi_thread")]
async fn create_table_as_streams_its_rows_into_segments_of_the_budget() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store();
    let batch = sample_batch(0, 200, DIMS);
    let row = (batch.get_array_memory_size() / 200) as u64;
    rs.write_batches(&spec("t"), sample_schema(DIMS), vec![batch])
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    rows(
        &s,
        "CREATE TABLE jammi.public.small AS SELECT * FROM jammi.public.t",
    )
    .await;
    assert_eq!(rs.latest_version_number("small").await.unwrap(), None);
    assert!(dir.path().join("small.parquet").is_file());
    assert!(!dir.path().join("small.jammi").exists());

    rows(&s, &format!("SET jammi.segment_max_bytes = '{}'", row * 50)).await;
    rows(&s, "SET datafusion.execution.batch_size = 20").await;
    rows(
        &s,
        "CREATE TABLE jammi.public.big AS SELECT * FROM jammi.public.t",
    )
    .await;
    let v = rs.latest_version("big").await.unwrap();
    assert_eq!(v.version, 1);
    assert!(v.segments.len() >= 4, "{} segments", v.segments.len());
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.big").await, "id");
    ids.sort();
    assert_eq!(ids, (0..200).collect::<Vec<i64>>());
    for i in [3, 77, 151] {
        let q = vec_sql(&sample_vector(i, DIMS));
        let search = |t: &str| {
            format!("SELECT id, _distance FROM vector_search('{t}', {q}, 5, 'exact=true')")
        };
        let (a, b) = (rows(&s, &search("big")).await, rows(&s, &search("t")).await);
        assert_eq!(hits(&a), hits(&b), "query {i}");
        let indexed = rows(&s, &format!("SELECT id FROM vector_search('big', {q}, 1)")).await;
        assert_eq!(ints(&indexed, "id"), vec![i]);
    }

    // Row 149 divides by zero, in the eighth batch of twenty: after the first segment.
    let err = rows_err(
        &s,
        "CREATE TABLE jammi.public.broken AS \
         SELECT id, 1 / (id - 149) AS x, embedding FROM jammi.public.t",
    )
    .await;
    assert!(err.to_lowercase().contains("divide by zero"), "{err}");
    assert!(!rs.list_tables().await.unwrap().contains(&"broken".into()));
    let left: Vec<String> = walk(dir.path())
        .into_iter()
        .filter(|p| p.contains("broken"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // The same failure in an INSERT: its segments written so far are removed.
    let mut before = walk(dir.path());
    before.sort();
    let err = rows_err(
        &s,
        "INSERT INTO jammi.public.big SELECT id + 1000, title, \
         score + CAST(1 / (id - 149) AS DOUBLE), embedding FROM jammi.public.t",
    )
    .await;
    assert!(err.to_lowercase().contains("divide by zero"), "{err}");
    assert_eq!(rs.latest_version("big").await.unwrap().version, 1);
    let mut after = walk(dir.path());
    after.sort();
    assert_eq!(after, before);
}

/// Every read and search form's answer on `t`, as text (exact forms with distances bit
/// for bit; index forms by rows).
async fn answers(s: &JammiSession) -> Vec<String> {
    let text = |b: &[RecordBatch]| {
        datafusion::arrow::util::pretty::pretty_format_batches(b)
            .unwrap()
            .to_string()
    };
    let mut out = Vec::new();
    let exact_bits = |b: &[RecordBatch]| format!("{:?}", hits(b));
    for sql in [
        "SELECT * FROM jammi.public.t ORDER BY id".to_string(),
        "SELECT count(*) AS n, sum(id) AS s, max(score) AS m FROM jammi.public.t WHERE id % 2 = 0"
            .to_string(),
    ] {
        out.push(text(&rows(s, &sql).await));
    }
    for probe in [7i64, 333, 777, 961] {
        let q = vec_sql(&sample_vector(probe, DIMS));
        for opts in ["exact=true", "exact=true; filter=id % 3 = 1"] {
            let sql = format!("SELECT id, _distance FROM vector_search('t', {q}, 10, '{opts}')");
            out.push(exact_bits(&rows(s, &sql).await));
        }
        for opts in ["ef_search=256", "ef_search=256; filter=id % 3 = 1"] {
            let sql = format!("SELECT id FROM vector_search('t', {q}, 10, '{opts}')");
            let mut ids = ints(&rows(s, &sql).await, "id");
            ids.sort();
            out.push(format!("{opts}: {ids:?}"));
        }
        let sql = format!(
            "SELECT id, cosine_distance(embedding, {q}) AS _distance FROM jammi.public.t \
             ORDER BY cosine_distance(embedding, {q}) LIMIT 5"
        );
        out.push(text(&rows(s, &sql).await));
    }
    let sub = "SELECT id, _distance FROM vector_search('t', \
               (SELECT embedding FROM jammi.public.t WHERE id = 423), 6, 'exact=true')";
    out.push(exact_bits(&rows(s, sub).await));
    let batch = "SELECT query_id, id, _distance FROM vector_search_batch('t', \
                 (SELECT id, embedding FROM jammi.public.t WHERE id IN (11, 650)), 4, 'exact=true') \
                 ORDER BY query_id, _distance, id";
    let b = rows(s, batch).await;
    out.push(format!("{:?} {:?}", ints(&b, "query_id"), hits(&b)));
    let prepared = s
        .prepare("SELECT id, _distance FROM vector_search('t', $1, 8, 'exact=true')")
        .await
        .unwrap();
    let got = prepared
        .collect(vec![crate::common::list(&sample_vector(555, DIMS))])
        .await
        .unwrap();
    out.push(exact_bits(&got));
    out
}

fn same_answers(now: &[String], before: &[String]) {
    assert_eq!(now.len(), before.len());
    for (i, (a, b)) in now.iter().zip(before).enumerate() {
        assert!(
            a == b,
            "answer {i} differs:\n now {a:.2000}\n was {b:.2000}"
        );
    }
}

/// A five-segment table with deletions answers every form as its compacted one-segment
/// self; vacuum then removes the replaced files (and only them: a user's files named like
/// jammi-db's stay byte-identical), and the answers still hold.
#[tokio::test(flavor = "multi_thread")]
async fn compaction_keeps_every_answer_and_vacuum_removes_only_what_versions_prove() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let s = open_unmerged(root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 200, DIMS)],
    )
    .await
    .unwrap();
    for i in 1..5 {
        rs.append_table(
            "t",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(i * 200, 200, DIMS))]),
        )
        .await
        .unwrap();
    }
    s.refresh_tables().await.unwrap();
    rows(
        &s,
        "DELETE FROM jammi.public.t WHERE id % 7 = 2 OR (id > 380 AND id < 420)",
    )
    .await;
    rows(
        &s,
        "UPDATE jammi.public.t SET score = 9.5 WHERE id % 50 = 1",
    )
    .await;
    let v = rs.latest_version("t").await.unwrap();
    assert!(v.segments.len() >= 6, "{} segments", v.segments.len());
    let before = answers(&s).await;
    // User files named like jammi-db's, beside its own.
    let own = dir.path().join("t.jammi");
    let users = [
        own.join("segments/9-0badcafe.parquet"),
        own.join("segments/9-0badcafe.idx.manifest.json"),
        own.join("deletions/1-5-0badcafe.roaring"),
        own.join("deletions/3-0badcafe.intent.json"),
        own.join("versions/readme.json"),
        own.join("notes.txt"),
    ];
    for (i, f) in users.iter().enumerate() {
        std::fs::write(f, format!("a user's file {i}")).unwrap();
    }
    let r = s.compact("t", &Default::default()).await.unwrap();
    assert_eq!((r.segments_after, r.rows), (1, v.rows()), "{r:?}");
    let compacted = rs.latest_version("t").await.unwrap();
    assert_eq!(
        compacted.operation,
        jammi_db::store::versions::Operation::Compact
    );
    assert_eq!((compacted.rows_added, compacted.rows()), (0, v.rows()));
    same_answers(&answers(&s).await, &before);
    // Nothing left to rewrite: no new version.
    let again = s.compact("t", &Default::default()).await.unwrap();
    assert_eq!(again.version, None);
    // The replaced version is still readable until a vacuum past it.
    let old = format!("SELECT count(*) AS n FROM jammi.public.\"t@{}\"", v.version);
    assert_eq!(ints(&rows(&s, &old).await, "n"), vec![v.rows() as i64]);
    let kept = s
        .vacuum("t", std::time::Duration::from_secs(3600), false)
        .await
        .unwrap();
    assert!(
        kept.removed.is_empty() && kept.versions_removed.is_empty(),
        "{kept:?}"
    );
    let dry = s
        .vacuum("t", std::time::Duration::ZERO, true)
        .await
        .unwrap();
    let on_disk_before = walk(dir.path());
    assert!(!dry.removed.is_empty());
    assert_eq!(
        walk(dir.path()),
        on_disk_before,
        "a dry run removed something"
    );
    let done = s
        .vacuum("t", std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(
        done.versions_removed,
        (1..compacted.version).collect::<Vec<u64>>()
    );
    let left = walk(dir.path());
    for f in &dry.removed {
        assert!(!left.iter().any(|l| l.ends_with(f.as_str())), "{f} left");
    }
    for (i, f) in users.iter().enumerate() {
        assert_eq!(
            std::fs::read_to_string(f).unwrap(),
            format!("a user's file {i}")
        );
    }
    // The table's first file stays, the compacted segment answers, old versions are gone.
    assert!(dir.path().join("t.parquet").exists());
    s.refresh_tables().await.unwrap();
    same_answers(&answers(&s).await, &before);
    let err = rows_err(&s, &old).await;
    assert!(err.contains(&format!("t@{}", v.version)), "{err}");
    // Appends, deletes and another compaction go on from there.
    rs.append_table(
        "t",
        sample_schema(DIMS),
        futures::stream::iter(vec![Ok(sample_batch(5000, 10, DIMS))]),
    )
    .await
    .unwrap();
    rows(&s, "DELETE FROM jammi.public.t WHERE id < 100").await;
    let n = count(&s, "t").await;
    s.compact("t", &Default::default()).await.unwrap();
    assert_eq!(count(&s, "t").await, n);
}

/// Objects under `t.jammi/` that the latest version of `t` does not use (its record, its
/// segments' files, its deletion files).
async fn unused_objects(rs: &jammi_db::store::ResultStore) -> Vec<String> {
    let store = rs.object_store().await.unwrap();
    let v = rs.latest_version("t").await.unwrap();
    let mut used = std::collections::BTreeSet::new();
    for seg in &v.segments {
        let dir = seg.path.rsplit_once('/').map_or("", |(d, _)| d);
        for f in &seg.manifest.files {
            used.insert(format!("{dir}/{}", f.name));
        }
        let stem = seg.path.trim_end_matches(".parquet");
        used.insert(format!("{stem}.idx.manifest.json"));
        if let Some(d) = &seg.deleted {
            used.insert(d.path.clone());
        }
    }
    let prefix = rs.root().join("t.jammi/").unwrap().object_path().unwrap();
    let root = rs.root().object_path().unwrap().to_string();
    let listed: Vec<_> = futures::StreamExt::collect::<Vec<_>>(store.list(Some(&prefix))).await;
    listed
        .into_iter()
        .map(|m| m.unwrap().location.to_string())
        .map(|p| {
            p.strip_prefix(&root)
                .unwrap_or(&p)
                .trim_start_matches('/')
                .to_string()
        })
        .filter(|p| !used.contains(p) && !p.starts_with("t.jammi/versions/"))
        .collect()
}

/// A fault at every request of a merge, a compaction and a vacuum — before the store sees
/// it, or after it performed it: the table answers as the old version or the new one, a
/// success is the new one, and after recovery and a vacuum nothing is left under the table
/// that its latest version does not use.
#[tokio::test(flavor = "multi_thread")]
async fn a_fault_at_any_request_of_a_merge_compaction_or_vacuum_leaves_the_old_version_or_the_new()
{
    use crate::common::{Fault, FaultyStore};
    use jammi_db::storage::StorageRegistry;
    use object_store::ObjectStore;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    for op in ["merge", "compact", "vacuum", "append and merge"] {
        for fault in [Fault::Before, Fault::After] {
            let mut n = 1;
            loop {
                let count = Arc::new(AtomicUsize::new(0));
                let armed = Arc::new(AtomicBool::new(false));
                let (c, a) = (count.clone(), armed.clone());
                let registry = StorageRegistry::with_layer(Arc::new(move |inner| {
                    Arc::new(FaultyStore::new(inner, c.clone(), n, a.clone(), fault))
                        as Arc<dyn ObjectStore>
                }));
                let opts = jammi_db::session::OpenOptions {
                    registry: Some(registry),
                    auto_compact: Some(false),
                    ..Default::default()
                };
                let s = JammiSession::open_with(&memory_root("faults"), opts)
                    .await
                    .unwrap();
                let rs = s.result_store();
                rs.write_batches(
                    &spec("t"),
                    sample_schema(DIMS),
                    vec![sample_batch(0, 20, DIMS)],
                )
                .await
                .unwrap();
                rs.append_table(
                    "t",
                    sample_schema(DIMS),
                    futures::stream::iter(vec![Ok(sample_batch(20, 10, DIMS))]),
                )
                .await
                .unwrap();
                s.refresh_tables().await.unwrap();
                rows(&s, "DELETE FROM jammi.public.t WHERE id < 5").await;
                let data = s.context().read_batch(merge_rows(&[7, 100])).unwrap();
                armed.store(true, Ordering::SeqCst);
                let outcome = match op {
                    "merge" => s.merge("t", data, &["id"]).await.map(|_| ()),
                    "compact" => s.compact("t", &Default::default()).await.map(|_| ()),
                    "append and merge" => {
                        // The third small segment fills its tier: merged after committing.
                        use jammi_db::store::{Change, WriteSettings, versions::Operation};
                        let on = WriteSettings {
                            auto_compact: Some(true),
                            ..Default::default()
                        };
                        let change = Change::new(Operation::Append, Vec::new()).with_settings(on);
                        let rows = futures::stream::iter(vec![Ok(sample_batch(200, 5, DIMS))]);
                        rs.commit_change("t", None, change, Some((sample_schema(DIMS), rows)))
                            .await
                            .map(|_| ())
                    }
                    _ => s
                        .vacuum("t", std::time::Duration::ZERO, false)
                        .await
                        .map(|_| ()),
                };
                armed.store(false, Ordering::SeqCst);
                let what = format!("{op} {fault:?} at request {n}: {outcome:?}");
                rs.recover()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: recovery: {e}"));
                s.refresh_tables()
                    .await
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let v = rs.latest_version("t").await.unwrap();
                let got = rows(&s, "SELECT id, title FROM jammi.public.t ORDER BY id").await;
                let mut ids = ints(&got, "id");
                ids.sort();
                let old: Vec<i64> = (5..30).collect();
                let new: Vec<i64> = match op {
                    "merge" => (5..30).chain([100]).collect(),
                    "append and merge" => (5..30).chain(200..205).collect(),
                    _ => old.clone(),
                };
                match v.version {
                    2 => assert_eq!(ids, old, "{what}"),
                    3 => assert_eq!(ids, new, "{what}"),
                    // The append's merge: one segment of the same rows.
                    4 if op == "append and merge" => {
                        assert_eq!(ids, new, "{what}");
                        assert_eq!(v.segments.len(), 1, "{what}");
                    }
                    other => panic!("{what}: version {other}"),
                }
                if outcome.is_ok() && op != "vacuum" {
                    assert!(v.version >= 3, "{what}");
                }
                s.vacuum("t", std::time::Duration::ZERO, false)
                    .await
                    .unwrap_or_else(|e| panic!("{what}: vacuum after: {e}"));
                assert_eq!(unused_objects(rs).await, Vec::<String>::new(), "{what}");
                assert_eq!(
                    ints(
                        &rows(&s, "SELECT id FROM jammi.public.t ORDER BY id").await,
                        "id"
                    )
                    .len(),
                    ids.len()
                );
                if count.load(Ordering::SeqCst) < n {
                    break;
                }
                n += 1;
                assert!(n < 300, "{op} makes more requests than expected");
            }
        }
    }
}

const APPENDER_DIR: &str = "JAMMI_TEST_APPENDER_DIR";

/// Run by `a_writer_killed_inside_an_append_leaves_the_old_version_and_recovery_settles_it`:
/// appends to table `t` under the root it is given, one batch every 100 ms, until killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by a_writer_killed_inside_an_append_leaves_the_old_version_and_recovery_settles_it"]
async fn appends_until_killed() {
    use futures::StreamExt as _;
    let dir = std::env::var(APPENDER_DIR).expect("run by its test");
    let s = JammiSession::open(&dir).await.unwrap();
    let batches = futures::stream::iter(0..).then(|i| async move {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        Ok(sample_batch(1000 + i * 10, 10, DIMS))
    });
    s.result_store()
        .append_table("t", sample_schema(DIMS), Box::pin(batches))
        .await
        .unwrap();
}

/// kill -9 of a process inside an append: the table stays at its old version, recovery
/// removes what the dead writer left (and nothing else), and the next append lands.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_inside_an_append_leaves_the_old_version_and_recovery_settles_it() {
    use futures::StreamExt as _;
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let s = JammiSession::open(root).await.unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 50, DIMS)],
    )
    .await
    .unwrap();
    rs.append_table(
        "t",
        sample_schema(DIMS),
        futures::stream::iter(vec![Ok(sample_batch(50, 10, DIMS))]),
    )
    .await
    .unwrap();
    let user = dir.path().join("t.jammi/segments/mine.idx.lease.json");
    std::fs::write(&user, "a user's file").unwrap();
    let before = walk(dir.path());
    let mut writer = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "versions::appends_until_killed",
            "--ignored",
            "--quiet",
        ])
        .env(APPENDER_DIR, root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("the test binary runs");
    // Wait until the writer has a segment's Parquet file under way, then kill it.
    let segments = dir.path().join("t.jammi/segments");
    let started = std::time::Instant::now();
    loop {
        let writing = std::fs::read_dir(&segments)
            .unwrap()
            .filter_map(|e| e.ok())
            .any(|e| {
                e.file_name().to_string_lossy().ends_with(".idx.lease.json") && e.path() != user
            });
        if writing {
            break;
        }
        assert!(writer.try_wait().unwrap().is_none(), "the writer exited");
        assert!(started.elapsed().as_secs() < 60, "the writer never started");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    writer.kill().unwrap();
    writer.wait().unwrap();
    assert_ne!(
        walk(dir.path()),
        before,
        "the writer left nothing to settle"
    );
    let report = rs.recover().await.unwrap();
    assert!(!report.removed_objects.is_empty(), "{report:?}");
    assert_eq!(walk(dir.path()), before, "{report:?}");
    assert_eq!(std::fs::read_to_string(&user).unwrap(), "a user's file");
    let v = rs.latest_version("t").await.unwrap();
    assert_eq!((v.version, v.rows()), (1, 60));
    s.refresh_tables().await.unwrap();
    let ids = ints(
        &rows(&s, "SELECT id FROM jammi.public.t ORDER BY id").await,
        "id",
    );
    assert_eq!(ids, (0..60).collect::<Vec<i64>>());
    let v = rs
        .append_table(
            "t",
            sample_schema(DIMS),
            futures::stream::iter(vec![Ok(sample_batch(60, 5, DIMS))]).boxed(),
        )
        .await
        .unwrap();
    assert_eq!((v.version, v.rows()), (2, 65));
}

/// An append racing a delete: whichever commits first, the other rebases on it — the
/// appended rows all land and the deleted rows are gone, in two versions.
#[tokio::test(flavor = "multi_thread")]
async fn an_append_racing_a_delete_keeps_both() {
    for delete_first in [false, true] {
        let s = JammiSession::open(&memory_root("append-delete"))
            .await
            .unwrap();
        let rs = s.result_store();
        rs.write_batches(
            &spec("t"),
            sample_schema(DIMS),
            vec![sample_batch(0, 30, DIMS)],
        )
        .await
        .unwrap();
        s.refresh_tables().await.unwrap();
        // Both planned on version 0.
        let delete = s
            .sql("DELETE FROM jammi.public.t WHERE id % 3 = 0")
            .await
            .unwrap();
        let base = rs.latest_version("t").await.unwrap();
        let append = || {
            rs.append_table(
                "t",
                sample_schema(DIMS),
                futures::stream::iter(vec![Ok(sample_batch(100, 9, DIMS))]),
            )
        };
        if delete_first {
            count_of(&delete.collect().await.unwrap());
            append().await.unwrap();
        } else {
            append().await.unwrap();
            count_of(&delete.collect().await.unwrap());
        }
        let v = rs.latest_version("t").await.unwrap();
        assert_eq!(v.version, base.version + 2, "delete first: {delete_first}");
        let ids = ints(
            &rows(&s, "SELECT id FROM jammi.public.t ORDER BY id").await,
            "id",
        );
        // The delete saw version 0: the appended rows (ids 100..109) stay, even those % 3 = 0.
        let want: Vec<i64> = (0..30).filter(|i| i % 3 != 0).chain(100..109).collect();
        assert_eq!(ids, want, "delete first: {delete_first}");
    }
}

/// Every change a result table takes, on `root` (reached with `cloud`): an append, a
/// DELETE, an UPDATE, a MERGE, a compaction and a vacuum, each checked by its rows and a
/// search; a user's files named like jammi-db's stay byte-identical.
pub(crate) async fn every_change_on(root: &str, cloud: Option<jammi_db::storage::CloudConfig>) {
    let opts = jammi_db::session::OpenOptions {
        cloud: cloud.clone(),
        auto_compact: Some(false),
        ..Default::default()
    };
    let s = JammiSession::open_with(root, opts).await.unwrap();
    let rs = s.result_store();
    if rs.list_tables().await.unwrap().contains(&"t".to_string()) {
        s.delete_table("t").await.unwrap();
    }
    let store = rs.object_store().await.unwrap();
    let user = |p: &str| rs.root().join(p).unwrap().object_path().unwrap();
    let users = [
        "t.jammi/segments/9-0badcafe.parquet",
        "t.jammi/deletions/t-3-0badcafe.roaring",
        "t.jammi/versions/readme.json",
    ];
    {
        use object_store::ObjectStoreExt;
        for f in users {
            store
                .put(
                    &user(f),
                    object_store::PutPayload::from(format!("user {f}").into_bytes()),
                )
                .await
                .unwrap();
        }
    }
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 40, DIMS)],
    )
    .await
    .unwrap();
    s.refresh_tables().await.unwrap();
    let n = |sql: &str| {
        let s = &s;
        let sql = sql.to_string();
        async move { count_of(&rows(s, &sql).await) }
    };
    assert_eq!(n("INSERT INTO jammi.public.t SELECT id + 100, title, score, embedding FROM jammi.public.t WHERE id < 10").await, 10);
    assert_eq!(n("DELETE FROM jammi.public.t WHERE id % 4 = 0").await, 13);
    assert_eq!(
        n("UPDATE jammi.public.t SET score = 7 WHERE id = 5").await,
        1
    );
    s.context()
        .register_batch("upd", merge_rows(&[6, 300]))
        .unwrap();
    assert_eq!(n(UPSERT).await, 2);
    assert_eq!(count(&s, "t").await, 38);
    assert_eq!(nearest(&s, &sample_vector(1006, DIMS)).await, (6, true));
    assert_ne!(nearest(&s, &sample_vector(8, DIMS)).await.0, 8);
    let before = answers_small(&s).await;
    let r = s.compact("t", &Default::default()).await.unwrap();
    assert_eq!(r.segments_after, 1, "{r:?}");
    assert_eq!(answers_small(&s).await, before);
    let done = s
        .vacuum("t", std::time::Duration::ZERO, false)
        .await
        .unwrap();
    assert_eq!(done.versions_removed, vec![1, 2, 3, 4], "{done:?}");
    s.refresh_tables().await.unwrap();
    assert_eq!(answers_small(&s).await, before);
    {
        use object_store::ObjectStoreExt;
        for f in users {
            let got = store.get(&user(f)).await.unwrap().bytes().await.unwrap();
            assert_eq!(&got[..], format!("user {f}").as_bytes(), "{f}");
        }
    }
    s.delete_table("t").await.unwrap();
}

/// Rows and exact searches of `t` (a table of [`every_change_on`]).
async fn answers_small(s: &JammiSession) -> Vec<String> {
    let mut out = vec![format!(
        "{:?}",
        ints(
            &rows(s, "SELECT id FROM jammi.public.t ORDER BY id").await,
            "id"
        )
    )];
    for probe in [3i64, 1006, 107] {
        let q = vec_sql(&sample_vector(probe, DIMS));
        let sql = format!("SELECT id, _distance FROM vector_search('t', {q}, 5, 'exact=true')");
        out.push(format!("{:?}", hits(&rows(s, &sql).await)));
        let sql = format!("SELECT id FROM vector_search('t', {q}, 3)");
        out.push(format!("{:?}", ints(&rows(s, &sql).await, "id")));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_on_a_local_root() {
    let dir = tempdir();
    every_change_on(dir.path().to_str().unwrap(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_change_in_memory() {
    every_change_on(&memory_root("changes"), None).await;
}

/// Writes `t` (ids 0..600) and `more1`..`more4` (the next 100 ids each) under `s`'s root.
async fn table_and_inserts(s: &JammiSession) {
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 600, DIMS)],
    )
    .await
    .unwrap();
    for i in 1..=4i64 {
        let batch = sample_batch(500 + 100 * i, 100, DIMS);
        rs.write_batches(&spec(&format!("more{i}")), sample_schema(DIMS), vec![batch])
            .await
            .unwrap();
    }
    s.refresh_tables().await.unwrap();
}

/// Small writes merge as their size tier fills: the third small segment sets off a
/// compaction (its own version, after the append's), every answer stays that of the same
/// rows left as written, and `SET jammi.auto_compact` turns it off and on again.
#[tokio::test(flavor = "multi_thread")]
async fn small_writes_merge_as_their_tier_fills_and_every_answer_stays() {
    use jammi_db::store::versions::Operation;
    let (a, b) = (tempdir(), tempdir());
    let merged = JammiSession::open(a.path().to_str().unwrap())
        .await
        .unwrap();
    let unmerged = open_unmerged(b.path().to_str().unwrap()).await.unwrap();
    for s in [&merged, &unmerged] {
        table_and_inserts(s).await;
        for i in 1..=2 {
            rows(
                s,
                &format!("INSERT INTO jammi.public.t SELECT * FROM jammi.public.more{i}"),
            )
            .await;
        }
    }
    let ops = |s: &JammiSession| {
        let rs = s.result_store().clone();
        async move {
            let all = rs.versions("t").await.unwrap();
            let last = all.last().unwrap().segments.len();
            (
                all.into_iter().map(|v| v.operation).collect::<Vec<_>>(),
                last,
            )
        }
    };
    use Operation::{Append, Compact};
    assert_eq!(
        ops(&merged).await,
        (vec![Append, Append, Append, Compact], 1)
    );
    assert_eq!(ops(&unmerged).await, (vec![Append, Append, Append], 3));
    same_answers(&answers(&merged).await, &answers(&unmerged).await);

    // Off for this session: its segments stay as written.
    rows(&merged, "SET jammi.auto_compact = false").await;
    rows(
        &merged,
        "INSERT INTO jammi.public.t SELECT * FROM jammi.public.more3",
    )
    .await;
    rows(
        &merged,
        "INSERT INTO jammi.public.t SELECT * FROM jammi.public.more4",
    )
    .await;
    assert_eq!(
        merged
            .result_store()
            .latest_version("t")
            .await
            .unwrap()
            .segments
            .len(),
        3
    );
    // On again: the next write fills the tier (four tiny segments) and merges it.
    rows(&merged, "SET jammi.auto_compact = true").await;
    rows(&merged, "DELETE FROM jammi.public.t WHERE id % 10 = 0").await;
    let v = merged.result_store().latest_version("t").await.unwrap();
    assert_eq!((v.operation, v.segments.len()), (Operation::Delete, 3));
    rows(
        &merged,
        "UPDATE jammi.public.t SET score = score + 1 WHERE id = 7",
    )
    .await;
    let v = merged.result_store().latest_version("t").await.unwrap();
    assert_eq!((v.operation, v.segments.len(), v.rows()), (Compact, 1, 900));
    let n = rows(
        &merged,
        "SELECT count(*) AS n FROM jammi.public.t WHERE id % 10 = 0",
    )
    .await;
    assert_eq!(ints(&n, "n"), [0]);

    let e = rows_err(&merged, "SET jammi.auto_compact = 'maybe'").await;
    assert!(
        e.contains("jammi.auto_compact") && e.contains("'true' or 'false'"),
        "{e}"
    );
}

/// A MERGE planned before another writer's append commits must not land on top of it (the
/// rows added could hold its keys), also when that append's merge of small segments left
/// fewer segments than the MERGE saw.
#[tokio::test(flavor = "multi_thread")]
async fn a_merge_planned_before_an_append_and_its_merge_of_segments_is_refused() {
    use jammi_db::store::{Change, WriteSettings, versions::Operation};
    let s = open_unmerged(&memory_root("merge-after-merge"))
        .await
        .unwrap();
    let rs = s.result_store();
    rs.write_batches(
        &spec("t"),
        sample_schema(DIMS),
        vec![sample_batch(0, 10, DIMS)],
    )
    .await
    .unwrap();
    let one = |start| futures::stream::iter(vec![Ok(sample_batch(start, 10, DIMS))]);
    rs.append_table("t", sample_schema(DIMS), one(10))
        .await
        .unwrap();
    let planned = rs.latest_version("t").await.unwrap();
    // Another writer appends id 20..30; its merge leaves one segment where there were three.
    let on = WriteSettings {
        auto_compact: Some(true),
        ..Default::default()
    };
    let append = Change::new(Operation::Append, Vec::new()).with_settings(on);
    rs.commit_change("t", None, append, Some((sample_schema(DIMS), one(20))))
        .await
        .unwrap();
    let now = rs.latest_version("t").await.unwrap();
    assert_eq!((now.operation, now.segments.len()), (Operation::Compact, 1));
    // The MERGE inserts key 25 as new: planned on the old version, it must not commit.
    let merge = Change::new(Operation::Merge, Vec::new());
    let e = rs
        .commit_change(
            "t",
            Some(&planned),
            merge,
            Some((sample_schema(DIMS), one(25))),
        )
        .await
        .unwrap_err();
    assert!(matches!(e, JammiError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("rows were added meanwhile"), "{e}");
    s.refresh_tables().await.unwrap();
    let mut ids = ints(&rows(&s, "SELECT id FROM jammi.public.t").await, "id");
    ids.sort();
    assert_eq!(ids, (0..30).collect::<Vec<i64>>());
}
