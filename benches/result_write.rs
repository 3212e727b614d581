//! Result-table write benchmark: N × 384-d vectors with keys (default 1M; `--rows N`),
//! written with `ResultStore::write_table` (Parquet streamed + USearch built alongside +
//! sidecars + manifest) against the raw Parquet write and the raw USearch build of the same
//! data, in the same run. Each measurement runs in its own child process so its peak RSS
//! (VmHWM) is its own.
//!
//! Vectors are blended from real MiniLM embeddings (`--data minilm`, the default) or uniform
//! random (`--data random`, HNSW's worst case).
//!
//! Run: `cargo bench --profile dev --bench result_write [-- --rows 1000000 --data minilm]`

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

/// Real MiniLM embeddings (the first row group of the shared corpus) that synthetic rows
/// are blended from, so the 1M vectors cluster like real text embeddings do. Uniform random
/// 384-d vectors (`--data random`) are HNSW's worst case: every distance is nearly equal.
fn bases() -> Option<Vec<f32>> {
    use datafusion::parquet::arrow::ProjectionMask;
    use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    let args: Vec<String> = std::env::args().collect();
    if args
        .windows(2)
        .any(|w| w[0] == "--data" && w[1] == "random")
    {
        return None;
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../shared/data/debian-minilm/corpus.parquet"
    );
    let file = std::fs::File::open(path).expect("the shared MiniLM corpus");
    let b = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let mask = ProjectionMask::columns(b.parquet_schema(), ["embedding"]);
    let mut out = Vec::new();
    for batch in b
        .with_row_groups(vec![0])
        .with_projection(mask)
        .build()
        .unwrap()
    {
        out.extend_from_slice(vector_values(batch.unwrap().column(0)));
    }
    Some(out)
}

/// The flat `f32` values of a `FixedSizeList<Float32>` column.
fn vector_values(column: &ArrayRef) -> &[f32] {
    column
        .as_any()
        .downcast_ref::<FixedSizeListArray>()
        .unwrap()
        .values()
        .as_any()
        .downcast_ref::<Float32Array>()
        .unwrap()
        .values()
}

fn xorshift(x: &mut u64) -> u64 {
    *x ^= *x << 13;
    *x ^= *x >> 7;
    *x ^= *x << 17;
    *x
}

/// Deterministic vectors, generated batch by batch: a real embedding plus a third of another
/// plus small noise, normalised (or, with no bases, uniform random in [-0.5, 0.5)).
fn batch(bases: Option<&[f32]>, start: usize, n: usize) -> RecordBatch {
    let mut x = (start as u64).wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut vals = Vec::with_capacity(n * DIMS);
    for _ in 0..n {
        match bases {
            Some(b) => {
                let count = (b.len() / DIMS) as u64;
                let a = (xorshift(&mut x) % count) as usize * DIMS;
                let c = (xorshift(&mut x) % count) as usize * DIMS;
                let row = vals.len();
                let mut norm = 0f32;
                for d in 0..DIMS {
                    let noise = ((xorshift(&mut x) >> 40) as f32 / (1u64 << 24) as f32) - 0.5;
                    let v = b[a + d] + 0.33 * b[c + d] + 0.04 * noise;
                    norm += v * v;
                    vals.push(v);
                }
                let inv = 1.0 / norm.sqrt();
                vals[row..].iter_mut().for_each(|v| *v *= inv);
            }
            None => {
                for _ in 0..DIMS {
                    vals.push(((xorshift(&mut x) >> 40) as f32 / (1u64 << 24) as f32) - 0.5);
                }
            }
        }
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
    let bases = bases();
    (0..rows)
        .step_by(BATCH)
        .map(move |s| batch(bases.as_deref(), s, BATCH.min(rows - s)))
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

/// CPU seconds (user + system, all threads) this process has used: unlike wall time, it
/// does not grow when other work shares the machine.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // Fields 14 and 15 of stat (utime, stime) in clock ticks of 1/100 s.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
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
            let props = jammi_db::store::writer_properties(&schema(), Some("embedding"));
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
                let vals = vector_values(b.column(1));
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
        "segmented" => {
            // Appended to an empty table under a segment budget: segments of about the
            // budget, each index built and uploaded before the next starts.
            let budget: u64 = std::env::var("BENCH_SEGMENT_MAX_BYTES")
                .unwrap()
                .parse()
                .unwrap();
            let root = dir.join("segmented");
            let s = jammi_db::session::JammiSession::open(root.to_str().unwrap())
                .await
                .unwrap();
            let spec = jammi_db::store::TableSpec {
                name: Some("big".into()),
                key_column: Some("id".into()),
                vector_column: Some("embedding".into()),
                ..Default::default()
            };
            let rs = s.result_store();
            rs.write_batches(&spec, schema(), vec![batch(None, 0, 0)])
                .await
                .unwrap();
            let v = rs
                .append_table_with(
                    "big",
                    schema(),
                    futures::stream::iter(batches(rows).map(Ok)),
                    Some(budget),
                )
                .await
                .unwrap();
            extra = format!("{}", v.segments.len() - 1);
        }
        other => panic!("unknown mode {other}"),
    }
    println!(
        "{mode} {:.3} {:.3} {:.1} {extra}",
        t.elapsed().as_secs_f64(),
        cpu_seconds(),
        peak_rss_mib()
    );
}

