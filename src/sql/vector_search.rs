//! `vector_search(table, query, k [, options])`: nearest neighbours in SQL.
//!
//! `table` is a result table, a table created with `OPTIONS ('jammi.vector_column' ...)`,
//! any table backed by one Parquet file, or a storage URL of a Parquet file. The output is
//! the table's columns plus `_distance` (Float32), nearest first, at most `k` rows. The
//! query is an array literal (`[0.1, 0.2, ...]`) or a string holding a JSON array of
//! numbers (`'[0.1, 0.2, ...]'`): the same `f32` values either way. `JammiSession::sql`
//! parses the first as the second; through a plain `SessionContext` the string is the
//! cheaper form to parse for long vectors.
//!
//! `options` is a string of `key=value` pairs separated by `;`:
//! - `ef_search=N`: HNSW expansion for this query (default: the index's);
//! - `exact=true`: brute force, ignoring the index;
//! - `filter=<SQL predicate>`: a pre-filter over the table's columns, applied during graph
//!   traversal (USearch filtered search), so k rows come back whenever k rows match;
//! - `columns=a,b`: the table columns to return (default all);
//! - `column=<name>`: the vector column, for tables without an index (default: the only one);
//! - `metric=cosine|l2|ip`: must match the index's; chooses the metric of an exact search.
//!
//! Only the hit rows are read: rowmap → row positions → Parquet row selection over the
//! page index. Without a usable index (none, checksum failure, version mismatch, `exact`)
//! the answer comes from an exact scan, with a warning saying why.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, RecordBatch, RecordBatchOptions,
};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::common::{DFSchema, ScalarValue, TableReference};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::ListingTable;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::ColumnarValue;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use futures::StreamExt;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::catalog::IndexedTable;
use crate::catalog::provider::block_on;
use crate::error::{JammiError, Result};
use crate::index::Metric;
use crate::index::cache::{IndexCache, IndexCacheStats, LoadedIndex};
use crate::index::exact::{ExactVectors, TopK};
use crate::index::vectors::check_vector_type;
use crate::storage::metrics::RequestSnapshot;
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};
use crate::store::Manifest;
use crate::store::identity::FileCheck;

/// Largest accepted `k`.
pub const MAX_K: usize = 10_000;

/// Name of the distance column.
pub const DISTANCE: &str = "_distance";

/// Options of one call (see the module docs for the string form).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchOptions {
    /// HNSW expansion at search time.
    pub ef_search: Option<usize>,
    /// Force brute force.
    pub exact: bool,
    /// Pre-filter predicate (SQL).
    pub filter: Option<String>,
    /// Columns to return.
    pub columns: Option<Vec<String>>,
    /// Vector column (for tables without an index).
    pub column: Option<String>,
    /// Metric to use / to check against the index.
    pub metric: Option<Metric>,
}

impl SearchOptions {
    /// Parses `key=value; key=value`.
    pub fn parse(s: &str) -> Result<Self> {
        let mut o = SearchOptions::default();
        for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                JammiError::InvalidInput(format!(
                    "vector_search option '{part}' is not of the form key=value"
                ))
            })?;
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "ef_search" | "ef" => {
                    o.ef_search =
                        Some(v.parse().ok().filter(|n: &usize| *n > 0).ok_or_else(|| {
                            JammiError::InvalidInput(format!(
                                "ef_search must be a positive integer, got '{v}'"
                            ))
                        })?)
                }
                "exact" => {
                    o.exact = match v.to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => {
                            return Err(JammiError::InvalidInput(format!(
                                "exact must be true or false, got '{v}'"
                            )));
                        }
                    }
                }
                "filter" | "where" => o.filter = Some(v.to_string()),
                "columns" => {
                    o.columns = Some(
                        v.split(',')
                            .map(|c| c.trim().to_string())
                            .filter(|c| !c.is_empty())
                            .collect(),
                    )
                }
                "column" | "vector_column" => o.column = Some(v.to_string()),
                "metric" => o.metric = Some(v.parse()?),
                other => {
                    return Err(JammiError::InvalidInput(format!(
                        "unknown vector_search option '{other}'; expected ef_search, exact, filter, columns, column, metric"
                    )));
                }
            }
        }
        Ok(o)
    }
}

/// How the last query was answered, for inspection (`vector_search_stats()`).
#[derive(Debug, Clone, Default)]
pub struct QueryStats {
    /// `index`, `index+filter`, `exact`.
    pub mode: String,
    /// Why an exact search was used, if it was a fallback.
    pub fallback_reason: Option<String>,
    /// Object-store requests made by the query, from resolving its table at planning to
    /// the end of the search (all stores of the registry).
    pub requests: RequestSnapshot,
    /// Rows returned.
    pub rows: usize,
}

