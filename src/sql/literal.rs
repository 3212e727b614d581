//! Array literals of plain numbers planned straight to a constant.
//!
//! DataFusion plans `[0.1, 0.2, ...]` as `make_array(...)`, then type-coerces and
//! const-folds it argument by argument; for a 384-number query vector that is most of a
//! `vector_search` query's planning time. This planner builds the folded constant directly
//! when every element is a non-null `Int64` or `Float64` literal — the value and type
//! `make_array` would fold to — and leaves every other array literal to DataFusion.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Float64Array, Int64Array, ListArray};
use datafusion::arrow::buffer::OffsetBuffer;
use datafusion::arrow::datatypes::Field;
use datafusion::common::{DFSchema, Result, ScalarValue};
use datafusion::logical_expr::planner::{ExprPlanner, PlannerResult};
use datafusion::prelude::Expr;

/// Shorter literals are left to `make_array`, whose column names users may see.
const MIN_ELEMENTS: usize = 32;

/// See the module docs.
#[derive(Debug, Default)]
pub struct NumericArrayLiteralPlanner;

impl ExprPlanner for NumericArrayLiteralPlanner {
    fn plan_array_literal(
        &self,
        exprs: Vec<Expr>,
        _schema: &DFSchema,
    ) -> Result<PlannerResult<Vec<Expr>>> {
        if exprs.len() < MIN_ELEMENTS {
            return Ok(PlannerResult::Original(exprs));
        }
        let mut ints = Vec::with_capacity(exprs.len());
        let mut floats = Vec::with_capacity(exprs.len());
        for e in &exprs {
            match e {
                Expr::Literal(ScalarValue::Int64(Some(v)), None) => {
                    ints.push(*v);
                    floats.push(*v as f64);
                }
                Expr::Literal(ScalarValue::Float64(Some(v)), None) => floats.push(*v),
                _ => return Ok(PlannerResult::Original(exprs)),
            }
        }
        let values: ArrayRef = if ints.len() == exprs.len() {
            Arc::new(Int64Array::from(ints))
        } else {
            Arc::new(Float64Array::from(floats))
        };
        let field = Arc::new(Field::new_list_field(values.data_type().clone(), true));
        let list = ListArray::new(
            field,
            OffsetBuffer::from_lengths([values.len()]),
            values,
            None,
        );
        Ok(PlannerResult::Planned(Expr::Literal(
            ScalarValue::List(Arc::new(list)),
            None,
        )))
    }
}

/// `planners` with the numeric-literal planner first (it must run before DataFusion's).
pub fn with_literal_planner(planners: &[Arc<dyn ExprPlanner>]) -> Vec<Arc<dyn ExprPlanner>> {
    let mut out: Vec<Arc<dyn ExprPlanner>> = vec![Arc::new(NumericArrayLiteralPlanner)];
    out.extend(
        planners
            .iter()
            .filter(|p| format!("{p:?}") != "NumericArrayLiteralPlanner")
            .cloned(),
    );
    out
}
