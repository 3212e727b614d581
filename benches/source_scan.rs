//! Source scan benchmark: the same aggregate-with-filter query over a multi-file Parquet
//! dataset (10 files × 500k rows = 5M rows) through a jammi source and through a plain
//! DataFusion ListingTable, in the same run, on a local root and — with
//! `JAMMI_TEST_S3_ENDPOINT` set — on the local S3 server. Reports the median time ratio
//! and the object-store requests of each (both stores wrapped in the same counter).
//!
//! Run: `cargo bench --profile dev --bench source_scan`

#[path = "common/events.rs"]
mod events;

use std::sync::Arc;
use std::time::{Duration, Instant};

use events::{FILES, ROWS_PER_FILE, file_bytes};

use datafusion::arrow::array::RecordBatch;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::prelude::SessionContext;
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::metrics::{CountingStore, RequestCounts};
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

const RUNS: usize = 7;
const QUERY: &str = "SELECT category, count(*) AS n, avg(value) AS mean, max(id) AS last \
                     FROM {T} WHERE value > 0.25 AND id % 7 <> 0 GROUP BY category ORDER BY category";

async fn time_query(ctx: &SessionContext, table: &str) -> (Duration, Vec<RecordBatch>) {
    let t = Instant::now();
    let r = ctx
        .sql(&QUERY.replace("{T}", table))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    (t.elapsed(), r)
}

async fn compare(label: &str, base: &str, cloud: Option<CloudConfig>, store: Arc<dyn ObjectStore>) {
    let url = StorageUrl::parse(base).unwrap();
    // Plain DataFusion: its own context, the same store wrapped in a counter.
    let plain_counts = Arc::new(RequestCounts::default());
    let ctx = SessionContext::new();
    ctx.register_object_store(
        url.object_store_url().as_ref(),
        Arc::new(CountingStore::new(store.clone(), plain_counts.clone())),
    );
    let config = ListingTableConfig::new(ListingTableUrl::parse(base).unwrap())
        .with_listing_options(
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet"),
        )
        .infer_schema(&ctx.state())
        .await
        .unwrap();
    ctx.register_table("plain", Arc::new(ListingTable::try_new(config).unwrap()))
        .unwrap();

    // jammi-db: a session whose registry serves the same store (counted by the registry).
    let registry = StorageRegistry::with_layer(Arc::new({
        let store = store.clone();
        move |_| store.clone()
    }));
    let dir = tempfile::tempdir().unwrap();
    let s = JammiSession::open_with(
        dir.path().to_str().unwrap(),
        OpenOptions {
            registry: Some(registry.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.add_source(
        "events",
        SourceType::File,
        SourceConnection {
            url: Some(base.to_string()),
            format: Some(FileFormat::Parquet),
            cloud,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // Warm both (footer caches, OS page cache), then alternate runs.
    let (_, a) = time_query(&ctx, "plain").await;
    let (_, b) = time_query(s.context(), "events.public.events").await;
    assert_eq!(a, b, "both paths give the same answer");
    let (mut pt, mut jt) = (Vec::new(), Vec::new());
    let p0 = plain_counts.snapshot();
    let j0 = registry.request_counts();
    for _ in 0..RUNS {
        pt.push(time_query(&ctx, "plain").await.0);
        jt.push(time_query(s.context(), "events.public.events").await.0);
    }
    let preq = plain_counts.snapshot().since(&p0);
    let jreq = registry.request_counts().since(&j0);
    pt.sort();
    jt.sort();
    let (p, j) = (pt[RUNS / 2], jt[RUNS / 2]);
    println!(
        "| {label} | {:.1} ms | {:.1} ms | {:.3} | {} | {} |",
        j.as_secs_f64() * 1e3,
        p.as_secs_f64() * 1e3,
        j.as_secs_f64() / p.as_secs_f64(),
        jreq.total() / RUNS as u64,
        preq.total() / RUNS as u64
    );
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    println!(
        "dataset: {FILES} Parquet files x {ROWS_PER_FILE} rows = {} rows",
        FILES * ROWS_PER_FILE
    );
    let files: Vec<Vec<u8>> = (0..FILES).map(file_bytes).collect();
    println!();
    println!(
        "| root | jammi source (p50) | plain ListingTable (p50) | time ratio | requests/query jammi | requests/query plain |"
    );
    println!("|---|---|---|---|---|---|");

    let dir = tempfile::tempdir().unwrap();
    for (i, f) in files.iter().enumerate() {
        std::fs::write(dir.path().join(format!("part-{i:02}.parquet")), f).unwrap();
    }
    let local = StorageUrl::parse(&format!("{}/", dir.path().display())).unwrap();
    let store = StorageRegistry::new().store(&local, None).await.unwrap();
    compare("local file://", &local.to_string(), None, store).await;

    if let Ok(endpoint) = std::env::var("JAMMI_TEST_S3_ENDPOINT") {
        let cloud = CloudConfig::S3(jammi_db::storage::S3Config {
            endpoint: Some(endpoint),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: Some(true),
            ..Default::default()
        });
        let base = StorageUrl::parse("s3://jammi-39/events/").unwrap();
        let store = StorageRegistry::new()
            .store(&base, Some(&cloud))
            .await
            .unwrap();
        for (i, f) in files.iter().enumerate() {
            let p = base
                .join(&format!("part-{i:02}.parquet"))
                .unwrap()
                .object_path()
                .unwrap();
            store.put(&p, PutPayload::from(f.clone())).await.unwrap();
        }
        compare("S3 server (moto)", &base.to_string(), Some(cloud), store).await;
    }
}
