//! Prepared queries: planned once, run with new parameter values, each run answering what
//! `sql_with_params` with the same values answers, with its own metrics.

use std::sync::Arc;

use datafusion::arrow::array::{Array, Float32Array, Int64Array, RecordBatch};
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::physical_plan::displayable;
use jammi_db::JammiError;
use jammi_db::session::JammiSession;
use jammi_db::sql::{SearchOptions, SearchStats};

use crate::common::{list, sample_vector, session_with_table, tempdir};

const DIMS: i32 = 16;

/// (id, distance) of every row, in order.
fn hits(batches: &[RecordBatch]) -> Vec<(i64, f32)> {
    let mut out = Vec::new();
    for b in batches {
        let ids = b.column_by_name("id").unwrap();
        let ids = ids.as_any().downcast_ref::<Int64Array>().unwrap();
        let d = b.column_by_name("_distance").unwrap();
        let d = d.as_any().downcast_ref::<Float32Array>().unwrap();
        out.extend((0..b.num_rows()).map(|i| (ids.value(i), d.value(i))));
    }
    out
}

/// What DataFusion's own binding gives for `sql` with `params`.
async fn with_params(s: &JammiSession, sql: &str, params: Vec<ScalarValue>) -> Vec<RecordBatch> {
    s.sql(sql)
        .await
        .unwrap()
        .with_param_values(params)
        .unwrap()
        .collect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_search_plans_once_and_answers_as_sql_with_params() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    s.sql("CREATE TABLE mine AS SELECT 1 AS x")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let sql = format!("SELECT id, _distance FROM vector_search('{t}', $1, 5)");
    let prepared = s.prepare(&sql).await.unwrap();
    assert!(prepared.plans_once());
    // Preparing leaves the session as it was: its tables, its settings.
    s.sql("SELECT x FROM mine").await.unwrap();
    let state = s.context().state();
    assert!(
        state
            .config()
            .options()
            .optimizer
            .enable_dynamic_filter_pushdown
    );
    for i in [3, 250, 1999, 777] {
        let v = sample_vector(i, DIMS);
        let got = hits(&prepared.collect(vec![list(&v)]).await.unwrap());
        assert_eq!(got[0].0, i, "{got:?}");
        assert_eq!(got, hits(&with_params(&s, &sql, vec![list(&v)]).await));
    }
    // The search API prepared: the vector is `$1`.
    let search = s
        .prepare_search(&t, 5, SearchOptions::default())
        .await
        .unwrap();
    assert!(search.plans_once());
    let v = sample_vector(42, DIMS);
    let direct = s.search(&t, &v, 5, SearchOptions::default()).await.unwrap();
    assert_eq!(
        hits(&search.collect(vec![list(&v)]).await.unwrap()),
        hits(&direct.collect().await.unwrap())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prepared_query_with_other_parameters_plans_each_run() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let sql = format!(
        "SELECT id, _distance FROM vector_search('{t}', $1, 20) WHERE id % $2 = 0 ORDER BY _distance"
    );
    let prepared = s.prepare(&sql).await.unwrap();
    assert!(!prepared.plans_once());
    for (i, m) in [(10, 2i64), (11, 3), (500, 5)] {
        let params = vec![list(&sample_vector(i, DIMS)), ScalarValue::Int64(Some(m))];
        let got = hits(&prepared.collect(params.clone()).await.unwrap());
        assert!(
            !got.is_empty() && got.iter().all(|(id, _)| id % m == 0),
            "{got:?}"
        );
        assert_eq!(got, hits(&with_params(&s, &sql, params).await));
    }
    // Named parameters bind too.
    let named = s
        .prepare(&format!(
            "SELECT id, _distance FROM vector_search('{t}', $q, 3)"
        ))
        .await
        .unwrap();
    let v = sample_vector(9, DIMS);
    let params = ParamValues::Map([("q".to_string(), list(&v).into())].into());
    assert_eq!(hits(&named.collect(params).await.unwrap())[0].0, 9);
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_of_a_prepared_query_have_their_own_metrics() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let prepared = Arc::new(
        s.prepare(&format!(
            "SELECT id, _distance FROM vector_search('{t}', $1, 4, 'filter=id < 1000')"
        ))
        .await
        .unwrap(),
    );
    let mut runs = Vec::new();
    for i in 0..8 {
        let p = prepared.clone();
        runs.push(tokio::spawn(async move {
            let v = sample_vector(i * 300, DIMS);
            let (plan, task) = p.bind(vec![list(&v)]).await.unwrap();
            let rows = datafusion::physical_plan::collect(plan.clone(), task)
                .await
                .unwrap();
            (hits(&rows), SearchStats::of(&plan))
        }));
    }
    for r in runs {
        let (rows, stats) = r.await.unwrap();
        assert_eq!(rows.len(), 4);
        assert!(rows.iter().all(|(id, _)| *id < 1000), "{rows:?}");
        assert_eq!(stats.len(), 1);
        assert_eq!((stats[0].queries, stats[0].rows), (1, 4), "{stats:?}");
    }
    // The plan the runs bind stays unrun.
    let template = prepared.plan().unwrap();
    assert_eq!(SearchStats::of(&template)[0].queries, 0);
    let shown = displayable(template.as_ref()).indent(true).to_string();
    assert!(shown.contains("query=$1"), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_parameters_of_a_prepared_search_fail_naming_the_problem() {
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let prepared = s
        .prepare(&format!("SELECT id FROM vector_search('{t}', $1, 5)"))
        .await
        .unwrap();
    let v = sample_vector(1, DIMS);
    for (params, expected) in [
        (vec![], "$1"),
        (
            vec![list(&v[..3])],
            "the query has 3 dimensions but column 'embedding' has 16",
        ),
        (vec![ScalarValue::Int64(Some(3))], "query"),
    ] {
        let err = match prepared.collect(params).await {
            Ok(_) => panic!("{expected}: no error"),
            Err(e) => e.to_string(),
        };
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_statement_that_changes_anything_is_not_prepared() {
    let dir = tempdir();
    let (s, _) = session_with_table(&dir, 2000).await;
    for sql in [
        "CREATE TABLE made AS SELECT 1 AS x",
        "CREATE VIEW made AS SELECT 1 AS x",
    ] {
        match s.prepare(sql).await {
            Err(e @ JammiError::NotAQuery { .. }) => {
                assert!(e.to_string().contains("only a query"), "{e}")
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    let err = s.sql("SELECT * FROM made").await.unwrap_err().to_string();
    assert!(err.contains("made"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unbound_prepared_plan_round_trips_through_datafusion_proto() {
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion_proto::bytes::{
        physical_plan_from_bytes_with_extension_codec, physical_plan_to_bytes_with_extension_codec,
    };
    use jammi_db::sql::codec::JammiPhysicalCodec;
    use jammi_db::sql::vector_search::VectorSearchExec;
    let dir = tempdir();
    let (s, t) = session_with_table(&dir, 2000).await;
    let prepared = s
        .prepare(&format!(
            "SELECT id, _distance FROM vector_search('{t}', $1, 5)"
        ))
        .await
        .unwrap();
    let codec = JammiPhysicalCodec::new(s.search_context().clone());
    let task = s.context().task_ctx();
    let bytes =
        physical_plan_to_bytes_with_extension_codec(prepared.plan().unwrap(), &codec).unwrap();
    let decoded = physical_plan_from_bytes_with_extension_codec(&bytes, &task, &codec).unwrap();
    let shown = displayable(decoded.as_ref()).indent(true).to_string();
    assert!(shown.contains("query=$1"), "{shown}");
    // Bound after decoding, it answers as the prepared query does.
    let v = sample_vector(321, DIMS);
    let params = ParamValues::List(vec![list(&v).into()]);
    let bound = decoded
        .transform_up(|p| match p.downcast_ref::<VectorSearchExec>() {
            Some(e) => Ok(Transformed::yes(e.bind(&params)?)),
            None => Ok(Transformed::no(p)),
        })
        .unwrap()
        .data;
    let got = datafusion::physical_plan::collect(bound, task)
        .await
        .unwrap();
    assert_eq!(
        hits(&got),
        hits(&prepared.collect(vec![list(&v)]).await.unwrap())
    );
}
