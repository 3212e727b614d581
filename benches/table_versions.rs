//! Result tables that change: the cost of an append against writing the same rows as a new
//! table; warm search and recall@10 on the rows as a write and nine appends (merged as they
//! land, the default; and left as ten segments), as one segment, and after compaction; a DELETE of 10 % of the rows against rewriting the
//! table, and search after it; opening the latest version at 1, 100 and 1,000 versions.
//!
//! Data: the 60,015 real MiniLM embeddings of `../shared/data/debian-minilm/`; the last 200
//! are held out as queries, the other 59,815 indexed. Ground truth: brute force (the vectors
//! are unit length: cosine order is dot-product order). k = 10, searches through a prepared
//! `$1` statement, warm (every query run once first), 3 passes.
//!
//! Run: `cargo bench --profile dev --bench table_versions`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use datafusion::arrow::array::Int64Array;
use datafusion::arrow::record_batch::RecordBatch;
use jammi_db::session::JammiSession;

#[path = "common/minilm.rs"]
mod minilm;
use minilm::{
    DIMS, K, QUERIES, corpus, ground_truth, held_out, rows, schema, search, search_side_by_side,
    spec,
};

/// The index files of table `name`'s segments under `root`.
fn index_files(root: &std::path::Path, name: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let text = p.to_string_lossy();
            if p.is_dir() {
                dirs.push(p);
            } else if text.ends_with(".idx.usearch")
                && (text.contains(&format!("/{name}.jammi/"))
                    || text.ends_with(&format!("/{name}.idx.usearch")))
            {
                out.push(p);
            }
        }
    }
    out
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Warm p50 of raw USearch searching every graph of `files` for each query, the graphs
/// shared out over the machine's threads.
fn raw_segments(files: &[std::path::PathBuf], queries: &[Vec<f32>], ef: usize) -> Duration {
    let graphs: Vec<usearch::Index> = files
        .iter()
        .map(|f| {
            let options = usearch::IndexOptions {
                dimensions: DIMS,
                metric: usearch::MetricKind::Cos,
                quantization: usearch::ScalarKind::F32,
                connectivity: 0,
                expansion_add: 0,
                expansion_search: 0,
                multi: false,
            };
            let g = usearch::Index::new(&options).unwrap();
            g.view(f.to_str().unwrap()).unwrap();
            g.change_expansion_search(ef);
            g
        })
        .collect();
    let per_thread = graphs.len().div_ceil(threads()).max(1);
    let mut times = Vec::new();
    for pass in 0..4 {
        for q in queries {
            let t = Instant::now();
            std::thread::scope(|scope| {
                for part in graphs.chunks(per_thread) {
                    scope.spawn(move || {
                        for g in part {
                            std::hint::black_box(g.search(q, K).unwrap());
                        }
                    });
                }
            });
            if pass > 0 {
                times.push(t.elapsed());
            }
        }
    }
    median(times)
}

fn median(mut d: Vec<Duration>) -> Duration {
    d.sort();
    d[d.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// Counts the requests a store serves.
#[derive(Debug)]
struct Counting {
    inner: Arc<dyn object_store::ObjectStore>,
    n: Arc<AtomicUsize>,
}

impl std::fmt::Display for Counting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Counting({})", self.inner)
    }
}

