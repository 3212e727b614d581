//! `vector_search`: nearest neighbours in SQL, as a plan DataFusion runs.
//!
//! ```sql
//! SELECT * FROM vector_search('docs', [0.1, 0.2, ...], 10 [, 'ef_search=64; filter=lang = ''en''']);
//! SELECT * FROM vector_search('docs', $1, 10);                                  -- a parameter
//! SELECT * FROM vector_search('docs', (SELECT embedding FROM docs WHERE id = 5), 10);
//! SELECT * FROM vector_search_batch('docs', (SELECT qid, qvec FROM queries), 10);
//! SELECT id FROM docs ORDER BY cosine_distance(embedding, $1) LIMIT 10;          -- by the index
//! ```
//!
//! `table` is a result table, a table created with `OPTIONS ('jammi.vector_column' ...)`,
//! any table over one Parquet file, or a Parquet file's URL. The output is the table's
//! columns plus `_distance` (Float32), nearest first. The query vector is an array literal,
//! a string holding a JSON array of numbers, a bound parameter or a scalar subquery; it is
//! checked when the plan runs. `vector_search_batch` searches every row of a query relation
//! `(key, vector)` and returns `query_<key>`, the hit's columns, `_distance` and `_rank`.
//!
//! Options (`key=value`, separated by `;`): `ef_search=N`, `exact=true`,
//! `filter=<SQL predicate>` (a pre-filter applied during the search, so k rows come back
//! whenever k rows match), `columns=a,b`, `column=<vector column>`, `metric=cosine|l2|ip`.
//!
//! Planning resolves the table and reads at most its manifest ([`node`]); the search runs in
//! [`exec::VectorSearchExec::execute`], which reports per-plan metrics; [`rules`] answers
//! `ORDER BY <distance> LIMIT k` with the index.

pub mod args;
pub mod exec;
pub(crate) mod function;
pub(crate) mod hydrate;
pub mod merge;
pub mod node;
pub mod planner;
pub mod resolve;
pub mod rules;

use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{Array, ArrayRef, new_empty_array};
use datafusion::arrow::compute::{cast, concat};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use datafusion::physical_plan::ExecutionPlan;
use object_store::{ObjectMeta, ObjectStore};

use crate::error::Result;
use crate::index::cache::IndexCache;
use crate::index::exact::ExactVectors;
use crate::lru::{BoundedLru, Weighed};
use crate::storage::metrics::RequestSnapshot;
use crate::storage::{StorageRegistry, StorageUrl};
use crate::store::identity::version_key;

pub use args::SearchOptions;
pub use exec::VectorSearchExec;
pub use node::VectorSearchNode;

/// Bytes of decoded vectors kept for exact searches.
const EXACT_CACHE_BYTES: u64 = 1 << 30;
/// Bytes of Parquet footers (with page indexes) kept.
const FOOTER_CACHE_BYTES: u64 = 256 << 20;
/// Bytes of whole decoded key-like columns kept (see [`SearchContext::small_column`]).
const COLUMN_CACHE_BYTES: u64 = 64 << 20;
/// The largest column kept whole: 1 Mi rows of 64-bit values.
const COLUMN_MAX_BYTES: u64 = 8 << 20;

/// A Parquet footer, weighed by its decoded size.
#[derive(Clone)]
struct Footer(ArrowReaderMetadata);

impl Weighed for Footer {
    fn weight(&self) -> u64 {
        self.0.metadata().memory_size() as u64
    }
}

/// A whole decoded column.
#[derive(Clone)]
struct WholeColumn(ArrayRef);

/// The rows a deletion file leaves live, as a search's row mask.
struct LiveRows(Arc<Vec<bool>>);

impl Weighed for LiveRows {
    fn weight(&self) -> u64 {
        self.0.len() as u64
    }
}

/// Bytes of live-row masks kept (one byte a row).
const LIVE_ROWS_CACHE_BYTES: u64 = 64 << 20;

impl Weighed for WholeColumn {
    fn weight(&self) -> u64 {
        self.0.get_array_memory_size() as u64
    }
}

impl Weighed for ExactVectors {
    fn weight(&self) -> u64 {
        self.bytes() as u64
    }
}

/// What every search of a session shares: the stores, and the one owner of the in-memory
/// caches (loaded indexes, footers, decoded vectors, small whole columns), each bounded and
/// keyed by the file's version, so a rewritten file is never answered from an old entry.
pub struct SearchContext {
    pub(crate) registry: StorageRegistry,
    pub(crate) indexes: Arc<IndexCache>,
    footers: Mutex<BoundedLru<String, Footer>>,
    exact: Mutex<BoundedLru<String, Arc<ExactVectors>>>,
    columns: Mutex<BoundedLru<String, WholeColumn>>,
    live: Mutex<BoundedLru<String, LiveRows>>,
}

impl std::fmt::Debug for SearchContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchContext")
            .field("indexes", &self.indexes.stats())
            .finish()
    }
}

impl SearchContext {
    pub(crate) fn new(registry: StorageRegistry, indexes: Arc<IndexCache>) -> Self {
        SearchContext {
            registry,
            indexes,
            footers: Mutex::new(BoundedLru::new(FOOTER_CACHE_BYTES)),
            exact: Mutex::new(BoundedLru::new(EXACT_CACHE_BYTES)),
            columns: Mutex::new(BoundedLru::new(COLUMN_CACHE_BYTES)),
            live: Mutex::new(BoundedLru::new(LIVE_ROWS_CACHE_BYTES)),
        }
    }

