//! `StorageRegistry`: store identity, DataFusion integration, feature errors.

use std::sync::Arc;

use datafusion::prelude::SessionContext;
use jammi_db::storage::{StorageRegistry, StorageUrl};
use object_store::{ObjectStoreExt, PutPayload};

use crate::common::{memory_root, parquet_bytes, sample_batch};

#[tokio::test]
async fn memory_urls_are_served_through_datafusion_sql_like_any_scheme() {
    let registry = StorageRegistry::new();
    let root = StorageUrl::parse(&memory_root("sql")).unwrap();
    let store = registry.store(&root, None).await.unwrap();
    let file = root.join("t/papers.parquet").unwrap();
    store
        .put(
            &file.object_path().unwrap(),
            PutPayload::from(parquet_bytes(&[sample_batch(0, 25, 4)])),
        )
        .await
        .unwrap();
    let ctx = SessionContext::new();
    jammi_db::register(&ctx, &registry, None).await.unwrap();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{file}'"
    ))
    .await
    .unwrap();
    let n = ctx
        .sql("SELECT count(*) AS n FROM p")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = n[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 25);
}

/// `register` installs into the user's context without losing what it already had (its
/// session id, tables, functions and settings), and may run twice.
#[tokio::test(flavor = "multi_thread")]
async fn registering_keeps_the_existing_context_intact() {
    let ctx = SessionContext::new();
    ctx.sql("SET datafusion.execution.batch_size = 1234")
        .await
        .unwrap();
    ctx.register_batch("mine", sample_batch(0, 3, 4)).unwrap();
    let id = ctx.session_id();
    let registry = StorageRegistry::new();
    jammi_db::register(&ctx, &registry, None).await.unwrap();
    jammi_db::register(&ctx, &registry, None).await.unwrap();
    assert_eq!(ctx.session_id(), id);
    assert_eq!(ctx.state().config().batch_size(), 1234);
    assert_eq!(
        ctx.state().expr_planners().len(),
        SessionContext::new().state().expr_planners().len()
    );
    assert_eq!(
        ctx.state().relation_planners().len(),
        SessionContext::new().state().relation_planners().len() + 1
    );
    let r = ctx
        .sql("SELECT count(*) AS n, max(l2_distance(embedding, embedding)) AS d FROM mine")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let n = r[0]
        .column(0)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .unwrap()
        .value(0);
    assert_eq!(n, 3);
}

#[tokio::test]
async fn the_same_url_and_config_reuse_one_store() {
    let registry = StorageRegistry::new();
    let a = registry
        .store(&StorageUrl::parse("memory://same/x").unwrap(), None)
        .await
        .unwrap();
    let b = registry
        .store(&StorageUrl::parse("memory://same/y").unwrap(), None)
        .await
        .unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    let c = registry
        .store(&StorageUrl::parse("memory://other/x").unwrap(), None)
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &c));
}

#[cfg(feature = "storage-s3")]
#[tokio::test]
async fn one_bucket_name_on_two_endpoints_gets_two_stores() {
    use jammi_db::storage::{CloudConfig, S3Config};
    let registry = StorageRegistry::new();
    let url = StorageUrl::parse("s3://data/x.parquet").unwrap();
    let cfg = |endpoint: &str| {
        CloudConfig::S3(S3Config {
            endpoint: Some(endpoint.into()),
            region: Some("us-east-1".into()),
            access_key_id: Some("k".into()),
            secret_access_key: Some("s".into()),
            allow_http: Some(true),
            ..Default::default()
        })
    };
    let aws = registry
        .store(&url, Some(&cfg("https://s3.amazonaws.com")))
        .await
        .unwrap();
    let local = registry
        .store(&url, Some(&cfg("http://127.0.0.1:9")))
        .await
        .unwrap();
    let local_again = registry
        .store(&url, Some(&cfg("http://127.0.0.1:9")))
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&aws, &local));
    assert!(Arc::ptr_eq(&local, &local_again));
    assert!(format!("{aws}").contains("amazonaws") || format!("{aws:?}").contains("amazonaws"));
    assert!(format!("{local:?}").contains("127.0.0.1"));
    // Different credentials on the same endpoint are different clients too.
    let mut other = cfg("http://127.0.0.1:9");
    if let CloudConfig::S3(s) = &mut other {
        s.secret_access_key = Some("other".into());
    }
    let local_other_creds = registry.store(&url, Some(&other)).await.unwrap();
    assert!(!Arc::ptr_eq(&local, &local_other_creds));
    assert_eq!(registry.store_count(), 3);
}

