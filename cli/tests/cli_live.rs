//! The `jammi` binary against the real S3 API server of the live lane
//! (`scripts/test-servers.sh start`; buckets jammi-41..50 are this binary's).
#![cfg(feature = "live-s3-tests")]

use std::process::Command;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use jammi_db::storage::{CloudConfig, S3Config, StorageRegistry, StorageUrl};

fn endpoint() -> String {
    std::env::var("JAMMI_TEST_S3_ENDPOINT")
        .expect("JAMMI_TEST_S3_ENDPOINT: run `eval \"$(scripts/test-servers.sh env)\"`")
}

/// Puts `bytes` at `url` on the S3 server directly (not through the proxy).
async fn put_direct(url: &StorageUrl, bytes: Vec<u8>) {
    use object_store::ObjectStoreExt;
    let explicit = CloudConfig::S3(S3Config {
        endpoint: Some(endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: Some(true),
        ..Default::default()
    });
    let store = StorageRegistry::new()
        .store(url, Some(&explicit))
        .await
        .unwrap();
    store
        .put(&url.object_path().unwrap(), bytes.into())
        .await
        .unwrap();
}

fn ids_parquet(n: i64) -> Vec<u8> {
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(Int64Array::from_iter_values(0..n))],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_profile_credentials_from_a_temporary_home_reach_the_s3_server() {
    // A real ~/.aws/credentials + config in a temporary HOME, used by the CLI with no
    // credentials in its arguments or environment.
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[jammi-test]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile jammi-test]\nregion = us-east-1\n",
    )
    .unwrap();
    let bucket = "jammi-41";
    let url = StorageUrl::parse(&format!("s3://{bucket}/profile/papers.parquet")).unwrap();
    put_direct(&url, ids_parquet(42)).await;
    let root = home.path().join("db");
    let out = Command::new(env!("CARGO_BIN_EXE_jammi"))
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_PROFILE", "jammi-test")
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("PATH", std::env::var("PATH").unwrap())
        .args(["--root", root.to_str().unwrap(), "--output", "csv", "sql"])
        .arg(format!(
            "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{url}'; SELECT count(*) AS n FROM p"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout} stderr {stderr}");
    assert!(stdout.contains("n\n42"), "{stdout}");
}

/// The vector of row `i`: unit-free sines, distinct per row.
fn vector(i: i64, dims: usize) -> Vec<f32> {
    (0..dims)
        .map(|d| ((i as f32) * 0.37 + d as f32 * 1.3).sin())
        .collect()
}

fn vectors_parquet(n: i64, dims: usize) -> Vec<u8> {
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array, StringArray};
    let item = std::sync::Arc::new(Field::new("item", DataType::Float32, true));
    let schema = std::sync::Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, false),
        Field::new(
            "embedding",
            DataType::FixedSizeList(item.clone(), dims as i32),
            false,
        ),
    ]));
    let values: Vec<f32> = (0..n).flat_map(|i| vector(i, dims)).collect();
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            std::sync::Arc::new(Int64Array::from_iter_values(0..n)),
            std::sync::Arc::new(StringArray::from_iter_values(
                (0..n).map(|i| format!("row {i}")),
            )),
            std::sync::Arc::new(FixedSizeListArray::new(
                item,
                dims as i32,
                std::sync::Arc::new(Float32Array::from(values)),
                None,
            )),
        ],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

