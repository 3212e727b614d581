//! `jammi`: the command-line interface.
//!
//! ```text
//! jammi [--root URL] [--output table|csv|json] sources add NAME --url URL [--format FMT]
//! jammi sources list | sources remove NAME
//! jammi sql "SELECT ...; SELECT ..."      one-shot (several statements)
//! jammi sql -f script.sql
//! jammi                                   interactive shell (also `jammi sql` with no query)
//! jammi tables list | tables show NAME | tables delete NAME
//! jammi recover [--dry-run]
//! ```

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use datafusion::arrow::record_batch::RecordBatch;

#[cfg(feature = "ballista")]
mod cluster;
mod output;

use jammi_db::index::progress::TerminalBar;
use jammi_db::session::{JammiSession, OpenOptions, default_root, split_statements};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::{CloudConfig, Scheme, StorageUrl};
use output::{Output, print_batches, print_rows};

#[derive(Parser)]
#[command(
    name = "jammi",
    version,
    about = "SQL over files and vector indexes on local disk, S3, GCS and Azure"
)]
struct Cli {
    /// Database root: a local path or storage URL (default: ~/.local/share/jammi).
    #[arg(long, global = true, env = "JAMMI_ROOT")]
    root: Option<String>,
    /// Output format of query results.
    #[arg(long, short = 'o', global = true, value_enum, default_value = "table")]
    output: Output,
    /// Run queries on the Apache Ballista cluster whose scheduler is at df://host:port
    /// (a build with the `ballista` feature).
    #[arg(long, global = true, env = "JAMMI_CLUSTER")]
    cluster: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Manage sources.
    Sources {
        #[command(subcommand)]
        command: SourcesCommand,
    },
    /// Run SQL: a query argument, a file (-f), or an interactive shell when neither is given.
    Sql {
        /// Statements, separated by `;`.
        query: Option<String>,
        /// Read statements from a file.
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
    },
    /// Manage result tables.
    Tables {
        #[command(subcommand)]
        command: TablesCommand,
    },
    /// Remove what crashed writes left behind under the root.
    Recover {
        /// Only report what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run an Apache Ballista scheduler that plans jammi-db's queries.
    #[cfg(feature = "ballista")]
    Scheduler(cluster::SchedulerArgs),
    /// Run an Apache Ballista executor that runs jammi-db's tasks.
    #[cfg(feature = "ballista")]
    Executor(cluster::ExecutorArgs),
}

#[derive(Subcommand)]
enum SourcesCommand {
    /// Register a source.
    Add {
        /// Source name (the SQL catalog: NAME.public.<table>).
        name: String,
        /// Path or storage URL of a file, a prefix (ending in /) or a glob.
        #[arg(long)]
        url: String,
        /// parquet, csv, json, arrow or avro (default: from the file extension).
        #[arg(long)]
        format: Option<String>,
        /// Cloud option, repeatable: aws.region=us-east-1, aws.endpoint=..., gcp.*, azure.*.
        #[arg(long = "option", value_name = "KEY=VALUE")]
        options: Vec<String>,
        /// Shorthand for aws.region.
        #[arg(long)]
        region: Option<String>,
        /// Shorthand for the endpoint of the URL's cloud (aws.endpoint, gcp.endpoint, azure.endpoint).
        #[arg(long)]
        endpoint: Option<String>,
    },
    /// List sources.
    List,
    /// Remove a source (its data is not touched).
    Remove {
        /// Source name.
        name: String,
    },
}

#[derive(Subcommand)]
enum TablesCommand {
    /// List result tables.
    List,
    /// Show a result table's manifest: rows, dimensions, metric, files and sizes.
    Show {
        /// Table name.
        name: String,
    },
    /// Delete a result table and its sidecars.
    Delete {
        /// Table name.
        name: String,
    },
    /// Rewrite a result table's small segments and those with many deleted rows into
    /// fewer, larger ones, as a new version (every query answers the same).
    Compact {
        /// Table name.
        name: String,
    },
    /// Remove the files only versions replaced more than a retention ago use (and writes
    /// that died before committing), each proven jammi-db's by its version record.
    Vacuum {
        /// Table name.
        name: String,
        /// Retention: versions replaced more recently stay readable (e.g. 7d, 12h, 0s).
        #[arg(long, default_value = "7d")]
        older_than: String,
        /// Only list what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check every sibling of a result table (or of every table) against its manifest:
    /// present, its recorded size and CRC32C. Lists each table with what is wrong with it;
    /// exits 1 when any is damaged.
    Verify {
        /// Table name (default: every table).
        name: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JAMMI_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", one_line(&e.to_string()));
            ExitCode::FAILURE
        }
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub(crate) type Error = Box<dyn std::error::Error>;

async fn run(cli: Cli) -> Result<(), Error> {
    // A cluster process serves until stopped and opens no database.
    let command = match cli.command {
        #[cfg(feature = "ballista")]
        Some(Command::Scheduler(args)) => return cluster::scheduler(args).await,
        #[cfg(feature = "ballista")]
        Some(Command::Executor(args)) => return cluster::executor(args).await,
        other => other,
    };
    let root = cli.root.clone().unwrap_or_else(default_root);
    let options = OpenOptions {
        cluster: cli.cluster.clone(),
        ..Default::default()
    };
    let session = JammiSession::open_with(&root, options).await?;
    session.set_build_progress(Arc::new(TerminalBar::default()));
    let out = cli.output;
    match command {
        None => repl(&session, out).await,
        Some(Command::Sql { query, file }) => match (query, file) {
            (Some(q), None) => run_script(&session, &q, out).await,
            (None, Some(f)) => {
                let text = std::fs::read_to_string(&f)
                    .map_err(|e| format!("cannot read {}: {e}", f.display()))?;
                run_script(&session, &text, out).await
            }
            (None, None) => repl(&session, out).await,
            (Some(_), Some(_)) => Err("give a query or -f FILE, not both".into()),
        },
        Some(Command::Sources { command }) => match command {
            SourcesCommand::Add {
                name,
                url,
                format,
                options,
                region,
                endpoint,
            } => {
                let parsed = StorageUrl::parse(&url)?;
                let cloud = cloud_options(parsed.scheme(), &options, region, endpoint)?;
                let conn = SourceConnection {
                    url: Some(parsed.to_string()),
                    format: format.map(|f| f.parse::<FileFormat>()).transpose()?,
                    cloud,
                    ..Default::default()
                };
                session.add_source(&name, SourceType::File, conn).await?;
                let entry = session
                    .catalog()
                    .source(&name)
                    .await?
                    .ok_or("source vanished")?;
                println!(
                    "added source {name}: query it as {name}.public.{}",
                    entry.table
                );
                Ok(())
            }
            SourcesCommand::List => {
                let rows: Vec<Vec<String>> = session
                    .list_sources()
                    .await?
                    .into_iter()
                    .map(|s| {
                        vec![
                            s.name.clone(),
                            format!("{}.public.{}", s.name, s.table),
                            s.connection.url.clone().unwrap_or_default(),
                            s.connection
                                .format
                                .map(|f| f.to_string())
                                .unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_rows(&["name", "table", "url", "format"], &rows, out)
            }
            SourcesCommand::Remove { name } => {
                session.remove_source(&name).await?;
                println!("removed source {name}");
                Ok(())
            }
        },
        Some(Command::Tables { command }) => match command {
            TablesCommand::List => {
                let mut rows = Vec::new();
                for t in session.list_tables().await? {
                    let (n, dims, metric) = match session.describe_table(&t).await {
                        Ok(m) => (
                            m.rows.to_string(),
                            m.index
                                .as_ref()
                                .map(|i| i.dimensions.to_string())
                                .unwrap_or_default(),
                            m.index
                                .as_ref()
                                .map(|i| i.metric.to_string())
                                .unwrap_or_default(),
                        ),
                        Err(e) => ("broken".into(), String::new(), one_line(&e.to_string())),
                    };
                    rows.push(vec![t, n, dims, metric]);
                }
                print_rows(&["name", "rows", "dimensions", "metric"], &rows, out)
            }
            TablesCommand::Show { name } => {
                let m = session.describe_table(&name).await?;
                let mut rows = vec![
                    vec!["table".into(), m.table.clone()],
                    vec!["rows".into(), m.rows.to_string()],
                    vec!["created_at".into(), m.created_at.clone()],
                ];
                for (k, v) in [
                    ("source", &m.source),
                    ("task", &m.task),
                    ("model", &m.model),
                    ("key_column", &m.key_column),
                ] {
                    if let Some(v) = v {
                        rows.push(vec![k.into(), v.clone()]);
                    }
                }
                if let Some(i) = &m.index {
                    rows.push(vec!["vector_column".into(), i.column.clone()]);
                    rows.push(vec!["dimensions".into(), i.dimensions.to_string()]);
                    rows.push(vec!["metric".into(), i.metric.to_string()]);
                    rows.push(vec!["quantization".into(), i.quantization.to_string()]);
                    rows.push(vec!["vectors".into(), i.vectors.to_string()]);
                    rows.push(vec![
                        "hnsw".into(),
                        format!(
                            "M={} ef_construction={} ef_search={}",
                            i.connectivity, i.expansion_add, i.expansion_search
                        ),
                    ]);
                    rows.push(vec!["usearch_version".into(), i.usearch_version.clone()]);
                }
                for f in &m.files {
                    rows.push(vec![
                        format!("file {:?}", f.role).to_lowercase(),
                        format!("{} ({} bytes, crc32c {:08x})", f.name, f.size, f.crc32c),
                    ]);
                }
                // A table that changed: its rows now, and every version.
                let versions = session.result_store().versions(&name).await?;
                if let Some(latest) = versions.last().filter(|_| versions.len() > 1) {
                    rows[1][1] = latest.rows().to_string();
                    rows.push(vec!["segments".into(), latest.segments.len().to_string()]);
                    for v in &versions {
                        let when = v.created_at().unwrap_or_else(|| m.created_at.clone());
                        rows.push(vec![
                            format!("version {}", v.version),
                            format!(
                                "{when} {:?} +{} -{} rows, {} segments",
                                v.operation,
                                v.rows_added,
                                v.rows_deleted,
                                v.segments.len()
                            )
                            .to_lowercase(),
                        ]);
                    }
                }
                print_rows(&["property", "value"], &rows, out)
            }
            TablesCommand::Compact { name } => {
                let r = session.compact(&name, &Default::default()).await?;
                let version = r
                    .version
                    .map_or("none (nothing to rewrite)".into(), |v| v.to_string());
                let rows = vec![
                    vec!["version".into(), version],
                    vec![
                        "segments".into(),
                        format!("{} -> {}", r.segments_before, r.segments_after),
                    ],
                    vec![
                        "rewritten".into(),
                        format!("{} segments, {} rows", r.rewritten, r.rows),
                    ],
                ];
                print_rows(&["property", "value"], &rows, out)
            }
            TablesCommand::Vacuum {
                name,
                older_than,
                dry_run,
            } => {
                let retention =
                    jammi_db::sql::options::parse_duration(&older_than).map_err(|e| {
                        jammi_db::JammiError::InvalidInput(format!("--older-than: {e}"))
                    })?;
                let r = session.vacuum(&name, retention, dry_run).await?;
                let verb = if dry_run { "would remove" } else { "removed" };
                let mut rows: Vec<Vec<String>> = r
                    .removed
                    .iter()
                    .map(|f| vec![verb.into(), f.clone()])
                    .collect();
                for v in &r.versions_removed {
                    rows.push(vec![verb.into(), format!("version {v}")]);
                }
                print_rows(&["action", "what"], &rows, out)
            }
            TablesCommand::Verify { name } => {
                let names = match name {
                    Some(n) => vec![n],
                    None => session.list_tables().await?,
                };
                let mut rows = Vec::new();
                for t in &names {
                    let status = match session.result_store().verify(t).await {
                        Ok(_) => "ok".to_string(),
                        // A named table that is not there is an error, not a damaged table.
                        Err(e @ jammi_db::JammiError::NotFound { .. }) => return Err(e.into()),
                        Err(e) => e.to_string(),
                    };
                    rows.push(vec![t.clone(), status]);
                }
                let damaged = rows.iter().filter(|r| r[1] != "ok").count();
                print_rows(&["table", "status"], &rows, out)?;
                if damaged > 0 {
                    return Err(format!("{damaged} of {} tables are damaged", rows.len()).into());
                }
                Ok(())
            }
            TablesCommand::Delete { name } => {
                session.delete_table(&name).await?;
                println!("deleted result table {name}");
                Ok(())
            }
        },
        #[cfg(feature = "ballista")]
        Some(Command::Scheduler(_) | Command::Executor(_)) => {
            Err("a scheduler or executor opens no database".into())
        }
        Some(Command::Recover { dry_run }) => {
            let r = if dry_run {
                session.result_store().recover_dry_run().await?
            } else {
                session.recover().await?
            };
            let verb = if dry_run { "would remove" } else { "removed" };
            println!(
                "{} committed tables; {verb} {} objects of {} abandoned writes; {} commits and {} deletes completed; {} operations in progress; {} broken tables",
                r.committed_tables,
                r.removed_objects.len(),
                r.reclaimed_tables.len(),
                r.completed_commits.len(),
                r.completed_deletes.len(),
                r.live_writes.len(),
                r.broken_tables.len()
            );
            for o in &r.removed_objects {
                println!("  {verb} {o}");
            }
            for o in &r.kept_objects {
                println!("  kept {o}: not the object the abandoned write recorded");
            }
            for b in &r.broken_tables {
                println!("  broken: {b}");
            }
            if !r.failed.is_empty() {
                return Err(format!(
                    "{} operations could not be settled (run recover again): {}",
                    r.failed.len(),
                    r.failed.join("; ")
                )
                .into());
            }
            Ok(())
        }
    }
}

/// Builds a cloud configuration from `KEY=VALUE` options and shorthands.
fn cloud_options(
    scheme: Scheme,
    options: &[String],
    region: Option<String>,
    endpoint: Option<String>,
) -> Result<Option<CloudConfig>, Error> {
    let mut map = std::collections::HashMap::new();
    for o in options {
        // The text may be a secret typed with the wrong separator: never echo it.
        let (k, v) = o
            .split_once('=')
            .ok_or("an --option is not KEY=VALUE (its text is not shown: it may hold a secret)")?;
        map.insert(k.trim().to_string(), v.trim().to_string());
    }
    let prefix = match scheme {
        Scheme::S3 => Some("aws"),
        Scheme::Gcs => Some("gcp"),
        Scheme::Azure => Some("azure"),
        _ => None,
    };
    if let Some(r) = region {
        map.insert("aws.region".into(), r);
    }
    if let Some(e) = endpoint {
        let p = prefix.ok_or("--endpoint applies to cloud URLs only")?;
        if e.starts_with("http://") {
            map.entry(format!("{p}.allow_http"))
                .or_insert_with(|| "true".into());
        }
        map.insert(format!("{p}.endpoint"), e);
    }
    // Every --option is a cloud setting: a key outside aws.*, gcp.*, azure.* is refused by
    // name, as SQL OPTIONS, Rust and Python refuse it.
    Ok(CloudConfig::from_cloud_options(scheme, &map)?)
}

async fn run_script(session: &JammiSession, script: &str, out: Output) -> Result<(), Error> {
    let stmts = split_statements(script);
    if stmts.is_empty() {
        return Err("no SQL statement given".into());
    }
    for stmt in stmts {
        // A spinner on a terminal while a statement runs (uploads, index builds, scans);
        // indicatif draws nothing when stderr is not a terminal.
        let spinner = indicatif::ProgressBar::new_spinner().with_message(
            stmt.split_whitespace()
                .take(6)
                .collect::<Vec<_>>()
                .join(" "),
        );
        spinner.set_style(
            indicatif::ProgressStyle::with_template("{spinner} {elapsed} {msg}").expect("template"),
        );
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let result = async {
            session
                .sql(&stmt)
                .await?
                .collect()
                .await
                .map_err(Into::into)
        }
        .await;
        spinner.finish_and_clear();
        let batches: Vec<RecordBatch> = result.map_err(|e: jammi_db::JammiError| e)?;
        print_batches(&batches, out)?;
    }
    Ok(())
}

async fn repl(session: &JammiSession, out: Output) -> Result<(), Error> {
    if !std::io::stdin().is_terminal() {
        let mut script = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut script)?;
        return run_script(session, &script, out).await;
    }
    let mut rl = rustyline::DefaultEditor::new()?;
    // `JAMMI_HISTORY` moves the file; statements are kept with secret option values redacted.
    let history_file = std::env::var_os("JAMMI_HISTORY")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".jammi_history")));
    if let Some(h) = &history_file {
        let _ = rl.load_history(h);
    }
    println!(
        "jammi {} — root {}; end statements with ';', \\q to quit",
        env!("CARGO_PKG_VERSION"),
        session.catalog().root()
    );
    let mut buf = String::new();
    loop {
        let prompt = if buf.is_empty() {
            "jammi> "
        } else {
            "   ...> "
        };
        match rl.readline(prompt) {
            Ok(line) => {
                let t = line.trim();
                if buf.is_empty() && (t == "\\q" || t == "quit" || t == "exit") {
                    break;
                }
                buf.push_str(&line);
                buf.push('\n');
                if t.ends_with(';') {
                    let _ = rl.add_history_entry(jammi_db::sql::redact_secrets(buf.trim()));
                    if let Err(e) = run_script(session, &buf, out).await {
                        eprintln!("error: {}", one_line(&e.to_string()));
                    }
                    buf.clear();
                }
            }
            Err(rustyline::error::ReadlineError::Interrupted) => buf.clear(),
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        }
    }
    if let Some(h) = &history_file {
        let _ = rl.save_history(h);
    }
    Ok(())
}
