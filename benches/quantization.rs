//! Quantised indexes against f32 on real vectors: recall@10 with rescoring, index file size
//! (and how much of it is the graph), warm p50 through a prepared `$1`, write time, the cost
//! of rescoring from the Parquet file against reading the same vectors from a flat `f32` file,
//! and (with the S3 server of `scripts/test-servers.sh` up) the cold first search of a table
//! in the bucket.
//!
//! Data: the 60,015 MiniLM embeddings of `../shared/data/debian-minilm/`; the last 200 are
//! held out as queries, the other 59,815 indexed. Ground truth: brute force. k = 10.
//!
//! Run: `cargo bench --features storage-s3 --bench quantization` (cold S3 figures: first
//! `scripts/test-servers.sh start && eval "$(scripts/test-servers.sh env)"`; without the
//! feature they are skipped).

use std::time::{Duration, Instant};

use jammi_db::index::{IndexParams, Quantization};
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::storage::{CloudConfig, S3Config};
use jammi_db::store::{FileRole, TableSpec};

#[path = "common/minilm.rs"]
mod minilm;
use minilm::{DIMS, K, QUERIES, corpus, ground_truth, held_out, list, rows, schema, search_with};

fn spec(name: &str, q: Quantization) -> TableSpec {
    TableSpec {
        name: Some(name.into()),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        index: IndexParams {
            quantization: q,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Bytes a vector of the corpus takes in a graph of precision `q` (the rest is the graph).
fn vector_bytes(q: Quantization) -> u64 {
    match q {
        Quantization::F32 => DIMS as u64 * 4,
        Quantization::F16 => DIMS as u64 * 2,
        Quantization::I8 => DIMS as u64,
        Quantization::B1 => DIMS.div_ceil(8) as u64,
    }
}

/// A search's warm p50 and recall@K.
type Searched = (Duration, f64);

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Warm p50 of `sql` (a prepared statement of one `$1`) over `queries`.
async fn p50(s: &JammiSession, sql: &str, queries: &[Vec<f32>]) -> Duration {
    let p = s.prepare(sql).await.unwrap();
    for q in queries {
        std::hint::black_box(p.collect(vec![list(q)]).await.unwrap());
    }
    let mut times = Vec::new();
    for q in queries {
        let t = Instant::now();
        std::hint::black_box(p.collect(vec![list(q)]).await.unwrap());
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

/// Where the exact vectors of `n` candidates come from, warm: the exact-vectors file (what
/// a rescored search reads) against the Parquet file's vector column (the hits' vectors,
/// hydrated by row selection), each as the p50 over a bare search of the `n` candidates.
async fn rescoring_sources(
    s: &JammiSession,
    t: &str,
    n: usize,
    queries: &[Vec<f32>],
) -> (f64, f64) {
    let over = n / K;
    let bare = p50(
        s,
        &format!("SELECT id FROM vector_search('{t}', $1, {n}, 'rescore=false')"),
        queries,
    )
    .await;
    let parquet = p50(
        s,
        &format!("SELECT id, embedding FROM vector_search('{t}', $1, {n}, 'rescore=false')"),
        queries,
    )
    .await;
    let sibling = p50(
        s,
        &format!("SELECT id FROM vector_search('{t}', $1, {K}, 'oversample={over}')"),
        queries,
    )
    .await;
    (
        ms(sibling.saturating_sub(bare)),
        ms(parquet.saturating_sub(bare)),
    )
}

/// Cold figures are the best of this many first searches (each from a new session with an
/// empty cache): one shot on this machine moves by tens of milliseconds.
const COLD_TRIALS: usize = 3;

/// The first search of table `t` in `root` from a new session with an empty cache: the
/// index downloaded, then one search (`options` as in `vector_search`).
async fn cold_first_search(
    root: &str,
    cloud: &CloudConfig,
    t: &str,
    options: &str,
    q: &[f32],
) -> Duration {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: set before the session (and its threads) reads it; nothing else reads it now.
    unsafe { std::env::set_var("JAMMI_CACHE_DIR", cache.path()) };
    let s = JammiSession::open_with(
        root,
        OpenOptions {
            cloud: Some(cloud.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let p = s
        .prepare(&format!(
            "SELECT id FROM vector_search('{t}', $1, {K}{options})"
        ))
        .await
        .unwrap();
    let t = Instant::now();
    std::hint::black_box(p.collect(vec![list(q)]).await.unwrap());
    t.elapsed()
}

/// Each precision's table written to the S3 server, then its cold first search, and the
/// warm cost of re-ranking from each source there.
async fn cold_on_s3(
    vectors: &[f32],
    indexed: usize,
    queries: &[Vec<f32>],
    sizes: &[(Quantization, u64)],
) {
    let endpoint = std::env::var("JAMMI_TEST_S3_ENDPOINT");
    let (Ok(endpoint), true) = (endpoint, cfg!(feature = "storage-s3")) else {
        println!(
            "\n(cold S3 figures skipped: they need --features storage-s3 and \
             JAMMI_TEST_S3_ENDPOINT)"
        );
        return;
    };
    let cloud = CloudConfig::S3(S3Config {
        endpoint: Some(endpoint),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: Some(true),
        ..Default::default()
    });
    let root = format!("s3://benchmarks/quantization-{}/", std::process::id());
    let options = OpenOptions {
        cloud: Some(cloud.clone()),
        ..Default::default()
    };
    let s = JammiSession::open_with(&root, options).await.unwrap();
    for (q, _) in sizes {
        let batch = vec![rows(vectors, 0, indexed, 0)];
        s.result_store()
            .write_batches(&spec(&format!("t_{q}"), *q), schema(), batch)
            .await
            .unwrap();
    }
    // What a first search costs whatever the graph's size (manifest, rowmap and HEADs):
    // the cold first search of a 1,000-row table.
    let floor = vec![rows(vectors, 0, 1000, 0)];
    s.result_store()
        .write_batches(&spec("t_floor", Quantization::F32), schema(), floor)
        .await
        .unwrap();
    let cold = |t: String, options: &'static str| {
        let (root, cloud, q) = (root.clone(), cloud.clone(), queries[0].clone());
        async move {
            let mut best = f64::MAX;
            for _ in 0..COLD_TRIALS {
                best = best.min(ms(cold_first_search(&root, &cloud, &t, options, &q).await));
            }
            best
        }
    };
    let fixed = cold("t_floor".into(), "").await;
    println!(
        "\ncold first search of a 1,000-row f32 table (the requests every first search makes): \
         {fixed:.1} ms"
    );
    println!(
        "\n| cold first search on S3 (loopback) | time | f32 time × size ratio | the same with the fixed requests once | without rescoring |"
    );
    println!("|---|---|---|---|---|");
    let f32_size = sizes[0].1 as f64;
    let mut f32_time = 0.0;
    for (q, size) in sizes {
        let t = format!("t_{q}");
        let first = cold(t.clone(), "").await;
        if *q == Quantization::F32 {
            f32_time = first;
        }
        let bare = if *q == Quantization::F32 {
            "—".to_string()
        } else {
            format!("{:.1} ms", cold(t, ", 'rescore=false'").await)
        };
        let ratio = *size as f64 / f32_size;
        println!(
            "| {q} | {first:.1} ms | {:.1} ms | {:.1} ms | {bare} |",
            f32_time * ratio,
            fixed + (f32_time - fixed) * ratio
        );
    }
    s.refresh_tables().await.unwrap();
    // Each ranged read is a round trip to the server: 20 queries are enough.
    let (sibling, parquet) = rescoring_sources(&s, "t_i8", 20, &queries[..20]).await;
    println!(
        "\nre-ranking 20 candidates of the i8 table on S3, warm: exact-vectors file {sibling:.3} ms, \
         Parquet vector column {parquet:.3} ms"
    );
}

#[tokio::main]
async fn main() {
    let vectors = corpus();
    let (indexed, queries) = held_out(&vectors);
    println!("{indexed} MiniLM rows indexed, {QUERIES} held-out queries, k = {K}");
    let truth = ground_truth(&vectors, indexed, &queries);
    let dir = tempfile::tempdir().unwrap();
    let s = JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let rs = s.result_store().clone();

    println!(
        "\n| precision | write (Parquet + index) | index file | ratio to f32 | graph share | recall@10 | warm p50 | p50 ratio | p50 without rescoring |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let mut sizes = Vec::new();
    let mut written = Vec::new();
    for q in Quantization::ALL {
        let t = Instant::now();
        let batch = vec![rows(&vectors, 0, indexed, 0)];
        let m = rs
            .write_batches(&spec(&format!("t_{q}"), q), schema(), batch)
            .await
            .unwrap();
        let size = m.file(FileRole::Index).unwrap().size;
        written.push((q, t.elapsed(), size));
        sizes.push((q, size));
    }
    s.refresh_tables().await.unwrap();
    // Searches run once every table is written, in two rounds over the precisions; each
    // keeps its lower p50, so a slow moment of the machine does not land on one precision.
    let mut searched: Vec<(Duration, f64, Option<Searched>)> = Vec::new();
    for round in 0..2 {
        for (i, (q, _, _)) in written.iter().enumerate() {
            let table = format!("t_{q}");
            let (p50, recall) = search_with(&s, &table, "", &queries, &truth).await;
            let bare = match q {
                Quantization::F32 => None,
                _ => Some(search_with(&s, &table, "rescore=false", &queries, &truth).await),
            };
            if round == 0 {
                searched.push((p50, recall, bare));
            } else {
                let kept = &mut searched[i];
                kept.0 = kept.0.min(p50);
                if let (Some(k), Some(b)) = (kept.2.as_mut(), bare) {
                    k.0 = k.0.min(b.0);
                }
            }
        }
    }
    let (f32_write, f32_size, f32_p50) = (written[0].1, written[0].2, searched[0].0);
    for ((q, write, size), (p50, recall, bare)) in written.iter().zip(&searched) {
        let graph = size.saturating_sub(indexed as u64 * vector_bytes(*q));
        let bare = match bare {
            None => "—".to_string(),
            Some((p, r)) => format!("{:.3} ms (recall {r:.3})", ms(*p)),
        };
        println!(
            "| {q} | {:.2} s ({:.2}×) | {:.1} MiB | {:.3}× | {:.0} % | {recall:.3} | {:.3} ms | {:.2}× | {bare} |",
            write.as_secs_f64(),
            write.as_secs_f64() / f32_write.as_secs_f64(),
            *size as f64 / (1 << 20) as f64,
            *size as f64 / f32_size as f64,
            100.0 * graph as f64 / *size as f64,
            ms(*p50),
            p50.as_secs_f64() / f32_p50.as_secs_f64(),
        );
    }

    println!("\n| precision | oversample | recall@10 | warm p50 |");
    println!("|---|---|---|---|");
    for (q, factors) in [
        (Quantization::F16, &[1usize, 2][..]),
        (Quantization::I8, &[1, 2, 4, 8][..]),
        (Quantization::B1, &[4, 8, 16, 32][..]),
    ] {
        for n in factors {
            let (p50, recall) = search_with(
                &s,
                &format!("t_{q}"),
                &format!("oversample={n}"),
                &queries,
                &truth,
            )
            .await;
            println!("| {q} | {n} | {recall:.3} | {:.3} ms |", ms(p50));
        }
    }

    println!("\n| re-ranking source, local disk, warm | i8, 20 candidates | b1, 160 candidates |");
    println!("|---|---|---|");
    let (i8_sibling, i8_parquet) = rescoring_sources(&s, "t_i8", 20, &queries).await;
    let (b1_sibling, b1_parquet) = rescoring_sources(&s, "t_b1", 160, &queries).await;
    println!("| exact-vectors file (`.idx.vectors`) | {i8_sibling:.3} ms | {b1_sibling:.3} ms |");
    println!("| Parquet vector column (row selection) | {i8_parquet:.3} ms | {b1_parquet:.3} ms |");

    cold_on_s3(&vectors, indexed, &queries, &sizes).await;
}
