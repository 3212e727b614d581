//! `JammiSession`: a database rooted at a path or storage URL — its catalog and result
//! tables live under the root — with a DataFusion `SessionContext` that has everything
//! jammi-db adds installed.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use datafusion::arrow::array::{ListArray, RecordBatch};
use datafusion::arrow::datatypes::Float32Type;
use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::context::SQLOptions;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::expr::Placeholder;
use datafusion::logical_expr::{DdlStatement, LogicalPlan, LogicalPlanBuilder};
use datafusion::prelude::Expr;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::TryStreamExt;

use crate::catalog::provider::{LazySource, build_source_table};
use crate::catalog::{Catalog, SourceCatalogProvider, SourceEntry, validate_source_name};
use crate::error::{JammiError, Result};
use crate::source::{SourceConnection, SourceType};
use crate::sql::vector_search::node::SearchQueries;
use crate::sql::{PreparedQuery, SearchContext, SearchOptions, SearchStats};
use crate::storage::{CloudConfig, StorageRegistry, StorageUrl};
use crate::store::{Manifest, RecoveryReport, ResultStore, TableSpec};

/// The database root used when none is given (the `jammi` CLI's and the Python binding's):
/// `$XDG_DATA_HOME/jammi`, else `~/.local/share/jammi`, else `jammi-data`.
pub fn default_root() -> String {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return std::path::PathBuf::from(d)
            .join("jammi")
            .display()
            .to_string();
    }
    match std::env::var_os("HOME") {
        Some(h) => std::path::PathBuf::from(h)
            .join(".local/share/jammi")
            .display()
            .to_string(),
        None => "jammi-data".to_string(),
    }
}

/// How to open a database.
#[derive(Debug, Clone, Default)]
pub struct OpenOptions {
    /// Cloud settings of the root (`None`: the ambient credential chain).
    pub cloud: Option<CloudConfig>,
    /// Registry to use (e.g. one with a request-counting layer); a new one by default.
    pub registry: Option<StorageRegistry>,
    /// Run the recovery pass at open. Off by default: opening a database only reads it;
    /// recovery runs when asked (`JammiSession::recover`, `jammi recover`).
    pub recover: bool,
    /// Whether writes merge the small segments they add (`None`: `JAMMI_AUTO_COMPACT`,
    /// else on; see [`ResultStore::with_auto_compact`]).
    pub auto_compact: Option<bool>,
    /// Run queries on the Apache Ballista cluster whose scheduler is at this address
    /// (`df://host:port`): planned here, run on its executors, which reach the storage
    /// with their own ambient credentials. Needs the `ballista` feature. `None`: queries
    /// run in this process.
    pub cluster: Option<String>,
}

/// Hands `ctx`'s queries to the cluster at `url`; a root only this process can reach
/// (`memory://`) cannot be, nor can a build without the `ballista` feature.
async fn connect_cluster(
    ctx: &SessionContext,
    search: &Arc<SearchContext>,
    url: &str,
    root: &StorageUrl,
) -> Result<()> {
    let refuse = |reason: String| JammiError::Cluster {
        url: url.to_string(),
        reason,
    };
    if root.scheme() == crate::storage::Scheme::Memory {
        return Err(refuse(format!(
            "the root {root} is in this process's memory, which executors cannot reach"
        )));
    }
    #[cfg(feature = "ballista")]
    {
        crate::cluster::connect(ctx, search, url).await
    }
    #[cfg(not(feature = "ballista"))]
    {
        let _ = (ctx, search);
        Err(refuse(
            "this build of jammi-db has no cluster client (cargo feature `ballista`)".into(),
        ))
    }
}

/// A jammi database: sources, result tables and SQL over both.
pub struct JammiSession {
    ctx: SessionContext,
    registry: StorageRegistry,
    catalog: Arc<Catalog>,
    store: Arc<ResultStore>,
    search: Arc<SearchContext>,
    sources: RwLock<HashMap<String, Arc<LazySource>>>,
    recovery: RecoveryReport,
    /// Queries run on a cluster ([`OpenOptions::cluster`]).
    clustered: bool,
}

