//! Result-table write benchmark: N × 384-d vectors with keys (default 1M; `--rows N`),
//! written with `ResultStore::write_table` (Parquet streamed + USearch built alongside +
//! sidecars + manifest) against the raw Parquet write and the raw USearch build of the same
//! data, in the same run. Each measurement runs in its own child process so its peak RSS
//! (VmHWM) is its own.
//!
//! Run: `cargo bench --profile dev --bench result_write [-- --rows 1000000]`

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, RecordBatch,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use jammi_db::index::IndexParams;

const DIMS: usize = 384;
const BATCH: usize = 8192;

fn schema() -> SchemaRef {
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

/// Deterministic pseudo-random unit-ish vectors, generated batch by batch.
fn batch(start: usize, n: usize) -> RecordBatch {
    let mut x = (start as u64).wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut vals = Vec::with_capacity(n * DIMS);
    for _ in 0..n * DIMS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        vals.push(((x >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
    }
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        DIMS as i32,
        Arc::new(Float32Array::from(vals)),
        None,
    );
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(
                start as i64..(start + n) as i64,
            )) as ArrayRef,
            Arc::new(emb),
        ],
    )
    .unwrap()
}

fn batches(rows: usize) -> impl Iterator<Item = RecordBatch> {
    (0..rows)
        .step_by(BATCH)
        .map(move |s| batch(s, BATCH.min(rows - s)))
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn child(mode: &str, rows: usize, dir: &std::path::Path) {
    let t = Instant::now();
    let mut extra = String::new();
    match mode {
        "generate" => {
            for b in batches(rows) {
                std::hint::black_box(b);
            }
        }
        "parquet" => {
            let f = tokio::fs::File::create(dir.join("raw.parquet"))
                .await
                .unwrap();
            let props = jammi_db::store::writer_properties();
            let mut w =
                datafusion::parquet::arrow::AsyncArrowWriter::try_new(f, schema(), Some(props))
                    .unwrap();
            for b in batches(rows) {
                w.write(&b).await.unwrap();
            }
            w.close().await.unwrap();
        }
        "usearch" => {
            let p = IndexParams::default();
            let idx = usearch::Index::new(&usearch::IndexOptions {
                dimensions: DIMS,
                metric: usearch::MetricKind::Cos,
                quantization: usearch::ScalarKind::F32,
                connectivity: p.connectivity,
                expansion_add: p.expansion_add,
                expansion_search: p.expansion_search,
                multi: false,
            })
            .unwrap();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            idx.reserve_capacity_and_threads(rows, threads).unwrap();
            let mut key = 0u64;
            for b in batches(rows) {
                let emb = b
                    .column(1)
                    .as_any()
                    .downcast_ref::<FixedSizeListArray>()
                    .unwrap();
                let vals = emb
                    .values()
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .unwrap()
                    .values();
                let n = b.num_rows();
                let chunk = n.div_ceil(threads);
                std::thread::scope(|s| {
                    for c in 0..threads {
                        let idx = &idx;
                        s.spawn(move || {
                            for r in c * chunk..((c + 1) * chunk).min(n) {
                                idx.add(key + r as u64, &vals[r * DIMS..(r + 1) * DIMS])
                                    .unwrap();
                            }
                        });
                    }
                });
                key += n as u64;
            }
            idx.save(dir.join("raw.usearch").to_str().unwrap()).unwrap();
            extra = format!(
                "{}",
                std::fs::metadata(dir.join("raw.usearch")).unwrap().len()
            );
        }
        "jammi" => {
            let root = dir.join("root");
            let s = jammi_db::session::JammiSession::open(root.to_str().unwrap())
                .await
                .unwrap();
            let spec = jammi_db::store::TableSpec {
                source: "bench".into(),
                task: "embedding".into(),
                model: "random".into(),
                key_column: Some("id".into()),
                vector_column: Some("embedding".into()),
                ..Default::default()
            };
            let m = s
                .result_store()
                .write_table(
                    &spec,
                    schema(),
                    futures::stream::iter(batches(rows).map(Ok)),
                )
                .await
                .unwrap();
            extra = m
                .files
                .iter()
                .map(|f| f.size.to_string())
                .collect::<Vec<_>>()
                .join(",");
        }
        other => panic!("unknown mode {other}"),
    }
    println!(
        "{mode} {:.3} {:.1} {extra}",
        t.elapsed().as_secs_f64(),
        peak_rss_mib()
    );
}

fn run(mode: &str, rows: usize, dir: &std::path::Path) -> (f64, f64, String) {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--child",
            mode,
            "--rows",
            &rows.to_string(),
            "--dir",
            dir.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap()
        .to_string();
    let f: Vec<&str> = line.split_whitespace().collect();
    (
        f[1].parse().unwrap(),
        f[2].parse().unwrap(),
        f.get(3).unwrap_or(&"").to_string(),
    )
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .map(|i| args[i + 1].clone())
    };
    let rows: usize = arg("--rows").map_or(1_000_000, |r| r.parse().unwrap());
    if let Some(mode) = arg("--child") {
        let dir = std::path::PathBuf::from(arg("--dir").unwrap());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(child(&mode, rows, &dir));
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!("writing {rows} rows of {DIMS}-d vectors with keys");
    let (gen_t, _, _) = run("generate", rows, dir.path());
    let (pq_t, pq_rss, _) = run("parquet", rows, dir.path());
    let (us_t, us_rss, us_size) = run("usearch", rows, dir.path());
    let (j_t, j_rss, sizes) = run("jammi", rows, dir.path());
    let baseline = pq_t + us_t - gen_t;
    let index_mib = us_size.parse::<f64>().unwrap_or(0.0) / (1 << 20) as f64;
    println!();
    println!("| measure | value |");
    println!("|---|---|");
    println!("| data generation alone | {gen_t:.2} s |");
    println!("| raw Parquet write | {pq_t:.2} s (peak RSS {pq_rss:.0} MiB) |");
    println!("| raw USearch build + save | {us_t:.2} s (peak RSS {us_rss:.0} MiB) |");
    println!("| jammi-db write_table (Parquet + index + sidecars + manifest) | {j_t:.2} s |");
    println!(
        "| time ratio jammi / (Parquet + USearch - generation) | {:.3} |",
        j_t / baseline
    );
    println!(
        "| jammi peak RSS | {j_rss:.0} MiB (index file {index_mib:.0} MiB; budget index + 256 = {:.0} MiB) |",
        index_mib + 256.0
    );
    println!("| jammi file sizes (parquet, index, rowmap) | {sizes} bytes |");
}
