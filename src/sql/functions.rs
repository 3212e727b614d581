//! Distance functions. DataFusion has `cosine_distance` (`1 - cos`), `inner_product` (the dot
//! product, alias `dot_product`) and `array_distance` (Euclidean, alias `list_distance`);
//! jammi-db leaves them as they are and adds `l2_distance`, pgvector's name for the Euclidean
//! distance: DataFusion's `array_distance` itself under that name, so types (`Float64`),
//! NULLs and errors are DataFusion's.
//!
//! `vector_search`'s `_distance` agrees with them: metric `cosine` is `cosine_distance`,
//! `l2` is `l2_distance`, `ip` is `1 - inner_product`.

use std::sync::Arc;

use datafusion::arrow::datatypes::DataType;
use datafusion::error::Result;
use datafusion::functions_nested::distance::array_distance_udf;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
};

/// `l2_distance(a, b)`: DataFusion's `array_distance` under pgvector's name.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct L2Distance {
    inner: Arc<ScalarUDF>,
}

impl L2Distance {
    fn new() -> Self {
        L2Distance {
            inner: array_distance_udf(),
        }
    }
}

/// The functions `register` adds: `l2_distance`.
pub fn distance_udfs() -> Vec<ScalarUDF> {
    vec![ScalarUDF::new_from_impl(L2Distance::new())]
}

impl ScalarUDFImpl for L2Distance {
    fn name(&self) -> &str {
        "l2_distance"
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        self.inner.return_type(args)
    }

    fn coerce_types(&self, args: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(args)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}
