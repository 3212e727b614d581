//! Shared test helpers: sample data, temp roots, the live servers' settings.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Float64Array, Int64Array, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ArrowWriter;
use jammi_db::storage::{AzureConfig, CloudConfig, GcsConfig, S3Config, StorageUrl};

/// Schema of the sample table: id, title, score, embedding (4-d).
pub fn sample_schema(dims: i32) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("score", DataType::Float64, true),
        Field::new(
            "embedding",
            DataType::FixedSizeList(Arc::new(Field::new("item", DataType::Float32, true)), dims),
            true,
        ),
    ]))
}

/// `n` rows starting at `start`; the embedding of row i points at angle i (deterministic).
pub fn sample_batch(start: i64, n: usize, dims: i32) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let titles: Vec<String> = ids.iter().map(|i| format!("paper {i}")).collect();
    let scores: Vec<f64> = ids.iter().map(|i| (*i % 10) as f64 / 10.0).collect();
    let mut values = Vec::with_capacity(n * dims as usize);
    for i in &ids {
        for d in 0..dims {
            values.push(((*i as f32) * 0.37 + d as f32 * 1.3).sin());
        }
    }
    let emb = FixedSizeListArray::new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        dims,
        Arc::new(Float32Array::from(values)),
        None,
    );
    RecordBatch::try_new(
        sample_schema(dims),
        vec![
            Arc::new(Int64Array::from(ids)) as ArrayRef,
            Arc::new(StringArray::from(titles)),
            Arc::new(Float64Array::from(scores)),
            Arc::new(emb),
        ],
    )
    .unwrap()
}

/// The embedding the sample data gives row `i`.
pub fn sample_vector(i: i64, dims: i32) -> Vec<f32> {
    (0..dims)
        .map(|d| ((i as f32) * 0.37 + d as f32 * 1.3).sin())
        .collect()
}

/// Parquet bytes of batches.
pub fn parquet_bytes(batches: &[RecordBatch]) -> Vec<u8> {
    let mut buf = Vec::new();
    {
        let mut w = ArrowWriter::try_new(&mut buf, batches[0].schema(), None).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        w.close().unwrap();
    }
    buf
}

/// A fresh temp directory (kept for the test's life by the returned guard).
pub fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

static NEXT_MEMORY: AtomicUsize = AtomicUsize::new(0);

/// A unique `memory://` bucket URL for a test.
pub fn memory_root(tag: &str) -> String {
    format!(
        "memory://{tag}-{}/",
        NEXT_MEMORY.fetch_add(1, Ordering::Relaxed)
    )
}

/// The repository's slice of the real MiniLM corpus (`examples/data/`).
pub fn sample_corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/debian_sample.parquet")
}

/// Live-server settings, read from the env `scripts/test-servers.sh env` prints.
pub struct Live;

static NEXT_BUCKET: AtomicUsize = AtomicUsize::new(0);

impl Live {
    fn env(name: &str) -> String {
        std::env::var(name).unwrap_or_else(|_| {
            panic!("{name} is not set: run `eval \"$(scripts/test-servers.sh env)\"` after `scripts/test-servers.sh start`")
        })
    }

    /// A bucket (or container) of the servers no other test of this binary uses.
    /// The integration binary takes jammi-1..20 and jammi-41..50, the sqllogictest runner
    /// jammi-21..40.
    pub fn bucket() -> String {
        let n = NEXT_BUCKET.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(n <= 30, "out of test buckets");
        format!("jammi-{}", if n <= 20 { n } else { n + 20 })
    }

    pub fn s3() -> CloudConfig {
        CloudConfig::S3(S3Config {
            endpoint: Some(Self::env("JAMMI_TEST_S3_ENDPOINT")),
            region: Some("us-east-1".into()),
            access_key_id: Some("testing".into()),
            secret_access_key: Some("testing".into()),
            allow_http: Some(true),
            ..Default::default()
        })
    }

    pub fn gcs() -> CloudConfig {
        CloudConfig::Gcs(GcsConfig {
            endpoint: Some(Self::env("JAMMI_TEST_GCS_ENDPOINT")),
            allow_http: Some(true),
            skip_signature: Some(true),
            ..Default::default()
        })
    }

