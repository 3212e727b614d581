//! The write path of a result table: Parquet streamed out as a multipart upload while the
//! index is built from the same batches, checksums computed on the way, then index, rowmap
//! and — last, create-only — the manifest.

use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::async_writer::AsyncFileWriter;
use datafusion::parquet::arrow::{ArrowSchemaConverter, AsyncArrowWriter};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use object_store::buffered::BufWriter;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};
use tokio::io::AsyncWriteExt;

use crate::error::{JammiError, Result};
use crate::index::IndexParams;
use crate::index::build::{Finished, IndexBuilder};
use crate::index::rowmap::{self, SpilledKeys};
use crate::index::vectors::check_vector_type;
use crate::storage::StorageUrl;
use crate::store::manifest::{
    FORMAT_VERSION, FileEntry, FileRole, IndexInfo, Manifest, encode_schema,
};
use crate::store::naming::{INDEX_SUFFIX, MANIFEST_SUFFIX, PARQUET_SUFFIX, ROWMAP_SUFFIX};

/// Upload part size for multipart uploads of a size not known up front (Parquet): the
/// smallest S3 accepts, as the parts in flight add to a write's peak memory beside the
/// index being built. At S3's 10,000 parts that caps one Parquet file at 48 GiB.
const PART: usize = 5 << 20;

/// Most parts one upload of a known size is split into (S3 allows 10,000).
const MAX_PARTS: u64 = 9_000;

/// Parts of one upload in flight at once (with [`PART`], its memory bound).
const PARTS_IN_FLIGHT: usize = 2;

/// Encoded bytes of a Parquet row group held before it is flushed.
const ROW_GROUP_BYTES: usize = 4 << 20;

/// Incoming batches are handed to the Parquet writer in slices of about this many bytes:
/// its row-group byte bound only splits batches after the first rows of a group are
/// buffered, so one large batch would otherwise become one (larger) row group.
const SLICE_BYTES: usize = 1 << 20;

/// Data page bound of a result table's columns (all but the vector column).
const ROW_PAGE_BYTES: usize = 8 << 10;

/// Rows at which a data page is closed. The writer checks this between mini-batches
/// (of `ROW_PAGE_ROWS / 2` rows, or of this many for nullable columns without nulls), so
/// pages hold fewer than `2 * ROW_PAGE_ROWS` rows: under 8 KiB of 64-bit keys.
const ROW_PAGE_ROWS: usize = 512;

/// Data page bound of the vector column.
const VECTOR_PAGE_BYTES: usize = 64 << 10;

/// Parquet settings for result tables: small pages and a page index, so hydrating k rows
/// reads one small page per column and row instead of whole column chunks. No
/// dictionaries: a row read would first read its column chunk's dictionary page, and the
/// columns that dominate a result table (keys, vectors, text) barely repeat. Vector pages
/// stay larger: hits read their vectors from the index, and exact search scans the column
/// whole.
pub fn writer_properties(schema: &Schema, vector_column: Option<&str>) -> WriterProperties {
    let mut b = WriterProperties::builder()
        // The row group being written is held in memory: bound it by bytes (~2.7k rows of
        // 384-d vectors), not rows, so narrow tables still get large row groups.
        .set_max_row_group_bytes(Some(ROW_GROUP_BYTES))
        .set_data_page_size_limit(ROW_PAGE_BYTES)
        .set_data_page_row_count_limit(ROW_PAGE_ROWS)
        .set_write_batch_size(ROW_PAGE_ROWS / 2)
        .set_dictionary_enabled(false)
        .set_statistics_enabled(EnabledStatistics::Page);
    if let (Some(column), Ok(descr)) = (vector_column, ArrowSchemaConverter::new().convert(schema))
    {
        for leaf in descr.columns() {
            if leaf.path().parts().first().map(String::as_str) == Some(column) {
                b = b.set_column_data_page_size_limit(leaf.path().clone(), VECTOR_PAGE_BYTES);
            }
        }
    }
    b.build()
}

/// A multipart upload that computes its CRC32C and size as bytes pass through.
pub(crate) struct CrcUpload {
    inner: BufWriter,
    crc: u32,
    len: u64,
    /// Set once shutdown was attempted: `BufWriter::abort` must not follow it.
    shut: bool,
}

