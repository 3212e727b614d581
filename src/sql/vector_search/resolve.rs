//! Which file a call searches, and how: the table (a result table, a table indexed with
//! `jammi.vector_column`, a table over one Parquet file, or a Parquet file's URL), the
//! manifest of its sidecars (read at planning: metadata only), the vector column, the metric
//! and the columns returned. Everything that can be checked before running is checked here.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef};
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::listing::ListingTable;
use datafusion::execution::context::SessionState;

use crate::catalog::IndexedTable;
use crate::catalog::provider::block_on;
use crate::error::{JammiError, Result};
use crate::index::Metric;
use crate::index::vectors::check_vector_type;
use crate::sql::vector_search::args::SearchOptions;
use crate::storage::{StorageRegistry, StorageUrl};
use crate::store::Manifest;

/// Name of the distance column.
pub const DISTANCE: &str = "_distance";
/// Name of the rank column of batch searches (1 = nearest).
pub const RANK: &str = "_rank";
/// Prefix of the query relation's key column in batch searches.
pub const QUERY_PREFIX: &str = "query_";

/// The file a call searches.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchTarget {
    /// The table as named in the call (a table name or a URL).
    pub name: String,
    /// The Parquet file.
    pub parquet: StorageUrl,
    /// The directory of its sidecars.
    pub dir: StorageUrl,
    /// The sidecars' manifest, if the file has them.
    pub manifest: Option<Manifest>,
    /// The table's schema.
    pub schema: SchemaRef,
    /// A result table of several segments (or one with deletions): each one's Parquet
    /// file, manifest and deletions (the first is the one above). Empty for one file.
    pub segments: Vec<Segment>,
    /// The rows deleted from this file (one segment's target).
    pub deleted: Option<Deleted>,
}

/// One segment of a result table that changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    /// Its Parquet file.
    pub parquet: StorageUrl,
    /// Its manifest.
    pub manifest: Manifest,
    /// Its deletion file, if rows of it were deleted.
    pub deleted: Option<Deleted>,
}

/// A segment's deletion file.
#[derive(Debug, Clone, PartialEq)]
pub struct Deleted {
    /// Where it is.
    pub url: StorageUrl,
    /// Its record (rows, size, checksum).
    pub record: crate::store::versions::DeletionRef,
}

impl Eq for SearchTarget {}

impl Hash for SearchTarget {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.name.hash(state);
        self.parquet.to_string().hash(state);
        self.manifest.as_ref().map(|m| &m.writer).hash(state);
        for seg in &self.segments {
            seg.manifest.writer.hash(state);
        }
    }
}

impl SearchTarget {
    /// How many partitions search this target: its segments, or 1 for a file.
    pub fn part_count(&self) -> usize {
        self.segments.len().max(1)
    }

    /// The target partition `i` searches: segment `i`, or the file itself.
    pub fn part(&self, i: usize) -> Option<SearchTarget> {
        if self.segments.is_empty() {
            return (i == 0).then(|| self.clone());
        }
        let seg = self.segments.get(i)?;
        Some(SearchTarget {
            name: self.name.clone(),
            dir: seg.parquet.parent(),
            parquet: seg.parquet.clone(),
            manifest: Some(seg.manifest.clone()),
            schema: self.schema.clone(),
            segments: Vec::new(),
            deleted: seg.deleted.clone(),
        })
    }

    /// The key column the manifest declares, if the table has it.
    pub fn key_column(&self) -> Option<usize> {
        let name = self.manifest.as_ref()?.key_column.as_deref()?;
        self.schema.index_of(name).ok()
    }
}

/// [`resolve`], at the version `options` asks for (`version=N` reads `<table>@N`).
pub(crate) fn resolve_at(
    registry: &StorageRegistry,
    state: &SessionState,
    name: &str,
    options: &SearchOptions,
) -> Result<SearchTarget> {
    match options.version {
        Some(v) => resolve(registry, state, &format!("{name}@{v}")),
        None => resolve(registry, state, name),
    }
}

/// The segments of a result table that changed (none for a table of one file).
pub(crate) fn segments_of(t: &IndexedTable) -> Result<Vec<Segment>> {
    match &t.versioned {
        Some((root, v))
            if v.segments.len() > 1 || v.segments.iter().any(|s| s.deleted.is_some()) =>
        {
            v.segments
                .iter()
                .map(|s| {
                    Ok(Segment {
                        parquet: root.join(&s.path)?,
                        manifest: s.manifest.clone(),
                        deleted: match &s.deleted {
                            Some(d) => Some(Deleted {
                                url: root.join(&d.path)?,
                                record: d.clone(),
                            }),
                            None => None,
                        },
                    })
                })
                .collect()
        }
        _ => Ok(Vec::new()),
    }
}

