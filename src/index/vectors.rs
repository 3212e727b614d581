//! Reading vectors out of Arrow arrays: `FixedSizeList<Float32>` (zero-copy) and
//! `List`/`LargeList` of `Float32` or `Float64`.

use std::borrow::Cow;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, FixedSizeListArray, Float32Array, Float64Array,
};
use datafusion::arrow::datatypes::{DataType, Float32Type, Float64Type};

use crate::error::{JammiError, Result};

/// Checks `dt` can hold vectors; returns the fixed dimension when the type has one.
pub fn check_vector_type(column: &str, dt: &DataType) -> Result<Option<usize>> {
    let (inner, fixed) = match dt {
        DataType::FixedSizeList(f, n) => (f.data_type(), Some(*n as usize)),
        DataType::List(f) | DataType::LargeList(f) => (f.data_type(), None),
        other => {
            return Err(JammiError::InvalidInput(format!(
                "column '{column}' has type {other}; a vector column must be \
                 FixedSizeList<Float32> or List<Float32|Float64>"
            )));
        }
    };
    match (inner, fixed) {
        (DataType::Float32, _) | (DataType::Float64, None) => Ok(fixed),
        (other, _) => Err(JammiError::InvalidInput(format!(
            "column '{column}' holds {other} elements; a vector column must be \
             FixedSizeList<Float32> or List<Float32|Float64>"
        ))),
    }
}

/// A column's vectors, one `Option<&[f32]>` per row (NULL → `None`).
pub struct VectorColumn<'a> {
    array: &'a ArrayRef,
    values32: Option<&'a Float32Array>,
    values64: Option<&'a Float64Array>,
}

impl<'a> VectorColumn<'a> {
    /// Wraps an array of a type accepted by [`check_vector_type`].
    pub fn new(column: &str, array: &'a ArrayRef) -> Result<Self> {
        check_vector_type(column, array.data_type())?;
        let values = match array.data_type() {
            DataType::FixedSizeList(..) => array.as_fixed_size_list().values(),
            DataType::List(_) => array.as_list::<i32>().values(),
            _ => array.as_list::<i64>().values(),
        };
        Ok(VectorColumn {
            array,
            values32: values.as_primitive_opt::<Float32Type>(),
            values64: values.as_primitive_opt::<Float64Type>(),
        })
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.array.len()
    }

    /// `true` when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.array.is_empty()
    }

    fn range(&self, row: usize) -> (usize, usize) {
        match self.array.data_type() {
            DataType::FixedSizeList(_, n) => {
                let fsl: &FixedSizeListArray = self.array.as_fixed_size_list();
                let start = fsl.value_offset(row) as usize;
                (start, start + *n as usize)
            }
            DataType::List(_) => {
                let o = self.array.as_list::<i32>().value_offsets();
                (o[row] as usize, o[row + 1] as usize)
            }
            _ => {
                let o = self.array.as_list::<i64>().value_offsets();
                (o[row] as usize, o[row + 1] as usize)
            }
        }
    }

    /// The vector at `row`, or `None` if NULL.
    pub fn get(&self, row: usize) -> Option<Cow<'a, [f32]>> {
        if self.array.is_null(row) {
            return None;
        }
        let (s, e) = self.range(row);
        if let Some(v) = self.values32 {
            Some(Cow::Borrowed(&v.values()[s..e]))
        } else {
            let v = self.values64.expect("checked element type");
            Some(Cow::Owned(
                v.values()[s..e].iter().map(|x| *x as f32).collect(),
            ))
        }
    }
}

/// Error unless every element is finite.
pub fn check_finite(what: impl std::fmt::Display, v: &[f32]) -> Result<()> {
    match v.iter().position(|x| !x.is_finite()) {
        None => Ok(()),
        Some(i) => Err(JammiError::InvalidInput(format!(
            "{what} has a non-finite value ({}) at position {i}",
            v[i]
        ))),
    }
}
