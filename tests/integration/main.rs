//! jammi-db's integration tests: one binary, one module per area. Live lanes (real S3,
//! GCS and Azure servers on loopback) are compiled in by the `live-*-tests` features.

mod common;

mod catalog_sources;
mod config;
mod conformance;
mod drop_in;
mod indexed_files;
mod ownership;
mod prepared;
mod quantization;
mod registry;
mod result_store;
mod search_plan;
mod storage_url;
mod vector;
mod versions;

#[cfg(any(
    feature = "live-s3-tests",
    feature = "live-gcs-tests",
    feature = "live-azure-tests"
))]
mod live;
