//! Queries planned once and run many times with new parameter values.
//!
//! DataFusion binds a parameter into the logical plan, then optimises and plans the whole
//! query again on every run (`EXECUTE`, `DataFrame::with_param_values`): about 0.3 ms, as
//! long as a warm index search. A [`PreparedQuery`] whose only parameters are
//! `vector_search` query vectors keeps its physical plan, and a run only puts the vectors
//! into its searches. A query with any other parameter (in a `WHERE`, a projection, a
//! distance call...) keeps the logical plan and binds it per run as DataFusion does. Either
//! way a run answers what `sql_with_params` with the same values would.
//!
//! A prepared query sees the tables and session settings as they were when it was
//! prepared; the searches still check each file's version when they run.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{ParamValues, Result as DfResult};
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::LogicalPlan;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream, execute_stream};
use datafusion::prelude::Expr;
use futures::TryStreamExt;

use crate::error::{JammiError, Result};
use crate::sql::vector_search::VectorSearchExec;
use crate::sql::vector_search::node::VectorSearchNode;

/// A query planned once; [`PreparedQuery::execute`] runs it with parameter values.
#[derive(Debug)]
pub struct PreparedQuery {
    kind: Kind,
    schema: SchemaRef,
}

#[derive(Debug)]
enum Kind {
    /// The physical plan, its searches' vectors unbound.
    Physical {
        plan: Arc<dyn ExecutionPlan>,
        task: Arc<TaskContext>,
    },
    /// The logical plan, bound, optimised and planned per run.
    Logical {
        plan: LogicalPlan,
        state: Box<SessionState>,
    },
}

impl PreparedQuery {
    /// Prepares `plan` (a query, its placeholders unbound) in `state`. `per_run`: plan
    /// every run (a cluster's plan is sent to its scheduler whole, so the searches of a
    /// kept physical plan cannot be bound).
    pub(crate) async fn new(state: SessionState, plan: LogicalPlan, per_run: bool) -> Result<Self> {
        if !is_query(&plan) {
            return Err(JammiError::NotAQuery {
                statement: plan.display().to_string(),
            });
        }
        // Judged on the optimised plan: the optimizer may move a parameter into a search
        // (`ORDER BY <distance>($1) LIMIT k`). That plan is the one planned physically.
        let optimized = match state.optimize(&plan) {
            Ok(optimized) if !per_run && only_search_params(&optimized) => optimized,
            Err(e) if !per_run && only_search_params(&plan) => return Err(e.into()),
            _ => {
                let schema = Arc::new(plan.schema().as_arrow().clone());
                let state = Box::new(state);
                return Ok(PreparedQuery {
                    kind: Kind::Logical { plan, state },
                    schema,
                });
            }
        };
        // A plan run many times must not carry one run's state: no dynamic filters (a
        // TopK's or a join's filter lives in the scan it was pushed into; a physical
        // optimizer setting, which the logical optimisation above does not read).
        let mut state = state;
        state.config_mut().options_mut().set(
            "datafusion.optimizer.enable_dynamic_filter_pushdown",
            "false",
        )?;
        let plan = state
            .query_planner()
            .create_physical_plan(&optimized, &state)
            .await?;
        let task = Arc::new(TaskContext::from(&state));
        Ok(PreparedQuery {
            schema: plan.schema(),
            kind: Kind::Physical { plan, task },
        })
    }

    /// The schema of the query's rows. For a query planned per run, a column that is a
    /// parameter has the value's type, known only from the stream of a run.
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    /// `true` when runs reuse the physical plan (the query's only parameters are search
    /// vectors); `false` when each run plans the query again.
    pub fn plans_once(&self) -> bool {
        matches!(self.kind, Kind::Physical { .. })
    }

    /// The physical plan each run binds (`None` when each run plans the query again).
    pub fn plan(&self) -> Option<Arc<dyn ExecutionPlan>> {
        match &self.kind {
            Kind::Physical { plan, .. } => Some(plan.clone()),
            Kind::Logical { .. } => None,
        }
    }

    /// The plan of one run with `params`, ready to execute (for its metrics afterwards).
    pub async fn bind(
        &self,
        params: impl Into<ParamValues>,
    ) -> Result<(Arc<dyn ExecutionPlan>, Arc<TaskContext>)> {
        let params = params.into();
        match &self.kind {
            Kind::Physical { plan, task } => Ok((bind_plan(plan, &params)?, task.clone())),
            Kind::Logical { plan, state } => {
                let bound = plan.clone().with_param_values(params)?;
                let plan = state.create_physical_plan(&bound).await?;
                Ok((plan, Arc::new(TaskContext::from(state.as_ref()))))
            }
        }
    }

    /// Runs the query with `params` (positional `$1`... or named `$name`), as a stream.
    pub async fn execute(
        &self,
        params: impl Into<ParamValues>,
    ) -> Result<SendableRecordBatchStream> {
        let (plan, task) = self.bind(params).await?;
        Ok(execute_stream(plan, task)?)
    }

    /// Runs the query with `params` and collects its rows.
    pub async fn collect(&self, params: impl Into<ParamValues>) -> Result<Vec<RecordBatch>> {
        Ok(self.execute(params).await?.try_collect().await?)
    }
}

/// A fresh copy of `plan` (new metrics and run state in every node) with the searches'
/// parameters bound to `params`.
fn bind_plan(
    plan: &Arc<dyn ExecutionPlan>,
    params: &ParamValues,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    plan.clone()
        .transform_up(|p| {
            let fresh = match p.downcast_ref::<VectorSearchExec>() {
                Some(search) => search.bind(params)?,
                None => p.reset_state()?,
            };
            Ok(Transformed::yes(fresh))
        })
        .map(|t| t.data)
}

/// `false` for DDL, DML, `COPY` and other statements: they run once.
pub fn is_query(plan: &LogicalPlan) -> bool {
    !matches!(
        plan,
        LogicalPlan::Ddl(_)
            | LogicalPlan::Dml(_)
            | LogicalPlan::Copy(_)
            | LogicalPlan::Statement(_)
            | LogicalPlan::DescribeTable(_)
    )
}

/// `true` when every placeholder of `plan` is the whole query vector of a search.
fn only_search_params(plan: &LogicalPlan) -> bool {
    let mut only = true;
    let _ = plan.apply_with_subqueries(|p| {
        let clean = match p {
            LogicalPlan::Extension(e) => match e.node.as_any().downcast_ref::<VectorSearchNode>() {
                Some(n) => {
                    let query_ok = n
                        .query
                        .as_ref()
                        .is_none_or(|q| matches!(q, Expr::Placeholder(_)) || !has_placeholder(q));
                    query_ok && n.prefilter.as_ref().is_none_or(|f| !has_placeholder(f))
                }
                None => !exprs_have_placeholder(p),
            },
            _ => !exprs_have_placeholder(p),
        };
        only &= clean;
        Ok(if clean {
            TreeNodeRecursion::Continue
        } else {
            TreeNodeRecursion::Stop
        })
    });
    only
}

fn exprs_have_placeholder(p: &LogicalPlan) -> bool {
    let mut found = false;
    let _ = p.apply_expressions(|e| {
        found = has_placeholder(e);
        Ok(if found {
            TreeNodeRecursion::Stop
        } else {
            TreeNodeRecursion::Continue
        })
    });
    found
}

fn has_placeholder(e: &Expr) -> bool {
    e.exists(|e| Ok(matches!(e, Expr::Placeholder(_))))
        .unwrap_or(true)
}
