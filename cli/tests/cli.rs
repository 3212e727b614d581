//! The `jammi` binary: every subcommand, output formats, error paths, and crash tests
//! (a writer killed with SIGKILL at random points; a slow writer beside a recovery pass).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jammi_db::session::JammiSession;

use std::path::PathBuf;
use std::sync::Arc;

use datafusion::arrow::array::{
    ArrayRef, FixedSizeListArray, Float32Array, Int64Array, StringArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::parquet::arrow::ArrowWriter;

fn jammi_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_jammi"))
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// `n` rows from `start`: id, title `paper <id>`, a `dims`-d embedding.
fn sample_batch(start: i64, n: usize, dims: i32) -> RecordBatch {
    let ids: Vec<i64> = (start..start + n as i64).collect();
    let titles: Vec<String> = ids.iter().map(|i| format!("paper {i}")).collect();
    let values: Vec<f32> = ids
        .iter()
        .flat_map(|i| (0..dims).map(move |d| ((*i as f32) * 0.37 + d as f32 * 1.3).sin()))
        .collect();
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let emb = FixedSizeListArray::new(
        item.clone(),
        dims,
        Arc::new(Float32Array::from(values)),
        None,
    );
    let schema = Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("title", DataType::Utf8, true),
        Field::new("embedding", DataType::FixedSizeList(item, dims), true),
    ]);
    let cols: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ids)),
        Arc::new(StringArray::from(titles)),
        Arc::new(emb),
    ];
    RecordBatch::try_new(Arc::new(schema), cols).unwrap()
}

fn parquet_bytes(batches: &[RecordBatch]) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, batches[0].schema(), None).unwrap();
    for b in batches {
        w.write(b).unwrap();
    }
    w.close().unwrap();
    buf
}

fn jammi(root: &std::path::Path, args: &[&str]) -> Output {
    Command::new(jammi_bin())
        .arg("--root")
        .arg(root)
        .args(args)
        .env_remove("JAMMI_ROOT")
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn fails(o: &Output) -> String {
    assert!(
        !o.status.success(),
        "expected failure: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(err.starts_with("error: "), "one readable line: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err}"
    );
    err
}

const CTAS: &str = "CREATE TABLE jammi.public.emb AS SELECT value AS id, 'row ' || value AS title, \
     make_array(arrow_cast(sin(value), 'Float32'), arrow_cast(cos(value), 'Float32'), \
     arrow_cast(sin(value * 0.5), 'Float32'), arrow_cast(cos(value * 0.5), 'Float32')) AS embedding \
     FROM generate_series(1, 2000)";

