//! DataFusion catalog providers: one catalog per source (schema `public`, one table), and
//! `JammiCatalogProvider` for result tables.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider, TableProvider};
use datafusion::datasource::TableType;
use datafusion::execution::context::SessionState;
use tokio::sync::OnceCell;

use crate::catalog::SourceEntry;
use crate::catalog::table::{IndexedTable, UnavailableTable};
use crate::error::{JammiError, Result};
use crate::source::{FileFormat, listing};
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};
use crate::store::ResultStore;

/// The schema every jammi catalog exposes.
pub const SCHEMA: &str = "public";

/// A source's table, built on first use (schema inference needs I/O).
pub(crate) struct LazySource {
    pub(crate) entry: SourceEntry,
    cloud: Option<CloudConfig>,
    registry: StorageRegistry,
    state: SessionState,
    table: OnceCell<Arc<dyn TableProvider>>,
}

impl std::fmt::Debug for LazySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazySource")
            .field("entry", &self.entry)
            .finish()
    }
}

impl LazySource {
    /// `cloud`: credentials supplied in this process (`None`: the stored, secret-free ones).
    pub(crate) fn new(
        entry: SourceEntry,
        cloud: Option<CloudConfig>,
        registry: StorageRegistry,
        state: SessionState,
    ) -> Self {
        LazySource {
            entry,
            cloud,
            registry,
            state,
            table: OnceCell::new(),
        }
    }

    /// With an already built table (from `add_source`, which validated it).
    pub(crate) fn with_table(self, table: Arc<dyn TableProvider>) -> Self {
        let _ = self.table.set(table);
        self
    }

    pub(crate) async fn table(&self) -> Result<Arc<dyn TableProvider>> {
        self.table.get_or_try_init(|| self.load()).await.cloned()
    }

    async fn load(&self) -> Result<Arc<dyn TableProvider>> {
        let e = &self.entry;
        let supplied = self.cloud.is_some();
        let cloud = self.cloud.clone().or_else(|| e.connection.cloud.clone());
        let r =
            build_source_table(&self.registry, &self.state, &e.connection, cloud.as_ref()).await;
        match r {
            Err(err) if e.credentials_withheld && !supplied => {
                Err(JammiError::Credentials(format!(
                    "source '{}' was registered with explicit credentials, which jammi-db never \
                 stores; the ambient credential chain did not work ({err}). Supply the \
                 credentials again with JammiSession::set_source_credentials or through the \
                 environment",
                    e.name
                )))
            }
            Err(err) => Err(err),
            Ok((_, table)) => Ok(table),
        }
    }
}

/// Probes and builds the listing table of a connection. Returns (table name hint, table):
/// the hint is `None` for a prefix/glob (the table takes the source's name).
pub(crate) async fn build_source_table(
    registry: &StorageRegistry,
    state: &SessionState,
    conn: &crate::source::SourceConnection,
    cloud: Option<&CloudConfig>,
) -> Result<(Option<String>, Arc<dyn TableProvider>)> {
    let raw = conn
        .url
        .as_deref()
        .ok_or_else(|| JammiError::InvalidInput("a file source needs a url".into()))?;
    let url = StorageUrl::parse(raw)?;
    let store = registry.store(&url, cloud).await?;
    let ext = conn
        .file_extension
        .clone()
        .or_else(|| conn.format.map(|f| f.extension().to_string()))
        .unwrap_or_default();
    let location = listing::probe(&store, &url, &ext).await?;
    let format = match conn.format {
        Some(f) => f,
        None => infer_format(&store, &location).await?,
    };
    let table = listing::build_table(state, &location, format, conn).await?;
    let hint = match &location {
        listing::Location::File(u) => Some(u.file_stem()),
        listing::Location::Collection(_) => None,
    };
    Ok((hint, table))
}

