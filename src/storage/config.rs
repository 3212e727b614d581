//! Cloud configuration: typed per-provider settings, built from option maps that use
//! datafusion-cli's keys (`aws.region`) or object_store's (`aws_region`, `region`).
//!
//! Secret fields are redacted in `Debug`, skipped by `Serialize` (so nothing persisted can
//! hold them) and never quoted in errors: errors name keys, not values.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::storage::url::Scheme;

/// Per-source (or per-root) cloud settings. `None` in a `SourceConnection` means the
/// ambient credential chain of the URL's cloud.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "provider", rename_all = "lowercase")]
pub enum CloudConfig {
    /// Amazon S3 and S3-compatible stores.
    S3(S3Config),
    /// Google Cloud Storage.
    Gcs(GcsConfig),
    /// Azure Blob Storage / ADLS Gen2.
    Azure(AzureConfig),
}

/// S3 and S3-compatible (MinIO, R2, LocalStack) settings. Every field is optional; unset
/// fields come from the AWS environment (`AWS_*` variables, profiles, SSO, IMDS, ...).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct S3Config {
    /// Region, e.g. `us-east-1`. Detected from the bucket when unset and no endpoint is given.
    pub region: Option<String>,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Static access key id (with `secret_access_key`).
    #[serde(skip_serializing)]
    pub access_key_id: Option<String>,
    /// Static secret access key. Secret.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Session token for temporary credentials. Secret.
    #[serde(skip_serializing)]
    pub session_token: Option<String>,
    /// Named profile from `~/.aws/config` / `~/.aws/credentials` (SSO, `credential_process`, roles).
    pub profile: Option<String>,
    /// Allow plain `http://` endpoints (local servers).
    pub allow_http: Option<bool>,
    /// Send unsigned requests (public buckets).
    pub skip_signature: Option<bool>,
    /// Virtual-hosted-style requests (`bucket.endpoint`) instead of path style.
    pub virtual_hosted_style: Option<bool>,
}

/// Google Cloud Storage settings. Unset credentials mean Application Default Credentials,
/// then the metadata server.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct GcsConfig {
    /// Path to a service-account JSON key file.
    pub service_account_path: Option<String>,
    /// Service-account JSON key contents. Secret.
    #[serde(skip_serializing)]
    pub service_account_key: Option<String>,
    /// Path to an application-default-credentials file.
    pub application_credentials_path: Option<String>,
    /// Endpoint override (emulators), e.g. `http://127.0.0.1:4443`.
    pub endpoint: Option<String>,
    /// Allow plain `http://` endpoints.
    pub allow_http: Option<bool>,
    /// Send unauthenticated requests (public buckets, emulators).
    pub skip_signature: Option<bool>,
}

/// Azure Blob Storage / ADLS Gen2 settings. Unset credentials mean the environment
/// (`AZURE_*`), workload identity, then Managed Identity (or the Azure CLI when asked).
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct AzureConfig {
    /// Storage account name.
    pub account_name: Option<String>,
    /// Storage account key. Secret.
    #[serde(skip_serializing)]
    pub account_key: Option<String>,
    /// Shared access signature (query string form, with or without a leading `?`). Secret.
    #[serde(skip_serializing)]
    pub sas_token: Option<String>,
    /// Service principal client id (with `client_secret` and `tenant_id`).
    pub client_id: Option<String>,
    /// Service principal client secret. Secret.
    #[serde(skip_serializing)]
    pub client_secret: Option<String>,
    /// Entra ID tenant id.
    pub tenant_id: Option<String>,
    /// Blob endpoint override, e.g. `http://127.0.0.1:10000/devstoreaccount1`.
    pub endpoint: Option<String>,
    /// Use the Azurite emulator's well-known account, key and endpoint.
    pub use_emulator: Option<bool>,
    /// Use credentials from the Azure CLI (`az login`).
    pub use_azure_cli: Option<bool>,
    /// Allow plain `http://` endpoints.
    pub allow_http: Option<bool>,
    /// Send unauthenticated requests (public containers).
    pub skip_signature: Option<bool>,
}

