//! Building a USearch index while batches arrive: capacity reserved ahead, vectors added
//! on every core, NULL vectors skipped, and the rowmap kept alongside.
//!
//! Concurrent `add`s into a graph of a few nodes can link a node no search reaches
//! (unum-cloud/usearch#735: a 50-vector graph built on two threads missed its own vectors
//! in about 1 search of 550): the first [`SERIAL_PREFIX`] vectors go in on one thread, and
//! a graph of up to [`CHECKED_MAX`] vectors is checked whole when finished — every vector
//! searched for, any that does not find itself re-inserted.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;

use crate::error::{JammiError, Result};
use crate::format::rowmap::{KeySpill, SpilledKeys};
use crate::index::quantize::GraphVector;
use crate::index::vectors::{VectorColumn, check_finite};
use crate::index::{IndexParams, Quantization};

/// Vectors added on one thread before a build goes parallel.
pub const SERIAL_PREFIX: usize = 1024;

/// Largest graph checked vector by vector when a build finishes (a larger one costs more
/// than a few percent of the build to check).
pub const CHECKED_MAX: usize = 16_384;

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
    /// A quantised index's exact vectors, `f32` little-endian in index-key order, in a
    /// local temp file (uploaded beside the index, read back to re-rank candidates).
    pub exact: Option<tempfile::NamedTempFile>,
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
    exact: Option<std::io::BufWriter<tempfile::NamedTempFile>>,
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
            exact: None,
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
        self.spill_exact(&col, &rows)?;
        let dims = self.dimensions.expect("set by the first vector");
        let index = self.ensure_index(dims, rows.len())?;
        let first_key = self.rowmap.len() as u64;
        // The graph's first vectors on this thread (see the module docs).
        let serial = SERIAL_PREFIX
            .saturating_sub(self.rowmap.len())
            .min(rows.len());
        for (j, &r) in rows[..serial].iter().enumerate() {
            let v = col.get(r).expect("non-null checked");
            GraphVector::new(self.params.quantization, &v).add(&index, first_key + j as u64)?;
        }
        let (first_key, rest) = (first_key + serial as u64, &rows[serial..]);
        self.add_parallel(&index, &col, first_key, rest)?;
        self.rowmap
            .extend(rows.iter().map(|&r| base_row + r as u64));
        Ok(())
    }

    /// Keeps the exact vectors of `rows` (in key order) when the graph holds approximations.
    fn spill_exact(&mut self, col: &VectorColumn<'_>, rows: &[usize]) -> Result<()> {
        use std::io::Write;
        if self.params.quantization == Quantization::F32 {
            return Ok(());
        }
        if self.exact.is_none() {
            self.exact = Some(std::io::BufWriter::with_capacity(
                1 << 20,
                tempfile::NamedTempFile::new()?,
            ));
        }
        let out = self.exact.as_mut().expect("created above");
        for &r in rows {
            let v = col.get(r).expect("non-null checked");
            for x in v.iter() {
                out.write_all(&x.to_le_bytes())?;
            }
        }
        Ok(())
    }

    /// Adds the vectors of `rows` of `col` on every core, keys from `first_key` on.
    fn add_parallel(
        &self,
        index: &usearch::Index,
        col: &VectorColumn<'_>,
        first_key: u64,
        rows: &[usize],
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let chunk = rows.len().div_ceil(self.threads);
        std::thread::scope(|s| -> Result<()> {
            let handles: Vec<_> = rows
                .chunks(chunk)
                .enumerate()
                .map(|(ci, part)| {
                    let (index, q) = (&index, self.params.quantization);
                    s.spawn(move || -> Result<()> {
                        for (j, &r) in part.iter().enumerate() {
                            let key = first_key + (ci * chunk + j) as u64;
                            let v = col.get(r).expect("non-null checked");
                            GraphVector::new(q, &v).add(index, key)?;
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
        })
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
        if let Some(index) = &self.index
            && self.rowmap.len() <= CHECKED_MAX
        {
            reinsert_unreachable(index, self.params.quantization, self.threads)?;
        }
        let keys = self.keys.take().map(KeySpill::finish).transpose()?;
        let exact = match self.exact.take() {
            Some(w) => Some(w.into_inner().map_err(|e| e.into_error())?),
            None => None,
        };
        Ok(Finished {
            index: self.index,
            rowmap: self.rowmap,
            dimensions: self.dimensions,
            keys,
            exact,
        })
    }
}

/// Keys of `index` whose own vector's search does not return them (nor another vector at
/// distance 0, a duplicate), searched on `threads` threads.
pub(crate) fn unreachable(
    index: &usearch::Index,
    q: Quantization,
    threads: usize,
) -> Result<Vec<u64>> {
    let n = index.size() as u64;
    let per = n.div_ceil(threads.max(1) as u64).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..n)
            .step_by(per as usize)
            .map(|from| {
                s.spawn(move || -> Result<Vec<u64>> {
                    let mut missed = Vec::new();
                    for key in from..(from + per).min(n) {
                        let m = GraphVector::stored(index, q, key)?.search(index, 1)?;
                        let found = m.keys.first() == Some(&key)
                            || m.distances.first().is_some_and(|d| *d <= 0.0);
                        if !found {
                            missed.push(key);
                        }
                    }
                    Ok(missed)
                })
            })
            .collect();
        let mut all = Vec::new();
        for p in parts {
            all.extend(
                p.join()
                    .map_err(|_| JammiError::Index("index check panicked".into()))??,
            );
        }
        Ok(all)
    })
}

/// Re-inserts, on one thread, every vector of `index` that its own search misses, until
/// all are found (at most a few rounds: a re-inserted node is linked from a full graph).
fn reinsert_unreachable(index: &usearch::Index, q: Quantization, threads: usize) -> Result<()> {
    for _ in 0..4 {
        let missed = unreachable(index, q, threads)?;
        if missed.is_empty() {
            return Ok(());
        }
        tracing::debug!("re-inserting {} unreachable vectors", missed.len());
        for key in missed {
            // The graph's own copy goes back in (the exact vector is not at hand here).
            let v = GraphVector::stored(index, q, key)?;
            index.remove(key).map_err(idx_err)?;
            v.add(index, key)?;
        }
    }
    Ok(())
}

fn idx_err(e: impl std::fmt::Display) -> JammiError {
    JammiError::Index(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array};
    use datafusion::arrow::datatypes::{DataType, Field};

    /// `n` distinct pseudo-random `dims`-d vectors, as a fixed-size-list column.
    fn column(n: usize, dims: i32, seed: u64) -> ArrayRef {
        let mut x = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let values: Vec<f32> = (0..n * dims as usize)
            .map(|_| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
            })
            .collect();
        Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            dims,
            Arc::new(Float32Array::from(values)),
            None,
        ))
    }

    /// Built on two threads, as jammi-db builds, at every precision: builds of 50 and of
    /// 5,000 vectors, every vector its own nearest neighbour (or one stored alike).
    #[test]
    fn every_vector_of_a_two_thread_build_finds_itself_at_every_precision() {
        for q in Quantization::ALL {
            let params = IndexParams {
                quantization: q,
                ..IndexParams::default()
            };
            let builds = if q == Quantization::F32 { 20 } else { 5 };
            for (n, seed) in [50, 5_000]
                .into_iter()
                .flat_map(|n| (0..builds).map(move |s| (n, s)))
            {
                let mut b = IndexBuilder::new("v", params, Some(32));
                b.threads = 2;
                b.add_batch(&column(n, 32, seed), None).unwrap();
                let f = b.finish().unwrap();
                let index = f.index.unwrap();
                assert_eq!(index.size(), n);
                let missed = unreachable(&index, q, 2).unwrap();
                assert!(
                    missed.is_empty(),
                    "{q}, {n} vectors, build {seed}: {missed:?}"
                );
                // A quantised graph keeps the exact vectors beside it, 4 bytes a value.
                let exact = f.exact.map(|t| t.as_file().metadata().unwrap().len());
                let want = (q != Quantization::F32).then_some(n as u64 * 32 * 4);
                assert_eq!(exact, want, "{q}");
            }
        }
    }
}