impl std::fmt::Debug for JammiSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JammiSession")
            .field("root", &self.catalog.root().to_string())
            .finish()
    }
}

impl JammiSession {
    /// Opens (or creates) the database under `root`, a local path or a storage URL, with
    /// the ambient credentials of its cloud. Opening changes nothing under the root but
    /// creating a local root directory.
    pub async fn open(root: &str) -> Result<JammiSession> {
        Self::open_with(root, OpenOptions::default()).await
    }

    /// Opens with explicit options.
    pub async fn open_with(root: &str, options: OpenOptions) -> Result<JammiSession> {
        let root = StorageUrl::parse(root)?.as_prefix();
        root.check_enabled()?;
        if let Some(url) = &options.cluster
            && options.cloud.as_ref().is_some_and(CloudConfig::has_secrets)
        {
            return Err(JammiError::Cluster {
                url: url.clone(),
                reason: format!(
                    "the root {root} was given credentials, which never leave this process: \
                     the cluster's scheduler and executors read it with their own ambient \
                     credentials; give them those, and this session none"
                ),
            });
        }
        if let Some(dir) = root.local_path() {
            std::fs::create_dir_all(&dir).map_err(|e| JammiError::InvalidUrl {
                url: root.to_string(),
                reason: format!("cannot create the root directory: {e}"),
            })?;
        }
        let registry = options.registry.unwrap_or_default();
        let catalog = Catalog::new(root.clone(), registry.clone(), options.cloud.clone());
        let mut store = ResultStore::with_root(root, registry.clone(), catalog.clone())?;
        if let Some(on) = options.auto_compact {
            store = store.with_auto_compact(on);
        }
        let store = Arc::new(store);
        // Reach the root once now, so a wrong URL or credentials fail at open.
        store.object_store().await?;
        let recovery = if options.recover {
            store.recover().await?
        } else {
            RecoveryReport::default()
        };

        // Every query lists its sources afresh (DataFusion keeps listings forever by
        // default): `SET datafusion.runtime.list_files_cache_ttl = '30s'` trades that for
        // fewer LIST requests.
        let runtime = RuntimeEnvBuilder::new()
            .with_object_store_registry(Arc::new(registry.clone()))
            .with_object_list_cache_ttl(Some(std::time::Duration::ZERO))
            .build_arc()?;
        let config = SessionConfig::new().with_information_schema(true);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .build();
        let ctx = SessionContext::new_with_state(state);
        let search = crate::sql::register(&ctx, &registry, Some(store.clone())).await?;
        if let Some(url) = &options.cluster {
            connect_cluster(&ctx, &search, url, store.root()).await?;
            registry.refuse_credentials_for_cluster(url);
        }
        let session = JammiSession {
            ctx,
            registry,
            catalog,
            store,
            search,
            sources: RwLock::default(),
            recovery,
            clustered: options.cluster.is_some(),
        };
        for entry in session.catalog.sources().await? {
            session.mount(entry, None, None);
        }
        Ok(session)
    }

    fn mount(
        &self,
        entry: SourceEntry,
        cloud: Option<CloudConfig>,
        table: Option<Arc<dyn datafusion::catalog::TableProvider>>,
    ) {
        let name = entry.name.clone();
        let mut lazy = LazySource::new(entry, cloud, self.registry.clone(), self.ctx.state());
        if let Some(t) = table {
            lazy = lazy.with_table(t);
        }
        let lazy = Arc::new(lazy);
        self.ctx
            .register_catalog(&name, Arc::new(SourceCatalogProvider::new(lazy.clone())));
        self.sources.write().expect("lock").insert(name, lazy);
    }

    /// The underlying DataFusion context.
    pub fn context(&self) -> &SessionContext {
        &self.ctx
    }

