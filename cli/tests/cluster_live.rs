//! The same SQL on an Apache Ballista cluster of `jammi` processes (a scheduler and two
//! executors, one vcore each, on free loopback ports) as on one session, with the data in
//! the S3 server of the live lane (`scripts/test-servers.sh start`; the bucket `cluster`
//! is this binary's). Every process reaches the bucket with the ambient credentials of
//! its environment, as a deployment's would. The tests set that environment and start
//! clusters of their own: run them one at a time (`-- --test-threads=1`, as `.ci/run` does).
#![cfg(all(feature = "ballista", feature = "live-s3-tests"))]

#[path = "support/cluster.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ScalarValue;
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::source::{SourceConnection, SourceType};
use jammi_db::storage::{CloudConfig, S3Config};
use support::{Cluster, ambient_s3_environment, executor_ids, free_port, fresh_prefix, rest_list};

const BUCKET: &str = "cluster";

/// Every record of the scheduler's event log, with its line. The last line of a log may
/// be one the scheduler is still writing: it is skipped until whole.
fn event_records(event_log: &Path) -> Vec<(String, serde_json::Value)> {
    let mut out = vec![];
    for f in std::fs::read_dir(event_log).unwrap() {
        let text = std::fs::read_to_string(f.unwrap().path()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_str(line) {
                Ok(v) => out.push((line.to_string(), v)),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => panic!("a bad event log line ({e}): {line}"),
            }
        }
    }
    out
}

/// The executors each task of every logged job ran on.
fn task_executors(event_log: &Path) -> Vec<String> {
    event_records(event_log)
        .into_iter()
        .filter(|(_, v)| v["ev"] == "TaskEnd")
        .map(|(_, v)| v["data"]["executor_id"].as_str().unwrap().to_string())
        .collect()
}

/// The physical plan of every logged job (for a failure's message).
fn job_plans(event_log: &Path) -> String {
    let mut out = String::new();
    for (line, v) in event_records(event_log) {
        if v["ev"] == "JobStart" {
            let plan = v["data"]["physical_plan"].as_str().unwrap_or("");
            out.push_str(&format!("{}\n{plan}\n", v["data"]["job_id"]));
        } else {
            out.push_str(&format!("{}\n", &line[..line.len().min(400)]));
        }
    }
    out
}

/// The files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

async fn rows(s: &JammiSession, sql: &str) -> Vec<RecordBatch> {
    s.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

fn text(batches: &[RecordBatch]) -> String {
    pretty_format_batches(batches).unwrap().to_string()
}

fn row_count(batches: &[RecordBatch]) -> usize {
    batches.iter().map(RecordBatch::num_rows).sum()
}

/// A query vector near corpus row `id`, as a SQL literal (every f32 printed exactly).
async fn query_vector(s: &JammiSession, id: i64) -> (String, Vec<f32>) {
    let b = rows(
        s,
        &format!("SELECT embedding FROM corpus.public.corpus WHERE id = {id}"),
    )
    .await;
    let v = b[0].column(0).as_fixed_size_list().value(0);
    let v: Vec<f32> = v
        .as_primitive::<Float32Type>()
        .values()
        .iter()
        .enumerate()
        .map(|(i, x)| x + if i % 3 == 0 { 0.01 } else { -0.004 })
        .collect();
    let literal = v.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>();
    (format!("[{}]", literal.join(", ")), v)
}

/// A query of a billion rows, its stream dropped while it runs: the job ends cancelled
/// and the executors are free for the next query.
async fn a_dropped_stream_cancels_its_job(client: &JammiSession, cluster: &Cluster) {
    use futures::StreamExt;
    let long = "SELECT count(*) FROM corpus.public.corpus a, corpus.public.corpus b, \
                corpus.public.corpus c WHERE a.id + b.id <> c.id";
    let mut stream = client
        .sql(long)
        .await
        .unwrap()
        .execute_stream()
        .await
        .unwrap();
    // Read until the job runs on the executors, then stop reading.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !job_statuses(cluster.scheduler_port).contains(&"\"Running\"".to_string()) {
        let next = tokio::time::timeout(Duration::from_millis(200), stream.next()).await;
        assert!(next.is_err(), "the query ended: {next:?}");
        assert!(
            Instant::now() < deadline,
            "the job did not start within 60 s"
        );
    }
    let next = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
    assert!(next.is_err(), "the query ended: {next:?}");
    drop(stream);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ended = job_ends(&cluster.event_log);
        let cancelled = ended.iter().filter(|s| s.contains("Cancelled")).count();
        assert!(cancelled <= 1, "{ended:?}");
        if cancelled == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no job was cancelled within 30 s: {ended:?}\n{:?}\n{}",
            job_statuses(cluster.scheduler_port),
            cluster.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = rows(client, "SELECT count(*) FROM corpus.public.corpus").await;
    assert_eq!(text(&after).matches("1001").count(), 1, "{}", text(&after));
}

