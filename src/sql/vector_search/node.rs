//! The logical side of `vector_search`: the plan node, and the relation planner that turns
//! `vector_search(...)` and `vector_search_batch(...)` in FROM into it. Planning resolves
//! the table and reads at most its manifest; nothing is searched until the plan runs.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Weak};

use datafusion::arrow::array::Array;
use datafusion::arrow::datatypes::{Field, Schema};
use datafusion::common::{DFSchema, DFSchemaRef, Result, ScalarValue, TableReference, plan_err};
use datafusion::execution::context::SessionState;
use datafusion::logical_expr::planner::{
    PlannedRelation, RelationPlanner, RelationPlannerContext, RelationPlanning,
};
use datafusion::logical_expr::{Extension, LogicalPlan, UserDefinedLogicalNodeCore};
use datafusion::prelude::Expr;
use datafusion::sql::sqlparser::ast::{
    Expr as SqlExpr, FunctionArg, FunctionArgExpr, ObjectName, TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::dialect_from_str;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;
use parking_lot::RwLock;

use crate::error::JammiError;
use crate::sql::literal::sql_numeric_array;
use crate::sql::vector_search::SearchContext;
use crate::sql::vector_search::args::{SearchOptions, k_of};
use crate::sql::vector_search::resolve::{SearchSpec, fmt_projection, resolve_at};

/// `vector_search(table, query, k [, options])`.
pub const VECTOR_SEARCH: &str = "vector_search";
/// `vector_search_batch(table, (SELECT key, vector FROM ...), k [, options])`.
pub const VECTOR_SEARCH_BATCH: &str = "vector_search_batch";

/// The query relation of a batch search: input 0, with its key and vector columns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BatchQueries {
    /// The query relation.
    pub input: LogicalPlan,
    /// Its key column (index).
    pub key: usize,
    /// Its vector column (index).
    pub vector: usize,
}

impl BatchQueries {
    /// A query relation of two columns: the key, then the vector.
    fn of(input: LogicalPlan) -> crate::error::Result<Self> {
        let n = input.schema().fields().len();
        if n != 2 {
            return Err(JammiError::InvalidInput(format!(
                "vector_search_batch: the queries must have two columns, a key and a vector; got {n}"
            )));
        }
        Ok(BatchQueries {
            input,
            key: 0,
            vector: 1,
        })
    }
}

/// The name `expressions()` gives the query vector.
const QUERY_ALIAS: &str = "__jammi_query";

/// A nearest-neighbour search in a plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct VectorSearchNode {
    /// What is searched, and how.
    pub spec: SearchSpec,
    /// The query vector of a single search: a literal, a JSON string, a placeholder or a
    /// scalar subquery.
    pub query: Option<Expr>,
    /// The queries of a batch search.
    pub batch: Option<BatchQueries>,
    /// The pre-filter, over the table's (unqualified) columns: the `filter=` option, or the
    /// `WHERE` of an `ORDER BY <distance> LIMIT k` query.
    pub prefilter: Option<Expr>,
    /// Output columns kept (indices into the full output); `None`: all.
    pub projection: Option<Vec<usize>>,
    schema: DFSchemaRef,
}

impl PartialOrd for VectorSearchNode {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        (&self.spec.target.name, self.spec.k).partial_cmp(&(&other.spec.target.name, other.spec.k))
    }
}

impl VectorSearchNode {
    /// A node for `spec`, its output qualified by `qualifier`.
    pub fn try_new(
        spec: SearchSpec,
        query: Option<Expr>,
        batch: Option<BatchQueries>,
        prefilter: Option<Expr>,
        projection: Option<Vec<usize>>,
        qualifier: Option<TableReference>,
    ) -> Result<Self> {
        let fields = full_fields(&spec, batch.as_ref())?;
        let fields: Vec<Field> = match &projection {
            Some(p) => p.iter().map(|&i| fields[i].clone()).collect(),
            None => fields,
        };
        let schema = Schema::new(fields);
        let schema = match qualifier {
            Some(q) => DFSchema::try_from_qualified_schema(q, &schema)?,
            None => DFSchema::try_from(schema)?,
        };
        Ok(VectorSearchNode {
            spec,
            query,
            batch,
            prefilter,
            projection,
            schema: Arc::new(schema),
        })
    }

