//! Storage layer: URLs, cloud configuration, the object-store registry, one module per
//! backend (cloud ones behind their cargo feature) and the local cache of remote files.

pub(crate) mod backends;
pub mod cache;
pub mod config;
pub mod hiding;
pub(crate) mod local;
pub mod metrics;
pub mod registry;
pub mod url;
pub(crate) mod version;

#[cfg(feature = "storage-azure")]
pub(crate) mod azure;
#[cfg(feature = "storage-gcs")]
pub(crate) mod gcs;
#[cfg(feature = "storage-s3")]
pub(crate) mod s3;

pub use config::{AzureConfig, CloudConfig, GcsConfig, S3Config};
pub use hiding::ListingFilter;
pub use registry::{StorageRegistry, StoreLayer};
pub use url::{Scheme, StorageUrl};
