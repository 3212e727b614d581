//! DataFusion's own sqllogictest suite — the `test_files/` shipped in the
//! `datafusion-sqllogictest` crate this build uses — run file by file as DataFusion's runner
//! does (`TestContext::try_new_for_test_file`, its normalizer and validators), twice: on the
//! context as DataFusion builds it, and with `jammi_db::register` applied to it. Every
//! record (statement or query) is run, so one failure does not hide the rest.
//!
//! Fails when a record passes plain and fails with `register`, or when a record fails in
//! both runs and is not listed in `sqllogictest/datafusion-known-failures.txt` (records
//! that need DataFusion's test data, which the crate does not ship). Run by `.ci/run`:
//! `cargo test --features datafusion-suite --test datafusion_suite`. `JAMMI_SUITE_FILTER`
//! restricts it to files whose path contains the given text; `JAMMI_SUITE_WRITE_KNOWN=1`
//! rewrites the known list.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use datafusion_sqllogictest::{
    DataFusion, TestContext, df_value_validator, read_dir_recursive, setup_scratch_dir,
    value_normalizer,
};
use futures::StreamExt;
use sqllogictest::{Record, parse_file, strict_column_validator};

const KNOWN: &str = "sqllogictest/datafusion-known-failures.txt";
const SUITE_VERSION: &str = "55.2.0";

/// The two runs of one file (plain, with `register`); `None` when the runner skips it.
type FileRuns = Option<(Vec<Outcome>, Vec<Outcome>)>;

/// How one record went in one run.
#[derive(Debug, Clone)]
struct Outcome {
    /// `file:line` of the record.
    at: String,
    /// The error, if it failed.
    error: Option<String>,
}

fn suite_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DATAFUSION_SLT_DIR") {
        return d.into();
    }
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))
        .expect("CARGO_HOME or HOME");
    let name = format!("datafusion-sqllogictest-{SUITE_VERSION}");
    let registry = home.join("registry/src");
    for index in std::fs::read_dir(&registry).expect("the cargo registry's sources") {
        let candidate = index.unwrap().path().join(&name);
        if candidate.join("test_files").is_dir() {
            return candidate;
        }
    }
    panic!(
        "{name} not found under {}; set DATAFUSION_SLT_DIR",
        registry.display()
    );
}

/// Copies the suite into a scratch directory: files write into `test_files/scratch/`.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

/// Runs every record of one file; `None` when DataFusion's runner would skip the file.
async fn run_file(path: &Path, relative: &Path, with_jammi: bool) -> Option<Vec<Outcome>> {
    let test_ctx = TestContext::try_new_for_test_file(relative).await?;
    if with_jammi {
        let registry = jammi_db::storage::StorageRegistry::new();
        jammi_db::register(test_ctx.session_ctx(), &registry, None)
            .await
            .expect("register");
    }
    setup_scratch_dir(relative).unwrap();
    let ctx = test_ctx.session_ctx().clone();
    let rel = relative.to_path_buf();
    let mut runner = sqllogictest::Runner::new(move || {
        let (ctx, rel) = (ctx.clone(), rel.clone());
        async move { Ok(DataFusion::new(ctx, rel, indicatif::ProgressBar::hidden())) }
    });
    runner.add_label("Datafusion");
    runner.with_column_validator(strict_column_validator);
    runner.with_normalizer(value_normalizer);
    runner.with_validator(df_value_validator);
    let records = parse_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = Vec::new();
    for record in records {
        let at = match &record {
            Record::Halt { .. } => break,
            Record::Statement { loc, .. } | Record::Query { loc, .. } => {
                format!("{}:{}", relative.display(), loc.line())
            }
            _ => String::new(),
        };
        let result = runner.run_async(record).await;
        if !at.is_empty() {
            out.push(Outcome {
                at,
                error: result.err().map(|e| e.to_string()),
            });
        }
    }
    runner.shutdown_async().await;
    drop(test_ctx);
    Some(out)
}

