//! `VectorSearchExec`: the search runs here, in `execute`. One output partition; a batch
//! search reads its whole query relation, searches every query on all cores and hydrates
//! the hits of all queries together.

use std::fmt;
use std::sync::{Arc, Mutex};

use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Float32Array, Float64Array, RecordBatch, RecordBatchOptions,
    UInt32Array,
};
use datafusion::arrow::compute::SortOptions;
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, ParamValues, Result as DfResult, ScalarValue};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::ColumnarValue;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use datafusion::physical_expr::expressions::{Column, Literal};
use datafusion::physical_expr::{
    EquivalenceProperties, Partitioning, PhysicalExpr, PhysicalSortExpr,
};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet, Time,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, Distribution, ExecutionPlan, PlanProperties,
    SendableRecordBatchStream,
};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::index::Metric;
use crate::index::loaded::{Answered, Hit, LoadedIndex, Query};
use crate::index::vectors::VectorColumn;
use crate::sql::vector_search::args::{query_vector, query_vectors};
use crate::sql::vector_search::resolve::{
    DISTANCE, DistanceColumn, PlannedMode, SearchSpec, fmt_projection,
};
use crate::sql::vector_search::{SearchContext, SearchStats, function, hydrate};
use crate::storage::metrics::{CountingStore, RequestCounts};
use crate::store::FileRole;
use crate::store::identity::{FileCheck, check};
use crate::store::read;

/// A pre-filter: a predicate over some of the table's columns.
#[derive(Debug, Clone)]
pub struct Prefilter {
    /// The predicate, over `columns` (in that order).
    pub expr: Arc<dyn PhysicalExpr>,
    /// The table columns it reads (indices into the table's schema, ascending).
    pub columns: Vec<usize>,
    /// Its SQL text, for EXPLAIN.
    pub text: String,
}

/// Where the queries come from.
#[derive(Debug, Clone)]
pub enum Queries {
    /// One query vector, a constant expression (literal, bound parameter, scalar subquery).
    Single(Arc<dyn PhysicalExpr>),
    /// Every row of the input: its key and vector columns.
    Batch {
        /// The query relation.
        input: Arc<dyn ExecutionPlan>,
        /// Its key column.
        key: usize,
        /// Its vector column.
        vector: usize,
    },
    /// A parameter (`$1`) of a prepared query: [`VectorSearchExec::bind`] puts its value
    /// in place before each run.
    Param(String),
}

/// One column of the output.
#[derive(Debug, Clone, Copy, PartialEq)]
enum OutCol {
    QueryKey,
    Table(usize),
    Distance,
    Rank,
    /// The partition (segment) a row came from: the merge's tie-break, never in the
    /// statement's output (see [`PART`]).
    Part,
}

/// The name of the hidden column that tags a segmented search's rows with their segment's
/// number. Only a projection asks for it (index: one past the search's output columns).
pub const PART: &str = "__jammi_segment";

/// Runs a nearest-neighbour search when executed.
#[derive(Debug)]
pub struct VectorSearchExec {
    spec: SearchSpec,
    queries: Queries,
    prefilter: Option<Prefilter>,
    projection: Option<Vec<usize>>,
    out: Vec<OutCol>,
    ctx: Arc<SearchContext>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
    stats: Arc<Mutex<SearchStats>>,
    /// A batch search's queries, read once for all its segments' partitions.
    batch_queries: BatchQueries,
    /// A segmented table's segment numbers, one partition each ([`segment_numbers`]).
    segments: Option<Arc<dyn ExecutionPlan>>,
}

/// The partitions of a search over `n` segments as a plan of their numbers: partition
/// `i` holds one row, `i`. A distributed engine gives each task some partitions of a
/// stage's leaves (Ballista restricts scans, never an extension's own partitions); as
/// this child, a search's partitions are restricted with them, and each partition reads
/// which segment it is.
fn segment_numbers(n: usize) -> DfResult<Arc<dyn ExecutionPlan>> {
    let schema = Arc::new(Schema::new(vec![Field::new(PART, DataType::UInt32, false)]));
    let partitions = (0..n as u32)
        .map(|i| {
            let numbers: ArrayRef = Arc::new(UInt32Array::from(vec![i]));
            Ok(vec![RecordBatch::try_new(schema.clone(), vec![numbers])?])
        })
        .collect::<DfResult<Vec<_>>>()?;
    let source =
        datafusion::datasource::memory::MemorySourceConfig::try_new(&partitions, schema, None)?;
    Ok(datafusion::datasource::source::DataSourceExec::from_data_source(source))
}

