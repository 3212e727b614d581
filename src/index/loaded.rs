//! A loaded index and its search: the only code that drives USearch at query time.
//!
//! The index owns its search semantics: `k`, the expansion (`ef`) of one query, a
//! pre-filter over Parquet rows (a very selective one is answered exactly over the matching
//! vectors, which beats graph traversal), and batches of queries searched on every core.

use std::path::PathBuf;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;

use crate::error::{JammiError, Result};
use crate::format::manifest::IndexInfo;
use crate::index::Metric;
use crate::index::Quantization;
use crate::index::exact::TopK;
use crate::index::quantize::{GraphVector, VectorFile};
use crate::storage::cache::LocalFile;

/// One query of an index search.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    /// The query vector.
    pub vector: &'a [f32],
    /// How many neighbours.
    pub k: usize,
    /// HNSW expansion for this query (`None`: the index's default).
    pub ef: Option<usize>,
}

/// One neighbour: its Parquet row, its index key, its distance (`_distance`'s value).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hit {
    /// Row position in the Parquet file.
    pub row: u64,
    /// Key in the index (`None` for exact searches over the file).
    pub key: Option<u64>,
    /// Distance under the index's metric, finalized (`l2`: Euclidean).
    pub distance: f32,
}

/// How a search was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Graph search.
    Index,
    /// Graph search restricted by the pre-filter.
    IndexFilter,
    /// Exact search over the few vectors the pre-filter allows.
    ExactFilter,
}

impl Answered {
    /// `index`, `index+filter`, `index+exact-filter`.
    pub fn as_str(self) -> &'static str {
        match self {
            Answered::Index => "index",
            Answered::IndexFilter => "index+filter",
            Answered::ExactFilter => "index+exact-filter",
        }
    }
}

/// The hits of one search, nearest first, and how it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct Searched {
    /// The neighbours.
    pub hits: Vec<Hit>,
    /// How.
    pub answered: Answered,
    /// Vectors the search compared (graph: USearch's visited count; exact: all allowed).
    pub candidates: usize,
}

/// An index ready to search, with its rowmap.
pub struct LoadedIndex {
    index: usearch::Index,
    rowmap: Vec<u64>,
    keys: Option<ArrayRef>,
    info: IndexInfo,
    bytes: u64,
    /// The expansion in force. Searches with it hold the lock shared; a search with another
    /// `ef` holds it exclusively while it changes the expansion, which then stays in force,
    /// so repeated searches with one `ef` run side by side.
    search_lock: std::sync::RwLock<usize>,
    /// Key `i` is row `i` for every row: a pre-filter's count over rows is the count over
    /// keys.
    dense: bool,
    /// A quantised index's exact vectors, for re-ranking.
    exact: Option<VectorFile>,
    /// The local copy of a remote index file (kept while mapped).
    _file: Option<LocalFile>,
    _path: PathBuf,
}

impl std::fmt::Debug for LoadedIndex {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedIndex")
            .field("info", &self.info)
            .field("vectors", &self.rowmap.len())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn idx_err<E: std::fmt::Display>(e: E) -> JammiError {
    JammiError::Index(e.to_string())
}

impl LoadedIndex {
    pub(crate) fn new(
        index: usearch::Index,
        rowmap: Vec<u64>,
        keys: Option<ArrayRef>,
        info: IndexInfo,
        bytes: u64,
        file: Option<LocalFile>,
        path: PathBuf,
    ) -> Self {
        let dense = rowmap.iter().enumerate().all(|(i, r)| *r == i as u64);
        let ef = info.expansion_search;
        LoadedIndex {
            index,
            rowmap,
            dense,
            keys,
            info,
            bytes,
            search_lock: std::sync::RwLock::new(ef),
            exact: None,
            _file: file,
            _path: path,
        }
    }

    /// Parameters from the manifest.
    pub fn info(&self) -> &IndexInfo {
        &self.info
    }

    /// Vectors in the index.
    pub fn len(&self) -> usize {
        self.rowmap.len()
    }

    /// `true` when the index holds no vector.
    pub fn is_empty(&self) -> bool {
        self.rowmap.is_empty()
    }

    /// Bytes this index accounts for in memory (index file + rowmap).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Index key → Parquet row position.
    pub fn rowmap(&self) -> &[u64] {
        &self.rowmap
    }

    /// The key column's values in index-key order (tables with a key column).
    pub fn keys(&self) -> Option<&ArrayRef> {
        self.keys.as_ref()
    }