    /// Reports the progress of index builds (`CREATE EXTERNAL TABLE ... 'jammi.vector_column'`)
    /// to `progress`, e.g. a terminal bar.
    pub fn set_build_progress(&self, progress: Arc<dyn crate::index::progress::BuildProgress>) {
        let reporter = Arc::new(crate::index::progress::ProgressReporter(progress));
        self.ctx
            .state_ref()
            .write()
            .config_mut()
            .set_extension(reporter);
    }

    /// The storage registry.
    pub fn registry(&self) -> &StorageRegistry {
        &self.registry
    }

    /// The catalog.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The result store.
    pub fn result_store(&self) -> &Arc<ResultStore> {
        &self.store
    }

    /// What the recovery pass at open did (empty unless `OpenOptions::recover` was set).
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// Runs SQL; returns a lazy `DataFrame` (DDL and DML run now). Same as
    /// `SessionContext::sql`, with `vector_search` query vectors parsed cheaply.
    pub async fn sql(&self, query: &str) -> Result<DataFrame> {
        let plan = crate::sql::create_logical_plan(&self.ctx.state(), query).await?;
        SQLOptions::new().verify_plan(&plan)?;
        if let Some(done) = self.create_table_as(&plan).await? {
            return Ok(done);
        }
        Ok(self.ctx.execute_logical_plan(plan).await?)
    }

    /// `CREATE TABLE jammi.public.<t> AS SELECT ...` of a new table, streamed: rows go to the
    /// store as the query yields them, in segments of the session's budget, never all in
    /// memory (DataFusion's own CTAS collects them into a `MemTable` first). Every other form
    /// (an existing table, `OR REPLACE`, constraints, defaults) and every other catalog's
    /// table is left to DataFusion.
    async fn create_table_as(&self, plan: &LogicalPlan) -> Result<Option<DataFrame>> {
        let LogicalPlan::Ddl(DdlStatement::CreateMemoryTable(c)) = plan else {
            return Ok(None);
        };
        let state = self.ctx.state();
        let defaults = &state.config_options().catalog;
        let name = c
            .name
            .clone()
            .resolve(&defaults.default_catalog, &defaults.default_schema);
        let plain = !c.or_replace
            && !c.temporary
            && c.constraints.is_empty()
            && c.column_defaults.is_empty();
        let ours = name.catalog.as_ref() == crate::sql::RESULT_CATALOG
            && name.schema.as_ref() == crate::catalog::provider::SCHEMA;
        let fields = c.input.schema().fields();
        let names: std::collections::HashSet<&String> = fields.iter().map(|f| f.name()).collect();
        if !plain || !ours || names.len() != fields.len() || self.ctx.table_exist(c.name.clone())? {
            return Ok(None);
        }
        crate::format::naming::validate_table_name(&name.table)?;
        let budget = crate::sql::options::session_write(&state).segment_max_bytes;
        let input = c.input.as_ref().clone();
        let rows = self.ctx.execute_logical_plan(input).await?;
        let rows = rows.execute_stream().await?;
        // The rows' own schema (the plan's can differ in nullability) is the table's.
        let schema = rows.schema();
        let precision = crate::sql::options::session_quantization(&state).unwrap_or_default();
        let spec = crate::catalog::provider::ctas_spec(&name.table, &schema, precision);
        let rows = rows.map_err(JammiError::from);
        self.store
            .write_table_streaming(&spec, schema, rows, budget)
            .await?;
        let empty = LogicalPlanBuilder::empty(false).build()?;
        Ok(Some(DataFrame::new(state, empty)))
    }

    /// Plans `query` once, for many runs with new parameter values
    /// ([`PreparedQuery::execute`]). A query whose only parameters are `vector_search`
    /// query vectors keeps its physical plan: a run skips DataFusion's planning (on a
    /// cluster, every run is planned and sent to the scheduler again).
    pub async fn prepare(&self, query: &str) -> Result<PreparedQuery> {
        let state = self.ctx.state();
        let plan = crate::sql::create_logical_plan(&state, query).await?;
        SQLOptions::new().verify_plan(&plan)?;
        PreparedQuery::new(state, plan, self.clustered).await
    }