/// The segment a partition of [`segment_numbers`] (perhaps restricted) stands for.
async fn segment_number(
    segments: &Arc<dyn ExecutionPlan>,
    partition: usize,
    context: Arc<TaskContext>,
) -> DfResult<usize> {
    let batches: Vec<RecordBatch> = segments.execute(partition, context)?.try_collect().await?;
    let mut numbers = batches.iter().flat_map(|b| {
        let column = datafusion::arrow::array::AsArray::as_primitive::<
            datafusion::arrow::datatypes::UInt32Type,
        >(b.column(0));
        column.values().to_vec()
    });
    match (numbers.next(), numbers.next()) {
        (Some(n), None) => Ok(n as usize),
        _ => Err(DataFusionError::Internal(format!(
            "VectorSearchExec: partition {partition} of its segment numbers is not one number"
        ))),
    }
}

/// The query vectors and keys of a batch search, shared by its partitions.
type BatchQueries = Arc<tokio::sync::OnceCell<(Vec<Vec<f32>>, ArrayRef)>>;

impl VectorSearchExec {
    /// A search of `spec` for `queries`. `projection` keeps output columns of the full
    /// output (`[query_<key>,] <table columns>, _distance[, _rank]`, then, for a
    /// segmented table, the partition number [`PART`]; without a projection, all but it).
    pub fn try_new(
        spec: SearchSpec,
        queries: Queries,
        prefilter: Option<Prefilter>,
        projection: Option<Vec<usize>>,
        ctx: Arc<SearchContext>,
    ) -> DfResult<Self> {
        let parts = spec.target.part_count();
        let segments = (parts > 1).then(|| segment_numbers(parts)).transpose()?;
        Self::build(spec, queries, prefilter, projection, ctx, segments)
    }

    /// This search over `segments` (its [`segment_numbers`], perhaps restricted to some).
    pub fn with_segments(&self, segments: Arc<dyn ExecutionPlan>) -> DfResult<Self> {
        if self.segments.is_none() {
            return Err(DataFusionError::Internal(
                "VectorSearchExec: segment numbers for a search over one file".into(),
            ));
        }
        let schema = segments.schema();
        if schema.fields().len() != 1 || schema.field(0).data_type() != &DataType::UInt32 {
            return Err(DataFusionError::Internal(format!(
                "VectorSearchExec: segment numbers are one UInt32 column, not {schema}"
            )));
        }
        Self::build(
            self.spec.clone(),
            self.queries.clone(),
            self.prefilter.clone(),
            self.projection.clone(),
            self.ctx.clone(),
            Some(segments),
        )
    }

    /// The plan of the segment numbers this search's partitions read (segmented tables).
    pub fn segments(&self) -> Option<&Arc<dyn ExecutionPlan>> {
        self.segments.as_ref()
    }

