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
use object_store::{MultipartUpload, ObjectStore, PutMode, PutPayload, PutResult};
use tokio::task::JoinSet;

use crate::error::{JammiError, Result};
use crate::format::manifest::{FileEntry, FileRole, IndexInfo, Manifest, TableKind, encode_schema};
use crate::format::rowmap::{self, SpilledKeys};
use crate::index::IndexParams;
use crate::index::build::{Finished, IndexBuilder};
use crate::index::vectors::check_vector_type;
use crate::storage::StorageUrl;
use crate::store::txn::Txn;

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

/// An upload that computes its size and CRC32C as bytes pass through and completes only
/// when asked, so the caller can record both (the lease's proof of the object) first.
/// Parts of `part` bytes go out as a multipart upload, two in flight; an object smaller
/// than one part is a single create-only PUT.
pub(crate) struct CrcUpload {
    store: Arc<dyn ObjectStore>,
    url: StorageUrl,
    part: usize,
    buffered: Vec<Bytes>,
    buffered_len: usize,
    upload: Option<Box<dyn MultipartUpload>>,
    parts: JoinSet<object_store::Result<()>>,
    crc: u32,
    len: u64,
}

impl CrcUpload {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, url: &StorageUrl) -> Self {
        Self::with_part_size(store, url, PART)
    }

    /// An upload whose parts are at least `part` bytes.
    pub(crate) fn with_part_size(
        store: Arc<dyn ObjectStore>,
        url: &StorageUrl,
        part: usize,
    ) -> Self {
        CrcUpload {
            store,
            url: url.clone(),
            part,
            buffered: Vec::new(),
            buffered_len: 0,
            upload: None,
            parts: JoinSet::new(),
            crc: 0,
            len: 0,
        }
    }

    /// Size and CRC32C of everything put so far.
    pub(crate) fn size_crc(&self) -> (u64, u32) {
        (self.len, self.crc)
    }

    /// Appends owned bytes, which the upload keeps without copying.
    pub(crate) async fn put(&mut self, bytes: Bytes) -> Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, &bytes);
        self.len += bytes.len() as u64;
        self.buffered_len += bytes.len();
        self.buffered.push(bytes);
        if self.buffered_len >= self.part {
            self.send_part().await?;
        }
        Ok(())
    }

    fn storage_err(&self, e: object_store::Error) -> JammiError {
        JammiError::storage(&self.url, e)
    }

    async fn send_part(&mut self) -> Result<()> {
        if self.upload.is_none() {
            let path = self.url.object_path()?;
            let up = self
                .store
                .put_multipart_opts(&path, Default::default())
                .await
                .map_err(|e| self.storage_err(e))?;
            self.upload = Some(up);
        }
        while self.parts.len() >= PARTS_IN_FLIGHT {
            self.join_one().await?;
        }
        let payload: PutPayload = std::mem::take(&mut self.buffered).into_iter().collect();
        self.buffered_len = 0;
        let part = self
            .upload
            .as_mut()
            .expect("started above")
            .put_part(payload);
        self.parts.spawn(part);
        Ok(())
    }

    async fn join_one(&mut self) -> Result<()> {
        match self.parts.join_next().await {
            Some(Ok(r)) => r.map_err(|e| self.storage_err(e)),
            Some(Err(e)) => Err(JammiError::Index(format!("upload task: {e}"))),
            None => Ok(()),
        }
    }

    /// Uploads what is buffered (a multipart upload's last part) and waits for every part.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        if self.upload.is_some() && self.buffered_len > 0 {
            self.send_part().await?;
        }
        while !self.parts.is_empty() {
            self.join_one().await?;
        }
        Ok(())
    }

    /// Makes the object visible: completes the multipart upload, or PUTs a small object
    /// create-only. Call [`flush`](Self::flush) first.
    pub(crate) async fn complete(&mut self) -> Result<PutResult> {
        self.flush().await?;
        let done = match self.upload.as_mut() {
            Some(up) => up.complete().await,
            None => {
                let payload: PutPayload = std::mem::take(&mut self.buffered).into_iter().collect();
                let path = self.url.object_path()?;
                self.store
                    .put_opts(&path, payload, PutMode::Create.into())
                    .await
            }
        };
        done.map_err(|e| match e {
            object_store::Error::AlreadyExists { .. } => JammiError::NotOwned {
                url: self.url.to_string(),
                hint: "another program created it during the write".into(),
            },
            e => self.storage_err(e),
        })
    }

    /// Abandons a multipart upload (best effort: the store's lifecycle rules or recovery
    /// remove what an abort cannot).
    pub(crate) async fn abort(&mut self) {
        self.parts.abort_all();
        if let Some(mut up) = self.upload.take() {
            let _ = up.abort().await;
        }
    }
}