/// The `vector_search` table function. One instance is shared by every query of a context.
#[derive(Debug)]
pub struct VectorSearchFunction {
    registry: StorageRegistry,
    cache: Arc<IndexCache>,
    metadata: Arc<Mutex<HashMap<String, ArrowReaderMetadata>>>,
    exact: Arc<Mutex<ExactCache>>,
    last: Arc<Mutex<QueryStats>>,
}

/// Decoded vector columns for exact search, most recently used last.
type ExactCache = Vec<(String, Arc<ExactVectors>)>;

/// Bytes of decoded vectors kept for exact searches (most recently used kept).
const EXACT_CACHE_BYTES: usize = 1 << 30;

/// Parquet footers kept (one per file version).
const METADATA_ENTRIES: usize = 256;

impl VectorSearchFunction {
    /// A function resolving storage through `registry` and caching indexes in `cache`.
    pub fn new(registry: StorageRegistry, cache: Arc<IndexCache>) -> Self {
        VectorSearchFunction {
            registry,
            cache,
            metadata: Arc::default(),
            exact: Arc::default(),
            last: Arc::default(),
        }
    }

    /// Statistics of the most recent query.
    pub fn last_query(&self) -> QueryStats {
        self.last.lock().expect("lock").clone()
    }

    /// Index cache counters.
    pub fn cache_stats(&self) -> IndexCacheStats {
        self.cache.stats()
    }
}

/// What a call searches.
#[derive(Debug, Clone)]
struct Target {
    parquet: StorageUrl,
    dir: StorageUrl,
    manifest: Option<Manifest>,
    cloud: Option<CloudConfig>,
    schema: SchemaRef,
}

fn is_url_like(s: &str) -> bool {
    s.contains("://") || s.starts_with('/') || s.starts_with("./") || s.ends_with(".parquet")
}

/// Evaluates a constant argument expression (literals, `[..]`, `-0.5`, casts).
fn eval_const(state: &SessionState, e: &Expr) -> Result<ScalarValue> {
    if let Expr::Literal(v, _) = e {
        return Ok(v.clone());
    }
    let schema = DFSchema::empty();
    let phys = state.create_physical_expr(e.clone(), &schema)?;
    let batch = RecordBatch::try_new_with_options(
        Arc::new(Schema::empty()),
        vec![],
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    match phys.evaluate(&batch)? {
        ColumnarValue::Scalar(s) => Ok(s),
        ColumnarValue::Array(a) => Ok(ScalarValue::try_from_array(&a, 0)?),
    }
}

/// The query vector of a string argument: a JSON array of numbers, as applications often
/// hold embeddings. Parsing it costs far less than planning an array literal of the same
/// numbers. Each number is read as DataFusion reads a numeric literal (correctly rounded
/// to `f64`), then rounded to `f32`, so the string and the array literal are the same
/// query.
pub(crate) fn query_vector_text(s: &str) -> Result<Vec<f32>> {
    let bad = |why: String| {
        let shown: String = s.chars().take(40).collect();
        let more = if s.chars().count() > 40 { "..." } else { "" };
        JammiError::InvalidInput(format!(
            "vector_search: the query must be an array of numbers (or a string holding one, \
             like '[0.1, 0.2]'); '{shown}{more}' is not: {why}"
        ))
    };
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| bad("it is not in brackets".into()))?
        .trim();
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .enumerate()
        .map(|(i, n)| {
            let n = n.trim();
            n.parse::<f64>()
                .map(|v| v as f32)
                .map_err(|_| bad(format!("element {i} ('{n}') is not a number")))
        })
        .collect()
}

/// The query vector of an array argument.
fn query_vector_array(values: ArrayRef) -> Result<Vec<f32>> {
    if !values.data_type().is_numeric() && values.data_type() != &DataType::Null {
        return Err(JammiError::InvalidInput(format!(
            "vector_search: the query must be an array of numbers, got an array of {}",
            values.data_type()
        )));
    }
    if values.null_count() > 0 {
        return Err(JammiError::InvalidInput(
            "vector_search: the query vector holds NULL".into(),
        ));
    }
    let f = cast(&values, &DataType::Float32)?;
    let f = f
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("cast to f32");
    Ok(f.values().to_vec())
}

