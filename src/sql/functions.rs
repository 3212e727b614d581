//! Scalar distance functions over two vectors (`FixedSizeList`/`List` of Float32/Float64,
//! or array literals): `cosine_distance`, `l2_distance`, `inner_product`. They agree with
//! `vector_search`'s `_distance` for cosine and l2; `inner_product` is the plain dot product.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Float32Array};
use datafusion::arrow::datatypes::DataType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};

use crate::index::Metric;
use crate::index::vectors::{VectorColumn, check_vector_type};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Cosine,
    L2,
    Dot,
}

/// One distance function.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct DistanceUdf {
    kind: Kind,
    name: &'static str,
    signature: Signature,
}

impl DistanceUdf {
    fn new(kind: Kind, name: &'static str) -> Self {
        DistanceUdf {
            kind,
            name,
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

/// `cosine_distance`, `l2_distance`, `inner_product`.
pub fn distance_udfs() -> Vec<ScalarUDF> {
    vec![
        ScalarUDF::new_from_impl(DistanceUdf::new(Kind::Cosine, "cosine_distance")),
        ScalarUDF::new_from_impl(DistanceUdf::new(Kind::L2, "l2_distance")),
        ScalarUDF::new_from_impl(DistanceUdf::new(Kind::Dot, "inner_product")),
    ]
}

impl ScalarUDFImpl for DistanceUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        for (i, t) in args.iter().enumerate() {
            if t != &DataType::Null {
                check_vector_type(&format!("argument {} of {}", i + 1, self.name), t)
                    .map_err(DataFusionError::from)?;
            }
        }
        Ok(DataType::Float32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let arrays: Vec<ArrayRef> = args
            .args
            .iter()
            .map(|a| a.clone().into_array(n))
            .collect::<Result<_>>()?;
        if arrays.iter().any(|a| a.data_type() == &DataType::Null) {
            return Ok(ColumnarValue::Array(Arc::new(Float32Array::new_null(n))));
        }
        let a = VectorColumn::new("argument 1", &arrays[0])?;
        let b = VectorColumn::new("argument 2", &arrays[1])?;
        let mut out = Vec::with_capacity(n);
        for r in 0..n {
            let (Some(x), Some(y)) = (a.get(r), b.get(r)) else {
                out.push(None);
                continue;
            };
            if x.len() != y.len() {
                return Err(DataFusionError::Execution(format!(
                    "{}: vectors have {} and {} dimensions",
                    self.name,
                    x.len(),
                    y.len()
                )));
            }
            out.push(Some(match self.kind {
                Kind::Cosine => Metric::Cosine.raw_distance(&x, &y),
                Kind::L2 => Metric::L2.finalize(Metric::L2.raw_distance(&x, &y)),
                Kind::Dot => x.iter().zip(y.iter()).map(|(p, q)| p * q).sum(),
            }));
        }
        let arr = Float32Array::from(out);
        if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            return Ok(ColumnarValue::Scalar(
                datafusion::common::ScalarValue::try_from_array(&arr, 0)?,
            ));
        }
        Ok(ColumnarValue::Array(Arc::new(arr) as ArrayRef))
    }
}
