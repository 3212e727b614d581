//! The `jammi` binary against the real S3 API server of the live lane
//! (`scripts/test-servers.sh start`; buckets jammi-41..50 are this binary's).
#![cfg(feature = "live-s3-tests")]

use std::process::Command;

use datafusion::arrow::array::{Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::parquet::arrow::ArrowWriter;
use jammi_db::storage::{CloudConfig, S3Config, StorageRegistry, StorageUrl};

fn endpoint() -> String {
    std::env::var("JAMMI_TEST_S3_ENDPOINT")
        .expect("JAMMI_TEST_S3_ENDPOINT: run `eval \"$(scripts/test-servers.sh env)\"`")
}

fn ids_parquet(n: i64) -> Vec<u8> {
    let schema = std::sync::Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![std::sync::Arc::new(Int64Array::from_iter_values(0..n))],
    )
    .unwrap();
    let mut buf = Vec::new();
    let mut w = ArrowWriter::try_new(&mut buf, schema, None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
    buf
}

#[tokio::test(flavor = "multi_thread")]
async fn aws_profile_credentials_from_a_temporary_home_reach_the_s3_server() {
    // A real ~/.aws/credentials + config in a temporary HOME, used by the CLI with no
    // credentials in its arguments or environment.
    let home = tempfile::tempdir().unwrap();
    let aws = home.path().join(".aws");
    std::fs::create_dir_all(&aws).unwrap();
    std::fs::write(
        aws.join("credentials"),
        "[jammi-test]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    std::fs::write(
        aws.join("config"),
        "[profile jammi-test]\nregion = us-east-1\n",
    )
    .unwrap();
    let bucket = "jammi-41";
    let url = StorageUrl::parse(&format!("s3://{bucket}/profile/papers.parquet")).unwrap();
    let explicit = CloudConfig::S3(S3Config {
        endpoint: Some(endpoint()),
        region: Some("us-east-1".into()),
        access_key_id: Some("testing".into()),
        secret_access_key: Some("testing".into()),
        allow_http: Some(true),
        ..Default::default()
    });
    let store = StorageRegistry::new()
        .store(&url, Some(&explicit))
        .await
        .unwrap();
    use object_store::ObjectStoreExt;
    store
        .put(&url.object_path().unwrap(), ids_parquet(42).into())
        .await
        .unwrap();
    let root = home.path().join("db");
    let out = Command::new(env!("CARGO_BIN_EXE_jammi"))
        .env_clear()
        .env("HOME", home.path())
        .env("AWS_PROFILE", "jammi-test")
        .env("AWS_ENDPOINT_URL", endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("PATH", std::env::var("PATH").unwrap())
        .args(["--root", root.to_str().unwrap(), "--output", "csv", "sql"])
        .arg(format!(
            "CREATE EXTERNAL TABLE p STORED AS PARQUET LOCATION '{url}'; SELECT count(*) AS n FROM p"
        ))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout {stdout} stderr {stderr}");
    assert!(stdout.contains("n\n42"), "{stdout}");
}