fn is_url_like(s: &str) -> bool {
    s.contains("://") || s.starts_with('/') || s.starts_with("./") || s.ends_with(".parquet")
}

/// Resolves `name`: a table of the session, or a Parquet file's URL (whose store is bound so
/// the plan's execution finds it).
pub(crate) fn resolve(
    registry: &StorageRegistry,
    state: &SessionState,
    name: &str,
) -> Result<SearchTarget> {
    if is_url_like(name) {
        let url = StorageUrl::parse(name)?;
        return target_for_file(registry, name, url, None);
    }
    let provider = lookup(state, name)?;
    let any: &dyn std::any::Any = provider.as_ref();
    if let Some(t) = any.downcast_ref::<IndexedTable>() {
        // Bound now, as the table's own scans would.
        if registry.bound(&t.parquet).is_none() {
            let (registry, url, cloud) = (registry.clone(), t.parquet.clone(), t.cloud.clone());
            block_on("vector_search", async move {
                registry.store(&url, cloud.as_ref()).await
            })??;
        }
        let segments = segments_of(t)?;
        return Ok(SearchTarget {
            name: name.to_string(),
            parquet: t.parquet.clone(),
            dir: t.dir.clone(),
            manifest: Some(t.manifest.clone()),
            schema: t.schema(),
            segments,
            deleted: None,
        });
    }
    // A broken result table: what is wrong with it (the damaged file), not its kind.
    if let Some(u) = any.downcast_ref::<crate::catalog::table::UnavailableTable>() {
        return Err(u.error());
    }
    if let Some(l) = any.downcast_ref::<ListingTable>()
        && let [path] = l.table_paths().as_slice()
        && !path.is_collection()
    {
        let url = StorageUrl::parse(path.as_str())?;
        return target_for_file(registry, name, url, Some(l.schema()));
    }
    Err(JammiError::InvalidInput(format!(
        "table '{name}' is not backed by one Parquet file; vector_search needs a result \
         table, a table created with OPTIONS ('jammi.vector_column' ...), or a Parquet file URL"
    )))
}

/// Finds a table by name: verbatim (result-table names hold upper case), dotted names by
/// SQL rules, and bare names also in the result-table catalog.
fn lookup(state: &SessionState, name: &str) -> Result<Arc<dyn TableProvider>> {
    let opts = state.config_options();
    let reference = if name.contains('.') {
        TableReference::from(name)
    } else {
        TableReference::bare(name)
    };
    let unqualified = matches!(reference, TableReference::Bare { .. });
    let resolved = reference.resolve(&opts.catalog.default_catalog, &opts.catalog.default_schema);
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
    if unqualified && let Some(p) = find(crate::sql::RESULT_CATALOG, "public", &resolved.table)? {
        return Ok(p);
    }
    Err(JammiError::NotFound {
        kind: "table",
        name: name.to_string(),
    })
}

fn target_for_file(
    registry: &StorageRegistry,
    name: &str,
    url: StorageUrl,
    schema: Option<SchemaRef>,
) -> Result<SearchTarget> {
    let registry = registry.clone();
    let name = name.to_string();
    block_on("vector_search on a storage URL", async move {
        let store = match registry.bound(&url) {
            Some(s) => s,
            None => registry.store(&url, None).await?,
        };
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
        Ok(SearchTarget {
            name,
            dir: url.parent(),
            parquet: url,
            manifest,
            schema,
            segments: Vec::new(),
            deleted: None,
        })
    })?
}

/// How a search will be answered, as far as planning can tell (the file's version is
/// checked when it runs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
pub enum PlannedMode {
    /// By the index.
    Index,
    /// Exactly, and why.
    Exact(String),
}

impl std::fmt::Display for PlannedMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PlannedMode::Index => f.write_str("index"),
            PlannedMode::Exact(why) => write!(f, "exact ({why})"),
        }
    }
}

/// A validated search over a target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SearchSpec {
    /// What is searched.
    pub target: Arc<SearchTarget>,
    /// Neighbours per query.
    pub k: usize,
    /// Options of the call.
    pub options: SearchOptions,
    /// The vector column (index into the table's schema).
    pub vector_idx: usize,
    /// Its dimensions when the column or the index fixes them.
    pub dims: Option<usize>,
    /// The metric.
    pub metric: Metric,
    /// Table columns returned (indices into the table's schema).
    pub columns: Vec<usize>,
    /// How it will be answered.
    pub mode: PlannedMode,
    /// What the distance column holds.
    pub distance: DistanceColumn,
}

