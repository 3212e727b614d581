//! The same SQL on an Apache Ballista cluster: a client session plans, a scheduler splits
//! the plan into stages, executors run them against the same storage.
//!
//! Every process of a cluster needs what a jammi session has: the storage registry (each
//! process reaches the buckets with its own ambient credentials; none travel), the
//! distance functions, the planner of `vector_search`, and codecs for jammi's plans.
//! [`ProcessEnv`] is that, for a scheduler or an executor (the `jammi scheduler` and
//! `jammi executor` commands start them); [`connect`] turns a client session's planning
//! over to a cluster.
//!
//! The codecs compose with Ballista's own: [`ClusterLogicalCodec`] tags each payload with
//! the codec that wrote it (Ballista's decoder would read any bytes as its own), and the
//! physical codec is datafusion-proto's `ComposedPhysicalExtensionCodec` of Ballista's and
//! [`JammiPhysicalCodec`].

mod cancel;
mod planner;

use std::path::Path;
use std::sync::Arc;

use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::{BallistaLogicalExtensionCodec, BallistaPhysicalExtensionCodec};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::{DataFusionError, TableReference};
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::{SessionState, TaskContext};
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use datafusion_proto::physical_plan::{ComposedPhysicalExtensionCodec, PhysicalExtensionCodec};
use prost::Message;

use crate::catalog::IndexedTable;
use crate::error::{JammiError, Result};
use crate::sql::codec::{JammiLogicalCodec, JammiPhysicalCodec};
use crate::sql::options::JammiSettings;
use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::node::VectorSearchNode;
use crate::storage::StorageRegistry;

/// A payload and the codec that wrote it.
#[derive(Clone, PartialEq, Message)]
struct Tagged {
    #[prost(uint32, tag = "1")]
    codec: u32,
    #[prost(bytes = "vec", tag = "2")]
    blob: Vec<u8>,
}

const BALLISTA: u32 = 1;
const JAMMI: u32 = 2;

fn tag(codec: u32, blob: Vec<u8>, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
    Tagged { codec, blob }
        .encode(buf)
        .map_err(|e| DataFusionError::Internal(format!("cluster codec: {e}")))
}

fn untag(buf: &[u8]) -> datafusion::common::Result<Tagged> {
    Tagged::decode(buf).map_err(|e| DataFusionError::Internal(format!("cluster codec: {e}")))
}

/// The logical codec of a cluster: jammi's nodes and tables by [`JammiLogicalCodec`],
/// everything else (and file formats) by Ballista's, each payload tagged with its codec.
#[derive(Debug, Default)]
pub struct ClusterLogicalCodec {
    ballista: BallistaLogicalExtensionCodec,
    jammi: JammiLogicalCodec,
}

impl ClusterLogicalCodec {
    fn by_tag(&self, codec: u32) -> datafusion::common::Result<&dyn LogicalExtensionCodec> {
        match codec {
            BALLISTA => Ok(&self.ballista),
            JAMMI => Ok(&self.jammi),
            other => Err(DataFusionError::Internal(format!(
                "cluster codec: a payload of unknown codec {other}"
            ))),
        }
    }
}

