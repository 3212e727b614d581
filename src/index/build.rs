//! Building a USearch index while batches arrive: capacity reserved ahead, vectors added
//! on every core, NULL vectors skipped, and the rowmap kept alongside.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;

use crate::error::{JammiError, Result};
use crate::format::rowmap::{KeySpill, SpilledKeys};
use crate::index::IndexParams;
use crate::index::vectors::{VectorColumn, check_finite};

/// What [`IndexBuilder::finish`] returns.
pub struct Finished {
    /// The index, if any vector or a fixed dimension was seen.
    pub index: Option<Arc<usearch::Index>>,
    /// Row position of each index key.
    pub rowmap: Vec<u64>,
    /// Dimensions, once known.
    pub dimensions: Option<usize>,
    /// The key column's values in index-key order, when keys were given.
    pub keys: Option<SpilledKeys>,
}

/// Accumulates an index and its rowmap from batches of one vector column.
pub struct IndexBuilder {
    column: String,
    params: IndexParams,
    dimensions: Option<usize>,
    index: Option<Arc<usearch::Index>>,
    rowmap: Vec<u64>,
    rows_seen: u64,
    threads: usize,
    keys: Option<KeySpill>,
}

impl IndexBuilder {
    /// A builder for `column`; `dimensions` is known up front for fixed-size lists.
    pub fn new(column: &str, params: IndexParams, dimensions: Option<usize>) -> Self {
        IndexBuilder {
            column: column.to_string(),
            params,
            dimensions,
            index: None,
            rowmap: Vec::new(),
            rows_seen: 0,
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            keys: None,
        }
    }

    /// Also records the values of key column `field` (passed to [`Self::add_batch`]) of
    /// every indexed row, for the rowmap.
    pub fn with_keys(mut self, field: &datafusion::arrow::datatypes::Field) -> Result<Self> {
        self.keys = Some(KeySpill::new(field)?);
        Ok(self)
    }

    /// Dimensions, once known.
    pub fn dimensions(&self) -> Option<usize> {
        self.dimensions
    }

    /// Vectors added so far.
    pub fn len(&self) -> usize {
        self.rowmap.len()
    }

    /// `true` when no vector was added yet.
    pub fn is_empty(&self) -> bool {
        self.rowmap.is_empty()
    }

    fn ensure_index(&mut self, dims: usize, extra: usize) -> Result<Arc<usearch::Index>> {
        if self.index.is_none() {
            let idx = usearch::Index::new(&self.params.options(dims))
                .map_err(|e| JammiError::Index(e.to_string()))?;
            self.index = Some(Arc::new(idx));
        }
        let idx = self.index.clone().expect("created above");
        let need = self.rowmap.len() + extra;
        if idx.capacity() < need {
            let cap = need.max(idx.capacity() * 2).max(1024);
            idx.reserve_capacity_and_threads(cap, self.threads)
                .map_err(|e| JammiError::Index(e.to_string()))?;
        }
        Ok(idx)
    }

    /// Reserves room for `n` more vectors (when the caller knows the row count).
    pub fn reserve(&mut self, n: usize) -> Result<()> {
        if let Some(d) = self.dimensions {
            self.ensure_index(d, n)?;
        }
        Ok(())
    }

    /// Adds the vectors of one batch's column (and, with [`Self::with_keys`], their rows'
    /// keys); row positions continue from earlier batches. CPU-bound: call it from a
    /// blocking context.
    pub fn add_batch(&mut self, array: &ArrayRef, keys: Option<&ArrayRef>) -> Result<()> {
        let col = VectorColumn::new(&self.column, array)?;
        let base_row = self.rows_seen;
        self.rows_seen += col.len() as u64;
        let mut rows = Vec::with_capacity(col.len());
        for r in 0..col.len() {
            let Some(v) = col.get(r) else { continue };
            let d = *self.dimensions.get_or_insert(v.len());
            if v.len() != d {
                return Err(JammiError::InvalidInput(format!(
                    "vector column '{}' row {} has {} dimensions, expected {d}",
                    self.column,
                    base_row + r as u64,
                    v.len()
                )));
            }
            // `format_args!` is lazy: the message is only built for a bad row.
            check_finite(
                format_args!(
                    "vector column '{}' row {}",
                    self.column,
                    base_row + r as u64
                ),
                &v,
            )?;
            rows.push(r);
        }
        if rows.is_empty() {
            return Ok(());
        }
        if let (Some(spill), Some(keys)) = (self.keys.as_mut(), keys) {
            spill.push(keys, &rows)?;
        }
        let dims = self.dimensions.expect("set by the first vector");
        let index = self.ensure_index(dims, rows.len())?;
        let first_key = self.rowmap.len() as u64;
        let chunk = rows.len().div_ceil(self.threads);
        let col = &col;
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = rows
                .chunks(chunk)
                .enumerate()
                .map(|(ci, part)| {
                    let index = &index;
                    s.spawn(move || -> Result<()> {
                        for (j, &r) in part.iter().enumerate() {
                            let key = first_key + (ci * chunk + j) as u64;
                            let v = col.get(r).expect("non-null checked");
                            index
                                .add(key, &v)
                                .map_err(|e| JammiError::Index(e.to_string()))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| JammiError::Index("index worker panicked".into()))??;
            }
            Ok(())
        })?;
        self.rowmap
            .extend(rows.iter().map(|&r| base_row + r as u64));
        Ok(())
    }

    /// [`Self::add_batch`] on a blocking thread, for async callers.
    pub async fn add_batch_blocking(
        mut self,
        array: ArrayRef,
        keys: Option<ArrayRef>,
    ) -> Result<Self> {
        tokio::task::spawn_blocking(move || self.add_batch(&array, keys.as_ref()).map(|_| self))
            .await
            .map_err(|e| JammiError::Index(e.to_string()))?
    }

    /// [`Self::finish`] on a blocking thread, for async callers.
    pub async fn finish_blocking(self) -> Result<Finished> {
        tokio::task::spawn_blocking(move || self.finish())
            .await
            .map_err(|e| JammiError::Index(e.to_string()))?
    }

    /// The finished index (if any vector or a fixed dimension was seen), the rowmap and the
    /// dimensions.
    pub fn finish(mut self) -> Result<Finished> {
        if self.index.is_none()
            && let Some(d) = self.dimensions
        {
            self.ensure_index(d, 0)?;
        }
        let keys = self.keys.take().map(KeySpill::finish).transpose()?;
        Ok(Finished {
            index: self.index,
            rowmap: self.rowmap,
            dimensions: self.dimensions,
            keys,
        })
    }
}
