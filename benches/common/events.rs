//! The events dataset of the scan benchmarks: `FILES` Parquet files of `ROWS_PER_FILE`
//! rows (`id`, `category` of 16, `value` in [0, 1)), 5 M rows in all.

use std::sync::Arc;

use datafusion::arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

pub const FILES: usize = 10;
pub const ROWS_PER_FILE: usize = 500_000;

/// File `f` of the dataset.
pub fn file_bytes(f: usize) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("value", DataType::Float64, false),
    ]));
    let mut buf = Vec::new();
    let mut w =
        datafusion::parquet::arrow::ArrowWriter::try_new(&mut buf, schema.clone(), None).unwrap();
    for chunk in 0..(ROWS_PER_FILE / 100_000) {
        let start = (f * ROWS_PER_FILE + chunk * 100_000) as i64;
        let ids: Vec<i64> = (start..start + 100_000).collect();
        let cats: Vec<String> = ids.iter().map(|i| format!("c{}", i % 16)).collect();
        let vals: Vec<f64> = ids.iter().map(|i| ((*i as f64) * 0.618).fract()).collect();
        let b = RecordBatch::try_new(
            schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids)),
                Arc::new(StringArray::from(cats)),
                Arc::new(Float64Array::from(vals)),
            ],
        )
        .unwrap();
        w.write(&b).unwrap();
    }
    w.close().unwrap();
    buf
}
