//! `CREATE EXTERNAL TABLE ... STORED AS PARQUET|CSV|JSON|ARROW|AVRO LOCATION '<storage url>'
//! OPTIONS (...)` for every scheme, with no pre-registration: `aws.*`/`gcp.*`/`azure.*`
//! options build (or reuse) the location's store, and the rest is DataFusion's own
//! listing-table factory, unchanged. With `'jammi.vector_column'` on a single Parquet file,
//! the table uses the file's USearch sidecars, building them first (with progress) when
//! there are none.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider, TableProviderFactory};
use datafusion::datasource::provider::DefaultTableFactory;
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
use crate::storage::{CloudConfig, Scheme, StorageRegistry, StorageUrl};
use crate::store::identity::{self, FileCheck};
use object_store::ObjectStoreExt;

/// Table factory for one file format, resolving storage URLs through a [`StorageRegistry`]
/// and leaving the rest to the factory the session had for that format (DataFusion's
/// `DefaultTableFactory`: listing tables, or stream tables for `UNBOUNDED`).
#[derive(Debug)]
pub struct StorageTableFactory {
    registry: StorageRegistry,
    format: FileFormat,
    inner: Arc<dyn TableProviderFactory>,
}

impl StorageTableFactory {
    /// A factory for `format` using `registry`, over DataFusion's default factory.
    pub fn new(registry: StorageRegistry, format: FileFormat) -> Self {
        Self::over(registry, format, Arc::new(DefaultTableFactory::new()))
    }

    /// A factory for `format` using `registry`, handing what it does not add to `inner`.
    pub fn over(
        registry: StorageRegistry,
        format: FileFormat,
        inner: Arc<dyn TableProviderFactory>,
    ) -> Self {
        StorageTableFactory {
            registry,
            format,
            inner,
        }
    }

