//! `gs://` through object_store's Google Cloud Storage client (XML API).
//!
//! Without explicit credentials the client uses `GOOGLE_*` environment variables, then
//! Application Default Credentials, then the metadata server.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::gcp::GoogleCloudStorageBuilder;

use crate::error::{JammiError, Result};
use crate::storage::backends::{client_options, retry_config};
use crate::storage::config::GcsConfig;
use crate::storage::url::StorageUrl;

pub(crate) fn build(url: &StorageUrl, cfg: Option<&GcsConfig>) -> Result<Arc<dyn ObjectStore>> {
    let mut b = GoogleCloudStorageBuilder::from_env().with_bucket_name(url.bucket());
    let mut allow_http = false;
    if let Some(c) = cfg {
        if let Some(p) = &c.service_account_path {
            b = b.with_service_account_path(p);
        }
        if let Some(k) = &c.service_account_key {
            b = b.with_service_account_key(k);
        }
        if let Some(p) = &c.application_credentials_path {
            b = b.with_application_credentials(p);
        }
        if let Some(e) = &c.endpoint {
            b = b.with_base_url(e);
        }
        if c.skip_signature == Some(true) {
            // Unauthenticated requests: no token is fetched (object_store would otherwise
            // still ask the metadata server for one).
            b = b.with_skip_signature(true).with_credentials(Arc::new(
                object_store::client::StaticCredentialProvider::new(
                    object_store::gcp::GcpCredential {
                        bearer: String::new(),
                    },
                ),
            ));
        }
        allow_http = c.allow_http.unwrap_or(false);
    }
    let store = b
        .with_client_options(client_options(allow_http))
        .with_retry(retry_config())
        .build()
        .map_err(|e| JammiError::Config(format!("cannot build the GCS client for {url}: {e}")))?;
    Ok(Arc::new(store))
}