const REDACTED: &str = "<redacted>";

fn secret(v: &Option<String>) -> Option<&'static str> {
    v.as_ref().map(|_| REDACTED)
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("region", &self.region)
            .field("endpoint", &self.endpoint)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &secret(&self.secret_access_key))
            .field("session_token", &secret(&self.session_token))
            .field("profile", &self.profile)
            .field("allow_http", &self.allow_http)
            .field("skip_signature", &self.skip_signature)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

impl fmt::Debug for GcsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GcsConfig")
            .field("service_account_path", &self.service_account_path)
            .field("service_account_key", &secret(&self.service_account_key))
            .field(
                "application_credentials_path",
                &self.application_credentials_path,
            )
            .field("endpoint", &self.endpoint)
            .field("allow_http", &self.allow_http)
            .field("skip_signature", &self.skip_signature)
            .finish()
    }
}

impl fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureConfig")
            .field("account_name", &self.account_name)
            .field("account_key", &secret(&self.account_key))
            .field("sas_token", &secret(&self.sas_token))
            .field("client_id", &self.client_id)
            .field("client_secret", &secret(&self.client_secret))
            .field("tenant_id", &self.tenant_id)
            .field("endpoint", &self.endpoint)
            .field("use_emulator", &self.use_emulator)
            .field("use_azure_cli", &self.use_azure_cli)
            .field("allow_http", &self.allow_http)
            .field("skip_signature", &self.skip_signature)
            .finish()
    }
}

impl fmt::Debug for CloudConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloudConfig::S3(c) => c.fmt(f),
            CloudConfig::Gcs(c) => c.fmt(f),
            CloudConfig::Azure(c) => c.fmt(f),
        }
    }
}

impl fmt::Display for CloudConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One typed option key: the field it sets and whether its value is secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    S3Region,
    S3Endpoint,
    S3AccessKeyId,
    S3SecretAccessKey,
    S3SessionToken,
    S3Profile,
    S3AllowHttp,
    S3SkipSignature,
    S3VirtualHosted,
    GcsServiceAccountPath,
    GcsServiceAccountKey,
    GcsApplicationCredentials,
    GcsEndpoint,
    GcsAllowHttp,
    GcsSkipSignature,
    AzAccountName,
    AzAccountKey,
    AzSasToken,
    AzClientId,
    AzClientSecret,
    AzTenantId,
    AzEndpoint,
    AzUseEmulator,
    AzUseAzureCli,
    AzAllowHttp,
    AzSkipSignature,
}

/// Which option namespace a key belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Namespace {
    Aws,
    Gcp,
    Azure,
}

impl Namespace {
    fn of(scheme: Scheme) -> Option<Self> {
        match scheme {
            Scheme::S3 => Some(Namespace::Aws),
            Scheme::Gcs => Some(Namespace::Gcp),
            Scheme::Azure => Some(Namespace::Azure),
            Scheme::File | Scheme::Memory => None,
        }
    }

    /// `aws`, `gcp`, `azure`: the prefix of this namespace's SQL option keys.
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            Namespace::Aws => "aws",
            Namespace::Gcp => "gcp",
            Namespace::Azure => "azure",
        }
    }

    /// The namespace a key is written in (`aws.x`, `aws_x`, `google_x`, `azure_x`), if any.
    pub(crate) fn of_key(key: &str) -> Option<Self> {
        let k = key.to_ascii_lowercase();
        if k.starts_with("aws.") || k.starts_with("aws_") {
            Some(Namespace::Aws)
        } else if k.starts_with("gcp.") || k.starts_with("google_") || k.starts_with("gcs_") {
            Some(Namespace::Gcp)
        } else if k.starts_with("azure.") || k.starts_with("azure_") {
            Some(Namespace::Azure)
        } else {
            None
        }
    }
}

