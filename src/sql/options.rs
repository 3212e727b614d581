//! The `aws.*`, `gcp.*`, `azure.*` and `jammi.*` option namespaces, registered as
//! DataFusion table-option extensions so `OPTIONS ('aws.region' ...)` is accepted wherever
//! DataFusion parses table options (e.g. `COPY ... TO`). Keys are checked as they are set:
//! an unknown key is an error naming it. Listing the options redacts secrets.

use std::any::Any;
use std::collections::BTreeMap;

use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::error::{DataFusionError, Result};

use crate::storage::config::is_secret_key;
use crate::storage::{CloudConfig, Scheme};

macro_rules! cloud_namespace {
    ($name:ident, $prefix:literal, $scheme:expr, $doc:literal) => {
        #[doc = $doc]
        #[derive(Debug, Clone, Default)]
        pub struct $name {
            values: BTreeMap<String, String>,
        }

        impl ExtensionOptions for $name {
            fn as_any(&self) -> &dyn Any {
                self
            }

            fn as_any_mut(&mut self) -> &mut dyn Any {
                self
            }

            fn cloned(&self) -> Box<dyn ExtensionOptions> {
                Box::new(self.clone())
            }

            fn set(&mut self, key: &str, value: &str) -> Result<()> {
                let full = if key.contains('.') {
                    key.to_string()
                } else {
                    format!("{}.{key}", $prefix)
                };
                let mut probe = CloudConfig::empty_for($scheme).expect("cloud scheme");
                probe.set(&full, value).map_err(DataFusionError::from)?;
                self.values.insert(full, value.to_string());
                Ok(())
            }

            fn entries(&self) -> Vec<ConfigEntry> {
                self.values
                    .iter()
                    .map(|(k, v)| ConfigEntry {
                        key: k.clone(),
                        value: Some(if is_secret_key(k) {
                            "<redacted>".to_string()
                        } else {
                            v.clone()
                        }),
                        description: "storage option",
                    })
                    .collect()
            }
        }

        impl ConfigExtension for $name {
            const PREFIX: &'static str = $prefix;
        }
    };
}

cloud_namespace!(
    AwsOptions,
    "aws",
    Scheme::S3,
    "`aws.*` options (S3 and S3-compatible)."
);
cloud_namespace!(
    GcpOptions,
    "gcp",
    Scheme::Gcs,
    "`gcp.*` options (Google Cloud Storage)."
);
cloud_namespace!(
    AzureOptions,
    "azure",
    Scheme::Azure,
    "`azure.*` options (Azure Blob)."
);

/// Keys of the `jammi.*` namespace (`CREATE EXTERNAL TABLE` indexing options).
pub const JAMMI_KEYS: [&str; 6] = [
    "vector_column",
    "key_column",
    "metric",
    "connectivity",
    "expansion_add",
    "expansion_search",
];

/// `jammi.*` options: `jammi.vector_column`, `jammi.key_column`, `jammi.metric`,
/// `jammi.connectivity`, `jammi.expansion_add`, `jammi.expansion_search`.
#[derive(Debug, Clone, Default)]
pub struct JammiOptions {
    values: BTreeMap<String, String>,
}

impl ExtensionOptions for JammiOptions {
    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let short = key.strip_prefix("jammi.").unwrap_or(key);
        if !JAMMI_KEYS.contains(&short) {
            return Err(DataFusionError::Configuration(format!(
                "unknown option key 'jammi.{short}'; valid keys: {}",
                JAMMI_KEYS.map(|k| format!("jammi.{k}")).join(", ")
            )));
        }
        self.values.insert(short.to_string(), value.to_string());
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        self.values
            .iter()
            .map(|(k, v)| ConfigEntry {
                key: format!("jammi.{k}"),
                value: Some(v.clone()),
                description: "jammi indexing option",
            })
            .collect()
    }
}

impl ConfigExtension for JammiOptions {
    const PREFIX: &'static str = "jammi";
}
