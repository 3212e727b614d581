//! `MERGE INTO jammi.public.<t> USING <source> ON <match> WHEN ...`: the upsert of an
//! embedding pipeline. DataFusion joins the live rows of every segment (with their segment
//! and row position) to the source and picks each row's clause — that plan is the child of
//! [`MergeExec`], so `EXPLAIN` shows the join that will run. [`MergeExec::execute`] turns its
//! rows into deletions plus one segment of updated and inserted rows, committed as one
//! version; a target row that two source rows would change fails the MERGE before anything
//! is committed, naming its key.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, BooleanArray, Int32Array, RecordBatch, UInt32Array, UInt64Array,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::catalog::streaming::StreamingTable;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::{Column, DFSchemaRef, Result as DfResult, TableReference, internal_err};
use datafusion::datasource::{TableType, provider_as_source};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::dml::{MergeIntoAction, MergeIntoClause, MergeIntoClauseKind};
use datafusion::logical_expr::{JoinType, LogicalPlan, LogicalPlanBuilder, cast, lit, when};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::PartitionStream;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    execute_stream,
};
use datafusion::prelude::Expr;
use futures::StreamExt;

use crate::error::{JammiError, Result};
use crate::store::versions::{Operation, TableVersion};
use crate::store::{Change, ResultStore};

/// Columns the join adds beside the table's (names no table column may take).
const SEGMENT: &str = "__jammi_merge_segment";
const ROW: &str = "__jammi_merge_row";
const FROM_SOURCE: &str = "__jammi_merge_source_row";
const ACTION: &str = "__jammi_merge_action";
const KEY: &str = "__jammi_merge_key";

/// What a fired clause does to the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Update,
    Delete,
    Insert,
}

/// Plans the MERGE of `source` into `base` (a version of table `name` with `schema`):
/// the join and the clause each joined row fires, as a DataFusion plan, under a [`MergeExec`].
#[allow(clippy::too_many_arguments)]
pub(crate) async fn plan(
    state: &dyn Session,
    store: Arc<ResultStore>,
    base: TableVersion,
    schema: SchemaRef,
    source: Arc<dyn ExecutionPlan>,
    merge_schema: DFSchemaRef,
    on: Expr,
    clauses: Vec<MergeIntoClause>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let name = base.table.clone();
    if let Some(f) = schema
        .fields()
        .iter()
        .find(|f| f.name().starts_with("__jammi_merge"))
    {
        return Err(JammiError::InvalidInput(format!(
            "MERGE INTO {name}: column '{}' takes a name MERGE uses itself",
            f.name()
        )));
    }
    let n = schema.fields().len();
    let target_q = merge_schema.qualified_field(0).0.cloned();
    let target = target_rows(&store, &base, &schema, target_q.clone())?;
    let source = source_rows(source, &merge_schema, n)?;
    let col_t = |c: &str| Expr::Column(Column::new(target_q.clone(), c));
    let by_target = clauses.iter().any(|c| c.kind.is_not_matched_by_target());
    let by_source = clauses
        .iter()
        .any(|c| c.kind == MergeIntoClauseKind::NotMatchedBySource);
    let join = match (by_target, by_source) {
        (true, true) => JoinType::Full,
        (true, false) => JoinType::Right,
        (false, true) => JoinType::Left,
        (false, false) => JoinType::Inner,
    };
    let joined = LogicalPlanBuilder::from(target).join_on(source, join, [on.clone()])?;
    let (action, acts) = action_expr(&clauses, &col_t)?;
    let keys = key_columns(&on, target_q.as_ref(), &schema);
    let mut out = vec![
        col_t(SEGMENT).alias(SEGMENT),
        col_t(ROW).alias(ROW),
        action.clone().alias(ACTION),
    ];
    for (i, k) in keys.iter().enumerate() {
        out.push(col_t(k).alias(format!("{KEY}{i}")));
    }
    if acts.iter().any(|a| *a != Act::Delete) {
        out.extend(new_values(&clauses, &schema, &action, &col_t)?);
    }
    let plan = joined.filter(action.is_not_null())?.project(out)?.build()?;
    let rows = plan_here(state, &plan).await?;
    let write = crate::sql::options::session_write(state);
    Ok(Arc::new(MergeExec::new(
        store, base, schema, rows, acts, keys, name, write,
    )))
}

/// `plan` planned for this process whatever the session's query planner (a cluster's
/// would send it away): its rows (the target's segments, the USING stream) are here.
async fn plan_here(state: &dyn Session, plan: &LogicalPlan) -> Result<Arc<dyn ExecutionPlan>> {
    use datafusion::physical_planner::PhysicalPlanner;
    let Some(state) = state
        .as_any()
        .downcast_ref::<datafusion::execution::SessionState>()
    else {
        return Ok(state.create_physical_plan(plan).await?);
    };
    let optimized = state.optimize(plan)?;
    Ok(
        datafusion::physical_planner::DefaultPhysicalPlanner::default()
            .create_physical_plan(&optimized, state)
            .await?,
    )
}