    /// This index with the exact vectors of its keys (a quantised index's sibling).
    pub(crate) fn with_exact(mut self, exact: Option<VectorFile>) -> Self {
        self.exact = exact;
        self
    }

    /// The exact vectors of `keys` (`dims` values each, in `keys`' order), when the index
    /// has its exact-vectors file (read through `store` if remote); `None` otherwise (the
    /// Parquet file holds them too).
    pub async fn exact_vectors(
        &self,
        store: &std::sync::Arc<dyn object_store::ObjectStore>,
        keys: &[u64],
    ) -> Result<Option<Vec<f32>>> {
        match &self.exact {
            Some(f) => f.read(store, keys).await.map(Some),
            None => Ok(None),
        }
    }

    /// The scalar type the graph stores.
    pub fn quantization(&self) -> Quantization {
        self.info.quantization
    }

    /// `true` when the graph's vectors and distances are approximations of the exact ones.
    pub fn is_quantised(&self) -> bool {
        self.info.quantization != Quantization::F32
    }

    fn metric(&self) -> Metric {
        self.info.metric
    }

    /// Runs `f` with the expansion `ef` in force (the index's default when `None`).
    fn with_ef<T>(&self, ef: Option<usize>, f: impl FnOnce() -> T) -> T {
        let want = ef.unwrap_or(self.info.expansion_search);
        {
            let current = self.search_lock.read().expect("lock");
            if *current == want {
                return f();
            }
        }
        let mut current = self.search_lock.write().expect("lock");
        if *current != want {
            self.index.change_expansion_search(want);
            *current = want;
        }
        f()
    }

    fn hits(&self, m: &usearch::ffi::Matches) -> Vec<Hit> {
        m.keys
            .iter()
            .zip(&m.distances)
            .map(|(k, d)| Hit {
                row: self.rowmap[*k as usize],
                key: Some(*k),
                distance: self.metric().finalize(*d),
            })
            .collect()
    }

    /// The `k` nearest neighbours of `query`; `allowed[row]` is the pre-filter over Parquet
    /// rows. With a filter, k rows come back whenever k rows match.
    pub fn search(&self, query: &Query<'_>, allowed: Option<&[bool]>) -> Result<Searched> {
        self.with_ef(query.ef, || self.search_held(query, allowed))
    }

    /// Searches every query of `queries` with `k`, `ef` and the pre-filter `allowed`, on up
    /// to `threads` threads sharing the index; results in query order.
    pub fn search_batch(
        &self,
        queries: &[Vec<f32>],
        k: usize,
        ef: Option<usize>,
        allowed: Option<&[bool]>,
        threads: usize,
    ) -> Result<Vec<Searched>> {
        let threads = threads.clamp(1, queries.len().max(1));
        let chunk = queries.len().div_ceil(threads).max(1);
        // One expansion for the whole batch, set once under the lock.
        self.with_ef(ef, || {
            std::thread::scope(|s| {
                let parts: Vec<_> = queries
                    .chunks(chunk)
                    .map(|part| {
                        s.spawn(move || {
                            part.iter()
                                .map(|v| {
                                    let q = Query { vector: v, k, ef };
                                    self.search_held(&q, allowed)
                                })
                                .collect::<Result<Vec<_>>>()
                        })
                    })
                    .collect();
                let mut out = Vec::with_capacity(queries.len());
                for p in parts {
                    out.extend(
                        p.join()
                            .map_err(|_| idx_err("a search thread panicked"))??,
                    );
                }
                Ok(out)
            })
        })
    }

