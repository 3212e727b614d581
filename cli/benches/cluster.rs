//! What a distributed query costs on one machine: the same queries through one
//! `JammiSession` and through a Ballista cluster of `jammi` processes (a scheduler and two
//! executors of one vcore each, so both use the machine's two cores), data in the S3
//! server of the live lane. Two queries: a grouped aggregate with a filter over 5 M rows in
//! 10 Parquet files (integer aggregates: a float sum's last digit depends on the order of
//! its partial sums), and a `vector_search` of the 1,001-row MiniLM slice (k = 10), each
//! timed warm (median of its runs) and checked to answer the same on both.
//!
//! Run: `scripts/test-servers.sh start && eval "$(scripts/test-servers.sh env)" &&
//! cargo bench -p jammi-cli --profile dev --features ballista,live-s3-tests --bench cluster`

#[allow(dead_code)]
#[path = "../tests/support/cluster.rs"]
mod support;

#[path = "../../benches/common/events.rs"]
mod events;

use std::path::Path;

use events::{FILES, file_bytes};
use std::time::{Duration, Instant};

use datafusion::arrow::util::pretty::pretty_format_batches;
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::{StorageRegistry, StorageUrl};
use object_store::ObjectStoreExt;

const AGGREGATE: &str = "SELECT category, count(*) AS n, sum(id % 1000) AS total, max(id) AS last \
                         FROM events.public.events WHERE value > 0.25 AND id % 7 <> 0 \
                         GROUP BY category ORDER BY category";

async fn answer(s: &JammiSession, sql: &str) -> String {
    let batches = s.sql(sql).await.unwrap().collect().await.unwrap();
    pretty_format_batches(&batches).unwrap().to_string()
}

/// The median time of `runs` runs of `sql` (after one unmeasured run), and its answer.
async fn median(s: &JammiSession, sql: &str, runs: usize) -> (Duration, String) {
    let want = answer(s, sql).await;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let got = answer(s, sql).await;
        times.push(t.elapsed());
        assert_eq!(got, want, "{sql}: answers differ between runs");
    }
    times.sort();
    (times[runs / 2], want)
}

/// Row `id`'s embedding as a SQL literal (every f32 printed exactly).
async fn vector_literal(s: &JammiSession, id: i64) -> String {
    use datafusion::arrow::array::AsArray;
    let sql = format!("SELECT embedding FROM corpus WHERE id = {id}");
    let batches = s.sql(&sql).await.unwrap().collect().await.unwrap();
    let v = batches[0].column(0).as_fixed_size_list().value(0);
    let v = v.as_primitive::<datafusion::arrow::datatypes::Float32Type>();
    let items: Vec<String> = v.values().iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", items.join(", "))
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

async fn setup(prefix: &str) -> (String, String) {
    let registry = StorageRegistry::new();
    let events = format!("{prefix}events/");
    for f in 0..FILES {
        let url = StorageUrl::parse(&format!("{events}part-{f:02}.parquet")).unwrap();
        let store = registry.store(&url, None).await.unwrap();
        store
            .put(&url.object_path().unwrap(), file_bytes(f).into())
            .await
            .unwrap();
    }
    let sample =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/data/debian_sample.parquet");
    let url = StorageUrl::parse(&format!("{prefix}corpus.parquet")).unwrap();
    let store = registry.store(&url, None).await.unwrap();
    store
        .put(
            &url.object_path().unwrap(),
            std::fs::read(sample).unwrap().into(),
        )
        .await
        .unwrap();
    (events, url.to_string())
}

async fn register(s: &JammiSession, events: &str) {
    let connection = SourceConnection {
        url: Some(events.to_string()),
        format: Some(FileFormat::Parquet),
        ..Default::default()
    };
    s.add_source("events", SourceType::File, connection)
        .await
        .unwrap();
}

fn main() {
    support::ambient_s3_environment();
    let dir = tempfile::tempdir().unwrap();
    // SAFETY: the only thread; the runtime starts after this.
    unsafe { std::env::set_var("JAMMI_CACHE_DIR", dir.path().join("client-cache")) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(dir.path()));
}

async fn run(dir: &Path) {
    let prefix = support::fresh_prefix("benchmarks", "cluster");
    let (events, corpus) = setup(&prefix).await;
    let root = format!("{prefix}db/");
    let options = OpenOptions {
        auto_compact: Some(false),
        ..Default::default()
    };
    let one = JammiSession::open_with(&root, options.clone())
        .await
        .unwrap();
    register(&one, &events).await;
    one.sql(&format!(
        "CREATE EXTERNAL TABLE corpus STORED AS PARQUET LOCATION '{corpus}'"
    ))
    .await
    .unwrap();
    answer(
        &one,
        "CREATE TABLE jammi.public.emb AS SELECT id, package, embedding FROM corpus",
    )
    .await;
    let search = format!(
        "SELECT id, _distance FROM vector_search('emb', {}, 10)",
        vector_literal(&one, 12_000).await
    );

    let cluster = support::Cluster::start(dir);
    let client = JammiSession::open_with(
        &root,
        OpenOptions {
            cluster: Some(cluster.url()),
            ..options
        },
    )
    .await
    .unwrap();

    println!("| query | one session | cluster (1 scheduler, 2 executors × 1 vcore) | ratio |");
    println!("|---|---|---|---|");
    for (name, sql, runs) in [
        (
            "grouped aggregate, 5 M rows in 10 files on S3",
            AGGREGATE.to_string(),
            5,
        ),
        ("vector_search, k = 10 (warm)", search, 21),
    ] {
        let (local, want) = median(&one, &sql, runs).await;
        let (remote, got) = median(&client, &sql, runs).await;
        assert_eq!(got, want, "{sql}: the cluster answers differently");
        let ratio = remote.as_secs_f64() / local.as_secs_f64();
        println!("| {name} | {} | {} | {ratio:.2}× |", ms(local), ms(remote));
    }
}