/// The status of every job the scheduler knows.
fn job_statuses(port: u16) -> Vec<String> {
    rest_list(port, "/api/jobs")
        .iter()
        .map(|j| j["status"].to_string())
        .collect()
}

/// The status of every logged job that ended.
fn job_ends(event_log: &Path) -> Vec<String> {
    event_records(event_log)
        .into_iter()
        .filter(|(_, v)| v["ev"] == "JobEnd")
        .map(|(_, v)| v["data"]["status"].to_string())
        .collect()
}

fn secret_s3() -> CloudConfig {
    CloudConfig::S3(S3Config {
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        ..Default::default()
    })
}

/// Credentials given to a cluster's client would stay in it: every way of giving them is
/// refused, naming the cluster and the URL, and how to provide them instead.
async fn refuses_credentials_that_cannot_travel(
    client: &JammiSession,
    cluster: &str,
    root: &str,
    source: &str,
) {
    let file = format!("{source}corpus.parquet");
    let e = client
        .set_source_credentials("corpus", secret_s3())
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(cluster) && e.contains(&file), "{e}");
    assert!(e.contains("ambient credentials"), "{e}");
    let e = client
        .sql(&format!(
            "CREATE EXTERNAL TABLE keyed STORED AS PARQUET LOCATION '{file}' \
             OPTIONS ('aws.access_key_id' 'testing', 'aws.secret_access_key' 'testing')"
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(cluster) && e.contains(&file), "{e}");
    let options = OpenOptions {
        cloud: Some(secret_s3()),
        cluster: Some(cluster.to_string()),
        ..Default::default()
    };
    let e = JammiSession::open_with(root, options)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(cluster) && e.contains(root), "{e}");
    // The source still answers, with the executors' own credentials.
    assert_eq!(
        row_count(&rows(client, "SELECT id FROM corpus.public.corpus").await),
        1001
    );
}

/// Writes to `t` with every statement that changes a table (and a `CREATE TABLE AS` from
/// a search over it), then reads it whole and searches it.
async fn write_and_read(s: &JammiSession, t: &str, v: &str) -> Vec<String> {
    for sql in [
        format!(
            "INSERT INTO jammi.public.{t} SELECT id + 100000, section, package, embedding \
             FROM corpus.public.corpus WHERE id % 13 = 0"
        ),
        format!("UPDATE jammi.public.{t} SET section = 'moved' WHERE id % 17 = 0"),
        format!("DELETE FROM jammi.public.{t} WHERE id % 19 = 0"),
        format!(
            "MERGE INTO jammi.public.{t} AS t USING (SELECT id, 'merged' AS package, embedding \
             FROM corpus.public.corpus WHERE id % 23 = 0) AS s ON t.id = s.id \
             WHEN MATCHED THEN UPDATE SET package = s.package \
             WHEN NOT MATCHED THEN INSERT (id, section, package, embedding) \
             VALUES (s.id, 'new', s.package, s.embedding)"
        ),
        format!(
            "CREATE TABLE jammi.public.{t}_near AS SELECT id, package, _distance \
             FROM vector_search('{t}', {v}, 10)"
        ),
    ] {
        rows(s, &sql).await;
    }
    let mut out = vec![];
    for sql in [
        format!("SELECT id, section, package FROM jammi.public.{t} ORDER BY id"),
        format!("SELECT * FROM jammi.public.{t}_near ORDER BY _distance, id"),
        format!("SELECT id, _distance FROM vector_search('{t}', {v}, 10)"),
    ] {
        out.push(text(&rows(s, &sql).await));
    }
    out
}

