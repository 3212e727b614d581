//! Sources, the persistent catalog and `<source>.public.<table>` queries.

use std::collections::HashSet;
use std::sync::Arc;

use object_store::ObjectStore;

use datafusion::arrow::array::{Array, Int64Array, RecordBatch};
use jammi_db::JammiError;
use jammi_db::catalog::Catalog;
use jammi_db::session::JammiSession;
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::{CloudConfig, S3Config, StorageRegistry, StorageUrl};

use crate::common::{parquet_bytes, sample_batch, tempdir};

fn int(batches: &[RecordBatch], col: usize) -> i64 {
    batches[0]
        .column(col)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

fn conn(url: &str, format: Option<FileFormat>) -> SourceConnection {
    SourceConnection {
        url: Some(url.to_string()),
        format,
        ..Default::default()
    }
}

/// A temp dir with `data/papers.parquet` (100 rows), `parts/` (3 files, 30 rows),
/// `papers.csv` and `papers.json` (10 rows each), `empty/`.
fn fixture() -> tempfile::TempDir {
    let dir = tempdir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::fs::create_dir_all(d.join("parts")).unwrap();
    std::fs::create_dir_all(d.join("empty")).unwrap();
    std::fs::write(
        d.join("data/papers.parquet"),
        parquet_bytes(&[sample_batch(0, 100, 4)]),
    )
    .unwrap();
    for i in 0..3 {
        std::fs::write(
            d.join(format!("parts/part-{i}.parquet")),
            parquet_bytes(&[sample_batch(i * 10, 10, 4)]),
        )
        .unwrap();
    }
    let mut csv = String::from("id,title,score\n");
    let mut json = String::new();
    for i in 0..10 {
        csv.push_str(&format!("{i},paper {i},{}\n", i as f64 / 10.0));
        json.push_str(&format!("{{\"id\":{i},\"title\":\"paper {i}\"}}\n"));
    }
    std::fs::write(d.join("papers.csv"), csv).unwrap();
    std::fs::write(d.join("papers.json"), json).unwrap();
    dir
}

#[tokio::test]
async fn a_single_file_source_is_queried_as_source_public_file_stem() {
    let data = fixture();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    let url = StorageUrl::parse(data.path().join("data/papers.parquet").to_str().unwrap()).unwrap();
    s.add_source(
        "papers",
        SourceType::File,
        conn(&url.to_string(), Some(FileFormat::Parquet)),
    )
    .await
    .unwrap();
    let r = s
        .sql("SELECT count(*) AS n, max(id) AS m FROM papers.public.papers WHERE score >= 0.5")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!((int(&r, 0), int(&r, 1)), (50, 99));
}

#[tokio::test]
async fn a_directory_source_is_queried_under_the_source_name_and_formats_are_inferred() {
    let data = fixture();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    // No trailing slash and no format: the prefix and the format are found by probing.
    s.add_source(
        "parts",
        SourceType::File,
        conn(data.path().join("parts").to_str().unwrap(), None),
    )
    .await
    .unwrap();
    let r = s
        .sql("SELECT count(*), sum(id) FROM parts.public.parts")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!((int(&r, 0), int(&r, 1)), (30, (0..30).sum::<i64>()));

    s.add_source(
        "csvs",
        SourceType::File,
        conn(data.path().join("papers.csv").to_str().unwrap(), None),
    )
    .await
    .unwrap();
    s.add_source(
        "jsons",
        SourceType::File,
        conn(
            data.path().join("papers.json").to_str().unwrap(),
            Some(FileFormat::Json),
        ),
    )
    .await
    .unwrap();
    let r = s
        .sql("SELECT count(*) FROM csvs.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int(&r, 0), 10);
    let r = s
        .sql("SELECT count(*) FROM jsons.public.papers j JOIN csvs.public.papers c ON j.id = c.id")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int(&r, 0), 10);
}

#[tokio::test]
async fn bad_sources_fail_at_add_time_naming_the_url() {
    let data = fixture();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    let missing = data.path().join("nope.parquet");
    let e = s
        .add_source(
            "a",
            SourceType::File,
            conn(missing.to_str().unwrap(), Some(FileFormat::Parquet)),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.parquet"), "{e}");
    assert!(e.is_not_found());

    let empty = data.path().join("empty");
    let e = s
        .add_source(
            "b",
            SourceType::File,
            conn(empty.to_str().unwrap(), Some(FileFormat::Parquet)),
        )
        .await
        .unwrap_err();
    assert!(e.to_string().contains("empty"), "{e}");

    let e = s
        .add_source(
            "c",
            SourceType::File,
            conn(
                data.path().join("papers.csv").to_str().unwrap(),
                Some(FileFormat::Parquet),
            ),
        )
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("papers.csv"),
        "wrong format names the URL: {e}"
    );

    let e = s
        .add_source("d", SourceType::File, conn("ftp://x/y", None))
        .await
        .unwrap_err();
    assert!(matches!(e, JammiError::InvalidUrl { .. }), "{e}");

    let e = s
        .add_source("Bad-Name", SourceType::File, conn("/tmp", None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("Bad-Name"), "{e}");

    // Nothing of the failed adds was persisted.
    assert!(s.list_sources().await.unwrap().is_empty());
}

#[tokio::test]
async fn duplicate_source_names_are_refused() {
    let data = fixture();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    let c = conn(data.path().join("papers.csv").to_str().unwrap(), None);
    s.add_source("dup", SourceType::File, c.clone())
        .await
        .unwrap();
    let e = s.add_source("dup", SourceType::File, c).await.unwrap_err();
    assert!(matches!(e, JammiError::AlreadyExists { .. }), "{e}");
}

#[tokio::test]
async fn sources_survive_a_reopen_and_are_shared_by_sessions_on_one_root() {
    let data = fixture();
    let root = tempdir();
    let r = root.path().to_str().unwrap().to_string();
    {
        let s = JammiSession::open(&r).await.unwrap();
        s.add_source(
            "papers",
            SourceType::File,
            conn(
                data.path().join("data/papers.parquet").to_str().unwrap(),
                None,
            ),
        )
        .await
        .unwrap();
    }
    let a = JammiSession::open(&r).await.unwrap();
    let n = a
        .sql("SELECT count(*) FROM papers.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int(&n, 0), 100);
    let b = JammiSession::open(&r).await.unwrap();
    b.add_source(
        "csvs",
        SourceType::File,
        conn(data.path().join("papers.csv").to_str().unwrap(), None),
    )
    .await
    .unwrap();
    a.refresh().await.unwrap();
    let n = a
        .sql("SELECT count(*) FROM csvs.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int(&n, 0), 10);
    b.remove_source("csvs").await.unwrap();
    a.refresh().await.unwrap();
    assert!(
        a.sql("SELECT count(*) FROM csvs.public.papers")
            .await
            .is_err()
    );
}

#[tokio::test]
async fn concurrent_writers_never_lose_a_catalog_entry() {
    let root = tempdir();
    let r = StorageUrl::parse(root.path().to_str().unwrap()).unwrap();
    let a = Catalog::new(r.clone(), StorageRegistry::new(), None);
    let b = Catalog::new(r.clone(), StorageRegistry::new(), None);
    let c = conn("/tmp/x.parquet", None);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let cat = if i % 2 == 0 { a.clone() } else { b.clone() };
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            cat.put_source(&format!("s{i}"), SourceType::File, "t", &c, None)
                .await
        }));
    }
    // Both writers also race on one name: exactly one wins.
    let (x, y) = tokio::join!(
        a.put_source("same", SourceType::File, "t", &c, None),
        b.put_source("same", SourceType::File, "t", &c, None)
    );
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one create wins: {x:?} {y:?}"
    );
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let names: HashSet<String> = a
        .sources()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names.len(), 41);
}

