//! Shared test helpers: sample data, temp roots, the live servers' settings.
#![allow(dead_code)]

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use async_trait::async_trait;
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
use jammi_db::storage::{AzureConfig, CloudConfig, GcsConfig, S3Config};

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

/// The real MiniLM corpus shipped beside the repository.
pub fn corpus_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/debian-minilm/corpus.parquet")
}

/// Path of the `jammi` binary built for these tests.
pub fn jammi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jammi"))
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
    /// The integration binary takes jammi-1..20, the sqllogictest runner jammi-21..40.
    pub fn bucket() -> String {
        let n = NEXT_BUCKET.fetch_add(1, Ordering::Relaxed) + 1;
        assert!(n <= 20, "out of test buckets");
        format!("jammi-{n}")
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

/// Fails the `fail_at`-th request (1-based) while armed; counts requests.
pub struct FaultyStore {
    pub inner: Arc<dyn ObjectStore>,
    pub count: Arc<AtomicUsize>,
    pub fail_at: usize,
    pub armed: Arc<AtomicBool>,
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

impl FaultyStore {
    fn check(&self) -> object_store::Result<()> {
        if !self.armed.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = self.count.fetch_add(1, Ordering::SeqCst) + 1;
        if n == self.fail_at {
            return Err(object_store::Error::Generic {
                store: "faulty",
                source: format!("injected fault at request {n}").into(),
            });
        }
        Ok(())
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
        self.check()?;
        self.inner.put_opts(l, p, o).await
    }
    async fn put_multipart_opts(
        &self,
        l: &Path,
        o: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check()?;
        self.inner.put_multipart_opts(l, o).await
    }
    async fn get_opts(&self, l: &Path, o: GetOptions) -> object_store::Result<GetResult> {
        self.check()?;
        self.inner.get_opts(l, o).await
    }
    async fn get_ranges(
        &self,
        l: &Path,
        r: &[Range<u64>],
    ) -> object_store::Result<Vec<bytes::Bytes>> {
        self.check()?;
        self.inner.get_ranges(l, r).await
    }
    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        if let Err(e) = self.check() {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.delete_stream(locations)
    }
    fn list(&self, p: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.check() {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list(p)
    }
    fn list_with_offset(
        &self,
        p: Option<&Path>,
        o: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if let Err(e) = self.check() {
            return Box::pin(futures::stream::once(async move { Err(e) }));
        }
        self.inner.list_with_offset(p, o)
    }
    async fn list_with_delimiter(&self, p: Option<&Path>) -> object_store::Result<ListResult> {
        self.check()?;
        self.inner.list_with_delimiter(p).await
    }
    async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> object_store::Result<()> {
        self.check()?;
        self.inner.copy_opts(f, t, o).await
    }
}