/// Guesses the format of a location from its file name, or the first data file under a
/// prefix (jammi-db's own sidecars beside indexed files are passed over).
async fn infer_format(
    store: &Arc<dyn object_store::ObjectStore>,
    location: &listing::Location,
) -> Result<FileFormat> {
    let url = location.url();
    let mut name = url.file_name();
    if let listing::Location::Collection(prefix) = location
        && !url.has_glob()
    {
        use futures::TryStreamExt;
        let mut listed = store.list(Some(&prefix.object_path()?));
        name = String::new();
        while let Some(m) = listed
            .try_next()
            .await
            .map_err(|e| JammiError::storage(prefix, e))?
        {
            let file = m.location.filename().unwrap_or_default();
            if !crate::format::naming::is_sidecar_name(file) {
                name = file.to_string();
                break;
            }
        }
    }
    FileFormat::from_file_name(&name).ok_or_else(|| {
        JammiError::InvalidInput(format!(
            "cannot tell the file format of {url}; set format to one of {}",
            FileFormat::ALL
        ))
    })
}

/// The catalog of one source: schema `public` with the source's one table.
#[derive(Debug)]
pub struct SourceCatalogProvider {
    schema: Arc<SourceSchemaProvider>,
}

impl SourceCatalogProvider {
    pub(crate) fn new(source: Arc<LazySource>) -> Self {
        SourceCatalogProvider {
            schema: Arc::new(SourceSchemaProvider { source }),
        }
    }
}

impl CatalogProvider for SourceCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == SCHEMA).then(|| self.schema.clone() as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct SourceSchemaProvider {
    source: Arc<LazySource>,
}

#[async_trait]
impl SchemaProvider for SourceSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        vec![self.source.entry.table.clone()]
    }

    /// A source that cannot be read now is still returned — as an [`UnavailableTable`] with
    /// its recorded columns — so listing the database never fails because of one source.
    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        let e = &self.source.entry;
        if name != e.table {
            return Ok(None);
        }
        Ok(Some(match self.source.table().await {
            Ok(t) => t,
            Err(err) => Arc::new(UnavailableTable::new(
                format!("source {}.{SCHEMA}.{}", e.name, e.table),
                e.schema(),
                err,
            )),
        }))
    }

    /// Answered from the catalog entry, without opening the source.
    async fn table_type(&self, name: &str) -> datafusion::error::Result<Option<TableType>> {
        Ok((name == self.source.entry.table).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        name == self.source.entry.table
    }
}

/// Result tables as a DataFusion catalog (schema `public`). Mount it with
/// `ctx.register_catalog("jammi", Arc::new(JammiCatalogProvider::new(store)))`.
#[derive(Debug)]
pub struct JammiCatalogProvider {
    schema: Arc<ResultSchemaProvider>,
}

impl JammiCatalogProvider {
    /// The result tables of `store`. Call [`refresh`](Self::refresh) to load the listing.
    pub fn new(store: Arc<ResultStore>) -> Self {
        JammiCatalogProvider {
            schema: Arc::new(ResultSchemaProvider {
                store,
                cache: RwLock::default(),
            }),
        }
    }

    /// Re-lists the root and loads every committed table's manifest (tables committed by
    /// other processes appear; deleted ones disappear). Broken tables are logged and left
    /// out; querying one reports why.
    pub async fn refresh(&self) -> Result<()> {
        self.schema.refresh().await
    }

    /// A committed table by name (`None` if there is none).
    pub async fn indexed_table(&self, name: &str) -> Result<Option<Arc<IndexedTable>>> {
        self.schema.load(name).await
    }

    /// Forgets a cached table (after a delete).
    pub fn forget(&self, name: &str) {
        self.schema.cache.write().expect("lock").remove(name);
    }
}

impl CatalogProvider for JammiCatalogProvider {
    fn schema_names(&self) -> Vec<String> {
        vec![SCHEMA.to_string()]
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        (name == SCHEMA).then(|| self.schema.clone() as Arc<dyn SchemaProvider>)
    }
}

#[derive(Debug)]
struct ResultSchemaProvider {
    store: Arc<ResultStore>,
    cache: RwLock<HashMap<String, Cached>>,
}