/// The live rows of every segment of `base` with their segment index and row position,
/// one partition per segment, under the target's qualifier.
fn target_rows(
    store: &Arc<ResultStore>,
    base: &TableVersion,
    schema: &SchemaRef,
    qualifier: Option<TableReference>,
) -> Result<LogicalPlan> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(SEGMENT, DataType::UInt32, false));
    fields.push(Field::new(ROW, DataType::UInt64, false));
    let with_ids = Arc::new(Schema::new(fields));
    let parts = (0..base.segments.len())
        .map(|i| {
            Arc::new(SegmentRows {
                store: store.clone(),
                base: base.clone(),
                segment: i,
                table: schema.clone(),
                schema: with_ids.clone(),
            }) as Arc<dyn PartitionStream>
        })
        .collect();
    let table: Arc<dyn TableProvider> = Arc::new(StreamingTable::try_new(with_ids, parts)?);
    let q = qualifier.unwrap_or_else(|| TableReference::bare(base.table.clone()));
    Ok(LogicalPlanBuilder::scan(q, provider_as_source(table), None)?.build()?)
}

/// The USING rows, each column under the qualifier the statement gave it, plus a marker
/// that a joined row has a source side.
fn source_rows(
    source: Arc<dyn ExecutionPlan>,
    merge_schema: &DFSchemaRef,
    skip: usize,
) -> Result<LogicalPlan> {
    let schema = source.schema();
    let table: Arc<dyn TableProvider> = Arc::new(PlanTable(source));
    let scan = LogicalPlanBuilder::scan("__jammi_merge_using", provider_as_source(table), None)?;
    let mut cols = Vec::new();
    for (i, f) in schema.fields().iter().enumerate() {
        let (q, field) = merge_schema.qualified_field(skip + i);
        let c = Expr::Column(Column::new(
            Some(TableReference::bare("__jammi_merge_using")),
            f.name(),
        ));
        cols.push(c.alias_qualified(q.cloned(), field.name()));
    }
    cols.push(lit(true).alias(FROM_SOURCE));
    Ok(scan.project(cols)?.build()?)
}

/// The index of the clause each joined row fires — the first, in statement order, of its
/// kind whose condition holds — and what each clause does.
fn action_expr(
    clauses: &[MergeIntoClause],
    col_t: &dyn Fn(&str) -> Expr,
) -> Result<(Expr, Vec<Act>)> {
    let has_target = col_t(ROW).is_not_null();
    let has_source = Expr::Column(Column::new_unqualified(FROM_SOURCE)).is_not_null();
    if clauses.is_empty() {
        return Err(JammiError::InvalidInput(
            "MERGE INTO requires at least one WHEN clause".into(),
        ));
    }
    let mut arms = Vec::new();
    let mut acts = Vec::new();
    for (i, c) in clauses.iter().enumerate() {
        let kind = match c.kind.canonical() {
            MergeIntoClauseKind::Matched => has_target.clone().and(has_source.clone()),
            MergeIntoClauseKind::NotMatchedBySource => has_source.clone().is_not_true(),
            _ => has_target.clone().is_not_true(),
        };
        let cond = match &c.predicate {
            Some(p) => kind.and(p.clone()),
            None => kind,
        };
        acts.push(match &c.action {
            MergeIntoAction::Update(_) => Act::Update,
            MergeIntoAction::Delete => Act::Delete,
            MergeIntoAction::Insert { .. } => Act::Insert,
        });
        arms.push((cond, lit(i as i32)));
    }
    let action = case_when(arms, lit(datafusion::common::ScalarValue::Int32(None)))?;
    Ok((action, acts))
}

/// `CASE WHEN <cond> THEN <value> ... ELSE <otherwise> END` of `arms` in order (`otherwise`
/// alone when there are none).
fn case_when(arms: Vec<(Expr, Expr)>, otherwise: Expr) -> Result<Expr> {
    let mut arms = arms.into_iter();
    let Some((cond, then)) = arms.next() else {
        return Ok(otherwise);
    };
    let mut case = when(cond, then);
    for (cond, then) in arms {
        case.when(cond, then);
    }
    Ok(case.otherwise(otherwise)?)
}

