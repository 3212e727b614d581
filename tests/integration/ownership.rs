//! Ownership is proven, never guessed. User files beside jammi-db's, named like them, come
//! through every operation byte for byte; recovery removes only what a lease records and
//! proves; a dry run changes nothing; a fault at any request — before it reaches the store,
//! or after (a lost response) — of a write, of indexing a file, or of recovery itself leaves
//! each table whole or gone.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures::StreamExt;

use datafusion::arrow::record_batch::RecordBatch;
use jammi_db::JammiError;
use jammi_db::catalog::Catalog;
use jammi_db::format::manifest::{FileRole, Manifest};
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};
use jammi_db::store::lease::{LEASE_VERSION, Lease, LeaseState, OwnedObject};
use jammi_db::store::{ResultStore, TableSpec};
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use crate::common::{
    Fault, FaultyStore, assert_user_files_intact, memory_root, object_names, parquet_bytes,
    put_user_files, sample_batch, sample_schema, tempdir,
};

fn spec(name: Option<&str>) -> TableSpec {
    TableSpec {
        source: "papers".into(),
        task: "text_embedding".into(),
        model: "BAAI/bge-m3".into(),
        name: name.map(str::to_string),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    }
}

fn store_at(root: &str, registry: StorageRegistry) -> ResultStore {
    store_on(root, registry, None)
}

fn store_on(root: &str, registry: StorageRegistry, cloud: Option<CloudConfig>) -> ResultStore {
    let url = StorageUrl::parse(root).unwrap();
    let catalog = Catalog::new(url.clone(), registry.clone(), cloud);
    ResultStore::with_root(url, registry, catalog).unwrap()
}