    fn build(
        spec: SearchSpec,
        queries: Queries,
        prefilter: Option<Prefilter>,
        projection: Option<Vec<usize>>,
        ctx: Arc<SearchContext>,
        segments: Option<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Self> {
        let batch = matches!(queries, Queries::Batch { .. });
        let mut full: Vec<OutCol> = Vec::new();
        if batch {
            full.push(OutCol::QueryKey);
        }
        full.extend(spec.columns.iter().map(|&c| OutCol::Table(c)));
        full.push(OutCol::Distance);
        if batch {
            full.push(OutCol::Rank);
        }
        let key_field = match &queries {
            Queries::Batch { input, key, .. } => Some(input.schema().field(*key).clone()),
            Queries::Single(_) | Queries::Param(_) => None,
        };
        let mut fields = spec.output_fields(key_field.as_ref());
        let (out, fields) = match &projection {
            Some(p) => {
                if !spec.target.segments.is_empty() {
                    full.push(OutCol::Part);
                    fields.push(Field::new(PART, DataType::UInt32, false));
                }
                if let Some(&bad) = p.iter().find(|&&i| i >= full.len()) {
                    return Err(DataFusionError::Internal(format!(
                        "VectorSearchExec: output column {bad} of {}",
                        full.len()
                    )));
                }
                (
                    p.iter().map(|&i| full[i]).collect(),
                    p.iter().map(|&i| fields[i].clone()).collect(),
                )
            }
            None => (full, fields),
        };
        let schema = Arc::new(Schema::new(fields));
        // One query's hits come nearest first: a sort by `_distance` above is already met.
        let mut eq = EquivalenceProperties::new(schema.clone());
        if let (false, Some(i)) = (batch, out.iter().position(|c| *c == OutCol::Distance)) {
            // NULLs (only function values have them) where DataFusion's sort puts them.
            let descending = spec.distance.nearest_largest(spec.metric);
            let nearest_first = PhysicalSortExpr::new(
                Arc::new(Column::new(DISTANCE, i)),
                SortOptions::new(descending, descending),
            );
            eq.add_ordering([nearest_first]);
        }
        // One partition per segment of a result table that changed.
        let partitions = segments
            .as_ref()
            .map_or(1, |s| s.properties().partitioning.partition_count());
        let properties = Arc::new(PlanProperties::new(
            eq,
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(VectorSearchExec {
            spec,
            queries,
            prefilter,
            projection,
            out,
            ctx,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
            stats: Arc::default(),
            batch_queries: Arc::default(),
            segments,
        })
    }

    /// What is searched, and how.
    pub fn spec(&self) -> &SearchSpec {
        &self.spec
    }

    /// Where the queries come from.
    pub fn queries(&self) -> &Queries {
        &self.queries
    }

    /// The pre-filter.
    pub fn prefilter(&self) -> Option<&Prefilter> {
        self.prefilter.as_ref()
    }

    /// Output columns kept, as indices into the full output.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }

    /// This plan with its parameter's value from `params` (a plain search), and fresh
    /// metrics: what one run of a prepared query executes.
    pub fn bind(&self, params: &ParamValues) -> DfResult<Arc<dyn ExecutionPlan>> {
        let queries = match &self.queries {
            Queries::Param(id) => {
                let value = params.get_placeholders_with_values(id)?.value;
                Queries::Single(Arc::new(Literal::new(value)))
            }
            q => q.clone(),
        };
        self.with_queries(queries)
    }

    /// This search for `queries`, with fresh metrics and statistics.
    fn with_queries(&self, queries: Queries) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(VectorSearchExec::build(
            self.spec.clone(),
            queries,
            self.prefilter.clone(),
            self.projection.clone(),
            self.ctx.clone(),
            self.segments.clone(),
        )?))
    }

    /// How the last run of this plan was answered.
    pub fn stats(&self) -> SearchStats {
        self.stats.lock().expect("lock").clone()
    }
}

impl DisplayAs for VectorSearchExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("VectorSearchExec: ")?;
        self.spec.fmt_explain(f)?;
        if let Some(p) = &self.prefilter {
            write!(f, ", filter={}", p.text)?;
        }
        match &self.queries {
            Queries::Batch { .. } => f.write_str(", queries=input")?,
            Queries::Param(id) => write!(f, ", query={id}")?,
            Queries::Single(_) => {}
        }
        fmt_projection(f, self.schema.fields())?;
        let st = self.stats.lock().expect("lock");
        if !st.mode.is_empty() {
            write!(f, ", answered={}", st.mode)?;
            if let Some(r) = &st.fallback_reason {
                write!(f, " ({r})")?;
            }
        }
        Ok(())
    }
}

impl ExecutionPlan for VectorSearchExec {
    fn name(&self) -> &str {
        "VectorSearchExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    /// A batch search's queries, then a segmented table's segment numbers.
    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        let mut children = Vec::new();
        if let Queries::Batch { input, .. } = &self.queries {
            children.push(input);
        }
        children.extend(self.segments.as_ref());
        children
    }