    /// The same search keeping only output columns `keep` (indices into this node's output),
    /// each with its qualifier.
    pub fn with_projection(&self, keep: &[usize]) -> Result<Self> {
        let composed: Vec<usize> = match &self.projection {
            Some(p) => keep.iter().map(|&i| p[i]).collect(),
            None => keep.to_vec(),
        };
        let mut node = self.clone();
        node.projection = Some(composed);
        let fields: Vec<(Option<TableReference>, Arc<Field>)> = keep
            .iter()
            .map(|&i| {
                let (q, f) = self.schema.qualified_field(i);
                (q.cloned(), f.clone())
            })
            .collect();
        node.schema = Arc::new(DFSchema::new_with_metadata(fields, Default::default())?);
        Ok(node)
    }

    /// The same node with `schema` (the same fields, e.g. with the qualifiers and metadata
    /// of the scan it stands for).
    pub(crate) fn with_schema(mut self, schema: DFSchemaRef) -> Self {
        self.schema = schema;
        self
    }

    /// The query vector unless it is a constant: what `expressions()` shows.
    fn open_query(&self) -> Option<&Expr> {
        self.query
            .as_ref()
            .filter(|q| !matches!(q, Expr::Literal(..)))
    }

    /// The output schema.
    pub fn schema_ref(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The node as a plan.
    pub fn into_plan(self) -> LogicalPlan {
        LogicalPlan::Extension(Extension {
            node: Arc::new(self),
        })
    }
}

/// The fields of a search's full output.
pub(crate) fn full_fields(spec: &SearchSpec, batch: Option<&BatchQueries>) -> Result<Vec<Field>> {
    let key = match batch {
        Some(b) => {
            let schema = b.input.schema();
            if b.key >= schema.fields().len() || b.vector >= schema.fields().len() {
                return plan_err!(
                    "vector_search_batch: the query relation needs a key and a vector column"
                );
            }
            Some(schema.field(b.key).clone())
        }
        None => None,
    };
    Ok(spec.output_fields(key.as_deref()))
}

impl UserDefinedLogicalNodeCore for VectorSearchNode {
    fn name(&self) -> &str {
        "VectorSearch"
    }

    fn inputs(&self) -> Vec<&LogicalPlan> {
        self.batch.iter().map(|b| &b.input).collect()
    }

    fn schema(&self) -> &DFSchemaRef {
        &self.schema
    }

    /// The query when it is still to be resolved (a placeholder to bind, a subquery to
    /// decorrelate), under a fixed alias. A constant is not shown: the simplifier would fold
    /// the alias away and name the result, writing out all 384 numbers on every pass.
    fn expressions(&self) -> Vec<Expr> {
        self.open_query()
            .map(|q| q.clone().alias(QUERY_ALIAS))
            .into_iter()
            .collect()
    }

    fn fmt_for_explain(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("VectorSearch: ")?;
        self.spec.fmt_explain(f)?;
        if let Some(filter) = &self.prefilter {
            write!(f, ", filter={filter}")?;
        }
        match (&self.query, &self.batch) {
            (Some(q), _) => write!(f, ", query={}", short_expr(q))?,
            (None, Some(_)) => write!(f, ", queries=input")?,
            _ => {}
        }
        fmt_projection(f, self.schema.fields())
    }

    fn with_exprs_and_inputs(&self, exprs: Vec<Expr>, inputs: Vec<LogicalPlan>) -> Result<Self> {
        let mut node = self.clone();
        if self.open_query().is_some() {
            node.query = exprs.into_iter().next().map(Expr::unalias);
        }
        if let (Some(b), Some(input)) = (&mut node.batch, inputs.into_iter().next()) {
            b.input = input;
        }
        Ok(node)
    }

    fn necessary_children_exprs(&self, _output_columns: &[usize]) -> Option<Vec<Vec<usize>>> {
        self.batch.as_ref().map(|b| {
            let mut cols = vec![b.key, b.vector];
            cols.sort_unstable();
            cols.dedup();
            vec![cols]
        })
    }

    fn supports_limit_pushdown(&self) -> bool {
        false
    }

