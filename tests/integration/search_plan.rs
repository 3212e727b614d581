//! `vector_search` as a plan: nothing is searched at planning, EXPLAIN ANALYZE shows the
//! search's metrics, query vectors may be parameters or subqueries, batch searches equal
//! one-by-one searches, `ORDER BY <distance> LIMIT k` is answered by the index, each run
//! has its own statistics, and the plans survive a round trip through datafusion-proto.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, Float32Array, Float64Array, Int64Array, ListArray, RecordBatch, UInt32Array,
};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ScalarValue;
use datafusion::physical_plan::collect;
use datafusion::prelude::col;
use jammi_db::session::JammiSession;
use jammi_db::sql::SearchOptions;
use jammi_db::sql::codec::{JammiLogicalCodec, JammiPhysicalCodec};

use crate::common::{list, sample_vector, search_sql, session_with_table, tempdir, vec_sql};

const DIMS: i32 = 16;

fn column<'a, T: 'static>(b: &'a RecordBatch, name: &str) -> &'a T {
    b.column_by_name(name)
        .unwrap_or_else(|| panic!("no column {name}"))
        .as_any()
        .downcast_ref::<T>()
        .unwrap_or_else(|| panic!("column {name} has another type"))
}

/// (id, distance) of every row, in order.
fn hits(batches: &[RecordBatch], distance: &str) -> Vec<(i64, f64)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = column::<Int64Array>(b, "id");
        let d = b.column_by_name(distance).unwrap();
        for i in 0..b.num_rows() {
            let v = match d.as_any().downcast_ref::<Float32Array>() {
                Some(f) => f.value(i) as f64,
                None => column::<Float64Array>(b, distance).value(i),
            };
            out.push((ids.value(i), v));
        }
    }
    out
}