    /// [`JammiSession::search`] prepared once: each run takes the query vector as `$1`.
    pub async fn prepare_search(
        &self,
        table: &str,
        k: usize,
        options: SearchOptions,
    ) -> Result<PreparedQuery> {
        let query = Expr::Placeholder(Placeholder::new_with_field("$1".into(), None));
        let df = self.plan_search(table, SearchQueries::One(query), k, options)?;
        let (state, plan) = df.into_parts();
        PreparedQuery::new(state, plan, self.clustered).await
    }

    /// Registers a source and persists it. The object (or a non-empty prefix) must exist
    /// and its schema must be readable, so a bad URL, format or credentials fail here.
    pub async fn add_source(
        &self,
        name: &str,
        source_type: SourceType,
        connection: SourceConnection,
    ) -> Result<()> {
        validate_source_name(name)?;
        if self.ctx.catalog(name).is_some() {
            return Err(JammiError::AlreadyExists {
                kind: "source or catalog",
                name: name.to_string(),
            });
        }
        if let Some(c) = &connection.cloud {
            c.validate()?;
        }
        let (hint, table) = build_source_table(
            &self.registry,
            &self.ctx.state(),
            &connection,
            connection.cloud.as_ref(),
        )
        .await?;
        let table_name = hint.unwrap_or_else(|| name.to_string());
        let entry = self
            .catalog
            .put_source(
                name,
                source_type,
                &table_name,
                &connection,
                Some(table.schema().as_ref()),
            )
            .await?;
        self.mount(entry, connection.cloud.clone(), Some(table));
        Ok(())
    }

    /// Re-supplies credentials for a source whose secrets were not persisted.
    pub async fn set_source_credentials(&self, name: &str, cloud: CloudConfig) -> Result<()> {
        cloud.validate()?;
        let entry = self
            .catalog
            .source(name)
            .await?
            .ok_or_else(|| JammiError::NotFound {
                kind: "source",
                name: name.to_string(),
            })?;
        let lazy = LazySource::new(
            entry.clone(),
            Some(cloud.clone()),
            self.registry.clone(),
            self.ctx.state(),
        );
        let table = lazy.table().await?;
        deregister_catalog(&self.ctx, name);
        self.mount(entry, Some(cloud), Some(table));
        Ok(())
    }

    /// Unregisters and forgets a source (its data is not touched).
    pub async fn remove_source(&self, name: &str) -> Result<()> {
        validate_source_name(name)?;
        let existed = self.catalog.remove_source(name).await?;
        let mounted = self.sources.write().expect("lock").remove(name).is_some();
        if mounted {
            deregister_catalog(&self.ctx, name);
        }
        if !existed && !mounted {
            return Err(JammiError::NotFound {
                kind: "source",
                name: name.to_string(),
            });
        }
        Ok(())
    }

    /// Every persisted source.
    pub async fn list_sources(&self) -> Result<Vec<SourceEntry>> {
        self.catalog.sources().await
    }

    /// Writes a result table from a query's results (streamed, not collected).
    pub async fn write_result_table(&self, spec: &TableSpec, df: DataFrame) -> Result<Manifest> {
        let schema = Arc::new(df.schema().as_arrow().clone());
        let stream = df.execute_stream().await?.map_err(JammiError::from);
        self.write_result_stream(spec, schema, stream).await
    }

    /// Writes a result table from a stream of batches of `schema` (e.g. Arrow data handed
    /// over by another library).
    pub async fn write_result_stream<S>(
        &self,
        spec: &TableSpec,
        schema: datafusion::arrow::datatypes::SchemaRef,
        batches: S,
    ) -> Result<Manifest>
    where
        S: futures::Stream<Item = Result<RecordBatch>> + Send + Unpin,
    {
        let m = self.store.write_table(spec, schema, batches).await?;
        self.refresh_tables().await?;
        Ok(m)
    }