#[test]
fn sources_sql_tables_and_recover_subcommands_work_in_every_output_format() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let file = dir.path().join("papers.parquet");
    std::fs::write(&file, parquet_bytes(&[sample_batch(0, 40, 4)])).unwrap();

    let out = ok(&jammi(
        &root,
        &[
            "sources",
            "add",
            "papers",
            "--url",
            file.to_str().unwrap(),
            "--format",
            "parquet",
        ],
    ));
    assert!(out.contains("papers.public.papers"), "{out}");
    let out = ok(&jammi(&root, &["sources", "list"]));
    assert!(out.contains("| papers") && out.contains("parquet"), "{out}");
    let out = ok(&jammi(&root, &["-o", "json", "sources", "list"]));
    let v: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(v["name"], "papers");

    let out = ok(&jammi(
        &root,
        &[
            "-o",
            "csv",
            "sql",
            "SELECT count(*) AS n FROM papers.public.papers; SELECT 'a,b' AS s, 2 AS two",
        ],
    ));
    assert_eq!(out, "n\n40\ns,two\n\"a,b\",2\n");
    let out = ok(&jammi(
        &root,
        &[
            "-o",
            "json",
            "sql",
            "SELECT id, title FROM papers.public.papers WHERE id = 3",
        ],
    ));
    assert_eq!(out.trim(), r#"{"id":3,"title":"paper 3"}"#);
    let out = ok(&jammi(
        &root,
        &["sql", "SELECT max(id) AS m FROM papers.public.papers"],
    ));
    assert!(out.contains("| m ") && out.contains("| 39 |"), "{out}");

    let script = dir.path().join("s.sql");
    std::fs::write(
        &script,
        format!(
            "{CTAS};\n-- a comment; with a semicolon\nSELECT count(*) AS n FROM jammi.public.emb;"
        ),
    )
    .unwrap();
    let out = ok(&jammi(
        &root,
        &["-o", "csv", "sql", "-f", script.to_str().unwrap()],
    ));
    assert!(out.contains("n\n2000"), "{out}");

    // Piped standard input runs as a script.
    let mut child = Command::new(jammi_bin())
        .args(["--root", root.to_str().unwrap(), "-o", "csv"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"SELECT 41 + 1 AS answer;")
        .unwrap();
    let out = ok(&child.wait_with_output().unwrap());
    assert_eq!(out, "answer\n42\n");

    let out = ok(&jammi(&root, &["tables", "list"]));
    assert!(
        out.contains("emb") && out.contains("2000") && out.contains("cosine"),
        "{out}"
    );
    let out = ok(&jammi(&root, &["-o", "csv", "tables", "show", "emb"]));
    assert!(
        out.contains("rows,2000")
            && out.contains("dimensions,4")
            && out.contains("emb.idx.usearch"),
        "{out}"
    );
    let out = ok(&jammi(
        &root,
        &[
            "-o",
            "csv",
            "sql",
            "SELECT id FROM vector_search('emb', [0.8414709848, 0.5403023059, 0.4794255386, 0.8775825619], 5)",
        ],
    ));
    // Row 1's 4-d vector (sines and cosines of the row number) has near-duplicates among the
    // 2000 rows, which an approximate search may rank first: check the shape, not the ids.
    assert!(out.starts_with("id\n") && out.lines().count() == 6, "{out}");
    let out = ok(&jammi(&root, &["recover", "--dry-run"]));
    assert!(
        out.contains("1 committed tables") && out.contains("would remove 0 objects"),
        "{out}"
    );
    ok(&jammi(&root, &["tables", "delete", "emb"]));
    let out = ok(&jammi(&root, &["tables", "list"]));
    assert!(!out.contains("emb"), "{out}");
    ok(&jammi(&root, &["sources", "remove", "papers"]));
    let out = ok(&jammi(&root, &["-o", "csv", "sources", "list"]));
    assert_eq!(out.trim(), "name,table,url,format");
}

#[test]
fn errors_are_one_line_with_a_nonzero_exit() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let e = fails(&jammi(
        &root,
        &["sources", "add", "x", "--url", "ftp://host/x.parquet"],
    ));
    assert!(e.contains("unsupported scheme 'ftp'"), "{e}");
    let e = fails(&jammi(&root, &["sources", "remove", "nosuch"]));
    assert!(e.contains("nosuch"), "{e}");
    let e = fails(&jammi(&root, &["sql", "SELEC 1"]));
    assert!(e.contains("SELEC"), "{e}");
    let e = fails(&jammi(&root, &["sql", "SELECT * FROM nosuch.public.t"]));
    assert!(e.contains("nosuch"), "{e}");
    let e = fails(&jammi(&root, &["tables", "show", "nosuch"]));
    assert!(e.contains("nosuch"), "{e}");
    let e = fails(&jammi(
        &root,
        &[
            "sources",
            "add",
            "x",
            "--url",
            "/definitely/not/here.parquet",
        ],
    ));
    assert!(e.contains("/definitely/not/here.parquet"), "{e}");
    let secret = "TopSecretValue123";
    let add_with = |option: String| {
        let args = [
            "sources",
            "add",
            "x",
            "--url",
            "s3://bkt/x.parquet",
            "--option",
        ];
        let mut args: Vec<&str> = args.to_vec();
        args.push(&option);
        fails(&jammi(&root, &args))
    };
    let e = add_with(format!("aws.secret_access_key={secret}"));
    assert!(!e.contains(secret), "{e}");
    // The wrong separator: the whole text may be the secret, and is never echoed.
    let e = add_with(format!("aws.secret_access_key:{secret}"));
    assert!(!e.contains(secret) && e.contains("KEY=VALUE"), "{e}");
    // A key outside the cloud namespaces is refused by name, as SQL OPTIONS refuses it.
    for key in ["region", "format.delimiter", "aws_regoin"] {
        let e = add_with(format!("{key}=eu-west-1"));
        assert!(e.contains(&format!("'{key}'")), "{key}: {e}");
    }
    let bad_root = Command::new(jammi_bin())
        .args(["--root", "gopher://x", "sql", "SELECT 1"])
        .output()
        .unwrap();
    let e = fails(&bad_root);
    assert!(e.contains("gopher"), "{e}");
}

