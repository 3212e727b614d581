//! `s3://` through object_store's S3 client, with the AWS SDK credential chain.
//!
//! Credentials, in order: the configuration's static keys; `aws.skip_signature`; otherwise the
//! AWS chain — environment variables, the shared config/credentials files (profiles, SSO,
//! `credential_process`, assumed roles), web identity (IRSA), ECS, and IMDS. IMDS is not
//! probed when an endpoint is configured, so runs against a local server never wait on it.
//! When the chain finds nothing the client sends unsigned requests (public buckets).
//! Region: configuration, `AWS_REGION`/`AWS_DEFAULT_REGION`, the profile, else (AWS only)
//! the bucket's region is detected.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::meta::credentials::CredentialsProviderChain;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::client::CredentialProvider;
use tokio::sync::Mutex;

use crate::error::{JammiError, Result};
use crate::storage::backends::{client_options, retry_config};
use crate::storage::config::S3Config;
use crate::storage::url::StorageUrl;

/// Settings after merging the configuration with the `AWS_*` environment.
struct Resolved {
    endpoint: Option<String>,
    allow_http: bool,
    profile: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn resolve(cfg: Option<&S3Config>) -> Resolved {
    let endpoint = cfg
        .and_then(|c| c.endpoint.clone())
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| env("AWS_ENDPOINT"));
    let allow_http = cfg
        .and_then(|c| c.allow_http)
        .or_else(|| env("AWS_ALLOW_HTTP").map(|v| v == "true" || v == "1"))
        .unwrap_or(false);
    let profile = cfg
        .and_then(|c| c.profile.clone())
        .or_else(|| env("AWS_PROFILE"));
    Resolved {
        endpoint,
        allow_http,
        profile,
    }
}

fn static_region(cfg: Option<&S3Config>) -> Option<String> {
    cfg.and_then(|c| c.region.clone())
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
}

/// Builds the store, resolving the region and probing the credential chain. The flag is
/// `true` when the store sends unsigned requests because no credentials were found: such a
/// decision is worth re-checking later.
pub(crate) async fn build(
    url: &StorageUrl,
    cfg: Option<&S3Config>,
) -> Result<(Arc<dyn ObjectStore>, bool)> {
    let r = resolve(cfg);
    let mut region = static_region(cfg);
    if region.is_none() {
        let mut p = aws_config::profile::ProfileFileRegionProvider::builder();
        if let Some(name) = &r.profile {
            p = p.profile_name(name);
        }
        use aws_config::meta::region::ProvideRegion;
        region = p.build().region().await.map(|r| r.to_string());
    }
    if region.is_none() && r.endpoint.is_none() {
        region = object_store::aws::resolve_bucket_region(url.bucket(), &client_options(false))
            .await
            .ok();
    }
    let chain = needs_chain(cfg).then(|| chain(&r));
    let mut unsigned = false;
    if let Some(chain) = &chain {
        // No credentials configured anywhere means a public bucket: unsigned requests. A
        // provider that failed (a timeout, an unreachable endpoint) is not "none": the store
        // keeps the chain, which is asked again on the next request.
        if let Err(e) = chain.provide_credentials().await {
            unsigned = means_no_credentials(&e);
            if unsigned {
                tracing::debug!("no AWS credentials found ({e}); unsigned requests for {url}");
            } else {
                tracing::warn!("AWS credentials are not available yet for {url}: {e}");
            }
        }
    }
    let store = finish(url, cfg, &r, region, if unsigned { None } else { chain })?;
    Ok((store, unsigned))
}

/// Whether a credential-chain error means "nothing is configured" (as opposed to a
/// provider that failed and may work on the next try).
fn means_no_credentials(e: &aws_credential_types::provider::error::CredentialsError) -> bool {
    use aws_credential_types::provider::error::CredentialsError;
    matches!(e, CredentialsError::CredentialsNotLoaded(_))
}

/// Builds the store without I/O; the region falls back to `us-east-1`.
pub(crate) fn build_sync(url: &StorageUrl, cfg: Option<&S3Config>) -> Result<Arc<dyn ObjectStore>> {
    let r = resolve(cfg);
    let chain = needs_chain(cfg).then(|| chain(&r));
    finish(url, cfg, &r, static_region(cfg), chain)
}