#[cfg(feature = "storage-azure")]
#[tokio::test]
async fn two_containers_of_one_azure_account_get_two_stores() {
    use jammi_db::storage::{AzureConfig, CloudConfig};
    let registry = StorageRegistry::new();
    let cfg = CloudConfig::Azure(AzureConfig {
        account_name: Some("acct".into()),
        account_key: Some("a2V5".into()),
        ..Default::default()
    });
    let a = registry
        .store(&StorageUrl::parse("azure://one/x").unwrap(), Some(&cfg))
        .await
        .unwrap();
    let b = registry
        .store(&StorageUrl::parse("azure://two/x").unwrap(), Some(&cfg))
        .await
        .unwrap();
    assert!(!Arc::ptr_eq(&a, &b));
    assert!(format!("{a:?}").contains("one") && format!("{b:?}").contains("two"));
    let dbg = format!("{a:?}");
    assert!(!dbg.contains("a2V5"), "store Debug leaks the key: {dbg}");
}

#[cfg(not(feature = "storage-s3"))]
#[tokio::test]
async fn a_cloud_scheme_without_its_feature_names_the_feature_in_sql() {
    let dir = crate::common::tempdir();
    let s = jammi_db::session::JammiSession::open(dir.path().to_str().unwrap())
        .await
        .unwrap();
    let err = s
        .sql("CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION 's3://bkt/x.parquet' OPTIONS ('aws.region' 'us-east-1')")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("storage-s3"), "{err}");
}

#[test]
fn an_unusable_cache_directory_disables_the_cache() {
    let dir = crate::common::tempdir();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let c = jammi_db::storage::cache::LocalCache::new_or_disabled(file.join("jammi"), 1 << 20);
    assert!(c.dir().is_none());
    let ro = dir.path().join("read-only");
    std::fs::create_dir_all(&ro).unwrap();
    let mut perms = std::fs::metadata(&ro).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o555);
    std::fs::set_permissions(&ro, perms).unwrap();
    // (root can write anywhere: the check only holds for other users)
    let c = jammi_db::storage::cache::LocalCache::new_or_disabled(&ro, 1 << 20);
    let writable = tempfile::tempfile_in(&ro).is_ok();
    assert_eq!(c.dir().is_some(), writable);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_cache_still_serves_downloads_from_temp_files() {
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    let path = object_store::path::Path::from("a/b.bin");
    store
        .put(&path, b"hello bytes".to_vec().into())
        .await
        .unwrap();
    let c = jammi_db::storage::cache::LocalCache::disabled();
    let (f, crc) = c.fetch("k", &store, &path, 11).await.unwrap();
    assert_eq!(std::fs::read(f.path()).unwrap(), b"hello bytes");
    assert_eq!(crc, Some(crc32c::crc32c(b"hello bytes")));
    let p = f.path().to_path_buf();
    drop(f);
    assert!(!p.exists(), "the temp file goes with its user");
}

#[test]
fn temp_files_of_killed_downloads_are_removed_when_a_cache_opens() {
    let dir = crate::common::tempdir();
    let dead = dir
        .path()
        .join(".tmp-4194303-key-0000000000000001.jammi-part");
    let ours = dir.path().join(format!(
        ".tmp-{}-key-0000000000000002.jammi-part",
        std::process::id()
    ));
    let entry = dir.path().join("key.jammi-cache");
    // Someone else's files in the same directory, named like ours but not ours.
    let user = dir.path().join(".tmp-4194303-notes.txt");
    for p in [&dead, &ours, &entry, &user] {
        std::fs::write(p, b"x").unwrap();
    }
    jammi_db::storage::cache::LocalCache::new(dir.path(), 1 << 20).unwrap();
    assert!(!dead.exists(), "a dead download's temp file is removed");
    assert!(ours.exists() && entry.exists() && user.exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_local_cache_evicts_only_files_it_named() {
    let dir = crate::common::tempdir();
    let user = dir.path().join("holiday.jpg");
    std::fs::write(&user, vec![7u8; 4096]).unwrap();
    let store: Arc<dyn object_store::ObjectStore> = Arc::new(object_store::memory::InMemory::new());
    // A budget smaller than the user's file: only the cache's own entries may go.
    let cache = jammi_db::storage::cache::LocalCache::new(dir.path(), 1000).unwrap();
    for i in 0..3 {
        let path = object_store::path::Path::from(format!("k{i}"));
        store.put(&path, vec![1u8; 600].into()).await.unwrap();
        cache
            .fetch(&format!("k{i}"), &store, &path, 600)
            .await
            .unwrap();
    }
    assert_eq!(std::fs::read(&user).unwrap(), vec![7u8; 4096]);
}
