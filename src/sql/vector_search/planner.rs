//! From the logical node to [`VectorSearchExec`]: the extension planner, and the query
//! planner that uses it for plans holding a search (every other plan goes to the planner
//! the session had, untouched).

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DFSchema, Result, plan_err};
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::simplify::SimplifyContext;
use datafusion::logical_expr::{LogicalPlan, UserDefinedLogicalNode};
use datafusion::optimizer::simplify_expressions::ExprSimplifier;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion::prelude::Expr;

use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::exec::{Prefilter, Queries, VectorSearchExec};
use crate::sql::vector_search::merge::{MergeColumns, SegmentMergeExec};
use crate::sql::vector_search::node::VectorSearchNode;
use crate::sql::vector_search::resolve::SearchSpec;

/// Plans [`VectorSearchNode`]s.
#[derive(Debug)]
pub struct VectorSearchExtensionPlanner {
    ctx: Arc<SearchContext>,
}

impl VectorSearchExtensionPlanner {
    pub(crate) fn new(ctx: Arc<SearchContext>) -> Self {
        VectorSearchExtensionPlanner { ctx }
    }
}

#[async_trait]
impl ExtensionPlanner for VectorSearchExtensionPlanner {
    async fn plan_extension(
        &self,
        planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        planning_ctx: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(n) = node.as_any().downcast_ref::<VectorSearchNode>() else {
            return Ok(None);
        };
        let queries = match (&n.query, &n.batch, physical_inputs) {
            // Planned unbound only by a prepared query, which binds it before each run.
            (Some(Expr::Placeholder(p)), _, _) => Queries::Param(p.id.clone()),
            (Some(q), _, _) => Queries::Single(planner.create_physical_expr(
                q,
                &DFSchema::empty(),
                session,
                planning_ctx,
            )?),
            (None, Some(b), [input]) => Queries::Batch {
                input: input.clone(),
                key: b.key,
                vector: b.vector,
            },
            _ => return plan_err!("VectorSearch: a search needs a query or a query relation"),
        };
        let prefilter = match &n.prefilter {
            Some(e) => Some(plan_prefilter(&n.spec, e, |e, s| {
                planner.create_physical_expr(e, s, session, planning_ctx)
            })?),
            None => None,
        };
        let batch = matches!(queries, Queries::Batch { .. });
        if n.spec.target.part_count() == 1 {
            return Ok(Some(Arc::new(VectorSearchExec::try_new(
                n.spec.clone(),
                queries,
                prefilter,
                n.projection.clone(),
                self.ctx.clone(),
            )?)));
        }
        // Segments: each partition's top k, merged to the global top k on the way out. The
        // partitions hydrate only the columns the statement reads, plus what the merge needs.
        // Each partition tags its rows with its segment's number (the hidden column after
        // the output's), so the merge breaks ties in segment order whatever order the
        // partitions arrive in.
        let width = n.spec.columns.len() + if batch { 3 } else { 1 };
        let distance = if batch { width - 2 } else { width - 1 };
        let part = width;
        let kept: Vec<usize> = match &n.projection {
            Some(p) => p.clone(),
            None => (0..width).collect(),
        };
        let mut read = kept.clone();
        read.extend([distance, part]);
        if batch {
            read.extend([0, width - 1]);
        }
        read.sort_unstable();
        read.dedup();
        let at = |i: usize| read.iter().position(|&r| r == i).unwrap_or(i);
        let columns = MergeColumns {
            distance: at(distance),
            descending: n.spec.distance.nearest_largest(n.spec.metric),
            query_key: batch.then(|| at(0)),
            rank: batch.then(|| at(width - 1)),
            part: Some(at(part)),
        };
        let projection = Some(kept.iter().map(|&i| at(i)).collect());
        let search = VectorSearchExec::try_new(
            n.spec.clone(),
            queries,
            prefilter,
            Some(read),
            self.ctx.clone(),
        )?;
        Ok(Some(Arc::new(SegmentMergeExec::try_new(
            Arc::new(search),
            n.spec.k,
            columns,
            projection,
        )?)))
    }
}