fn query_vector(v: &ScalarValue) -> Result<Vec<f32>> {
    let q = match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => query_vector_text(s)?,
        ScalarValue::List(a) if !a.is_null(0) => query_vector_array(a.value(0))?,
        ScalarValue::LargeList(a) if !a.is_null(0) => query_vector_array(a.value(0))?,
        ScalarValue::FixedSizeList(a) if !a.is_null(0) => query_vector_array(a.value(0))?,
        v if v.is_null() => {
            return Err(JammiError::InvalidInput(
                "vector_search: the query vector is NULL".into(),
            ));
        }
        other => {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: the query must be an array of numbers, got {}",
                other.data_type()
            )));
        }
    };
    if q.is_empty() {
        return Err(JammiError::InvalidInput(
            "vector_search: the query vector is empty".into(),
        ));
    }
    crate::index::vectors::check_finite("vector_search: the query", &q)?;
    Ok(q)
}

impl VectorSearchFunction {
    fn resolve(&self, state: &SessionState, name: &str) -> Result<Target> {
        if is_url_like(name) {
            let url = StorageUrl::parse(name)?;
            return self.target_for_file(url, None, None);
        }
        let provider = self.lookup(state, name)?;
        let any: &dyn std::any::Any = provider.as_ref();
        if let Some(t) = any.downcast_ref::<IndexedTable>() {
            return Ok(Target {
                parquet: t.parquet.clone(),
                dir: t.dir.clone(),
                manifest: Some(t.manifest.clone()),
                cloud: t.cloud.clone(),
                schema: t.schema(),
            });
        }
        if let Some(l) = any.downcast_ref::<ListingTable>()
            && let [path] = l.table_paths().as_slice()
            && !path.is_collection()
        {
            let url = StorageUrl::parse(path.as_str())?;
            return self.target_for_file(url, None, Some(l.schema()));
        }
        Err(JammiError::InvalidInput(format!(
            "table '{name}' is not backed by one Parquet file; vector_search needs a result \
             table, a table created with OPTIONS ('jammi.vector_column' ...), or a Parquet file URL"
        )))
    }

    fn lookup(&self, state: &SessionState, name: &str) -> Result<Arc<dyn TableProvider>> {
        let opts = state.config_options();
        // Result-table names hold upper case (`..T120000Z_..`): a plain name is taken
        // verbatim; dotted names follow SQL rules (quote parts to keep their case).
        let reference = if name.contains('.') {
            TableReference::from(name)
        } else {
            TableReference::bare(name)
        };
        let unqualified = matches!(reference, TableReference::Bare { .. });
        let resolved =
            reference.resolve(&opts.catalog.default_catalog, &opts.catalog.default_schema);
        let find =
            |catalog: &str, schema: &str, table: &str| -> Result<Option<Arc<dyn TableProvider>>> {
                let Some(c) = state.catalog_list().catalog(catalog) else {
                    return Ok(None);
                };
                let Some(s) = c.schema(schema) else {
                    return Ok(None);
                };
                Ok(block_on("vector_search", s.table(table))??)
            };
        if let Some(p) = find(&resolved.catalog, &resolved.schema, &resolved.table)? {
            return Ok(p);
        }
        if unqualified && let Some(p) = find("jammi", "public", &resolved.table)? {
            return Ok(p);
        }
        Err(JammiError::NotFound {
            kind: "table",
            name: name.to_string(),
        })
    }

    fn target_for_file(
        &self,
        url: StorageUrl,
        cloud: Option<CloudConfig>,
        schema: Option<SchemaRef>,
    ) -> Result<Target> {
        let registry = self.registry.clone();
        block_on("vector_search on a storage URL", async move {
            let store = match registry.bound(&url) {
                Some(s) => s,
                None => registry.store(&url, cloud.as_ref()).await?,
            };
            let dir = url.parent();
            let manifest = match crate::store::find_sidecars(&store, &url).await {
                Ok(m) => m,
                Err(e @ JammiError::Corrupt { .. }) => {
                    tracing::warn!("{e}; vector_search falls back to exact search");
                    None
                }
                Err(e) => return Err(e),
            };
            let schema = match (&manifest, schema) {
                (_, Some(s)) => s,
                (Some(m), None) => m.schema()?,
                (None, None) => crate::store::read::parquet_schema(&store, &url).await?,
            };
            Ok(Target {
                dir,
                parquet: url,
                manifest,
                cloud,
                schema,
            })
        })?
    }
}

