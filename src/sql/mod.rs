//! The SQL surface: option namespaces, table factories (DDL), `vector_search`, distance
//! functions, and the one call that installs them all into a `SessionContext`.

pub mod ddl;
pub mod functions;
pub mod literal;
pub mod options;
pub mod redact;
pub mod vector_search;

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{TableFunctionArgs, TableFunctionImpl, TableProvider};
use datafusion::datasource::MemTable;
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
pub use redact::redact_secrets;
pub use vector_search::{QueryStats, SearchOptions, VectorSearchFunction};

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
}

/// Name under which [`register`] mounts the result-table catalog.
pub const RESULT_CATALOG: &str = "jammi";

/// Installs jammi-db into an existing `SessionContext`:
/// - `registry`'s object stores (now, and as later statements bind new buckets);
/// - the `aws.*`, `gcp.*`, `azure.*` and `jammi.*` option namespaces;
/// - table factories so `CREATE EXTERNAL TABLE ... STORED AS PARQUET|CSV|JSON|ARROW|AVRO
///   LOCATION '<storage url>'` works for every scheme;
/// - with a `store`, its result tables as the catalog `jammi` (schema `public`);
/// - `vector_search(...)`, `vector_search_stats()` and the distance functions;
/// - planners folding array literals of plain numbers (query vectors) straight to their
///   constant, with the value and type `make_array` yields: `vector_search`'s query
///   argument, and other literals of 32 or more numbers.
///
/// Returns the `vector_search` function (for its statistics).
pub async fn register(
    ctx: &SessionContext,
    registry: &StorageRegistry,
    store: Option<Arc<ResultStore>>,
) -> Result<Arc<VectorSearchFunction>> {
    registry.install(ctx);
    ctx.register_table_options_extension(options::AwsOptions::default());
    ctx.register_table_options_extension(options::GcpOptions::default());
    ctx.register_table_options_extension(options::AzureOptions::default());
    ctx.register_table_options_extension(options::JammiOptions::default());
    {
        let state = ctx.state_ref();
        let mut state = state.write();
        // What the session had before the first `register`: a second call wraps the same
        // factories and adds no second planner.
        let installed = match state.config().get_extension::<Installed>() {
            Some(i) => i,
            None => {
                state.register_relation_planner(Arc::new(literal::VectorSearchArgsPlanner))?;
                let originals = FACTORY_FORMATS
                    .iter()
                    .map(|(name, _)| {
                        let f = state.table_factories().get(*name).cloned();
                        (name.to_string(), f)
                    })
                    .collect();
                let i = Arc::new(Installed { originals });
                state.config_mut().set_extension(i.clone());
                i
            }
        };
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
    }
    let cache = match &store {
        Some(s) => s.index_cache().clone(),
        None => Arc::new(IndexCache::with_defaults()),
    };
    if let Some(store) = store {
        let provider = Arc::new(JammiCatalogProvider::new(store));
        provider.refresh().await?;
        ctx.register_catalog(RESULT_CATALOG, provider);
    }
    let search = Arc::new(VectorSearchFunction::new(registry.clone(), cache));
    ctx.register_udtf("vector_search", search.clone());
    ctx.register_udtf(
        "vector_search_stats",
        Arc::new(StatsFunction {
            search: search.clone(),
        }),
    );
    for udf in functions::distance_udfs() {
        ctx.register_udf(udf);
    }
    Ok(search)
}

/// `vector_search_stats()`: how the last `vector_search` was answered and the index cache
/// state, as one row.
#[derive(Debug)]
struct StatsFunction {
    search: Arc<VectorSearchFunction>,
}

impl TableFunctionImpl for StatsFunction {
    fn call_with_args(
        &self,
        _args: TableFunctionArgs,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let q = self.search.last_query();
        let c = self.search.cache_stats();
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        let num = |name: &str| Field::new(name, DataType::UInt64, false);
        let schema = Arc::new(Schema::new(vec![
            text("last_mode"),
            text("last_fallback_reason"),
            num("last_rows"),
            num("last_requests"),
            num("last_get_requests"),
            num("last_head_requests"),
            num("last_list_requests"),
            num("cache_hits"),
            num("cache_misses"),
            num("cache_downloads"),
            num("cache_evictions"),
            num("cache_entries"),
            num("cache_bytes"),
            num("cache_budget_bytes"),
        ]));
        let u = |v: u64| Arc::new(UInt64Array::from(vec![v])) as ArrayRef;
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                Some(q.mode.clone()).filter(|m| !m.is_empty()),
            ])),
            Arc::new(StringArray::from(vec![q.fallback_reason.clone()])),
            u(q.rows as u64),
            u(q.requests.total()),
            u(q.requests.get + q.requests.get_range),
            u(q.requests.head),
            u(q.requests.list),
            u(c.hits),
            u(c.misses),
            u(c.downloads),
            u(c.evictions),
            u(c.entries),
            u(c.bytes),
            u(c.budget),
        ];
        let batch = RecordBatch::try_new(schema.clone(), cols)?;
        Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
    }
}