    /// The queries whole (every partition searches them all); the segment numbers
    /// partition by partition.
    fn required_input_distribution(&self) -> Vec<Distribution> {
        let mut d = Vec::new();
        if matches!(self.queries, Queries::Batch { .. }) {
            d.push(Distribution::SinglePartition);
        }
        if self.segments.is_some() {
            d.push(Distribution::UnspecifiedDistribution);
        }
        d
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false; self.children().len()]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        if let Queries::Single(q) = &self.queries
            && f(q)? == TreeNodeRecursion::Stop
        {
            return Ok(TreeNodeRecursion::Stop);
        }
        if let Some(p) = &self.prefilter {
            return f(&p.expr);
        }
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut children = children.into_iter();
        let queries = match &self.queries {
            Queries::Batch { key, vector, .. } => Queries::Batch {
                input: children.next().ok_or_else(|| {
                    DataFusionError::Internal("VectorSearchExec: no queries".into())
                })?,
                key: *key,
                vector: *vector,
            },
            q => q.clone(),
        };
        let segments = match &self.segments {
            Some(_) => Some(children.next().ok_or_else(|| {
                DataFusionError::Internal("VectorSearchExec: no segment numbers".into())
            })?),
            None => None,
        };
        Ok(Arc::new(VectorSearchExec::build(
            self.spec.clone(),
            queries,
            self.prefilter.clone(),
            self.projection.clone(),
            self.ctx.clone(),
            segments,
        )?))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let count = self.properties.partitioning.partition_count();
        if partition >= count {
            return Err(DataFusionError::Internal(format!(
                "VectorSearchExec has {count} partitions, asked for {partition}"
            )));
        }
        let mut run = Run {
            spec: self.spec.clone(),
            queries: self.queries.clone(),
            prefilter: self.prefilter.clone(),
            out: self.out.clone(),
            ctx: self.ctx.clone(),
            schema: self.schema.clone(),
            metrics: RunMetrics::new(&self.metrics, partition),
            stats: self.stats.clone(),
            batch_queries: self.batch_queries.clone(),
            part: 0,
        };
        let segments = self.segments.clone();
        let stream = futures::stream::once(async move {
            if !run.spec.target.segments.is_empty() {
                let n = match &segments {
                    Some(s) => segment_number(s, partition, context.clone()).await?,
                    None => 0,
                };
                let Some(part) = run.spec.target.part(n) else {
                    return Err(DataFusionError::Internal(format!(
                        "VectorSearchExec: no segment {n}"
                    )));
                };
                run.spec = run.spec.for_segment(part)?;
                run.part = n as u32;
            }
            run.run(context).await
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            stream,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The metrics of one run (EXPLAIN ANALYZE).
struct RunMetrics {
    baseline: BaselineMetrics,
    queries: Count,
    candidates: Count,
    rows_hydrated: Count,
    requests: Count,
    index_loaded: Count,
    index_cached: Count,
    exact_searches: Count,
    rescored: Count,
    load_time: Time,
    filter_time: Time,
    search_time: Time,
    hydrate_time: Time,
}

impl RunMetrics {
    fn new(set: &ExecutionPlanMetricsSet, partition: usize) -> Self {
        let count = |name: &'static str| MetricBuilder::new(set).counter(name, partition);
        let time = |name: &'static str| MetricBuilder::new(set).subset_time(name, partition);
        RunMetrics {
            baseline: BaselineMetrics::new(set, partition),
            queries: count("queries"),
            candidates: count("candidates"),
            rows_hydrated: count("rows_hydrated"),
            requests: count("store_requests"),
            index_loaded: count("index_loaded"),
            index_cached: count("index_cached"),
            exact_searches: count("exact_searches"),
            rescored: count("candidates_rescored"),
            load_time: time("load_time"),
            filter_time: time("filter_time"),
            search_time: time("search_time"),
            hydrate_time: time("hydrate_time"),
        }
    }
}

/// The state one execution carries.
struct Run {
    spec: SearchSpec,
    queries: Queries,
    prefilter: Option<Prefilter>,
    out: Vec<OutCol>,
    ctx: Arc<SearchContext>,
    schema: SchemaRef,
    metrics: RunMetrics,
    stats: Arc<Mutex<SearchStats>>,
    batch_queries: BatchQueries,
    /// The number of the segment this run searches.
    part: u32,
}

/// The hits of every query, and how they were found.
struct Found {
    hits: Vec<Hit>,
    /// Query index of each hit.
    query_of: Vec<u32>,
    /// Rank of each hit within its query (1 = nearest).
    rank: Vec<u32>,
    mode: &'static str,
    candidates: usize,
    /// The SQL function's values of the hits, for a search standing for an `ORDER BY`.
    values: Option<Vec<Option<f64>>>,
}

impl Run {
    async fn run(self, task: Arc<TaskContext>) -> DfResult<RecordBatch> {
        let (vectors, keys, scalar) = self.queries(&task).await?;
        for v in &vectors {
            self.check_dims(v)?;
        }
        if vectors.is_empty() {
            return Ok(RecordBatch::new_empty(self.schema.clone()));
        }
        let counts = Arc::new(RequestCounts::default());
        let store = self.store(&counts).await?;
        let batch = self
            .search(&store, &vectors, keys.as_ref(), scalar.as_ref())
            .await;
        let requests = counts.snapshot();
        self.metrics.requests.add(requests.total() as usize);
        let mut st = self.stats.lock().expect("lock");
        st.requests = requests;
        st.queries = vectors.len();
        let batch = batch?;
        st.rows = batch.num_rows();
        self.metrics.baseline.record_output(batch.num_rows());
        Ok(batch)
    }

    /// The query vectors, for a batch the query keys, and for one query its value as the
    /// statement gave it.
    async fn queries(
        &self,
        task: &Arc<TaskContext>,
    ) -> DfResult<(Vec<Vec<f32>>, Option<ArrayRef>, Option<ScalarValue>)> {
        match &self.queries {
            Queries::Single(expr) => {
                let one = RecordBatch::try_new_with_options(
                    Arc::new(Schema::empty()),
                    vec![],
                    &RecordBatchOptions::new().with_row_count(Some(1)),
                )?;
                let value = match expr.evaluate(&one)? {
                    ColumnarValue::Scalar(s) => s,
                    ColumnarValue::Array(a) => ScalarValue::try_from_array(&a, 0)?,
                };
                Ok((vec![query_vector(&value)?], None, Some(value)))
            }
            Queries::Batch { input, key, vector } => {
                // Read once, whichever segment's partition comes first.
                let (vectors, keys) = self
                    .batch_queries
                    .get_or_try_init(|| async {
                        let batches: Vec<RecordBatch> =
                            input.execute(0, task.clone())?.try_collect().await?;
                        let all = concat_batches(&input.schema(), &batches)?;
                        let vectors = query_vectors(all.column(*vector))?;
                        Ok::<_, DataFusionError>((vectors, all.column(*key).clone()))
                    })
                    .await?
                    .clone();
                Ok((vectors, Some(keys), None))
            }
            Queries::Param(id) => Err(DataFusionError::Execution(format!(
                "vector_search: parameter '{id}' has no value (a prepared query binds it)"
            ))),
        }
    }

    fn check_dims(&self, v: &[f32]) -> Result<()> {
        match self.spec.dims {
            Some(d) if d != v.len() => Err(JammiError::InvalidInput(format!(
                "vector_search: the query has {} dimensions but column '{}' has {d}",
                v.len(),
                self.spec.vector_name()
            ))),
            _ => Ok(()),
        }
    }

    /// The file's store, counting this run's requests.
    async fn store(&self, counts: &Arc<RequestCounts>) -> Result<Arc<dyn ObjectStore>> {
        let url = &self.spec.target.parquet;
        let registry = &self.ctx.registry;
        let base = match registry.bound(url) {
            Some(s) => s,
            None => registry.store(url, None).await?,
        };
        Ok(Arc::new(CountingStore::new(base, counts.clone())))
    }

    async fn search(
        &self,
        store: &Arc<dyn ObjectStore>,
        vectors: &[Vec<f32>],
        keys: Option<&ArrayRef>,
        scalar: Option<&ScalarValue>,
    ) -> Result<RecordBatch> {
        let url = &self.spec.target.parquet;
        let footer = tokio::sync::OnceCell::new();
        let timer = self.metrics.load_time.timer();
        // The file's current version (the index must have been built for it; cached footers
        // and vectors are this version's) is asked for while the index loads: a cold search
        // waits for the larger of the two, not their sum. An index whose file changed is
        // loaded for nothing, and not used.
        let version = async {
            let current = store
                .head(&url.object_path()?)
                .await
                .map_err(|e| JammiError::storage(url, e))?;
            if self.needs_footer() {
                let _ = footer.set(self.ctx.footer(store, url, &current).await?);
            }
            Ok::<_, JammiError>(current)
        };
        let (current, loaded) = tokio::join!(version, self.index(store));
        let current = current?;
        let (loaded, reason) = self.check_index(store, &current, loaded).await;
        timer.done();
        let footer = || footer.get_or_try_init(|| self.ctx.footer(store, url, &current));
        if let (Some(r), false) = (&reason, self.spec.options.exact) {
            tracing::warn!("vector_search: using exact search: {r}");
        }
        let allowed = match &self.prefilter {
            Some(p) => {
                let timer = self.metrics.filter_time.timer();
                let a = self.allowed(store, footer().await?, p).await?;
                timer.done();
                Some(a)
            }
            None => None,
        };
        // Deleted rows are never hits: a search with deletions is a filtered search.
        let live = match &self.spec.target.deleted {
            None => None,
            Some(d) => {
                let rows = match &self.spec.target.manifest {
                    Some(m) => m.rows as usize,
                    None => footer().await?.metadata().file_metadata().num_rows() as usize,
                };
                Some(self.ctx.live_rows(store, &d.url, &d.record, rows).await?)
            }
        };
        let allowed: Option<std::borrow::Cow<'_, [bool]>> = match (allowed, &live) {
            (None, None) => None,
            (Some(a), None) => Some(std::borrow::Cow::Owned(a)),
            (None, Some(l)) => Some(std::borrow::Cow::Borrowed(l.as_slice())),
            (Some(mut a), Some(l)) => {
                a.iter_mut().zip(l.iter()).for_each(|(x, l)| *x &= *l);
                Some(std::borrow::Cow::Owned(a))
            }
        };
        let timer = self.metrics.search_time.timer();
        let found = match &loaded {
            Some(l) if self.rescores(l) => {
                let found = self.search_index(l, vectors, allowed.as_deref())?;
                self.rescore(store, (&current, footer), found, l, vectors)
                    .await?
            }
            Some(l) => self.search_index(l, vectors, allowed.as_deref())?,
            None => {
                let m = footer().await?;
                let at =
                    read::file_columns(url, m, &self.spec.target.schema, &[self.spec.vector_idx])?
                        [0];
                let v = self
                    .ctx
                    .exact_vectors(
                        store,
                        url,
                        &current,
                        m,
                        (at, self.spec.vector_name()),
                        vectors.first().map_or(0, Vec::len),
                    )
                    .await?;
                self.search_exact(&v, vectors, allowed.as_deref())
            }
        };
        let (found, reason) = match (self.spec.distance, scalar) {
            (DistanceColumn::Function, Some(query)) => {
                let scored = self
                    .function_values(store, (&current, footer), found, loaded.as_deref(), query)
                    .await?;
                match scored {
                    Ok(found) => (found, reason),
                    Err(why) => {
                        let m = footer().await?;
                        let allowed = allowed.as_deref();
                        let scored = function::scan(&self.spec, store, m, query, allowed).await?;
                        (Found::scanned(scored), Some(why))
                    }
                }
            }
            _ => (found, reason),
        };
        timer.done();
        self.metrics.queries.add(vectors.len());
        self.metrics.candidates.add(found.candidates);
        {
            let mut st = self.stats.lock().expect("lock");
            st.mode = found.mode.to_string();
            st.fallback_reason = reason;
            st.candidates = found.candidates;
        }
        let timer = self.metrics.hydrate_time.timer();
        let batch = self
            .assemble(store, (&current, footer), &found, loaded.as_deref(), keys)
            .await;
        timer.done();
        batch
    }

    /// The hits of a search standing for an `ORDER BY <function>`, with the function's own
    /// values and in its order; `Err(why)` when a value is NULL (the index cannot place
    /// such rows, so the whole table is scored instead).
    async fn function_values<'m, F, M>(
        &self,
        store: &Arc<dyn ObjectStore>,
        (current, footer): (&ObjectMeta, M),
        mut found: Found,
        loaded: Option<&LoadedIndex>,
        query: &ScalarValue,
    ) -> Result<std::result::Result<Found, String>>
    where
        M: Fn() -> F,
        F: std::future::Future<Output = Result<&'m ArrowReaderMetadata>>,
    {
        let context = (&self.spec, self.ctx.as_ref(), current);
        let wanted = [self.spec.vector_idx];
        let (columns, _) =
            hydrate::table_columns(context, store, footer, &found.hits, loaded, &wanted).await?;
        let values = function::values(self.spec.metric, &columns[0], query)?;
        if values.null_count() > 0 {
            return Ok(Err(format!(
                "the distance function is NULL for a row the index found (a zero vector?), \
                 which the index cannot place ({:?}): every row was scored",
                self.spec.metric
            )));
        }
        let values: Vec<Option<f64>> = values.iter().collect();
        let mut order: Vec<usize> = (0..values.len()).collect();
        let cmp = function::nearest_first(self.spec.metric);
        order.sort_by(|&a, &b| cmp(&values[a], &values[b]).then(a.cmp(&b)));
        found.hits = order.iter().map(|&i| found.hits[i]).collect();
        found.rank = (1..=order.len() as u32).collect();
        found.values = Some(order.iter().map(|&i| values[i]).collect());
        Ok(Ok(found))
    }

    /// `false` when the output needs no table column but the key, and nothing reads the
    /// file: the answer then comes from the sidecars alone.
    fn needs_footer(&self) -> bool {
        let key = self.spec.target.key_column();
        self.spec.mode != PlannedMode::Index
            || self.prefilter.is_some()
            || self.out.iter().any(|c| match c {
                OutCol::Table(t) => Some(*t) != key,
                _ => false,
            })
    }

    /// The index the plan searches (through the caller's `store`), or why the search goes
    /// exact; not yet checked against the file's current version ([`Self::check_index`]).
    async fn index(
        &self,
        store: &Arc<dyn ObjectStore>,
    ) -> std::result::Result<(Arc<LoadedIndex>, bool), String> {
        let t = &self.spec.target;
        match (&self.spec.mode, &t.manifest) {
            (PlannedMode::Exact(why), _) => Err(why.clone()),
            (PlannedMode::Index, None) => Err("no manifest".into()),
            (PlannedMode::Index, Some(m)) => self
                .ctx
                .indexes
                .get_traced(&t.dir, store, m)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// The loaded index when the manifest it came from was written for the file's
    /// `current` version, or why the search goes exact.
    async fn check_index(
        &self,
        store: &Arc<dyn ObjectStore>,
        current: &ObjectMeta,
        loaded: std::result::Result<(Arc<LoadedIndex>, bool), String>,
    ) -> (Option<Arc<LoadedIndex>>, Option<String>) {
        let t = &self.spec.target;
        if let (Some(m), PlannedMode::Index) = (&t.manifest, &self.spec.mode)
            && let Some(entry) = m.file(FileRole::Parquet)
        {
            match check(store, &t.parquet, current, entry).await {
                Ok(FileCheck::Same) => {}
                Ok(FileCheck::Changed(why)) => {
                    return (None, Some(format!("{why}; its index is not used")));
                }
                Err(e) => return (None, Some(e.to_string())),
            }
        }
        match loaded {
            Ok((l, fresh)) => {
                if fresh {
                    self.metrics.index_loaded.add(1);
                } else {
                    self.metrics.index_cached.add(1);
                }
                self.stats.lock().expect("lock").index_loaded = fresh;
                (Some(l), None)
            }
            Err(why) => (None, Some(why)),
        }
    }

    /// Rows the pre-filter allows, by Parquet row position.
    async fn allowed(
        &self,
        store: &Arc<dyn ObjectStore>,
        meta: &ArrowReaderMetadata,
        p: &Prefilter,
    ) -> Result<Vec<bool>> {
        let url = &self.spec.target.parquet;
        let rows = meta.metadata().file_metadata().num_rows() as usize;
        let mut allowed = Vec::with_capacity(rows);
        let schema = &self.spec.target.schema;
        let stream = read::scan_table_columns(store, url, meta, schema, &p.columns).await?;
        let mut stream = std::pin::pin!(stream);
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let v = p.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
            let b = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                JammiError::InvalidInput(format!(
                    "vector_search: filter '{}' is not a boolean predicate",
                    p.text
                ))
            })?;
            allowed.extend((0..b.len()).map(|i| b.is_valid(i) && b.value(i)));
        }
        Ok(allowed)
    }