fn needs_chain(cfg: Option<&S3Config>) -> bool {
    !cfg.is_some_and(|c| c.access_key_id.is_some() || c.skip_signature == Some(true))
}

fn finish(
    url: &StorageUrl,
    cfg: Option<&S3Config>,
    r: &Resolved,
    region: Option<String>,
    chain: Option<SharedCredentialsProvider>,
) -> Result<Arc<dyn ObjectStore>> {
    let mut b = AmazonS3Builder::new()
        .with_bucket_name(url.bucket())
        .with_region(region.unwrap_or_else(|| "us-east-1".into()))
        .with_client_options(client_options(r.allow_http))
        .with_retry(retry_config());
    if let Some(e) = &r.endpoint {
        b = b.with_endpoint(e);
    }
    match (cfg, chain) {
        (Some(c), _) if c.access_key_id.is_some() => {
            b = b
                .with_access_key_id(c.access_key_id.clone().unwrap_or_default())
                .with_secret_access_key(c.secret_access_key.clone().unwrap_or_default());
            if let Some(t) = &c.session_token {
                b = b.with_token(t);
            }
        }
        (_, Some(chain)) => {
            b = b.with_credentials(Arc::new(SdkCredentials {
                provider: chain,
                cached: Mutex::new(None),
            }));
        }
        _ => b = b.with_skip_signature(true),
    }
    if let Some(v) = cfg.and_then(|c| c.virtual_hosted_style) {
        b = b.with_virtual_hosted_style_request(v);
    }
    let store = b
        .build()
        .map_err(|e| JammiError::Config(format!("cannot build the S3 client for {url}: {e}")))?;
    Ok(Arc::new(store))
}

/// The AWS credential chain (aws-config's providers, without IMDS when an endpoint is set).
fn chain(r: &Resolved) -> SharedCredentialsProvider {
    use aws_config::ecs::EcsCredentialsProvider;
    use aws_config::environment::EnvironmentVariableCredentialsProvider;
    use aws_config::imds::credentials::ImdsCredentialsProvider;
    use aws_config::profile::ProfileFileCredentialsProvider;
    use aws_config::web_identity_token::WebIdentityTokenCredentialsProvider;

    let mut profile = ProfileFileCredentialsProvider::builder();
    if let Some(name) = &r.profile {
        profile = profile.profile_name(name);
    }
    let mut c = CredentialsProviderChain::first_try(
        "Environment",
        EnvironmentVariableCredentialsProvider::new(),
    )
    .or_else("Profile", profile.build())
    .or_else(
        "WebIdentityToken",
        WebIdentityTokenCredentialsProvider::builder().build(),
    )
    .or_else("EcsContainer", EcsCredentialsProvider::builder().build());
    if r.endpoint.is_none() {
        c = c.or_else(
            "Ec2InstanceMetadata",
            ImdsCredentialsProvider::builder().build(),
        );
    }
    SharedCredentialsProvider::new(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::provider::error::CredentialsError;

    #[test]
    fn only_an_empty_chain_means_unsigned_requests() {
        assert!(means_no_credentials(&CredentialsError::not_loaded("none")));
        assert!(!means_no_credentials(
            &CredentialsError::provider_timed_out(Duration::from_secs(1))
        ));
        assert!(!means_no_credentials(&CredentialsError::provider_error(
            "503 from the metadata endpoint"
        )));
        assert!(!means_no_credentials(
            &CredentialsError::invalid_configuration("bad profile")
        ));
    }
}

/// Bridges an AWS SDK credential provider to object_store, caching until near expiry.
#[derive(Debug)]
struct SdkCredentials {
    provider: SharedCredentialsProvider,
    cached: Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

#[async_trait]
impl CredentialProvider for SdkCredentials {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((cred, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|t| {
                t.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > Duration::from_secs(300))
            });
            if fresh {
                return Ok(cred.clone());
            }
        }
        let c = self.provider.provide_credentials().await.map_err(|e| {
            object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            }
        })?;
        let cred = Arc::new(AwsCredential {
            key_id: c.access_key_id().to_string(),
            secret_key: c.secret_access_key().to_string(),
            token: c.session_token().map(str::to_string),
        });
        *cached = Some((cred.clone(), c.expiry()));
        Ok(cred)
    }
}