/// A result table as last opened: version 0's verified manifest, and the table.
#[derive(Debug, Clone)]
struct Cached {
    base: crate::store::Manifest,
    table: Arc<IndexedTable>,
}

impl ResultSchemaProvider {
    /// The table at its latest version. Version 0's manifest is read (and verified) once;
    /// every call then asks for the latest version number (one LIST page), so each query
    /// reads the version current when it is planned, and keeps it to its end.
    async fn load(&self, name: &str) -> Result<Option<Arc<IndexedTable>>> {
        if let Some((table, version)) = name.rsplit_once('@')
            && let Ok(version) = version.parse::<u64>()
        {
            return self.load_version(table, version).await;
        }
        if crate::format::naming::validate_table_name(name).is_err() {
            return Ok(None);
        }
        let cached = self.cache.read().expect("lock").get(name).cloned();
        let base = match &cached {
            Some(t) => t.base.clone(),
            None => match self.store.manifest(name).await {
                Ok(m) => m,
                Err(JammiError::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        let latest = self.store.latest_version_number(name).await?;
        if let Some(t) = &cached
            && t.table.versioned.as_ref().map(|(_, v)| v.version) == latest
        {
            return Ok(Some(t.table.clone()));
        }
        let cloud = self.store.catalog().cloud().cloned();
        let table = match latest {
            None => IndexedTable::new(self.store.parquet_url(name)?, base.clone(), cloud)?,
            Some(n) => {
                // One GET: version 0 is known, and the record lists every segment.
                let v = match self.store.version_record(name, n).await? {
                    Some(v) => v,
                    None => self.store.latest_version(name).await?,
                };
                IndexedTable::segmented(self.store.root(), v, cloud)?
            }
        };
        let t = Arc::new(table.writable(self.store.clone()));
        self.store.catalog().note_table(name);
        self.cache.write().expect("lock").insert(
            name.to_string(),
            Cached {
                base,
                table: t.clone(),
            },
        );
        Ok(Some(t))
    }

    /// `<table>@<N>`: the table as version N left it (read-only).
    async fn load_version(&self, name: &str, version: u64) -> Result<Option<Arc<IndexedTable>>> {
        if crate::format::naming::validate_table_name(name).is_err() {
            return Ok(None);
        }
        let v = match self.store.version(name, version).await {
            Ok(v) => v,
            Err(JammiError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        let cloud = self.store.catalog().cloud().cloned();
        Ok(Some(Arc::new(IndexedTable::segmented(
            self.store.root(),
            v,
            cloud,
        )?)))
    }

    async fn refresh(&self) -> Result<()> {
        let names = self.store.list_tables().await?;
        self.cache
            .write()
            .expect("lock")
            .retain(|k, _| names.contains(k));
        // Sequential on purpose: a stream of borrowing futures would make `refresh` (and so
        // `JammiSession::open`) a non-`Send` future.
        for n in &names {
            if let Err(e) = self.load(n).await {
                tracing::warn!("result table {n}: {e}");
            }
        }
        Ok(())
    }
}

#[async_trait]
impl SchemaProvider for ResultSchemaProvider {
    fn table_names(&self) -> Vec<String> {
        self.store.catalog().table_names()
    }

    /// A broken result table is still returned — as an [`UnavailableTable`] with the
    /// manifest's columns when it can be read — so listing the database never fails.
    async fn table(&self, name: &str) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        match self.load(name).await {
            Ok(t) => Ok(t.map(|t| t as Arc<dyn TableProvider>)),
            Err(err) => {
                let schema = self.store.manifest_schema(name).await;
                Ok(Some(Arc::new(UnavailableTable::new(
                    format!("result table {name}"),
                    schema,
                    err,
                ))))
            }
        }
    }

    /// Answered from the listing, without reading the manifest.
    async fn table_type(&self, name: &str) -> datafusion::error::Result<Option<TableType>> {
        Ok(self.table_exist(name).then_some(TableType::Base))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.store.catalog().table_names().iter().any(|n| n == name)
            || self.cache.read().expect("lock").contains_key(name)
    }

    /// `CREATE TABLE jammi.public.<name> AS SELECT ...` writes a result table. Its vector
    /// index is built on the only vector column (cosine, default HNSW parameters), if any.
    fn register_table(
        &self,
        name: String,
        table: Arc<dyn TableProvider>,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        crate::format::naming::validate_table_name(&name)?;
        let any: &dyn std::any::Any = table.as_ref();
        let mem = any
            .downcast_ref::<datafusion::datasource::MemTable>()
            .ok_or_else(|| {
                JammiError::InvalidInput(
                    "result tables are created with CREATE TABLE jammi.public.<name> AS SELECT ..."
                        .into(),
                )
            })?;
        let schema = mem.schema();
        let spec = ctas_spec(&name, &schema, Default::default());
        let partitions = mem.batches.clone();
        let store = self.store.clone();
        let write = async move {
            let mut batches = Vec::new();
            for p in partitions {
                batches.extend(p.read().await.iter().cloned());
            }
            let rows = futures::stream::iter(batches.into_iter().map(Ok));
            store.write_table_streaming(&spec, schema, rows, None).await
        };
        let manifest = block_on("writing a result table from SQL", write)??;
        let t = IndexedTable::new(
            self.store.parquet_url(&name)?,
            manifest.clone(),
            self.store.catalog().cloud().cloned(),
        )?;
        let cached = Cached {
            base: manifest,
            table: Arc::new(t.writable(self.store.clone())),
        };
        self.cache.write().expect("lock").insert(name, cached);
        Ok(None)
    }

    /// `DROP TABLE jammi.public.<name>` deletes the result table, as `jammi tables delete`
    /// and `JammiSession::delete_table` do (under the same ownership rules: a table whose
    /// manifest names objects that are not its own is reported, nothing removed).
    fn deregister_table(
        &self,
        name: &str,
    ) -> datafusion::error::Result<Option<Arc<dyn TableProvider>>> {
        if !self.table_exist(name) {
            return Ok(None);
        }
        let (store, n) = (self.store.clone(), name.to_string());
        let dropped = block_on("dropping a result table", async move {
            let schema = store.manifest_schema(&n).await;
            store.delete_table_files(&n).await.map(|()| schema)
        })??;
        self.cache.write().expect("lock").remove(name);
        let schema =
            dropped.unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty()));
        Ok(Some(Arc::new(
            datafusion::datasource::empty::EmptyTable::new(schema),
        )))
    }
}

/// What `CREATE TABLE jammi.public.<name> AS SELECT ...` writes: the table, its index on
/// the only vector column (cosine, default HNSW parameters, `quantization`), if there is one.
pub(crate) fn ctas_spec(
    name: &str,
    schema: &datafusion::arrow::datatypes::SchemaRef,
    quantization: crate::index::Quantization,
) -> crate::store::TableSpec {
    let vectors: Vec<String> = schema
        .fields()
        .iter()
        .filter(|f| crate::index::vectors::check_vector_type(f.name(), f.data_type()).is_ok())
        .map(|f| f.name().clone())
        .collect();
    crate::store::TableSpec {
        name: Some(name.to_string()),
        vector_column: (vectors.len() == 1).then(|| vectors[0].clone()),
        index: crate::index::IndexParams {
            quantization,
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Runs a future from synchronous DataFusion code (`register_table`, table functions):
/// ready futures return at once; otherwise the thread blocks in place, which needs a
/// multi-threaded runtime (`what` names the operation in that error).
pub(crate) fn block_on<F: std::future::Future>(what: &str, f: F) -> Result<F::Output> {
    use futures::FutureExt;
    let mut f = Box::pin(f);
    if let Some(v) = (&mut f).now_or_never() {
        return Ok(v);
    }
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| h.block_on(f)))
        }
        Ok(_) => Err(JammiError::InvalidInput(format!(
            "{what} needs a multi-threaded tokio runtime"
        ))),
        Err(_) => Ok(futures::executor::block_on(f)),
    }
}