#[async_trait::async_trait]
impl object_store::ObjectStore for Counting {
    async fn put_opts(
        &self,
        location: &object_store::path::Path,
        payload: object_store::PutPayload,
        opts: object_store::PutOptions,
    ) -> object_store::Result<object_store::PutResult> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &object_store::path::Path,
        opts: object_store::PutMultipartOptions,
    ) -> object_store::Result<Box<dyn object_store::MultipartUpload>> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &object_store::path::Path,
        options: object_store::GetOptions,
    ) -> object_store::Result<object_store::GetResult> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: futures::stream::BoxStream<
            'static,
            object_store::Result<object_store::path::Path>,
        >,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::path::Path>> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.delete_stream(locations)
    }

    fn list(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> futures::stream::BoxStream<'static, object_store::Result<object_store::ObjectMeta>> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(
        &self,
        prefix: Option<&object_store::path::Path>,
    ) -> object_store::Result<object_store::ListResult> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &object_store::path::Path,
        to: &object_store::path::Path,
        options: object_store::CopyOptions,
    ) -> object_store::Result<()> {
        self.n.fetch_add(1, Ordering::SeqCst);
        self.inner.copy_opts(from, to, options).await
    }
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
    let all = || vec![rows(&vectors, 0, indexed, 0)];

    // The same rows as one segment; as a write and nine appends merged as they land (the
    // default); and as those ten left as written (auto compaction off).
    let plain = JammiSession::open_with(
        dir.path().to_str().unwrap(),
        jammi_db::session::OpenOptions {
            auto_compact: Some(false),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let prs = plain.result_store().clone();
    let t = Instant::now();
    rs.write_batches(&spec("one"), schema(), all())
        .await
        .unwrap();
    let t_one = t.elapsed();
    let step = indexed.div_ceil(10);
    let mut t_grown = Duration::ZERO;
    let t = Instant::now();
    for (store, name) in [(&rs, "grown"), (&prs, "ten")] {
        store
            .write_batches(&spec(name), schema(), vec![rows(&vectors, 0, step, 0)])
            .await
            .unwrap();
        for from in (step..indexed).step_by(step) {
            let batch = rows(&vectors, from, (from + step).min(indexed), 0);
            store
                .append_table(name, schema(), futures::stream::iter(vec![Ok(batch)]))
                .await
                .unwrap();
        }
        if name == "grown" {
            t_grown = t.elapsed();
        }
    }
    s.refresh_tables().await.unwrap();
    let grown = rs.latest_version("grown").await.unwrap();
    let grown_segments = grown.segments.len();
    let mib: Vec<String> = grown
        .segments
        .iter()
        .map(|s| {
            let f = s.manifest.files.iter();
            let bytes: u64 = f
                .filter(|f| f.role == jammi_db::store::FileRole::Parquet)
                .map(|f| f.size)
                .sum();
            format!(
                "{} rows, {:.1} MiB",
                s.rows(),
                bytes as f64 / (1 << 20) as f64
            )
        })
        .collect();
    println!(
        "the write and 9 appends, merged as they land: {}",
        mib.join("; ")
    );
    let side = search_side_by_side(&s, &["one", "grown", "ten"], &queries, &truth).await;
    let [(p_one, r_one), (p_grown, r_grown), (p_ten, r_ten)] = side[..] else {
        unreachable!("three tables")
    };
    // The floor: raw USearch searching the same ten graphs on every core, at the expansion
    // a segment with a tenth of the rows gets (ef · (1/10)^⅓).
    let ef_ten = (64.0 * 0.1f64.cbrt()).ceil() as usize;
    let ten_files = index_files(dir.path(), "ten");
    assert_eq!(
        ten_files.len(),
        10,
        "the ten segments' graphs: {ten_files:?}"
    );
    let raw_ten = raw_segments(&ten_files, &queries, ef_ten);
    let t = Instant::now();
    let c = s.compact("ten", &Default::default()).await.unwrap();
    let compact_time = t.elapsed();
    let side = search_side_by_side(&s, &["one", "ten"], &queries, &truth).await;
    let [(p_one_then, _), (p_cmp, r_cmp)] = side[..] else {
        unreachable!("two tables")
    };

    // An append of 6,000 rows against writing them as a new table (3 runs each, median).
    let six = || rows(&vectors, 0, 6000, 1_000_000);
    let mut new_table = Vec::new();
    let mut append = Vec::new();
    for i in 0..3 {
        let t = Instant::now();
        rs.write_batches(&spec(&format!("six{i}")), schema(), vec![six()])
            .await
            .unwrap();
        new_table.push(t.elapsed());
        let t = Instant::now();
        prs.append_table("one", schema(), futures::stream::iter(vec![Ok(six())]))
            .await
            .unwrap();
        append.push(t.elapsed());
    }
    let (new_table, append) = (median(new_table), median(append));

    // DELETE of 10 % against rewriting the table without those rows.
    rs.write_batches(&spec("del"), schema(), all())
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    let (p_before, _) = search(&s, "del", &queries, &truth).await;
    let kept: Vec<RecordBatch> = {
        let b = rows(&vectors, 0, indexed, 0);
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let mask: datafusion::arrow::array::BooleanArray = (0..ids.len())
            .map(|i| Some(ids.value(i) % 10 != 0))
            .collect();
        vec![datafusion::arrow::compute::filter_record_batch(&b, &mask).unwrap()]
    };
    let t = Instant::now();
    rs.write_batches(&spec("rewritten"), schema(), kept)
        .await
        .unwrap();
    let rewrite = t.elapsed();
    let t = Instant::now();
    s.sql("DELETE FROM jammi.public.del WHERE id % 10 = 0")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let delete = t.elapsed();
    s.refresh_tables().await.unwrap();
    let (p_after, _) = search(&s, "del", &queries, &truth).await;

    // Opening the latest version at 1, 100 and 1,000 versions (single-row deletes).
    let n = Arc::new(AtomicUsize::new(0));
    let layer_n = n.clone();
    let registry = jammi_db::storage::StorageRegistry::with_layer(Arc::new(move |inner| {
        Arc::new(Counting {
            inner,
            n: layer_n.clone(),
        }) as Arc<dyn object_store::ObjectStore>
    }));
    let counted = JammiSession::open_with(
        dir.path().to_str().unwrap(),
        jammi_db::session::OpenOptions {
            registry: Some(registry),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    rs.write_batches(&spec("v"), schema(), vec![rows(&vectors, 0, 1000, 0)])
        .await
        .unwrap();
    let mut opens = Vec::new();
    let mut made = 1u64;
    for target in [1u64, 100, 1000] {
        while made < target {
            let base = rs.latest_version("v").await.unwrap();
            let row: roaring::RoaringBitmap = [made as u32].into_iter().collect();
            let path = base.segments[0].path.clone();
            rs.delete_rows("v", &base, vec![(path, row)]).await.unwrap();
            made += 1;
        }
        let mut times = Vec::new();
        let mut requests = 0;
        for _ in 0..5 {
            n.store(0, Ordering::SeqCst);
            let t = Instant::now();
            // What a session holding version 0 does to plan a query: the latest number (one
            // LIST page), then that version's record (one GET).
            let crs = counted.result_store();
            let latest = crs.latest_version_number("v").await.unwrap();
            let version = match latest {
                Some(l) => crs.version_record("v", l).await.unwrap().unwrap().version,
                None => 0,
            };
            times.push(t.elapsed());
            requests = n.load(Ordering::SeqCst);
            assert_eq!(version + 1, target);
        }
        opens.push((target, requests, median(times)));
    }

    println!();
    println!("| measure | value | baseline | ratio | goal |");
    println!("|---|---|---|---|---|");
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
    println!(
        "| append 6,000 rows to the table vs the same rows as a new table | {} | {} | {:.2}× | ≤ 1.2× |",
        ms(append),
        ms(new_table),
        ratio(append, new_table)
    );
    println!(
        "| warm p50, the rows as a write and 9 appends (merged as they land: {grown_segments} segments) vs one segment | {} | {} | {:.2}× | ≤ 1.5× |",
        ms(p_grown),
        ms(p_one),
        ratio(p_grown, p_one)
    );
    println!(
        "| recall@10, the write and 9 appends vs one segment | {r_grown:.4} | {r_one:.4} | {:+.4} | within 0.005 |",
        r_grown - r_one
    );
    println!(
        "| the write and 9 appends with their merges vs writing the rows as one table | {} | {} | {:.2}× | (what merging costs) |",
        ms(t_grown),
        ms(t_one),
        ratio(t_grown, t_one)
    );
    println!(
        "| warm p50, the same 10 segments left as written (auto_compact off) vs one segment | {} | {} | {:.2}× | |",
        ms(p_ten),
        ms(p_one),
        ratio(p_ten, p_one)
    );
    println!(
        "| warm p50, raw USearch on the same 10 graphs ({} threads, ef {ef_ten}) vs one segment | {} | {} | {:.2}× | (the floor) |",
        threads(),
        ms(raw_ten),
        ms(p_one),
        ratio(raw_ten, p_one)
    );
    println!(
        "| recall@10, the 10 segments left as written vs one segment | {r_ten:.4} | {r_one:.4} | {:+.4} | |",
        r_ten - r_one
    );
    println!(
        "| warm p50 after compaction ({} → {} segments, {}) vs one segment | {} | {} | {:.2}× | ≤ 1.05× |",
        c.segments_before,
        c.segments_after,
        ms(compact_time),
        ms(p_cmp),
        ms(p_one_then),
        ratio(p_cmp, p_one_then)
    );
    println!(
        "| recall@10 after compaction vs one segment | {r_cmp:.4} | {r_one:.4} | {:+.4} | the same |",
        r_cmp - r_one
    );
    println!(
        "| DELETE 10 % of the rows vs rewriting the table without them | {} | {} | {:.3}× | ≤ 0.1× |",
        ms(delete),
        ms(rewrite),
        ratio(delete, rewrite)
    );
    println!(
        "| warm p50 after the DELETE vs before | {} | {} | {:.2}× | ≤ 1.2× |",
        ms(p_after),
        ms(p_before),
        ratio(p_after, p_before)
    );
    for (v, requests, t) in opens {
        println!(
            "| open the latest version of a table with {v} versions | {} | {requests} requests | | ≤ 2 requests |",
            ms(t)
        );
    }
}
