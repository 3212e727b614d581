//! `jammi scheduler` and `jammi executor`: the processes of an Apache Ballista cluster
//! with jammi-db in them. Ballista's stock binaries cannot load extension codecs; these
//! are its documented way to extend them (`SchedulerConfig`'s and
//! `ExecutorProcessConfig`'s override fields). Each process reaches the storage with its
//! own ambient credentials (environment, profiles, instance identity), as a session does.

use std::path::PathBuf;
use std::sync::Arc;

use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};
use ballista_scheduler::cluster::BallistaCluster;
use ballista_scheduler::config::{SchedulerConfig, TaskDistributionPolicy};
use jammi_db::cluster::{ProcessEnv, process_config};

use crate::Error;

/// Flags of `jammi scheduler`.
#[derive(clap::Args)]
pub(crate) struct SchedulerArgs {
    /// Address to listen on (gRPC and the REST API share the port).
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 50050)]
    port: u16,
    /// Host executors and clients reach this scheduler by (default: --bind-host).
    #[arg(long)]
    external_host: Option<String>,
    /// Directory for temporary files (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Write each job's events (JSON lines: its tasks and the executor each ran on) here.
    #[arg(long)]
    event_log_dir: Option<String>,
    /// An executor silent for this long is lost (its tasks run again elsewhere).
    #[arg(long, default_value_t = 180)]
    executor_timeout_seconds: u64,
    /// How often lost executors are looked for.
    #[arg(long, default_value_t = 15)]
    expire_dead_executor_interval_seconds: u64,
}

/// Flags of `jammi executor`.
#[derive(clap::Args)]
pub(crate) struct ExecutorArgs {
    /// The scheduler: host:port (or df://host:port).
    #[arg(long, default_value = "127.0.0.1:50050")]
    scheduler: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_host: String,
    /// Host the scheduler and other executors reach this one by (default: --bind-host).
    #[arg(long)]
    external_host: Option<String>,
    /// Port of the Flight service other executors and clients fetch results from.
    #[arg(long, default_value_t = 50051)]
    port: u16,
    /// Port of the gRPC service the scheduler sends tasks to.
    #[arg(long, default_value_t = 50052)]
    grpc_port: u16,
    /// Directory for shuffle and temporary files (default: a new temporary directory).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Tasks run at once (default: the machine's cores).
    #[arg(long)]
    vcores: Option<usize>,
    /// Seconds between heartbeats to the scheduler.
    #[arg(long, default_value_t = 60)]
    heartbeat_interval_seconds: u64,
}

/// `dir`, or a new temporary directory kept for the life of the process.
fn work_dir(dir: Option<PathBuf>) -> Result<(PathBuf, Option<tempfile::TempDir>), Error> {
    match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)
                .map_err(|e| format!("cannot create the work directory {}: {e}", d.display()))?;
            Ok((d, None))
        }
        None => {
            let t = tempfile::tempdir()?;
            Ok((t.path().to_path_buf(), Some(t)))
        }
    }
}

/// Runs a scheduler until it is stopped.
pub(crate) async fn scheduler(args: SchedulerArgs) -> Result<(), Error> {
    let (dir, _keep) = work_dir(args.work_dir)?;
    let env = Arc::new(ProcessEnv::new(&dir).await?);
    let jobs = env.clone();
    let mut config = SchedulerConfig::default()
        .with_hostname(args.external_host.unwrap_or_else(|| args.bind_host.clone()))
        .with_port(args.port)
        .with_task_distribution(TaskDistributionPolicy::RoundRobin)
        .with_override_config_producer(Arc::new(process_config))
        .with_override_session_builder(Arc::new(move |c| jobs.job_state(c)))
        .with_event_log_dir(args.event_log_dir);
    config.bind_host = args.bind_host.clone();
    config.executor_timeout_seconds = args.executor_timeout_seconds;
    config.expire_dead_executor_interval_seconds = args.expire_dead_executor_interval_seconds;
    config.override_logical_codec = Some(env.logical_codec());
    config.override_physical_codec = Some(env.physical_codec());
    let address = format!("{}:{}", args.bind_host, args.port)
        .parse()
        .map_err(|e| format!("bad --bind-host/--port: {e}"))?;
    let cluster = BallistaCluster::new_from_config(&config).await?;
    eprintln!("jammi scheduler listening on {address}");
    ballista_scheduler::scheduler_process::start_server(cluster, address, Arc::new(config)).await?;
    Ok(())
}

/// Runs an executor until it is stopped (Ctrl-C, SIGTERM, or the scheduler).
pub(crate) async fn executor(args: ExecutorArgs) -> Result<(), Error> {
    let (dir, _keep) = work_dir(args.work_dir)?;
    let env = ProcessEnv::new(&dir).await?;
    let (host, port) = jammi_db::cluster::scheduler_address(&args.scheduler)?;
    let runtime = env.runtime();
    let config = ExecutorProcessConfig {
        bind_host: args.bind_host.clone(),
        external_host: Some(args.external_host.unwrap_or(args.bind_host)),
        port: args.port,
        grpc_port: args.grpc_port,
        scheduler_host: host,
        scheduler_port: port,
        work_dir: Some(dir.display().to_string()),
        vcores: args.vcores.unwrap_or(0),
        executor_heartbeat_interval_seconds: args.heartbeat_interval_seconds,
        override_runtime_producer: Some(Arc::new(move |_| Ok(runtime.clone()))),
        override_config_producer: Some(Arc::new(process_config)),
        override_function_registry: Some(Arc::new(env.function_registry())),
        override_logical_codec: Some(env.logical_codec()),
        override_physical_codec: Some(env.physical_codec()),
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await?;
    Ok(())
}