    /// The factory this one hands to.
    pub fn inner(&self) -> &Arc<dyn TableProviderFactory> {
        &self.inner
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
    /// `true` when `jammi.quantization` was given (likewise).
    pub quantization_given: bool,
    /// Key column whose values the rowmap carries, so key-only searches skip the file.
    pub key_column: Option<String>,
}

fn index_options(opts: &HashMap<String, String>) -> crate::error::Result<Option<IndexOptions>> {
    let mut params = IndexParams::default();
    let mut column = None;
    let mut key_column = None;
    let mut metric_given = false;
    let mut quantization_given = false;
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
            "quantization" => {
                params.quantization = v.parse()?;
                quantization_given = true;
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
    params.check()?;
    match column {
        Some(column) => Ok(Some(IndexOptions {
            column,
            params,
            metric_given,
            quantization_given,
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
    /// Everything DataFusion's listing-table factory handles is left to it — the locations
    /// as written, the same laziness (a table with a declared schema needs no files yet),
    /// the same errors and INSERT support. What this adds: stores for every scheme, built
    /// from `aws.*`/`gcp.*`/`azure.*` options or ambient credentials; indexing with
    /// `jammi.vector_column`. (A statement without a schema over a location with no files
    /// fails at once with DataFusion's error, which names the location.)
    async fn create(
        &self,
        state: &dyn Session,
        cmd: &CreateExternalTable,
    ) -> Result<Arc<dyn TableProvider>> {
        let (cloud_opts, rest) = split_cloud_options(&cmd.options);
        let (jammi_opts, format_opts): (HashMap<_, _>, HashMap<_, _>) =
            rest.into_iter().partition(|(k, _)| k.starts_with("jammi."));
        let index = index_options(&jammi_opts)?;
        // Locations that are not storage URLs (e.g. `http://`) are DataFusion's business.
        let urls: Option<Vec<StorageUrl>> = cmd
            .locations
            .iter()
            .map(|l| StorageUrl::parse(l).ok())
            .collect();
        let mut inner = cmd.clone();
        inner.options = format_opts;
        // The statement may hold secrets in its OPTIONS: keep it without their values.
        inner.definition = cmd.definition.as_deref().map(crate::sql::redact_secrets);
        let Some(urls) = urls.filter(|u| !u.is_empty()) else {
            if index.is_some() || !cloud_opts.is_empty() {
                // Only storage URLs take jammi.* and cloud options.
                let bad = cmd.locations.first().cloned().unwrap_or_default();
                StorageUrl::parse(&bad)?;
            }
            return self.inner.create(state, &inner).await;
        };
        let cloud = CloudConfig::from_options(urls[0].scheme(), &cloud_opts)?;
        let stores = self.bind_stores(state, &urls, cloud.as_ref()).await?;
        if let Some(index) = index {
            return self
                .create_indexed(state, &urls, &stores, &index, cloud)
                .await;
        }
        // Aliases (`s3a://`, `az://`, ...) in their canonical form, which the stores are
        // bound under; local paths exactly as written.
        inner.locations = cmd
            .locations
            .iter()
            .zip(&urls)
            .map(|(raw, u)| {
                if u.scheme() == Scheme::File {
                    raw.clone()
                } else {
                    u.to_string()
                }
            })
            .collect();
        self.inner.create(state, &inner).await
    }
}

impl StorageTableFactory {
    /// The store of each location, bound into the session's runtime — except local paths
    /// without options, which keep the runtime's own local store.
    async fn bind_stores(
        &self,
        state: &dyn Session,
        urls: &[StorageUrl],
        cloud: Option<&CloudConfig>,
    ) -> crate::error::Result<Vec<Arc<dyn object_store::ObjectStore>>> {
        let mut stores = Vec::new();
        for url in urls {
            // Without options, a bucket already bound (by an earlier statement, a source or
            // the application) keeps its store; otherwise the options (or ambient
            // credentials) build one.
            let store = match (cloud, self.registry.bound(url)) {
                (None, Some(bound)) => bound,
                (None, None) if url.scheme() == Scheme::File => {
                    self.registry.resolve(url, None).await?
                }
                _ => self.registry.store(url, cloud).await?,
            };
            if url.scheme() != Scheme::File || cloud.is_some() {
                state
                    .runtime_env()
                    .register_object_store(url.object_store_url().as_ref(), store.clone());
            }
            stores.push(store);
        }
        Ok(stores)
    }

    /// `jammi.vector_column` on one Parquet file: its sidecars, built first if needed.
    async fn create_indexed(
        &self,
        state: &dyn Session,
        urls: &[StorageUrl],
        stores: &[Arc<dyn object_store::ObjectStore>],
        index: &IndexOptions,
        cloud: Option<CloudConfig>,
    ) -> Result<Arc<dyn TableProvider>> {
        if self.format != FileFormat::Parquet
            || urls.len() != 1
            || urls[0].is_prefix()
            || urls[0].has_glob()
        {
            return Err(JammiError::InvalidInput(
                "'jammi.vector_column' needs STORED AS PARQUET and the location of one .parquet file"
                    .into(),
            )
            .into());
        }
        listing::probe(&stores[0], &urls[0], "").await?;
        let progress = state
            .config()
            .get_extension::<crate::index::progress::ProgressReporter>();
        let table = indexed_file(
            stores[0].clone(),
            &urls[0],
            index,
            cloud,
            progress.as_deref(),
        )
        .await?;
        Ok(Arc::new(table))
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
    let mut taken = 0;
    loop {
        match usable_index(&store, url, options, ttl).await {
            Ok(Some(m)) => return IndexedTable::new(url.clone(), m, cloud),
            Ok(None) => {}
            // Another process is replacing stale sidecars: wait for it.
            Err(JammiError::InProgress { .. }) => {
                wait_for_lease(&store, url, ttl).await?;
                continue;
            }
            Err(e) => return Err(e),
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
            // Committed meanwhile: use it, unless its manifest is another file's.
            Err(JammiError::AlreadyExists { .. }) if taken == 0 => taken += 1,
            Err(JammiError::AlreadyExists { .. }) => {
                return Err(JammiError::NotOwned {
                    url: Siblings::of_file(url)?.manifest.to_string(),
                    hint: format!(
                        "it indexes another file, not {url}; move it away to index this one"
                    ),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

/// Waits while another process holds the lease of `url`'s sidecars: as long as that
/// process stays alive (index builds take minutes), at most a day.
async fn wait_for_lease(
    store: &Arc<dyn object_store::ObjectStore>,
    url: &StorageUrl,
    ttl: std::time::Duration,
) -> crate::error::Result<()> {
    use crate::store::lease::{self, Found};
    let s = Siblings::of_file(url)?;
    let started = std::time::Instant::now();
    let mut pause = std::time::Duration::from_millis(50);
    loop {
        match lease::read(store, &s.lease).await? {
            Found::Lease(r) if r.lease.is_live(ttl) => {
                if started.elapsed() > lease::MAX_TTL {
                    return Err(JammiError::InProgress {
                        name: url.to_string(),
                        holder: format!("process {} on {}", r.lease.pid, r.lease.host),
                    });
                }
            }
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
            // The older naming is shared by every file of its prefix: what is there,
            // damaged or another file's, is not this file's.
            Err(_) if !replaceable => continue,
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
    if options.quantization_given && info.quantization != options.params.quantization {
        return Err(JammiError::InvalidInput(format!(
            "the index beside {url} was built with jammi.quantization '{}', not '{}'; \
             delete its sidecars to rebuild",
            info.quantization, options.params.quantization
        )));
    }
    Ok(())
}
