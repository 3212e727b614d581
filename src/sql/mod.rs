//! The SQL surface: option namespaces, table factories (DDL), `vector_search`, distance
//! functions, and the one call that installs them all into a `SessionContext`.

pub mod codec;
pub mod ddl;
pub mod functions;
mod install;
pub mod literal;
pub mod options;
pub mod prepared;
pub mod redact;
pub mod vector_search;

use std::sync::Arc;

use datafusion::error::Result as DfResult;
use datafusion::execution::SessionState;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::DFParserBuilder;
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::parser::ParserError;
use datafusion::sql::sqlparser::tokenizer::Tokenizer;

use crate::catalog::JammiCatalogProvider;
use crate::error::Result;
use crate::index::cache::IndexCache;
use crate::source::FileFormat;
use crate::storage::StorageRegistry;
use crate::store::ResultStore;
pub use prepared::PreparedQuery;
pub use redact::redact_secrets;
pub use vector_search::{SearchContext, SearchOptions, SearchStats};

/// Plans one SQL statement as `SessionState::create_logical_plan` does, with the query
/// vectors of `vector_search` calls handed to the parser in their string form
/// ([`literal::fold_query_vectors`]).
pub(crate) async fn create_logical_plan(state: &SessionState, sql: &str) -> DfResult<LogicalPlan> {
    // Parsed before the first await: the dialect is not `Send`, and this future must be.
    let statement = parse_one(state, sql)?;
    state.statement_to_plan(statement).await
}

fn parse_one(state: &SessionState, sql: &str) -> DfResult<datafusion::sql::parser::Statement> {
    let options = &state.config_options().sql_parser;
    let dialect = dialect_from_str(options.dialect).ok_or_else(|| {
        datafusion::common::plan_datafusion_err!("Unsupported SQL dialect: {}", options.dialect)
    })?;
    let tokens = Tokenizer::new(dialect.as_ref(), sql)
        .tokenize_with_location()
        .map_err(ParserError::from)?;
    let mut statements = DFParserBuilder::new(literal::fold_query_vectors(tokens))
        .with_dialect(dialect.as_ref())
        .with_recursion_limit(options.recursion_limit.get())
        .build()?
        .parse_statements()?;
    if statements.len() > 1 {
        return datafusion::common::not_impl_err!(
            "The context currently only supports a single SQL statement"
        );
    }
    statements.pop_front().ok_or_else(|| {
        datafusion::common::plan_datafusion_err!(
            "No SQL statements were provided in the query string"
        )
    })
}

/// The `STORED AS` names whose factories [`register`] wraps, and their formats.
const FACTORY_FORMATS: [(&str, FileFormat); 6] = [
    ("PARQUET", FileFormat::Parquet),
    ("CSV", FileFormat::Csv),
    ("JSON", FileFormat::Json),
    ("NDJSON", FileFormat::Json),
    ("ARROW", FileFormat::Arrow),
    ("AVRO", FileFormat::Avro),
];

/// Marks a session `register` was applied to, with the table factories it had before.
#[derive(Debug)]
struct Installed {
    originals: std::collections::HashMap<
        String,
        Option<Arc<dyn datafusion::catalog::TableProviderFactory>>,
    >,
    search: Arc<SearchContext>,
}

/// Name under which [`register`] mounts the result-table catalog.
pub const RESULT_CATALOG: &str = "jammi";

/// Installs jammi-db into an existing `SessionContext`:
/// - `registry`'s object stores (now, and as later statements bind new buckets);
/// - the `aws.*`, `gcp.*`, `azure.*` and `jammi.*` option namespaces;
/// - table factories so `CREATE EXTERNAL TABLE ... STORED AS PARQUET|CSV|JSON|ARROW|AVRO
///   LOCATION '<storage url>'` works for every scheme;
/// - with a `store`, its result tables as the catalog `jammi` (schema `public`);
/// - `vector_search(...)` and `vector_search_batch(...)` in FROM (a relation planner, and a
///   query planner that plans them, delegating every other plan to the session's own), the
///   rules that answer `ORDER BY <distance> LIMIT k` by an index and push projections into
///   searches, and `l2_distance`.
///
/// Everything else of the session is left as it was; a second call adds nothing. Returns
/// the session's search context (its caches, and what [`codec::JammiPhysicalCodec`] needs).
pub async fn register(
    ctx: &SessionContext,
    registry: &StorageRegistry,
    store: Option<Arc<ResultStore>>,
) -> Result<Arc<SearchContext>> {
    registry.hide_in_listings(Arc::new(crate::store::hidden::OwnSidecars::new()));
    registry.install(ctx);
    ctx.register_table_options_extension(options::AwsOptions::default());
    ctx.register_table_options_extension(options::GcpOptions::default());
    ctx.register_table_options_extension(options::AzureOptions::default());
    ctx.register_table_options_extension(options::JammiOptions::default());
    let cache = match &store {
        Some(s) => s.index_cache().clone(),
        None => Arc::new(IndexCache::with_defaults()),
    };
    let search = {
        let state_ref = ctx.state_ref();
        let mut state = state_ref.write();
        // What the session had before the first `register`: a second call wraps the same
        // factories and adds no second planner.
        let installed = match state.config().get_extension::<Installed>() {
            Some(i) => i,
            None => {
                let search = Arc::new(SearchContext::new(registry.clone(), cache));
                *state = install::with_search(&state, search.clone(), Arc::downgrade(&state_ref))?;
                let originals = FACTORY_FORMATS
                    .iter()
                    .map(|(name, _)| {
                        let f = state.table_factories().get(*name).cloned();
                        (name.to_string(), f)
                    })
                    .collect();
                let i = Arc::new(Installed { originals, search });
                state.config_mut().set_extension(i.clone());
                i
            }
        };
        let settings = &mut state.config_mut().options_mut().extensions;
        if settings.get::<options::JammiSettings>().is_none() {
            settings.insert(options::JammiSettings::default());
        }
        // Each format's factory wraps the one the session had (DataFusion's default unless
        // the application set its own).
        let factories = state.table_factories_mut();
        for (name, format) in FACTORY_FORMATS {
            let inner: Arc<dyn datafusion::catalog::TableProviderFactory> =
                match installed.originals.get(name).cloned().flatten() {
                    Some(f) => f,
                    None => Arc::new(datafusion::datasource::provider::DefaultTableFactory::new()),
                };
            factories.insert(
                name.to_string(),
                Arc::new(ddl::StorageTableFactory::over(
                    registry.clone(),
                    format,
                    inner,
                )),
            );
        }
        installed.search.clone()
    };
    if let Some(store) = store {
        let provider = Arc::new(JammiCatalogProvider::new(store));
        provider.refresh().await?;
        ctx.register_catalog(RESULT_CATALOG, provider);
    }
    for udf in functions::distance_udfs() {
        ctx.register_udf(udf);
    }
    Ok(search)
}