    /// One search, the search lock held by the caller.
    fn search_held(&self, query: &Query<'_>, allowed: Option<&[bool]>) -> Result<Searched> {
        self.check_dims(query.vector)?;
        let graph_query = GraphVector::new(self.info.quantization, query.vector);
        let Some(allowed) = allowed else {
            let m = graph_query.search(&self.index, query.k)?;
            return Ok(Searched {
                candidates: m.keys.len(),
                hits: self.hits(&m),
                answered: Answered::Index,
            });
        };
        let ok = |key: u64| {
            self.rowmap
                .get(key as usize)
                .and_then(|r| allowed.get(*r as usize))
                .copied()
                .unwrap_or(false)
        };
        let matching = if self.dense && allowed.len() == self.rowmap.len() {
            allowed.iter().filter(|a| **a).count()
        } else {
            (0..self.rowmap.len() as u64).filter(|k| ok(*k)).count()
        };
        let want = query.k.min(matching);
        // Selective filters: exact over the few matching vectors beats graph traversal.
        if matching <= (query.k * 64).max(self.rowmap.len() / 100) {
            let mut top = TopK::new(query.k);
            for key in (0..self.rowmap.len() as u64).filter(|k| ok(*k)) {
                // Keys rise with row positions, so the tie-break by key is the one by row.
                top.push(self.stored_distance(key, query.vector, &graph_query)?, key);
            }
            let hits = top
                .into_sorted()
                .into_iter()
                .map(|(key, d)| Hit {
                    row: self.rowmap[key as usize],
                    key: Some(key),
                    distance: self.metric().finalize(d),
                })
                .collect();
            return Ok(Searched {
                hits,
                answered: Answered::ExactFilter,
                candidates: matching,
            });
        }
        // Permissive filters (most rows allowed, as after a DELETE): a plain search for a few
        // more than k, keeping the allowed, costs what one search costs; USearch's filtered
        // search is the fallback when too few survive.
        if matching * 2 >= self.rowmap.len() {
            let fetch = (query.k * self.rowmap.len() * 5).div_ceil(matching * 4) + 1;
            let m = graph_query.search(&self.index, fetch)?;
            let hits: Vec<Hit> = self
                .hits(&m)
                .into_iter()
                .filter(|h| h.key.is_some_and(ok))
                .take(query.k)
                .collect();
            if hits.len() >= want {
                return Ok(Searched {
                    candidates: m.keys.len(),
                    hits,
                    answered: Answered::IndexFilter,
                });
            }
        }
        let m = graph_query.filtered_search(&self.index, query.k, ok)?;
        let hits = self.hits(&m);
        if hits.len() < want {
            return Err(JammiError::Index(format!(
                "filtered search returned {} of {want} rows",
                hits.len()
            )));
        }
        Ok(Searched {
            candidates: m.keys.len(),
            hits,
            answered: Answered::IndexFilter,
        })
    }

    /// The distance of the vector stored under `key` to `query` (`graph` is `query` as the
    /// graph takes it), as the graph ranks it: exact for `f32`, approximate when quantised
    /// (a binary graph counts differing sign bits).
    fn stored_distance(&self, key: u64, query: &[f32], graph: &GraphVector<'_>) -> Result<f32> {
        let stored = GraphVector::stored(&self.index, self.info.quantization, key)?;
        Ok(match (&stored, graph) {
            (GraphVector::Bits(a), GraphVector::Bits(b)) => a
                .iter()
                .zip(b)
                .map(|(x, y)| (x.0 ^ y.0).count_ones())
                .sum::<u32>() as f32,
            (GraphVector::Floats(v), _) => self.metric().raw_distance(query, v),
            (GraphVector::Bits(_), GraphVector::Floats(_)) => {
                return Err(idx_err("a binary graph searched with floats"));
            }
        })
    }