#[tokio::test]
async fn secrets_are_never_written_to_the_catalog() {
    let root = tempdir();
    let r = StorageUrl::parse(root.path().to_str().unwrap()).unwrap();
    let cat = Catalog::new(r, StorageRegistry::new(), None);
    let secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY";
    let token = "FwoGZXIvYXdzSESSIONTOKEN";
    let c = SourceConnection {
        url: Some("s3://bkt/papers.parquet".into()),
        format: Some(FileFormat::Parquet),
        cloud: Some(CloudConfig::S3(S3Config {
            region: Some("us-east-1".into()),
            access_key_id: Some("AKIAEXAMPLEKEYID".into()),
            secret_access_key: Some(secret.into()),
            session_token: Some(token.into()),
            ..Default::default()
        })),
        ..Default::default()
    };
    let entry = cat
        .put_source("papers", SourceType::File, "papers", &c, None)
        .await
        .unwrap();
    assert!(entry.credentials_withheld);
    let stored = std::fs::read_to_string(root.path().join("_jammi/sources/papers.json")).unwrap();
    for s in [secret, token, "AKIAEXAMPLEKEYID"] {
        assert!(!stored.contains(s), "catalog file holds a secret: {stored}");
    }
    assert!(
        stored.contains("us-east-1"),
        "non-secret settings are kept: {stored}"
    );
    let back = cat.source("papers").await.unwrap().unwrap();
    assert!(!back.connection.cloud.unwrap().has_secrets());
    // Debug of a connection holding secrets is redacted too.
    let dbg = format!("{c:?}");
    assert!(!dbg.contains(secret) && !dbg.contains(token), "{dbg}");
}