impl AsyncFileWriter for CrcUpload {
    fn write(&mut self, bs: Bytes) -> BoxFuture<'_, datafusion::parquet::errors::Result<()>> {
        Box::pin(async move {
            self.put(bs)
                .await
                .map_err(|e| datafusion::parquet::errors::ParquetError::External(Box::new(e)))
        })
    }

    /// Called when the Parquet writer is done: uploads every byte but leaves the object
    /// invisible until [`CrcUpload::complete`].
    fn complete(&mut self) -> BoxFuture<'_, datafusion::parquet::errors::Result<()>> {
        Box::pin(async move {
            self.flush()
                .await
                .map_err(|e| datafusion::parquet::errors::ParquetError::External(Box::new(e)))
        })
    }
}

/// Completes `upload` after recording its size and CRC32C in the lease; on any error the
/// multipart upload is abandoned.
pub(crate) async fn finish_upload(
    txn: &mut Txn,
    upload: &mut CrcUpload,
    role: FileRole,
) -> Result<FileEntry> {
    let done = async {
        upload.flush().await?;
        let (size, crc32c) = upload.size_crc();
        txn.intend(&upload.url, size, crc32c).await?;
        let put = upload.complete().await?;
        txn.completed(&upload.url, put.e_tag.clone());
        Ok(FileEntry {
            role,
            name: upload.url.file_name(),
            size,
            crc32c,
            e_tag: put.e_tag,
            version: put.version,
        })
    }
    .await;
    if done.is_err() {
        upload.abort().await;
    }
    done
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
    /// A quantised index's exact vectors (see [`Finished::exact`]).
    pub exact: Option<tempfile::NamedTempFile>,
}

impl BuiltIndex {
    /// The index of `finished`, if one was built.
    pub(crate) fn from_finished(f: Finished) -> Option<Self> {
        Some(BuiltIndex {
            index: f.index?,
            rowmap: f.rowmap,
            dimensions: f.dimensions?,
            keys: f.keys,
            exact: f.exact,
        })
    }
}

/// Outcome of streaming the Parquet file (and building the index alongside).
pub(crate) struct Streamed {
    pub rows: u64,
    /// Arrow in-memory bytes of the rows, counted as the segment budget counts them (a
    /// slice as its whole batch: a segment the budget cut counts at least the budget).
    pub row_bytes: u64,
    pub parquet: FileEntry,
    pub index: Option<BuiltIndex>,
}

