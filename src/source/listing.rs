//! Listing-table construction for sources: probe the location (one object, a prefix, a
//! glob), then build a DataFusion `ListingTable` with the same file-format machinery as
//! `CREATE EXTERNAL TABLE`, so scans get DataFusion's projection, filter and statistics
//! pushdown unchanged.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::execution::context::SessionState;
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::source::{FileFormat, SourceConnection};
use crate::storage::StorageUrl;

/// What a source URL turned out to name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// One object.
    File(StorageUrl),
    /// A prefix/directory (canonical form ends with `/`) or a glob.
    Collection(StorageUrl),
}

impl Location {
    /// The URL to list.
    pub fn url(&self) -> &StorageUrl {
        match self {
            Location::File(u) | Location::Collection(u) => u,
        }
    }
}

/// Finds out whether `url` names an object or a non-empty prefix. A missing object or an
/// empty prefix is an error naming the URL.
pub async fn probe(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    extension: &str,
) -> Result<Location> {
    if url.has_glob() {
        return Ok(Location::Collection(url.clone()));
    }
    if !url.is_prefix() {
        match store.head(&url.object_path()?).await {
            Ok(_) => return Ok(Location::File(url.clone())),
            Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => return Err(JammiError::storage(url, e)),
        }
    }
    let prefix = url.as_prefix();
    let path = prefix.object_path()?;
    let mut listing = store.list(Some(&path));
    let mut any = false;
    while let Some(meta) = listing
        .try_next()
        .await
        .map_err(|e| JammiError::storage(&prefix, e))?
    {
        any = true;
        if extension.is_empty() || meta.location.as_ref().ends_with(extension) {
            return Ok(Location::Collection(prefix));
        }
    }
    Err(JammiError::NotFound {
        kind: "object or non-empty prefix",
        name: if any {
            format!("{url} (no files ending in '{extension}' under it)")
        } else {
            url.to_string()
        },
    })
}

/// The DataFusion format options (`format.*`) a connection implies.
pub fn format_options(conn: &SourceConnection) -> HashMap<String, String> {
    let mut opts: HashMap<String, String> = conn
        .options
        .iter()
        .map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            let k = if k.contains('.') {
                k
            } else {
                format!("format.{k}")
            };
            (k, v.clone())
        })
        .collect();
    if let Some(h) = conn.has_header {
        opts.insert("format.has_header".into(), h.to_string());
    }
    if let Some(d) = conn.delimiter {
        opts.insert("format.delimiter".into(), d.to_string());
    }
    opts
}

/// Builds the listing table of a probed location.
pub async fn build_table(
    state: &SessionState,
    location: &Location,
    format: FileFormat,
    conn: &SourceConnection,
) -> Result<Arc<ListingTable>> {
    let factory = state
        .get_file_format_factory(format.sql_name())
        .ok_or_else(|| {
            JammiError::InvalidInput(format!("format {format} is not available in this session"))
        })?;
    let file_format = factory.create(state, &format_options(conn))?;
    let extension = match location {
        Location::File(_) => String::new(),
        Location::Collection(_) => conn
            .file_extension
            .clone()
            .unwrap_or_else(|| format.extension().to_string()),
    };
    let options = ListingOptions::new(file_format)
        .with_file_extension(extension)
        .with_table_partition_cols(
            conn.partition_columns
                .iter()
                .map(|c| (c.clone(), DataType::Utf8))
                .collect(),
        );
    let url = location.url();
    let table_url = ListingTableUrl::parse(url.to_string())?;
    let config = ListingTableConfig::new(table_url)
        .with_listing_options(options)
        .infer_schema(state)
        .await
        .map_err(|e| {
            JammiError::InvalidInput(format!("cannot read the schema of {url} as {format}: {e}"))
        })?;
    let schema_empty = config
        .file_schema
        .as_ref()
        .is_none_or(|s| s.fields().is_empty());
    if schema_empty && conn.partition_columns.is_empty() {
        return Err(JammiError::InvalidInput(format!(
            "no readable {format} files at {url}"
        )));
    }
    Ok(Arc::new(ListingTable::try_new(config)?))
}
