//! `ORDER BY <distance>(<indexed column>, <constant>) LIMIT k` answered by the index.
//!
//! The rule replaces the table scan under such a sort with a search that returns the k
//! nearest rows (the `WHERE` over that table becomes the search's pre-filter) and their
//! distances. The search scores its rows with the SQL function itself and returns them in
//! the function's order ([`function`](super::function)); the sort above is by that column
//! (so the physical plan drops it), and a distance call the query selects takes its value
//! from it: the result is the replaced plan's own, and no parameter is left outside the
//! search (a prepared plan is kept). The
//! function must match the index's metric (`cosine_distance` — cosine; `l2_distance`,
//! `array_distance` — l2; `inner_product ... DESC` — ip); any other plan is left alone.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, DFSchema, Result, internal_err};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{
    ExprSchemable, FetchType, Filter, Limit, LogicalPlan, Projection, SkipType, Sort, SortExpr,
    TableScan, cast,
};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::Expr;

use crate::catalog::IndexedTable;
use crate::index::Metric;
use crate::sql::vector_search::args::{MAX_K, SearchOptions};
use crate::sql::vector_search::node::VectorSearchNode;
use crate::sql::vector_search::resolve::{DistanceColumn, PlannedMode, SearchSpec, SearchTarget};

/// The optimizer rule (see the module docs).
#[derive(Debug, Default)]
pub struct OrderByDistanceRule;

impl OptimizerRule for OrderByDistanceRule {
    fn name(&self) -> &str {
        "jammi_order_by_distance"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let new = match &plan {
            LogicalPlan::Sort(sort) => rewrite_sort(sort)?,
            // Before DataFusion pushes a LIMIT into its sort (this rule runs first).
            LogicalPlan::Limit(limit) => match (limit.input.as_ref(), limit_rows(limit)) {
                (LogicalPlan::Sort(sort), Some(rows)) if sort.fetch.is_none() => {
                    let fetched = Sort {
                        fetch: Some(rows),
                        ..sort.clone()
                    };
                    rewrite_sort(&fetched)?.map(|input| {
                        LogicalPlan::Limit(Limit {
                            input: Arc::new(input),
                            ..limit.clone()
                        })
                    })
                }
                _ => None,
            },
            _ => None,
        };
        match new {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(plan)),
        }
    }
}

/// The rows a `LIMIT` (after its `OFFSET`) needs from below, when both are constants.
fn limit_rows(limit: &Limit) -> Option<usize> {
    match (limit.get_skip_type().ok()?, limit.get_fetch_type().ok()?) {
        (SkipType::Literal(skip), FetchType::Literal(Some(fetch))) => skip.checked_add(fetch),
        _ => None,
    }
}

/// A distance call the index can answer: its metric, the vector column, the query.
struct DistanceCall {
    metric: Metric,
    column: Column,
    query: Expr,
}

