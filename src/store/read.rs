//! Row access to a table's Parquet file: the footer and page index once, then only the
//! pages holding the requested rows (a `RowSelection`), never a full scan.

// parquet 59 deprecates `ParquetObjectReader` in favour of hand-written readers; it is still
// the maintained object_store bridge DataFusion itself uses, so it is used here.
#![allow(deprecated)]

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, UInt32Array};
use datafusion::arrow::compute::take_record_batch;
use datafusion::arrow::datatypes::{Field, SchemaRef};
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, RowSelection, RowSelector,
};
use datafusion::parquet::arrow::async_reader::{
    ParquetObjectReader, ParquetRecordBatchStream, ParquetRecordBatchStreamBuilder,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::storage::StorageUrl;

fn reader(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<ParquetObjectReader> {
    Ok(ParquetObjectReader::new(store.clone(), url.object_path()?))
}

/// Footer and page index of a Parquet file.
pub async fn load_metadata(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
) -> Result<ArrowReaderMetadata> {
    // With the size known the footer is one bounded range read (Azure refuses suffix ranges).
    let size = store
        .head(&url.object_path()?)
        .await
        .map_err(|e| JammiError::storage(url, e))?
        .size;
    let mut r = reader(store, url)?.with_file_size(size);
    let opts = ArrowReaderOptions::new().with_page_index(true);
    ArrowReaderMetadata::load_async(&mut r, opts)
        .await
        .map_err(|e| JammiError::InvalidInput(format!("cannot read Parquet footer of {url}: {e}")))
}

/// The Arrow schema of a Parquet file.
pub async fn parquet_schema(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<SchemaRef> {
    Ok(load_metadata(store, url).await?.schema().clone())
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

/// Streams one column (for indexing an existing file): (projected schema, rows, stream).
pub async fn vector_batches(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    column: &str,
) -> Result<VectorScan> {
    let meta = load_metadata(store, url).await?;
    let idx = meta.schema().index_of(column).map_err(|_| {
        JammiError::InvalidInput(format!(
            "column '{column}' not found in {url}; columns: {}",
            crate::store::write::column_names(meta.schema())
        ))
    })?;
    let rows = meta.metadata().file_metadata().num_rows() as u64;
    let stream = scan_columns(store, url, &meta, &[idx]).await?;
    Ok(VectorScan {
        file_schema: meta.schema().clone(),
        field: stream.schema().field(0).clone(),
        rows,
        batches: stream.map_err(JammiError::from).boxed(),
    })
}

/// A streamed read of one vector column, with what the footer said about the file.
pub struct VectorScan {
    /// Schema of the whole file.
    pub file_schema: SchemaRef,
    /// The vector column's field.
    pub field: Field,
    /// Rows in the file.
    pub rows: u64,
    /// Single-column batches in row order.
    pub batches: futures::stream::BoxStream<'static, Result<RecordBatch>>,
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
        None => {
            let stream = ParquetRecordBatchStreamBuilder::new_with_metadata(
                reader(store, url)?,
                meta.clone(),
            )
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