    pub fn azure() -> CloudConfig {
        CloudConfig::Azure(AzureConfig {
            use_emulator: Some(true),
            endpoint: Some(Self::env("JAMMI_TEST_AZURE_ENDPOINT")),
            allow_http: Some(true),
            ..Default::default()
        })
    }
}

/// When an injected fault strikes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The request fails before it reaches the store.
    Before,
    /// The store performs the request and the caller sees an error (a lost response).
    After,
}

/// Fails the `fail_at`-th request (1-based) while armed; counts requests. Multipart parts,
/// completes and aborts are requests of their own.
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub count: Arc<AtomicUsize>,
    pub fail_at: usize,
    pub armed: Arc<AtomicBool>,
    pub fault: Fault,
    /// What the faulted request was (`"put_create <path>"`, `"head <path>"`, ...).
    pub faulted: Arc<std::sync::Mutex<Option<String>>>,
}

impl FaultyStore {
    /// A store failing request `fail_at` (while `armed`) with `fault`, counting in `count`.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        count: Arc<AtomicUsize>,
        fail_at: usize,
        armed: Arc<AtomicBool>,
        fault: Fault,
    ) -> Self {
        FaultyStore {
            inner,
            count,
            fail_at,
            armed,
            fault,
            faulted: Arc::default(),
        }
    }
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({:?})", self.inner)
    }
}
impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Faulty({})", self.inner)
    }
}

/// The shared counter of a [`FaultyStore`] and its multipart uploads.
#[derive(Clone)]
struct Trigger {
    count: Arc<AtomicUsize>,
    fail_at: usize,
    armed: Arc<AtomicBool>,
    fault: Fault,
    faulted: Arc<std::sync::Mutex<Option<String>>>,
}

impl Trigger {
    /// `Some(n)` when this request (number n, described by `what`) is the one to fail.
    fn hit_as(&self, what: &str) -> Option<usize> {
        if !self.armed.load(Ordering::SeqCst) {
            return None;
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n != self.fail_at {
            return None;
        }
        *self.faulted.lock().unwrap() = Some(what.to_string());
        Some(n)
    }

    fn hit(&self) -> Option<usize> {
        self.hit_as("list")
    }

    fn error(n: usize, fault: Fault) -> object_store::Error {
        object_store::Error::Generic {
            store: "faulty",
            source: format!("injected fault ({fault:?}) at request {n}").into(),
        }
    }

    /// Runs `op` under the trigger: an error instead of it, or after it.
    async fn run<T>(
        &self,
        what: String,
        op: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        match (self.hit_as(&what), self.fault) {
            (None, _) => op.await,
            (Some(n), Fault::Before) => Err(Self::error(n, Fault::Before)),
            (Some(n), Fault::After) => {
                let _ = op.await;
                Err(Self::error(n, Fault::After))
            }
        }
    }
}

impl FaultyStore {
    fn trigger(&self) -> Trigger {
        Trigger {
            count: self.count.clone(),
            fail_at: self.fail_at,
            armed: self.armed.clone(),
            fault: self.fault,
            faulted: self.faulted.clone(),
        }
    }
}

/// A multipart upload of a [`FaultyStore`].
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    trigger: Trigger,
    path: String,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyUpload")
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> object_store::UploadPart {
        let part = self.inner.put_part(data);
        let trigger = self.trigger.clone();
        let what = format!("put_part {}", self.path);
        Box::pin(async move { trigger.run(what, part).await })
    }
    async fn complete(&mut self) -> object_store::Result<PutResult> {
        let trigger = self.trigger.clone();
        let what = format!("complete {}", self.path);
        trigger.run(what, self.inner.complete()).await
    }
    async fn abort(&mut self) -> object_store::Result<()> {
        let trigger = self.trigger.clone();
        let what = format!("abort {}", self.path);
        trigger.run(what, self.inner.abort()).await
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        l: &Path,
        p: PutPayload,
        o: PutOptions,
    ) -> object_store::Result<PutResult> {
        let what = match &o.mode {
            object_store::PutMode::Overwrite => format!("put {l}"),
            object_store::PutMode::Create => format!("put_create {l}"),
            object_store::PutMode::Update(_) => format!("put_update {l}"),
        };
        self.trigger().run(what, self.inner.put_opts(l, p, o)).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        let trigger = self.trigger();
        let what = format!("put_multipart {l}");
        let inner = trigger
            .run(what, self.inner.put_multipart_opts(l, o))
            .await?;
        Ok(Box::new(FaultyUpload {
            inner,
            trigger,
            path: l.to_string(),
        }))
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        let what = if o.head {
            format!("head {l}")
        } else {
            format!("get {l}")
        };
        self.trigger().run(what, self.inner.get_opts(l, o)).await
    }
    async fn get_ranges(
        &self,
        l: &Path,
        r: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.trigger()
            .run(format!("get_ranges {l}"), self.inner.get_ranges(l, r))
            .await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let trigger = self.trigger();
        let inner = self.inner.clone();
        Box::pin(
            futures::stream::once(async move {
                let paths: Vec<_> = futures::TryStreamExt::try_collect(locations).await?;
                let op = async {
                    let done: Vec<Path> =
                        futures::TryStreamExt::try_collect(inner.delete_stream(Box::pin(
                            futures::stream::iter(paths.into_iter().map(Ok)),
                        )))
                        .await?;
                    Ok(done)
                };
                trigger.run("delete".to_string(), op).await
            })
            .flat_map(|r: object_store::Result<Vec<Path>>| match r {
                Ok(v) => futures::stream::iter(v.into_iter().map(Ok)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
            }),
        )
    }
    fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Some(n) = self.trigger().hit() {
            let e = Trigger::error(n, self.fault);
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list(p)
    }
    fn list_with_offset(
        &self,
        p: Option<&Path>,
        o: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Some(n) = self.trigger().hit() {
            let e = Trigger::error(n, self.fault);
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list_with_offset(p, o)
    }
    async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
        self.trigger()
            .run("list".to_string(), self.inner.list_with_delimiter(p))
            .await
    }
    async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.trigger()
            .run(format!("copy {t}"), self.inner.copy_opts(f, t, o))
            .await
    }
}

