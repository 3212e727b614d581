//! `ORDER BY <distance>(<indexed column>, <constant>) LIMIT k` answered by the index.
//!
//! The rule replaces the table scan under such a sort with a search that returns the k
//! nearest rows (the `WHERE` over that table becomes the search's pre-filter); the sort
//! above stays and orders those rows by DataFusion's own distance function, so the result
//! holds exactly the rows `vector_search` returns. The function must match the index's
//! metric (`cosine_distance` — cosine; `l2_distance`, `array_distance` — l2; `inner_product
//! ... DESC` — ip); any other plan is left alone.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, Result};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Filter, LogicalPlan, Projection, Sort, TableScan};
use datafusion::optimizer::optimizer::ApplyOrder;
use datafusion::optimizer::{OptimizerConfig, OptimizerRule};
use datafusion::prelude::Expr;

use crate::catalog::IndexedTable;
use crate::index::Metric;
use crate::sql::vector_search::args::SearchOptions;
use crate::sql::vector_search::node::VectorSearchNode;
use crate::sql::vector_search::resolve::{PlannedMode, SearchSpec, SearchTarget};

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
        let LogicalPlan::Sort(sort) = &plan else {
            return Ok(Transformed::no(plan));
        };
        match rewrite_sort(sort)? {
            Some(new) => Ok(Transformed::yes(new)),
            None => Ok(Transformed::no(plan)),
        }
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
    let expr = resolve_alias(&order.expr.clone().unalias(), &sort.input);
    let Some(call) = distance_call(&expr) else {
        return Ok(None);
    };
    // Nearest first: ascending distances, or descending inner products.
    let nearest_first = match call.metric {
        Metric::Ip => !order.asc,
        _ => order.asc,
    };
    if !nearest_first {
        return Ok(None);
    }
    let mut filters = Vec::new();
    let Some(scan) = find_scan(&sort.input, &mut filters) else {
        return Ok(None);
    };
    let Some(node) = search_for_scan(scan, &call, k, order.nulls_first, filters)? else {
        return Ok(None);
    };
    let new_input = replace_scan(sort.input.as_ref().clone(), scan, node)?;
    Ok(Some(LogicalPlan::Sort(Sort {
        expr: sort.expr.clone(),
        input: Arc::new(new_input),
        fetch: sort.fetch,
    })))
}

/// A sort key naming a column of the projection below it, as the projection's expression.
fn resolve_alias(e: &Expr, input: &LogicalPlan) -> Expr {
    if let (Expr::Column(c), LogicalPlan::Projection(Projection { expr, schema, .. })) = (e, input)
        && let Some(i) = schema.maybe_index_of_column(c)
    {
        return expr[i].clone().unalias();
    }
    e.clone()
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

/// The table scan under projections and filters (whose predicates are gathered).
fn find_scan<'a>(plan: &'a LogicalPlan, filters: &mut Vec<Expr>) -> Option<&'a TableScan> {
    match plan {
        LogicalPlan::TableScan(s) => Some(s),
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
    nulls_first: bool,
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
    // Rows without a vector sort first with NULLS FIRST; the index holds none of them.
    let has_null_vectors = info.vectors != m.rows;
    if !own_column
        || call.column.name != info.column
        || call.metric != info.metric
        || (nulls_first && has_null_vectors)
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
    };
    let Ok(mut spec) = SearchSpec::new(Arc::new(target), k, SearchOptions::default()) else {
        return Ok(None);
    };
    if spec.mode != PlannedMode::Index {
        return Ok(None);
    }
    spec.columns = match &scan.projection {
        Some(p) => p.clone(),
        None => (0..table.schema().fields().len()).collect(),
    };
    let prefilter = conjunction(filters.into_iter().map(|f| unqualify(f).data));
    let node = VectorSearchNode::try_new(
        spec,
        Some(call.query.clone()),
        None,
        prefilter,
        true,
        None,
        Some(scan.table_name.clone()),
    )?;
    Ok(Some(node.with_schema(scan.projected_schema.clone())))
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

/// `plan` with `scan` replaced by `node`.
fn replace_scan(
    plan: LogicalPlan,
    scan: &TableScan,
    node: VectorSearchNode,
) -> Result<LogicalPlan> {
    let mut node = Some(node);
    plan.transform_down(|p| match p {
        LogicalPlan::TableScan(ref s) if s == scan => match node.take() {
            Some(n) => Ok(Transformed::yes(n.into_plan())),
            None => Ok(Transformed::no(p)),
        },
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
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
