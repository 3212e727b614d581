//! `CREATE EXTERNAL TABLE ... STORED AS PARQUET|CSV|JSON|ARROW|AVRO LOCATION '<storage url>'
//! OPTIONS (...)` for every scheme, with no pre-registration: the location is parsed as a
//! storage URL, `aws.*`/`gcp.*`/`azure.*` options build (or reuse) its store, the object or
//! prefix must exist, and the rest is DataFusion's own listing-table factory. With
//! `'jammi.vector_column'` on a single Parquet file, the table uses the file's USearch
//! sidecars, building them first (with progress) when there are none.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::listing_table_factory::ListingTableFactory;
use datafusion::error::Result;
use datafusion::logical_expr::CreateExternalTable;

use crate::catalog::IndexedTable;
use crate::error::JammiError;
use crate::format::manifest::FileRole;
use crate::format::naming::Siblings;
use crate::index::{IndexParams, Metric};
use crate::source::{FileFormat, listing};
use crate::sql::options::JAMMI_KEYS;
use crate::storage::config::split_cloud_options;
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};
use crate::store::identity::{self, FileCheck};
use object_store::ObjectStoreExt;

/// Table factory for one file format, resolving storage URLs through a [`StorageRegistry`].
#[derive(Debug)]
pub struct StorageTableFactory {
    registry: StorageRegistry,
    format: FileFormat,
    inner: ListingTableFactory,
}

impl StorageTableFactory {
    /// A factory for `format` using `registry`.
    pub fn new(registry: StorageRegistry, format: FileFormat) -> Self {
        StorageTableFactory {
            registry,
            format,
            inner: ListingTableFactory::new(),
        }
    }
}

/// Parsed `jammi.*` options of `CREATE EXTERNAL TABLE`.
#[derive(Debug, Clone)]
pub(crate) struct IndexOptions {
    /// The vector column to index.
    pub column: String,
    /// HNSW parameters and metric.
    pub params: IndexParams,
    /// `true` when `jammi.metric` was given (an existing index must then match it).
    pub metric_given: bool,
    /// Key column whose values the rowmap carries, so key-only searches skip the file.
    pub key_column: Option<String>,
}

fn index_options(opts: &HashMap<String, String>) -> crate::error::Result<Option<IndexOptions>> {
    let mut params = IndexParams::default();
    let mut column = None;
    let mut key_column = None;
    let mut metric_given = false;
    for (k, v) in opts {
        let Some(short) = k.strip_prefix("jammi.") else {
            continue;
        };
        let num = || {
            v.parse::<usize>().ok().filter(|n| *n > 0).ok_or_else(|| {
                JammiError::Config(format!(
                    "option '{k}' expects a positive integer, got '{v}'"
                ))
            })
        };
        match short {
            "vector_column" => column = Some(v.clone()),
            "key_column" => key_column = Some(v.clone()),
            "metric" => {
                params.metric = v.parse::<Metric>()?;
                metric_given = true;
            }
            "connectivity" => params.connectivity = num()?,
            "expansion_add" => params.expansion_add = num()?,
            "expansion_search" => params.expansion_search = num()?,
            _ => {
                return Err(JammiError::Config(format!(
                    "unknown option key '{k}'; valid keys: {}",
                    JAMMI_KEYS.map(|k| format!("jammi.{k}")).join(", ")
                )));
            }
        }
    }
    match column {
        Some(column) => Ok(Some(IndexOptions {
            column,
            params,
            metric_given,
            key_column,
        })),
        None if opts.keys().any(|k| k.starts_with("jammi.")) => Err(JammiError::Config(
            "jammi.* options need 'jammi.vector_column'".into(),
        )),
        None => Ok(None),
    }
}

#[async_trait]
impl TableProviderFactory for StorageTableFactory {
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let urls = cmd
            .locations
            .iter()
            .map(|l| StorageUrl::parse(l))
            .collect::<crate::error::Result<Vec<_>>>()?;
        let Some(first) = urls.first() else {
            return Err(
                JammiError::InvalidInput("CREATE EXTERNAL TABLE needs a LOCATION".into()).into(),
            );
        };
        let (cloud_opts, rest) = split_cloud_options(&cmd.options);
        let cloud = CloudConfig::from_options(first.scheme(), &cloud_opts)?;
        let (jammi_opts, format_opts): (HashMap<_, _>, HashMap<_, _>) =
            rest.into_iter().partition(|(k, _)| k.starts_with("jammi."));
        let index = index_options(&jammi_opts)?;

        let mut stores = Vec::new();
        for url in &urls {
            // Without options, a bucket already bound (by an earlier statement, a source or
            // the application) keeps its store; otherwise the options (or ambient credentials)
            // build one.
            let store = match (&cloud, self.registry.bound(url)) {
                (None, Some(bound)) => bound,
                _ => self.registry.store(url, cloud.as_ref()).await?,
            };
            state
                .runtime_env()
                .register_object_store(url.object_store_url().as_ref(), store.clone());
            let ext = if url.is_prefix() {
                self.format.extension()
            } else {
                ""
            };
            listing::probe(&store, url, ext).await?;
            stores.push(store);
        }

