//! A Ballista cluster of `jammi` processes on loopback for the tests and benchmarks:
//! a scheduler and two executors (one vcore each, their own cache and work directories,
//! free ports), reaching the S3 server of the live lane with ambient credentials.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub fn endpoint() -> String {
    std::env::var("JAMMI_TEST_S3_ENDPOINT")
        .expect("JAMMI_TEST_S3_ENDPOINT: run `eval \"$(scripts/test-servers.sh env)\"`")
}

/// A port nothing listens on now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A child process killed when the test ends, its output in `log`.
pub struct Process {
    child: Child,
    log: PathBuf,
}

impl Process {
    /// `jammi <args>` with `env` on top of this process's environment.
    pub fn start(args: &[&str], cache: &Path, env: &[(&str, &str)], log: PathBuf) -> Process {
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_jammi"))
            .args(args)
            .envs(env.iter().copied())
            .env("JAMMI_CACHE_DIR", cache)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap();
        Process { child, log }
    }

    pub fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The body of `GET path` on the scheduler's REST API (`None` while it does not answer).
pub fn rest_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200").then(|| body.to_string())
}

/// The JSON list `GET path` on the scheduler's REST API returns (empty while it does not
/// answer).
pub fn rest_list(port: u16, path: &str) -> Vec<serde_json::Value> {
    let Some(body) = rest_get(port, path) else {
        return vec![];
    };
    // A chunked body: the JSON array is between the first '[' and the last ']'.
    let (Some(a), Some(b)) = (body.find('['), body.rfind(']')) else {
        return vec![];
    };
    serde_json::from_str(&body[a..=b]).unwrap_or_default()
}

/// The ids of the executors the scheduler knows.
pub fn executor_ids(port: u16) -> Vec<String> {
    rest_list(port, "/api/executors")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect()
}

/// A prefix in `bucket` no earlier run used (the server keeps earlier runs' objects).
pub fn fresh_prefix(bucket: &str, name: &str) -> String {
    let run = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("s3://{bucket}/{name}-{run}/")
}

/// Sets the ambient S3 settings every process reads. Called before any thread starts.
pub fn ambient_s3_environment() {
    // SAFETY: the test's only thread is running; the runtime starts after this.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", endpoint());
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
        std::env::set_var("AWS_REGION", "us-east-1");
    }
}

/// Scheduler, two executors: each process with its own cache and work directories.
pub struct Cluster {
    /// The scheduler's port (gRPC and REST).
    pub scheduler_port: u16,
    /// Where the scheduler logs each job's events.
    pub event_log: PathBuf,
    /// The cache directories of the scheduler and of each executor.
    pub caches: Vec<PathBuf>,
    scheduler: Process,
    /// The executors; dropping one kills it.
    pub executors: Vec<Process>,
}

impl Cluster {
    pub fn start(dir: &Path) -> Cluster {
        Self::start_with(dir, &[])
    }

    /// A cluster whose executors run with `executor_env` on top of this environment.
    pub fn start_with(dir: &Path, executor_env: &[(&str, &str)]) -> Cluster {
        let port = free_port();
        let event_log = dir.join("events");
        std::fs::create_dir_all(&event_log).unwrap();
        let cache = |name: &str| dir.join(name).join("cache");
        let work = |name: &str| dir.join(name).join("work").display().to_string();
        let port_s = port.to_string();
        let scheduler = Process::start(
            &[
                "scheduler",
                "--port",
                &port_s,
                "--work-dir",
                &work("scheduler"),
                "--event-log-dir",
                event_log.to_str().unwrap(),
                "--executor-timeout-seconds",
                "5",
                "--expire-dead-executor-interval-seconds",
                "1",
            ],
            &cache("scheduler"),
            &[],
            dir.join("scheduler.log"),
        );
        let mut executors = vec![];
        for name in ["executor-1", "executor-2"] {
            let (flight, grpc) = (free_port().to_string(), free_port().to_string());
            executors.push(Process::start(
                &[
                    "executor",
                    "--scheduler",
                    &format!("127.0.0.1:{port}"),
                    "--port",
                    &flight,
                    "--grpc-port",
                    &grpc,
                    "--vcores",
                    "1",
                    "--heartbeat-interval-seconds",
                    "1",
                    "--work-dir",
                    &work(name),
                ],
                &cache(name),
                executor_env,
                dir.join(format!("{name}.log")),
            ));
        }
        let cluster = Cluster {
            scheduler_port: port,
            event_log,
            caches: vec![cache("scheduler"), cache("executor-1"), cache("executor-2")],
            scheduler,
            executors,
        };
        cluster.wait_for_executors(2);
        cluster
    }

    pub fn wait_for_executors(&self, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while executor_ids(self.scheduler_port).len() != n {
            assert!(
                Instant::now() < deadline,
                "{n} executors did not register within 60 s\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn url(&self) -> String {
        format!("df://127.0.0.1:{}", self.scheduler_port)
    }

    pub fn logs(&self) -> String {
        let mut out = format!("--- scheduler\n{}", self.scheduler.output());
        for (i, e) in self.executors.iter().enumerate() {
            out.push_str(&format!("\n--- executor {}\n{}", i + 1, e.output()));
        }
        out
    }
}