impl CrcUpload {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<Self> {
        Self::with_part_size(store, url, PART)
    }

    /// An upload whose parts are at least `part` bytes.
    pub(crate) fn with_part_size(
        store: Arc<dyn ObjectStore>,
        url: &StorageUrl,
        part: usize,
    ) -> Result<Self> {
        Ok(CrcUpload {
            inner: BufWriter::with_capacity(store, url.object_path()?, part)
                .with_max_concurrency(PARTS_IN_FLIGHT),
            crc: 0,
            len: 0,
            shut: false,
        })
    }

    /// Appends owned bytes, which the upload keeps without copying.
    pub(crate) async fn put(&mut self, bytes: Bytes) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        self.len += bytes.len() as u64;
        self.inner.put(bytes).await.map_err(std::io::Error::other)
    }

    pub(crate) async fn finish(&mut self) -> std::io::Result<(u64, u32)> {
        self.shut = true;
        self.inner.shutdown().await?;
        Ok((self.len, self.crc))
    }

    pub(crate) async fn abort(&mut self) {
        if !self.shut {
            let _ = self.inner.abort().await;
        }
    }
}

impl AsyncFileWriter for CrcUpload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, datafusion::parquet::errors::Result<()>> {
        Box::pin(async move { self.put(bs).await.map_err(Into::into) })
    }

    fn complete(&mut self) -> BoxFuture<'_, datafusion::parquet::errors::Result<()>> {
        Box::pin(async move {
            self.shut = true;
            self.inner.shutdown().await.map_err(Into::into)
        })
    }
}

/// What to index while writing.
#[derive(Debug, Clone)]
pub(crate) struct IndexRequest {
    pub column: String,
    pub params: IndexParams,
    /// Key column whose values the rowmap carries (result tables that declare one).
    pub key_column: Option<String>,
}

/// A built index with what its sidecars need.
pub(crate) struct BuiltIndex {
    pub index: Arc<usearch::Index>,
    pub rowmap: Vec<u64>,
    pub dimensions: usize,
    pub keys: Option<SpilledKeys>,
}

impl BuiltIndex {
    /// The index of `finished`, if one was built.
    pub(crate) fn from_finished(f: Finished) -> Option<Self> {
        Some(BuiltIndex {
            index: f.index?,
            rowmap: f.rowmap,
            dimensions: f.dimensions?,
            keys: f.keys,
        })
    }
}

/// Outcome of streaming the Parquet file (and building the index alongside).
pub(crate) struct Streamed {
    pub rows: u64,
    pub parquet: FileEntry,
    pub index: Option<BuiltIndex>,
}

/// Streams `batches` to `url` as Parquet, building the index of `request` on the way.
pub(crate) async fn stream_parquet<S>(
    store: Arc<dyn ObjectStore>,
    url: &StorageUrl,
    schema: SchemaRef,
    mut batches: S,
    request: Option<&IndexRequest>,
) -> Result<Streamed>
where
    S: Stream<Item = Result<RecordBatch>> + Unpin,
{
    let not_found = |what: &str, name: &str| {
        JammiError::InvalidInput(format!(
            "{what} column '{name}' not found; columns: {}",
            column_names(&schema)
        ))
    };
    let (column_idx, key_idx, mut builder) = match request {
        Some(r) => {
            let idx = schema
                .index_of(&r.column)
                .map_err(|_| not_found("vector", &r.column))?;
            let dims = check_vector_type(&r.column, schema.field(idx).data_type())?;
            let mut b = IndexBuilder::new(&r.column, r.params, dims);
            let key_idx = match &r.key_column {
                Some(k) => {
                    let ki = schema.index_of(k).map_err(|_| not_found("key", k))?;
                    b = b.with_keys(schema.field(ki))?;
                    Some(ki)
                }
                None => None,
            };
            (Some(idx), key_idx, Some(b))
        }
        None => (None, None, None),
    };
    let upload = CrcUpload::new(store, url)?;
    let mut writer = AsyncArrowWriter::try_new(
        upload,
        schema.clone(),
        Some(writer_properties(
            &schema,
            request.map(|r| r.column.as_str()),
        )),
    )?;
    let mut rows = 0u64;
    let result: Result<()> = async {
        while let Some(batch) = batches.next().await {
            let batch = batch?;
            if batch.schema().fields() != schema.fields() {
                return Err(JammiError::InvalidInput(format!(
                    "batch schema differs from the table schema: [{}] vs [{}]",
                    column_names(&batch.schema()),
                    column_names(&schema)
                )));
            }
            rows += batch.num_rows() as u64;
            match (column_idx, builder.take()) {
                (Some(ci), Some(b)) => {
                    let col = batch.column(ci).clone();
                    let keys = key_idx.map(|k| batch.column(k).clone());
                    let (written, added) = tokio::join!(
                        write_sliced(&mut writer, &batch),
                        b.add_batch_blocking(col, keys)
                    );
                    builder = Some(added?);
                    written?;
                }
                _ => write_sliced(&mut writer, &batch).await?,
            }
        }
        writer.finish().await?;
        Ok(())
    }
    .await;
    let mut upload = writer.into_inner();
    if let Err(e) = result {
        upload.abort().await;
        return Err(e);
    }
    let parquet = FileEntry {
        role: FileRole::Parquet,
        name: String::new(),
        size: upload.len,
        crc32c: upload.crc,
    };
    let index = match builder {
        Some(b) => BuiltIndex::from_finished(b.finish_blocking().await?),
        None => None,
    };
    Ok(Streamed {
        rows,
        parquet,
        index,
    })
}