/// The target's columns the ON condition reads: they name a row that two source rows match.
fn key_columns(on: &Expr, target: Option<&TableReference>, schema: &SchemaRef) -> Vec<String> {
    let mut keys: Vec<String> = on
        .column_refs()
        .into_iter()
        .filter(|c| c.relation.as_ref() == target && schema.index_of(&c.name).is_ok())
        .map(|c| c.name.clone())
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

/// Each table column's value in the row a clause writes: an UPDATE's assignment or the row's
/// own value, an INSERT's value (NULL for columns it leaves out), cast to the column's type.
fn new_values(
    clauses: &[MergeIntoClause],
    schema: &SchemaRef,
    action: &Expr,
    col_t: &dyn Fn(&str) -> Expr,
) -> Result<Vec<Expr>> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(j, f)| {
            let mut arms = Vec::new();
            for (i, c) in clauses.iter().enumerate() {
                let v = match &c.action {
                    MergeIntoAction::Delete => continue,
                    MergeIntoAction::Update(set) => set
                        .iter()
                        .find(|(name, _)| name == f.name())
                        .map(|(_, e)| e.clone())
                        .unwrap_or_else(|| col_t(f.name())),
                    MergeIntoAction::Insert { columns, values } => {
                        let at = if columns.is_empty() {
                            Some(j)
                        } else {
                            columns.iter().position(|c| c == f.name())
                        };
                        match at.and_then(|k| values.get(k)) {
                            Some(e) => e.clone(),
                            None => lit(datafusion::common::ScalarValue::try_from(f.data_type())?),
                        }
                    }
                };
                let cond = action.clone().eq(lit(i as i32));
                arms.push((cond, cast(v, f.data_type().clone())));
            }
            let null = lit(datafusion::common::ScalarValue::try_from(f.data_type())?);
            Ok(case_when(arms, null)?.alias(f.name()))
        })
        .collect()
}

/// One segment's live rows with their segment index and row position.
#[derive(Debug, Clone)]
struct SegmentRows {
    store: Arc<ResultStore>,
    base: TableVersion,
    segment: usize,
    table: SchemaRef,
    schema: SchemaRef,
}

impl SegmentRows {
    async fn rows(&self) -> Result<impl futures::Stream<Item = Result<RecordBatch>> + use<>> {
        let store = self.store.object_store().await?;
        let seg = &self.base.segments[self.segment];
        let live = crate::store::maintain::live_rows_at(store, self.store.root(), &self.table, seg)
            .await?;
        let (schema, segment) = (self.schema.clone(), self.segment as u32);
        Ok(live.map(move |r| {
            let (batch, rows) = r?;
            let mut cols = batch.columns().to_vec();
            cols.push(Arc::new(UInt32Array::from(vec![segment; rows.len()])));
            cols.push(Arc::new(rows));
            Ok(RecordBatch::try_new(schema.clone(), cols)?)
        }))
    }
}

impl PartitionStream for SegmentRows {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let this = self.clone();
        let stream = futures::stream::once(async move { this.rows().await })
            .map(|s| match s {
                Ok(s) => s.map(|b| b.map_err(Into::into)).boxed(),
                Err(e) => futures::stream::once(async move { Err(e.into()) }).boxed(),
            })
            .flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream))
    }
}

/// The USING clause's physical plan as a table the join can scan.
#[derive(Debug)]
struct PlanTable(Arc<dyn ExecutionPlan>);

#[async_trait]
impl TableProvider for PlanTable {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        match projection {
            None => Ok(self.0.clone()),
            Some(p) => {
                let schema = self.0.schema();
                let exprs: Vec<(Arc<dyn datafusion::physical_expr::PhysicalExpr>, String)> = p
                    .iter()
                    .map(|&i| {
                        let f = schema.field(i);
                        (
                            Arc::new(datafusion::physical_expr::expressions::Column::new(
                                f.name(),
                                i,
                            )) as _,
                            f.name().clone(),
                        )
                    })
                    .collect();
                Ok(Arc::new(ProjectionExec::try_new(exprs, self.0.clone())?))
            }
        }
    }
}

/// Commits what the joined rows ask for: deletions per segment plus one segment of the
/// rows updated and inserted, as one version; returns the rows changed.
#[derive(Debug)]
pub(crate) struct MergeExec {
    store: Arc<ResultStore>,
    base: TableVersion,
    schema: SchemaRef,
    rows: Arc<dyn ExecutionPlan>,
    acts: Vec<Act>,
    keys: Vec<String>,
    table: String,
    /// The session's write settings for the rows it writes.
    write: crate::store::WriteSettings,
    properties: Arc<PlanProperties>,
}

impl MergeExec {
    #[allow(clippy::too_many_arguments)]
    fn new(
        store: Arc<ResultStore>,
        base: TableVersion,
        schema: SchemaRef,
        rows: Arc<dyn ExecutionPlan>,
        acts: Vec<Act>,
        keys: Vec<String>,
        table: String,
        write: crate::store::WriteSettings,
    ) -> Self {
        let properties = crate::catalog::dml::count_properties();
        MergeExec {
            store,
            base,
            schema,
            rows,
            acts,
            keys,
            table,
            write,
            properties,
        }
    }