/// Streams `batches` to `url` as Parquet, building the index of `request` on the way; the
/// file becomes visible once `txn` recorded its size and checksum.
pub(crate) async fn stream_parquet<S>(
    store: Arc<dyn ObjectStore>,
    txn: &mut Txn,
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
    let upload = CrcUpload::new(store, url);
    let mut writer = AsyncArrowWriter::try_new(
        upload,
        schema.clone(),
        Some(writer_properties(
            &schema,
            request.map(|r| r.column.as_str()),
        )),
    )?;
    let mut rows = 0u64;
    let mut row_bytes = 0u64;
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
            row_bytes += batch.get_array_memory_size() as u64;
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
    let parquet = finish_upload(txn, &mut upload, FileRole::Parquet).await?;
    let index = match builder {
        Some(b) => BuiltIndex::from_finished(b.finish_blocking().await?),
        None => None,
    };
    Ok(Streamed {
        rows,
        row_bytes,
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
    txn: &mut Txn,
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
    upload_file(store, txn, url, tmp.path(), FileRole::Index).await
}

/// Uploads the local file `path` as `url` (the sibling `role`) with its checksum.
pub(crate) async fn upload_file(
    store: Arc<dyn ObjectStore>,
    txn: &mut Txn,
    url: &StorageUrl,
    path: &std::path::Path,
    role: FileRole,
) -> Result<FileEntry> {
    let mut file = tokio::fs::File::open(path).await?;
    // The file is whole, so its size is known: parts grow with it to stay under the
    // part-count limit (an index of 1M 384-d vectors is ~1.6 GiB).
    let size = file.metadata().await?.len();
    let part = PART.max(size.div_ceil(MAX_PARTS) as usize);
    let mut upload = CrcUpload::with_part_size(store, url, part);
    let read: Result<()> = async {
        use tokio::io::AsyncReadExt;
        let mut buf = bytes::BytesMut::new();
        loop {
            if buf.capacity() == 0 {
                buf.reserve(part);
            }
            if file.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
            upload.put(buf.split().freeze()).await?;
        }
    }
    .await;
    if let Err(e) = read {
        upload.abort().await;
        return Err(e);
    }
    finish_upload(txn, &mut upload, role).await
}

/// Everything the manifest needs besides the files.
pub(crate) struct CommitInfo {
    pub table: String,
    pub kind: TableKind,
    pub source: Option<String>,
    pub task: Option<String>,
    pub model: Option<String>,
    pub key_column: Option<String>,
    pub rows: u64,
    pub schema: SchemaRef,
    pub segment_max_bytes: Option<u64>,
    pub row_bytes: Option<u64>,
}

/// Uploads the index and rowmap of `index` (if any) under `txn`, and returns the manifest
/// to commit: `parquet` first, then the sidecars. `writer` is set at commit.
pub(crate) async fn sidecars_and_manifest(
    store: &Arc<dyn ObjectStore>,
    txn: &mut Txn,
    info: CommitInfo,
    parquet: FileEntry,
    index: Option<BuiltIndex>,
    request: Option<&IndexRequest>,
) -> Result<Manifest> {
    let mut files = vec![parquet];
    let mut index_info = None;
    if let (Some(built), Some(req)) = (index, request) {
        let siblings = txn.siblings().clone();
        let vectors = built.rowmap.len() as u64;
        let dims = built.dimensions;
        // The index is dropped once saved, before the rowmap (and its keys) is read.
        files.push(upload_index(store.clone(), txn, &siblings.index, built.index).await?);
        if let Some(exact) = &built.exact {
            let (url, role) = (&siblings.vectors, FileRole::Vectors);
            files.push(upload_file(store.clone(), txn, url, exact.path(), role).await?);
        }
        let keys = built.keys.as_ref().map(SpilledKeys::read).transpose()?;
        let bytes = rowmap::encode(&built.rowmap, keys.as_deref());
        // One create-only PUT: the rowmap is small beside the index.
        let mut upload =
            CrcUpload::with_part_size(store.clone(), &siblings.rowmap, (bytes.len() + 1).max(PART));
        upload.put(Bytes::from(bytes)).await?;
        files.push(finish_upload(txn, &mut upload, FileRole::Rowmap).await?);
        index_info = Some(IndexInfo {
            column: req.column.clone(),
            dimensions: dims,
            metric: req.params.metric,
            quantization: req.params.quantization,
            connectivity: req.params.connectivity,
            expansion_add: req.params.expansion_add,
            expansion_search: req.params.expansion_search,
            vectors,
            usearch_version: usearch::version().to_string(),
        });
    }
    Ok(Manifest {
        format_version: crate::format::manifest::format_version_for(
            index_info.as_ref().map(|i| i.quantization),
        ),
        table: info.table,
        created_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        writer: None,
        kind: Some(info.kind),
        source: info.source,
        task: info.task,
        model: info.model,
        key_column: info.key_column,
        rows: info.rows,
        schema_ipc: encode_schema(&info.schema),
        index: index_info,
        segment_max_bytes: info.segment_max_bytes,
        row_bytes: info.row_bytes,
        files,
    })
}