    /// `true` when the graph's candidates are re-ranked by the exact vectors: a quantised
    /// index, unless the search asks for its approximate answer (`rescore=false`).
    fn rescores(&self, l: &LoadedIndex) -> bool {
        l.is_quantised() && self.spec.options.rescore != Some(false)
    }

    /// Candidates the graph gives per query: `k`, or `k × oversample` to be re-ranked.
    fn graph_k(&self, l: &LoadedIndex) -> usize {
        if !self.rescores(l) {
            return self.spec.k;
        }
        let n = self.spec.options.oversample;
        let n = n.unwrap_or_else(|| l.quantization().default_oversample());
        self.spec.k.saturating_mul(n).min(l.len().max(self.spec.k))
    }

    /// The `k` nearest of each query's candidates by the exact distance of their vectors
    /// (a quantised index's own copies are approximate), so `_distance` is the exact
    /// distance whatever the index's precision. The vectors come from the index's
    /// exact-vectors file, else from the Parquet file's vector column.
    async fn rescore<'m, F, M>(
        &self,
        store: &Arc<dyn ObjectStore>,
        (current, footer): (&ObjectMeta, M),
        found: Found,
        loaded: &LoadedIndex,
        vectors: &[Vec<f32>],
    ) -> Result<Found>
    where
        M: Fn() -> F,
        F: std::future::Future<Output = Result<&'m ArrowReaderMetadata>>,
    {
        let keys: Option<Vec<u64>> = found.hits.iter().map(|h| h.key).collect();
        let from_sibling = match &keys {
            Some(keys) => loaded.exact_vectors(store, keys).await?,
            None => None,
        };
        let column = match from_sibling {
            Some(_) => None,
            None => {
                let context = (&self.spec, self.ctx.as_ref(), current);
                let wanted = [self.spec.vector_idx];
                let hits = &found.hits;
                let (mut columns, _) =
                    hydrate::table_columns(context, store, footer, hits, Some(loaded), &wanted)
                        .await?;
                Some(columns.remove(0))
            }
        };
        let from_file = match &column {
            Some(c) => Some(VectorColumn::new(self.spec.vector_name(), c)?),
            None => None,
        };
        let (metric, dims) = (self.spec.metric, loaded.info().dimensions);
        let mut per_query: Vec<Vec<Hit>> = vec![Vec::new(); vectors.len()];
        for (i, hit) in found.hits.iter().enumerate() {
            let q = found.query_of[i] as usize;
            let v = match (&from_sibling, &from_file) {
                (Some(all), _) => Some(std::borrow::Cow::Borrowed(&all[i * dims..(i + 1) * dims])),
                (None, Some(col)) => col.get(i),
                (None, None) => None,
            };
            let v = v.ok_or_else(|| {
                JammiError::Index(format!(
                    "row {} has no vector in the file but one in its index",
                    hit.row
                ))
            })?;
            let distance = metric.finalize(metric.raw_distance(&vectors[q], &v));
            per_query[q].push(Hit { distance, ..*hit });
        }
        self.metrics.rescored.add(found.hits.len());
        let mut out = Found::new(found.mode);
        out.candidates = found.candidates;
        for (q, mut hits) in per_query.into_iter().enumerate() {
            hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.row.cmp(&b.row)));
            hits.truncate(self.spec.k);
            out.push(q, hits);
        }
        Ok(out)
    }

    fn search_index(
        &self,
        l: &LoadedIndex,
        vectors: &[Vec<f32>],
        allowed: Option<&[bool]>,
    ) -> Result<Found> {
        let (k, ef) = (self.graph_k(l), self.spec.options.ef_search);
        let searched = match vectors {
            [one] => vec![l.search(&Query { vector: one, k, ef }, allowed)?],
            many => {
                let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
                l.search_batch(many, k, ef, allowed, threads)?
            }
        };
        let mut found = Found::new(if searched.is_empty() { "index" } else { "" });
        for (q, s) in searched.into_iter().enumerate() {
            found.mode = s.answered.as_str();
            found.candidates += s.candidates;
            found.push(q, s.hits);
        }
        if found.mode.is_empty() {
            found.mode = Answered::Index.as_str();
        }
        Ok(found)
    }

    fn search_exact(
        &self,
        v: &crate::index::exact::ExactVectors,
        vectors: &[Vec<f32>],
        allowed: Option<&[bool]>,
    ) -> Found {
        self.metrics.exact_searches.add(vectors.len());
        let mut found = Found::new("exact");
        for (q, query) in vectors.iter().enumerate() {
            let hits = v
                .search(query, self.spec.k, self.spec.metric, allowed)
                .into_iter()
                .map(|(row, distance)| Hit {
                    row,
                    key: None,
                    distance,
                })
                .collect();
            found.candidates += match allowed {
                Some(a) => v.rows.iter().filter(|r| a[**r as usize]).count(),
                None => v.rows.len(),
            };
            found.push(q, hits);
        }
        found
    }

    /// The output batch: the hits' table columns, read together for all queries, with
    /// the query keys, distances and ranks.
    async fn assemble<'m, F, M>(
        &self,
        store: &Arc<dyn ObjectStore>,
        (current, footer): (&ObjectMeta, M),
        found: &Found,
        loaded: Option<&LoadedIndex>,
        keys: Option<&ArrayRef>,
    ) -> Result<RecordBatch>
    where
        M: Fn() -> F,
        F: std::future::Future<Output = Result<&'m ArrowReaderMetadata>>,
    {
        let wanted: Vec<usize> = self
            .out
            .iter()
            .filter_map(|c| match c {
                OutCol::Table(t) => Some(*t),
                _ => None,
            })
            .collect();
        let context = (&self.spec, self.ctx.as_ref(), current);
        let (columns, hydrated) =
            hydrate::table_columns(context, store, footer, &found.hits, loaded, &wanted).await?;
        self.metrics.rows_hydrated.add(hydrated as usize);
        self.stats.lock().expect("lock").rows_hydrated = hydrated as usize;
        let mut table = columns.into_iter();
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.out.len());
        for c in &self.out {
            arrays.push(match c {
                OutCol::Table(_) => table.next().expect("one array per table column"),
                OutCol::Distance => self.distances(found),
                OutCol::Rank => Arc::new(UInt32Array::from(found.rank.clone())),
                OutCol::Part => Arc::new(UInt32Array::from(vec![self.part; found.hits.len()])),
                OutCol::QueryKey => {
                    let keys = keys.expect("batch searches have keys");
                    take(
                        keys.as_ref(),
                        &UInt32Array::from(found.query_of.clone()),
                        None,
                    )?
                }
            });
        }
        Ok(RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(found.hits.len())),
        )?)
    }
}

