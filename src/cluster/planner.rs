//! The query planner of a client session on a cluster: queries go to the scheduler
//! whole; a write runs its query there and commits here, so the session stays the one
//! committer of its tables (the ownership rules and the manifest's writer are the same as
//! on one machine).

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::DataType;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{DFSchemaRef, Result, ScalarValue, exec_err};
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, Subquery, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::protobuf::LogicalPlanNode;

use super::cancel::CancelOnDrop;
use crate::sql::vector_search::node::VectorSearchNode;

/// Plans queries as jobs of the cluster at `endpoint`, and writes as a local commit of
/// rows a job yields.
pub(crate) struct ClusterPlanner {
    endpoint: String,
    config: BallistaConfig,
    codec: Arc<dyn LogicalExtensionCodec>,
    remote: BallistaQueryPlanner<LogicalPlanNode>,
}

impl std::fmt::Debug for ClusterPlanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPlanner")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl ClusterPlanner {
    pub(crate) fn new(
        endpoint: String,
        config: BallistaConfig,
        codec: Arc<dyn LogicalExtensionCodec>,
    ) -> Self {
        let remote =
            BallistaQueryPlanner::with_extension(endpoint.clone(), config.clone(), codec.clone());
        ClusterPlanner {
            endpoint,
            config,
            codec,
            remote,
        }
    }
}

#[async_trait]
impl QueryPlanner for ClusterPlanner {
    async fn create_physical_plan(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        crate::sql::vector_search::planner::refuse_source_changes(plan, session)?;
        let evaluated = self.evaluate_query_subqueries(plan, session).await?;
        let plan = &evaluated;
        let LogicalPlan::Dml(dml) = plan else {
            refuse_nested_writes(plan)?;
            let job = self.remote.create_physical_plan(plan, session).await?;
            return Ok(CancelOnDrop::wrap(job, &self.endpoint));
        };
        // INSERT's and MERGE's rows come from a job; DELETE and UPDATE find their rows
        // through the table itself, here.
        let rows_from_cluster = matches!(dml.op, WriteOp::Insert(_) | WriteOp::MergeInto(_));
        let plan = if rows_from_cluster {
            let input = LogicalPlan::Extension(Extension {
                node: Arc::new(ClusterInput {
                    input: dml.input.as_ref().clone(),
                }),
            });
            plan.clone()
                .map_children(|_| Ok(Transformed::yes(input.clone())))?
                .data
        } else {
            plan.clone()
        };
        let local =
            DefaultPhysicalPlanner::with_extension_planners(vec![Arc::new(ClusterInputPlanner {
                endpoint: self.endpoint.clone(),
                config: self.config.clone(),
                codec: self.codec.clone(),
            })]);
        let state = session
            .as_any()
            .downcast_ref::<SessionState>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Internal(
                    "cluster planner: not a SessionState".into(),
                )
            })?;
        local.create_physical_plan(&plan, state).await
    }
}

impl ClusterPlanner {
    /// `plan` with the value of each search's query vector given by a scalar subquery
    /// (`vector_search(t, (SELECT v FROM ...), k)`), computed first by a job of its own:
    /// Ballista plans no scalar subquery in an expression of an extension node.
    async fn evaluate_query_subqueries(
        &self,
        plan: &LogicalPlan,
        session: &dyn Session,
    ) -> Result<LogicalPlan> {
        let mut subqueries: Vec<Subquery> = Vec::new();
        plan.apply_with_subqueries(|p| {
            if let Some(Expr::ScalarSubquery(q)) = search_query(p)
                && q.outer_ref_columns.is_empty()
                && !subqueries.contains(q)
            {
                subqueries.push(q.clone());
            }
            Ok(TreeNodeRecursion::Continue)
        })?;
        if subqueries.is_empty() {
            return Ok(plan.clone());
        }
        let mut values = Vec::with_capacity(subqueries.len());
        for q in &subqueries {
            let exec = self
                .remote
                .create_physical_plan(&q.subquery, session)
                .await?;
            let batches = datafusion::physical_plan::collect(exec, session.task_ctx()).await?;
            let t = q.subquery.schema().field(0).data_type().clone();
            values.push(scalar_value(&batches, &t)?);
        }
        let replaced = plan.clone().transform_down_with_subqueries(|p| {
            let LogicalPlan::Extension(e) = &p else {
                return Ok(Transformed::no(p));
            };
            let Some(n) = e.node.as_any().downcast_ref::<VectorSearchNode>() else {
                return Ok(Transformed::no(p));
            };
            let Some(Expr::ScalarSubquery(q)) = &n.query else {
                return Ok(Transformed::no(p));
            };
            let Some(i) = subqueries.iter().position(|s| s == q) else {
                return Ok(Transformed::no(p));
            };
            let mut node = n.clone();
            node.query = Some(Expr::Literal(values[i].clone(), None));
            Ok(Transformed::yes(LogicalPlan::Extension(Extension {
                node: Arc::new(node),
            })))
        })?;
        Ok(replaced.data)
    }
}