impl LogicalExtensionCodec for ClusterLogicalCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Extension> {
        let t = untag(buf)?;
        self.by_tag(t.codec)?.try_decode(&t.blob, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> datafusion::common::Result<()> {
        let mut blob = Vec::new();
        let codec = if node.node.as_any().is::<VectorSearchNode>() {
            self.jammi.try_encode(node, &mut blob)?;
            JAMMI
        } else {
            self.ballista.try_encode(node, &mut blob)?;
            BALLISTA
        };
        tag(codec, blob, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Arc<dyn TableProvider>> {
        let t = untag(buf)?;
        self.by_tag(t.codec)?
            .try_decode_table_provider(&t.blob, table_ref, schema, ctx)
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> datafusion::common::Result<()> {
        let mut blob = Vec::new();
        let any: &dyn std::any::Any = node.as_ref();
        let codec = if any.is::<IndexedTable>() {
            self.jammi
                .try_encode_table_provider(table_ref, node, &mut blob)?;
            JAMMI
        } else {
            self.ballista
                .try_encode_table_provider(table_ref, node, &mut blob)?;
            BALLISTA
        };
        tag(codec, blob, buf)
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> datafusion::common::Result<Arc<dyn FileFormatFactory>> {
        self.ballista.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> datafusion::common::Result<()> {
        self.ballista.try_encode_file_format(buf, node)
    }
}

/// The physical codec of a cluster: Ballista's plans by its codec, jammi's by
/// [`JammiPhysicalCodec`] (decoded searches use `search`'s stores and caches).
pub fn physical_codec(search: Arc<SearchContext>) -> Arc<dyn PhysicalExtensionCodec> {
    Arc::new(ComposedPhysicalExtensionCodec::new(vec![
        Arc::new(BallistaPhysicalExtensionCodec::default()),
        Arc::new(JammiPhysicalCodec::new(search)),
    ]))
}

/// The session settings every process of a cluster starts a job from: Ballista's, with
/// the `jammi.*` settings known (a client's values travel as options).
pub fn process_config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(JammiSettings::default())
}

/// What a scheduler or an executor process plans and runs with: a session with jammi-db
/// registered (no result store: plans name their tables' files), its runtime (the storage
/// registry, temp files under the work directory) and its search context (the index
/// cache, under `JAMMI_CACHE_DIR` or the default cache directory).
pub struct ProcessEnv {
    state: SessionState,
    runtime: Arc<RuntimeEnv>,
    search: Arc<SearchContext>,
}

impl ProcessEnv {
    /// The environment of a process whose temporary files go under `work_dir`.
    pub async fn new(work_dir: &Path) -> Result<Self> {
        let registry = StorageRegistry::new();
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(registry.clone()))
            .with_object_list_cache_ttl(Some(std::time::Duration::ZERO))
            .with_temp_file_path(work_dir)
            .build_arc()?;
        let state = SessionStateBuilder::new()
            .with_config(process_config())
            .with_runtime_env(runtime.clone())
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let search = crate::sql::register(&ctx, &registry, None).await?;
        Ok(ProcessEnv {
            state: ctx.state(),
            runtime,
            search,
        })
    }

    /// The state a scheduler plans a job in: this process's (its planner of searches,
    /// functions and runtime) with the job's `config`.
    pub fn job_state(&self, config: SessionConfig) -> datafusion::common::Result<SessionState> {
        let mut config = config;
        let extensions = &mut config.options_mut().extensions;
        if extensions.get::<JammiSettings>().is_none() {
            extensions.insert(JammiSettings::default());
        }
        Ok(SessionStateBuilder::new_from_existing(self.state.clone())
            .with_config(config)
            .with_runtime_env(self.runtime.clone())
            .build())
    }

    /// The runtime every task of this process runs in.
    pub fn runtime(&self) -> Arc<RuntimeEnv> {
        self.runtime.clone()
    }

    /// The functions an executor resolves plans' calls by: DataFusion's and jammi's.
    pub fn function_registry(&self) -> BallistaFunctionRegistry {
        BallistaFunctionRegistry::from(&self.state)
    }

    /// The logical codec (see [`ClusterLogicalCodec`]).
    pub fn logical_codec(&self) -> Arc<dyn LogicalExtensionCodec> {
        Arc::new(ClusterLogicalCodec::default())
    }

    /// The physical codec (see [`physical_codec`]), searching through this process's
    /// stores and caches.
    pub fn physical_codec(&self) -> Arc<dyn PhysicalExtensionCodec> {
        physical_codec(self.search.clone())
    }
}

/// The host and port of a scheduler address `df://host:port` (or `host:port`).
pub fn scheduler_address(url: &str) -> Result<(String, u16)> {
    let bad = |reason: &str| JammiError::Cluster {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let rest = url.strip_prefix("df://").unwrap_or(url);
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| bad("expected df://host:port"))?;
    if host.is_empty() || host.contains('/') {
        return Err(bad("expected df://host:port"));
    }
    let port = port
        .parse::<u16>()
        .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
    Ok((host.to_string(), port))
}

/// A scheduler address (see [`scheduler_address`]) as its gRPC endpoint `http://host:port`.
pub fn scheduler_endpoint(url: &str) -> Result<String> {
    let (host, port) = scheduler_address(url)?;
    Ok(format!("http://{host}:{port}"))
}

/// How long [`connect`] waits for the scheduler to answer.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Turns `ctx`'s planning over to the cluster whose scheduler is at `url`: queries are
/// planned here and sent to the scheduler, which runs them on its executors; DDL, `SET`
/// and `information_schema` stay local, and writes commit here (their queries run on the
/// cluster). The scheduler must answer within 10 s.
pub(crate) async fn connect(
    ctx: &SessionContext,
    search: &Arc<SearchContext>,
    url: &str,
) -> Result<()> {
    let endpoint = scheduler_endpoint(url)?;
    let unreachable = |reason: String| JammiError::Cluster {
        url: url.to_string(),
        reason,
    };
    let probe = ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::connect(
        endpoint.clone(),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, probe).await {
        Err(_) => {
            return Err(unreachable(format!(
                "the scheduler did not answer within {} s",
                CONNECT_TIMEOUT.as_secs()
            )));
        }
        Ok(Err(e)) => {
            let reason = std::error::Error::source(&e)
                .map_or_else(|| e.to_string(), |s| format!("{e}: {s}"));
            return Err(unreachable(format!(
                "the scheduler cannot be reached ({reason})"
            )));
        }
        Ok(Ok(_)) => {}
    }
    let state_ref = ctx.state_ref();
    let mut state = state_ref.write();
    let codec: Arc<dyn LogicalExtensionCodec> = Arc::new(ClusterLogicalCodec::default());
    // Ballista 55's adaptive planner never runs a lost executor's tasks again (the job
    // waits forever); its static planner does. `SET` turns it back on.
    let mut base = state.config().clone().upgrade_for_ballista();
    base.options_mut()
        .set("ballista.planner.adaptive.enabled", "false")?;
    let planner =
        planner::ClusterPlanner::new(endpoint.clone(), base.ballista_config(), codec.clone());
    let config = base
        .with_ballista_logical_extension_codec(codec)
        .with_ballista_physical_extension_codec(physical_codec(search.clone()))
        .with_ballista_query_planner(Arc::new(planner));
    let functions = (
        state.scalar_functions().clone(),
        state.aggregate_functions().clone(),
        state.window_functions().clone(),
    );
    let mut upgraded = SessionStateBuilder::new_from_existing(state.clone())
        .with_config(config)
        .build()
        .upgrade_for_ballista(endpoint)?;
    // The upgrade replaces the session's functions by Ballista's list: put back every
    // function the session had (jammi's distances, an application's own).
    use datafusion::execution::FunctionRegistry;
    for f in functions.0.into_values() {
        upgraded.register_udf(f)?;
    }
    for f in functions.1.into_values() {
        upgraded.register_udaf(f)?;
    }
    for f in functions.2.into_values() {
        upgraded.register_udwf(f)?;
    }
    *state = upgraded;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduler_addresses_become_grpc_endpoints_and_bad_ones_name_themselves() {
        assert_eq!(
            scheduler_endpoint("df://127.0.0.1:50050").unwrap(),
            "http://127.0.0.1:50050"
        );
        assert_eq!(scheduler_endpoint("sched:7").unwrap(), "http://sched:7");
        for bad in [
            "df://host",
            "df://:50",
            "df://h:port",
            "df://h:70000",
            "df://a/b:1",
        ] {
            let e = scheduler_endpoint(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