/// What one child measured.
struct Measured {
    wall: f64,
    cpu: f64,
    rss: f64,
    extra: String,
}

fn run(mode: &str, rows: usize, data: &str, dir: &std::path::Path) -> Measured {
    run_with(mode, rows, data, dir, None)
}

fn run_with(
    mode: &str,
    rows: usize,
    data: &str,
    dir: &std::path::Path,
    segment_budget: Option<&str>,
) -> Measured {
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .envs(segment_budget.map(|b| ("BENCH_SEGMENT_MAX_BYTES", b)))
        .args([
            "--data",
            data,
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
    // Each child's figures as they come (mode, wall s, CPU s, peak RSS MiB, extra).
    eprintln!("{line}");
    let f: Vec<&str> = line.split_whitespace().collect();
    Measured {
        wall: f[1].parse().unwrap(),
        cpu: f[2].parse().unwrap(),
        rss: f[3].parse().unwrap(),
        extra: f.get(4).unwrap_or(&"").to_string(),
    }
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
    let data = arg("--data").unwrap_or_else(|| "minilm".into());
    let dir = tempfile::tempdir().unwrap();
    println!("writing {rows} rows of {DIMS}-d vectors ({data}) with keys");
    let g = run("generate", rows, &data, dir.path());
    if let Some(budget) = arg("--segment-max-bytes") {
        // The segmented write alone, against raw USearch's build of the same vectors.
        let us = run("usearch", rows, &data, dir.path());
        let seg = run_with("segmented", rows, &data, dir.path(), Some(&budget));
        println!();
        println!("| {rows} rows, segment budget {budget} B | wall | CPU | peak RSS | segments |");
        println!("|---|---|---|---|---|");
        println!(
            "| raw USearch build + save (all threads) | {:.2} s | {:.2} s | {:.0} MiB | |",
            us.wall, us.cpu, us.rss
        );
        println!(
            "| jammi-db segmented append (Parquet + indexes + sidecars + version) | {:.2} s | {:.2} s | {:.0} MiB | {} |",
            seg.wall, seg.cpu, seg.rss, seg.extra
        );
        println!(
            "| throughput, jammi / raw USearch | {:.2}× | | | |",
            us.wall / seg.wall
        );
        return;
    }
    let pq = run("parquet", rows, &data, dir.path());
    let us = run("usearch", rows, &data, dir.path());
    let j = run("jammi", rows, &data, dir.path());
    let wall_ratio = j.wall / (pq.wall + us.wall - g.wall);
    let cpu_ratio = j.cpu / (pq.cpu + us.cpu - g.cpu);
    let index_mib = us.extra.parse::<f64>().unwrap_or(0.0) / (1 << 20) as f64;
    println!();
    println!("| measure | wall | CPU (user+sys) | peak RSS |");
    println!("|---|---|---|---|");
    for (name, m) in [
        ("data generation alone", &g),
        ("raw Parquet write", &pq),
        ("raw USearch build + save", &us),
        (
            "jammi-db write_table (Parquet + index + sidecars + manifest)",
            &j,
        ),
    ] {
        println!(
            "| {name} | {:.2} s | {:.2} s | {:.0} MiB |",
            m.wall, m.cpu, m.rss
        );
    }
    println!(
        "| ratio jammi / (Parquet + USearch - generation) | {wall_ratio:.3} | {cpu_ratio:.3} | |"
    );
    println!(
        "| jammi peak RSS vs budget (index file {index_mib:.0} MiB + 256) | | | {:.0} / {:.0} MiB |",
        j.rss,
        index_mib + 256.0
    );
    println!(
        "| jammi file sizes (parquet, index, rowmap) | {} bytes | | |",
        j.extra
    );
}