impl TableFunctionImpl for VectorSearchFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> DfResult<Arc<dyn TableProvider>> {
        let exprs = args.exprs();
        let state = args
            .session()
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("vector_search needs a SessionState".into())
            })?;
        if !(3..=4).contains(&exprs.len()) {
            return Err(JammiError::InvalidInput(format!(
                "vector_search(table, query, k [, options]) takes 3 or 4 arguments, got {}",
                exprs.len()
            ))
            .into());
        }
        let table = match eval_const(state, &exprs[0])? {
            ScalarValue::Utf8(Some(s))
            | ScalarValue::LargeUtf8(Some(s))
            | ScalarValue::Utf8View(Some(s)) => s,
            v if v.is_null() => {
                return Err(JammiError::InvalidInput(
                    "vector_search: the table argument is NULL".into(),
                )
                .into());
            }
            _ => {
                return Err(JammiError::InvalidInput(
                    "vector_search: the first argument must be a table name or URL string".into(),
                )
                .into());
            }
        };
        let query = query_vector(&eval_const(state, &exprs[1])?)?;
        let k = match eval_const(state, &exprs[2])? {
            v if v.is_null() => {
                return Err(JammiError::InvalidInput("vector_search: k is NULL".into()).into());
            }
            v => match v.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(Some(k)) => k,
                _ => unreachable!("cast to Int64"),
            },
        };
        if k <= 0 || k as usize > MAX_K {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: k must be between 1 and {MAX_K}, got {k}"
            ))
            .into());
        }
        let options = match exprs.get(3).map(|e| eval_const(state, e)).transpose()? {
            None => SearchOptions::default(),
            Some(ScalarValue::Utf8(Some(s)))
            | Some(ScalarValue::LargeUtf8(Some(s)))
            | Some(ScalarValue::Utf8View(Some(s))) => SearchOptions::parse(&s)?,
            Some(_) => {
                return Err(JammiError::InvalidInput(
                    "vector_search: options must be a string like 'ef_search=128; filter=...'"
                        .into(),
                )
                .into());
            }
        };
        let started = self.registry.request_counts();
        let target = self.resolve(state, &table)?;
        let plan = SearchPlan::new(target, query, k as usize, options)?;
        Ok(Arc::new(VectorSearchTable {
            plan,
            started,
            registry: self.registry.clone(),
            cache: self.cache.clone(),
            metadata: self.metadata.clone(),
            exact: self.exact.clone(),
            last: self.last.clone(),
        }))
    }
}

/// A validated search.
#[derive(Debug, Clone)]
struct SearchPlan {
    target: Target,
    query: Vec<f32>,
    k: usize,
    options: SearchOptions,
    /// Vector column index in the table schema.
    vector_idx: usize,
    vector_name: String,
    metric: Metric,
    /// Table columns returned, as indices into the table schema.
    columns: Vec<usize>,
    schema: SchemaRef,
}

impl SearchPlan {
    fn new(target: Target, query: Vec<f32>, k: usize, options: SearchOptions) -> Result<Self> {
        let ts = target.schema.clone();
        let info = target.manifest.as_ref().and_then(|m| m.index.clone());
        let vector_name = match (&options.column, &info) {
            (Some(c), _) => c.clone(),
            (None, Some(i)) => i.column.clone(),
            (None, None) => {
                let candidates: Vec<&Field> = ts
                    .fields()
                    .iter()
                    .filter(|f| check_vector_type(f.name(), f.data_type()).is_ok())
                    .map(|f| f.as_ref())
                    .collect();
                match candidates.as_slice() {
                    [one] => one.name().clone(),
                    [] => {
                        return Err(JammiError::InvalidInput(format!(
                            "{} has no vector column (FixedSizeList<Float32> or List<Float32|Float64>)",
                            target.parquet
                        )));
                    }
                    _ => {
                        return Err(JammiError::InvalidInput(format!(
                            "{} has several vector columns; choose one with the option 'column=<name>'",
                            target.parquet
                        )));
                    }
                }
            }
        };
        let vector_idx = ts.index_of(&vector_name).map_err(|_| {
            JammiError::InvalidInput(format!(
                "vector column '{vector_name}' not found in {}",
                target.parquet
            ))
        })?;
        let fixed = check_vector_type(&vector_name, ts.field(vector_idx).data_type())?;
        let dims = info.as_ref().map(|i| i.dimensions).or(fixed);
        if let Some(d) = dims
            && d != query.len()
        {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: the query has {} dimensions but column '{vector_name}' has {d}",
                query.len()
            )));
        }
        let metric = match (&options.metric, &info) {
            (Some(m), Some(i)) if *m != i.metric && !options.exact => {
                return Err(JammiError::InvalidInput(format!(
                    "vector_search: the index on '{vector_name}' was built with metric {}, not {m} \
                     (use exact=true to search with another metric)",
                    i.metric
                )));
            }
            (Some(m), _) => *m,
            (None, Some(i)) => i.metric,
            (None, None) => Metric::Cosine,
        };
        let columns: Vec<usize> = match &options.columns {
            None => (0..ts.fields().len()).collect(),
            Some(cols) => cols
                .iter()
                .map(|c| {
                    ts.index_of(c).map_err(|_| {
                        JammiError::InvalidInput(format!(
                            "vector_search: unknown column '{c}' in columns=; columns: {}",
                            crate::store::write::column_names(&ts)
                        ))
                    })
                })
                .collect::<Result<_>>()?,
        };
        if ts.index_of(DISTANCE).is_ok() {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: the table already has a column named {DISTANCE}"
            )));
        }
        let mut fields: Vec<Field> = columns.iter().map(|&i| ts.field(i).clone()).collect();
        fields.push(Field::new(DISTANCE, DataType::Float32, false));
        Ok(SearchPlan {
            target,
            query,
            k,
            options,
            vector_idx,
            vector_name,
            metric,
            columns,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

/// The provider a `vector_search(...)` call returns; the search runs when it is scanned.
#[derive(Debug)]
struct VectorSearchTable {
    plan: SearchPlan,
    /// Request counts before the table was resolved (a URL's manifest is read then).
    started: RequestSnapshot,
    registry: StorageRegistry,
    cache: Arc<IndexCache>,
    metadata: Arc<Mutex<HashMap<String, ArrowReaderMetadata>>>,
    exact: Arc<Mutex<ExactCache>>,
    last: Arc<Mutex<QueryStats>>,
}

#[async_trait]
impl TableProvider for VectorSearchTable {
    fn schema(&self) -> SchemaRef {
        self.plan.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let state = state
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                DataFusionError::Internal("vector_search needs a SessionState".into())
            })?;
        let (batch, mode, reason) = self.run(state, projection).await?;
        let stats = QueryStats {
            mode,
            fallback_reason: reason,
            requests: self.registry.request_counts().since(&self.started),
            rows: batch.num_rows(),
        };
        *self.last.lock().expect("lock") = stats;
        let schema = batch.schema();
        Ok(MemorySourceConfig::try_new_exec(
            &[vec![batch]],
            schema,
            None,
        )?)
    }
}