    fn check_dims(&self, v: &[f32]) -> Result<()> {
        if v.len() != self.info.dimensions {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: the query has {} dimensions but column '{}' has {}",
                v.len(),
                self.info.column,
                self.info.dimensions
            )));
        }
        Ok(())
    }

    /// The vectors of index keys `keys` as the index stores them (`f32`), in `data_type`
    /// (`FixedSizeList<Float32>` or `List<Float32>` of the index's dimensions); `None` for
    /// another type or a quantised index, whose values the index does not hold exactly.
    pub fn vectors(&self, keys: &[u64], data_type: &DataType) -> Result<Option<ArrayRef>> {
        if self.is_quantised() {
            return Ok(None);
        }
        use datafusion::arrow::array::{FixedSizeListArray, Float32Array, ListArray};
        use datafusion::arrow::buffer::OffsetBuffer;
        use std::sync::Arc;
        let dims = self.info.dimensions;
        let mut values = vec![0f32; keys.len() * dims];
        let read = |values: &mut [f32]| -> Result<()> {
            for (key, out) in keys.iter().zip(values.chunks_mut(dims.max(1))) {
                let n = self.index.get(*key, out).map_err(idx_err)?;
                if n != 1 {
                    return Err(JammiError::Index(format!(
                        "index has no vector for key {key}"
                    )));
                }
            }
            Ok(())
        };
        let array: ArrayRef = match data_type {
            DataType::FixedSizeList(f, n)
                if f.data_type() == &DataType::Float32 && *n as usize == dims =>
            {
                read(&mut values)?;
                Arc::new(FixedSizeListArray::try_new(
                    f.clone(),
                    *n,
                    Arc::new(Float32Array::from(values)),
                    None,
                )?)
            }
            DataType::List(f) if f.data_type() == &DataType::Float32 => {
                read(&mut values)?;
                Arc::new(ListArray::try_new(
                    f.clone(),
                    OffsetBuffer::from_lengths(std::iter::repeat_n(dims, keys.len())),
                    Arc::new(Float32Array::from(values)),
                    None,
                )?)
            }
            _ => return Ok(None),
        };
        Ok(Some(array))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::IndexParams;
    use crate::index::build::IndexBuilder;
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array};
    use datafusion::arrow::datatypes::Field;
    use std::sync::Arc;

    const DIMS: usize = 8;

    /// `n` vectors on a line, `i` at distance `i` from the origin's neighbour `[1, 0, …]`.
    fn line(n: usize) -> (LoadedIndex, Vec<Vec<f32>>) {
        let rows: Vec<Vec<f32>> = (0..n)
            .map(|i| {
                let mut v = vec![0f32; DIMS];
                v[0] = i as f32;
                v[1] = 1.0;
                v
            })
            .collect();
        let column: ArrayRef = Arc::new(FixedSizeListArray::new(
            Arc::new(Field::new("item", DataType::Float32, true)),
            DIMS as i32,
            Arc::new(Float32Array::from(rows.concat())),
            None,
        ));
        let params = IndexParams {
            metric: Metric::L2,
            ..IndexParams::default()
        };
        let mut b = IndexBuilder::new("v", params, Some(DIMS));
        b.add_batch(&column, None).unwrap();
        let f = b.finish().unwrap();
        let index = Arc::try_unwrap(f.index.unwrap()).ok().unwrap();
        let info = IndexInfo {
            column: "v".into(),
            dimensions: DIMS,
            metric: Metric::L2,
            quantization: Quantization::F32,
            connectivity: params.connectivity,
            expansion_add: params.expansion_add,
            expansion_search: params.expansion_search,
            vectors: n as u64,
            usearch_version: String::new(),
        };
        let loaded = LoadedIndex::new(index, f.rowmap, None, info, 0, None, PathBuf::new());
        (loaded, rows)
    }

    fn rows_of(s: &Searched) -> Vec<u64> {
        s.hits.iter().map(|h| h.row).collect()
    }

    #[test]
    fn a_permissive_filter_returns_the_nearest_allowed_rows() {
        let (index, rows) = line(2_000);
        // Every tenth row deleted: the nearest allowed rows to row 0 are 1..=11 but 10.
        let allowed: Vec<bool> = (0..rows.len()).map(|r| r % 10 != 0).collect();
        let q = Query {
            vector: &rows[0],
            k: 10,
            ef: None,
        };
        let got = index.search(&q, Some(&allowed)).unwrap();
        assert_eq!(rows_of(&got), vec![1, 2, 3, 4, 5, 6, 7, 8, 9, 11]);
        assert_eq!(got.answered, Answered::IndexFilter);
    }

    #[test]
    fn a_permissive_filter_hiding_every_near_row_still_returns_k_rows() {
        let (index, rows) = line(2_000);
        // Most rows allowed, but none of the 100 nearest the query: a search for a few more
        // than k finds no allowed row, and the filtered search answers.
        let allowed: Vec<bool> = (0..rows.len()).map(|r| r >= 100).collect();
        let q = Query {
            vector: &rows[0],
            k: 10,
            ef: None,
        };
        let got = index.search(&q, Some(&allowed)).unwrap();
        assert_eq!(got.hits.len(), 10);
        assert!(
            rows_of(&got).iter().all(|r| *r >= 100),
            "{:?}",
            rows_of(&got)
        );
    }

    #[test]
    fn a_search_with_its_own_expansion_leaves_later_searches_exact_enough() {
        let (index, rows) = line(500);
        let search = |ef| {
            let q = Query {
                vector: &rows[250],
                k: 3,
                ef,
            };
            rows_of(&index.search(&q, None).unwrap())
        };
        let mut nearest = search(None);
        nearest.sort();
        assert_eq!(nearest, vec![249, 250, 251]);
        for ef in [Some(200), None, Some(16), Some(16), None] {
            let mut got = search(ef);
            got.sort();
            assert_eq!(got, nearest, "ef {ef:?}");
        }
        assert_eq!(
            *index.search_lock.read().unwrap(),
            64,
            "the last search's ef stays"
        );
    }
}