        if let Some(index) = index {
            if self.format != FileFormat::Parquet
                || urls.len() != 1
                || urls[0].is_prefix()
                || urls[0].has_glob()
            {
                return Err(JammiError::InvalidInput(
                    "'jammi.vector_column' needs STORED AS PARQUET and the location of one .parquet file".into(),
                )
                .into());
            }
            let progress = state
                .config()
                .get_extension::<crate::index::progress::ProgressReporter>();
            let table = indexed_file(
                stores[0].clone(),
                &urls[0],
                &index,
                cloud,
                progress.as_deref(),
            )
            .await?;
            return Ok(Arc::new(table));
        }

        let mut cmd = cmd.clone();
        cmd.locations = urls.iter().map(|u| u.to_string()).collect();
        cmd.options = format_opts;
        // The statement text may hold secrets in its OPTIONS; never keep it.
        cmd.definition = None;
        self.inner.create(state, &cmd).await
    }
}

/// Opens (or builds, then opens) the sidecars of one Parquet file. Sidecars whose file
/// changed since they were built are replaced; an indexer that finds another process
/// building them waits for it and uses its result.
pub(crate) async fn indexed_file(
    store: Arc<dyn object_store::ObjectStore>,
    url: &StorageUrl,
    options: &IndexOptions,
    cloud: Option<CloudConfig>,
    progress: Option<&crate::index::progress::ProgressReporter>,
) -> crate::error::Result<IndexedTable> {
    let ttl = crate::store::lease::ttl_from_env()?;
    loop {
        if let Some(m) = usable_index(&store, url, options, ttl).await? {
            return IndexedTable::new(url.clone(), m, cloud);
        }
        let request = crate::store::IndexFileRequest {
            column: &options.column,
            params: options.params,
            key_column: options.key_column.as_deref(),
            progress: progress.map(|p| p.0.as_ref()),
            ttl,
        };
        let built = crate::store::index_existing(store.clone(), url, request).await;
        if let Some(p) = progress {
            p.0.finish();
        }
        match built {
            Ok(m) => return IndexedTable::new(url.clone(), m, cloud),
            // Another process is indexing the file (or just committed): wait, then use its
            // sidecars.
            Err(JammiError::InProgress { .. }) => wait_for_lease(&store, url, ttl).await?,
            Err(JammiError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits while another process holds the lease of `url`'s sidecars.
async fn wait_for_lease(
    store: &Arc<dyn object_store::ObjectStore>,
    url: &StorageUrl,
    ttl: std::time::Duration,
) -> crate::error::Result<()> {
    use crate::store::lease::{self, Found};
    let s = Siblings::of_file(url)?;
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match lease::read(store, &s.lease).await? {
            Found::Lease(r) if r.lease.is_live(lease::renews(&s.dir), ttl) => {}
            _ => return Ok(()),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(1));
    }
}

/// The committed sidecars of `url` that fit `options`, if any: under the current naming,
/// else under the older one when their manifest records this very file. Sidecars built for
/// another version of the file are removed (current naming) or ignored (older naming).
async fn usable_index(
    store: &Arc<dyn object_store::ObjectStore>,
    url: &StorageUrl,
    options: &IndexOptions,
    ttl: std::time::Duration,
) -> crate::error::Result<Option<crate::store::Manifest>> {
    let current = Siblings::of_file(url)?;
    let mut candidates = vec![(current.clone(), true)];
    if let Some(legacy) = Siblings::legacy_of_file(url)? {
        candidates.push((legacy, false));
    }
    for (siblings, replaceable) in candidates {
        let m = match crate::store::read_manifest(store, &siblings).await {
            Ok(m) => m,
            Err(JammiError::NotFound { .. }) => continue,
            Err(e) => return Err(e),
        };
        let Some(entry) = m.file(FileRole::Parquet).cloned() else {
            continue;
        };
        if entry.name != url.file_name() {
            continue; // older naming: another file's sidecars
        }
        check_fit(url, &m, options)?;
        let head = store
            .head(&url.object_path()?)
            .await
            .map_err(|e| JammiError::storage(url, e))?;
        match identity::check(store, url, &head, &entry).await? {
            FileCheck::Same => return Ok(Some(m)),
            FileCheck::Changed(why) if replaceable => {
                tracing::warn!("{why}: rebuilding its index");
                crate::store::delete_sidecars(store.clone(), &siblings, &m, ttl).await?;
            }
            FileCheck::Changed(why) => tracing::warn!("{why}: its older sidecars are ignored"),
        }
    }
    Ok(None)
}

/// Checks existing sidecars were built the way `options` asks.
fn check_fit(
    url: &StorageUrl,
    m: &crate::store::Manifest,
    options: &IndexOptions,
) -> crate::error::Result<()> {
    let info = m.index.as_ref().ok_or_else(|| {
        JammiError::InvalidInput(format!("{url} has sidecars without a vector index"))
    })?;
    let column = options.column.as_str();
    if info.column != column {
        return Err(JammiError::InvalidInput(format!(
            "the sidecars beside {url} index column '{}', not '{column}'",
            info.column
        )));
    }
    if let Some(k) = options.key_column.as_deref()
        && m.key_column.as_deref() != Some(k)
    {
        let built = match &m.key_column {
            Some(b) => format!("key column '{b}'"),
            None => "no key column".to_string(),
        };
        return Err(JammiError::InvalidInput(format!(
            "the sidecars beside {url} were built with {built}, not 'jammi.key_column' \
             '{k}'; delete them to rebuild"
        )));
    }
    if options.metric_given && info.metric != options.params.metric {
        return Err(JammiError::InvalidInput(format!(
            "the index beside {url} was built with metric {}, not {}",
            info.metric, options.params.metric
        )));
    }
    Ok(())
}
