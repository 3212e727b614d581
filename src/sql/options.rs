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
pub const JAMMI_KEYS: [&str; 7] = [
    "vector_column",
    "key_column",
    "metric",
    "quantization",
    "connectivity",
    "expansion_add",
    "expansion_search",
];

/// `jammi.*` options: `jammi.vector_column`, `jammi.key_column`, `jammi.metric`,
/// `jammi.quantization`, `jammi.connectivity`, `jammi.expansion_add`,
/// `jammi.expansion_search`.
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

/// Keys of the `jammi.*` session settings (`SET jammi.<key> = ...`).
pub const SETTING_KEYS: [&str; 3] = ["segment_max_bytes", "quantization", "auto_compact"];

/// `jammi.*` session settings, read by the writes of the session: `SET
/// jammi.segment_max_bytes = '256MiB'` bounds the rows of each segment an `INSERT`,
/// `UPDATE` or `MERGE` writes (a larger write is split into several); `SET
/// jammi.quantization = 'i8'` is the index precision of the tables `CREATE TABLE ... AS`
/// creates through `JammiSession::sql` (the CLI, Python; appends keep their table's); `SET
/// jammi.auto_compact = false` stops its writes merging the small segments they add. Only
/// settings that were set are listed, so a session's `SHOW ALL` is unchanged until one is.
#[derive(Debug, Clone, Default)]
pub struct JammiSettings {
    /// Bytes of rows (Arrow's in-memory size) per segment.
    pub segment_max_bytes: Option<u64>,
    /// Index precision of new tables.
    pub quantization: Option<crate::format::Quantization>,
    /// Whether writes merge the size tiers of small segments they fill.
    pub auto_compact: Option<bool>,
}

impl ExtensionOptions for JammiSettings {
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
        match short {
            "segment_max_bytes" => {
                self.segment_max_bytes =
                    Some(parse_bytes(value).map_err(|e| {
                        DataFusionError::Configuration(format!("jammi.{short}: {e}"))
                    })?);
                Ok(())
            }
            "quantization" => {
                let q = value.parse().map_err(|e: crate::error::JammiError| {
                    DataFusionError::Configuration(e.to_string())
                })?;
                self.quantization = Some(q);
                Ok(())
            }
            "auto_compact" => {
                let on = parse_bool(value)
                    .map_err(|e| DataFusionError::Configuration(format!("jammi.{short}: {e}")))?;
                self.auto_compact = Some(on);
                Ok(())
            }
            _ => Err(DataFusionError::Configuration(format!(
                "unknown setting 'jammi.{short}'; valid settings: {}",
                SETTING_KEYS.map(|k| format!("jammi.{k}")).join(", ")
            ))),
        }
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let budget = self.segment_max_bytes.map(|b| ConfigEntry {
            key: "jammi.segment_max_bytes".into(),
            value: Some(b.to_string()),
            description: "bytes of rows per segment a write of this session adds",
        });
        let precision = self.quantization.map(|q| ConfigEntry {
            key: "jammi.quantization".into(),
            value: Some(q.to_string()),
            description: "index precision of the tables this session creates",
        });
        let merges = self.auto_compact.map(|on| ConfigEntry {
            key: "jammi.auto_compact".into(),
            value: Some(on.to_string()),
            description: "whether this session's writes merge the small segments they add",
        });
        budget.into_iter().chain(precision).chain(merges).collect()
    }
}

impl ConfigExtension for JammiSettings {
    const PREFIX: &'static str = "jammi";
}

/// `value`'s leading number and the unit after it (lower case), spaces ignored.
fn number_and_unit(value: &str) -> (&str, String) {
    let v = value.trim();
    let split = v
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(v.len());
    (v[..split].trim(), v[split..].trim().to_ascii_lowercase())
}

/// A positive byte size: a number with an optional unit (`B`, `KB`/`KiB`, `MB`/`MiB`,
/// `GB`/`GiB`, `TB`/`TiB`; case and spaces ignored), e.g. `'256MiB'`, `'1 GB'`, `'65536'`.
pub fn parse_bytes(value: &str) -> std::result::Result<u64, String> {
    let (number, unit) = number_and_unit(value);
    let scale: u64 = match unit.as_str() {
        "" | "b" => 1,
        "kb" => 1_000,
        "kib" | "k" => 1 << 10,
        "mb" => 1_000_000,
        "mib" | "m" => 1 << 20,
        "gb" => 1_000_000_000,
        "gib" | "g" => 1 << 30,
        "tb" => 1_000_000_000_000,
        "tib" | "t" => 1 << 40,
        _ => {
            return Err(format!(
                "'{value}' is not a size: use e.g. '256MiB', '1GB' or bytes"
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a size: use e.g. '256MiB', '1GB' or bytes"))?;
    let bytes = n * scale as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("'{value}' must be at least 1 byte"));
    }
    Ok(bytes as u64)
}

/// `true` or `false` (case and spaces ignored).
pub fn parse_bool(value: &str) -> std::result::Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("'{value}' is not a boolean: use 'true' or 'false'")),
    }
}

/// A duration: a number with a unit `s`, `m`, `h`, `d` or `w` (e.g. `'7d'`, `'36h'`,
/// `'0s'`), or seconds without one.
pub fn parse_duration(value: &str) -> std::result::Result<std::time::Duration, String> {
    let (number, unit) = number_and_unit(value);
    let scale = match unit.as_str() {
        "" | "s" | "sec" | "secs" => 1.0,
        "m" | "min" | "mins" => 60.0,
        "h" | "hour" | "hours" => 3600.0,
        "d" | "day" | "days" => 86_400.0,
        "w" | "week" | "weeks" => 604_800.0,
        _ => {
            return Err(format!(
                "'{value}' is not a duration: use e.g. '7d', '12h' or '30m'"
            ));
        }
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("'{value}' is not a duration: use e.g. '7d', '12h' or '30m'"))?;
    std::time::Duration::try_from_secs_f64(n * scale)
        .map_err(|_| format!("'{value}' is not a duration: use e.g. '7d', '12h' or '30m'"))
}

/// The session's `jammi.quantization`, if set.
pub(crate) fn session_quantization(
    state: &dyn datafusion::catalog::Session,
) -> Option<crate::format::Quantization> {
    state
        .config_options()
        .extensions
        .get::<JammiSettings>()
        .and_then(|s| s.quantization)
}

/// The session's settings for its writes (`jammi.segment_max_bytes`, `jammi.auto_compact`).
pub(crate) fn session_write(
    state: &dyn datafusion::catalog::Session,
) -> crate::store::WriteSettings {
    let settings = state.config_options().extensions.get::<JammiSettings>();
    crate::store::WriteSettings {
        segment_max_bytes: settings.and_then(|s| s.segment_max_bytes),
        auto_compact: settings.and_then(|s| s.auto_compact),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_and_without_units_and_bad_ones_name_the_value() {
        assert_eq!(parse_bytes("256MiB"), Ok(256 << 20));
        assert_eq!(parse_bytes(" 1 GB "), Ok(1_000_000_000));
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("0.5KiB"), Ok(512));
        assert_eq!(
            parse_duration("7d"),
            Ok(std::time::Duration::from_secs(7 * 86_400))
        );
        assert_eq!(parse_duration("0s"), Ok(std::time::Duration::ZERO));
        assert_eq!(parse_duration("90"), Ok(std::time::Duration::from_secs(90)));
        for bad in ["", "-1d", "soon", "3 fortnights"] {
            let e = parse_duration(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        for bad in ["", "0", "-1MiB", "12 parsecs", "MiB", "0.1"] {
            let e = parse_bytes(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
    }
}
