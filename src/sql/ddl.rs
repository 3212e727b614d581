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
use crate::index::{IndexParams, Metric};
use crate::source::{FileFormat, listing};
use crate::sql::options::JAMMI_KEYS;
use crate::storage::config::split_cloud_options;
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};

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
            let table = indexed_file(stores[0].clone(), &urls[0], &index, cloud).await?;
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

/// Opens (or builds, then opens) the sidecars of one Parquet file.
pub(crate) async fn indexed_file(
    store: Arc<dyn object_store::ObjectStore>,
    url: &StorageUrl,
    options: &IndexOptions,
    cloud: Option<CloudConfig>,
) -> crate::error::Result<IndexedTable> {
    let (column, params, metric_given) = (
        options.column.as_str(),
        options.params,
        options.metric_given,
    );
    let key_column = options.key_column.as_deref();
    let dir = url.parent();
    let stem = url.file_stem();
    let manifest = match crate::store::read_manifest(&store, &dir, &stem).await {
        Ok(m) => {
            let info = m.index.as_ref().ok_or_else(|| {
                JammiError::InvalidInput(format!("{url} has sidecars without a vector index"))
            })?;
            if info.column != column {
                return Err(JammiError::InvalidInput(format!(
                    "the sidecars beside {url} index column '{}', not '{column}'",
                    info.column
                )));
            }
            if let Some(k) = key_column
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
            if metric_given && info.metric != params.metric {
                return Err(JammiError::InvalidInput(format!(
                    "the index beside {url} was built with metric {}, not {}",
                    info.metric, params.metric
                )));
            }
            m
        }
        Err(JammiError::NotFound { .. }) => {
            let pb = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "indexing {msg} {bar:30} {pos}/{len} rows ({eta})",
                )
                .expect("template"),
            );
            pb.set_message(url.file_name());
            let m = crate::store::index_existing(
                store.clone(),
                url,
                column,
                params,
                key_column,
                Some(&pb),
            )
            .await;
            pb.finish_and_clear();
            m?
        }
        Err(e) => return Err(e),
    };
    IndexedTable::new(url.clone(), manifest, cloud)
}