fn rewrite_sort(sort: &Sort) -> Result<Option<LogicalPlan>> {
    let (Some(k), [order]) = (sort.fetch, sort.expr.as_slice()) else {
        return Ok(None);
    };
    // Beyond what a search returns, the sort stays DataFusion's.
    if k > MAX_K {
        return Ok(None);
    }
    let (expr, alias) = resolve_alias(&order.expr.clone().unalias(), &sort.input);
    let Some(call) = distance_call(&expr) else {
        return Ok(None);
    };
    // Nearest first: ascending distances, or descending inner products.
    let nearest_first = match call.metric {
        Metric::Ip => !order.asc,
        _ => order.asc,
    };
    // NULLs placed as DataFusion places them by default (`NULLS LAST` ascending, `NULLS
    // FIRST` descending), which is where the search puts them.
    if !nearest_first || order.nulls_first == order.asc {
        return Ok(None);
    }
    let mut filters = Vec::new();
    let Some(scan) = find_scan(&sort.input, &mut filters) else {
        return Ok(None);
    };
    let Some(node) = search_for_scan(scan, &call, k, filters)? else {
        return Ok(None);
    };
    let search = with_hidden_distance(node)?;
    // Where the projection computed the call: its column and the call's type.
    let value = alias
        .map(|(i, p)| -> Result<_> { Ok((i, expr.get_type(p.input.schema())?)) })
        .transpose()?;
    let input = carry_distance(&sort.input, scan, &search, value.as_ref().map(|v| v.0))?;
    // The search returns its rows nearest first, so this sort is by a column already in
    // order (the physical plan drops it), and no parameter is left outside the search.
    let sorted = LogicalPlan::Sort(Sort {
        expr: vec![SortExpr::new(hidden(), order.asc, order.nulls_first)],
        input: Arc::new(input),
        fetch: sort.fetch,
    });
    // The sort's columns as they were (only columns: an expression over the search would
    // make DataFusion spread its k rows over partitions and merge them again), the
    // distance cast only should the function's type differ from the search's.
    let carried = DistanceColumn::Function.data_type();
    let schema = sort.input.schema();
    let restored = (0..schema.fields().len())
        .map(|j| {
            let (q, f) = schema.qualified_field(j);
            let c = Expr::Column(Column::from((q, f)));
            match &value {
                Some((i, ty)) if *i == j && *ty != carried => {
                    cast(c, ty.clone()).alias_qualified(q.cloned(), f.name())
                }
                _ => c,
            }
        })
        .collect();
    Ok(Some(LogicalPlan::Projection(Projection::try_new(
        restored,
        Arc::new(sorted),
    )?)))
}

/// The name the index's distance goes by between the search and the sort.
const HIDDEN_DISTANCE: &str = "__jammi_distance";

fn hidden() -> Expr {
    Expr::Column(Column::new_unqualified(HIDDEN_DISTANCE))
}