/// Maps a key (any accepted spelling, namespace prefix already removed) to its field.
fn field_for(ns: Namespace, key: &str) -> Option<Field> {
    use Field::*;
    Some(match (ns, key) {
        (Namespace::Aws, "region" | "aws_region" | "default_region" | "aws_default_region") => {
            S3Region
        }
        (
            Namespace::Aws,
            "endpoint" | "endpoint_url" | "aws_endpoint" | "aws_endpoint_url" | "oss" | "cos",
        ) => S3Endpoint,
        (Namespace::Aws, "access_key_id" | "aws_access_key_id") => S3AccessKeyId,
        (Namespace::Aws, "secret_access_key" | "aws_secret_access_key") => S3SecretAccessKey,
        (Namespace::Aws, "session_token" | "token" | "aws_session_token" | "aws_token") => {
            S3SessionToken
        }
        (Namespace::Aws, "profile" | "aws_profile") => S3Profile,
        (Namespace::Aws, "allow_http" | "aws_allow_http") => S3AllowHttp,
        (Namespace::Aws, "skip_signature" | "nosign" | "aws_skip_signature") => S3SkipSignature,
        (
            Namespace::Aws,
            "virtual_hosted_style_request"
            | "virtual_hosted_style"
            | "aws_virtual_hosted_style_request",
        ) => S3VirtualHosted,
        (
            Namespace::Gcp,
            "service_account_path"
            | "service_account"
            | "google_service_account"
            | "google_service_account_path",
        ) => GcsServiceAccountPath,
        (Namespace::Gcp, "service_account_key" | "google_service_account_key") => {
            GcsServiceAccountKey
        }
        (
            Namespace::Gcp,
            "application_credentials_path"
            | "application_credentials"
            | "google_application_credentials",
        ) => GcsApplicationCredentials,
        (Namespace::Gcp, "endpoint" | "base_url" | "google_base_url" | "gcs_base_url") => {
            GcsEndpoint
        }
        (Namespace::Gcp, "allow_http" | "google_allow_http") => GcsAllowHttp,
        (Namespace::Gcp, "skip_signature" | "google_skip_signature") => GcsSkipSignature,
        (
            Namespace::Azure,
            "account_name"
            | "account"
            | "storage_account_name"
            | "azure_storage_account_name"
            | "azure_storage_account",
        ) => AzAccountName,
        (
            Namespace::Azure,
            "account_key"
            | "access_key"
            | "master_key"
            | "azure_storage_account_key"
            | "azure_storage_access_key"
            | "azure_storage_master_key",
        ) => AzAccountKey,
        (
            Namespace::Azure,
            "sas_token" | "sas" | "sas_key" | "azure_storage_sas_token" | "azure_storage_sas_key",
        ) => AzSasToken,
        (Namespace::Azure, "client_id" | "azure_client_id" | "azure_storage_client_id") => {
            AzClientId
        }
        (
            Namespace::Azure,
            "client_secret" | "azure_client_secret" | "azure_storage_client_secret",
        ) => AzClientSecret,
        (
            Namespace::Azure,
            "tenant_id"
            | "authority_id"
            | "azure_tenant_id"
            | "azure_storage_tenant_id"
            | "azure_storage_authority_id",
        ) => AzTenantId,
        (Namespace::Azure, "endpoint" | "azure_storage_endpoint" | "azure_endpoint") => AzEndpoint,
        (Namespace::Azure, "use_emulator" | "azure_storage_use_emulator") => AzUseEmulator,
        (Namespace::Azure, "use_azure_cli" | "azure_use_azure_cli") => AzUseAzureCli,
        (Namespace::Azure, "allow_http" | "azure_allow_http") => AzAllowHttp,
        (Namespace::Azure, "skip_signature" | "azure_skip_signature") => AzSkipSignature,
        _ => return None,
    })
}

fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(JammiError::Config(format!(
            "option '{key}' expects true or false, got '{value}'"
        ))),
    }
}