    fn with_rows(&self, rows: Arc<dyn ExecutionPlan>) -> Self {
        MergeExec::new(
            self.store.clone(),
            self.base.clone(),
            self.schema.clone(),
            rows,
            self.acts.clone(),
            self.keys.clone(),
            self.table.clone(),
            self.write,
        )
    }

    /// `key = value, ...` of row `i` of `batch`, for a cardinality error.
    fn key_text(&self, batch: &RecordBatch, i: usize) -> String {
        let values = self.keys.iter().enumerate().map(|(k, name)| {
            let c = batch.column(3 + k);
            let v = if c.is_valid(i) {
                datafusion::arrow::util::display::array_value_to_string(c, i).unwrap_or_default()
            } else {
                "NULL".into()
            };
            format!("{name} = {v}")
        });
        values.collect::<Vec<_>>().join(", ")
    }

    async fn run(&self, context: Arc<TaskContext>) -> Result<u64> {
        let mut stream = execute_stream(self.rows.clone(), context)?;
        let mut deleted: BTreeMap<u32, roaring::RoaringBitmap> = BTreeMap::new();
        let (mut written, mut changed) = (Vec::new(), 0u64);
        let first_value = 3 + self.keys.len();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let segs = column::<UInt32Array>(&batch, 0)?;
            let rows = column::<UInt64Array>(&batch, 1)?;
            let action = column::<Int32Array>(&batch, 2)?;
            let mut writes = Vec::with_capacity(batch.num_rows());
            for i in 0..batch.num_rows() {
                let act = self.acts[action.value(i) as usize];
                writes.push(Some(act != Act::Delete));
                changed += 1;
                if act == Act::Insert {
                    continue;
                }
                let seg = deleted.entry(segs.value(i)).or_default();
                if !seg.insert(rows.value(i) as u32) {
                    return Err(JammiError::InvalidInput(format!(
                        "MERGE INTO {}: the target row with {} matches more than one source \
                         row; nothing was committed",
                        self.table,
                        self.key_text(&batch, i)
                    )));
                }
            }
            if batch.num_columns() > first_value {
                let keep: BooleanArray = writes.into_iter().collect();
                let values = batch.columns()[first_value..]
                    .iter()
                    .map(|c| datafusion::arrow::compute::filter(c, &keep))
                    .collect::<std::result::Result<Vec<_>, _>>()?;
                let values = RecordBatch::try_new(self.schema.clone(), values).map_err(|e| {
                    JammiError::InvalidInput(format!("MERGE INTO {}: {e}", self.table))
                })?;
                if values.num_rows() > 0 {
                    written.push(values);
                }
            }
        }
        if changed == 0 {
            return Ok(0);
        }
        let deleted = deleted
            .into_iter()
            .map(|(s, rows)| (self.base.segments[s as usize].path.clone(), rows))
            .collect();
        let change = Change::new(Operation::Merge, deleted).with_settings(self.write);
        let appended = (!written.is_empty()).then(|| {
            let rows = futures::stream::iter(written.into_iter().map(Ok));
            (self.schema.clone(), rows)
        });
        self.store
            .commit_change(&self.table, Some(&self.base), change, appended)
            .await?;
        Ok(changed)
    }
}

fn column<T: 'static>(batch: &RecordBatch, i: usize) -> Result<&T> {
    let c: &ArrayRef = batch.column(i);
    c.as_any()
        .downcast_ref::<T>()
        .ok_or_else(|| JammiError::InvalidInput(format!("MERGE: unexpected column {i} type")))
}

impl DisplayAs for MergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "MergeExec: table={}, version={}, segments={} (deletions plus a new segment, the \
             next version)",
            self.table,
            self.base.version,
            self.base.segments.len()
        )
    }
}

impl ExecutionPlan for MergeExec {
    fn name(&self) -> &str {
        "MergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.rows]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
        _options: datafusion::physical_plan::execution_plan::ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("MergeExec has one child");
        }
        Ok(Arc::new(self.with_rows(children.remove(0))))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return internal_err!("MergeExec has one child");
        }
        Ok(Arc::new(self.with_rows(children.remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("MergeExec has one partition, asked for {partition}");
        }
        let schema = self.properties.eq_properties.schema().clone();
        let this = self.with_rows(self.rows.clone());
        let out = schema.clone();
        let run = async move {
            let n = this.run(context).await?;
            Ok(RecordBatch::try_new(
                out,
                vec![Arc::new(UInt64Array::from(vec![n]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(run),
        )))
    }
}
