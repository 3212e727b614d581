//! Sources: file-shaped data (Parquet, CSV, JSON, Arrow IPC, Avro) registered by storage
//! URL and queried as `<source>.public.<table>`.

pub mod listing;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::storage::config::{Namespace, split_cloud_options};
use crate::storage::{CloudConfig, StorageUrl};

/// What kind of source a connection describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum SourceType {
    /// Files (one object, a prefix/directory, or a glob) on any storage backend.
    #[default]
    File,
}

impl fmt::Display for SourceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceType::File => f.write_str("file"),
        }
    }
}

/// File formats a source can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Comma-separated values (header row expected unless `has_header: Some(false)`).
    Csv,
    /// Newline-delimited JSON (one object per line).
    Json,
    /// Arrow IPC file format.
    Arrow,
    /// Apache Avro.
    Avro,
}

impl FileFormat {
    /// All formats, for messages.
    pub const ALL: &'static str = "parquet, csv, json (ndjson), arrow (ipc), avro";

    /// The usual file extension, with its dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => ".parquet",
            FileFormat::Csv => ".csv",
            FileFormat::Json => ".json",
            FileFormat::Arrow => ".arrow",
            FileFormat::Avro => ".avro",
        }
    }

    /// DataFusion's `STORED AS` name.
    pub fn sql_name(self) -> &'static str {
        match self {
            FileFormat::Parquet => "PARQUET",
            FileFormat::Csv => "CSV",
            FileFormat::Json => "JSON",
            FileFormat::Arrow => "ARROW",
            FileFormat::Avro => "AVRO",
        }
    }

    /// Guesses the format from a file name (`x.parquet`, `x.csv.gz`, `x.ndjson`, ...).
    pub fn from_file_name(name: &str) -> Option<FileFormat> {
        let lower = name.to_ascii_lowercase();
        let base = [".gz", ".bz2", ".xz", ".zst"]
            .iter()
            .find_map(|c| lower.strip_suffix(c))
            .unwrap_or(&lower);
        let ext = base.rsplit_once('.')?.1;
        ext.parse().ok()
    }
}

impl fmt::Display for FileFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql_name().to_ascii_lowercase())
    }
}

impl FromStr for FileFormat {
    type Err = JammiError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => FileFormat::Parquet,
            "csv" | "tsv" => FileFormat::Csv,
            "json" | "ndjson" | "jsonl" => FileFormat::Json,
            "arrow" | "ipc" | "feather" => FileFormat::Arrow,
            "avro" => FileFormat::Avro,
            other => {
                return Err(JammiError::InvalidInput(format!(
                    "unknown file format '{other}'; expected one of: {}",
                    FileFormat::ALL
                )));
            }
        })
    }
}

/// How to reach a source. Build it with a struct literal and `..Default::default()`.
///
/// `cloud: None` with a cloud URL uses that cloud's ambient credential chain. Secrets in
/// `cloud` are used for this process only: the catalog persists the connection without them.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SourceConnection {
    /// Storage URL or local path of one file, a directory/prefix (trailing `/`), or a glob.
    pub url: Option<String>,
    /// File format; guessed from the file extension when `None`.
    pub format: Option<FileFormat>,
    /// Cloud settings and credentials; `None` means the ambient credential chain.
    pub cloud: Option<CloudConfig>,
    /// Only files with this extension are read from a prefix (default: the format's).
    pub file_extension: Option<String>,
    /// CSV: whether the first line is a header (default `true`).
    pub has_header: Option<bool>,
    /// CSV: field delimiter (default `,`).
    pub delimiter: Option<char>,
    /// Hive-style partition columns (`year=2026/month=01/...`), read as strings.
    pub partition_columns: Vec<String>,
    /// Further DataFusion format options, e.g. `format.compression` → `gzip`.
    pub options: BTreeMap<String, String>,
}

impl SourceConnection {
    /// The connection to `url` (in `format`, or guessed from the extension) with option
    /// keys as SQL `OPTIONS` and the CLI's `--option` take them: `aws.*`, `gcp.*`,
    /// `azure.*` (cloud settings; none: the ambient credential chain) and `format.*`
    /// (DataFusion's format options). Any other key is an error naming it.
    pub fn from_options(
        url: &str,
        format: Option<&str>,
        options: &HashMap<String, String>,
    ) -> Result<SourceConnection> {
        let parsed = StorageUrl::parse(url)?;
        // The least such key, so the error does not depend on the map's order.
        if let Some(bad) = options
            .keys()
            .filter(|k| Namespace::of_key(k).is_none() && !k.starts_with("format."))
            .min()
        {
            return Err(JammiError::Config(format!(
                "unknown source option '{bad}': expected aws.*, gcp.*, azure.* or format.* keys"
            )));
        }
        let (cloud, rest) = split_cloud_options(options);
        Ok(SourceConnection {
            url: Some(parsed.to_string()),
            format: format.map(str::parse).transpose()?,
            cloud: CloudConfig::from_options(parsed.scheme(), &cloud)?,
            options: rest.into_iter().collect(),
            ..Default::default()
        })
    }
}

impl fmt::Debug for SourceConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceConnection")
            .field("url", &self.url)
            .field("format", &self.format)
            .field("cloud", &self.cloud)
            .field("file_extension", &self.file_extension)
            .field("has_header", &self.has_header)
            .field("delimiter", &self.delimiter)
            .field("partition_columns", &self.partition_columns)
            .field("options", &self.options.keys().collect::<Vec<_>>())
            .finish()
    }
}