impl VectorSearchTable {
    /// Footer and page index of the file's current version (cached by version).
    async fn metadata(
        &self,
        store: &Arc<dyn ObjectStore>,
        current: &ObjectMeta,
    ) -> Result<ArrowReaderMetadata> {
        let p = &self.plan.target;
        let key = crate::store::identity::version_key(&p.parquet, current);
        if let Some(m) = self.metadata.lock().expect("lock").get(&key) {
            return Ok(m.clone());
        }
        let m = crate::store::read::load_metadata(store, &p.parquet, Some(current.size)).await?;
        let mut cache = self.metadata.lock().expect("lock");
        if cache.len() >= METADATA_ENTRIES {
            cache.clear();
        }
        cache.insert(key, m.clone());
        Ok(m)
    }

    /// The decoded vectors of the target (cached across queries, LRU under a byte budget).
    async fn exact_vectors(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: &ArrowReaderMetadata,
        current: &ObjectMeta,
    ) -> Result<Arc<ExactVectors>> {
        let p = &self.plan;
        let key = format!(
            "{}#{}",
            crate::store::identity::version_key(&p.target.parquet, current),
            p.vector_name
        );
        {
            let mut c = self.exact.lock().expect("lock");
            if let Some(i) = c.iter().position(|(k, _)| *k == key) {
                let e = c.remove(i);
                let v = e.1.clone();
                c.push(e);
                return Ok(v);
            }
        }
        let v = Arc::new(
            ExactVectors::load(
                store,
                &p.target.parquet,
                meta,
                p.vector_idx,
                &p.vector_name,
                p.query.len(),
            )
            .await?,
        );
        let mut c = self.exact.lock().expect("lock");
        c.push((key, v.clone()));
        let mut total: usize = c.iter().map(|(_, v)| v.bytes()).sum();
        while total > EXACT_CACHE_BYTES && c.len() > 1 {
            total -= c.remove(0).1.bytes();
        }
        Ok(v)
    }