impl CloudConfig {
    /// An empty configuration for the cloud of `scheme` (`None` for local schemes).
    pub fn empty_for(scheme: Scheme) -> Option<CloudConfig> {
        Some(match Namespace::of(scheme)? {
            Namespace::Aws => CloudConfig::S3(S3Config::default()),
            Namespace::Gcp => CloudConfig::Gcs(GcsConfig::default()),
            Namespace::Azure => CloudConfig::Azure(AzureConfig::default()),
        })
    }

    /// Builds the configuration for a URL of `scheme` from option keys such as
    /// `aws.region`, `aws_region`, `gcp.service_account_path`, `azure.sas_token`.
    ///
    /// Keys outside the cloud namespaces (e.g. `format.*`) are ignored. A cloud key that
    /// does not exist, or that belongs to another cloud than the URL's, is an error naming
    /// the key. Returns `None` when no cloud key is present (ambient credentials).
    pub fn from_options<'a, I>(scheme: Scheme, options: I) -> Result<Option<CloudConfig>>
    where
        I: IntoIterator<Item = (&'a String, &'a String)>,
    {
        let mut cfg: Option<CloudConfig> = None;
        for (key, value) in options {
            let Some(ns) = Namespace::of_key(key) else {
                continue;
            };
            let want = Namespace::of(scheme);
            if want != Some(ns) {
                let expected = match want {
                    Some(w) => format!("only '{}.*' keys apply", w.prefix()),
                    None => "local locations take no cloud options".to_string(),
                };
                return Err(JammiError::Config(format!(
                    "option '{key}' does not apply to a {scheme:?} location; {expected}"
                )));
            }
            let c = cfg.get_or_insert_with(|| CloudConfig::empty_for(scheme).expect("cloud"));
            c.set(key, value)?;
        }
        if let Some(c) = &cfg {
            c.validate()?;
        }
        Ok(cfg)
    }

    /// Like [`CloudConfig::from_options`], for options that can only be cloud settings
    /// (a database root's): any key outside `aws.*`, `gcp.*`, `azure.*` is an error
    /// naming it.
    pub fn from_cloud_options(
        scheme: Scheme,
        options: &HashMap<String, String>,
    ) -> Result<Option<CloudConfig>> {
        // The least such key, so the error does not depend on the map's order.
        if let Some(bad) = options
            .keys()
            .filter(|k| Namespace::of_key(k).is_none())
            .min()
        {
            return Err(JammiError::Config(format!(
                "unknown storage option '{bad}': expected aws.*, gcp.* or azure.* keys"
            )));
        }
        Self::from_options(scheme, options)
    }