/// What a search's distance column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum DistanceColumn {
    /// `_distance`: the index's distance (`Float32`), nearest first ascending.
    #[default]
    Index,
    /// The value of the metric's SQL function — `cosine_distance`, `l2_distance` or
    /// `inner_product` (`Float64`, nearest first descending) — for an `ORDER BY <function>
    /// LIMIT k` the index answers.
    Function,
}

impl DistanceColumn {
    /// The column's type.
    pub fn data_type(self) -> DataType {
        match self {
            DistanceColumn::Index => DataType::Float32,
            DistanceColumn::Function => DataType::Float64,
        }
    }

    /// `true` when nearer rows have larger values (inner products).
    pub fn nearest_largest(self, metric: Metric) -> bool {
        self == DistanceColumn::Function && metric == Metric::Ip
    }
}

impl SearchSpec {
    /// What EXPLAIN shows of every search, logical or physical:
    /// `table=…, k=…, metric=…, mode=…[, ef_search=…][, segments=…]`.
    pub(crate) fn fmt_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "table={}, k={}, metric={}, mode={}",
            self.target.name, self.k, self.metric, self.mode
        )?;
        if let Some(ef) = self.options.ef_search {
            write!(f, ", ef_search={ef}")?;
        }
        if !self.target.segments.is_empty() {
            write!(f, ", segments={}", self.target.segments.len())?;
        }
        self.fmt_quantization(f)
    }

    /// A quantised index's precision and how its candidates are re-ranked (or not).
    fn fmt_quantization(&self, f: &mut fmt::Formatter) -> fmt::Result {
        let q = self
            .target
            .manifest
            .as_ref()
            .and_then(|m| m.index.as_ref())
            .map(|i| i.quantization);
        match q {
            Some(q) if q != crate::format::Quantization::F32 => {
                write!(f, ", quantization={q}")?;
                if self.options.rescore == Some(false) {
                    f.write_str(", rescore=false (approximate distances)")
                } else {
                    let n = self.options.oversample.unwrap_or(q.default_oversample());
                    write!(f, ", rescore=exact vectors of {}", self.k.saturating_mul(n))
                }
            }
            _ => Ok(()),
        }
    }

    /// This search, of one segment `part` of its target (what one partition runs).
    pub fn for_segment(&self, part: SearchTarget) -> Result<Self> {
        let mut options = self.options.clone();
        let total: u64 = self.target.segments.iter().map(|s| s.manifest.rows).sum();
        let index = part
            .manifest
            .as_ref()
            .and_then(|m| Some((m.rows, m.index.as_ref()?)));
        if let (None, Some((rows, info)), true) = (options.ef_search, index, total > 0) {
            let share = rows as f64 / total as f64;
            options.ef_search = Some(segment_ef(info.expansion_search, share, self.k));
        }
        let mut spec = SearchSpec::new(Arc::new(part), self.k, options)?;
        spec.columns = self.columns.clone();
        spec.distance = self.distance;
        Ok(spec)
    }

    /// Checks `options` against `target`.
    pub fn new(target: Arc<SearchTarget>, k: usize, options: SearchOptions) -> Result<Self> {
        let ts = target.schema.clone();
        let info = target.manifest.as_ref().and_then(|m| m.index.clone());
        let vector_name = match (&options.column, &info) {
            (Some(c), _) => c.clone(),
            (None, Some(i)) => i.column.clone(),
            (None, None) => only_vector_column(&target)?,
        };
        let vector_idx = ts.index_of(&vector_name).map_err(|_| {
            JammiError::InvalidInput(format!(
                "vector column '{vector_name}' not found in {}",
                target.parquet
            ))
        })?;
        let fixed = check_vector_type(&vector_name, ts.field(vector_idx).data_type())?;
        let dims = info.as_ref().map(|i| i.dimensions).or(fixed);
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
        for reserved in [DISTANCE, RANK] {
            if ts.index_of(reserved).is_ok() {
                return Err(JammiError::InvalidInput(format!(
                    "vector_search: the table already has a column named {reserved}"
                )));
            }
        }
        let mode = planned_mode(&target, &options, &vector_name);
        Ok(SearchSpec {
            target,
            k,
            options,
            vector_idx,
            dims,
            metric,
            columns,
            mode,
            distance: DistanceColumn::Index,
        })
    }

    /// The vector column's name.
    pub fn vector_name(&self) -> &str {
        self.target.schema.field(self.vector_idx).name()
    }

    /// Fields of the output: the query's key (batch searches), the table's columns,
    /// `_distance`, and `_rank` (batch searches).
    pub fn output_fields(&self, query_key: Option<&Field>) -> Vec<Field> {
        let ts = &self.target.schema;
        let mut fields = Vec::new();
        if let Some(k) = query_key {
            fields.push(
                Field::new(
                    format!("{QUERY_PREFIX}{}", k.name()),
                    k.data_type().clone(),
                    k.is_nullable(),
                )
                .with_metadata(k.metadata().clone()),
            );
        }
        fields.extend(self.columns.iter().map(|&i| ts.field(i).clone()));
        // The functions' values are NULL for a zero vector under cosine.
        let nullable = self.distance == DistanceColumn::Function;
        fields.push(Field::new(DISTANCE, self.distance.data_type(), nullable));
        if query_key.is_some() {
            fields.push(Field::new(RANK, DataType::UInt32, false));
        }
        fields
    }

    /// The output schema.
    pub fn output_schema(&self, query_key: Option<&Field>) -> SchemaRef {
        Arc::new(Schema::new(self.output_fields(query_key)))
    }
}

