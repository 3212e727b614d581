//! The query planner of a client session on a cluster: queries go to the scheduler
//! whole; a write runs its query there and commits here, so the session stays the one
//! committer of its tables (the ownership rules and the manifest's writer are the same as
//! on one machine).

use std::sync::Arc;

use async_trait::async_trait;
use ballista_core::config::BallistaConfig;
use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::planner::BallistaQueryPlanner;
use datafusion::catalog::Session;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchemaRef, Result};
use datafusion::execution::SessionState;
use datafusion::execution::context::QueryPlanner;
use datafusion::logical_expr::dml::WriteOp;
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::logical_expr::{
    Expr, Extension, LogicalPlan, UserDefinedLogicalNode, UserDefinedLogicalNodeCore,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_planner::{DefaultPhysicalPlanner, ExtensionPlanner, PhysicalPlanner};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::protobuf::LogicalPlanNode;

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
        let LogicalPlan::Dml(dml) = plan else {
            return self.remote.create_physical_plan(plan, session).await;
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
        Ok(Some(Arc::new(
            DistributedQueryExec::<LogicalPlanNode>::with_extension(
                self.endpoint.clone(),
                self.config.clone(),
                c.input.clone(),
                self.codec.clone(),
                session.session_id().to_string(),
            ),
        )))
    }
}
