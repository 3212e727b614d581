//! One storage conformance suite, run against every backend: `file://` and `memory://`
//! here, and the S3, GCS and Azure servers in the live lanes.

use datafusion::arrow::array::Int64Array;
use datafusion::prelude::SessionContext;
use futures::TryStreamExt;
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};
use object_store::{ObjectStoreExt, PutMode, PutPayload};

use crate::common::{memory_root, parquet_bytes, sample_batch, tempdir};

/// put/get/range get/list/delete, create-only put, multipart upload, and a DataFusion SQL
/// read of a Parquet file through the registry, under `base`.
pub async fn storage_conformance(base: &str, cloud: Option<&CloudConfig>) {
    let registry = StorageRegistry::new();
    let base = StorageUrl::parse(base).unwrap().as_prefix();
    let store = registry.store(&base, cloud).await.unwrap();
    let at = |k: &str| base.join(k).unwrap().object_path().unwrap();
    clear_prefix(&store, &base).await;

    // put / get / head / range
    store
        .put(&at("conf/a.txt"), PutPayload::from_static(b"hello world"))
        .await
        .unwrap();
    let got = store
        .get(&at("conf/a.txt"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&got[..], b"hello world");
    assert_eq!(store.head(&at("conf/a.txt")).await.unwrap().size, 11);
    let range = store.get_range(&at("conf/a.txt"), 2..7).await.unwrap();
    assert_eq!(&range[..], b"llo w");

    // list (recursive and with delimiter)
    store
        .put(&at("conf/sub/b.txt"), PutPayload::from_static(b"b"))
        .await
        .unwrap();
    let mut listed: Vec<String> = store
        .list(Some(&at("conf")))
        .map_ok(|m| m.location.to_string())
        .try_collect()
        .await
        .unwrap();
    listed.sort();
    assert_eq!(
        listed,
        vec![
            at("conf/a.txt").to_string(),
            at("conf/sub/b.txt").to_string()
        ]
    );
    let shallow = store.list_with_delimiter(Some(&at("conf"))).await.unwrap();
    assert_eq!(shallow.objects.len(), 1);
    assert_eq!(shallow.common_prefixes, vec![at("conf/sub")]);

    // create-only put
    let again = store
        .put_opts(
            &at("conf/a.txt"),
            PutPayload::from_static(b"x"),
            PutMode::Create.into(),
        )
        .await;
    assert!(
        matches!(again, Err(object_store::Error::AlreadyExists { .. })),
        "{again:?}"
    );
    store
        .put_opts(
            &at("conf/new.txt"),
            PutPayload::from_static(b"n"),
            PutMode::Create.into(),
        )
        .await
        .unwrap();

    // multipart upload (first part at the S3 minimum of 5 MiB)
    let big: Vec<u8> = (0..(5 << 20) + 1024).map(|i| (i % 251) as u8).collect();
    let mut up = store.put_multipart(&at("conf/big.bin")).await.unwrap();
    up.put_part(PutPayload::from(big[..5 << 20].to_vec()))
        .await
        .unwrap();
    up.put_part(PutPayload::from(big[5 << 20..].to_vec()))
        .await
        .unwrap();
    up.complete().await.unwrap();
    let back = store
        .get(&at("conf/big.bin"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(back.len(), big.len());
    assert!(back[..] == big[..], "multipart content differs");

    // delete
    store.delete(&at("conf/a.txt")).await.unwrap();
    let gone = store.get(&at("conf/a.txt")).await;
    assert!(
        matches!(gone, Err(object_store::Error::NotFound { .. })),
        "{gone:?}"
    );

    // DataFusion SQL over a Parquet file, resolved through the registry
    let file = base.join("conf/t.parquet").unwrap();
    store
        .put(
            &file.object_path().unwrap(),
            PutPayload::from(parquet_bytes(&[
                sample_batch(0, 100, 4),
                sample_batch(100, 50, 4),
            ])),
        )
        .await
        .unwrap();
    let ctx = SessionContext::new();
    jammi_db::register(&ctx, &registry, None).await.unwrap();
    ctx.sql(&format!(
        "CREATE EXTERNAL TABLE conf_t STORED AS PARQUET LOCATION '{file}'"
    ))
    .await
    .unwrap();
    let r = ctx
        .sql("SELECT count(*) AS n, sum(id) AS s FROM conf_t WHERE id >= 10")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    let col = |i: usize| {
        r[0].column(i)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0)
    };
    assert_eq!((col(0), col(1)), (140, (10..150).sum::<i64>()));

    for k in [
        "conf/sub/b.txt",
        "conf/new.txt",
        "conf/big.bin",
        "conf/t.parquet",
    ] {
        store.delete(&at(k)).await.unwrap();
    }
}

#[tokio::test]
async fn local_file_backend_conforms() {
    let dir = tempdir();
    storage_conformance(dir.path().to_str().unwrap(), None).await;
}

#[tokio::test]
async fn memory_backend_conforms() {
    storage_conformance(&memory_root("conformance"), None).await;
}

/// Deletes everything under `base` (live servers keep objects between runs).
pub async fn clear_prefix(
    store: &std::sync::Arc<dyn object_store::ObjectStore>,
    base: &StorageUrl,
) {
    let old: Vec<_> = store
        .list(Some(&base.object_path().unwrap()))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .unwrap();
    for p in old {
        store.delete(&p).await.unwrap();
    }
}