/// Every object under `root` belongs to a committed table that verifies (after a recovery
/// pass, which this runs and returns), or is one of `user` files.
async fn recover_then_assert_whole_or_gone(
    root: &std::path::Path,
    user: &[(&str, Vec<u8>)],
) -> (usize, jammi_db::store::RecoveryReport) {
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let report = s.recover().await.unwrap();
    let tables = s.list_tables().await.unwrap();
    for t in &tables {
        s.result_store()
            .verify(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "_jammi" || user.iter().any(|(n, _)| *n == name) {
            continue;
        }
        assert!(
            tables.iter().any(|t| name.starts_with(&format!("{t}.")))
                && !name.ends_with(".idx.lease.json"),
            "orphan {name} (tables {tables:?})"
        );
    }
    for (name, bytes) in user {
        assert_eq!(
            &std::fs::read(root.join(name)).unwrap(),
            bytes,
            "user file {name}"
        );
    }
    (tables.len(), report)
}

/// User files named like result tables, kept in the root through every test below.
fn user_files(root: &std::path::Path) -> Vec<(&'static str, Vec<u8>)> {
    std::fs::create_dir_all(root).unwrap();
    let files = vec![
        ("papers.parquet", parquet_bytes(&[sample_batch(0, 5, 4)])),
        ("my_data.parquet", parquet_bytes(&[sample_batch(9, 2, 4)])),
        ("notes.idx.usearch", b"not an index".to_vec()),
    ];
    for (n, b) in &files {
        std::fs::write(root.join(n), b).unwrap();
    }
    files
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_at_random_points_leaves_tables_whole_or_gone() {
    let big = CTAS.replace("2000", "60000");
    let (mut committed, mut killed_inside, mut reclaimed) = (0, 0, 0);
    let trials = 30;
    for trial in 0..trials {
        let dir = tempdir();
        let root = dir.path().join("db");
        let user = user_files(&root);
        // A committed table from an earlier write must survive the crash of a later one.
        if trial % 3 == 0 {
            ok(&jammi(
                &root,
                &[
                    "sql",
                    &CTAS.replace("jammi.public.emb", "jammi.public.before"),
                ],
            ));
        }
        let mut child = Command::new(jammi_bin())
            .args(["--root", root.to_str().unwrap(), "sql", &big])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = Duration::from_millis(50 + (trial as u64 * 997) % 1500);
        let start = Instant::now();
        let mut finished = false;
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                finished = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        if !finished {
            child.kill().unwrap(); // SIGKILL
            killed_inside += 1;
        }
        child.wait().unwrap();
        let (n, report) = recover_then_assert_whole_or_gone(&root, &user).await;
        reclaimed += report.reclaimed_tables.len() + report.completed_commits.len();
        if trial % 3 == 0 {
            assert!(n >= 1, "the earlier table survives");
        }
        committed += n;
    }
    // The kills must land inside writes, and recovery must have had something to do.
    assert!(
        killed_inside >= trials / 2,
        "only {killed_inside} of {trials} kills hit a write"
    );
    assert!(reclaimed > 0, "recovery never reclaimed a killed write");
    assert!(committed > 0);
}

/// Runs `jammi recover` until `stop`; returns (passes, passes that saw the live write).
fn recover_loop(
    root: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> (usize, usize) {
    let (mut passes, mut saw_live) = (0, 0);
    while !stop.load(std::sync::atomic::Ordering::SeqCst) {
        let out = jammi(&root, &["recover"]);
        let text = ok(&out);
        assert!(
            text.contains("0 abandoned writes"),
            "a recovery pass reclaimed a live write: {text}"
        );
        passes += 1;
        if text.contains("1 operations in progress") {
            saw_live += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    (passes, saw_live)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_writer_survives_recovery_passes_from_two_other_processes() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let user = user_files(&root);
    let big = CTAS.replace("2000", "150000");
    let child = Command::new(jammi_bin())
        .args(["--root", root.to_str().unwrap(), "sql", &big])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let passes: Vec<_> = (0..2)
        .map(|_| {
            let (root, stop) = (root.clone(), stop.clone());
            std::thread::spawn(move || recover_loop(root, stop))
        })
        .collect();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let counts: Vec<(usize, usize)> = passes.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (passes, saw_live) in &counts {
        assert!(
            *passes > 2 && *saw_live > 0,
            "recovery ran during the write: {counts:?}"
        );
    }
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    assert_eq!(s.describe_table("emb").await.unwrap().rows, 150000);
    assert_eq!(recover_then_assert_whole_or_gone(&root, &user).await.0, 1);
}

#[test]
fn commands_that_only_read_change_nothing_under_the_root() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let user = user_files(&root);
    ok(&jammi(&root, &["sql", CTAS]));
    // An abandoned write of a process that no longer runs: only `recover` may remove it.
    let lease = serde_json::json!({
        "version": 2, "id": "00000000000000000000000000000001", "stem": "gone", "state": "writing",
        "host": std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim(),
        "pid": 4_194_303, "created_ms": 0, "expires_ms": 0, "seq": 3,
        "planned": ["gone.parquet"],
        "objects": [{"name": "gone.parquet", "size": 5, "crc32c": crc32c::crc32c(b"xxxxx")}]
    });
    std::fs::write(root.join("gone.idx.lease.json"), lease.to_string()).unwrap();
    std::fs::write(root.join("gone.parquet"), b"xxxxx").unwrap();
    let snapshot = |root: &std::path::Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = walk(root)
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p.strip_prefix(root).unwrap().display().to_string(), bytes)
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&root);
    for args in [
        vec!["sources", "list"],
        vec!["tables", "list"],
        vec!["tables", "show", "emb"],
        vec!["sql", "SELECT count(*) FROM jammi.public.emb"],
        vec!["-o", "json", "sql", "SHOW TABLES"],
        vec!["recover", "--dry-run"],
    ] {
        ok(&jammi(&root, &args));
        assert_eq!(
            snapshot(&root),
            before,
            "`jammi {}` changed the root",
            args.join(" ")
        );
    }
    let dry = ok(&jammi(&root, &["recover", "--dry-run"]));
    assert!(
        dry.contains("would remove 2 objects of 1 abandoned writes")
            && dry.contains("gone.parquet")
            && dry.contains("gone.idx.lease.json"),
        "{dry}"
    );
    // `recover` itself removes exactly that.
    ok(&jammi(&root, &["recover"]));
    assert!(!root.join("gone.parquet").exists() && !root.join("gone.idx.lease.json").exists());
    assert!(root.join("emb.parquet").exists());
    for (name, bytes) in &user {
        assert_eq!(&std::fs::read(root.join(name)).unwrap(), bytes);
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn json_and_csv_output_keep_types() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let sql = "SELECT '123' AS s, 'true' AS b, CAST(NULL AS VARCHAR) AS n, 7 AS i, 2.5 AS f, \
               [1, 2] AS l, named_struct('a', 1, 'b', 'x') AS st, '[3]' AS text_list";
    let out = ok(&jammi(&root, &["-o", "json", "sql", sql]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        v,
        serde_json::json!({
            "s": "123", "b": "true", "n": null, "i": 7, "f": 2.5,
            "l": [1, 2], "st": {"a": 1, "b": "x"}, "text_list": "[3]"
        }),
        "{out}"
    );
    let out = ok(&jammi(&root, &["-o", "csv", "sql", sql]));
    assert_eq!(
        out,
        "s,b,n,i,f,l,st,text_list\n123,true,,7,2.5,\"[1, 2]\",\"{a: 1, b: x}\",[3]\n"
    );
}

#[test]
fn the_repl_history_never_holds_a_secret() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let history = dir.path().join("history");
    let secret = "HistorySecret42";
    let lines = [
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 'memory:///x.parquet'".to_string(),
        format!("OPTIONS ('aws.secret_access_key' '{secret}', 'aws.region' 'us-east-1');"),
        // Every quoting DataFusion accepts: an unquoted key, a bare-word value, a
        // double-quoted value.
        format!(
            "CREATE EXTERNAL TABLE t1 STORED AS PARQUET LOCATION 's3://b/x.parquet' \
             OPTIONS (aws.secret_access_key '{secret}1');"
        ),
        format!(
            "CREATE EXTERNAL TABLE t2 STORED AS PARQUET LOCATION 's3://b/x.parquet' \
             OPTIONS ('aws.secret_access_key' {secret}2);"
        ),
        format!(
            "CREATE EXTERNAL TABLE t3 STORED AS PARQUET LOCATION 's3://b/x.parquet' \
             OPTIONS ('aws.secret_access_key' \"{secret}3\");"
        ),
        "SELECT 41 + 1 AS answer;".to_string(),
        "\\q".to_string(),
    ];
    // The REPL needs a terminal: `script` runs it in a pseudo-terminal fed from our pipe.
    // A wide terminal, so no line wraps in the echo.
    let command = format!(
        "stty cols 1000; {} --root {}",
        jammi_bin().display(),
        root.display()
    );
    let mut child = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("JAMMI_HISTORY", &history)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("`script` (util-linux) runs the REPL in a pseudo-terminal");
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
    // Each line is typed once the REPL shows a prompt after the previous line's echo
    // (typed-ahead input is discarded when the terminal switches to raw mode).
    let deadline = Instant::now() + Duration::from_secs(120);
    let wait_for = |from: usize, what: &str| -> usize {
        loop {
            let text = shown.lock().unwrap().clone();
            if let Some(i) = text.get(from..).and_then(|t| t.find(what)) {
                return from + i + what.len();
            }
            assert!(Instant::now() < deadline, "waiting for {what:?}: {text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut at = wait_for(0, "jammi> ");
    for line in &lines {
        use std::io::Write;
        stdin.write_all(format!("{line}\r").as_bytes()).unwrap();
        stdin.flush().unwrap();
        if line.as_str() != "\\q" {
            at = wait_for(at, line.as_str());
            at = wait_for(at, "> ");
        }
    }
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the REPL did not quit: {}", shown.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(stdin);
    reader.join().unwrap();
    let shown = shown.lock().unwrap().clone();
    assert!(
        status.success() && shown.contains("| 42"),
        "the REPL ran: {shown}"
    );
    let kept = std::fs::read_to_string(&history).unwrap();
    assert!(kept.contains("SELECT 41 + 1 AS answer;"), "{kept}");
    assert!(
        kept.contains("'aws.secret_access_key' '<redacted>'"),
        "{kept}"
    );
    assert!(!kept.contains(secret), "{kept}");
}

#[test]
fn two_processes_indexing_one_file_leave_one_valid_set_of_sidecars() {
    let dir = tempdir();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let batches: Vec<_> = (0..6).map(|i| sample_batch(i * 5000, 5000, 16)).collect();
    std::fs::write(data.join("big.parquet"), parquet_bytes(&batches)).unwrap();
    let q: Vec<String> = (0..16)
        .map(|d| format!("{:?}", ((777f32) * 0.37 + d as f32 * 1.3).sin()))
        .collect();
    let sql = format!(
        "CREATE EXTERNAL TABLE b STORED AS PARQUET LOCATION '{}' \
         OPTIONS ('jammi.vector_column' 'embedding'); \
         SELECT id FROM vector_search('b', [{}], 3)",
        data.join("big.parquet").display(),
        q.join(", ")
    );
    let children: Vec<_> = (0..2)
        .map(|i| {
            Command::new(jammi_bin())
                .args([
                    "--root",
                    dir.path().join(format!("db{i}")).to_str().unwrap(),
                ])
                .args(["-o", "csv", "sql", &sql])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in children {
        let out = ok(&c.wait_with_output().unwrap());
        assert!(out.contains("\n777\n") || out.contains("id\n777"), "{out}");
    }
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "big.idx.manifest.json",
            "big.idx.rowmap",
            "big.idx.usearch",
            "big.parquet"
        ]
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.join("big.idx.manifest.json")).unwrap())
            .unwrap();
    for f in manifest["files"].as_array().unwrap() {
        let bytes = std::fs::read(data.join(f["name"].as_str().unwrap())).unwrap();
        assert_eq!(crc32c::crc32c(&bytes) as u64, f["crc32c"].as_u64().unwrap());
    }
}

#[test]
fn deleting_a_table_that_does_not_exist_fails_naming_it() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let o = jammi(&root, &["tables", "delete", "no_such_table"]);
    assert_eq!(o.status.code(), Some(1));
    let e = fails(&o);
    assert!(
        e.contains("no_such_table") && e.contains("not found"),
        "{e}"
    );
    assert!(String::from_utf8_lossy(&o.stdout).is_empty());
}

#[test]
fn tables_verify_names_each_damaged_file_and_exits_1() {
    let dir = tempdir();
    let root = dir.path().join("db");
    for t in ["good", "bad"] {
        let o = jammi(
            &root,
            &[
                "sql",
                &format!("CREATE TABLE jammi.public.{t} AS SELECT 1 AS id, [1.0, 2.0] AS v"),
            ],
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let o = jammi(&root, &["tables", "verify"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // One flipped byte in one sibling of `bad`.
    let parquet = root.join("bad.parquet");
    let mut bytes = std::fs::read(&parquet).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&parquet, bytes).unwrap();
    let o = jammi(&root, &["tables", "verify"]);
    assert_eq!(o.status.code(), Some(1));
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(shown.contains("bad.parquet"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.contains("good") && l.contains("ok")),
        "{shown}"
    );
    let e = fails(&o);
    assert!(e.contains("1 of 2 tables are damaged"), "{e}");
    // One table by name.
    assert!(jammi(&root, &["tables", "verify", "good"]).status.success());
    let e = fails(&jammi(&root, &["tables", "verify", "nope"]));
    assert!(e.contains("nope"), "{e}");
}

#[test]
fn tables_show_lists_the_versions_of_a_table_that_changed() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let script = "CREATE TABLE jammi.public.t AS SELECT * FROM (VALUES (1, [1.0, 0.0]), (2, [0.0, 1.0])) AS x(id, v);\n\
                  INSERT INTO jammi.public.t VALUES (3, [1.0, 1.0]);\n\
                  DELETE FROM jammi.public.t WHERE id = 1;";
    let o = jammi(&root, &["sql", script]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = jammi(&root, &["tables", "show", "t"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let shown = String::from_utf8_lossy(&o.stdout);
    let line = |key: &str| {
        shown
            .lines()
            .find(|l| l.contains(key))
            .unwrap_or_else(|| panic!("no {key} in\n{shown}"))
            .to_string()
    };
    assert!(line("| rows ").contains(" 2 "), "{shown}");
    assert!(
        line("version 1").contains("append +1 -0 rows, 2 segments"),
        "{shown}"
    );
    assert!(
        line("version 2").contains("delete +0 -1 rows, 2 segments"),
        "{shown}"
    );
}

#[test]
fn tables_compact_and_vacuum_rewrite_segments_and_remove_only_old_versions_files() {
    let dir = tempdir();
    let root = dir.path().join("db");
    let script = "CREATE TABLE jammi.public.t AS SELECT * FROM (VALUES (1, [1.0, 0.0]), (2, [0.0, 1.0])) AS x(id, v);\n\
                  INSERT INTO jammi.public.t VALUES (3, [1.0, 1.0]);\n\
                  DELETE FROM jammi.public.t WHERE id = 1;";
    let o = jammi(&root, &["sql", script]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ok(&jammi(&root, &["tables", "compact", "t"]));
    assert!(o.contains("2 -> 1"), "{o}");
    let ids = ok(&jammi(
        &root,
        &[
            "-o",
            "csv",
            "sql",
            "SELECT id FROM jammi.public.t ORDER BY id",
        ],
    ));
    assert_eq!(ids.lines().collect::<Vec<_>>(), ["id", "2", "3"], "{ids}");
    // The default retention keeps every version of a table changed a moment ago.
    let kept = ok(&jammi(&root, &["tables", "vacuum", "t"]));
    assert!(!kept.contains("version"), "{kept}");
    let dry = ok(&jammi(
        &root,
        &["tables", "vacuum", "t", "--older-than", "0s", "--dry-run"],
    ));
    assert!(
        dry.contains("would remove") && dry.contains("version 1"),
        "{dry}"
    );
    let before = std::fs::read_dir(root.join("t.jammi/segments"))
        .unwrap()
        .count();
    let done = ok(&jammi(
        &root,
        &["tables", "vacuum", "t", "--older-than", "0s"],
    ));
    assert!(
        done.contains("removed") && done.contains("version 2"),
        "{done}"
    );
    assert!(
        std::fs::read_dir(root.join("t.jammi/segments"))
            .unwrap()
            .count()
            < before
    );
    let ids = ok(&jammi(
        &root,
        &[
            "-o",
            "csv",
            "sql",
            "SELECT id FROM jammi.public.t ORDER BY id",
        ],
    ));
    assert_eq!(ids.lines().collect::<Vec<_>>(), ["id", "2", "3"], "{ids}");
    let e = fails(&jammi(
        &root,
        &["tables", "vacuum", "t", "--older-than", "soon"],
    ));
    assert!(e.contains("--older-than") && e.contains("'soon'"), "{e}");
}
