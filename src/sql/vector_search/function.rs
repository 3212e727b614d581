//! The SQL distance functions' own values, for `ORDER BY <distance> LIMIT k` answered by
//! the index.
//!
//! The index ranks in `f32` by its own kernels; the query it replaced ranks by DataFusion's
//! `cosine_distance`, `array_distance` (`l2_distance`) or `inner_product`, in `f64`. So the
//! rows the index found are scored again by DataFusion's function itself — the stored
//! vectors and the query as the plan would have cast them — and ordered as DataFusion's
//! sort orders them. A function value the index cannot rank (NULL: a zero vector under
//! cosine) sends the query to [`scan`], DataFusion's answer over the whole table.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;
use datafusion::common::config::ConfigOptions;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use futures::StreamExt;
use object_store::ObjectStore;

use crate::error::Result;
use crate::index::Metric;
use crate::sql::vector_search::resolve::SearchSpec;
use crate::store::read;

/// DataFusion's function for `metric` (`l2_distance` is `array_distance` by another name).
fn udf(metric: Metric) -> Arc<ScalarUDF> {
    use datafusion::functions_nested::{cosine_distance, distance, inner_product};
    match metric {
        Metric::Cosine => cosine_distance::cosine_distance_udf(),
        Metric::L2 => distance::array_distance_udf(),
        Metric::Ip => inner_product::inner_product_udf(),
    }
}

/// The function's value for each row of `vectors` (the table's column) against `query`
/// (the query as the statement gave it), both coerced as the planner coerces them.
pub(crate) fn values(
    metric: Metric,
    vectors: &ArrayRef,
    query: &ScalarValue,
) -> Result<Float64Array> {
    let f = udf(metric);
    let types = f.coerce_types(&[vectors.data_type().clone(), query.data_type()])?;
    let v = cast(vectors, &types[0])?;
    let q = query.cast_to(&types[1])?;
    let rows = v.len();
    let out = f.invoke_with_args(ScalarFunctionArgs {
        arg_fields: vec![
            Arc::new(Field::new("v", types[0].clone(), true)),
            Arc::new(Field::new("q", types[1].clone(), true)),
        ],
        args: vec![ColumnarValue::Array(v), ColumnarValue::Scalar(q)],
        number_rows: rows,
        return_field: Arc::new(Field::new(f.name(), DataType::Float64, true)),
        config_options: Arc::new(ConfigOptions::default()),
    })?;
    let out = out.into_array(rows)?;
    Ok(out
        .as_any()
        .downcast_ref::<Float64Array>()
        .expect("distance functions return Float64")
        .clone())
}

/// How DataFusion's sort orders two values of the nearest-first key: ascending with NULLs
/// last, or — inner products, `DESC` — descending with NULLs first (its defaults).
pub(crate) fn nearest_first(metric: Metric) -> impl Fn(&Option<f64>, &Option<f64>) -> Ordering {
    move |a, b| match (metric, a, b) {
        (_, None, None) => Ordering::Equal,
        (Metric::Ip, None, _) => Ordering::Less,
        (Metric::Ip, _, None) => Ordering::Greater,
        (_, None, _) => Ordering::Greater,
        (_, _, None) => Ordering::Less,
        (Metric::Ip, Some(a), Some(b)) => b.total_cmp(a),
        (_, Some(a), Some(b)) => a.total_cmp(b),
    }
}

/// DataFusion's answer over the whole file: every row's value (rows `allowed`, when a
/// pre-filter ran), the `k` first in its order, as (row position, value).
pub(crate) async fn scan(
    spec: &SearchSpec,
    store: &Arc<dyn ObjectStore>,
    meta: &ArrowReaderMetadata,
    query: &ScalarValue,
    allowed: Option<&[bool]>,
) -> Result<Vec<(u64, Option<f64>)>> {
    let url = &spec.target.parquet;
    let field = spec.target.schema.field(spec.vector_idx);
    let at = read::file_columns(url, meta, &spec.target.schema, &[spec.vector_idx])?;
    let mut stream = read::scan_columns(store, url, meta, &at).await?;
    let mut scored = Vec::new();
    let mut row = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let column = read::table_column(&batch, field)?;
        let v = values(spec.metric, &column, query)?;
        for i in 0..v.len() {
            let r = row + i as u64;
            if allowed.is_none_or(|a| a[r as usize]) {
                scored.push((r, v.is_valid(i).then(|| v.value(i))));
            }
        }
        row += batch.num_rows() as u64;
    }
    let order = nearest_first(spec.metric);
    scored.sort_by(|a, b| order(&a.1, &b.1).then(a.0.cmp(&b.0)));
    scored.truncate(spec.k);
    Ok(scored)
}