    /// Sets one option by key (any accepted spelling). Errors name the key, never the value.
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let lower = key.to_ascii_lowercase();
        let ns = match self {
            CloudConfig::S3(_) => Namespace::Aws,
            CloudConfig::Gcs(_) => Namespace::Gcp,
            CloudConfig::Azure(_) => Namespace::Azure,
        };
        let dotted = format!("{}.", ns.prefix());
        let short = lower.strip_prefix(&dotted).unwrap_or(&lower);
        let field = field_for(ns, short).ok_or_else(|| {
            JammiError::Config(format!(
                "unknown option key '{key}'; valid '{}.*' keys: {}",
                ns.prefix(),
                valid_keys(ns)
            ))
        })?;
        let v = Some(value.to_string());
        let b = || parse_bool(key, value).map(Some);
        use Field::*;
        match (self, field) {
            (CloudConfig::S3(c), S3Region) => c.region = v,
            (CloudConfig::S3(c), S3Endpoint) => c.endpoint = v,
            (CloudConfig::S3(c), S3AccessKeyId) => c.access_key_id = v,
            (CloudConfig::S3(c), S3SecretAccessKey) => c.secret_access_key = v,
            (CloudConfig::S3(c), S3SessionToken) => c.session_token = v,
            (CloudConfig::S3(c), S3Profile) => c.profile = v,
            (CloudConfig::S3(c), S3AllowHttp) => c.allow_http = b()?,
            (CloudConfig::S3(c), S3SkipSignature) => c.skip_signature = b()?,
            (CloudConfig::S3(c), S3VirtualHosted) => c.virtual_hosted_style = b()?,
            (CloudConfig::Gcs(c), GcsServiceAccountPath) => c.service_account_path = v,
            (CloudConfig::Gcs(c), GcsServiceAccountKey) => c.service_account_key = v,
            (CloudConfig::Gcs(c), GcsApplicationCredentials) => c.application_credentials_path = v,
            (CloudConfig::Gcs(c), GcsEndpoint) => c.endpoint = v,
            (CloudConfig::Gcs(c), GcsAllowHttp) => c.allow_http = b()?,
            (CloudConfig::Gcs(c), GcsSkipSignature) => c.skip_signature = b()?,
            (CloudConfig::Azure(c), AzAccountName) => c.account_name = v,
            (CloudConfig::Azure(c), AzAccountKey) => c.account_key = v,
            (CloudConfig::Azure(c), AzSasToken) => c.sas_token = v,
            (CloudConfig::Azure(c), AzClientId) => c.client_id = v,
            (CloudConfig::Azure(c), AzClientSecret) => c.client_secret = v,
            (CloudConfig::Azure(c), AzTenantId) => c.tenant_id = v,
            (CloudConfig::Azure(c), AzEndpoint) => c.endpoint = v,
            (CloudConfig::Azure(c), AzUseEmulator) => c.use_emulator = b()?,
            (CloudConfig::Azure(c), AzUseAzureCli) => c.use_azure_cli = b()?,
            (CloudConfig::Azure(c), AzAllowHttp) => c.allow_http = b()?,
            (CloudConfig::Azure(c), AzSkipSignature) => c.skip_signature = b()?,
            _ => unreachable!("field_for only returns fields of the config's namespace"),
        }
        Ok(())
    }

    /// Rejects partial credential sets and contradictory settings, naming the keys.
    pub fn validate(&self) -> Result<()> {
        match self {
            CloudConfig::S3(c) => c.validate(),
            CloudConfig::Gcs(c) => c.validate(),
            CloudConfig::Azure(c) => c.validate(),
        }
    }

    /// `true` if any secret field is set.
    pub fn has_secrets(&self) -> bool {
        match self {
            CloudConfig::S3(c) => {
                c.access_key_id.is_some()
                    || c.secret_access_key.is_some()
                    || c.session_token.is_some()
            }
            CloudConfig::Gcs(c) => c.service_account_key.is_some(),
            CloudConfig::Azure(c) => {
                c.account_key.is_some() || c.sas_token.is_some() || c.client_secret.is_some()
            }
        }
    }

    /// The same configuration with every secret removed (what may be persisted).
    pub fn without_secrets(&self) -> CloudConfig {
        let mut c = self.clone();
        match &mut c {
            CloudConfig::S3(s) => {
                s.access_key_id = None;
                s.secret_access_key = None;
                s.session_token = None;
            }
            CloudConfig::Gcs(g) => g.service_account_key = None,
            CloudConfig::Azure(a) => {
                a.account_key = None;
                a.sas_token = None;
                a.client_secret = None;
            }
        }
        c
    }

    /// The scheme family this configuration is for.
    pub fn scheme(&self) -> Scheme {
        match self {
            CloudConfig::S3(_) => Scheme::S3,
            CloudConfig::Gcs(_) => Scheme::Gcs,
            CloudConfig::Azure(_) => Scheme::Azure,
        }
    }

    /// Endpoint override, part of a store's identity in the registry.
    pub fn endpoint(&self) -> Option<&str> {
        match self {
            CloudConfig::S3(c) => c.endpoint.as_deref(),
            CloudConfig::Gcs(c) => c.endpoint.as_deref(),
            CloudConfig::Azure(c) => c.endpoint.as_deref(),
        }
    }

    /// A fingerprint of the whole configuration, secrets included, keyed by `state` so it
    /// cannot be reversed or compared across processes. Used only in memory.
    pub(crate) fn fingerprint(&self, state: &std::collections::hash_map::RandomState) -> u64 {
        use std::hash::BuildHasher;
        state.hash_one(self)
    }
}