    /// The loaded-index cache.
    pub fn index_cache(&self) -> &Arc<IndexCache> {
        &self.indexes
    }

    /// Footer and page index of `url` at version `current`.
    pub(crate) async fn footer(
        &self,
        store: &Arc<dyn ObjectStore>,
        url: &StorageUrl,
        current: &ObjectMeta,
    ) -> Result<ArrowReaderMetadata> {
        let key = version_key(url, current);
        if let Some(f) = self.footers.lock().expect("lock").get(&key) {
            return Ok(f.0.clone());
        }
        let m = crate::store::read::load_metadata(store, url, Some(current.size)).await?;
        self.footers
            .lock()
            .expect("lock")
            .put(key, Footer(m.clone()));
        Ok(m)
    }

    /// The live rows of a segment of `rows` rows whose deletion file `d` (at `url`) records:
    /// read once per file (deletion files are written once, under fresh names, and checked
    /// against their record's size and CRC32C).
    pub(crate) async fn live_rows(
        &self,
        store: &Arc<dyn ObjectStore>,
        url: &StorageUrl,
        d: &crate::store::versions::DeletionRef,
        rows: usize,
    ) -> Result<Arc<Vec<bool>>> {
        let key = format!("{url}#{}:{}:{rows}", d.crc32c, d.size);
        if let Some(l) = self.live.lock().expect("lock").get(&key) {
            return Ok(l.0.clone());
        }
        let deleted = crate::store::versions::read_deletions_at(store, url, d).await?;
        let mut live = vec![true; rows];
        for r in deleted.iter() {
            if let Some(x) = live.get_mut(r as usize) {
                *x = false;
            }
        }
        let live = Arc::new(live);
        self.live
            .lock()
            .expect("lock")
            .put(key, LiveRows(live.clone()));
        Ok(live)
    }

    /// The decoded vectors of column `column` (`idx`) of `url` at version `current`.
    pub(crate) async fn exact_vectors(
        &self,
        store: &Arc<dyn ObjectStore>,
        url: &StorageUrl,
        current: &ObjectMeta,
        meta: &ArrowReaderMetadata,
        (idx, column): (usize, &str),
        dims: usize,
    ) -> Result<Arc<ExactVectors>> {
        let key = format!("{}#{column}#{dims}", version_key(url, current));
        if let Some(v) = self.exact.lock().expect("lock").get(&key) {
            return Ok(v.clone());
        }
        let v =
            Arc::new(crate::store::read::read_vectors(store, url, meta, idx, column, dims).await?);
        self.exact.lock().expect("lock").put(key, v.clone());
        Ok(v)
    }

    /// Column `idx` of `url` at version `current`, whole, decoded and typed `ty`, when it
    /// is a fixed-width column of at most [`COLUMN_MAX_BYTES`] (keys, numbers, dates);
    /// `None` for any other column. Hits of a table without keys in its rowmap take such
    /// columns from here instead of reading Parquet pages on every search: one read of
    /// the column per file version, like the rowmap's keys of a result table.
    pub(crate) async fn small_column(
        &self,
        store: &Arc<dyn ObjectStore>,
        (url, current): (&StorageUrl, &ObjectMeta),
        meta: &ArrowReaderMetadata,
        idx: usize,
        ty: &DataType,
    ) -> Result<Option<ArrayRef>> {
        let Some(width) = ty.primitive_width() else {
            return Ok(None);
        };
        let rows = meta.metadata().file_metadata().num_rows().max(0) as u64;
        if rows * width as u64 > COLUMN_MAX_BYTES {
            return Ok(None);
        }
        let key = format!("{}#{idx}", version_key(url, current));
        if let Some(c) = self.columns.lock().expect("lock").get(&key) {
            return Ok(Some(c.0.clone()));
        }
        let batches = crate::store::read::read_column(store, url, meta, idx).await?;
        let parts = batches
            .iter()
            .map(|b| cast(b.column(0), ty))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let refs: Vec<&dyn Array> = parts.iter().map(|a| a.as_ref()).collect();
        let column = match refs.as_slice() {
            [] => new_empty_array(ty),
            _ => concat(&refs)?,
        };
        self.columns
            .lock()
            .expect("lock")
            .put(key, WholeColumn(column.clone()));
        Ok(Some(column))
    }
}

/// How one search node of a plan was answered, read from the plan after it ran.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchStats {
    /// `index`, `index+filter`, `index+exact-filter` or `exact` (empty before it ran).
    pub mode: String,
    /// Why an exact search was used instead of the index.
    pub fallback_reason: Option<String>,
    /// Object-store requests made while it ran.
    pub requests: RequestSnapshot,
    /// Rows returned.
    pub rows: usize,
    /// Query vectors searched.
    pub queries: usize,
    /// Vectors compared.
    pub candidates: usize,
    /// Hit rows read from the Parquet file.
    pub rows_hydrated: usize,
    /// `true` when the index was loaded (not found in the cache) by this run.
    pub index_loaded: bool,
}

impl SearchStats {
    /// The statistics of every search node in `plan`, in plan order.
    pub fn of(plan: &Arc<dyn ExecutionPlan>) -> Vec<SearchStats> {
        let mut out = Vec::new();
        collect_stats(plan, &mut out);
        out
    }
}

fn collect_stats(plan: &Arc<dyn ExecutionPlan>, out: &mut Vec<SearchStats>) {
    if let Some(e) = plan.downcast_ref::<VectorSearchExec>() {
        out.push(e.stats());
    }
    for c in plan.children() {
        collect_stats(c, out);
    }
}
