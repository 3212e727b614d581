//! `azure://` and `abfss://` through object_store's Azure Blob client.
//!
//! Without explicit credentials the client uses `AZURE_*` environment variables (including
//! workload identity), then Managed Identity; `use_azure_cli` selects `az login` credentials.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::azure::MicrosoftAzureBuilder;

use crate::error::{JammiError, Result};
use crate::storage::backends::{client_options, retry_config};
use crate::storage::config::AzureConfig;
use crate::storage::url::StorageUrl;

/// Azurite's well-known development account (public, documented by Microsoft).
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

pub(crate) fn build(url: &StorageUrl, cfg: Option<&AzureConfig>) -> Result<Arc<dyn ObjectStore>> {
    let mut b = MicrosoftAzureBuilder::from_env().with_container_name(url.bucket());
    if let Some(acct) = url.account() {
        b = b.with_account(acct);
    }
    let mut allow_http = false;
    if let Some(c) = cfg {
        if let Some(a) = &c.account_name {
            b = b.with_account(a);
        }
        if let Some(k) = &c.account_key {
            b = b.with_access_key(k);
        }
        if let Some(sas) = &c.sas_token {
            b = b.with_sas_authorization(parse_sas(sas)?);
        }
        if let Some(id) = &c.client_id {
            b = b.with_client_id(id);
        }
        if let Some(s) = &c.client_secret {
            b = b.with_client_secret(s);
        }
        if let Some(t) = &c.tenant_id {
            b = b.with_tenant_id(t);
        }
        if let Some(e) = &c.endpoint {
            b = b.with_endpoint(e.clone());
        }
        if c.use_emulator == Some(true) {
            allow_http = true;
            match &c.endpoint {
                // object_store's emulator mode takes its URL only from AZURITE_BLOB_STORAGE_URL;
                // with an explicit endpoint, use Azurite's well-known account directly.
                Some(_) => {
                    if c.account_name.is_none() {
                        b = b.with_account(EMULATOR_ACCOUNT);
                    }
                    if c.account_key.is_none() && c.sas_token.is_none() && c.client_secret.is_none()
                    {
                        b = b.with_access_key(EMULATOR_KEY);
                    }
                }
                None => b = b.with_use_emulator(true),
            }
        }
        if let Some(cli) = c.use_azure_cli {
            b = b.with_use_azure_cli(cli);
        }
        if let Some(s) = c.skip_signature {
            b = b.with_skip_signature(s);
        }
        allow_http |= c.allow_http.unwrap_or(false);
    }
    let store = b
        .with_client_options(client_options(allow_http))
        .with_retry(retry_config())
        .build()
        .map_err(|e| {
            JammiError::Config(format!(
                "cannot build the Azure client for {url}: {}",
                scrub(&e.to_string())
            ))
        })?;
    Ok(Arc::new(store))
}

/// `sv=...&sig=...` (optionally with a leading `?`) → query pairs. Errors never echo it.
fn parse_sas(sas: &str) -> Result<Vec<(String, String)>> {
    let pairs: Vec<(String, String)> =
        url::form_urlencoded::parse(sas.trim_start_matches('?').as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
    if pairs.is_empty() || !pairs.iter().any(|(k, _)| k == "sig") {
        return Err(JammiError::Config(
            "option 'azure.sas_token' is not a SAS query string (expected 'sv=...&sig=...')".into(),
        ));
    }
    Ok(pairs)
}

/// Builder errors may quote configuration values; keep only the first clause.
fn scrub(msg: &str) -> String {
    if msg.to_ascii_lowercase().contains("sig=") || msg.contains("key") {
        "invalid Azure credentials configuration".to_string()
    } else {
        msg.to_string()
    }
}
