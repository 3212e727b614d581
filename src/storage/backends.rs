//! Dispatch from a URL's scheme to the backend file that builds its store. Each cloud
//! backend lives in its own feature-gated module; a scheme whose feature is off fails in
//! `StorageUrl::check_enabled` with the feature to enable.

use std::sync::Arc;

use object_store::ObjectStore;

use crate::error::Result;
use crate::storage::config::CloudConfig;
use crate::storage::url::{Scheme, StorageUrl};

/// A store, and whether it rests on a guess worth re-checking later (S3 found no
/// credentials and sends unsigned requests).
pub(crate) struct Built {
    pub store: Arc<dyn ObjectStore>,
    pub provisional: bool,
}

/// Builds a store, resolving what needs I/O (AWS region, credential probing) first.
pub(crate) async fn build(url: &StorageUrl, cloud: Option<&CloudConfig>) -> Result<Built> {
    url.check_enabled()?;
    match url.scheme() {
        #[cfg(feature = "storage-s3")]
        Scheme::S3 => {
            // Boxed as `Send`: callers spawn sessions and writes onto multi-threaded runtimes.
            let fut: futures::future::BoxFuture<'_, Result<(Arc<dyn ObjectStore>, bool)>> =
                Box::pin(crate::storage::s3::build(url, s3_config(cloud)));
            let (store, provisional) = fut.await?;
            Ok(Built { store, provisional })
        }
        _ => Ok(Built {
            store: build_sync(url, cloud)?,
            provisional: false,
        }),
    }
}

/// Builds a store without awaiting (DataFusion's registry lookups are synchronous).
pub(crate) fn build_sync(
    url: &StorageUrl,
    cloud: Option<&CloudConfig>,
) -> Result<Arc<dyn ObjectStore>> {
    url.check_enabled()?;
    let _ = &cloud;
    match url.scheme() {
        Scheme::File | Scheme::Memory => crate::storage::local::build(url),
        #[cfg(feature = "storage-s3")]
        Scheme::S3 => crate::storage::s3::build_sync(url, s3_config(cloud)),
        #[cfg(feature = "storage-gcs")]
        Scheme::Gcs => crate::storage::gcs::build(
            url,
            match cloud {
                Some(CloudConfig::Gcs(c)) => Some(c),
                _ => None,
            },
        ),
        #[cfg(feature = "storage-azure")]
        Scheme::Azure => crate::storage::azure::build(
            url,
            match cloud {
                Some(CloudConfig::Azure(c)) => Some(c),
                _ => None,
            },
        ),
        #[allow(unreachable_patterns)]
        _ => unreachable!("check_enabled rejects schemes whose feature is off"),
    }
}

#[cfg(feature = "storage-s3")]
fn s3_config(cloud: Option<&CloudConfig>) -> Option<&crate::storage::config::S3Config> {
    match cloud {
        Some(CloudConfig::S3(c)) => Some(c),
        _ => None,
    }
}

/// Client options shared by the cloud backends: bounded connect time so a dead endpoint
/// fails fast instead of hanging a query.
#[cfg(any(
    feature = "storage-s3",
    feature = "storage-gcs",
    feature = "storage-azure"
))]
pub(crate) fn client_options(allow_http: bool) -> object_store::ClientOptions {
    object_store::ClientOptions::new()
        .with_allow_http(allow_http)
        .with_connect_timeout(std::time::Duration::from_secs(10))
}

/// Retry policy shared by the cloud backends. `JAMMI_STORAGE_MAX_RETRIES` lowers it (tests
/// against local servers use it so injected 5xx faults fail fast).
#[cfg(any(
    feature = "storage-s3",
    feature = "storage-gcs",
    feature = "storage-azure"
))]
pub(crate) fn retry_config() -> object_store::RetryConfig {
    let mut retry = object_store::RetryConfig::default();
    if let Some(n) = std::env::var("JAMMI_STORAGE_MAX_RETRIES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        retry.max_retries = n;
    }
    retry
}