/// A request to the fault proxy's control API (plain HTTP/1.0).
fn proxy_control(proxy: &str, method: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = proxy.trim_start_matches("http://");
    let mut conn = std::net::TcpStream::connect(addr).unwrap();
    write!(
        conn,
        "{method} {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn scans_writes_and_cold_searches_succeed_through_a_proxy_failing_one_request_in_ten() {
    let proxy = std::env::var("JAMMI_TEST_S3_PROXY")
        .expect("JAMMI_TEST_S3_PROXY: run `eval \"$(scripts/test-servers.sh env)\"`");
    let bucket = "jammi-42";
    // The data goes in directly; everything after goes through the proxy.
    let url = StorageUrl::parse(&format!("s3://{bucket}/proxy/papers.parquet")).unwrap();
    let rows = 20_000;
    put_direct(&url, vectors_parquet(rows, 64)).await;
    proxy_control(&proxy, "POST", "/__proxy/reset");

    let home = tempfile::tempdir().unwrap();
    // A root of its own per run: the servers outlive a test run.
    let root = format!("s3://{bucket}/proxy/db-{}", rand_suffix());
    let jammi = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jammi"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap())
            .env("HOME", home.path())
            // A fresh local cache per process: every search below is cold.
            .env(
                "JAMMI_CACHE_DIR",
                home.path().join(format!("cache-{}", rand_suffix())),
            )
            .env("AWS_ENDPOINT_URL", &proxy)
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .args(["--root", &root, "-o", "csv"])
            .args(args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "jammi {args:?}: {stdout} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    jammi(&[
        "sources",
        "add",
        "papers",
        "--url",
        url.to_string().as_str(),
        "--format",
        "parquet",
    ]);
    for _ in 0..15 {
        let out = jammi(&[
            "sql",
            "SELECT count(*) AS n, sum(id) AS s FROM papers.public.papers",
        ]);
        assert_eq!(out, format!("n,s\n{rows},{}\n", rows * (rows - 1) / 2));
    }
    jammi(&[
        "sql",
        "CREATE TABLE jammi.public.emb AS SELECT id, title, embedding FROM papers.public.papers",
    ]);
    let q = vector(12_345, 64)
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",");
    for _ in 0..8 {
        let out = jammi(&[
            "sql",
            &format!("SELECT id, title FROM vector_search('emb', [{q}], 3)"),
        ]);
        assert!(out.contains("12345,row 12345"), "{out}");
    }
    let stats: serde_json::Value =
        serde_json::from_str(&proxy_control(&proxy, "GET", "/__proxy/stats")).unwrap();
    let requests = stats["requests"].as_u64().unwrap();
    let faults: u64 = stats["faults"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "slow_body")
        .map(|(_, v)| v.as_u64().unwrap())
        .sum();
    println!("fault proxy: {stats}");
    assert!(requests >= 200, "{stats}");
    assert!(
        faults * 20 >= requests,
        "about one request in ten failed: {stats}"
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// A container-credentials endpoint (what ECS serves) that answers 500 until `up` is set.
fn credentials_endpoint(up: std::sync::Arc<std::sync::atomic::AtomicBool>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let body = r#"{"AccessKeyId":"testing","SecretAccessKey":"testing","Token":"t","Expiration":"2099-01-01T00:00:00Z"}"#;
            let reply = if up.load(std::sync::atomic::Ordering::SeqCst) {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )
            } else {
                "HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_string()
            };
            let _ = conn.write_all(reply.as_bytes());
        }
    });
    format!("http://{addr}/creds")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_credential_probe_is_not_remembered_as_unsigned() {
    let url =
        StorageUrl::parse(&format!("s3://jammi-43/creds-{}/p.parquet", rand_suffix())).unwrap();
    put_direct(&url, ids_parquet(7)).await;
    let up = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let creds = credentials_endpoint(up.clone());
    let home = tempfile::tempdir().unwrap();
    // The REPL keeps one process (and its store cache) across statements: `script` gives it
    // a terminal.
    let command = format!(
        "stty cols 1000; {} --root {} -o csv",
        env!("CARGO_BIN_EXE_jammi"),
        home.path().join("db").display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("HOME", home.path())
        .env("AWS_CONTAINER_CREDENTIALS_FULL_URI", &creds)
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("JAMMI_STORAGE_MAX_RETRIES", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let shown = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reader = {
        let shown = shown.clone();
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                shown
                    .lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let wait_for = |from: usize, what: &str| -> usize {
        loop {
            let text = shown.lock().unwrap().clone();
            if let Some(i) = text.get(from..).and_then(|t| t.find(what)) {
                return from + i + what.len();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "waiting for {what:?}: {text}"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    };
    let send = |stdin: &mut std::process::ChildStdin, line: &str| {
        use std::io::Write;
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
    };
    let create = format!("CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{url}';");
    let mut at = wait_for(0, "jammi> ");
    // The credentials endpoint fails: the statement fails, and the store keeps the chain.
    send(&mut stdin, &create);
    at = wait_for(at, "error:");
    at = wait_for(at, "jammi> ");
    up.store(true, std::sync::atomic::Ordering::SeqCst);
    // The endpoint works now: the same process signs its requests with its credentials.
    send(&mut stdin, &create);
    at = wait_for(at, "jammi> ");
    send(&mut stdin, "SELECT count(*) AS n FROM p;");
    at = wait_for(at, "n\r\n7");
    wait_for(at, "jammi> ");
    send(&mut stdin, "\\q");
    let status = child.wait().unwrap();
    drop(stdin);
    reader.join().unwrap();
    assert!(status.success());
}