/// A sort key naming a column of the projection below it, as the projection's expression
/// (and where it is).
fn resolve_alias<'a>(e: &Expr, input: &'a LogicalPlan) -> (Expr, Option<(usize, &'a Projection)>) {
    if let (Expr::Column(c), LogicalPlan::Projection(p)) = (e, input)
        && let Some(i) = p.schema.maybe_index_of_column(c)
    {
        return (p.expr[i].clone().unalias(), Some((i, p)));
    }
    (e.clone(), None)
}

/// The search with its `_distance` renamed to [`HIDDEN_DISTANCE`], so no column a query
/// names or aliases can clash with it.
fn with_hidden_distance(node: VectorSearchNode) -> Result<LogicalPlan> {
    let schema = node.schema_ref().clone();
    let last = schema.fields().len() - 1;
    let exprs = (0..=last)
        .map(|i| {
            let c = Expr::Column(Column::from(schema.qualified_field(i)));
            if i == last {
                c.alias(HIDDEN_DISTANCE)
            } else {
                c
            }
        })
        .collect();
    Ok(LogicalPlan::Projection(Projection::try_new(
        exprs,
        Arc::new(node.into_plan()),
    )?))
}

/// `plan` (the projections and filters down to `scan`) over `search` instead of `scan`,
/// every projection passing the hidden distance up; the topmost projection's column
/// `sorted_by` (the distance call the sort named) becomes the distance itself.
fn carry_distance(
    plan: &LogicalPlan,
    scan: &TableScan,
    search: &LogicalPlan,
    sorted_by: Option<usize>,
) -> Result<LogicalPlan> {
    Ok(match plan {
        LogicalPlan::TableScan(s) if s == scan => search.clone(),
        LogicalPlan::Filter(f) => LogicalPlan::Filter(Filter::try_new(
            f.predicate.clone(),
            Arc::new(carry_distance(&f.input, scan, search, None)?),
        )?),
        LogicalPlan::Projection(p) => {
            let input = carry_distance(&p.input, scan, search, None)?;
            let mut expr = p.expr.clone();
            if let Some(i) = sorted_by {
                let (q, f) = p.schema.qualified_field(i);
                expr[i] = hidden().alias_qualified(q.cloned(), f.name());
            }
            expr.push(hidden());
            LogicalPlan::Projection(Projection::try_new(expr, Arc::new(input))?)
        }
        other => return internal_err!("ORDER BY rewrite met {}", other.display()),
    })
}

fn distance_call(e: &Expr) -> Option<DistanceCall> {
    let Expr::ScalarFunction(f) = e else {
        return None;
    };
    let metric = match f.func.name() {
        "cosine_distance" => Metric::Cosine,
        "l2_distance" | "array_distance" => Metric::L2,
        "inner_product" => Metric::Ip,
        _ => return None,
    };
    let [a, b] = f.args.as_slice() else {
        return None;
    };
    let (column, query) = match (column_of(a), column_of(b)) {
        (Some(c), None) if is_constant(b) => (c, b.clone()),
        (None, Some(c)) if is_constant(a) => (c, a.clone()),
        _ => return None,
    };
    Some(DistanceCall {
        metric,
        column,
        query,
    })
}

/// The column under casts, if `e` is one.
fn column_of(e: &Expr) -> Option<Column> {
    match e {
        Expr::Column(c) => Some(c.clone()),
        Expr::Cast(c) => column_of(&c.expr),
        Expr::TryCast(c) => column_of(&c.expr),
        _ => None,
    }
}

/// A query vector the search can evaluate once: no column, no subquery, nothing volatile.
fn is_constant(e: &Expr) -> bool {
    e.column_refs().is_empty() && !e.is_volatile() && !has_subquery(e)
}

fn has_subquery(e: &Expr) -> bool {
    e.exists(|e| {
        Ok(matches!(
            e,
            Expr::ScalarSubquery(_) | Expr::Exists(_) | Expr::InSubquery(_)
        ))
    })
    .unwrap_or(true)
}

/// The table scan under projections and filters (whose predicates are gathered). A filter
/// above a projection reads the projection's columns, not the table's: it cannot be the
/// search's pre-filter, and filtering after the search would return fewer than k rows, so
/// such a plan is left alone.
fn find_scan<'a>(plan: &'a LogicalPlan, filters: &mut Vec<Expr>) -> Option<&'a TableScan> {
    match plan {
        LogicalPlan::TableScan(s) => Some(s),
        LogicalPlan::Projection(_) if !filters.is_empty() => None,
        LogicalPlan::Projection(p) => find_scan(&p.input, filters),
        LogicalPlan::Filter(Filter {
            predicate, input, ..
        }) => {
            filters.push(predicate.clone());
            find_scan(input, filters)
        }
        _ => None,
    }
}

