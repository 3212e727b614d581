//! Row access to a table's Parquet file: the footer and page index once, then only the
//! pages holding the requested rows (a `RowSelection`), never a full scan.

// parquet 59 deprecates `ParquetObjectReader` in favour of hand-written readers; it is still
// the maintained object_store bridge DataFusion itself uses, so it is used here.
#![allow(deprecated)]

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::{
    AsyncFileReader, ParquetObjectReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use datafusion::parquet::file::metadata::ParquetMetaData;
use futures::future::BoxFuture;
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::storage::StorageUrl;

fn reader(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<ParquetObjectReader> {
    Ok(ParquetObjectReader::new(store.clone(), url.object_path()?))
}

/// Bytes read from the end of a Parquet file in the first request: the footer and, in
/// files of up to a few million rows, the page index before it (no second request).
const FOOTER_HINT: usize = 1 << 20;

/// Footer and page index of a Parquet file, in one request when its size is known (from a
/// manifest); otherwise a HEAD first (Azure refuses suffix ranges).
pub async fn load_metadata(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    size: Option<u64>,
) -> Result<ArrowReaderMetadata> {
    let size = match size {
        Some(s) => s,
        None => {
            store
                .head(&url.object_path()?)
                .await
                .map_err(|e| JammiError::storage(url, e))?
                .size
        }
    };
    let mut r = reader(store, url)?
        .with_file_size(size)
        .with_footer_size_hint(FOOTER_HINT);
    let opts = ArrowReaderOptions::new().with_page_index(true);
    ArrowReaderMetadata::load_async(&mut r, opts)
        .await
        .map_err(|e| JammiError::InvalidInput(format!("cannot read Parquet footer of {url}: {e}")))
}

/// The Arrow schema of a Parquet file.
pub async fn parquet_schema(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<SchemaRef> {
    Ok(load_metadata(store, url, None).await?.schema().clone())
}

/// Where the table columns `columns` of `table` are in the file `meta` describes, matched
/// by name: a file rewritten with its columns in another order is read right, and one that
/// lost a column, or holds other values under its name, is refused naming it.
pub(crate) fn file_columns(
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    table: &Schema,
    columns: &[usize],
) -> Result<Vec<usize>> {
    let file = meta.schema();
    columns
        .iter()
        .map(|&c| {
            let want = table.field(c);
            let at = file.index_of(want.name()).map_err(|_| {
                JammiError::InvalidInput(format!(
                    "column '{}' is no longer in {url} (the file changed since its table was \
                     registered; register it again); its columns: {}",
                    want.name(),
                    crate::store::write::column_names(file)
                ))
            })?;
            let have = file.field(at).data_type();
            if !same_values(have, want.data_type()) {
                return Err(JammiError::InvalidInput(format!(
                    "column '{}' of {url} is now {have}, its table reads it as {} (the file \
                     changed since its table was registered; register it again)",
                    want.name(),
                    want.data_type()
                )));
            }
            Ok(at)
        })
        .collect()
}

/// Column `field` (by name) of a batch read from a file, typed as its table reads it.
/// [`file_columns`] has checked that the file holds the same values under that name.
pub(crate) fn table_column(batch: &RecordBatch, field: &Field) -> Result<ArrayRef> {
    let a = batch.column_by_name(field.name()).ok_or_else(|| {
        JammiError::InvalidInput(format!("column '{}' was not read", field.name()))
    })?;
    if a.data_type() == field.data_type() {
        return Ok(a.clone());
    }
    Ok(datafusion::arrow::compute::cast(a, field.data_type())?)
}

/// Whether a file column typed `have` holds what a table reading it as `want` expects:
/// the same type up to string/binary layout (views, large offsets), dictionary encoding
/// and nested field names. A cast between anything else (`Int64` read as `Int32`) could
/// change values, and is refused.
fn same_values(have: &DataType, want: &DataType) -> bool {
    use DataType::*;
    let plain = |t: &DataType| match t {
        Dictionary(_, v) => v.as_ref().clone(),
        LargeUtf8 | Utf8View => Utf8,
        LargeBinary | BinaryView => Binary,
        other => other.clone(),
    };
    let (h, w) = (plain(have), plain(want));
    h.equals_datatype(&w) || (h == Binary && w == Utf8)
}

/// Size and CRC32C of an object, streamed.
pub async fn object_crc(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<(u64, u32)> {
    let mut s = store
        .get(&url.object_path()?)
        .await
        .map_err(|e| JammiError::storage(url, e))?
        .into_stream();
    let (mut n, mut crc) = (0u64, 0u32);
    while let Some(c) = s.next().await {
        let c = c.map_err(|e| JammiError::storage(url, e))?;
        n += c.len() as u64;
        crc = crc32c::crc32c_append(crc, &c);
    }
    Ok((n, crc))
}

/// Streams the given top-level columns of the file in row order.
pub async fn scan_columns(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    columns: &[usize],
) -> Result<ParquetRecordBatchStream<ParquetObjectReader>> {
    let mask = ProjectionMask::roots(
        meta.metadata().file_metadata().schema_descr(),
        columns.iter().copied(),
    );
    Ok(
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader(store, url)?, meta.clone())
            .with_projection(mask)
            .with_batch_size(8192)
            .build()?,
    )
}

/// Streams the table columns `columns` (indices into the table's `schema`) of the file at
/// `url`, matched to the file's columns by name, as batches of the projected table schema.
pub(crate) async fn scan_table_columns(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    schema: &SchemaRef,
    columns: &[usize],
) -> Result<impl futures::Stream<Item = Result<RecordBatch>> + use<>> {
    let projected = Arc::new(schema.project(columns)?);
    let in_file = file_columns(url, meta, schema, columns)?;
    let stream = scan_columns(store, url, meta, &in_file).await?;
    Ok(stream.map(move |batch| {
        let batch = batch?;
        let arrays = projected
            .fields()
            .iter()
            .map(|f| table_column(&batch, f))
            .collect::<Result<Vec<_>>>()?;
        Ok(RecordBatch::try_new_with_options(
            projected.clone(),
            arrays,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?)
    }))
}

/// The vectors of column `column_idx` (named `column`, `dims` values each) of a Parquet
/// file, decoded for exact searches.
pub async fn read_vectors(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    column_idx: usize,
    column: &str,
    dims: usize,
) -> Result<crate::index::exact::ExactVectors> {
    let mut stream = scan_columns(store, url, meta, &[column_idx]).await?;
    let mut out = crate::index::exact::ExactVectors::new(dims);
    let mut base = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        out.add(column, batch.column(0), base)?;
        base += batch.num_rows() as u64;
    }
    Ok(out)
}

/// Streams the vector column (and, if named, a key column) of an existing file, for indexing
/// it.
pub async fn vector_batches(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    column: &str,
    key_column: Option<&str>,
) -> Result<VectorScan> {
    let meta = load_metadata(store, url, None).await?;
    let find = |what: &str, name: &str| {
        meta.schema().index_of(name).map_err(|_| {
            JammiError::InvalidInput(format!(
                "{what}column '{name}' not found in {url}; columns: {}",
                crate::store::write::column_names(meta.schema())
            ))
        })
    };
    let idx = find("", column)?;
    let key_idx = key_column.map(|k| find("key ", k)).transpose()?;
    let rows = meta.metadata().file_metadata().num_rows() as u64;
    let mut cols = vec![idx];
    cols.extend(key_idx);
    let stream = scan_columns(store, url, &meta, &cols).await?;
    let projected = stream.schema();
    // The scan yields columns in file order: put the vector column first.
    let order: Vec<usize> = [Some(column), key_column]
        .into_iter()
        .flatten()
        .map(|n| projected.index_of(n))
        .collect::<std::result::Result<_, _>>()?;
    let field = projected.field(order[0]).clone();
    let key_field = order.get(1).map(|&i| projected.field(i).clone());
    Ok(VectorScan {
        file_schema: meta.schema().clone(),
        field,
        key_field,
        rows,
        batches: stream
            .map_err(JammiError::from)
            .map_ok(move |b| {
                let key = order.get(1).map(|&k| b.column(k).clone());
                (b.column(order[0]).clone(), key)
            })
            .boxed(),
    })
}

/// A streamed read of the vector column (and key column) of an existing file, with what the
/// footer said about the file.
pub struct VectorScan {
    /// Schema of the whole file.
    pub file_schema: SchemaRef,
    /// The vector column's field.
    pub field: Field,
    /// The key column's field, when one was asked for.
    pub key_field: Option<Field>,
    /// Rows in the file.
    pub rows: u64,
    /// Per batch, in row order: the vector column and the key column if asked for.
    pub batches: futures::stream::BoxStream<'static, Result<(ArrayRef, Option<ArrayRef>)>>,
}

/// Reads the rows at `positions` (any order, duplicates allowed) with the given top-level
/// columns, returned in the order of `positions`.
pub async fn read_rows(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    positions: &[u64],
    columns: &[usize],
) -> Result<RecordBatch> {
    let mut sorted: Vec<u64> = positions.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut selectors = Vec::new();
    let mut next = 0u64;
    for &p in &sorted {
        if p > next {
            selectors.push(RowSelector::skip((p - next) as usize));
            selectors.push(RowSelector::select(1));
        } else {
            match selectors.last_mut() {
                Some(s) if !s.skip => s.row_count += 1,
                _ => selectors.push(RowSelector::select(1)),
            }
        }
        next = p + 1;
    }
    let mask = ProjectionMask::roots(
        meta.metadata().file_metadata().schema_descr(),
        columns.iter().copied(),
    );
    let selection = RowSelection::from(selectors);
    let (schema, batches) = match url.local_path() {
        // Local files: a few small positioned reads, no async round trips.
        Some(path) => {
            use datafusion::arrow::record_batch::RecordBatchReader;
            use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
            let file = std::fs::File::open(&path)?;
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
                .with_projection(mask)
                .with_row_selection(selection)
                .with_batch_size(sorted.len().max(1))
                .build()?;
            let schema = reader.schema();
            let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
            (schema, batches)
        }
        // Remote files: every page the rows need is fetched up front in one coalesced,
        // concurrent request set (the stream alone would fetch row group by row group).
        None => {
            let ranges = merge_ranges(page_ranges(meta, &sorted, columns));
            let prefetched = Prefetched::fetch(store, url, ranges).await?;
            let stream =
                ParquetRecordBatchStreamBuilder::new_with_metadata(prefetched, meta.clone())
                    .with_projection(mask)
                    .with_row_selection(selection)
                    .with_batch_size(sorted.len().max(1))
                    .build()?;
            let schema = stream.schema().clone();
            let batches: Vec<RecordBatch> = stream.try_collect().await?;
            (schema, batches)
        }
    };
    let all = datafusion::arrow::compute::concat_batches(&schema, &batches)?;
    if all.num_rows() != sorted.len() {
        return Err(JammiError::Corrupt {
            kind: "Parquet file",
            table: url.to_string(),
            reason: format!("asked for {} rows, read {}", sorted.len(), all.num_rows()),
        });
    }
    let order: UInt32Array = positions
        .iter()
        .map(|p| sorted.binary_search(p).expect("present") as u32)
        .collect();
    Ok(take_record_batch(&all, &order)?)
}

/// The whole of top-level column `column`, in row order. Remote files are fetched as one
/// coalesced, concurrent request set for all its column chunks (a stream alone would fetch
/// them row group by row group).
pub async fn read_column(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    column: usize,
) -> Result<Vec<RecordBatch>> {
    let md = meta.metadata();
    let descr = md.file_metadata().schema_descr();
    let mask = ProjectionMask::roots(descr, [column]);
    if let Some(path) = url.local_path() {
        use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let file = std::fs::File::open(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(file, meta.clone())
            .with_projection(mask)
            .with_batch_size(BATCH_ROWS)
            .build()?;
        return Ok(reader.collect::<std::result::Result<Vec<_>, _>>()?);
    }
    let leaves: Vec<usize> = (0..descr.num_columns())
        .filter(|&l| descr.get_column_root_idx(l) == column)
        .collect();
    let ranges: Vec<Range<u64>> = md
        .row_groups()
        .iter()
        .flat_map(|rg| leaves.iter().map(move |&l| rg.column(l).byte_range()))
        .map(|(start, len)| start..start + len)
        .collect();
    // Gaps as object_store's own coalescing closes them: what is counted is what is sent.
    let ranges = merge_ranges_within(ranges, object_store::OBJECT_STORE_COALESCE_DEFAULT);
    let prefetched = Prefetched::fetch(store, url, ranges).await?;
    let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(prefetched, meta.clone())
        .with_projection(mask)
        .with_batch_size(BATCH_ROWS)
        .build()?;
    Ok(stream.try_collect().await?)
}

/// Rows per batch of a whole-column read.
const BATCH_ROWS: usize = 64 * 1024;

/// Byte ranges of the pages holding the rows `sorted` (ascending file row positions) in the
/// given top-level columns, each column chunk's dictionary page included. Empty without an
/// offset index (the reader then fetches what it needs itself).
fn page_ranges(meta: &ArrowReaderMetadata, sorted: &[u64], columns: &[usize]) -> Vec<Range<u64>> {
    let md = meta.metadata();
    let Some(offsets) = md.offset_index() else {
        return Vec::new();
    };
    let descr = md.file_metadata().schema_descr();
    let leaves: Vec<usize> = (0..descr.num_columns())
        .filter(|&l| columns.contains(&descr.get_column_root_idx(l)))
        .collect();
    let mut ranges = Vec::new();
    let mut group_start = 0u64;
    let mut rest = sorted;
    for (g, rg) in md.row_groups().iter().enumerate() {
        let group_end = group_start + rg.num_rows() as u64;
        let n = rest.partition_point(|&r| r < group_end);
        let (rows, later) = rest.split_at(n);
        rest = later;
        if !rows.is_empty() {
            for &l in &leaves {
                let pages = offsets[g][l].page_locations();
                let chunk = rg.column(l);
                if let (Some(dict), Some(first)) = (chunk.dictionary_page_offset(), pages.first()) {
                    ranges.push(dict as u64..first.offset as u64);
                }
                for &r in rows {
                    let local = (r - group_start) as i64;
                    let i = pages.partition_point(|p| p.first_row_index <= local);
                    if let Some(p) = i.checked_sub(1).map(|i| &pages[i]) {
                        ranges.push(
                            p.offset as u64..(p.offset + p.compressed_page_size as i64) as u64,
                        );
                    }
                }
            }
        }
        group_start = group_end;
    }
    ranges
}

/// Sorted, with overlapping and touching ranges merged.
fn merge_ranges(ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    merge_ranges_within(ranges, 0)
}

/// Sorted, with ranges at most `gap` bytes apart merged.
fn merge_ranges_within(mut ranges: Vec<Range<u64>>, gap: u64) -> Vec<Range<u64>> {
    ranges.sort_unstable_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end + gap => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

/// A Parquet reader that serves reads from prefetched byte ranges, and anything else
/// from the object store.
struct Prefetched {
    inner: ParquetObjectReader,
    /// Disjoint, sorted by start.
    pages: Vec<(Range<u64>, Bytes)>,
}

impl Prefetched {
    /// `ranges` (disjoint, sorted) of `url` fetched in one concurrent request set.
    async fn fetch(
        store: &Arc<dyn ObjectStore>,
        url: &StorageUrl,
        ranges: Vec<Range<u64>>,
    ) -> Result<Self> {
        let fetched = if ranges.is_empty() {
            Vec::new()
        } else {
            store
                .get_ranges(&url.object_path()?, &ranges)
                .await
                .map_err(|e| JammiError::storage(url, e))?
        };
        Ok(Prefetched {
            inner: reader(store, url)?,
            pages: ranges.into_iter().zip(fetched).collect(),
        })
    }

    fn cached(&self, range: &Range<u64>) -> Option<Bytes> {
        let i = self.pages.partition_point(|(r, _)| r.start <= range.start);
        let (r, bytes) = &self.pages[i.checked_sub(1)?];
        (range.end <= r.end)
            .then(|| bytes.slice((range.start - r.start) as usize..(range.end - r.start) as usize))
    }
}

impl AsyncFileReader for Prefetched {
    fn get_bytes(
        &mut self,
        range: Range<u64>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Bytes>> {
        match self.cached(&range) {
            Some(b) => Box::pin(futures::future::ready(Ok(b))),
            None => self.inner.get_bytes(range),
        }
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, datafusion::parquet::errors::Result<Vec<Bytes>>> {
        let cached: Option<Vec<Bytes>> = ranges.iter().map(|r| self.cached(r)).collect();
        match cached {
            Some(all) => Box::pin(futures::future::ready(Ok(all))),
            None => self.inner.get_byte_ranges(ranges),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, datafusion::parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.inner.get_metadata(options)
    }
}