/// Files a user keeps under a root, named like jammi-db's own: a Parquet file named exactly
/// like a result table, sidecar-looking files, a lease-looking file, a staging-looking file
/// and junk under `_jammi/`. Returns their names; [`assert_user_files_intact`] checks them.
pub async fn put_user_files(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
) -> Vec<(String, Vec<u8>)> {
    let files: Vec<(String, Vec<u8>)> = vec![
        (
            "papers.parquet".into(),
            parquet_bytes(&[sample_batch(0, 7, 4)]),
        ),
        (
            "my_data.parquet".into(),
            parquet_bytes(&[sample_batch(100, 3, 4)]),
        ),
        (
            "papers__text_embedding__BAAI_bge-m3__20260101T000000Z_00000000.parquet".into(),
            parquet_bytes(&[sample_batch(200, 5, 4)]),
        ),
        (
            "notes.idx.usearch".into(),
            b"user bytes: not an index".to_vec(),
        ),
        (
            "notes.idx.rowmap".into(),
            b"user rowmap-looking bytes".to_vec(),
        ),
        (
            "notes.idx.vectors".into(),
            b"user vectors-looking bytes".to_vec(),
        ),
        (
            "emb.2024.idx.manifest.json".into(),
            b"{\"mine\": true}".to_vec(),
        ),
        (
            "x.idx.lease.json".into(),
            b"{\"not\": \"a lease\"}".to_vec(),
        ),
        (
            "papers.parquet#1".into(),
            b"a file with a hash in its name".to_vec(),
        ),
        ("_jammi/leases/foo.json".into(), b"not json at all".to_vec()),
    ];
    for (name, bytes) in &files {
        put_file(store, root, name, bytes).await;
    }
    files
}