/// A write below the top of a plan (`EXPLAIN ANALYZE INSERT ...`) would run whole on the
/// cluster, where no process may commit: refused.
fn refuse_nested_writes(plan: &LogicalPlan) -> Result<()> {
    let mut nested = false;
    plan.apply_with_subqueries(|p| {
        nested |= matches!(p, LogicalPlan::Dml(d) if !matches!(d.op, WriteOp::Ctas));
        Ok(if nested {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    })?;
    if nested {
        return datafusion::common::plan_err!(
            "a write inside another statement (EXPLAIN [ANALYZE] of a write) does not run on a \
             cluster: the client commits every write; run the write itself"
        );
    }
    Ok(())
}

/// The query vector expression of a search node.
fn search_query(plan: &LogicalPlan) -> Option<&Expr> {
    let LogicalPlan::Extension(e) = plan else {
        return None;
    };
    e.node
        .as_any()
        .downcast_ref::<VectorSearchNode>()?
        .query
        .as_ref()
}

/// The value of a scalar subquery of type `t` from its rows: NULL for none, an error for
/// several.
fn scalar_value(batches: &[RecordBatch], t: &DataType) -> Result<ScalarValue> {
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    match rows {
        0 => ScalarValue::try_from(t),
        1 => {
            let b = batches.iter().find(|b| b.num_rows() == 1).expect("one row");
            ScalarValue::try_from_array(b.column(0), 0)
        }
        n => exec_err!("vector_search: the query vector's subquery returned {n} rows, not one"),
    }
}

/// The rows of `input`, computed by a job of the cluster (a leaf here: nothing of the
/// query is planned on the client).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd)]
struct ClusterInput {
    input: LogicalPlan,
}

impl UserDefinedLogicalNodeCore for ClusterInput {
    fn name(&self) -> &str {
        "ClusterInput"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        vec![]
    }

    fn schema(&self) -> &DFSchemaRef {
        self.input.schema()
    }

    fn expressions(&self) -> Vec<Expr> {
        vec![]
    }

    fn fmt_for_explain(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "ClusterInput: {}", self.input.display())
    }

    fn with_exprs_and_inputs(&self, _exprs: Vec<Expr>, _inputs: Vec<LogicalPlan>) -> Result<Self> {
        Ok(self.clone())
    }
}

/// Plans a [`ClusterInput`] as the job that computes it.
struct ClusterInputPlanner {
    endpoint: String,
    config: BallistaConfig,
    codec: Arc<dyn LogicalExtensionCodec>,
}

#[async_trait]
impl ExtensionPlanner for ClusterInputPlanner {
    async fn plan_extension(
        &self,
        _planner: &dyn PhysicalPlanner,
        node: &dyn UserDefinedLogicalNode,
        _logical_inputs: &[&LogicalPlan],
        _physical_inputs: &[Arc<dyn ExecutionPlan>],
        session: &dyn Session,
        _planning: &PhysicalPlanningContext,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        let Some(c) = node.as_any().downcast_ref::<ClusterInput>() else {
            return Ok(None);
        };
        let job = Arc::new(DistributedQueryExec::<LogicalPlanNode>::with_extension(
            self.endpoint.clone(),
            self.config.clone(),
            c.input.clone(),
            self.codec.clone(),
            session.session_id().to_string(),
        ));
        Ok(Some(CancelOnDrop::wrap(job, &self.endpoint)))
    }
}