/// Both runs of one file: (plain, with register).
async fn run_both(work: PathBuf, file: PathBuf) -> FileRuns {
    let relative = file
        .strip_prefix(work.join("test_files"))
        .unwrap()
        .to_path_buf();
    let plain = run_file(&file, &relative, false).await?;
    let jammi = run_file(&file, &relative, true).await?;
    Some((plain, jammi))
}

fn main() {
    let source = suite_dir();
    let work = tempfile::tempdir().unwrap();
    copy_tree(&source, work.path());
    std::env::set_current_dir(work.path()).unwrap();
    let filter = std::env::var("JAMMI_SUITE_FILTER").ok();
    let mut files: Vec<PathBuf> = read_dir_recursive(work.path().join("test_files"))
        .unwrap()
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            let rel = p.strip_prefix(work.path().join("test_files")).unwrap();
            // As DataFusion's runner without its optional flags: no TPC-H, sqlite or
            // encrypted-Parquet files.
            !rel.starts_with("tpch")
                && !rel.starts_with("sqlite")
                && rel
                    .file_name()
                    .is_some_and(|n| n != "encrypted_parquet.slt")
        })
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|f| p.to_string_lossy().contains(f))
        })
        .collect();
    files.sort();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let started = std::time::Instant::now();
    let work_dir = work.path().to_path_buf();
    let results: Vec<(PathBuf, FileRuns)> = rt.block_on(async {
        futures::stream::iter(files.into_iter().map(|f| {
            let work = work_dir.clone();
            async move {
                let r = tokio::spawn(run_both(work, f.clone()))
                    .await
                    .unwrap_or_else(|e| {
                        panic!("{}: the run panicked: {e}", f.display());
                    });
                (f, r)
            }
        }))
        .buffer_unordered(2)
        .collect()
        .await
    });

    let (mut records, mut skipped) = (0usize, 0usize);
    let mut regressions = Vec::new();
    let mut both = BTreeSet::new();
    let mut fixed = 0usize;
    for (file, r) in &results {
        let Some((plain, jammi)) = r else {
            skipped += 1;
            continue;
        };
        assert_eq!(
            plain.len(),
            jammi.len(),
            "{}: both runs see the same records",
            file.display()
        );
        for (p, j) in plain.iter().zip(jammi) {
            records += 1;
            match (&p.error, &j.error) {
                (None, Some(e)) => regressions.push(format!("{}: {e}", j.at)),
                (Some(e), Some(_)) => {
                    if std::env::var_os("JAMMI_SUITE_SHOW_BOTH").is_some() {
                        let first = e.lines().find(|l| l.contains("rror")).unwrap_or("");
                        println!("both: {} {}", p.at, first.trim());
                    }
                    both.insert(p.at.clone());
                }
                (Some(_), None) => fixed += 1,
                (None, None) => {}
            }
        }
    }
    let known_path = Path::new(env!("CARGO_MANIFEST_DIR")).join(KNOWN);
    if std::env::var_os("JAMMI_SUITE_WRITE_KNOWN").is_some() {
        let text: String = both.iter().map(|l| format!("{l}\n")).collect();
        std::fs::write(&known_path, text).unwrap();
    }
    let known: BTreeSet<String> = std::fs::read_to_string(&known_path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    let unknown: Vec<&String> = both.difference(&known).collect();
    println!(
        "DataFusion {SUITE_VERSION} sqllogictest suite: {} files ({skipped} skipped by its \
         runner), {records} records; with register: {} records fail that pass without it; \
         {} fail in both runs ({} of them known, missing test data); {fixed} fail only \
         without register; {:.0} s",
        results.len(),
        regressions.len(),
        both.len(),
        both.len() - unknown.len(),
        started.elapsed().as_secs_f64()
    );
    let mut failed = false;
    if !regressions.is_empty() {
        failed = true;
        println!("\nrecords that pass without register and fail with it:");
        for r in &regressions {
            println!(
                "  {}",
                r.lines().take(12).collect::<Vec<_>>().join("\n    ")
            );
        }
    }
    if !unknown.is_empty() && filter.is_none() {
        failed = true;
        println!("\nrecords failing in both runs that {KNOWN} does not list:");
        for u in &unknown {
            println!("  {u}");
        }
    }
    drop(rt);
    if failed {
        std::process::exit(1);
    }
}