/// Writes `batch` in slices of about [`SLICE_BYTES`] (zero-copy), so row groups respect
/// [`ROW_GROUP_BYTES`] whatever the size of the batches the caller streams.
async fn write_sliced(writer: &mut AsyncArrowWriter<CrcUpload>, batch: &RecordBatch) -> Result<()> {
    let rows = batch.num_rows();
    let per_row = batch.get_array_memory_size() / rows.max(1);
    let step = (SLICE_BYTES / per_row.max(1)).clamp(1, rows.max(1));
    for start in (0..rows).step_by(step) {
        writer
            .write(&batch.slice(start, step.min(rows - start)))
            .await?;
    }
    Ok(())
}

pub(crate) fn column_names(schema: &SchemaRef) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Saves `index` through a temp file (USearch's file API) and uploads it with its checksum.
pub(crate) async fn upload_index(
    store: Arc<dyn ObjectStore>,
    url: &StorageUrl,
    index: Arc<usearch::Index>,
) -> Result<FileEntry> {
    let tmp = tempfile::NamedTempFile::new()?;
    let path = tmp
        .path()
        .to_str()
        .map(str::to_string)
        .ok_or_else(|| JammiError::Index("temp path is not UTF-8".into()))?;
    tokio::task::spawn_blocking(move || index.save(&path))
        .await
        .map_err(|e| JammiError::Index(e.to_string()))?
        .map_err(|e| JammiError::Index(e.to_string()))?;
    let mut file = tokio::fs::File::open(tmp.path()).await?;
    // The index is saved, so its size is known: parts grow with it to stay under the
    // part-count limit (an index of 1M 384-d vectors is ~1.6 GiB).
    let size = file.metadata().await?.len();
    let part = PART.max(size.div_ceil(MAX_PARTS) as usize);
    let mut upload = CrcUpload::with_part_size(store, url, part)?;
    let mut buf = bytes::BytesMut::new();
    let result: std::io::Result<(u64, u32)> = async {
        use tokio::io::AsyncReadExt;
        loop {
            if buf.capacity() == 0 {
                buf.reserve(part);
            }
            if file.read_buf(&mut buf).await? == 0 {
                break;
            }
            upload.put(buf.split().freeze()).await?;
        }
        upload.finish().await
    }
    .await;
    match result {
        Ok((size, crc32c)) => Ok(FileEntry {
            role: FileRole::Index,
            name: String::new(),
            size,
            crc32c,
        }),
        Err(e) => {
            upload.abort().await;
            Err(JammiError::Storage {
                url: url.to_string(),
                source: object_store::Error::Generic {
                    store: "upload",
                    source: Box::new(e),
                },
            })
        }
    }
}

/// Puts a small object and returns its entry.
pub(crate) async fn put_small(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    role: FileRole,
    bytes: Vec<u8>,
) -> Result<FileEntry> {
    let entry = FileEntry {
        role,
        name: url.file_name(),
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(&bytes),
    };
    store
        .put(&url.object_path()?, PutPayload::from(bytes))
        .await
        .map_err(|e| JammiError::storage(url, e))?;
    Ok(entry)
}

/// Sibling URLs of a table `name` in directory `dir`.
#[derive(Debug, Clone)]
pub(crate) struct Siblings {
    pub parquet: StorageUrl,
    pub index: StorageUrl,
    pub rowmap: StorageUrl,
    pub manifest: StorageUrl,
}

impl Siblings {
    pub(crate) fn new(dir: &StorageUrl, name: &str) -> Result<Self> {
        let dir = dir.as_prefix();
        Ok(Siblings {
            parquet: dir.join(&format!("{name}{PARQUET_SUFFIX}"))?,
            index: dir.join(&format!("{name}{INDEX_SUFFIX}"))?,
            rowmap: dir.join(&format!("{name}{ROWMAP_SUFFIX}"))?,
            manifest: dir.join(&format!("{name}{MANIFEST_SUFFIX}"))?,
        })
    }

    /// The data siblings (not the manifest), in write order.
    pub(crate) fn data(&self) -> [&StorageUrl; 3] {
        [&self.parquet, &self.index, &self.rowmap]
    }
}

/// Everything the manifest needs besides the files.
pub(crate) struct CommitInfo {
    pub table: String,
    pub source: Option<String>,
    pub task: Option<String>,
    pub model: Option<String>,
    pub key_column: Option<String>,
    pub rows: u64,
    pub schema: SchemaRef,
}

/// Uploads index and rowmap (if any), then publishes the manifest create-only.
/// `before_publish` runs right before the manifest (lease check).
pub(crate) async fn commit<F>(
    store: &Arc<dyn ObjectStore>,
    siblings: &Siblings,
    info: CommitInfo,
    mut parquet: FileEntry,
    index: Option<BuiltIndex>,
    request: Option<&IndexRequest>,
    before_publish: F,
) -> Result<Manifest>
where
    F: std::future::Future<Output = Result<()>>,
{
    parquet.name = siblings.parquet.file_name();
    let mut files = vec![parquet];
    let mut index_info = None;
    if let (Some(built), Some(req)) = (index, request) {
        let vectors = built.rowmap.len() as u64;
        let dims = built.dimensions;
        // The index is dropped once saved, before the rowmap (and its keys) is read.
        let mut e = upload_index(store.clone(), &siblings.index, built.index).await?;
        e.name = siblings.index.file_name();
        files.push(e);
        let keys = built.keys.as_ref().map(SpilledKeys::read).transpose()?;
        files.push(
            put_small(
                store,
                &siblings.rowmap,
                FileRole::Rowmap,
                rowmap::encode(&built.rowmap, keys.as_deref()),
            )
            .await?,
        );
        index_info = Some(IndexInfo {
            column: req.column.clone(),
            dimensions: dims,
            metric: req.params.metric,
            quantization: "f32".into(),
            connectivity: req.params.connectivity,
            expansion_add: req.params.expansion_add,
            expansion_search: req.params.expansion_search,
            vectors,
            usearch_version: usearch::version().to_string(),
        });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        table: info.table,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        source: info.source,
        task: info.task,
        model: info.model,
        key_column: info.key_column,
        rows: info.rows,
        schema_ipc: encode_schema(&info.schema),
        index: index_info,
        files,
    };
    before_publish.await?;
    store
        .put_opts(
            &siblings.manifest.object_path()?,
            PutPayload::from(manifest.to_json()),
            PutMode::Create.into(),
        )
        .await
        .map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => JammiError::AlreadyExists {
                kind: "result table",
                name: manifest.table.clone(),
            },
            e => JammiError::storage(&siblings.manifest, e),
        })?;
    Ok(manifest)
}

/// Best-effort removal of a failed write's data siblings (recovery finishes what fails).
pub(crate) async fn remove_data_siblings(store: &Arc<dyn ObjectStore>, siblings: &Siblings) {
    for url in siblings.data() {
        if let Ok(p) = url.object_path() {
            let _ = store.delete(&p).await;
        }
    }
}