    /// Upserts `data` into result table `table` by the key columns `on`: rows whose key is in
    /// the table replace it (their new vectors are indexed, the old ones never found again),
    /// the others are inserted — `MERGE INTO ... WHEN MATCHED THEN UPDATE WHEN NOT MATCHED
    /// THEN INSERT`, committed as one version. `data` needs the table's columns. Returns the
    /// rows updated plus inserted; a key that two rows of `data` share fails, naming it,
    /// before anything is committed.
    pub async fn merge(&self, table: &str, data: DataFrame, on: &[&str]) -> Result<u64> {
        use datafusion::logical_expr::dml::{
            MergeIntoAction, MergeIntoClause, MergeIntoClauseKind,
        };
        use datafusion::prelude::{Expr, col};
        if on.is_empty() {
            return Err(JammiError::InvalidInput(format!(
                "merge into {table}: name at least one key column in `on`"
            )));
        }
        // The provider opens the table at its latest version.
        let target = datafusion::common::TableReference::full("jammi", "public", table);
        let provider = self.ctx.table_provider(target.clone()).await?;
        let schema = provider.schema();
        let data_ref = datafusion::common::TableReference::bare("__jammi_merge_data");
        let cols = |q: &datafusion::common::TableReference, c: &str| {
            col(datafusion::common::Column::new(Some(q.clone()), c))
        };
        let mut keys = Vec::new();
        for k in on {
            if schema.index_of(k).is_err() {
                return Err(JammiError::InvalidInput(format!(
                    "merge into {table}: key column '{k}' is not a column of the table"
                )));
            }
            keys.push(cols(&target, k).eq(cols(&data_ref, k)));
        }
        let on_expr = keys
            .into_iter()
            .reduce(Expr::and)
            .ok_or_else(|| JammiError::InvalidInput(format!("merge into {table}: no key")))?;
        let names: Vec<String> = schema.fields().iter().map(|f| f.name().clone()).collect();
        let clauses = vec![
            MergeIntoClause {
                kind: MergeIntoClauseKind::Matched,
                predicate: None,
                action: MergeIntoAction::Update(
                    names
                        .iter()
                        .map(|c| (c.clone(), cols(&data_ref, c)))
                        .collect(),
                ),
            },
            MergeIntoClause {
                kind: MergeIntoClauseKind::NotMatched,
                predicate: None,
                action: MergeIntoAction::Insert {
                    columns: names.clone(),
                    values: names.iter().map(|c| cols(&data_ref, c)).collect(),
                },
            },
        ];
        let target_schema =
            datafusion::common::DFSchema::try_from_qualified_schema(target.clone(), &schema)?;
        let data_schema = datafusion::common::DFSchema::try_from_qualified_schema(
            data_ref,
            data.schema().as_arrow(),
        )?;
        let merge_schema = Arc::new(target_schema.join(&data_schema)?);
        let state = self.ctx.state();
        let source = data.create_physical_plan().await?;
        let plan = provider
            .merge_into(&state, source, merge_schema, on_expr, clauses)
            .await?;
        let out = datafusion::physical_plan::collect(plan, self.ctx.task_ctx()).await?;
        self.refresh_tables().await?;
        let n = out
            .first()
            .and_then(|b| {
                b.column(0)
                    .as_any()
                    .downcast_ref::<datafusion::arrow::array::UInt64Array>()
                    .map(|a| a.value(0))
            })
            .unwrap_or(0);
        Ok(n)
    }

    /// Rewrites the small segments of result table `name` and those with many deleted
    /// rows into fewer, larger ones, as a new version (see [`ResultStore::compact`]).
    pub async fn compact(
        &self,
        name: &str,
        options: &crate::store::maintain::CompactOptions,
    ) -> Result<crate::store::maintain::CompactReport> {
        let report = self.store.compact(name, options).await?;
        self.refresh_tables().await?;
        Ok(report)
    }

    /// Removes the files of result table `name` that only versions replaced more than
    /// `older_than` ago use (see [`ResultStore::vacuum`]); `dry_run` only reports them.
    pub async fn vacuum(
        &self,
        name: &str,
        older_than: std::time::Duration,
        dry_run: bool,
    ) -> Result<crate::store::maintain::VacuumReport> {
        self.store.vacuum(name, older_than, dry_run).await
    }