/// Writes a user file (through the file system for local roots: object_store refuses
/// names with `#` there).
pub async fn put_file(store: &Arc<dyn ObjectStore>, root: &StorageUrl, name: &str, bytes: &[u8]) {
    use object_store::ObjectStoreExt;
    match root.local_path() {
        Some(dir) => {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
        None => {
            store
                .put(
                    &root.join(name).unwrap().object_path().unwrap(),
                    PutPayload::from(bytes.to_vec()),
                )
                .await
                .unwrap();
        }
    }
}

async fn read_file(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    name: &str,
) -> Result<Vec<u8>, String> {
    use object_store::ObjectStoreExt;
    match root.local_path() {
        Some(dir) => std::fs::read(dir.join(name)).map_err(|e| e.to_string()),
        None => match store
            .get(&root.join(name).unwrap().object_path().unwrap())
            .await
        {
            Ok(r) => Ok(r.bytes().await.map_err(|e| e.to_string())?.to_vec()),
            Err(e) => Err(e.to_string()),
        },
    }
}

/// Every user file is still there, byte for byte.
pub async fn assert_user_files_intact(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    files: &[(String, Vec<u8>)],
    when: &str,
) {
    for (name, bytes) in files {
        let got = read_file(store, root, name)
            .await
            .unwrap_or_else(|e| panic!("{when}: user file {name} is gone: {e}"));
        assert_eq!(&got[..], &bytes[..], "{when}: user file {name} changed");
    }
}

/// The names of every object under `root`, sorted.
pub async fn object_names(store: &Arc<dyn ObjectStore>, root: &StorageUrl) -> Vec<String> {
    let mut v: Vec<String> = futures::TryStreamExt::try_collect::<Vec<_>>(
        store.list(Some(&root.object_path().unwrap())),
    )
    .await
    .unwrap()
    .into_iter()
    .map(|m| {
        let full = m.location.to_string();
        let base = root.object_path().unwrap().to_string();
        full.strip_prefix(&base)
            .unwrap_or(&full)
            .trim_start_matches('/')
            .to_string()
    })
    .collect();
    v.sort();
    v
}

/// SQL OPTIONS spelling of a live server's configuration.
pub fn live_options(cloud: &CloudConfig) -> String {
    let pairs: Vec<(&str, String)> = match cloud {
        CloudConfig::S3(c) => vec![
            ("aws.endpoint", c.endpoint.clone().unwrap()),
            ("aws.region", "us-east-1".into()),
            ("aws.access_key_id", "testing".into()),
            ("aws.secret_access_key", "testing".into()),
            ("aws.allow_http", "true".into()),
        ],
        CloudConfig::Gcs(c) => vec![
            ("gcp.endpoint", c.endpoint.clone().unwrap()),
            ("gcp.allow_http", "true".into()),
            ("gcp.skip_signature", "true".into()),
        ],
        CloudConfig::Azure(c) => vec![
            ("azure.endpoint", c.endpoint.clone().unwrap()),
            ("azure.use_emulator", "true".into()),
        ],
    };
    pairs
        .iter()
        .map(|(k, v)| format!("'{k}' '{v}'"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Runs a statement; returns its batches and how its (first) search was answered.
pub async fn search_sql(
    s: &jammi_db::session::JammiSession,
    sql: &str,
) -> (Vec<RecordBatch>, jammi_db::sql::SearchStats) {
    let df = s.sql(sql).await.unwrap();
    let (batches, stats) = s.collect_with_stats(df).await.unwrap();
    let first = stats.into_iter().next().expect("the plan holds a search");
    (batches, first)
}

/// A session on a local root at `dir` with one result table of `rows` sample rows (16-d
/// vectors, key `id`): the session and the table's name.
pub async fn session_with_table(
    dir: &tempfile::TempDir,
    rows: usize,
) -> (jammi_db::session::JammiSession, String) {
    let s = jammi_db::session::JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let spec = jammi_db::store::TableSpec {
        source: "papers".into(),
        task: "emb".into(),
        model: "m".into(),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    };
    let batches: Vec<RecordBatch> = (0..rows / 500)
        .map(|i| sample_batch(i as i64 * 500, 500, 16))
        .collect();
    let m = s
        .result_store()
        .write_batches(&spec, sample_schema(16), batches)
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    (s, m.table)
}

/// A vector as an SQL array literal.
pub fn vec_sql(v: &[f32]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:?}")).collect();
    format!("[{}]", parts.join(", "))
}

/// A vector as a `FLOAT[]` parameter value.
pub fn list(v: &[f32]) -> datafusion::common::ScalarValue {
    use datafusion::arrow::{array::ListArray, datatypes::Float32Type};
    let l = ListArray::from_iter_primitive::<Float32Type, _, _>([Some(v.iter().map(|x| Some(*x)))]);
    datafusion::common::ScalarValue::List(Arc::new(l))
}
