//! The `jammi` binary: every subcommand, output formats, error paths, and crash tests
//! (a writer killed with SIGKILL at random points; a slow writer beside a recovery pass).

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use jammi_db::session::JammiSession;

use crate::common::{jammi_bin, parquet_bytes, sample_batch, tempdir};

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
    let e = fails(&jammi(
        &root,
        &[
            "sources",
            "add",
            "x",
            "--url",
            "s3://bkt/x.parquet",
            "--option",
            &format!("aws.secret_access_key={secret}"),
        ],
    ));
    assert!(!e.contains(secret), "{e}");
    #[cfg(not(feature = "storage-s3"))]
    {
        let e = fails(&jammi(
            &root,
            &[
                "sources",
                "add",
                "x",
                "--url",
                "s3://bkt/x.parquet",
                "--region",
                "us-east-1",
            ],
        ));
        assert!(e.contains("storage-s3"), "{e}");
    }
    let bad_root = Command::new(jammi_bin())
        .args(["--root", "gopher://x", "sql", "SELECT 1"])
        .output()
        .unwrap();
    let e = fails(&bad_root);
    assert!(e.contains("gopher"), "{e}");
}

/// Every object under `root` belongs to a committed table that verifies, and no lease is
/// left: the invariant after a crash plus recovery.
async fn assert_whole_or_gone(root: &std::path::Path) -> usize {
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let tables = s.list_tables().await.unwrap();
    for t in &tables {
        s.result_store()
            .verify(t)
            .await
            .unwrap_or_else(|e| panic!("{t}: {e}"));
    }
    for entry in std::fs::read_dir(root).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name == "_jammi" {
            continue;
        }
        assert!(
            tables.iter().any(|t| name.starts_with(t.as_str())),
            "orphan {name} (tables {tables:?})"
        );
    }
    let leases = root.join("_jammi/leases");
    if leases.exists() {
        let left: Vec<_> = std::fs::read_dir(leases).unwrap().collect();
        assert!(left.is_empty(), "leases left: {left:?}");
    }
    tables.len()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_at_random_points_leaves_tables_whole_or_gone() {
    let big = CTAS.replace("2000", "60000");
    let mut committed = 0;
    let trials = 30;
    for trial in 0..trials {
        let dir = tempdir();
        let root = dir.path().join("db");
        // The first run of each root creates it; a committed table from an earlier
        // write must survive the crash of a later one.
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
        while start.elapsed() < delay {
            if child.try_wait().unwrap().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        child.kill().ok(); // SIGKILL
        child.wait().unwrap();
        let n = assert_whole_or_gone(&root).await;
        if trial % 3 == 0 {
            assert!(n >= 1, "the earlier table survives");
        }
        committed += n;
    }
    assert!(committed > 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_writer_survives_recovery_passes_from_another_process() {
    let dir = tempdir();
    let root = dir.path().join("db");
    std::fs::create_dir_all(&root).unwrap();
    let big = CTAS.replace("2000", "150000");
    let child = Command::new(jammi_bin())
        .args(["--root", root.to_str().unwrap(), "sql", &big])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let waiter = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap());
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let mut passes = 0;
    let mut saw_live = false;
    while !waiter.is_finished() {
        let r = s.recover().await.unwrap();
        saw_live |= !r.live_writes.is_empty();
        assert!(
            r.reclaimed_tables.is_empty(),
            "pass {passes} reclaimed a live write of pid {pid}: {r:?}"
        );
        passes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = waiter.await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        passes > 3 && saw_live,
        "recovery ran during the write ({passes} passes, saw live: {saw_live})"
    );
    s.refresh().await.unwrap();
    assert_eq!(s.describe_table("emb").await.unwrap().rows, 150000);
    assert_eq!(assert_whole_or_gone(&root).await, 1);
}