    /// A `WHERE` over the search's output filters its hits: it never moves into the query
    /// relation.
    fn prevent_predicate_push_down_columns(&self) -> HashSet<String> {
        self.schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

/// An expression for EXPLAIN: a long literal (a query vector) shortened.
fn short_expr(e: &Expr) -> String {
    let s = match e {
        Expr::Literal(ScalarValue::List(l), _) if l.len() == 1 => {
            format!("[{} values]", l.value(0).len())
        }
        other => other.to_string(),
    };
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// Plans `vector_search(...)` and `vector_search_batch(...)` in FROM; every other relation
/// is left to DataFusion.
pub struct VectorSearchPlanner {
    ctx: Arc<SearchContext>,
    state: Weak<RwLock<SessionState>>,
}

impl fmt::Debug for VectorSearchPlanner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VectorSearchPlanner")
    }
}

impl VectorSearchPlanner {
    pub(crate) fn new(ctx: Arc<SearchContext>, state: Weak<RwLock<SessionState>>) -> Self {
        VectorSearchPlanner { ctx, state }
    }
}

/// Which of the two functions `name` calls, if either.
fn called(name: &ObjectName) -> Option<&'static str> {
    match name.0.as_slice() {
        [part] => part.as_ident().and_then(|i| {
            let v = i.value.to_ascii_lowercase();
            match v.as_str() {
                VECTOR_SEARCH if i.quote_style.is_none() || i.value == VECTOR_SEARCH => {
                    Some(VECTOR_SEARCH)
                }
                VECTOR_SEARCH_BATCH
                    if i.quote_style.is_none() || i.value == VECTOR_SEARCH_BATCH =>
                {
                    Some(VECTOR_SEARCH_BATCH)
                }
                _ => None,
            }
        }),
        _ => None,
    }
}

fn jammi(e: JammiError) -> datafusion::error::DataFusionError {
    e.into()
}

fn string_arg(e: &SqlExpr, what: &str) -> Result<String> {
    match e {
        SqlExpr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => Ok(s.clone()),
            Value::Null => Err(jammi(JammiError::InvalidInput(format!(
                "vector_search: the {what} argument is NULL"
            )))),
            _ => Err(jammi(JammiError::InvalidInput(format!(
                "vector_search: the {what} argument must be a string"
            )))),
        },
        _ => Err(jammi(JammiError::InvalidInput(format!(
            "vector_search: the {what} argument must be a string literal"
        )))),
    }
}

impl RelationPlanner for VectorSearchPlanner {
    fn plan_relation(
        &self,
        relation: TableFactor,
        context: &mut dyn RelationPlannerContext,
    ) -> Result<RelationPlanning> {
        let (function, alias, args) = match relation {
            TableFactor::Table {
                name,
                alias,
                args: Some(args),
                with_hints,
                version,
                with_ordinality: false,
                partitions,
                json_path,
                sample,
                index_hints,
            } if called(&name).is_some()
                && args.settings.is_none()
                && with_hints.is_empty()
                && version.is_none()
                && partitions.is_empty()
                && json_path.is_none()
                && sample.is_none()
                && index_hints.is_empty() =>
            {
                (called(&name).expect("checked"), alias, args.args)
            }
            other => return Ok(RelationPlanning::Original(Box::new(other))),
        };
        let args: Vec<SqlExpr> = args
            .into_iter()
            .map(|a| match a {
                FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => Ok(e),
                // DataFusion's own message for the same call.
                other => plan_err!("Unsupported function argument type: {other}"),
            })
            .collect::<Result<_>>()?;
        if !(3..=4).contains(&args.len()) {
            return Err(jammi(JammiError::InvalidInput(format!(
                "{function}(table, {}, k [, options]) takes 3 or 4 arguments, got {}",
                if function == VECTOR_SEARCH {
                    "query"
                } else {
                    "(SELECT key, vector FROM ...)"
                },
                args.len()
            ))));
        }
        let table = string_arg(&args[0], "table")?;
        let k_expr = context.sql_to_expr(args[2].clone(), &DFSchema::empty())?;
        let k = match &k_expr {
            Expr::Literal(v, _) => k_of(v).map_err(jammi)?,
            Expr::Negative(_) => k_of(&ScalarValue::Int64(Some(-1))).map_err(jammi)?,
            other => {
                return Err(jammi(JammiError::InvalidInput(format!(
                    "vector_search: k must be an integer literal, got {other}"
                ))));
            }
        };
        let mut options = match args.get(3) {
            None => SearchOptions::default(),
            Some(o) => SearchOptions::parse(&string_arg(o, "options")?).map_err(jammi)?,
        };
        let state = self.state.upgrade().ok_or_else(|| {
            datafusion::error::DataFusionError::Internal("the session is gone".into())
        })?;
        let target = {
            let state = state.read();
            resolve_at(&self.ctx.registry, &state, &table, &options).map_err(jammi)?
        };
        let filter = options.filter.take();
        let spec = SearchSpec::new(Arc::new(target), k, options).map_err(jammi)?;
        let prefilter = match filter {
            Some(sql) => Some(parse_filter(context, &sql, &spec)?),
            None => None,
        };
        let node = if function == VECTOR_SEARCH {
            let query = match &args[1] {
                SqlExpr::Array(a) => match sql_numeric_array(a) {
                    Some(v) => Expr::Literal(v, None),
                    None => context.sql_to_expr(args[1].clone(), &DFSchema::empty())?,
                },
                e => context.sql_to_expr(e.clone(), &DFSchema::empty())?,
            };
            VectorSearchNode::try_new(spec, Some(query), None, prefilter, None, Some(qualifier()))?
        } else {
            let SqlExpr::Subquery(q) = args[1].clone() else {
                return Err(jammi(JammiError::InvalidInput(
                    "vector_search_batch: the queries must be a subquery, \
                     (SELECT key, vector FROM ...)"
                        .into(),
                )));
            };
            let input = context.plan(TableFactor::Derived {
                lateral: false,
                subquery: q,
                alias: None,
                sample: None,
            })?;
            let batch = BatchQueries::of(input).map_err(jammi)?;
            VectorSearchNode::try_new(spec, None, Some(batch), prefilter, None, Some(qualifier()))?
        };
        Ok(RelationPlanning::Planned(Box::new(PlannedRelation::new(
            node.into_plan(),
            alias,
        ))))
    }
}