    /// Re-reads the catalog: sources added or removed by other processes, and result tables
    /// committed or deleted by them.
    pub async fn refresh(&self) -> Result<()> {
        let entries = self.catalog.sources().await?;
        let names: std::collections::HashSet<&str> =
            entries.iter().map(|e| e.name.as_str()).collect();
        let gone: Vec<String> = self
            .sources
            .read()
            .expect("lock")
            .keys()
            .filter(|n| !names.contains(n.as_str()))
            .cloned()
            .collect();
        for n in gone {
            self.sources.write().expect("lock").remove(&n);
            deregister_catalog(&self.ctx, &n);
        }
        for e in entries {
            let known = self.sources.read().expect("lock").contains_key(&e.name);
            if !known {
                self.mount(e, None, None);
            }
        }
        self.refresh_tables().await
    }

    /// Re-lists result tables (to see other processes' commits).
    pub async fn refresh_tables(&self) -> Result<()> {
        if let Some(c) = self.ctx.catalog(crate::sql::RESULT_CATALOG) {
            let any: &dyn std::any::Any = c.as_ref();
            if let Some(p) = any.downcast_ref::<crate::catalog::JammiCatalogProvider>() {
                p.refresh().await?;
            }
        }
        Ok(())
    }

    /// Names of committed result tables.
    pub async fn list_tables(&self) -> Result<Vec<String>> {
        self.store.list_tables().await
    }

    /// A committed table's manifest (rows, dimensions, metric, files and sizes).
    pub async fn describe_table(&self, name: &str) -> Result<Manifest> {
        self.store.manifest(name).await
    }

    /// Deletes a result table (manifest first, then siblings).
    pub async fn delete_table(&self, name: &str) -> Result<()> {
        // A table that is not there is an error here (the store's delete is idempotent); a
        // broken one is still deleted.
        if let Err(e @ JammiError::NotFound { .. }) = self.store.manifest(name).await {
            return Err(e);
        }
        self.store.delete_table_files(name).await?;
        if let Some(c) = self.ctx.catalog(crate::sql::RESULT_CATALOG) {
            let any: &dyn std::any::Any = c.as_ref();
            if let Some(p) = any.downcast_ref::<crate::catalog::JammiCatalogProvider>() {
                p.forget(name);
            }
        }
        Ok(())
    }

    /// Runs the recovery pass now.
    pub async fn recover(&self) -> Result<RecoveryReport> {
        self.store.recover().await
    }

    /// Nearest neighbours of `query` in `table`: the plan of
    /// `SELECT * FROM vector_search(table, query, k, options)`, built directly.
    pub async fn search(
        &self,
        table: &str,
        query: &[f32],
        k: usize,
        options: SearchOptions,
    ) -> Result<DataFrame> {
        let list = ListArray::from_iter_primitive::<Float32Type, _, _>([Some(
            query.iter().map(|v| Some(*v)),
        )]);
        let query = Expr::Literal(ScalarValue::List(Arc::new(list)), None);
        self.plan_search(table, SearchQueries::One(query), k, options)
    }

    /// The `k` nearest neighbours in `table` of every row of `queries`, a relation of two
    /// columns (a key and a vector): the plan of
    /// `SELECT * FROM vector_search_batch(table, (SELECT key, vector FROM queries), k, options)`.
    /// Rows are `query_<key>`, the hit's columns, `_distance` and `_rank`.
    pub async fn search_batch(
        &self,
        table: &str,
        queries: DataFrame,
        k: usize,
        options: SearchOptions,
    ) -> Result<DataFrame> {
        let input = queries.into_unoptimized_plan();
        self.plan_search(table, SearchQueries::Many(input), k, options)
    }