fn valid_keys(ns: Namespace) -> &'static str {
    match ns {
        Namespace::Aws => {
            "aws.access_key_id, aws.secret_access_key, aws.session_token, aws.region, aws.endpoint, \
             aws.profile, aws.allow_http, aws.skip_signature, aws.virtual_hosted_style_request"
        }
        Namespace::Gcp => {
            "gcp.service_account_path, gcp.service_account_key, gcp.application_credentials_path, \
             gcp.endpoint, gcp.allow_http, gcp.skip_signature"
        }
        Namespace::Azure => {
            "azure.account_name, azure.account_key, azure.sas_token, azure.client_id, \
             azure.client_secret, azure.tenant_id, azure.endpoint, azure.use_emulator, \
             azure.use_azure_cli, azure.allow_http, azure.skip_signature"
        }
    }
}

fn missing(prefix: &str, pairs: &[(&str, bool)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(_, set)| !set)
        .map(|(k, _)| format!("{prefix}.{k}"))
        .collect()
}

fn check_endpoint(key: &str, endpoint: &Option<String>, allow_http: Option<bool>) -> Result<()> {
    let Some(e) = endpoint else { return Ok(()) };
    let url = url::Url::parse(e)
        .map_err(|err| JammiError::Config(format!("option '{key}' is not a valid URL: {err}")))?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if allow_http == Some(true) => Ok(()),
        "http" => {
            let ns = key.split('.').next().unwrap_or("");
            Err(JammiError::Config(format!(
                "option '{key}' uses http:// but '{ns}.allow_http' is not 'true'"
            )))
        }
        other => Err(JammiError::Config(format!(
            "option '{key}' must be an http(s) URL, got scheme '{other}'"
        ))),
    }
}

