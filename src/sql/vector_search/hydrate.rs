//! The hit rows' columns. Only the hit rows are read from Parquet (row selection over the
//! page index, the pages of all hits in one coalesced request); the vector column of index
//! hits comes from the index itself when it holds the column's exact values (`Float32`
//! elements), the key column from the rowmap when it carries the keys, and small
//! fixed-width columns (a file's `id`) from the whole column kept once per file version —
//! so a query that returns only keys and distances reads no Parquet page once warm.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt64Array};
use datafusion::arrow::compute::{cast, take};
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use object_store::{ObjectMeta, ObjectStore};

use crate::error::Result;
use crate::index::loaded::{Hit, LoadedIndex};
use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::resolve::SearchSpec;
use crate::store::read;

/// The table columns `wanted` (indices into the table's schema) of `hits`, in `wanted`'s
/// order. `meta` loads the footer, only if a column must be read from the file; `current`
/// is the file's version, under which `ctx` keeps small whole columns.
pub(crate) async fn table_columns<'m, F, M>(
    (spec, ctx, current): (&SearchSpec, &SearchContext, &ObjectMeta),
    store: &Arc<dyn ObjectStore>,
    meta: M,
    hits: &[Hit],
    loaded: Option<&LoadedIndex>,
    wanted: &[usize],
) -> Result<(Vec<ArrayRef>, u64)>
where
    M: Fn() -> F,
    F: std::future::Future<Output = Result<&'m ArrowReaderMetadata>>,
{
    let target = &spec.target;
    let keys: Option<Vec<u64>> = hits.iter().map(|h| h.key).collect();
    let from_index = match (loaded, &keys) {
        (Some(l), Some(keys)) if wanted.contains(&spec.vector_idx) => {
            l.vectors(keys, target.schema.field(spec.vector_idx).data_type())?
        }
        _ => None,
    };
    let key_col = target.key_column();
    let from_keys = match (loaded.and_then(|l| l.keys()), key_col, &keys) {
        (Some(all), Some(kc), Some(keys)) if wanted.contains(&kc) => {
            let taken = take(all.as_ref(), &UInt64Array::from(keys.clone()), None)?;
            // The column as this table reads it (e.g. strings as views).
            Some(cast(&taken, target.schema.field(kc).data_type())?)
        }
        _ => None,
    };
    let mut file_cols: Vec<usize> = wanted
        .iter()
        .copied()
        .filter(|&c| !(c == spec.vector_idx && from_index.is_some()))
        .filter(|&c| !(Some(c) == key_col && from_keys.is_some()))
        .collect();
    file_cols.sort_unstable();
    file_cols.dedup();
    let positions: Vec<u64> = hits.iter().map(|h| h.row).collect();
    let mut kept: Vec<(usize, ArrayRef)> = Vec::new();
    let url = &target.parquet;
    if !file_cols.is_empty() && !positions.is_empty() {
        let (m, at) = (meta().await?, UInt64Array::from(positions.clone()));
        let in_file = read::file_columns(url, m, &target.schema, &file_cols)?;
        for (&c, &f) in file_cols.iter().zip(&in_file) {
            let ty = target.schema.field(c).data_type();
            let whole = ctx.small_column(store, (url, current), m, f, ty).await?;
            if let Some(whole) = whole {
                kept.push((c, take(whole.as_ref(), &at, None)?));
            }
        }
        file_cols.retain(|c| kept.iter().all(|(k, _)| k != c));
    }
    let rows: Option<RecordBatch> = if file_cols.is_empty() || positions.is_empty() {
        None
    } else {
        let m = meta().await?;
        let in_file = read::file_columns(url, m, &target.schema, &file_cols)?;
        Some(read::read_rows(store, url, m, &positions, &in_file).await?)
    };
    let hydrated = rows.as_ref().map_or(0, |_| positions.len() as u64);
    let mut out = Vec::with_capacity(wanted.len());
    for &c in wanted {
        if let Some((_, a)) = kept.iter().find(|(k, _)| *k == c) {
            out.push(a.clone());
            continue;
        }
        let arr = match (&rows, &from_index, &from_keys) {
            (_, Some(v), _) if c == spec.vector_idx => v.clone(),
            (_, _, Some(k)) if Some(c) == key_col => k.clone(),
            (Some(b), _, _) => read::table_column(b, target.schema.field(c))?,
            (None, _, _) => {
                datafusion::arrow::array::new_empty_array(target.schema.field(c).data_type())
            }
        };
        out.push(arr);
    }
    Ok((out, hydrated))
}