    fn plan_search(
        &self,
        table: &str,
        queries: SearchQueries,
        k: usize,
        options: SearchOptions,
    ) -> Result<DataFrame> {
        let k = crate::sql::vector_search::args::k_of(&ScalarValue::UInt64(Some(k as u64)))?;
        let state = self.ctx.state();
        let plan = crate::sql::vector_search::node::plan_search(
            &self.search,
            &state,
            table,
            queries,
            k,
            options,
        )?;
        Ok(DataFrame::new(state, plan))
    }

    /// Runs `df` and returns its batches with how each search in it was answered (mode,
    /// fallback reason, requests, candidates), read from this run's own plan.
    pub async fn collect_with_stats(
        &self,
        df: DataFrame,
    ) -> Result<(Vec<RecordBatch>, Vec<SearchStats>)> {
        let task = Arc::new(df.task_ctx());
        let plan = df.create_physical_plan().await?;
        let batches = datafusion::physical_plan::collect(plan.clone(), task).await?;
        Ok((batches, SearchStats::of(&plan)))
    }

    /// The search context: loaded-index cache, and what plan codecs need.
    pub fn search_context(&self) -> &Arc<SearchContext> {
        &self.search
    }

    /// Runs several `;`-separated statements, returning each one's collected batches.
    pub async fn sql_script(
        &self,
        script: &str,
    ) -> Result<Vec<Vec<datafusion::arrow::record_batch::RecordBatch>>> {
        let mut out = Vec::new();
        for stmt in split_statements(script) {
            out.push(self.sql(&stmt).await?.collect().await?);
        }
        Ok(out)
    }
}

/// Splits a script into statements at each `;` that SQL's tokenizer sees as one: not in a
/// string, a quoted identifier, a line or a block comment. Each statement is kept as
/// typed (comments included); pieces holding only whitespace and comments are dropped. A
/// script that does not tokenise (an unclosed quote or comment) is one statement, for
/// DataFusion's parser to report.
pub fn split_statements(script: &str) -> Vec<String> {
    use datafusion::sql::sqlparser::dialect::GenericDialect;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let whole = || {
        let t = script.trim();
        if t.is_empty() {
            vec![]
        } else {
            vec![t.to_string()]
        }
    };
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, script).tokenize_with_location() else {
        return whole();
    };
    let mut out = Vec::new();
    let (mut from, mut meaningful) = (0usize, false);
    for t in &tokens {
        match &t.token {
            Token::SemiColon => {
                let at = crate::sql::redact::offset(script, t.span.start);
                if meaningful {
                    out.push(script[from..at].trim().to_string());
                }
                (from, meaningful) = (at + 1, false);
            }
            Token::Whitespace(_) | Token::EOF => {}
            _ => meaningful = true,
        }
    }
    if meaningful {
        out.push(script[from..].trim().to_string());
    }
    out
}

/// Removes a catalog from a context (DataFusion's default catalog list is a
/// `MemoryCatalogProviderList`; other lists get an empty catalog in its place).
fn deregister_catalog(ctx: &SessionContext, name: &str) {
    let list = ctx.state().catalog_list().clone();
    let any: &dyn std::any::Any = list.as_ref();
    match any.downcast_ref::<datafusion::catalog::MemoryCatalogProviderList>() {
        Some(m) => {
            m.catalogs.remove(name);
        }
        None => {
            list.register_catalog(
                name.to_string(),
                Arc::new(datafusion::catalog::MemoryCatalogProvider::new()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn scripts_split_only_at_semicolons_the_tokenizer_sees() {
        let script = "SELECT 1 /* ; */ AS a; SELECT ';' AS \"b;c\" -- ; here\n; \
                      /* only a comment; */ ; SELECT $$;$$ AS d";
        assert_eq!(
            split_statements(script),
            [
                "SELECT 1 /* ; */ AS a",
                "SELECT ';' AS \"b;c\" -- ; here",
                "SELECT $$;$$ AS d",
            ]
        );
        assert!(split_statements("  -- nothing\n ; ").is_empty());
        // Unclosed: one statement, for the parser to report.
        assert_eq!(split_statements("SELECT 'a; b"), ["SELECT 'a; b"]);
    }
}