#[tokio::test]
async fn information_schema_lists_sources_and_their_tables() {
    let data = fixture();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    s.add_source(
        "papers",
        SourceType::File,
        conn(
            data.path().join("data/papers.parquet").to_str().unwrap(),
            None,
        ),
    )
    .await
    .unwrap();
    let r = s
        .sql("SELECT table_catalog, table_schema, table_name FROM information_schema.tables WHERE table_catalog = 'papers' AND table_schema = 'public'")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let txt = datafusion::arrow::util::pretty::pretty_format_batches(&r)
        .unwrap()
        .to_string();
    assert!(txt.contains("papers") && txt.contains("public"), "{txt}");
    assert_eq!(r.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    let _ = r[0].column(0).len();
}

#[test]
fn public_futures_are_send_so_they_can_be_spawned() {
    fn is_send<T: Send>(_: &T) {}
    let registry = StorageRegistry::new();
    let url = StorageUrl::parse("memory:///x").unwrap();
    let open = JammiSession::open("memory:///send-check");
    is_send(&open);
    let store = registry.store(&url, None);
    is_send(&store);
    let catalog = Catalog::new(url.clone(), registry.clone(), None);
    let rs =
        jammi_db::store::ResultStore::with_root(url.clone(), registry.clone(), catalog).unwrap();
    let spec = jammi_db::store::TableSpec::default();
    let write = rs.write_batches(&spec, crate::common::sample_schema(4), vec![]);
    is_send(&write);
    let recover = rs.recover();
    is_send(&recover);
    // Checked at compile time only: session methods applications spawn.
    let _ = |s: &JammiSession| {
        is_send(&s.sql("SELECT 1"));
        is_send(&s.delete_table("t"));
        is_send(&s.recover());
        is_send(&s.search("t", &[0.0], 1, Default::default()));
        is_send(&s.add_source("p", SourceType::File, SourceConnection::default()));
    };
}

/// A session on `root` with the fixture's `papers` file registered as source `papers`.
async fn with_papers_source(root: &std::path::Path, fixture: &std::path::Path) -> JammiSession {
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let papers = fixture.join("data/papers.parquet");
    s.add_source(
        "papers",
        SourceType::File,
        conn(papers.to_str().unwrap(), None),
    )
    .await
    .unwrap();
    s
}

fn pretty(batches: &[RecordBatch]) -> String {
    datafusion::arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_whose_file_is_gone_still_lists_and_fails_only_when_queried() {
    let dir = fixture();
    let d = dir.path();
    let root = d.join("db");
    {
        let s = with_papers_source(&root, d).await;
        let parts = format!("{}/", d.join("parts").display());
        s.add_source("parts", SourceType::File, conn(&parts, None))
            .await
            .unwrap();
    }
    std::fs::remove_file(d.join("data/papers.parquet")).unwrap();
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let run = |sql: &'static str| {
        let s = &s;
        async move { s.sql(sql).await.unwrap().collect().await.unwrap() }
    };
    let tables = pretty(&run("SHOW TABLES").await);
    assert!(
        tables.contains("papers") && tables.contains("parts"),
        "{tables}"
    );
    let columns = pretty(
        &run("SELECT table_catalog, column_name FROM information_schema.columns WHERE table_catalog = 'papers'")
            .await,
    );
    assert!(
        columns.contains("embedding") && columns.contains("title"),
        "{columns}"
    );
    // The other source still answers.
    assert_eq!(
        int(&run("SELECT count(*) FROM parts.public.parts").await, 0),
        30
    );
    // The broken one fails when queried, naming itself and what is wrong.
    let e = s
        .sql("SELECT id FROM papers.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("source papers.public.papers") && e.contains("papers.parquet"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreadable_catalog_document_is_skipped_and_the_rest_opens() {
    let dir = fixture();
    let d = dir.path();
    let root = d.join("db");
    with_papers_source(&root, d).await;
    std::fs::write(root.join("_jammi/sources/broken.json"), b"{ not json").unwrap();
    std::fs::write(root.join("_jammi/sources/other.json"), br#"{"name": 3}"#).unwrap();
    let s = JammiSession::open(root.to_str().unwrap()).await.unwrap();
    let names: Vec<String> = s
        .list_sources()
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert_eq!(names, ["papers"]);
    let n = s
        .sql("SELECT count(*) FROM papers.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(int(&n, 0), 100);
    // The documents are left as they are: reported, never removed.
    assert!(root.join("_jammi/sources/broken.json").exists());
}

/// Checks that `s` answers [`AGGREGATE`] over source `docs` and table `t` — and its
/// count and maximum alone, which come from the files' statistics — as a fresh DataFusion
/// context (no cache of any earlier query) reads the Parquet files under `base` from
/// `store`. Returns that answer.
async fn assert_as_fresh(
    s: &JammiSession,
    store: &Arc<dyn ObjectStore>,
    base: &str,
    step: &str,
) -> (i64, i64, f64) {
    let ctx = datafusion::prelude::SessionContext::new();
    ctx.register_object_store(&url::Url::parse(base).unwrap(), store.clone());
    ctx.register_parquet("t", base, Default::default())
        .await
        .unwrap();
    let expected = answer(&ctx.sql(AGGREGATE).await.unwrap().collect().await.unwrap());
    for sql in [
        AGGREGATE.replace(" t", " docs.public.docs"),
        AGGREGATE.to_string(),
    ] {
        let got = answer(&s.sql(&sql).await.unwrap().collect().await.unwrap());
        assert_eq!(got, expected, "{step}: {sql}");
        let stats_only = sql.replace(", sum(score * 10)", "");
        let r = s.sql(&stats_only).await.unwrap().collect().await.unwrap();
        assert_eq!(
            (int(&r, 0), int(&r, 1)),
            (expected.0, expected.1),
            "{step}: {stats_only}"
        );
    }
    expected
}

const AGGREGATE: &str = "SELECT count(*), max(id), sum(score * 10) FROM t";

fn answer(r: &[RecordBatch]) -> (i64, i64, f64) {
    let f = r[0]
        .column(2)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float64Array>()
        .unwrap()
        .value(0);
    (int(r, 0), int(r, 1), f)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_query_sees_a_sources_files_as_they_are_when_it_starts() {
    let data = tempdir();
    let dir = data.path().join("docs");
    let base = format!("file://{}/", dir.display());
    let (s, store, _root) = sources_see_their_files_on(&base, None).await;
    // Same size, its modification time put back (`cp -p`, `rsync -t`): other rows.
    let a = dir.join("a.parquet");
    let (len, mtime) = {
        let md = std::fs::metadata(&a).unwrap();
        (md.len(), md.modified().unwrap())
    };
    let rewritten = parquet_bytes(&[sample_batch(9000, 100, 4)]);
    assert_eq!(rewritten.len() as u64, len, "the rewrite keeps the size");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
        f.write_all(&rewritten).unwrap();
        f.set_modified(mtime).unwrap();
    }
    let step = "rewritten in place, same size and time";
    assert_eq!(assert_as_fresh(&s, &store, &base, step).await.1, 9099);
}

/// A directory source and an external table over `base` (a prefix, on any backend; `cloud`:
/// its settings on a live lane) see files added, removed and rewritten — larger, and of the
/// same size — in one session, as a fresh DataFusion context reads them. Returns the
/// session, the store and the session's root, for further steps.
pub(crate) async fn sources_see_their_files_on(
    base: &str,
    cloud: Option<CloudConfig>,
) -> (JammiSession, Arc<dyn ObjectStore>, tempfile::TempDir) {
    use object_store::ObjectStoreExt;
    let registry = StorageRegistry::new();
    let baseu = StorageUrl::parse(base).unwrap();
    let store = registry.store(&baseu, cloud.as_ref()).await.unwrap();
    let path = |name: &str| baseu.join(name).unwrap().object_path().unwrap();
    let put = |name: &'static str, start: i64, n: usize| {
        let (store, p) = (store.clone(), path(name));
        async move {
            let bytes = parquet_bytes(&[sample_batch(start, n, 4)]);
            store.put(&p, bytes.into()).await.unwrap();
        }
    };
    put("a.parquet", 0, 10).await;
    let root = tempdir();
    let s = JammiSession::open_with(
        root.path().to_str().unwrap(),
        jammi_db::session::OpenOptions {
            registry: Some(registry.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    s.add_source(
        "docs",
        SourceType::File,
        SourceConnection {
            cloud: cloud.clone(),
            ..conn(base, Some(FileFormat::Parquet))
        },
    )
    .await
    .unwrap();
    let options = match &cloud {
        Some(c) => format!(" OPTIONS ({})", crate::common::live_options(c)),
        None => String::new(),
    };
    s.sql(&format!(
        "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '{base}'{options}"
    ))
    .await
    .unwrap();
    let check = |step: &'static str| assert_as_fresh(&s, &store, base, step);
    assert_eq!(check("first").await.0, 10);
    put("b.parquet", 100, 15).await;
    assert_eq!(check("a file added").await.0, 25);
    put("a.parquet", 1000, 100).await;
    assert_eq!(check("a file rewritten larger").await.1, 1099);
    store.delete(&path("b.parquet")).await.unwrap();
    assert_eq!(check("a file removed").await.0, 100);
    // Same size, at once (within the store's time resolution): other rows.
    put("a.parquet", 5000, 100).await;
    assert_eq!(check("rewritten, same size").await.1, 5099);
    (s, store, root)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_memory_source_sees_its_files_as_they_are_when_each_query_starts() {
    sources_see_their_files_on(
        &format!("{}docs/", crate::common::memory_root("changing")),
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_directory_with_sidecars_in_it_is_still_a_source_of_its_data_files() {
    use object_store::ObjectStoreExt;
    // A memory store lists in name order: `a.idx.*` comes before `a.parquet`.
    let base = format!("{}d/", crate::common::memory_root("sidecars-in-dir"));
    let registry = StorageRegistry::new();
    let baseu = StorageUrl::parse(&base).unwrap();
    let store = registry.store(&baseu, None).await.unwrap();
    for (name, start) in [("a.parquet", 0), ("b.parquet", 100)] {
        let bytes = parquet_bytes(&[sample_batch(start, 10, 4)]);
        let p = baseu.join(name).unwrap().object_path().unwrap();
        store.put(&p, bytes.into()).await.unwrap();
    }
    let root = tempdir();
    let s = JammiSession::open_with(
        root.path().to_str().unwrap(),
        jammi_db::session::OpenOptions {
            registry: Some(registry.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Index one file: its sidecars now sit in the directory, listed first.
    s.sql(&format!(
        "CREATE EXTERNAL TABLE a STORED AS PARQUET LOCATION '{base}a.parquet' \
         OPTIONS ('jammi.vector_column' 'embedding')"
    ))
    .await
    .unwrap();
    let manifest = baseu
        .join("a.idx.manifest.json")
        .unwrap()
        .object_path()
        .unwrap();
    store.head(&manifest).await.unwrap();
    s.add_source("d", SourceType::File, conn(&base, None))
        .await
        .unwrap();
    let r = s
        .sql("SELECT count(*), max(id) FROM d.public.d")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!((int(&r, 0), int(&r, 1)), (20, 109));
}

/// A JSON source (and a plain external table) over a directory where jammi-db indexed a
/// Parquet file reads the data files and never the manifest it wrote there; a user's own
/// JSON files named like a manifest or a lease are data and are read.
#[tokio::test(flavor = "multi_thread")]
async fn a_json_source_never_reads_jammis_manifest_but_reads_user_files_named_like_one() {
    let dir = tempdir();
    let d = dir.path().join("d");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("a.parquet"),
        parquet_bytes(&[sample_batch(0, 10, 4)]),
    )
    .unwrap();
    std::fs::write(d.join("rows.json"), "{\"id\":1}\n{\"id\":2}\n").unwrap();
    std::fs::write(d.join("notes.idx.manifest.json"), "{\"id\":30}\n").unwrap();
    std::fs::write(d.join("log.idx.lease.json"), "{\"id\":400}\n").unwrap();
    let root = tempdir();
    let s = JammiSession::open(root.path().to_str().unwrap())
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE a STORED AS PARQUET LOCATION '{}' \
         OPTIONS ('jammi.vector_column' 'embedding')",
        d.join("a.parquet").display()
    ))
    .await
    .unwrap();
    assert!(d.join("a.idx.manifest.json").exists());
    let base = format!("{}/", d.display());
    s.add_source("d", SourceType::File, conn(&base, Some(FileFormat::Json)))
        .await
        .unwrap();
    s.sql(&format!(
        "CREATE EXTERNAL TABLE j STORED AS JSON LOCATION '{base}'"
    ))
    .await
    .unwrap();
    for table in ["d.public.d", "j"] {
        let r = s
            .sql(&format!("SELECT count(*), sum(id) FROM {table}"))
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!((int(&r, 0), int(&r, 1)), (4, 433), "{table}");
    }
    // The same answer as a plain DataFusion session over the data files alone.
    let plain = datafusion::prelude::SessionContext::new();
    let copy = tempdir();
    for f in ["rows.json", "notes.idx.manifest.json", "log.idx.lease.json"] {
        std::fs::copy(d.join(f), copy.path().join(f)).unwrap();
    }
    plain
        .sql(&format!(
            "CREATE EXTERNAL TABLE j STORED AS JSON LOCATION '{}/'",
            copy.path().display()
        ))
        .await
        .unwrap();
    let r = plain
        .sql("SELECT count(*), sum(id) FROM j")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!((int(&r, 0), int(&r, 1)), (4, 433));
}