/// Uploads the repository's MiniLM slice (1,001 rows) as the source file.
async fn upload_source(plain: &JammiSession, url: &str) {
    let sample = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/data/debian_sample.parquet")
        .canonicalize()
        .unwrap();
    let df = plain
        .context()
        .read_parquet(sample.to_str().unwrap(), Default::default())
        .await
        .unwrap();
    df.write_parquet(url, Default::default(), None)
        .await
        .unwrap();
}

#[test]
fn the_same_queries_give_the_same_answers_on_a_cluster_of_jammi_processes() {
    ambient_s3_environment();
    let dir = tempfile::tempdir().unwrap();
    // This process's cache: where a plain session keeps the indexes it loads.
    let client_cache = dir.path().join("client").join("cache");
    // SAFETY: still the only thread.
    unsafe { std::env::set_var("JAMMI_CACHE_DIR", &client_cache) };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(run(dir.path(), &client_cache));
}

async fn run(dir: &Path, client_cache: &Path) {
    let prefix = fresh_prefix(BUCKET, "cluster");
    let root = format!("{prefix}db/");
    let source = format!("{prefix}src/");
    let options = OpenOptions {
        auto_compact: Some(false),
        ..Default::default()
    };
    // The data, written by a plain session: a result table of two segments, rows of
    // both deleted, indexed.
    let plain = JammiSession::open_with(&root, options.clone())
        .await
        .unwrap();
    upload_source(&plain, &format!("{source}corpus.parquet")).await;
    let connection = SourceConnection {
        url: Some(format!("{source}corpus.parquet")),
        ..Default::default()
    };
    plain
        .add_source("corpus", SourceType::File, connection)
        .await
        .unwrap();
    // `emb` for the reads; `w_plain` and `w_cluster` the same, for the writes.
    for t in ["emb", "w_plain", "w_cluster"] {
        for sql in [
            format!(
                "CREATE TABLE jammi.public.{t} AS SELECT id, section, package, embedding \
                 FROM corpus.public.corpus WHERE id < 30000"
            ),
            format!(
                "INSERT INTO jammi.public.{t} SELECT id, section, package, embedding \
                 FROM corpus.public.corpus WHERE id >= 30000"
            ),
            format!("DELETE FROM jammi.public.{t} WHERE id % 11 = 0"),
        ] {
            rows(&plain, &sql).await;
        }
    }
    // An i8 index: its candidates re-ranked by their exact vectors, on the executors.
    rows(&plain, "SET jammi.quantization = 'i8'").await;
    rows(
        &plain,
        "CREATE TABLE jammi.public.q8 AS SELECT id, package, embedding FROM corpus.public.corpus",
    )
    .await;
    rows(&plain, "SET jammi.quantization = 'f32'").await;
    let v = plain.result_store().latest_version("emb").await.unwrap();
    assert_eq!(v.segments.len(), 2, "{v:?}");
    let (v, vector) = query_vector(&plain, 12_000).await;
    let queries = [
        "SELECT id, section FROM corpus.public.corpus WHERE id % 7 = 3 ORDER BY id".to_string(),
        "SELECT section, count(*) AS n, sum(id) AS s FROM corpus.public.corpus \
         GROUP BY section ORDER BY section"
            .to_string(),
        "SELECT c.id, c.package, e.section FROM corpus.public.corpus c \
         JOIN jammi.public.emb e ON c.id = e.id WHERE c.id % 5 = 0 ORDER BY c.id"
            .to_string(),
        format!("SELECT id, package, _distance FROM vector_search('emb', {v}, 10)"),
        format!(
            "SELECT id, _distance FROM vector_search('{source}corpus.parquet', {v}, 7, 'exact=true')"
        ),
        format!(
            "SELECT id, section, _distance FROM vector_search('emb', {v}, 10, 'filter=section = ''admin''')"
        ),
        format!("SELECT id, _distance FROM vector_search('emb', {v}, 10, 'exact=true')"),
        format!("SELECT id, package, _distance FROM vector_search('q8', {v}, 10)"),
        "SELECT id, _distance FROM vector_search('emb', \
         (SELECT embedding FROM jammi.public.emb WHERE id = 12000), 5)"
            .to_string(),
        format!(
            "SELECT id, cosine_distance(embedding, {v}) AS d FROM jammi.public.emb ORDER BY d LIMIT 10"
        ),
    ];
    let mut expected = vec![];
    for q in &queries {
        let b = rows(&plain, q).await;
        assert!(row_count(&b) > 0, "{q} found nothing");
        expected.push(text(&b));
    }
    let prepared_sql = "SELECT id, _distance FROM vector_search('emb', $1, 10)";
    let param = || {
        vec![ScalarValue::List(ScalarValue::new_list_nullable(
            &vector
                .iter()
                .map(|x| ScalarValue::Float32(Some(*x)))
                .collect::<Vec<_>>(),
            &datafusion::arrow::datatypes::DataType::Float32,
        ))]
    };
    let plain_prepared = plain.prepare(prepared_sql).await.unwrap();
    let expected_prepared = text(&plain_prepared.collect(param()).await.unwrap());
    let expected_writes = write_and_read(&plain, "w_plain", &v).await;
    drop(plain);
    // Nothing the cluster's answers depend on is in this process from here on.
    std::fs::remove_dir_all(client_cache).ok();

    let cluster = Cluster::start(dir);
    let client = JammiSession::open_with(
        &root,
        OpenOptions {
            cluster: Some(cluster.url()),
            ..options
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", cluster.logs()));
    rows(
        &client,
        "SET ballista.scheduler.max_partitions_per_task = 1",
    )
    .await;
    refuses_credentials_that_cannot_travel(&client, &cluster.url(), &root, &source).await;
    for (q, want) in queries.iter().zip(&expected) {
        let got = match client.sql(q).await {
            Ok(df) => df.collect().await,
            Err(e) => panic!("{q}: {e}\n{}", cluster.logs()),
        };
        let got = got.unwrap_or_else(|e| panic!("{q}: {e}\n{}", cluster.logs()));
        assert_eq!(&text(&got), want, "{q}\n{}", job_plans(&cluster.event_log));
    }
    let prepared = client.prepare(prepared_sql).await.unwrap();
    let got = prepared.collect(param()).await.unwrap();
    assert_eq!(text(&got), expected_prepared, "{prepared_sql}");

    // Writes: their queries run on the cluster, the commits here; the tables end equal.
    let got = write_and_read(&client, "w_cluster", &v).await;
    for (g, w) in got.iter().zip(&expected_writes) {
        assert_eq!(g, w, "{}", cluster.logs());
    }
    let plans = job_plans(&cluster.event_log);
    assert!(
        plans.contains("100000"),
        "the INSERT's query ran elsewhere:\n{plans}"
    );
    assert!(
        plans.contains("merged"),
        "the MERGE's source ran elsewhere:\n{plans}"
    );

    a_dropped_stream_cancels_its_job(&client, &cluster).await;

    // The CLI's --cluster: the same answer as the session's.
    let sql = "SELECT count(*) AS n, sum(id) AS s FROM jammi.public.emb";
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jammi"))
        .env("JAMMI_CACHE_DIR", client_cache)
        .args([
            "--cluster",
            &cluster.url(),
            "--root",
            &root,
            "--output",
            "csv",
        ])
        .args(["sql", sql])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{printed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let b = rows(&client, sql).await;
    let (n, sum) = (
        b[0].column(0)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
        b[0].column(1)
            .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
            .value(0),
    );
    assert_eq!(printed.trim(), format!("n,s\n{n},{sum}"), "{printed}");

    // The work ran on the executors: they hold the indexes; the client and the
    // scheduler loaded none, and tasks ran on both executors.
    let [scheduler_cache, e1, e2] = &cluster.caches[..] else {
        unreachable!()
    };
    assert!(
        files_under(client_cache).is_empty(),
        "{:?}",
        files_under(client_cache)
    );
    assert!(
        files_under(scheduler_cache).is_empty(),
        "{:?}",
        files_under(scheduler_cache)
    );
    // Each segment's search is a task of its own: each executor loaded one's index.
    let on_executors = [files_under(e1), files_under(e2)];
    assert!(
        on_executors.iter().all(|files| files
            .iter()
            .any(|f| f.to_string_lossy().ends_with(".jammi-cache"))),
        "{on_executors:?}"
    );
    let mut ran_on = task_executors(&cluster.event_log);
    ran_on.sort();
    ran_on.dedup();
    let mut registered = executor_ids(cluster.scheduler_port);
    registered.sort();
    assert_eq!(ran_on, registered, "tasks ran on {ran_on:?}");

    an_executor_lost_mid_query_has_its_tasks_run_again(&client, cluster).await;
}

/// A query of some seconds per task; one executor killed while its task runs: the job
/// still returns the right count (Ballista runs the lost tasks again on the other).
async fn an_executor_lost_mid_query_has_its_tasks_run_again(
    client: &JammiSession,
    mut cluster: Cluster,
) {
    let heavy = "SELECT count(*) AS n FROM corpus.public.corpus a, corpus.public.corpus b, \
                 (SELECT id FROM corpus.public.corpus WHERE id < 600) c \
                 WHERE cosine_distance(a.embedding, b.embedding) + c.id >= -1";
    let df = client.sql(heavy).await.unwrap();
    let run = tokio::spawn(async move { df.collect().await });
    let deadline = Instant::now() + Duration::from_secs(60);
    while !job_statuses(cluster.scheduler_port).contains(&"\"Running\"".to_string()) {
        assert!(
            Instant::now() < deadline,
            "the job did not start within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let lost = cluster.executors.pop().unwrap();
    drop(lost);
    let running = job_statuses(cluster.scheduler_port);
    assert!(
        running.contains(&"\"Running\"".to_string()),
        "the job ended before the executor was lost: {running:?}"
    );
    let Ok(got) = tokio::time::timeout(Duration::from_secs(90), run).await else {
        panic!(
            "no answer 90 s after losing an executor\n{}",
            cluster.logs()
        );
    };
    let got = got.unwrap();
    let got = got.unwrap_or_else(|e| panic!("after losing an executor: {e}\n{}", cluster.logs()));
    assert_eq!(
        text(&got).matches(" 10020010 ").count(),
        1,
        "{}",
        text(&got)
    );
}

#[tokio::test]
async fn a_scheduler_that_does_not_answer_fails_the_open_within_seconds_naming_it() {
    let root = tempfile::tempdir().unwrap();
    let url = format!("df://127.0.0.1:{}", free_port());
    let options = OpenOptions {
        cluster: Some(url.clone()),
        ..Default::default()
    };
    let started = Instant::now();
    let e = JammiSession::open_with(root.path().to_str().unwrap(), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains(&url), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    // A scheduler address that is not one is refused before any connection.
    let options = OpenOptions {
        cluster: Some("df://scheduler".into()),
        ..Default::default()
    };
    let e = JammiSession::open_with(root.path().to_str().unwrap(), options)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("df://scheduler") && e.contains("host:port"),
        "{e}"
    );
}

#[test]
fn executors_that_cannot_reach_the_bucket_fail_the_query_naming_the_url() {
    ambient_s3_environment();
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let prefix = fresh_prefix(BUCKET, "unreachable");
        let root = format!("{prefix}db/");
        let file = format!("{prefix}src/corpus.parquet");
        let plain = JammiSession::open(&root).await.unwrap();
        upload_source(&plain, &file).await;
        // Each executor's storage endpoint is a port nothing listens on.
        let dead = format!("http://127.0.0.1:{}", free_port());
        let cluster = Cluster::start_with(dir.path(), &[("AWS_ENDPOINT_URL", &dead)]);
        let options = OpenOptions {
            cluster: Some(cluster.url()),
            ..Default::default()
        };
        let client = JammiSession::open_with(&root, options).await.unwrap();
        client
            .sql(&format!(
                "CREATE EXTERNAL TABLE corpus STORED AS PARQUET LOCATION '{file}'"
            ))
            .await
            .unwrap();
        let started = Instant::now();
        let run = async {
            let df = client
                .sql("SELECT sum(id) FROM corpus WHERE id % 2 = 0")
                .await
                .map_err(|e| e.to_string())?;
            df.collect().await.map_err(|e| e.to_string())
        };
        let e = tokio::time::timeout(Duration::from_secs(120), run)
            .await
            .unwrap_or_else(|_| panic!("the query hung\n{}", cluster.logs()))
            .expect_err("the executors cannot read the file");
        let key = file.strip_prefix(&format!("s3://{BUCKET}/")).unwrap();
        assert!(e.contains(key), "{e}");
        eprintln!("failed in {:?}: {e}", started.elapsed());
    });
}