/// The physical pre-filter of `expr` (over the table's unqualified columns): evaluated over
/// the columns it reads only.
pub(crate) fn plan_prefilter(
    spec: &SearchSpec,
    expr: &Expr,
    physical: impl FnOnce(&Expr, &DFSchema) -> Result<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
) -> Result<Prefilter> {
    let ts = &spec.target.schema;
    let mut columns = Vec::new();
    for c in expr.column_refs() {
        match ts.index_of(&c.name) {
            Ok(i) => columns.push(i),
            Err(_) => return plan_err!("vector_search: unknown column '{}' in filter", c.name),
        }
    }
    columns.sort_unstable();
    columns.dedup();
    let projected = DFSchema::try_from(ts.project(&columns)?)?;
    // Typed as a WHERE over the table would be (e.g. a string literal against a view column).
    let simplify = SimplifyContext::builder()
        .with_schema(Arc::new(projected.clone()))
        .build();
    let coerced = ExprSimplifier::new(simplify).coerce(expr.clone(), &projected)?;
    Ok(Prefilter {
        expr: physical(&coerced, &projected)?,
        columns,
        text: expr.to_string(),
    })
}

/// The session's query planner with [`VectorSearchExtensionPlanner`] for plans that hold a
/// search; other plans go to `inner` (the planner the session had).
pub struct JammiQueryPlanner {
    inner: Arc<dyn QueryPlanner + Send + Sync>,
    planner: DefaultPhysicalPlanner,
}

impl std::fmt::Debug for JammiQueryPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JammiQueryPlanner")
            .field("inner", &self.inner)
            .finish()
    }
}

impl JammiQueryPlanner {
    pub(crate) fn new(inner: Arc<dyn QueryPlanner + Send + Sync>, ctx: Arc<SearchContext>) -> Self {
        JammiQueryPlanner {
            inner,
            planner: DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(
                VectorSearchExtensionPlanner::new(ctx),
            )]),
        }
    }
}

/// `true` when `plan` (or a subquery of it) holds a search.
fn holds_search(plan: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = plan.apply_with_subqueries(|p| {
        if let LogicalPlan::Extension(e) = p
            && e.node.as_any().is::<VectorSearchNode>()
        {
            found = true;
            return Ok(TreeNodeRecursion::Stop);
        }
        Ok(TreeNodeRecursion::Continue)
    });
    found
}

/// `INSERT`, `DELETE`, `UPDATE` or `MERGE` into a source (`<source>.public.<table>`), anywhere
/// in `plan` (`EXPLAIN ANALYZE` runs the write it holds): refused, since a source's files are
/// the user's; only result tables change.
pub(crate) fn refuse_source_changes(plan: &LogicalPlan, session: &dyn Session) -> Result<()> {
    let mut refused = Ok(());
    plan.apply_with_subqueries(|p| {
        if let LogicalPlan::Dml(d) = p {
            refused = refuse_source_change(d, session);
            if refused.is_err() {
                return Ok(TreeNodeRecursion::Stop);
            }
        }
        Ok(TreeNodeRecursion::Continue)
    })?;
    refused
}

fn refuse_source_change(
    d: &datafusion::logical_expr::DmlStatement,
    session: &dyn Session,
) -> Result<()> {
    if matches!(d.op, datafusion::logical_expr::WriteOp::Ctas) {
        return Ok(());
    }
    let Some(catalog) = d.table_name.catalog() else {
        return Ok(());
    };
    let Some(state) = session
        .as_any()
        .downcast_ref::<datafusion::execution::SessionState>()
    else {
        return Ok(());
    };
    let Some(c) = state.catalog_list().catalog(catalog) else {
        return Ok(());
    };
    let any: &dyn std::any::Any = c.as_ref();
    if any
        .downcast_ref::<crate::catalog::provider::SourceCatalogProvider>()
        .is_some()
    {
        return plan_err!(
            "{} is a source: its files are read, never changed; only result tables \
             (jammi.public.<name>) can change",
            d.table_name
        );
    }
    Ok(())
}

#[async_trait]
impl QueryPlanner for JammiQueryPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        refuse_source_changes(plan, session)?;
        if holds_search(plan) {
            self.planner.create_physical_plan(plan, session).await
        } else {
            self.inner.create_physical_plan(plan, session).await
        }
    }
}