/// What a search built from values (not SQL) looks for.
pub(crate) enum SearchQueries {
    /// One query vector (an expression: a literal or a placeholder).
    One(Expr),
    /// Every row of a relation of two columns, a key and a vector.
    Many(LogicalPlan),
}

/// The plan of `SELECT * FROM vector_search(table, query, k, options)` or of
/// `vector_search_batch` (for callers that hold the queries as values, not as SQL). Reads
/// the catalog and at most the manifest.
pub(crate) fn plan_search(
    ctx: &Arc<SearchContext>,
    state: &SessionState,
    table: &str,
    queries: SearchQueries,
    k: usize,
    mut options: SearchOptions,
) -> crate::error::Result<LogicalPlan> {
    let target = resolve_at(&ctx.registry, state, table, &options)?;
    let filter = options.filter.take();
    let spec = SearchSpec::new(Arc::new(target), k, options)?;
    let prefilter = match filter {
        Some(sql) => {
            let schema = DFSchema::try_from(spec.target.schema.as_ref().clone())?;
            Some(state.create_logical_expr(&sql, &schema).map_err(|e| {
                JammiError::InvalidInput(format!("vector_search: invalid filter '{sql}': {e}"))
            })?)
        }
        None => None,
    };
    let (query, batch) = match queries {
        SearchQueries::One(e) => (Some(e), None),
        SearchQueries::Many(input) => (None, Some(BatchQueries::of(input)?)),
    };
    let node = VectorSearchNode::try_new(spec, query, batch, prefilter, None, Some(qualifier()))?;
    Ok(node.into_plan())
}

/// The `filter=` option as an expression over the table's columns.
fn parse_filter(
    context: &mut dyn RelationPlannerContext,
    sql: &str,
    spec: &SearchSpec,
) -> Result<Expr> {
    let invalid = |e: &dyn fmt::Display| {
        jammi(JammiError::InvalidInput(format!(
            "vector_search: invalid filter '{sql}': {e}"
        )))
    };
    let dialect_name = context.context_provider().options().sql_parser.dialect;
    let dialect = dialect_from_str(dialect_name)
        .ok_or_else(|| invalid(&format!("unsupported SQL dialect {dialect_name}")))?;
    let mut parser = Parser::new(dialect.as_ref())
        .try_with_sql(sql)
        .map_err(|e| invalid(&e))?;
    let ast = parser.parse_expr().map_err(|e| invalid(&e))?;
    if parser.peek_token().token != Token::EOF {
        return Err(invalid(&"unexpected text after the predicate"));
    }
    let schema = DFSchema::try_from(spec.target.schema.as_ref().clone())?;
    context.sql_to_expr(ast, &schema).map_err(|e| invalid(&e))
}

/// The qualifier of a search's output columns when the call has no alias.
fn qualifier() -> TableReference {
    TableReference::bare(VECTOR_SEARCH)
}