async fn collect(s: &JammiSession, sql: &str) -> Vec<RecordBatch> {
    s.sql(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .collect()
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// Objects a committed table may own: its siblings.
fn sibling_of(object: &str, tables: &[String]) -> bool {
    tables.iter().any(|t| {
        [
            ".parquet",
            ".idx.usearch",
            ".idx.rowmap",
            ".idx.manifest.json",
        ]
        .iter()
        .any(|s| object == format!("{t}{s}"))
    })
}

/// User files named like ours come through opens, reads, refused and accepted writes, a
/// delete and recovery byte for byte (`cloud`: the root's settings on a live lane).
pub(crate) async fn every_operation_keeps_user_files(root: &str, cloud: Option<CloudConfig>) {
    let registry = StorageRegistry::new();
    let options = || OpenOptions {
        registry: Some(registry.clone()),
        cloud: cloud.clone(),
        ..Default::default()
    };
    let s = JammiSession::open_with(root, options()).await.unwrap();
    let rs = s.result_store().clone();
    let store = rs.object_store().await.unwrap();
    let rootu = rs.root().clone();
    let files = put_user_files(&store, &rootu).await;

    // Opening again, listing, reading: nothing changes.
    let s = JammiSession::open_with(root, options()).await.unwrap();
    s.list_sources().await.unwrap();
    let listed = s.list_tables().await.unwrap();
    assert!(listed.is_empty(), "user files are not tables: {listed:?}");
    collect(&s, "SHOW TABLES").await;
    assert_user_files_intact(&store, &rootu, &files, "after open and reads").await;

    // A write under a name a user file already holds is refused; the file is kept.
    for taken in [
        "papers",
        "notes",
        "papers__text_embedding__BAAI_bge-m3__20260101T000000Z_00000000",
    ] {
        let e = rs
            .write_batches(
                &spec(Some(taken)),
                sample_schema(4),
                vec![sample_batch(0, 20, 4)],
            )
            .await
            .unwrap_err();
        assert!(
            matches!(e, JammiError::NotOwned { .. }) && e.to_string().contains(taken),
            "{taken}: {e}"
        );
    }
    let e = s
        .sql("CREATE TABLE jammi.public.my_data AS SELECT 1 AS id")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("my_data.parquet") && e.contains("did not write"),
        "{e}"
    );

    // Writes, a delete and recovery beside them.
    let kept = rs
        .write_batches(&spec(None), sample_schema(4), vec![sample_batch(0, 40, 4)])
        .await
        .unwrap();
    let gone = rs
        .write_batches(
            &spec(Some("scratch")),
            sample_schema(4),
            vec![sample_batch(0, 40, 4)],
        )
        .await
        .unwrap();
    collect(
        &s,
        "CREATE TABLE jammi.public.from_sql AS SELECT id, embedding FROM (VALUES (1, [1.0, 0.0]), (2, [0.0, 1.0])) AS t(id, embedding)",
    )
    .await;
    s.delete_table(&gone.table).await.unwrap();
    let dry = rs.recover_dry_run().await.unwrap();
    assert!(dry.removed_objects.is_empty(), "{dry:?}");
    let report = s.recover().await.unwrap();
    assert!(report.removed_objects.is_empty(), "{report:?}");
    assert_user_files_intact(&store, &rootu, &files, "after writes, delete, recovery").await;

    // Nothing else is left: user files and committed tables' siblings only.
    let tables = rs.list_tables().await.unwrap();
    assert_eq!(tables, {
        let mut t = vec![kept.table.clone(), "from_sql".to_string()];
        t.sort();
        t
    });
    for o in object_names(&store, &rootu).await {
        let user = files.iter().any(|(n, _)| *n == o);
        let catalog_doc = o.starts_with("_jammi/sources/");
        assert!(
            user || catalog_doc || sibling_of(&o, &tables),
            "stray object {o}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn user_files_named_like_ours_survive_every_operation_on_a_local_root() {
    let dir = tempdir();
    every_operation_keeps_user_files(dir.path().to_str().unwrap(), None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn user_files_named_like_ours_survive_every_operation_on_a_memory_root() {
    every_operation_keeps_user_files(&memory_root("ownership"), None).await;
}

/// A lease as another host's process would have left it.
fn lease(stem: &str, state: LeaseState, alive: bool, objects: Vec<OwnedObject>) -> Lease {
    let now = chrono::Utc::now().timestamp_millis();
    Lease {
        version: LEASE_VERSION,
        id: format!("{:032x}", rand_id(stem)),
        stem: stem.to_string(),
        state,
        host: "some-other-host".into(),
        pid: 4242,
        pid_start: None,
        boot_id: None,
        pid_ns: None,
        created_ms: now - 3_600_000,
        expires_ms: if alive {
            now + 3_600_000
        } else {
            now - 3_600_000
        },
        seq: 7,
        planned: objects.iter().map(|o| o.name.clone()).collect(),
        objects,
        manifest: None,
        abandoned: false,
    }
}

/// `l` as left by a process of this host that no longer runs.
fn of_a_dead_local_process(mut l: Lease) -> Lease {
    l.host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    l.pid = 4_194_303; // above any pid this machine hands out
    l.boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_string());
    l.pid_ns = std::fs::read_link("/proc/self/ns/pid")
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    l
}

fn rand_id(stem: &str) -> u128 {
    stem.bytes()
        .fold(17u128, |h, b| h.wrapping_mul(31).wrapping_add(b as u128))
}

fn owned(name: &str, bytes: &[u8]) -> OwnedObject {
    OwnedObject {
        name: name.into(),
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(bytes),
        e_tag: None,
    }
}

/// Writes `lease` where its holder would have: `<stem>.idx.lease.json` under `root`.
async fn put_lease(store: &Arc<dyn ObjectStore>, root: &StorageUrl, lease: &Lease) {
    let name = format!("{}.idx.lease.json", lease.stem);
    put(store, root, &name, &serde_json::to_vec(lease).unwrap()).await;
}

/// A committed 12-row table named `name`.
async fn small_table(rs: &ResultStore, name: &str) -> Manifest {
    rs.write_batches(
        &spec(Some(name)),
        sample_schema(4),
        vec![sample_batch(0, 12, 4)],
    )
    .await
    .unwrap()
}

async fn put(store: &Arc<dyn ObjectStore>, root: &StorageUrl, name: &str, bytes: &[u8]) {
    store
        .put(
            &root.join(name).unwrap().object_path().unwrap(),
            PutPayload::from(bytes.to_vec()),
        )
        .await
        .unwrap();
}

async fn snapshot(store: &Arc<dyn ObjectStore>, root: &StorageUrl) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for name in object_names(store, root).await {
        let bytes = store
            .get(&root.join(&name).unwrap().object_path().unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        out.push((name, bytes.to_vec()));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_removes_only_what_a_dead_lease_records_and_a_dry_run_changes_nothing() {
    let root = memory_root("recovery");
    let rs = store_at(&root, StorageRegistry::new());
    let store = rs.object_store().await.unwrap();
    let r = rs.root().clone();
    let files = put_user_files(&store, &r).await;

    // A dead write: it recorded its Parquet file; its index was replaced by another program.
    let parquet = parquet_bytes(&[sample_batch(0, 9, 4)]);
    put(&store, &r, "dead.parquet", &parquet).await;
    put(&store, &r, "dead.idx.usearch", b"someone else's bytes").await;
    let dead = lease(
        "dead",
        LeaseState::Writing,
        false,
        vec![
            owned("dead.parquet", &parquet),
            owned("dead.idx.usearch", b"what the writer wrote"),
        ],
    );
    put_lease(&store, &r, &dead).await;
    // A live write on another host: untouched.
    let live_bytes = b"half-written".to_vec();
    put(&store, &r, "live.parquet", &live_bytes).await;
    let live = lease(
        "live",
        LeaseState::Writing,
        true,
        vec![owned("live.parquet", &live_bytes)],
    );
    put_lease(&store, &r, &live).await;
    // A dead writer that had reached its commit point: its table is published.
    let model = small_table(&rs, "model").await;
    let done = commit_point_of(&store, &r, &model, "late").await;
    put_lease(&store, &r, &done).await;
    // A dead writer of an older version: its lease goes, its file stays (nothing proves it).
    put(&store, &r, "old.parquet", b"old partial").await;
    put(
        &store,
        &r,
        "_jammi/leases/old.json",
        br#"{"id":"1","table":"old","host":"some-other-host","pid":1,"expires_ms":0}"#,
    )
    .await;

    let before = snapshot(&store, &r).await;
    let dry = rs.recover_dry_run().await.unwrap();
    assert_eq!(
        snapshot(&store, &r).await,
        before,
        "a dry run changes nothing"
    );
    assert_eq!(dry.reclaimed_tables, vec!["dead".to_string()]);
    assert_eq!(dry.completed_commits, vec!["late".to_string()]);

    let report = rs.recover().await.unwrap();
    assert_eq!(report.reclaimed_tables, vec!["dead".to_string()]);
    assert_eq!(report.completed_commits, vec!["late".to_string()]);
    assert!(
        report.live_writes.contains(&"live".to_string()),
        "{report:?}"
    );
    let names = object_names(&store, &r).await;
    assert!(!names.contains(&"dead.parquet".to_string()), "{names:?}");
    assert!(!names.contains(&"dead.idx.lease.json".to_string()));
    assert!(
        names.contains(&"dead.idx.usearch".to_string()),
        "replaced object kept"
    );
    assert!(
        report
            .kept_objects
            .iter()
            .any(|k| k.ends_with("dead.idx.usearch"))
    );
    assert!(
        names.contains(&"live.parquet".to_string())
            && names.contains(&"live.idx.lease.json".to_string())
    );
    assert!(names.contains(&"old.parquet".to_string()));
    assert!(!names.contains(&"_jammi/leases/old.json".to_string()));
    rs.verify("late").await.unwrap();
    assert_user_files_intact(&store, &r, &files, "after recovery").await;
}

/// The lease a writer of table `stem` leaves at its commit point: objects copied from
/// `model`'s, manifest staged.
async fn commit_point_of(
    store: &Arc<dyn ObjectStore>,
    r: &StorageUrl,
    model: &Manifest,
    stem: &str,
) -> Lease {
    let mut manifest = model.clone();
    manifest.table = stem.to_string();
    let mut objects = Vec::new();
    for f in manifest.files.iter_mut() {
        let bytes = store
            .get(&r.join(&f.name).unwrap().object_path().unwrap())
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let suffix = f.name.strip_prefix(&model.table).unwrap().to_string();
        f.name = format!("{stem}{suffix}");
        f.e_tag = None;
        put(store, r, &f.name, &bytes).await;
        objects.push(owned(&f.name, &bytes));
    }
    let mut l = lease(stem, LeaseState::Committing, false, objects);
    manifest.writer = Some(l.id.clone());
    l.manifest = Some(Box::new(manifest));
    l
}

/// Runs `op` with a fault at request `n` (of `fault` kind), until a run makes fewer than
/// `n` requests. `check` sees each run's outcome and the faulted request.
async fn at_every_request<F, Fut>(fault: Fault, mut op: F) -> usize
where
    F: FnMut(StorageRegistry, Arc<AtomicBool>, usize, Arc<std::sync::Mutex<Option<String>>>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut n = 1;
    loop {
        let count = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let faulted: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let (c, a, f) = (count.clone(), armed.clone(), faulted.clone());
        let registry = StorageRegistry::with_layer(Arc::new(move |inner| {
            let mut s = FaultyStore::new(inner, c.clone(), n, a.clone(), fault);
            s.faulted = f.clone();
            Arc::new(s) as Arc<dyn ObjectStore>
        }));
        let more = op(registry, armed, n, faulted).await;
        if !more || count.load(Ordering::SeqCst) < n {
            return n;
        }
        n += 1;
        assert!(n < 400, "the operation makes more requests than expected");
    }
}

/// After a faulty run and a clean recovery pass: the table is whole or gone, the earlier
/// table verifies, every object belongs to a committed table or is a user file.
async fn assert_whole_or_gone(
    rs: &ResultStore,
    earlier: &str,
    files: &[(String, Vec<u8>)],
    outcome: &str,
) -> Vec<String> {
    assert_whole_or_gone_with(rs, earlier, files, &[], outcome).await
}

/// [`assert_whole_or_gone`], also accepting the sidecars of indexed files `stems` when
/// their manifest is there.
async fn assert_whole_or_gone_with(
    rs: &ResultStore,
    earlier: &str,
    files: &[(String, Vec<u8>)],
    stems: &[&str],
    outcome: &str,
) -> Vec<String> {
    let report = rs
        .recover()
        .await
        .unwrap_or_else(|e| panic!("{outcome}: recovery: {e}"));
    assert!(report.broken_tables.is_empty(), "{outcome}: {report:?}");
    rs.verify(earlier)
        .await
        .unwrap_or_else(|e| panic!("{outcome}: earlier table damaged: {e}"));
    let tables = rs.list_tables().await.unwrap();
    for t in &tables {
        rs.verify(t)
            .await
            .unwrap_or_else(|e| panic!("{outcome}: {t} does not verify: {e}"));
    }
    let store = rs.object_store().await.unwrap();
    let names = object_names(&store, rs.root()).await;
    for o in &names {
        let user = files.iter().any(|(n, _)| n == o);
        let sidecar = stems.iter().any(|s| {
            let manifest = format!("{s}.idx.manifest.json");
            o.starts_with(&format!("{s}.idx."))
                && !o.ends_with(".idx.lease.json")
                && names.contains(&manifest)
        });
        assert!(
            user || sidecar || sibling_of(o, &tables),
            "{outcome}: orphan {o}"
        );
    }
    assert_user_files_intact(&store, rs.root(), files, outcome).await;
    tables
}

/// A fault at every request of a write; `lane` puts the root on a live server (a base URL
/// and its settings) instead of `memory://`.
pub(crate) async fn faults_during_a_write(fault: Fault, lane: Option<(String, CloudConfig)>) {
    let outcomes = Arc::new(std::sync::Mutex::new((0, 0)));
    let n = at_every_request(fault, |registry, armed, n, faulted| {
        let outcomes = outcomes.clone();
        let lane = lane.clone();
        async move {
            let (root, cloud) = match lane {
                Some((base, cloud)) => (format!("{base}write-faults-{fault:?}-{n}/"), Some(cloud)),
                None => (memory_root("write-faults"), None),
            };
            let rs = store_on(&root, registry, cloud);
            let store = rs.object_store().await.unwrap();
            let files = put_user_files(&store, rs.root()).await;
            let earlier = rs
                .write_batches(&spec(None), sample_schema(8), vec![sample_batch(0, 50, 8)])
                .await
                .unwrap();
            armed.store(true, Ordering::SeqCst);
            // Large enough for multipart uploads of the Parquet file and the index.
            let batches: Vec<_> = (0..4).map(|i| sample_batch(i * 6000, 6000, 64)).collect();
            let result = rs
                .write_batches(&spec(None), sample_schema(64), batches)
                .await;
            armed.store(false, Ordering::SeqCst);
            let what = faulted.lock().unwrap().clone().unwrap_or_default();
            let outcome = format!("{fault:?} fault at request {n} ({what}): {result:?}");
            let tables = assert_whole_or_gone(&rs, &earlier.table, &files, &outcome).await;
            let new: Vec<_> = tables.iter().filter(|t| **t != earlier.table).collect();
            match (&result, new.as_slice()) {
                (Ok(m), [t]) => {
                    assert_eq!(&m.table, *t, "{outcome}");
                    outcomes.lock().unwrap().0 += 1;
                }
                (Err(_), []) => outcomes.lock().unwrap().1 += 1,
                other => panic!("{outcome}: {other:?}"),
            }
            // The commit is decided by the manifest: a lost response to its PUT commits.
            if fault == Fault::After
                && what.starts_with("put_create")
                && what.ends_with(".idx.manifest.json")
            {
                assert!(result.is_ok(), "{outcome}");
            }
            // A failed check before the write aborts it.
            if fault == Fault::Before && what.starts_with("head") && !what.contains("lease") {
                assert!(result.is_err(), "{outcome}");
            }
            true
        }
    })
    .await;
    assert!(n > 15, "the write was exercised at {n} requests");
    let (ok, failed) = *outcomes.lock().unwrap();
    assert!(ok >= 1 && failed >= 1, "{ok} committed, {failed} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_before_any_request_of_a_write_leaves_the_table_whole_or_gone() {
    faults_during_a_write(Fault::Before, None).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_response_at_any_request_of_a_write_leaves_the_table_whole_or_gone() {
    faults_during_a_write(Fault::After, None).await;
}

async fn faults_while_indexing_a_file(fault: Fault) {
    let outcomes = Arc::new(std::sync::Mutex::new((0, 0)));
    at_every_request(fault, |registry, armed, n, faulted| {
        let outcomes = outcomes.clone();
        async move {
            let root = memory_root("index-faults");
            let s = JammiSession::open_with(
                &root,
                OpenOptions {
                    registry: Some(registry),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let rs = s.result_store().clone();
            let store = rs.object_store().await.unwrap();
            let files = put_user_files(&store, rs.root()).await;
            let earlier = rs
                .write_batches(&spec(None), sample_schema(8), vec![sample_batch(0, 30, 8)])
                .await
                .unwrap();
            let batches: Vec<_> = (0..3).map(|i| sample_batch(i * 5000, 5000, 64)).collect();
            put(&store, rs.root(), "vectors.2024.parquet", &parquet_bytes(&batches)).await;
            armed.store(true, Ordering::SeqCst);
            let result = s
                .sql(&format!(
                    "CREATE EXTERNAL TABLE emb STORED AS PARQUET LOCATION '{root}vectors.2024.parquet' \
                     OPTIONS ('jammi.vector_column' 'embedding')"
                ))
                .await;
            armed.store(false, Ordering::SeqCst);
            let what = faulted.lock().unwrap().clone().unwrap_or_default();
            let outcome = format!("{fault:?} fault at request {n} ({what}): {:?}", result.as_ref().err());
            let mut all = files.clone();
            all.push(("vectors.2024.parquet".into(), parquet_bytes(&batches)));
            assert_whole_or_gone_with(&rs, &earlier.table, &all, &["vectors.2024"], &outcome)
                .await;
            let names = object_names(&store, rs.root()).await;
            let sidecars: Vec<_> = names.iter().filter(|o| o.starts_with("vectors.2024.idx.")).collect();
            match &result {
                Ok(_) => {
                    assert_eq!(sidecars.len(), 3, "{outcome}: {sidecars:?}");
                    outcomes.lock().unwrap().0 += 1;
                }
                Err(_) => {
                    // Gone, or committed after all (the manifest is the commit).
                    assert!(sidecars.is_empty() || sidecars.len() == 3, "{outcome}: {sidecars:?}");
                    outcomes.lock().unwrap().1 += 1;
                }
            }
            true
        }
    })
    .await;
    let (ok, failed) = *outcomes.lock().unwrap();
    assert!(ok >= 1 && failed >= 1, "{ok} indexed, {failed} failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_at_any_request_of_indexing_a_file_leaves_its_sidecars_whole_or_gone() {
    faults_while_indexing_a_file(Fault::Before).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lost_response_at_any_request_of_indexing_a_file_leaves_its_sidecars_whole_or_gone() {
    faults_while_indexing_a_file(Fault::After).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fault_at_any_request_of_recovery_is_finished_by_the_next_pass() {
    for fault in [Fault::Before, Fault::After] {
        at_every_request(fault, |registry, armed, n, faulted| async move {
            let root = memory_root("recovery-faults");
            let rs = store_at(&root, registry);
            let store = rs.object_store().await.unwrap();
            let r = rs.root().clone();
            let files = put_user_files(&store, &r).await;
            let earlier = rs
                .write_batches(&spec(None), sample_schema(4), vec![sample_batch(0, 30, 4)])
                .await
                .unwrap();
            // One abandoned write, one dead commit, one dead delete.
            let parquet = parquet_bytes(&[sample_batch(0, 9, 4)]);
            put(&store, &r, "dead.parquet", &parquet).await;
            let dead = lease(
                "dead",
                LeaseState::Writing,
                false,
                vec![owned("dead.parquet", &parquet)],
            );
            put_lease(&store, &r, &dead).await;
            let model = small_table(&rs, "model").await;
            let late = commit_point_of(&store, &r, &model, "late").await;
            put_lease(&store, &r, &late).await;
            let mut del = lease("model", LeaseState::Deleting, false, Vec::new());
            del.objects = model.files.iter().map(OwnedObject::from).collect();
            del.manifest = Some(Box::new(model.clone()));
            put_lease(&store, &r, &del).await;

            armed.store(true, Ordering::SeqCst);
            let first = rs.recover().await;
            armed.store(false, Ordering::SeqCst);
            let what = faulted.lock().unwrap().clone().unwrap_or_default();
            let outcome = format!("{fault:?} fault at request {n} of recovery ({what}): {first:?}");
            let tables = assert_whole_or_gone(&rs, &earlier.table, &files, &outcome).await;
            assert!(
                tables.contains(&"late".to_string()),
                "{outcome}: {tables:?}"
            );
            assert!(
                !tables.contains(&"model".to_string()),
                "{outcome}: {tables:?}"
            );
            let names = object_names(&store, &r).await;
            assert!(
                !names
                    .iter()
                    .any(|o| o.ends_with(".idx.lease.json") && !o.starts_with("x.")),
                "{outcome}: leases left {names:?}"
            );
            true
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_table_keeps_a_file_that_replaced_one_of_its_siblings() {
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let m = rs
        .write_batches(
            &spec(Some("t")),
            sample_schema(4),
            vec![sample_batch(0, 10, 4)],
        )
        .await
        .unwrap();
    // Another program replaced the Parquet file after the commit.
    let theirs = parquet_bytes(&[sample_batch(500, 3, 4)]);
    std::fs::write(dir.path().join("t.parquet"), &theirs).unwrap();
    rs.delete_table_files("t").await.unwrap();
    assert_eq!(std::fs::read(dir.path().join("t.parquet")).unwrap(), theirs);
    for f in m.files.iter().filter(|f| f.role != FileRole::Parquet) {
        assert!(!dir.path().join(&f.name).exists(), "{} removed", f.name);
    }
    assert!(!dir.path().join("t.idx.manifest.json").exists());
    assert!(!dir.path().join("t.idx.lease.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_write_longer_than_the_lease_ttl_commits() {
    let dir = tempdir();
    let ttl = jammi_db::store::lease::MIN_TTL;
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new())
        .with_lease_ttl(ttl)
        .unwrap();
    // Batches trickle in for longer than the TTL: local leases are judged by process.
    let batches = futures::stream::iter(0..6).then(move |i| async move {
        tokio::time::sleep(ttl / 5).await;
        Ok(sample_batch(i * 10, 10, 4))
    });
    let m = rs
        .write_table(&spec(Some("slow")), sample_schema(4), Box::pin(batches))
        .await
        .unwrap();
    assert_eq!(m.rows, 60);
    rs.verify("slow").await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_lease_is_settled_while_its_process_still_runs() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let rs = store_at(root, StorageRegistry::new());
    let store = rs.object_store().await.unwrap();
    let r = rs.root().clone();
    let bytes = parquet_bytes(&[sample_batch(0, 5, 4)]);
    put(&store, &r, "left.parquet", &bytes).await;
    put(&store, &r, "kept.parquet", &bytes).await;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string();
    // Unexpired leases of a running process (init): live unless marked abandoned.
    for (stem, abandoned) in [("left", true), ("kept", false)] {
        let mut l = lease(
            stem,
            LeaseState::Writing,
            true,
            vec![owned(&format!("{stem}.parquet"), &bytes)],
        );
        l.host = host.clone();
        l.pid = 1;
        l.abandoned = abandoned;
        put_lease(&store, &r, &l).await;
    }
    let report = rs.recover().await.unwrap();
    assert_eq!(
        report.reclaimed_tables,
        vec!["left".to_string()],
        "{report:?}"
    );
    assert_eq!(report.live_writes, vec!["kept".to_string()], "{report:?}");
    assert!(!dir.path().join("left.parquet").exists());
    assert!(dir.path().join("kept.parquet").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn two_passes_settle_one_dead_local_lease_once() {
    for _ in 0..10 {
        let dir = tempdir();
        let root = dir.path().to_str().unwrap().to_string();
        let rs = store_at(&root, StorageRegistry::new());
        let store = rs.object_store().await.unwrap();
        let r = rs.root().clone();
        let bytes = parquet_bytes(&[sample_batch(0, 5, 4)]);
        put(&store, &r, "dead.parquet", &bytes).await;
        let mut l = lease(
            "dead",
            LeaseState::Writing,
            false,
            vec![owned("dead.parquet", &bytes)],
        );
        l.host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .unwrap()
            .trim()
            .to_string();
        l.pid = 4_194_303; // no such process
        put_lease(&store, &r, &l).await;
        let passes: Vec<_> = (0..2)
            .map(|_| {
                let root = root.clone();
                tokio::spawn(async move { store_at(&root, StorageRegistry::new()).recover().await })
            })
            .collect();
        let mut reclaimed = 0;
        for p in passes {
            reclaimed += p.await.unwrap().unwrap().reclaimed_tables.len();
        }
        assert_eq!(reclaimed, 1, "one pass settled it");
        let left = object_names(&store, &r).await;
        assert!(!left.iter().any(|o| o.starts_with("dead.")), "{left:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_committing_lease_of_a_published_table_leaves_the_table_alone() {
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let store = rs.object_store().await.unwrap();
    let r = rs.root().clone();
    let m = small_table(&rs, "t").await;
    // The commit's lease was never removed, and a sibling changed since.
    let mut l = of_a_dead_local_process(lease(
        "t",
        LeaseState::Committing,
        false,
        m.files.iter().map(OwnedObject::from).collect(),
    ));
    l.manifest = Some(Box::new(m.clone()));
    put_lease(&store, &r, &l).await;
    let rowmap = dir.path().join("t.idx.rowmap");
    let mut bytes = std::fs::read(&rowmap).unwrap();
    bytes[0] ^= 1;
    std::fs::write(&rowmap, &bytes).unwrap();
    let report = rs.recover().await.unwrap();
    assert_eq!(
        report.completed_commits,
        vec!["t".to_string()],
        "{report:?}"
    );
    for f in &m.files {
        assert!(dir.path().join(&f.name).exists(), "{} kept", f.name);
    }
    assert!(dir.path().join("t.idx.manifest.json").exists());
    assert!(!dir.path().join("t.idx.lease.json").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn indexing_a_file_whose_sidecar_names_another_files_manifest_fails_naming_it() {
    let dir = tempdir();
    let s = JammiSession::open(dir.path().join("db").to_str().unwrap())
        .await
        .unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let bytes = parquet_bytes(&[sample_batch(0, 50, 4)]);
    std::fs::write(data.join("other.parquet"), &bytes).unwrap();
    std::fs::write(data.join("emb.pq"), &bytes).unwrap();
    let index = |f: &str| {
        format!(
            "CREATE EXTERNAL TABLE t_{} STORED AS PARQUET LOCATION '{}' OPTIONS ('jammi.vector_column' 'embedding')",
            f.replace('.', "_"),
            data.join(f).display()
        )
    };
    collect(&s, &index("other.parquet")).await;
    // `emb.pq`'s sidecar name holds the manifest of `other.parquet`.
    std::fs::copy(
        data.join("other.idx.manifest.json"),
        data.join("emb.idx.manifest.json"),
    )
    .unwrap();
    let e = tokio::time::timeout(std::time::Duration::from_secs(30), s.sql(&index("emb.pq")))
        .await
        .expect("no endless retry")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("emb.idx.manifest.json") && e.contains("another file"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_removes_a_dead_holders_interrupted_lease_rewrites_and_nothing_like_them() {
    let dir = tempdir();
    let rs = store_at(dir.path().to_str().unwrap(), StorageRegistry::new());
    let d = dir.path();
    let dead = of_a_dead_local_process(lease("dead", LeaseState::Writing, false, vec![]));
    std::fs::write(
        d.join("dead.idx.lease.json"),
        serde_json::to_vec(&dead).unwrap(),
    )
    .unwrap();
    // The holder was killed while rewriting its lease: the local store's staging copy.
    let mut rewrite = dead.clone();
    rewrite.seq += 1;
    let staged = d.join("dead.idx.lease.json#2");
    std::fs::write(&staged, serde_json::to_vec(&rewrite).unwrap()).unwrap();
    // Named like it, and not the holder's: older than its lease, not a staging suffix, or
    // the staging name of a lease that does not exist.
    let older = d.join("dead.idx.lease.json#3");
    std::fs::write(&older, b"user bytes").unwrap();
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options()
        .write(true)
        .open(&older)
        .unwrap()
        .set_modified(two_hours_ago)
        .unwrap();
    let others = ["dead.idx.lease.json#x1", "other.idx.lease.json#1"];
    for n in others {
        std::fs::write(d.join(n), b"user bytes").unwrap();
    }

    let report = rs.recover().await.unwrap();
    assert_eq!(report.reclaimed_tables, vec!["dead".to_string()]);
    assert!(!staged.exists(), "the holder's staged rewrite is removed");
    assert!(!d.join("dead.idx.lease.json").exists());
    assert_eq!(std::fs::read(&older).unwrap(), b"user bytes");
    for n in others {
        assert_eq!(std::fs::read(d.join(n)).unwrap(), b"user bytes", "{n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_copy_of_a_table_leaves_the_original_byte_identical_and_readable() {
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let rs = store_at(root, StorageRegistry::new());
    let m = small_table(&rs, "emb").await;
    // A backup made by hand: the four files copied under new names.
    for suffix in [
        ".parquet",
        ".idx.usearch",
        ".idx.rowmap",
        ".idx.manifest.json",
    ] {
        std::fs::copy(
            dir.path().join(format!("emb{suffix}")),
            dir.path().join(format!("copy{suffix}")),
        )
        .unwrap();
    }
    let store = rs.object_store().await.unwrap();
    let before = snapshot(&store, rs.root()).await;
    let e = rs.delete_table_files("copy").await.unwrap_err();
    assert!(
        matches!(e, JammiError::Corrupt { .. }) && e.to_string().contains("'emb'"),
        "{e}"
    );
    assert_eq!(snapshot(&store, rs.root()).await, before, "nothing removed");
    assert_eq!(rs.verify("emb").await.unwrap(), m);
    let s = JammiSession::open(root).await.unwrap();
    let rows = collect(&s, "SELECT count(*) AS n FROM jammi.public.emb").await;
    assert_eq!(
        datafusion::arrow::util::pretty::pretty_format_batches(&rows)
            .unwrap()
            .to_string()
            .lines()
            .nth(3),
        Some("| 12 |")
    );
    // Recovery reports the copy as damaged and leaves it alone too.
    let report = rs.recover().await.unwrap();
    assert!(report.removed_objects.is_empty(), "{report:?}");
    assert_eq!(snapshot(&store, rs.root()).await, before);
}

/// Env var naming the directory [`holds_a_lease_in_its_own_pid_namespace`] writes under.
const HOLDER_DIR: &str = "JAMMI_TEST_LEASE_HOLDER_DIR";

/// Not a test of its own: the lease holder of
/// [`a_renewed_lease_held_in_another_pid_namespace_is_live_until_it_expires`], run by it in
/// a PID namespace of its own. Writes table `held`, one batch a second, until killed.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "run by a_renewed_lease_held_in_another_pid_namespace_is_live_until_it_expires"]
async fn holds_a_lease_in_its_own_pid_namespace() {
    let dir = std::env::var(HOLDER_DIR).expect("run by its test");
    let rs = store_at(&dir, StorageRegistry::new())
        .with_lease_ttl(jammi_db::store::lease::MIN_TTL)
        .unwrap();
    let batches = futures::stream::iter(0..).then(|i| async move {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        Ok(sample_batch(i * 10, 10, 4))
    });
    rs.write_table(&spec(Some("held")), sample_schema(4), Box::pin(batches))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_renewed_lease_held_in_another_pid_namespace_is_live_until_it_expires() {
    use std::time::{Duration, Instant};
    let dir = tempdir();
    let root = dir.path().to_str().unwrap();
    let ttl = jammi_db::store::lease::MIN_TTL;
    let rs = store_at(root, StorageRegistry::new())
        .with_lease_ttl(ttl)
        .unwrap();
    // Same host name and kernel, another PID namespace: its pid means nothing here.
    let mut holder = std::process::Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ownership::holds_a_lease_in_its_own_pid_namespace",
            "--ignored",
            "--quiet",
        ])
        .env(HOLDER_DIR, root)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("unshare runs");
    let lease_path = dir.path().join("held.idx.lease.json");
    let started = Instant::now();
    while !lease_path.exists() {
        assert!(
            holder.try_wait().unwrap().is_none(),
            "the holder exited: unshare --pid needs CAP_SYS_ADMIN"
        );
        assert!(started.elapsed() < Duration::from_secs(60), "no lease");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held: Lease = serde_json::from_slice(&std::fs::read(&lease_path).unwrap()).unwrap();
    assert_ne!(held.pid_ns, None, "the lease records its PID namespace");
    // Recovery over two TTLs: the renewed lease stays live whatever its pid is here.
    let until = Instant::now() + 2 * ttl;
    while Instant::now() < until {
        let report = rs.recover().await.unwrap();
        assert_eq!(report.live_writes, vec!["held".to_string()], "{report:?}");
        assert!(report.removed_objects.is_empty(), "{report:?}");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let renewed: Lease = serde_json::from_slice(&std::fs::read(&lease_path).unwrap()).unwrap();
    assert!(renewed.expires_ms > held.expires_ms, "the holder renews it");
    // The holder dies: once its lease has expired (and one TTL of skew passed) it is reaped.
    holder.kill().unwrap();
    holder.wait().unwrap();
    let last: Lease = serde_json::from_slice(&std::fs::read(&lease_path).unwrap()).unwrap();
    let dead_at = last.expires_ms + ttl.as_millis() as i64;
    let report = rs.recover().await.unwrap();
    if chrono::Utc::now().timestamp_millis() < dead_at {
        assert_eq!(report.live_writes, vec!["held".to_string()], "{report:?}");
    }
    let wait = dead_at - chrono::Utc::now().timestamp_millis() + 500;
    tokio::time::sleep(Duration::from_millis(wait.max(0) as u64)).await;
    let report = rs.recover().await.unwrap();
    assert_eq!(
        report.reclaimed_tables,
        vec!["held".to_string()],
        "{report:?}"
    );
    assert!(!lease_path.exists());
    assert!(!dir.path().join("held.parquet").exists());
}