async fn rows(s: &JammiSession, sql: &str) -> Vec<RecordBatch> {
    s.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

async fn text(s: &JammiSession, sql: &str) -> String {
    pretty_format_batches(&rows(s, sql).await)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_shows_the_search_and_runs_none() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = vec_sql(&sample_vector(3, DIMS));
    let before = s.registry().request_counts();
    let plan = text(
        &s,
        &format!("EXPLAIN SELECT id FROM vector_search('{t}', {q}, 3, 'ef_search=40; filter=score > 0.5')"),
    )
    .await;
    let requests = s.registry().request_counts().since(&before);
    for part in [
        "VectorSearchExec",
        "k=3",
        "metric=cosine",
        "mode=index",
        "ef_search=40",
        "filter=score > Float64(0.5)",
        "projection=[id]",
    ] {
        assert!(plan.contains(part), "{part} missing from\n{plan}");
    }
    // Planning a named table reads no index, no Parquet, not even the manifest: it only
    // asks which version is the latest (one LIST).
    assert_eq!((requests.total(), requests.list), (1, 1), "{requests:?}");
    let c = s.search_context().index_cache().stats();
    assert_eq!((c.misses, c.entries), (0, 0), "{c:?}");

    // By URL, planning reads the manifest only (one GET; a HEAD per sibling verifies it).
    let url = s.result_store().parquet_url(&t).unwrap();
    let before = s.registry().request_counts();
    text(
        &s,
        &format!("EXPLAIN SELECT id FROM vector_search('{url}', {q}, 3)"),
    )
    .await;
    let requests = s.registry().request_counts().since(&before);
    assert_eq!(requests.get + requests.get_range, 1, "{requests:?}");
    assert_eq!(s.search_context().index_cache().stats().misses, 0);

    // An exact search says why in EXPLAIN.
    let plan = text(
        &s,
        &format!("EXPLAIN SELECT id FROM vector_search('{t}', {q}, 3, 'exact=true')"),
    )
    .await;
    assert!(plan.contains("mode=exact (exact=true)"), "{plan}");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_analyze_shows_the_searchs_metrics() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = vec_sql(&sample_vector(3, DIMS));
    let sql = format!("EXPLAIN ANALYZE SELECT id, title FROM vector_search('{t}', {q}, 4)");
    let cold = text(&s, &sql).await;
    for part in [
        "VectorSearchExec",
        "answered=index",
        "index_loaded=1",
        "queries=1",
        "rows_hydrated=4",
        "output_rows=4",
        "store_requests=",
        "search_time=",
        "hydrate_time=",
    ] {
        assert!(cold.contains(part), "{part} missing from\n{cold}");
    }
    let warm = text(&s, &sql).await;
    assert!(warm.contains("index_cached=1"), "{warm}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_vector_bound_as_a_parameter_searches_like_the_literal() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let v = sample_vector(77, DIMS);
    let literal = hits(
        &rows(
            &s,
            &format!(
                "SELECT id, _distance FROM vector_search('{t}', {}, 5)",
                vec_sql(&v)
            ),
        )
        .await,
        "_distance",
    );
    assert_eq!(literal[0].0, 77);
    // DataFrame parameters (what `sql_with_params` does in other DataFusion versions).
    let df = s
        .sql(&format!(
            "SELECT id, _distance FROM vector_search('{t}', $1, 5)"
        ))
        .await
        .unwrap()
        .with_param_values(vec![list(&v)])
        .unwrap();
    assert_eq!(hits(&df.collect().await.unwrap(), "_distance"), literal);
    // PREPARE / EXECUTE.
    s.sql(&format!(
        "PREPARE near(FLOAT[]) AS SELECT id, _distance FROM vector_search('{t}', $1, 5)"
    ))
    .await
    .unwrap();
    let executed = rows(&s, &format!("EXECUTE near({})", vec_sql(&v))).await;
    assert_eq!(hits(&executed, "_distance"), literal);
    // Bad values fail when the plan runs, naming the problem.
    for (value, expected) in [
        (
            list(&v[..3]),
            "the query has 3 dimensions but column 'embedding' has 16",
        ),
        (
            ScalarValue::List(Arc::new(ListArray::new_null(
                Arc::new(datafusion::arrow::datatypes::Field::new_list_field(
                    datafusion::arrow::datatypes::DataType::Float32,
                    true,
                )),
                1,
            ))),
            "the query vector is NULL",
        ),
        (list(&[f32::NAN; 16]), "NaN"),
    ] {
        let df = s
            .sql(&format!("SELECT id FROM vector_search('{t}', $1, 5)"))
            .await
            .unwrap()
            .with_param_values(vec![value])
            .unwrap();
        let err = df.collect().await.unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

/// The expressions the optimizer sees on the search node of `sql`'s logical plan.
async fn search_node_expressions(s: &JammiSession, sql: &str) -> Vec<datafusion::prelude::Expr> {
    use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
    use datafusion::logical_expr::LogicalPlan;
    let plan = s.context().state().create_logical_plan(sql).await.unwrap();
    let mut found = None;
    plan.apply(|p| {
        if let LogicalPlan::Extension(e) = p {
            found = Some(e.node.expressions());
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    })
    .unwrap();
    found.expect("a search node")
}

#[tokio::test(flavor = "multi_thread")]
async fn only_an_unresolved_query_vector_is_handed_to_the_optimizer() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 500).await;
    let v = sample_vector(7, DIMS);
    // A constant needs no rewriting; the simplifier would name it, printing every number.
    let literal = format!(
        "SELECT id, _distance FROM vector_search('{t}', {}, 3)",
        vec_sql(&v)
    );
    assert!(search_node_expressions(&s, &literal).await.is_empty());
    let json = format!("SELECT id FROM vector_search('{t}', '{}', 3)", vec_sql(&v));
    assert!(search_node_expressions(&s, &json).await.is_empty());
    // A placeholder must be bound and a subquery planned: both are shown.
    let param = format!("SELECT id, _distance FROM vector_search('{t}', $1, 3)");
    let shown = search_node_expressions(&s, &param).await;
    assert!(
        matches!(shown.as_slice(), [e] if e.to_string().contains("$1")),
        "{shown:?}"
    );
    let sub = format!(
        "SELECT id FROM vector_search('{t}', (SELECT embedding FROM jammi.public.\"{t}\" WHERE id = 7), 3)"
    );
    assert_eq!(search_node_expressions(&s, &sub).await.len(), 1);
    // The bound plan still answers like the literal.
    let bound = s
        .sql(&param)
        .await
        .unwrap()
        .with_param_values(vec![list(&v)])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let answer = hits(&rows(&s, &literal).await, "_distance");
    assert_eq!(answer[0].0, 7);
    assert_eq!(hits(&bound, "_distance"), answer);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stored_rows_vector_is_a_query() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let r = rows(
        &s,
        &format!(
            "SELECT id, _distance FROM vector_search('{t}', \
             (SELECT embedding FROM jammi.public.\"{t}\" WHERE id = 5), 3)"
        ),
    )
    .await;
    let h = hits(&r, "_distance");
    assert_eq!(h[0].0, 5, "{h:?}");
    assert!(h[0].1 < 1e-5, "{h:?}");
    let by_value = hits(
        &rows(
            &s,
            &format!(
                "SELECT id, _distance FROM vector_search('{t}', {}, 3)",
                vec_sql(&sample_vector(5, DIMS))
            ),
        )
        .await,
        "_distance",
    );
    assert_eq!(h, by_value);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_search_equals_its_queries_searched_one_by_one() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let n = 120;
    s.sql(&format!(
        "CREATE TABLE queries AS SELECT id AS qid, embedding AS qvec \
         FROM jammi.public.\"{t}\" WHERE id % 13 = 0 ORDER BY id LIMIT {n}"
    ))
    .await
    .unwrap();
    let (batches, stats) = s
        .collect_with_stats(
            s.sql(&format!(
                "SELECT * FROM vector_search_batch('{t}', (SELECT qid, qvec FROM queries), 4)"
            ))
            .await
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(stats[0].queries, n, "{stats:?}");
    assert_eq!(stats[0].mode, "index");
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(
        names,
        [
            "query_qid",
            "id",
            "title",
            "score",
            "embedding",
            "_distance",
            "_rank"
        ]
    );
    let mut by_query: HashMap<i64, Vec<(u32, i64, f32)>> = HashMap::new();
    for b in &batches {
        let (q, id) = (
            column::<Int64Array>(b, "query_qid"),
            column::<Int64Array>(b, "id"),
        );
        let (d, r) = (
            column::<Float32Array>(b, "_distance"),
            column::<UInt32Array>(b, "_rank"),
        );
        for i in 0..b.num_rows() {
            by_query
                .entry(q.value(i))
                .or_default()
                .push((r.value(i), id.value(i), d.value(i)));
        }
    }
    assert_eq!(by_query.len(), n);
    for (qid, mut got) in by_query {
        got.sort_by_key(|g| g.0);
        let one = rows(
            &s,
            &format!(
                "SELECT id, _distance FROM vector_search('{t}', \
                 (SELECT qvec FROM queries WHERE qid = {qid}), 4)"
            ),
        )
        .await;
        let one: Vec<(u32, i64, f32)> = hits(&one, "_distance")
            .into_iter()
            .enumerate()
            .map(|(i, (id, d))| (i as u32 + 1, id, d as f32))
            .collect();
        assert_eq!(got, one, "query {qid}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_batch_search_built_from_values_equals_the_sql_form() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let queries: Vec<Vec<f32>> = [5, 250, 999].map(|i| sample_vector(i, DIMS)).to_vec();
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>(
        queries.iter().map(|v| Some(v.iter().map(|x| Some(*x)))),
    );
    let batch = RecordBatch::try_from_iter([
        ("qid", Arc::new(Int64Array::from(vec![5, 250, 999])) as _),
        ("qvec", Arc::new(list) as _),
    ])
    .unwrap();
    s.context()
        .register_batch("queries", batch.clone())
        .unwrap();
    let options = SearchOptions {
        columns: Some(vec!["id".into()]),
        ..Default::default()
    };
    let df = s
        .search_batch(&t, s.context().read_batch(batch).unwrap(), 3, options)
        .await
        .unwrap();
    let sorted = df
        .sort_by(vec![col("query_qid"), col("_rank")])
        .unwrap()
        .collect()
        .await
        .unwrap();
    let by_sql = rows(
        &s,
        &format!(
            "SELECT query_qid, id, _distance, _rank FROM vector_search_batch('{t}', \
             (SELECT qid, qvec FROM queries), 3) ORDER BY query_qid, _rank"
        ),
    )
    .await;
    let by_api = pretty_format_batches(&sorted).unwrap().to_string();
    assert_eq!(by_api, pretty_format_batches(&by_sql).unwrap().to_string());
    // Each query vector is its own row's: its first hit.
    let all = datafusion::arrow::compute::concat_batches(&sorted[0].schema(), &sorted).unwrap();
    let (q, id) = (
        column::<Int64Array>(&all, "query_qid"),
        column::<Int64Array>(&all, "id"),
    );
    let firsts: Vec<(i64, i64)> = (0..q.len())
        .step_by(3)
        .map(|i| (q.value(i), id.value(i)))
        .collect();
    assert_eq!(firsts, [(5, 5), (250, 250), (999, 999)], "{by_api}");
}

#[tokio::test(flavor = "multi_thread")]
async fn order_by_distance_limit_is_answered_by_the_index() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let v = sample_vector(333, DIMS);
    let q = vec_sql(&v);
    let table = format!("jammi.public.\"{t}\"");
    let order_by =
        format!("SELECT id, cosine_distance(embedding, {q}) AS d FROM {table} ORDER BY d LIMIT 6");
    let plan = text(&s, &format!("EXPLAIN {order_by}")).await;
    assert!(plan.contains("VectorSearchExec"), "{plan}");
    let (got, stats) = s
        .collect_with_stats(s.sql(&order_by).await.unwrap())
        .await
        .unwrap();
    assert_eq!(stats.len(), 1, "the index answered");
    assert_eq!(stats[0].mode, "index");
    let searched = rows(
        &s,
        &format!("SELECT id, _distance FROM vector_search('{t}', {q}, 6)"),
    )
    .await;
    let (got, searched) = (hits(&got, "d"), hits(&searched, "_distance"));
    assert_eq!(got.len(), 6);
    // The index's rows, with the SQL function's own values (the index's up to f32).
    assert_same_rows_with_function_values(&s, &table, "cosine_distance", &q, &got, &searched).await;
    // The search returns its rows nearest first: no sort runs over them, and its k rows
    // are not spread over partitions to be merged again.
    assert!(!plan.contains("SortExec"), "{plan}");
    assert!(!plan.contains("RepartitionExec"), "{plan}");
    // No parameter is left outside the search, so a prepared plan is kept and bound.
    let prepared = s
        .prepare(&format!(
            "SELECT id, cosine_distance(embedding, $1) AS d FROM {table} ORDER BY d LIMIT 6"
        ))
        .await
        .unwrap();
    assert!(prepared.plans_once());
    let bound = prepared.collect(vec![list(&v)]).await.unwrap();
    let bound = hits(&bound, "d");
    let ids = |h: &[(i64, f64)]| h.iter().map(|x| x.0).collect::<Vec<_>>();
    assert_eq!(ids(&bound), ids(&got));
    // The parameter is FLOAT[] (f32), the literal f64: each is the function's own value.
    for ((_, b), (_, g)) in bound.iter().zip(&got) {
        assert!((b - g).abs() < 1e-6, "{bound:?} {got:?}");
    }
    // The ORDER BY key written out in full, with a WHERE (the pre-filter), and a parameter.
    let filtered = format!(
        "SELECT id FROM {table} WHERE score > 0.5 ORDER BY cosine_distance(embedding, $1) LIMIT 5"
    );
    let df = s
        .sql(&filtered)
        .await
        .unwrap()
        .with_param_values(vec![list(&v)])
        .unwrap();
    let (got, stats) = s.collect_with_stats(df).await.unwrap();
    assert_eq!(stats.len(), 1);
    let got: Vec<i64> = got
        .iter()
        .flat_map(|b| column::<Int64Array>(b, "id").values().to_vec())
        .collect();
    let expected: Vec<i64> = rows(
        &s,
        &format!("SELECT id FROM vector_search('{t}', {q}, 5, 'filter=score > 0.5')"),
    )
    .await
    .iter()
    .flat_map(|b| column::<Int64Array>(b, "id").values().to_vec())
    .collect();
    assert_eq!(got, expected);
    // Another metric than the index's, or no LIMIT: DataFusion's own plan.
    for other in [
        format!("SELECT id FROM {table} ORDER BY l2_distance(embedding, {q}) LIMIT 5"),
        format!("SELECT id FROM {table} ORDER BY cosine_distance(embedding, {q}) DESC LIMIT 5"),
        format!("SELECT id FROM {table} ORDER BY cosine_distance(embedding, embedding) LIMIT 5"),
    ] {
        let plan = text(&s, &format!("EXPLAIN {other}")).await;
        assert!(!plan.contains("VectorSearchExec"), "{other}\n{plan}");
        rows(&s, &other).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn order_by_l2_and_inner_product_return_their_functions_values_of_the_indexes_rows() {
    use jammi_db::index::Metric;
    use jammi_db::store::TableSpec;
    let dir = tempdir();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let v = sample_vector(77, DIMS);
    let q = vec_sql(&v);
    // (metric, the function, the ORDER BY form, its value from vector_search's `_distance`)
    type Case = (Metric, &'static str, &'static str, fn(f64) -> f64);
    let cases: [Case; 2] = [
        (
            Metric::L2,
            "l2_distance",
            "l2_distance(embedding, {q}) AS s ... ORDER BY s",
            |d| d,
        ),
        (
            Metric::Ip,
            "inner_product",
            "inner_product(embedding, {q}) AS s ... ORDER BY s DESC",
            |d| 1.0 - d,
        ),
    ];
    for (metric, function, form, value) in cases {
        let mut spec = TableSpec {
            source: "papers".into(),
            task: format!("{metric:?}").to_lowercase(),
            model: "m".into(),
            key_column: Some("id".into()),
            vector_column: Some("embedding".into()),
            ..Default::default()
        };
        spec.index.metric = metric;
        let batches = vec![crate::common::sample_batch(0, 500, DIMS)];
        let t = s
            .result_store()
            .write_batches(&spec, crate::common::sample_schema(DIMS), batches)
            .await
            .unwrap()
            .table;
        s.refresh_tables().await.unwrap();
        let (select, order) = form.split_once(" ... ").unwrap();
        let sql = format!(
            "SELECT id, {} FROM jammi.public.\"{t}\" {order} LIMIT 5",
            select.replace("{q}", &q)
        );
        let plan = text(&s, &format!("EXPLAIN {sql}")).await;
        assert!(plan.contains("VectorSearchExec"), "{metric:?}: {plan}");
        let got = hits(&rows(&s, &sql).await, "s");
        let searched: Vec<(i64, f64)> = hits(
            &rows(
                &s,
                &format!("SELECT id, _distance FROM vector_search('{t}', {q}, 5)"),
            )
            .await,
            "_distance",
        )
        .into_iter()
        .map(|(id, d)| (id, value(d)))
        .collect();
        let table = format!("jammi.public.\"{t}\"");
        assert_same_rows_with_function_values(&s, &table, function, &q, &got, &searched).await;
    }
}

/// `got` (an ORDER BY rewrite's answer) holds `searched`'s rows (the index's), in order,
/// each with exactly the value `function` gives it in a plain projection — and that value
/// is the index's distance up to f32 rounding.
async fn assert_same_rows_with_function_values(
    s: &JammiSession,
    table: &str,
    function: &str,
    q: &str,
    got: &[(i64, f64)],
    searched: &[(i64, f64)],
) {
    let ids: Vec<i64> = got.iter().map(|x| x.0).collect();
    assert_eq!(ids, searched.iter().map(|x| x.0).collect::<Vec<_>>());
    let list = ids
        .iter()
        .map(i64::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let plain: HashMap<i64, f64> = hits(
        &rows(
            s,
            &format!(
                "SELECT id, {function}(embedding, {q}) AS d FROM {table} WHERE id IN ({list})"
            ),
        )
        .await,
        "d",
    )
    .into_iter()
    .collect();
    for ((id, d), (_, index)) in got.iter().zip(searched) {
        assert_eq!(
            d.to_bits(),
            plain[id].to_bits(),
            "{id}: {d} vs {}",
            plain[id]
        );
        assert!((d - index).abs() < 1e-5, "{id}: {d} vs the index's {index}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn order_by_distance_on_a_table_without_an_index_scans_it() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 500).await;
    let url = s.result_store().parquet_url(&t).unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE plain STORED AS PARQUET LOCATION '{url}'"
    ))
    .await
    .unwrap();
    let q = vec_sql(&sample_vector(9, DIMS));
    let sql = format!("SELECT id FROM plain ORDER BY cosine_distance(embedding, {q}) LIMIT 3");
    let plan = text(&s, &format!("EXPLAIN {sql}")).await;
    assert!(!plan.contains("VectorSearchExec"), "{plan}");
    let got: Vec<i64> = rows(&s, &sql)
        .await
        .iter()
        .flat_map(|b| column::<Int64Array>(b, "id").values().to_vec())
        .collect();
    assert_eq!(got[0], 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_searches_keep_their_own_statistics() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let s = Arc::new(s);
    let run = |k: usize, exact: bool| {
        let (s, t) = (s.clone(), t.clone());
        async move {
            let opts = if exact { ", 'exact=true'" } else { "" };
            let sql = format!(
                "SELECT id FROM vector_search('{t}', {}, {k}{opts})",
                vec_sql(&sample_vector(k as i64, DIMS))
            );
            search_sql(&s, &sql).await.1
        }
    };
    let mut tasks = Vec::new();
    for i in 0..8 {
        tasks.push(tokio::spawn(run(2 + i, i % 2 == 1)));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let st = t.await.unwrap();
        assert_eq!(st.rows, 2 + i, "{st:?}");
        let mode = if i % 2 == 1 { "exact" } else { "index" };
        assert_eq!(st.mode, mode, "{st:?}");
    }
}

/// The plans of these statements go to bytes and back, logical and physical, and the
/// decoded plans give the same rows.
#[tokio::test(flavor = "multi_thread")]
async fn plans_round_trip_through_datafusion_proto() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    // The query relation is a Parquet table (memory tables have no serialised form).
    let queries = dir.path().join("queries.parquet");
    s.sql(&format!(
        "COPY (SELECT id AS qid, embedding AS qvec FROM jammi.public.\"{t}\" WHERE id < 5) \
         TO '{}' STORED AS PARQUET",
        queries.display()
    ))
    .await
    .unwrap()
    .collect()
    .await
    .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE queries STORED AS PARQUET LOCATION '{}'",
        queries.display()
    ))
    .await
    .unwrap();
    let q = vec_sql(&sample_vector(11, DIMS));
    let table = format!("jammi.public.\"{t}\"");
    let statements = [
        format!("SELECT * FROM vector_search('{t}', {q}, 3) ORDER BY _distance"),
        format!(
            "SELECT id, _distance FROM vector_search('{t}', '{q}', 3, 'filter=score > 0.2; ef_search=50')"
        ),
        format!("SELECT id FROM vector_search('{t}', {q}, 3, 'exact=true')"),
        format!(
            "SELECT query_qid, id, _rank FROM vector_search_batch('{t}', (SELECT qid, qvec FROM queries), 2) ORDER BY query_qid, _rank"
        ),
        format!(
            "SELECT id FROM {table} WHERE score < 0.8 ORDER BY cosine_distance(embedding, {q}) LIMIT 4"
        ),
    ];
    assert_round_trips(&s, &statements).await;
}

/// A table of two segments, one with deleted rows: the merge of the per-segment searches
/// and the scan's live rows travel with the physical plan, so a decoded plan never
/// returns a deleted row.
#[tokio::test(flavor = "multi_thread")]
async fn a_segmented_table_with_deleted_rows_round_trips_through_datafusion_proto() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let table = format!("jammi.public.\"{t}\"");
    for sql in [
        format!(
            "INSERT INTO {table} SELECT id + 1000, title, score, embedding FROM {table} WHERE id < 50"
        ),
        format!("DELETE FROM {table} WHERE id % 7 = 0"),
    ] {
        s.sql(&sql).await.unwrap().collect().await.unwrap();
    }
    let q = vec_sql(&sample_vector(14, DIMS));
    let statements = [
        format!("SELECT count(*), sum(id) FROM {table}"),
        format!("SELECT id, title FROM {table} WHERE score < 0.5 ORDER BY id LIMIT 30"),
        format!("SELECT id, _distance FROM vector_search('{t}', {q}, 5)"),
        format!("SELECT id FROM {table} ORDER BY cosine_distance(embedding, {q}) LIMIT 4"),
    ];
    let count = rows(&s, &statements[0]).await;
    let live = (0..1000).chain(1000..1050).filter(|i| i % 7 != 0).count();
    assert!(
        text(&s, &statements[0])
            .await
            .contains(&format!("| {live} ")),
        "{count:?}"
    );
    assert_round_trips(&s, &statements).await;
}

/// Each statement's plans go to bytes and back, logical and physical, and the decoded
/// plans give the rows the statement gives.
async fn assert_round_trips(s: &jammi_db::session::JammiSession, statements: &[String]) {
    use datafusion_proto::bytes::{
        logical_plan_from_bytes_with_extension_codec, logical_plan_to_bytes_with_extension_codec,
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    let logical = JammiLogicalCodec;
    let physical = JammiPhysicalCodec::new(s.search_context().clone());
    let ctx = s.context();
    for sql in statements {
        let expected = text(s, sql).await;
        let df = s.sql(sql).await.unwrap();
        // Logical: the unoptimized plan (tables as jammi tables), decoded and run.
        let bytes = logical_plan_to_bytes_with_extension_codec(df.logical_plan(), &logical)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let decoded =
            logical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &logical)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got = ctx
            .execute_logical_plan(decoded)
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(
            pretty_format_batches(&got).unwrap().to_string(),
            expected,
            "{sql}"
        );
        // Physical: the executable plan, decoded and run.
        let plan = df.create_physical_plan().await.unwrap();
        let bytes = physical_plan_to_bytes_with_extension_codec(plan, &physical)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let decoded =
            physical_plan_from_bytes_with_extension_codec(&bytes, &ctx.task_ctx(), &physical)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let got = collect(decoded, ctx.task_ctx()).await.unwrap();
        assert_eq!(
            pretty_format_batches(&got).unwrap().to_string(),
            expected,
            "{sql}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn order_by_distance_with_a_limit_above_the_search_cap_is_datafusions_answer() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 1000).await;
    let q = vec_sql(&sample_vector(333, DIMS));
    let base = format!(
        "SELECT id, cosine_distance(embedding, {q}) AS d FROM jammi.public.\"{t}\" ORDER BY d"
    );
    let by_key = |mut h: Vec<(i64, f64)>| {
        h.sort_by(|a, b| a.1.total_cmp(&b.1).then(a.0.cmp(&b.0)));
        h
    };
    let expected = by_key(hits(&rows(&s, &base).await, "d"));
    assert_eq!(expected.len(), 1000);
    for limit in ["9223372036854775807", "4294967296"] {
        let sql = format!("{base} LIMIT {limit}");
        let plan = text(&s, &format!("EXPLAIN {sql}")).await;
        assert!(!plan.contains("VectorSearchExec"), "{plan}");
        assert_eq!(by_key(hits(&rows(&s, &sql).await, "d")), expected, "{sql}");
    }
    // A LIMIT with an OFFSET whose sum overflows: DataFusion's answer too.
    let sql = format!("{base} LIMIT 5 OFFSET 9223372036854775807");
    assert!(rows(&s, &sql).await.iter().all(|b| b.num_rows() == 0));
}

/// (id, distance or NULL) of every row, in order.
fn nullable_hits(batches: &[RecordBatch], distance: &str) -> Vec<(i64, Option<f64>)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = column::<Int64Array>(b, "id");
        let d = column::<Float64Array>(b, distance);
        for i in 0..b.num_rows() {
            out.push((ids.value(i), d.is_valid(i).then(|| d.value(i))));
        }
    }
    out
}

/// A result table of `n` rows whose rows in `null_rows` have a NULL vector.
async fn table_with_null_vectors(
    dir: &tempfile::TempDir,
    n: usize,
    null_rows: impl Fn(usize) -> bool,
) -> (JammiSession, String) {
    use datafusion::arrow::array::FixedSizeListArray;
    use datafusion::arrow::buffer::NullBuffer;
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let b = crate::common::sample_batch(0, n, DIMS);
    let emb = b
        .column_by_name("embedding")
        .unwrap()
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap()
        .clone();
    let (field, size, values, _) = emb.into_parts();
    let valid = NullBuffer::from((0..n).map(|i| !null_rows(i)).collect::<Vec<_>>());
    let emb = FixedSizeListArray::new(field, size, values, Some(valid));
    let mut cols = b.columns().to_vec();
    cols[3] = Arc::new(emb);
    let batch = RecordBatch::try_new(b.schema(), cols).unwrap();
    let spec = jammi_db::store::TableSpec {
        source: "papers".into(),
        task: "emb".into(),
        model: "m".into(),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    };
    let m = s
        .result_store()
        .write_batches(&spec, b.schema(), vec![batch])
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    (s, m.table)
}

#[tokio::test(flavor = "multi_thread")]
async fn order_by_distance_keeps_the_rows_whose_vector_is_null() {
    let q = vec_sql(&sample_vector(20, DIMS));
    for (what, nulls) in [
        ("7 of 50 NULL", (|i| i % 7 == 3) as fn(usize) -> bool),
        ("all NULL", |_| true),
    ] {
        let dir = tempdir();
        let (s, t) = table_with_null_vectors(&dir, 50, nulls).await;
        let base =
            format!("SELECT id, cosine_distance(embedding, {q}) AS d FROM jammi.public.\"{t}\"");
        for (filter, limit) in [("", 50), ("", 3), (" WHERE id % 2 = 0", 30)] {
            let sql = format!("{base}{filter} ORDER BY d LIMIT {limit}");
            // DataFusion's own answer: the whole sort, cut in Rust.
            let all = nullable_hits(
                &rows(&s, &format!("{base}{filter} ORDER BY d, id")).await,
                "d",
            );
            let got = nullable_hits(&rows(&s, &sql).await, "d");
            assert_eq!(got.len(), limit.min(all.len()), "{what}: {sql}");
            // NULL distances last, as DataFusion sorts them ascending.
            let key =
                |h: &(i64, Option<f64>)| (h.1.is_none(), h.1.map_or(0, |d| (d * 1e9) as i64), h.0);
            let mut sorted = got.clone();
            sorted.sort_by_key(key);
            assert_eq!(sorted, all[..got.len()], "{what}: {sql}");
        }
    }
}

/// A result table of `n` rows whose vectors are `vector(row)` (`None`: NULL), indexed
/// under `metric` — or, holding NaN or infinity (which no index takes), not indexed.
async fn table_of(
    s: &JammiSession,
    n: usize,
    metric: jammi_db::index::Metric,
    vector: &dyn Fn(usize) -> Option<Vec<f32>>,
) -> String {
    use datafusion::arrow::array::FixedSizeListArray;
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::arrow::datatypes::{DataType, Field};
    let b = crate::common::sample_batch(0, n, DIMS);
    let rows: Vec<Option<Vec<f32>>> = (0..n).map(vector).collect();
    let finite = rows.iter().flatten().flatten().all(|x| x.is_finite());
    let values: Vec<f32> = rows
        .iter()
        .flat_map(|r| r.clone().unwrap_or_else(|| vec![0.0; DIMS as usize]))
        .collect();
    let valid = NullBuffer::from(rows.iter().map(Option::is_some).collect::<Vec<_>>());
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        DIMS,
        Arc::new(Float32Array::from(values)),
        Some(valid),
    );
    let mut cols = b.columns().to_vec();
    cols[3] = Arc::new(emb);
    let batch = RecordBatch::try_new(b.schema(), cols).unwrap();
    let spec = jammi_db::store::TableSpec {
        source: "edge".into(),
        task: "emb".into(),
        model: format!("{metric:?}"),
        key_column: Some("id".into()),
        vector_column: finite.then(|| "embedding".into()),
        index: jammi_db::index::IndexParams {
            metric,
            ..Default::default()
        },
        ..Default::default()
    };
    let m = s
        .result_store()
        .write_batches(&spec, b.schema(), vec![batch])
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    m.table
}

/// (id, distance bits or NULL) of every row, in order.
fn exact_hits(batches: &[RecordBatch]) -> Vec<(i64, Option<u64>)> {
    nullable_hits(batches, "d")
        .into_iter()
        .map(|(id, d)| (id, d.map(f64::to_bits)))
        .collect()
}

/// `got` is `expected` up to the order of rows whose distances tie: the same distances
/// (bit for bit, NULLs included) in the same order, and the same rows at every distance
/// but the first and last (rows tied there may have been cut off by OFFSET or LIMIT).
fn same_answer(got: &[(i64, Option<u64>)], expected: &[(i64, Option<u64>)], what: &str) {
    let d = |h: &[(i64, Option<u64>)]| h.iter().map(|x| x.1).collect::<Vec<_>>();
    assert_eq!(d(got), d(expected), "{what}: distances");
    let edges = [expected.first().map(|x| x.1), expected.last().map(|x| x.1)];
    let ids = |h: &[(i64, Option<u64>)]| {
        let mut v: Vec<(Option<u64>, i64)> = h
            .iter()
            .filter(|x| !edges.contains(&Some(x.1)))
            .map(|x| (x.1, x.0))
            .collect();
        v.sort();
        v
    };
    assert_eq!(ids(got), ids(expected), "{what}: rows");
}

/// The drop-in guarantee of the `ORDER BY <distance> LIMIT k` rewrite: for tables with
/// NULL, zero, NaN and ±infinite vectors, under each metric, every form the rewrite takes
/// (LIMIT, LIMIT with OFFSET, WHERE, an alias or the call itself, DESC for inner
/// products) returns exactly — rows, order and values — what the same SQL returns with
/// the rewrite off. On the finite tables the rewrite must actually have run.
#[tokio::test(flavor = "multi_thread")]
async fn order_by_rewrite_answers_exactly_what_datafusions_own_plan_answers() {
    use jammi_db::index::Metric;
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let s = JammiSession::open(root).await.unwrap();
    let v = |i: usize| sample_vector(i as i64, DIMS);
    type Vectors = Box<dyn Fn(usize) -> Option<Vec<f32>>>;
    let kinds: Vec<(&str, Vectors)> = vec![
        ("finite", Box::new(move |i| Some(v(i)))),
        ("7 NULL", Box::new(move |i| (i % 7 != 3).then(|| v(i)))),
        (
            "zero vectors",
            Box::new(move |i| {
                Some(if i % 11 == 4 {
                    vec![0.0; DIMS as usize]
                } else {
                    v(i)
                })
            }),
        ),
        (
            "NaN",
            Box::new(move |i| {
                let mut x = v(i);
                if i % 9 == 2 {
                    x[1] = f32::NAN;
                }
                Some(x)
            }),
        ),
        (
            "infinite",
            Box::new(move |i| {
                let mut x = v(i);
                match i % 13 {
                    1 => x[0] = f32::INFINITY,
                    6 => x[2] = f32::NEG_INFINITY,
                    _ => {}
                }
                Some(x)
            }),
        ),
    ];
    let mut tables = Vec::new();
    for metric in [Metric::Cosine, Metric::L2, Metric::Ip] {
        for (kind, vectors) in &kinds {
            tables.push((
                metric,
                *kind,
                table_of(&s, 60, metric, vectors.as_ref()).await,
            ));
        }
    }
    let plain = JammiSession::open(root).await.unwrap();
    assert!(
        plain
            .context()
            .remove_optimizer_rule("jammi_order_by_distance")
    );
    let mut rewritten = 0;
    for (metric, kind, t) in &tables {
        let (f, dir) = match metric {
            Metric::Cosine => ("cosine_distance", ""),
            Metric::L2 => ("l2_distance", ""),
            Metric::Ip => ("inner_product", " DESC"),
        };
        for q in [
            vec_sql(&sample_vector(20, DIMS)),
            vec_sql(&[0.0; DIMS as usize]),
        ] {
            let call = format!("{f}(embedding, {q})");
            let from = format!("jammi.public.\"{t}\"");
            let forms = [
                format!("SELECT id, {call} AS d FROM {from} ORDER BY d{dir} LIMIT 5"),
                format!("SELECT id, {call} AS d FROM {from} ORDER BY d{dir} LIMIT 60"),
                format!("SELECT id, {call} AS d FROM {from} ORDER BY d{dir} LIMIT 4 OFFSET 3"),
                format!(
                    "SELECT id, {call} AS d FROM {from} WHERE id % 3 <> 0 ORDER BY d{dir} LIMIT 10"
                ),
                format!("SELECT id, title, {call} AS d FROM {from} ORDER BY {call}{dir} LIMIT 7"),
            ];
            for sql in forms {
                let what = format!("{kind} {metric:?}: {sql}");
                let plan = text(&s, &format!("EXPLAIN {sql}")).await;
                let used = plan.contains("VectorSearchExec");
                if *kind == "finite" {
                    assert!(used, "{what}: not rewritten\n{plan}");
                }
                rewritten += used as usize;
                let got = exact_hits(&rows(&s, &sql).await);
                let expected = exact_hits(&rows(&plain, &sql).await);
                assert!(!expected.is_empty(), "{what}");
                same_answer(&got, &expected, &what);
            }
        }
    }
    assert!(rewritten >= 30, "{rewritten} forms were rewritten");
}