impl S3Config {
    /// See [`CloudConfig::validate`].
    pub fn validate(&self) -> Result<()> {
        let (id, sec) = (
            self.access_key_id.is_some(),
            self.secret_access_key.is_some(),
        );
        if id != sec {
            return Err(JammiError::Config(format!(
                "aws.access_key_id and aws.secret_access_key must be set together (missing: {})",
                missing("aws", &[("access_key_id", id), ("secret_access_key", sec)]).join(", ")
            )));
        }
        if self.session_token.is_some() && !id {
            return Err(JammiError::Config(
                "aws.session_token needs aws.access_key_id and aws.secret_access_key".into(),
            ));
        }
        if self.skip_signature == Some(true) && id {
            return Err(JammiError::Config(
                "aws.skip_signature cannot be combined with aws.access_key_id/aws.secret_access_key"
                    .into(),
            ));
        }
        if self.profile.is_some() && id {
            return Err(JammiError::Config(
                "aws.profile cannot be combined with aws.access_key_id/aws.secret_access_key"
                    .into(),
            ));
        }
        if let Some(r) = &self.region
            && (r.is_empty() || !r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
        {
            return Err(JammiError::Config(format!(
                "option 'aws.region' has an invalid value '{r}'"
            )));
        }
        check_endpoint("aws.endpoint", &self.endpoint, self.allow_http)
    }
}

impl GcsConfig {
    /// See [`CloudConfig::validate`].
    pub fn validate(&self) -> Result<()> {
        let set: Vec<&str> = [
            (
                "gcp.service_account_path",
                self.service_account_path.is_some(),
            ),
            (
                "gcp.service_account_key",
                self.service_account_key.is_some(),
            ),
            (
                "gcp.application_credentials_path",
                self.application_credentials_path.is_some(),
            ),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect();
        if set.len() > 1 {
            return Err(JammiError::Config(format!(
                "set only one of gcp.service_account_path, gcp.service_account_key, \
                 gcp.application_credentials_path (got: {})",
                set.join(", ")
            )));
        }
        if self.skip_signature == Some(true) && !set.is_empty() {
            return Err(JammiError::Config(format!(
                "gcp.skip_signature cannot be combined with {}",
                set.join(", ")
            )));
        }
        check_endpoint("gcp.endpoint", &self.endpoint, self.allow_http)
    }
}

impl AzureConfig {
    /// See [`CloudConfig::validate`].
    pub fn validate(&self) -> Result<()> {
        let (cid, csec, tid) = (
            self.client_id.is_some(),
            self.client_secret.is_some(),
            self.tenant_id.is_some(),
        );
        if csec && !(cid && tid) {
            return Err(JammiError::Config(format!(
                "azure.client_secret needs azure.client_id and azure.tenant_id (missing: {})",
                missing("azure", &[("client_id", cid), ("tenant_id", tid)]).join(", ")
            )));
        }
        let auths: Vec<&str> = [
            ("azure.account_key", self.account_key.is_some()),
            ("azure.sas_token", self.sas_token.is_some()),
            ("azure.client_secret", csec),
        ]
        .iter()
        .filter(|(_, s)| *s)
        .map(|(k, _)| *k)
        .collect();
        if auths.len() > 1 {
            return Err(JammiError::Config(format!(
                "set only one way to authenticate (got: {})",
                auths.join(", ")
            )));
        }
        let emulator = self.use_emulator == Some(true);
        if (self.account_key.is_some() || self.sas_token.is_some())
            && self.account_name.is_none()
            && !emulator
        {
            return Err(JammiError::Config(format!(
                "{} needs azure.account_name",
                auths[0]
            )));
        }
        if self.skip_signature == Some(true) && !auths.is_empty() {
            return Err(JammiError::Config(format!(
                "azure.skip_signature cannot be combined with {}",
                auths.join(", ")
            )));
        }
        if let Some(a) = &self.account_name
            && (a.is_empty()
                || !a
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()))
        {
            return Err(JammiError::Config(format!(
                "option 'azure.account_name' has an invalid value '{a}'"
            )));
        }
        let allow = self.allow_http.or(emulator.then_some(true));
        check_endpoint("azure.endpoint", &self.endpoint, allow)
    }
}

/// Splits an option map into cloud keys and the rest (e.g. `format.*`).
pub(crate) fn split_cloud_options(
    options: &HashMap<String, String>,
) -> (HashMap<String, String>, HashMap<String, String>) {
    options
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .partition(|(k, _)| Namespace::of_key(k).is_some())
}

/// Whether an option key (`aws.secret_access_key`, `azure.sas_token`, ...) is a cloud
/// option whose value must never be shown or kept: a secret field, or an unknown key of a
/// cloud namespace. Keys of other namespaces (`format.*`, `jammi.*`) are not.
pub fn is_secret_option(key: &str) -> bool {
    Namespace::of_key(key).is_some() && is_secret_key(key)
}

/// Whether `key` (any accepted spelling, with or without its namespace prefix) names a
/// secret field. Unknown keys count as secret, so nothing unrecognised is ever shown.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let lower = key.to_ascii_lowercase();
    let Some(ns) = Namespace::of_key(&lower).or_else(|| {
        // Bare keys inside a namespace extension (`access_key_id`) — try each namespace.
        [Namespace::Aws, Namespace::Gcp, Namespace::Azure]
            .into_iter()
            .find(|ns| field_for(*ns, &lower).is_some())
    }) else {
        return true;
    };
    let dotted = format!("{}.", ns.prefix());
    let short = lower.strip_prefix(&dotted).unwrap_or(&lower);
    use Field::*;
    match field_for(ns, short) {
        Some(
            S3SecretAccessKey | S3SessionToken | GcsServiceAccountKey | AzAccountKey | AzSasToken
            | AzClientSecret,
        ) => true,
        Some(_) => false,
        None => true,
    }
}