impl Run {
    /// The distance column of `hits` (see [`DistanceColumn`]).
    fn distances(&self, found: &Found) -> ArrayRef {
        if let Some(values) = &found.values {
            return Arc::new(Float64Array::from(values.clone()));
        }
        let d = found.hits.iter().map(|h| h.distance);
        match (self.spec.distance, self.spec.metric) {
            (DistanceColumn::Index, _) => Arc::new(Float32Array::from_iter_values(d)),
            (DistanceColumn::Function, Metric::Ip) => {
                Arc::new(Float64Array::from_iter_values(d.map(|d| 1.0 - d as f64)))
            }
            (DistanceColumn::Function, _) => {
                Arc::new(Float64Array::from_iter_values(d.map(f64::from)))
            }
        }
    }
}

impl Found {
    /// The answer of [`function::scan`]: one query's rows and values, in order.
    fn scanned(scored: Vec<(u64, Option<f64>)>) -> Self {
        let mut found = Found::new("exact");
        found.candidates = scored.len();
        found.hits = scored
            .iter()
            .map(|(row, v)| Hit {
                row: *row,
                key: None,
                distance: v.map_or(f32::NAN, |v| v as f32),
            })
            .collect();
        found.query_of = vec![0; scored.len()];
        found.rank = (1..=scored.len() as u32).collect();
        found.values = Some(scored.into_iter().map(|(_, v)| v).collect());
        found
    }

    fn new(mode: &'static str) -> Self {
        Found {
            hits: Vec::new(),
            query_of: Vec::new(),
            rank: Vec::new(),
            mode,
            candidates: 0,
            values: None,
        }
    }

    /// Adds one query's hits, nearest first (the order the plan declares), ties by row
    /// position: the order does not depend on the graph's.
    fn push(&mut self, query: usize, mut hits: Vec<Hit>) {
        hits.sort_by(|a, b| a.distance.total_cmp(&b.distance).then(a.row.cmp(&b.row)));
        for (i, h) in hits.into_iter().enumerate() {
            self.hits.push(h);
            self.query_of.push(query as u32);
            self.rank.push(i as u32 + 1);
        }
    }
}
