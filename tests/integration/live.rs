//! Live lanes: the conformance suite, SQL DDL, sources, result tables and vector search
//! against real S3 (moto), GCS (XML adapter over gcp-storage-emulator) and Azure (Azurite)
//! servers on loopback, started by `scripts/test-servers.sh`.

use datafusion::arrow::array::{Array, Int64Array};
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};
use jammi_db::store::TableSpec;
use object_store::{ObjectStoreExt, PutPayload};

use crate::common::{Live, parquet_bytes, sample_batch, sample_schema, sample_vector};
use crate::conformance::storage_conformance;

fn count(b: &[datafusion::arrow::array::RecordBatch]) -> i64 {
    b[0].column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap()
        .value(0)
}

async fn ddl_sources_and_results(scheme: &str, cloud: CloudConfig) {
    let bucket = Live::bucket();
    let base = format!("{scheme}://{bucket}/");
    storage_conformance(&format!("{base}conformance/"), Some(&cloud)).await;

    // Data: one file and a prefix of three.
    let registry = StorageRegistry::new();
    let baseu = StorageUrl::parse(&base).unwrap();
    let store = registry.store(&baseu, Some(&cloud)).await.unwrap();
    crate::conformance::clear_prefix(&store, &baseu).await;
    let put = |k: &str, bytes: Vec<u8>| {
        let store = store.clone();
        let p = baseu.join(k).unwrap().object_path().unwrap();
        async move { store.put(&p, PutPayload::from(bytes)).await.unwrap() }
    };
    put(
        "data/papers.parquet",
        parquet_bytes(&[sample_batch(0, 100, 4)]),
    )
    .await;
    for i in 0..3 {
        put(
            &format!("parts/p{i}.parquet"),
            parquet_bytes(&[sample_batch(i * 10, 10, 4)]),
        )
        .await;
    }

    // The database root is in the bucket too.
    let s = JammiSession::open_with(
        &format!("{base}db/"),
        OpenOptions {
            cloud: Some(cloud.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // CREATE EXTERNAL TABLE with OPTIONS, no pre-registration.
    s.sql(&format!(
        "CREATE EXTERNAL TABLE ext STORED AS PARQUET LOCATION '{base}data/papers.parquet' OPTIONS ({})",
        crate::common::live_options(&cloud)
    ))
    .await
    .unwrap();
    let r = s
        .sql("SELECT count(*) FROM ext WHERE id < 10")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count(&r), 10);
    let e = s
        .sql(&format!(
            "CREATE EXTERNAL TABLE missing STORED AS PARQUET LOCATION '{base}data/nope.parquet' OPTIONS ({})",
            crate::common::live_options(&cloud)
        ))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.parquet"), "{e}");

    // Sources with an explicit cloud configuration.
    s.add_source(
        "parts",
        SourceType::File,
        SourceConnection {
            url: Some(format!("{base}parts/")),
            format: Some(FileFormat::Parquet),
            cloud: Some(cloud.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let r = s
        .sql("SELECT count(*) FROM parts.public.parts")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count(&r), 30);

    // Result table: write → list → query → search → delete.
    let spec = TableSpec {
        source: "papers".into(),
        task: "text_embedding".into(),
        model: "m".into(),
        key_column: Some("id".into()),
        vector_column: Some("embedding".into()),
        ..Default::default()
    };
    let m = s
        .result_store()
        .write_batches(&spec, sample_schema(4), vec![sample_batch(0, 400, 4)])
        .await
        .unwrap();
    s.refresh_tables().await.unwrap();
    assert!(s.list_tables().await.unwrap().contains(&m.table));
    s.result_store().verify(&m.table).await.unwrap();
    let q = sample_vector(77, 4)
        .iter()
        .map(|v| format!("{v:?}"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT id, _distance FROM vector_search('{}', [{q}], 3)",
        m.table
    );
    let (r, cold) = crate::common::search_sql(&s, &sql).await;
    // Rows 17 apart are near-duplicates in the sample data: check the hit is (almost) exact.
    let ids = r[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .unwrap();
    let d = r[0]
        .column(1)
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Float32Array>()
        .unwrap();
    assert!(
        (0..ids.len()).any(|i| ids.value(i) == 77),
        "77 among the hits"
    );
    assert!(d.value(0) < 1e-3, "nearest hit at distance {}", d.value(0));
    assert_eq!(cold.mode, "index");
    let (_, warm) = crate::common::search_sql(&s, &sql).await;
    let (cold, warm) = (cold.requests, warm.requests);
    assert!(warm.total() < cold.total(), "cold {cold:?} warm {warm:?}");
    s.delete_table(&m.table).await.unwrap();
    assert!(!s.list_tables().await.unwrap().contains(&m.table));

    // A second process (session) on the same root sees the catalog.
    let other = JammiSession::open_with(
        &format!("{base}db/"),
        OpenOptions {
            cloud: Some(cloud.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(other.list_sources().await.unwrap().len(), 1);
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_server_conformance_sql_sources_and_result_tables() {
    ddl_sources_and_results("s3", Live::s3()).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_server_conformance_sql_sources_and_result_tables() {
    ddl_sources_and_results("gs", Live::gcs()).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_server_conformance_sql_sources_and_result_tables() {
    ddl_sources_and_results("azure", Live::azure()).await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_writers_on_one_s3_root_all_land() {
    let bucket = Live::bucket();
    let root = format!("s3://{bucket}/concurrent/");
    let rootu = StorageUrl::parse(&root).unwrap();
    let store = StorageRegistry::new()
        .store(&rootu, Some(&Live::s3()))
        .await
        .unwrap();
    crate::conformance::clear_prefix(&store, &rootu).await;
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let root = root.clone();
        tasks.push(tokio::spawn(async move {
            let s = JammiSession::open_with(
                &root,
                OpenOptions {
                    cloud: Some(Live::s3()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
            let spec = TableSpec {
                source: format!("w{i}"),
                task: "t".into(),
                model: "m".into(),
                vector_column: Some("embedding".into()),
                ..Default::default()
            };
            s.result_store()
                .write_batches(
                    &spec,
                    sample_schema(4),
                    vec![sample_batch(i * 1000, 300, 4)],
                )
                .await
                .unwrap()
                .table
        }));
    }
    let mut names = Vec::new();
    for t in tasks {
        names.push(t.await.unwrap());
    }
    let s = JammiSession::open_with(
        &root,
        OpenOptions {
            cloud: Some(Live::s3()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let mut listed = s.list_tables().await.unwrap();
    listed.sort();
    names.sort();
    assert_eq!(listed, names);
    for n in &names {
        let m = s.result_store().verify(n).await.unwrap();
        assert_eq!(m.rows, 300);
    }
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn a_source_whose_secrets_were_withheld_fails_until_credentials_are_supplied() {
    let bucket = Live::bucket();
    let url = format!("s3://{bucket}/withheld/papers.parquet");
    let parsed = StorageUrl::parse(&url).unwrap();
    let store = StorageRegistry::new()
        .store(&parsed, Some(&Live::s3()))
        .await
        .unwrap();
    store
        .put(
            &parsed.object_path().unwrap(),
            PutPayload::from(parquet_bytes(&[sample_batch(0, 12, 4)])),
        )
        .await
        .unwrap();
    let root = crate::common::tempdir();
    let r = root.path().to_str().unwrap();
    {
        let s = JammiSession::open(r).await.unwrap();
        s.add_source(
            "papers",
            SourceType::File,
            SourceConnection {
                url: Some(url.clone()),
                cloud: Some(Live::s3()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let n = s
            .sql("SELECT count(*) FROM papers.public.papers")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        assert_eq!(count(&n), 12);
    }
    // Reopened: the secret-free configuration (endpoint, region) plus the ambient chain,
    // which has nothing here; the S3 server refuses unsigned requests. The source still
    // lists; reading it fails, saying why.
    let s = JammiSession::open(r).await.unwrap();
    let tables = s.sql("SHOW TABLES").await.unwrap().collect().await.unwrap();
    let tables = datafusion::arrow::util::pretty::pretty_format_batches(&tables)
        .unwrap()
        .to_string();
    assert!(tables.contains("papers"), "{tables}");
    let e = s
        .sql("SELECT count(*) FROM papers.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("never stores") && e.contains("papers"), "{e}");
    assert!(!e.contains("testing"), "no secret in the error: {e}");
    s.set_source_credentials("papers", Live::s3())
        .await
        .unwrap();
    let n = s
        .sql("SELECT count(*) FROM papers.public.papers")
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
    assert_eq!(count(&n), 12);
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_user_files_named_like_ours_survive_every_operation() {
    let root = format!("s3://{}/owned/", Live::bucket());
    crate::ownership::every_operation_keeps_user_files(&root, Some(Live::s3())).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_user_files_named_like_ours_survive_every_operation() {
    let root = format!("gs://{}/owned/", Live::bucket());
    crate::ownership::every_operation_keeps_user_files(&root, Some(Live::gcs())).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_user_files_named_like_ours_survive_every_operation() {
    let root = format!("azure://{}/owned/", Live::bucket());
    crate::ownership::every_operation_keeps_user_files(&root, Some(Live::azure())).await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_sidecars_follow_their_file() {
    let base = format!("s3://{}/follow/", Live::bucket());
    crate::indexed_files::sidecars_follow_their_file_on(&base, Some(Live::s3())).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_sidecars_follow_their_file() {
    let base = format!("gs://{}/follow/", Live::bucket());
    crate::indexed_files::sidecars_follow_their_file_on(&base, Some(Live::gcs())).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_sidecars_follow_their_file() {
    let base = format!("azure://{}/follow/", Live::bucket());
    crate::indexed_files::sidecars_follow_their_file_on(&base, Some(Live::azure())).await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_lost_responses_at_every_request_of_a_write_leave_tables_whole_or_gone() {
    let base = format!("s3://{}/", Live::bucket());
    crate::ownership::faults_during_a_write(crate::common::Fault::After, Some((base, Live::s3())))
        .await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_lost_responses_at_every_request_of_a_write_leave_tables_whole_or_gone() {
    let base = format!("gs://{}/", Live::bucket());
    crate::ownership::faults_during_a_write(crate::common::Fault::After, Some((base, Live::gcs())))
        .await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_lost_responses_at_every_request_of_a_write_leave_tables_whole_or_gone() {
    let base = format!("azure://{}/", Live::bucket());
    crate::ownership::faults_during_a_write(
        crate::common::Fault::After,
        Some((base, Live::azure())),
    )
    .await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_sources_see_their_files_as_they_are() {
    let base = format!("s3://{}/changing/", Live::bucket());
    crate::catalog_sources::sources_see_their_files_on(&base, Some(Live::s3())).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_sources_see_their_files_as_they_are() {
    let base = format!("gs://{}/changing/", Live::bucket());
    crate::catalog_sources::sources_see_their_files_on(&base, Some(Live::gcs())).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_sources_see_their_files_as_they_are() {
    let base = format!("azure://{}/changing/", Live::bucket());
    crate::catalog_sources::sources_see_their_files_on(&base, Some(Live::azure())).await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_result_tables_take_every_change() {
    let root = format!("s3://{}/changes/", Live::bucket());
    crate::versions::every_change_on(&root, Some(Live::s3())).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_result_tables_take_every_change() {
    let root = format!("gs://{}/changes/", Live::bucket());
    crate::versions::every_change_on(&root, Some(Live::gcs())).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_result_tables_take_every_change() {
    let root = format!("azure://{}/changes/", Live::bucket());
    crate::versions::every_change_on(&root, Some(Live::azure())).await;
}

#[cfg(feature = "live-s3-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn s3_quantised_tables_reload_and_answer_every_search_form() {
    let root = format!("s3://{}/quantized/", Live::bucket());
    let cloud = Live::s3();
    crate::quantization::every_form_at_every_precision(&root, Some(&cloud), true).await;
}

#[cfg(feature = "live-gcs-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn gcs_quantised_tables_reload_and_answer_every_search_form() {
    let root = format!("gs://{}/quantized/", Live::bucket());
    let cloud = Live::gcs();
    crate::quantization::every_form_at_every_precision(&root, Some(&cloud), true).await;
}

#[cfg(feature = "live-azure-tests")]
#[tokio::test(flavor = "multi_thread")]
async fn azure_quantised_tables_reload_and_answer_every_search_form() {
    let root = format!("azure://{}/quantized/", Live::bucket());
    let cloud = Live::azure();
    crate::quantization::every_form_at_every_precision(&root, Some(&cloud), true).await;
}