    /// Rows allowed by the pre-filter (`None`: no filter).
    async fn prefilter(
        &self,
        state: &SessionState,
        store: &Arc<dyn ObjectStore>,
        meta: &ArrowReaderMetadata,
    ) -> Result<Option<Vec<bool>>> {
        let Some(sql) = &self.plan.options.filter else {
            return Ok(None);
        };
        let ts = self.plan.target.schema.clone();
        let df_schema = DFSchema::try_from(ts.as_ref().clone())?;
        let expr = state.create_logical_expr(sql, &df_schema).map_err(|e| {
            JammiError::InvalidInput(format!("vector_search: invalid filter '{sql}': {e}"))
        })?;
        let mut cols: Vec<usize> = expr
            .column_refs()
            .iter()
            .map(|c| {
                ts.index_of(&c.name).map_err(|_| {
                    JammiError::InvalidInput(format!(
                        "vector_search: unknown column '{}' in filter",
                        c.name
                    ))
                })
            })
            .collect::<Result<_>>()?;
        cols.sort_unstable();
        cols.dedup();
        let projected = Arc::new(ts.project(&cols)?);
        let phys =
            state.create_physical_expr(expr, &DFSchema::try_from(projected.as_ref().clone())?)?;
        let rows = meta.metadata().file_metadata().num_rows() as usize;
        let mut allowed = Vec::with_capacity(rows);
        let mut stream =
            crate::store::read::scan_columns(store, &self.plan.target.parquet, meta, &cols).await?;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let batch = RecordBatch::try_new(projected.clone(), batch.columns().to_vec())?;
            let v = phys.evaluate(&batch)?.into_array(batch.num_rows())?;
            let b = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                JammiError::InvalidInput(format!(
                    "vector_search: filter '{sql}' is not a boolean predicate"
                ))
            })?;
            allowed.extend((0..b.len()).map(|i| b.is_valid(i) && b.value(i)));
        }
        Ok(Some(allowed))
    }

    /// The loaded index, or why the search goes exact.
    async fn index(
        &self,
        store: &Arc<dyn ObjectStore>,
        current: &ObjectMeta,
    ) -> (Option<Arc<LoadedIndex>>, Option<String>) {
        let t = &self.plan.target;
        let m = match (&t.manifest, self.plan.options.exact) {
            (_, true) => return (None, Some("exact=true".to_string())),
            (None, _) => return (None, Some(format!("no index beside {}", t.parquet))),
            (Some(m), false) => m,
        };
        let Some(info) = &m.index else {
            return (
                None,
                Some(format!("result table '{}' has no vector index", m.table)),
            );
        };
        let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
        if major(&info.usearch_version) != major(usearch::version()) {
            return (
                None,
                Some(format!(
                    "index written by USearch {}, this build has {}",
                    info.usearch_version,
                    usearch::version()
                )),
            );
        }
        if let Some(entry) = m.file(crate::store::FileRole::Parquet) {
            match crate::store::identity::check(store, &t.parquet, current, entry).await {
                Ok(FileCheck::Same) => {}
                Ok(FileCheck::Changed(why)) => {
                    return (None, Some(format!("{why}; its index is not used")));
                }
                Err(e) => return (None, Some(e.to_string())),
            }
        }
        match self.cache.get(&t.dir, store, m).await {
            Ok(l) => (Some(l), None),
            Err(e) => (None, Some(e.to_string())),
        }
    }

    async fn run(
        &self,
        state: &SessionState,
        projection: Option<&Vec<usize>>,
    ) -> Result<(RecordBatch, String, Option<String>)> {
        let p = &self.plan;
        let t = &p.target;
        let store = match self.registry.bound(&t.parquet) {
            Some(s) => s,
            None => self.registry.store(&t.parquet, t.cloud.as_ref()).await?,
        };
        // A query that returns only keys and distances is answered from the sidecars when
        // the rowmap carries the keys: the Parquet file is not touched. Otherwise a cold
        // query's requests overlap: Parquet footer and page index beside the sidecar
        // download.
        // The file's current version: the index must have been built for it, and cached
        // footers and vectors are those of this version.
        let current = store
            .head(&t.parquet.object_path()?)
            .await
            .map_err(|e| JammiError::storage(&t.parquet, e))?;
        let meta = tokio::sync::OnceCell::new();
        let (loaded, reason) = if self.keys_only(projection) {
            self.index(&store, &current).await
        } else {
            let (m, li) = tokio::join!(
                self.metadata(&store, &current),
                self.index(&store, &current)
            );
            let _ = meta.set(m?);
            li
        };
        let meta = || meta.get_or_try_init(|| self.metadata(&store, &current));
        if let (Some(r), false) = (&reason, p.options.exact) {
            tracing::warn!("vector_search: using exact search: {r}");
        }
        let allowed = match p.options.filter {
            Some(_) => self.prefilter(state, &store, meta().await?).await?,
            None => None,
        };
        let (hits, mode) = match &loaded {
            Some(l) => self.search_index(l, allowed.as_deref())?,
            None => {
                let vectors = self.exact_vectors(&store, meta().await?, &current).await?;
                let hits = vectors.search(&p.query, p.k, p.metric, allowed.as_deref());
                let hits = hits
                    .into_iter()
                    .map(|(row, distance)| Hit {
                        row,
                        key: None,
                        distance,
                    })
                    .collect();
                (hits, "exact".to_string())
            }
        };
        let batch = self
            .hydrate(&store, meta, &hits, loaded.as_deref(), projection)
            .await?;
        Ok((batch, mode, reason))
    }

    /// The table's key column, when it is a result table that declares one.
    fn key_column(&self) -> Option<usize> {
        let t = &self.plan.target;
        let name = t.manifest.as_ref()?.key_column.as_deref()?;
        t.schema.index_of(name).ok()
    }

    /// `true` when the output needs no column but the key (and `_distance`), and the
    /// search will not need the Parquet file to filter or scan.
    fn keys_only(&self, projection: Option<&Vec<usize>>) -> bool {
        let p = &self.plan;
        let Some(key) = self.key_column() else {
            return false;
        };
        let distance_pos = p.columns.len();
        let all: Vec<usize> = (0..p.schema.fields().len()).collect();
        !p.options.exact
            && p.options.filter.is_none()
            && projection
                .unwrap_or(&all)
                .iter()
                .all(|&i| i == distance_pos || p.columns[i] == key)
    }

    /// Searches the index; selective filters go exact over the matching keys.
    fn search_index(
        &self,
        l: &LoadedIndex,
        allowed: Option<&[bool]>,
    ) -> Result<(Vec<Hit>, String)> {
        let p = &self.plan;
        let with_ef =
            |f: &dyn Fn() -> Result<usearch::ffi::Matches>| -> Result<usearch::ffi::Matches> {
                match p.options.ef_search {
                    Some(ef) => {
                        let _g = l.search_lock.write().expect("lock");
                        l.index.change_expansion_search(ef);
                        let r = f();
                        l.index.change_expansion_search(l.info.expansion_search);
                        r
                    }
                    None => {
                        let _g = l.search_lock.read().expect("lock");
                        f()
                    }
                }
            };
        let to_hits = |m: usearch::ffi::Matches| -> Vec<Hit> {
            m.keys
                .iter()
                .zip(&m.distances)
                .map(|(k, d)| Hit {
                    row: l.rowmap[*k as usize],
                    key: Some(*k),
                    distance: p.metric.finalize(*d),
                })
                .collect()
        };
        let Some(allowed) = allowed else {
            let m = with_ef(&|| l.index.search(&p.query, p.k).map_err(idx_err))?;
            return Ok((to_hits(m), "index".into()));
        };
        let ok = |key: u64| {
            l.rowmap
                .get(key as usize)
                .and_then(|r| allowed.get(*r as usize))
                .copied()
                .unwrap_or(false)
        };
        let matching = (0..l.rowmap.len() as u64).filter(|k| ok(*k)).count();
        let want = p.k.min(matching);
        // Selective filters: exact over the few matching vectors beats graph traversal.
        if matching <= (p.k * 64).max(l.rowmap.len() / 100) {
            let mut top = TopK::new(p.k);
            let mut buf = vec![0f32; l.info.dimensions];
            for key in (0..l.rowmap.len() as u64).filter(|k| ok(*k)) {
                l.index.get(key, &mut buf).map_err(idx_err)?;
                // Keys rise with row positions, so the tie-break by key is the one by row.
                top.push(p.metric.raw_distance(&p.query, &buf), key);
            }
            let hits = top
                .into_sorted()
                .into_iter()
                .map(|(key, d)| Hit {
                    row: l.rowmap[key as usize],
                    key: Some(key),
                    distance: p.metric.finalize(d),
                })
                .collect();
            return Ok((hits, "index+exact-filter".into()));
        }
        let m = with_ef(&|| l.index.filtered_search(&p.query, p.k, ok).map_err(idx_err))?;
        let hits = to_hits(m);
        if hits.len() < want {
            return Err(JammiError::Index(format!(
                "filtered search returned {} of {want} rows",
                hits.len()
            )));
        }
        Ok((hits, "index+filter".into()))
    }

    /// Reads the hit rows' projected columns and appends `_distance`. The vector column of
    /// index hits comes from the index itself when it holds the column's exact values
    /// (`Float32` elements), so `SELECT *` reads no vector pages; their keys come from the
    /// rowmap when it carries them. The Parquet footer (`meta`) is loaded only if a column
    /// is left to read.
    async fn hydrate<'m, F, M>(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: M,
        hits: &[Hit],
        loaded: Option<&LoadedIndex>,
        projection: Option<&Vec<usize>>,
    ) -> Result<RecordBatch>
    where
        M: FnOnce() -> F,
        F: std::future::Future<Output = Result<&'m ArrowReaderMetadata>>,
    {
        let p = &self.plan;
        let out: Vec<usize> = match projection {
            Some(pr) => pr.clone(),
            None => (0..p.schema.fields().len()).collect(),
        };
        let distance_pos = p.columns.len();
        let vector_wanted = out
            .iter()
            .any(|&i| i != distance_pos && p.columns[i] == p.vector_idx);
        let vector_type = p.target.schema.field(p.vector_idx).data_type();
        let from_index = match loaded {
            Some(l) if vector_wanted && hits.iter().all(|h| h.key.is_some()) => {
                vectors_from_index(l, hits, vector_type)?
            }
            _ => None,
        };
        let key_col = self.key_column();
        let from_keys = match (loaded.and_then(|l| l.keys.as_ref()), key_col) {
            (Some(keys), Some(kc))
                if out.iter().any(|&i| i != distance_pos && p.columns[i] == kc) =>
            {
                let ks: Option<Vec<u64>> = hits.iter().map(|h| h.key).collect();
                match ks {
                    Some(ks) => {
                        let taken = datafusion::arrow::compute::take(
                            keys.as_ref(),
                            &datafusion::arrow::array::UInt64Array::from(ks),
                            None,
                        )?;
                        // The column as this table reads it (e.g. strings as views).
                        Some(cast(&taken, p.target.schema.field(kc).data_type())?)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let mut file_cols: Vec<usize> = out
            .iter()
            .filter(|&&i| i != distance_pos)
            .map(|&i| p.columns[i])
            .filter(|&c| !(c == p.vector_idx && from_index.is_some()))
            .filter(|&c| !(Some(c) == key_col && from_keys.is_some()))
            .collect();
        file_cols.sort_unstable();
        file_cols.dedup();
        let positions: Vec<u64> = hits.iter().map(|h| h.row).collect();
        let rows = if file_cols.is_empty() || positions.is_empty() {
            None
        } else {
            Some(
                crate::store::read::read_rows(
                    store,
                    &p.target.parquet,
                    meta().await?,
                    &positions,
                    &file_cols,
                )
                .await?,
            )
        };
        let distances: ArrayRef = Arc::new(Float32Array::from_iter_values(
            hits.iter().map(|h| h.distance),
        ));
        let schema = Arc::new(p.schema.project(&out)?);
        let mut arrays = Vec::with_capacity(out.len());
        for &i in &out {
            if i == distance_pos {
                arrays.push(distances.clone());
                continue;
            }
            let table_col = p.columns[i];
            let arr = match (&rows, &from_index, &from_keys) {
                (_, Some(v), _) if table_col == p.vector_idx => v.clone(),
                (_, _, Some(k)) if Some(table_col) == key_col => k.clone(),
                (Some(b), _, _) => {
                    let pos = file_cols
                        .iter()
                        .position(|c| *c == table_col)
                        .expect("read");
                    b.column(pos).clone()
                }
                (None, _, _) => datafusion::arrow::array::new_empty_array(
                    p.target.schema.field(table_col).data_type(),
                ),
            };
            arrays.push(arr);
        }
        Ok(RecordBatch::try_new_with_options(
            schema,
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(hits.len())),
        )?)
    }
}

/// One result row: its Parquet row position, its index key (index searches) and distance.
#[derive(Debug, Clone, Copy)]
struct Hit {
    row: u64,
    key: Option<u64>,
    distance: f32,
}

/// The hits' vectors read back from the index (which stores them as `f32`), in the
/// column's own type; `None` when that type holds other values (`Float64` elements).
fn vectors_from_index(
    l: &LoadedIndex,
    hits: &[Hit],
    data_type: &DataType,
) -> Result<Option<ArrayRef>> {
    use datafusion::arrow::array::{FixedSizeListArray, ListArray};
    use datafusion::arrow::buffer::OffsetBuffer;
    let dims = l.info.dimensions;
    let mut values = vec![0f32; hits.len() * dims];
    let read = |values: &mut [f32]| -> Result<()> {
        for (h, out) in hits.iter().zip(values.chunks_mut(dims.max(1))) {
            let key = h.key.expect("index hits carry keys");
            let n = l.index.get(key, out).map_err(idx_err)?;
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
                OffsetBuffer::from_lengths(std::iter::repeat_n(dims, hits.len())),
                Arc::new(Float32Array::from(values)),
                None,
            )?)
        }
        _ => return Ok(None),
    };
    Ok(Some(array))
}

fn idx_err<E: std::fmt::Display>(e: E) -> JammiError {
    JammiError::Index(e.to_string())
}