/// The search standing for `scan`, if its table's index answers `call`.
fn search_for_scan(
    scan: &TableScan,
    call: &DistanceCall,
    k: usize,
    mut filters: Vec<Expr>,
) -> Result<Option<VectorSearchNode>> {
    let Ok(provider) = source_as_provider(&scan.source) else {
        return Ok(None);
    };
    let any: &dyn std::any::Any = provider.as_ref();
    let Some(table) = any.downcast_ref::<IndexedTable>() else {
        return Ok(None);
    };
    let m = &table.manifest;
    let Some(info) = &m.index else {
        return Ok(None);
    };
    let own_column = call
        .column
        .relation
        .as_ref()
        .is_none_or(|r| r.resolved_eq(&scan.table_name));
    // Rows without a vector have a NULL distance, which DataFusion sorts first or last;
    // the index holds none of them, so with any such row the plan is left alone.
    // (Every segment's index, for a table of several.)
    let segments = crate::sql::vector_search::resolve::segments_of(table)?;
    let has_null_vectors = std::iter::once(m)
        .chain(segments.iter().map(|s| &s.manifest))
        .any(|seg| {
            seg.index.as_ref().is_none_or(|i| {
                i.vectors != seg.rows || i.column != info.column || i.metric != info.metric
            })
        });
    if !own_column
        || call.column.name != info.column
        || call.metric != info.metric
        || has_null_vectors
        || scan.fetch.is_some()
    {
        return Ok(None);
    }
    filters.extend(scan.filters.iter().cloned());
    if filters.iter().any(|f| has_subquery(f) || f.is_volatile()) {
        return Ok(None);
    }
    let target = SearchTarget {
        name: scan.table_name.to_string(),
        parquet: table.parquet.clone(),
        dir: table.dir.clone(),
        manifest: Some(m.clone()),
        schema: table.schema(),
        segments,
        deleted: None,
    };
    let Ok(mut spec) = SearchSpec::new(Arc::new(target), k, SearchOptions::default()) else {
        return Ok(None);
    };
    if spec.mode != PlannedMode::Index {
        return Ok(None);
    }
    // The distance column holds the function's own value (inner products for ip).
    spec.distance = DistanceColumn::Function;
    spec.columns = match &scan.projection {
        Some(p) => p.clone(),
        None => (0..table.schema().fields().len()).collect(),
    };
    let prefilter = conjunction(filters.into_iter().map(|f| unqualify(f).data));
    let node = VectorSearchNode::try_new(
        spec,
        Some(strip_casts(call.query.clone())),
        None,
        prefilter,
        None,
        Some(scan.table_name.clone()),
    )?;
    // The scan's own fields (qualifiers, metadata), then the distance.
    let mut fields: Vec<_> = scan
        .projected_schema
        .iter()
        .map(|(q, f)| (q.cloned(), f.clone()))
        .collect();
    let (q, f) = node.schema_ref().qualified_field(fields.len());
    fields.push((q.cloned(), f.clone()));
    let schema = DFSchema::new_with_metadata(fields, scan.projected_schema.metadata().clone())?;
    Ok(Some(node.with_schema(Arc::new(schema))))
}

/// The query without the casts type coercion put around it for the distance function: the
/// search takes any numeric list, and a parameter must stay bare to be bound per run.
fn strip_casts(e: Expr) -> Expr {
    match e {
        Expr::Cast(c) => strip_casts(*c.expr),
        Expr::TryCast(c) => strip_casts(*c.expr),
        other => other,
    }
}

/// `e` with its columns unqualified (the pre-filter reads the table's own columns).
fn unqualify(e: Expr) -> Transformed<Expr> {
    e.transform(|e| match e {
        Expr::Column(c) if c.relation.is_some() => Ok(Transformed::yes(Expr::Column(
            Column::new_unqualified(c.name),
        ))),
        other => Ok(Transformed::no(other)),
    })
    .expect("infallible")
}

/// Pushes the columns a projection reads into the search below it, so only those are
/// hydrated (a query of keys and distances reads no Parquet page).
#[derive(Debug, Default)]
pub struct ProjectionIntoSearchRule;

impl OptimizerRule for ProjectionIntoSearchRule {
    fn name(&self) -> &str {
        "jammi_projection_into_search"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::TopDown)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Projection(p) = &plan else {
            return Ok(Transformed::no(plan));
        };
        let LogicalPlan::Extension(ext) = p.input.as_ref() else {
            return Ok(Transformed::no(plan));
        };
        let Some(node) = ext.node.as_any().downcast_ref::<VectorSearchNode>() else {
            return Ok(Transformed::no(plan));
        };
        let schema = node.schema_ref();
        let mut keep: Vec<usize> = p
            .expr
            .iter()
            .flat_map(|e| e.column_refs())
            .filter_map(|c| schema.maybe_index_of_column(c))
            .collect();
        keep.sort_unstable();
        keep.dedup();
        if keep.len() == schema.fields().len() {
            return Ok(Transformed::no(plan));
        }
        let narrowed = node.with_projection(&keep)?.into_plan();
        let projection = Projection::try_new(p.expr.clone(), Arc::new(narrowed))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}
