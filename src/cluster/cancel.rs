//! `CancelOnDrop`: a job of the cluster stops when its client stops reading. Ballista's
//! client leaves a job running when its stream is dropped (a cancelled query, a `LIMIT`
//! met early, a dropped `DataFrame` stream); this node asks the scheduler to cancel it.
//!
//! The client learns a job's id only from the scheduler's status updates, which come as
//! tasks finish: a job whose first tasks still run has no id here yet. So each job is
//! also named uniquely, and a job without an id is found by its name in the scheduler's
//! job list (its REST API, on the same port).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ballista_core::execution_plans::DistributedQueryExec;
use ballista_core::extension::SessionConfigExt;
use ballista_core::serde::protobuf::CancelJobParams;
use ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient;
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::Result;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::execution::{RecordBatchStream, SendableRecordBatchStream, TaskContext};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties};
use datafusion_proto::protobuf::LogicalPlanNode;
use futures::Stream;

type Job = DistributedQueryExec<LogicalPlanNode>;

/// A job's plan ([`DistributedQueryExec`]) whose stream, dropped before its end, cancels
/// the job on the scheduler at `endpoint`.
#[derive(Debug)]
pub(crate) struct CancelOnDrop {
    job: Arc<dyn ExecutionPlan>,
    endpoint: String,
}

impl CancelOnDrop {
    /// `plan` itself unless it is a job of the cluster.
    pub(crate) fn wrap(plan: Arc<dyn ExecutionPlan>, endpoint: &str) -> Arc<dyn ExecutionPlan> {
        if plan.downcast_ref::<Job>().is_none() {
            return plan;
        }
        Arc::new(CancelOnDrop {
            job: plan,
            endpoint: endpoint.to_string(),
        })
    }
}

impl DisplayAs for CancelOnDrop {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(f, "CancelOnDrop: scheduler={}", self.endpoint)
    }
}

impl ExecutionPlan for CancelOnDrop {
    fn name(&self) -> &str {
        "CancelOnDrop"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.job.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.job]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        match <[_; 1]>::try_from(children) {
            Ok([job]) => Ok(CancelOnDrop::wrap(job, &self.endpoint)),
            Err(_) => datafusion::common::internal_err!("CancelOnDrop has one child"),
        }
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let name = job_name(context.session_config());
        let config = context
            .session_config()
            .clone()
            .with_ballista_job_name(&name);
        let c = context.as_ref();
        let context = Arc::new(TaskContext::new(
            c.task_id(),
            c.session_id(),
            config,
            c.scalar_functions().clone(),
            c.higher_order_functions().clone(),
            c.aggregate_functions().clone(),
            c.window_functions().clone(),
            c.runtime_env(),
        ));
        let input = self.job.execute(partition, context)?;
        Ok(Box::pin(Watched {
            input,
            job: self.job.clone(),
            endpoint: self.endpoint.clone(),
            name,
            done: false,
        }))
    }
}

/// A name no other job has: the session's job name (if any) and a random tag.
fn job_name(config: &datafusion::prelude::SessionConfig) -> String {
    let tag = format!("jammi-{:016x}", rand::random::<u64>());
    let given = config
        .options()
        .extensions
        .get::<ballista_core::config::BallistaConfig>()
        .and_then(|c| {
            c.settings()
                .get(ballista_core::config::BALLISTA_JOB_NAME)
                .cloned()
        })
        .unwrap_or_default();
    if given.is_empty() {
        tag
    } else {
        format!("{given} ({tag})")
    }
}

/// The job's stream; cancels the job when dropped before its end.
struct Watched {
    input: SendableRecordBatchStream,
    job: Arc<dyn ExecutionPlan>,
    endpoint: String,
    name: String,
    done: bool,
}

impl Stream for Watched {
    type Item = Result<RecordBatch>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.input.as_mut().poll_next(cx);
        // A failed job is over too: the scheduler ended it.
        if matches!(next, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.done = true;
        }
        next
    }
}

impl RecordBatchStream for Watched {
    fn schema(&self) -> SchemaRef {
        self.input.schema()
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let known = self.job.downcast_ref::<Job>().and_then(Job::job_id);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!(
                "a job of {} was left running: its stream was dropped outside a runtime",
                self.endpoint
            );
            return;
        };
        let (endpoint, name) = (self.endpoint.clone(), self.name.clone());
        runtime.spawn(async move {
            let job_id = match known {
                Some(id) => Some(id.to_string()),
                None => job_named(&endpoint, &name).await,
            };
            // Not found: the scheduler never accepted the job.
            let Some(job_id) = job_id else {
                return;
            };
            if let Err(e) = cancel(&endpoint, &job_id).await {
                tracing::warn!("could not cancel job {job_id} on {endpoint}: {e}");
            }
        });
    }
}

async fn cancel(endpoint: &str, job_id: &str) -> std::result::Result<(), String> {
    let mut client = SchedulerGrpcClient::connect(endpoint.to_string())
        .await
        .map_err(|e| e.to_string())?;
    let params = CancelJobParams {
        job_id: job_id.to_string(),
    };
    client.cancel_job(params).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// The id of the job named `name` in the scheduler's job list, looked for a few times
/// (a job just submitted may not be listed yet).
async fn job_named(endpoint: &str, name: &str) -> Option<String> {
    let address = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    for _ in 0..10 {
        if let Some(jobs) = rest_jobs(address).await {
            let found = jobs
                .iter()
                .find(|j| j["job_name"].as_str() == Some(name))
                .and_then(|j| j["job_id"].as_str());
            if let Some(id) = found {
                return Some(id.to_string());
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    None
}

/// `GET /api/jobs` of the scheduler at `address` (host:port), as JSON.
async fn rest_jobs(address: &str) -> Option<Vec<serde_json::Value>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = format!("GET /api/jobs HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    let mut response = Vec::new();
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(address).await?;
        s.write_all(request.as_bytes()).await?;
        s.read_to_end(&mut response).await
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), exchange)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    if !head.starts_with("HTTP/1.1 200") {
        return None;
    }
    // The body may be chunked: the JSON array lies between the first '[' and the last ']'.
    let (a, b) = (body.find('[')?, body.rfind(']')?);
    if a > b {
        return None;
    }
    serde_json::from_str(&body[a..=b]).ok()
}
