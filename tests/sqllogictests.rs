//! Runs `sqllogictest/*.slt` with DataFusion's sqllogictest engine over a `JammiSession`,
//! once per storage lane: `file://` and `memory://` always, and the S3, GCS and Azure
//! servers when the matching `live-*-tests` feature is on.
//!
//! Files use placeholders the runner fills in per lane:
//! `${BASE}` — a URL prefix holding the fixture files (ends with `/`);
//! `${OPTIONS}` — `OPTIONS (...)` with the lane's storage options, or nothing;
//! `${CLOUD_OPTS}` — the same options as a list ending in `, `, or nothing.
//! Each lane also has the source `papers` (the file `${BASE}papers.parquet`).

#[path = "integration/common.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion_sqllogictest::{DataFusion, df_value_validator, value_normalizer};
use jammi_db::session::{JammiSession, OpenOptions};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::storage::{CloudConfig, StorageRegistry, StorageUrl};
use object_store::{ObjectStoreExt, PutPayload};

struct Lane {
    name: &'static str,
    base: String,
    cloud: Option<CloudConfig>,
    options: Vec<(String, String)>,
}

fn lanes(tmp: &Path) -> Vec<Lane> {
    #[allow(unused_mut)]
    let mut v = vec![
        Lane {
            name: "file",
            base: StorageUrl::parse(tmp.join("data/").to_str().unwrap())
                .unwrap()
                .to_string(),
            cloud: None,
            options: vec![],
        },
        Lane {
            name: "memory",
            base: "memory://slt/data/".into(),
            cloud: None,
            options: vec![],
        },
    ];
    let env = |k: &str| {
        std::env::var(k).unwrap_or_else(|_| panic!("{k} unset: run scripts/test-servers.sh"))
    };
    #[cfg(feature = "live-s3-tests")]
    v.push(Lane {
        name: "s3",
        base: "s3://jammi-21/slt/".into(),
        cloud: Some(common::Live::s3()),
        options: vec![
            ("aws.endpoint".into(), env("JAMMI_TEST_S3_ENDPOINT")),
            ("aws.region".into(), "us-east-1".into()),
            ("aws.access_key_id".into(), "testing".into()),
            ("aws.secret_access_key".into(), "testing".into()),
            ("aws.allow_http".into(), "true".into()),
        ],
    });
    #[cfg(feature = "live-gcs-tests")]
    v.push(Lane {
        name: "gcs",
        base: "gs://jammi-22/slt/".into(),
        cloud: Some(common::Live::gcs()),
        options: vec![
            ("gcp.endpoint".into(), env("JAMMI_TEST_GCS_ENDPOINT")),
            ("gcp.allow_http".into(), "true".into()),
            ("gcp.skip_signature".into(), "true".into()),
        ],
    });
    #[cfg(feature = "live-azure-tests")]
    v.push(Lane {
        name: "azure",
        base: "azure://jammi-23/slt/".into(),
        cloud: Some(common::Live::azure()),
        options: vec![
            ("azure.endpoint".into(), env("JAMMI_TEST_AZURE_ENDPOINT")),
            ("azure.use_emulator".into(), "true".into()),
        ],
    });
    let _ = env;
    v
}

/// Writes the fixture files of a lane under its base URL.
async fn fixtures(registry: &StorageRegistry, lane: &Lane) {
    let base = StorageUrl::parse(&lane.base).unwrap();
    let store = registry.store(&base, lane.cloud.as_ref()).await.unwrap();
    let put = |key: &str, bytes: Vec<u8>| {
        let store = store.clone();
        let path = base.join(key).unwrap().object_path().unwrap();
        async move { store.put(&path, PutPayload::from(bytes)).await.unwrap() }
    };
    put(
        "papers.parquet",
        common::parquet_bytes(&[common::sample_batch(0, 100, 4)]),
    )
    .await;
    put(
        "emb.parquet",
        common::parquet_bytes(&[common::sample_batch(0, 600, 8)]),
    )
    .await;
    for i in 0..3 {
        put(
            &format!("parts/part-{i}.parquet"),
            common::parquet_bytes(&[common::sample_batch(i * 10, 10, 4)]),
        )
        .await;
    }
    let mut csv = String::from("id,title,score\n");
    let mut json = String::new();
    for i in 0..10 {
        csv.push_str(&format!("{i},paper {i},{}\n", i as f64 / 10.0));
        json.push_str(&format!("{{\"id\":{i},\"title\":\"paper {i}\"}}\n"));
    }
    put("edge.parquet", edge_vectors()).await;
    put("papers.csv", csv.into_bytes()).await;
    put("papers.json", json.into_bytes()).await;
}

