#![allow(dead_code)] // each benchmark uses a part of it

//! What the MiniLM benchmarks share: the real corpus of `../shared/data/debian-minilm/`
//! (60,015 × 384, unit length), its rows as batches, brute-force ground truth, and a warm
//! prepared search's p50 and recall@K.

use std::sync::Arc;
use std::time::{Duration, Instant};

use datafusion::arrow::array::{Array, ArrayRef, FixedSizeListArray, Float32Array, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ScalarValue;
use jammi_db::session::JammiSession;
use jammi_db::store::TableSpec;

/// Dimensions of the corpus.
pub const DIMS: usize = 384;
/// Held-out queries (the corpus's last rows).
pub const QUERIES: usize = 200;
/// Neighbours per query.
pub const K: usize = 10;

pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(
                Arc::new(Field::new("item", DataType::Float32, true)),
                DIMS as i32,
            ),
            false,
        ),
    ]))
}

/// Every corpus vector, flat, in id order.
pub fn corpus() -> Vec<f32> {
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/debian-minilm/corpus.parquet"
    );
    let file = std::fs::File::open(path).expect("the shared MiniLM corpus");
    let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let mask = ProjectionMask::columns(b.parquet_schema(), ["embedding"]);
    let mut out = Vec::new();
    for batch in b.with_projection(mask).build().unwrap() {
        let batch = batch.unwrap();
        let list = batch
            .column(0)
            .as_any()
            .downcast_ref::<FixedSizeListArray>()
            .unwrap();
        let values = list
            .values()
            .as_any()
            .downcast_ref::<Float32Array>()
            .unwrap();
        out.extend_from_slice(values.values());
    }
    out
}

/// How many rows of `vectors` are indexed, and the held-out queries (the last
/// [`QUERIES`] rows).
pub fn held_out(vectors: &[f32]) -> (usize, Vec<Vec<f32>>) {
    let total = vectors.len() / DIMS;
    let indexed = total - QUERIES;
    let queries = (indexed..total)
        .map(|r| vectors[r * DIMS..(r + 1) * DIMS].to_vec())
        .collect();
    (indexed, queries)
}

/// Rows `from..to` of `vectors` as a batch, ids offset by `id_base`.
pub fn rows(vectors: &[f32], from: usize, to: usize, id_base: i64) -> RecordBatch {
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        DIMS as i32,
        Arc::new(Float32Array::from(vectors[from * DIMS..to * DIMS].to_vec())),
        None,
    );
    let ids = Int64Array::from_iter_values((from as i64..to as i64).map(|i| i + id_base));
    RecordBatch::try_new(schema(), vec![Arc::new(ids) as ArrayRef, Arc::new(emb)]).unwrap()
}

pub fn spec(name: &str) -> TableSpec {
    TableSpec {
        name: Some(name.into()),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    }
}

/// The K nearest indexed rows of each query, by brute force.
pub fn ground_truth(vectors: &[f32], indexed: usize, queries: &[Vec<f32>]) -> Vec<Vec<i64>> {
    queries
        .iter()
        .map(|q| {
            let mut scored: Vec<(f32, i64)> = (0..indexed)
                .map(|r| {
                    let v = &vectors[r * DIMS..(r + 1) * DIMS];
                    (-v.iter().zip(q).map(|(a, b)| a * b).sum::<f32>(), r as i64)
                })
                .collect();
            scored.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            scored.iter().take(K).map(|s| s.1).collect()
        })
        .collect()
}

pub fn list(v: &[f32]) -> ScalarValue {
    use datafusion::arrow::array::ListArray;
    use datafusion::arrow::datatypes::Float32Type;
    let l = ListArray::from_iter_primitive::<Float32Type, _, _>([Some(v.iter().map(|x| Some(*x)))]);
    ScalarValue::List(Arc::new(l))
}

/// Warm p50 of a prepared search of `table` and its recall@K against `truth`.
pub async fn search(
    s: &JammiSession,
    table: &str,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
) -> (Duration, f64) {
    search_with(s, table, "", queries, truth).await
}

/// [`search`] with the `vector_search` options `options` (`""`: none).
pub async fn search_with(
    s: &JammiSession,
    table: &str,
    options: &str,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
) -> (Duration, f64) {
    let options = if options.is_empty() {
        String::new()
    } else {
        format!(", '{options}'")
    };
    let p = s
        .prepare(&format!(
            "SELECT id FROM vector_search('{table}', $1, {K}{options})"
        ))
        .await
        .unwrap();
    let mut found = 0usize;
    for (q, t) in queries.iter().zip(truth) {
        let got = p.collect(vec![list(q)]).await.unwrap();
        let ids: Vec<i64> = got
            .iter()
            .flat_map(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .unwrap()
                    .values()
                    .to_vec()
            })
            .collect();
        found += ids.iter().filter(|i| t.contains(i)).count();
    }
    let mut times = Vec::new();
    for _ in 0..3 {
        for q in queries {
            let t = Instant::now();
            std::hint::black_box(p.collect(vec![list(q)]).await.unwrap());
            times.push(t.elapsed());
        }
    }
    times.sort();
    (
        times[times.len() / 2],
        found as f64 / (K * queries.len()) as f64,
    )
}

/// Warm p50s and recalls@K of prepared searches of `tables`, timed side by side: 5
/// passes, each running every query on one table and then on the next, so a noisy machine
/// weighs on all alike while each table's searches stay warm in the caches.
pub async fn search_side_by_side(
    s: &JammiSession,
    tables: &[&str],
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
) -> Vec<(Duration, f64)> {
    let mut prepared = Vec::new();
    let mut recalls = Vec::new();
    for table in tables {
        let sql = format!("SELECT id FROM vector_search('{table}', $1, {K})");
        let p = s.prepare(&sql).await.unwrap();
        let mut found = 0usize;
        for (q, t) in queries.iter().zip(truth) {
            for b in p.collect(vec![list(q)]).await.unwrap() {
                let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
                found += ids.values().iter().filter(|i| t.contains(i)).count();
            }
        }
        recalls.push(found as f64 / (K * queries.len()) as f64);
        prepared.push(p);
    }
    let mut times = vec![Vec::new(); tables.len()];
    for _ in 0..5 {
        for (p, times) in prepared.iter().zip(&mut times) {
            for q in queries {
                let t = Instant::now();
                std::hint::black_box(p.collect(vec![list(q)]).await.unwrap());
                times.push(t.elapsed());
            }
        }
    }
    times
        .into_iter()
        .zip(recalls)
        .map(|(mut t, r)| {
            t.sort();
            (t[t.len() / 2], r)
        })
        .collect()
}