fn only_vector_column(target: &SearchTarget) -> Result<String> {
    let candidates: Vec<&Field> = target
        .schema
        .fields()
        .iter()
        .filter(|f| check_vector_type(f.name(), f.data_type()).is_ok())
        .map(|f| f.as_ref())
        .collect();
    match candidates.as_slice() {
        [one] => Ok(one.name().clone()),
        [] => Err(JammiError::InvalidInput(format!(
            "{} has no vector column (FixedSizeList<Float32> or List<Float32|Float64>)",
            target.parquet
        ))),
        _ => Err(JammiError::InvalidInput(format!(
            "{} has several vector columns; choose one with the option 'column=<name>'",
            target.parquet
        ))),
    }
}

/// How a search of column `vector` will be answered: by the index only when the index is
/// on that very column.
fn planned_mode(target: &SearchTarget, options: &SearchOptions, vector: &str) -> PlannedMode {
    if options.exact {
        return PlannedMode::Exact("exact=true".into());
    }
    let Some(m) = &target.manifest else {
        return PlannedMode::Exact(format!("no index beside {}", target.parquet));
    };
    let Some(info) = m.index.as_ref() else {
        return PlannedMode::Exact(format!("'{}' has no vector index", m.table));
    };
    if info.column != vector {
        return PlannedMode::Exact(format!(
            "column '{vector}' has no index (the index is on '{}')",
            info.column
        ));
    }
    let major = |v: &str| v.split('.').next().unwrap_or("").to_string();
    if major(&info.usearch_version) != major(usearch::version()) {
        return PlannedMode::Exact(format!(
            "index written by USearch {}, this build has {}",
            info.usearch_version,
            usearch::version()
        ));
    }
    PlannedMode::Index
}

/// `, projection=[a, b]`: the output columns EXPLAIN lists for a search.
pub(crate) fn fmt_projection(f: &mut fmt::Formatter, fields: &Fields) -> fmt::Result {
    let names: Vec<&str> = fields.iter().map(|f| f.name().as_str()).collect();
    write!(f, ", projection=[{}]", names.join(", "))
}

/// The expansion a segment holding `share` of a table's rows is searched with, when the
/// query sets none: `ef · share^⅓`, at least `k`. A graph search costs about the same
/// whatever the graph's size, so n segments at the full `ef` cost n searches, while each
/// segment holds fewer of the global top k. The exponent is measured: ten segments of 6k
/// MiniLM rows keep recall@10 of one 60k segment (`benches/table_versions.rs`).
pub(crate) fn segment_ef(ef: usize, share: f64, k: usize) -> usize {
    let scaled = (ef as f64 * share.clamp(0.0, 1.0).cbrt()).ceil() as usize;
    scaled.clamp(k.min(ef), ef)
}

#[cfg(test)]
mod tests {
    use super::segment_ef;

    #[test]
    fn a_segment_is_searched_with_an_expansion_shrinking_with_its_share() {
        assert_eq!(segment_ef(64, 1.0, 10), 64);
        assert_eq!(segment_ef(64, 0.1, 10), 30);
        assert_eq!(segment_ef(64, 0.5, 10), 51);
        // Never below k, never above the index's own expansion.
        assert_eq!(segment_ef(64, 1e-6, 10), 10);
        assert_eq!(segment_ef(64, 0.1, 100), 64);
        assert_eq!(segment_ef(8, 1e-6, 10), 8);
    }
}