/// `edge.parquet`: ids 1-6 with 2-d vectors holding NaN, +∞ and NULL (see
/// `vector_search.slt`).
fn edge_vectors() -> Vec<u8> {
    use datafusion::arrow::array::{FixedSizeListArray, Float32Array, Int64Array, RecordBatch};
    use datafusion::arrow::buffer::NullBuffer;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let item = Arc::new(Field::new("item", DataType::Float32, true));
    let values = Float32Array::from(vec![
        1.0,
        0.0,
        f32::NAN,
        1.0,
        f32::INFINITY,
        0.0,
        0.0,
        1.0,
        0.0,
        0.0,
        0.5,
        0.0,
    ]);
    let valid = NullBuffer::from(vec![true, true, true, true, false, true]);
    let v = FixedSizeListArray::new(item.clone(), 2, Arc::new(values), Some(valid));
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("v", DataType::FixedSizeList(item, 2), true),
    ]));
    let ids = Int64Array::from((1..=6).collect::<Vec<i64>>());
    let batch = RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(v)]).unwrap();
    common::parquet_bytes(&[batch])
}

fn substitute(text: &str, lane: &Lane) -> String {
    let list: Vec<String> = lane
        .options
        .iter()
        .map(|(k, v)| format!("'{k}' '{v}'"))
        .collect();
    let options = if list.is_empty() {
        String::new()
    } else {
        format!("OPTIONS ({})", list.join(", "))
    };
    let cloud_opts = if list.is_empty() {
        String::new()
    } else {
        format!("{}, ", list.join(", "))
    };
    text.replace("${BASE}", &lane.base)
        .replace("${OPTIONS}", &options)
        .replace("${CLOUD_OPTS}", &cloud_opts)
}

async fn run_lane(lane: &Lane, files: &[PathBuf], tmp: &Path) -> (usize, Vec<String>) {
    let registry = StorageRegistry::new();
    fixtures(&registry, lane).await;
    let mut passed = 0;
    let mut failed = Vec::new();
    for file in files {
        let root = tmp.join(format!(
            "root-{}-{}",
            lane.name,
            file.file_stem().unwrap().to_string_lossy()
        ));
        let session = JammiSession::open_with(
            root.to_str().unwrap(),
            OpenOptions {
                registry: Some(registry.clone()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        session
            .add_source(
                "papers",
                SourceType::File,
                SourceConnection {
                    url: Some(format!("{}papers.parquet", lane.base)),
                    format: Some(FileFormat::Parquet),
                    cloud: lane.cloud.clone(),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let text = substitute(&std::fs::read_to_string(file).unwrap(), lane);
        let script = tmp.join(format!(
            "{}-{}",
            lane.name,
            file.file_name().unwrap().to_string_lossy()
        ));
        std::fs::write(&script, text).unwrap();
        let ctx = session.context().clone();
        let rel = PathBuf::from(file.file_name().unwrap());
        let mut runner = sqllogictest::Runner::new(|| {
            let ctx = ctx.clone();
            let rel = rel.clone();
            async move { Ok(DataFusion::new(ctx, rel, indicatif::ProgressBar::hidden())) }
        });
        runner.with_normalizer(value_normalizer);
        runner.with_validator(df_value_validator);
        runner.with_column_validator(sqllogictest::strict_column_validator);
        let name = format!("[{}] {}", lane.name, file.display());
        match runner.run_file_async(&script).await {
            Ok(()) => {
                println!("ok   {name}");
                passed += 1;
            }
            Err(e) => {
                println!("FAIL {name}\n{e}");
                failed.push(name);
            }
        }
    }
    (passed, failed)
}

fn main() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sqllogictest");
    let filter = std::env::args().nth(1).filter(|a| !a.starts_with('-'));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            filter
                .as_ref()
                .is_none_or(|f| p.to_string_lossy().contains(f.as_str()))
        })
        .collect();
    files.sort();
    let tmp = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut passed, mut failed) = (0, Vec::new());
    for lane in lanes(tmp.path()) {
        let (p, f) = rt.block_on(run_lane(&lane, &files, tmp.path()));
        passed += p;
        failed.extend(f);
    }
    println!("sqllogictest: {passed} passed, {} failed", failed.len());
    if !failed.is_empty() {
        for f in &failed {
            println!("  failed: {f}");
        }
        std::process::exit(1);
    }
}
