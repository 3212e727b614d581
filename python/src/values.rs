//! Python values in, Rust values out: query vectors (lists, numpy and pyarrow arrays),
//! SQL parameters, option dictionaries.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, Int64Array, ListArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use datafusion::common::ParamValues;
use datafusion::scalar::ScalarValue;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// A query vector from a list or tuple of numbers, or anything numpy can read as one
/// (numpy, pyarrow, pandas, polars arrays); `what` names it in errors.
pub(crate) fn vector(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<f32>> {
    if let Some(v) = buffer_rows(obj, what)? {
        return match v {
            Rows::One(v) => Ok(v),
            Rows::Many(_, _) => Err(PyValueError::new_err(format!(
                "{what} must be one vector (1-dimensional), got a 2-dimensional array"
            ))),
        };
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyDict>() {
        return Err(not_a_vector(obj, what));
    }
    if obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>() {
        return obj
            .try_iter()?
            .map(|x| number(&x?, what))
            .collect::<PyResult<Vec<f32>>>();
    }
    match as_numpy(obj)? {
        Some(arr) => vector(&arr, what),
        None => Err(not_a_vector(obj, what)),
    }
}

/// Many query vectors: a 2-dimensional array, or a sequence of vectors.
pub(crate) fn vectors(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Vec<f32>>> {
    if let Some(rows) = buffer_rows(obj, what)? {
        return match rows {
            Rows::Many(flat, width) if width > 0 => {
                Ok(flat.chunks(width).map(<[f32]>::to_vec).collect())
            }
            Rows::Many(_, _) => Ok(Vec::new()),
            Rows::One(_) => Err(PyValueError::new_err(format!(
                "{what} must be many vectors (a 2-dimensional array or a list of vectors), \
                 got one vector"
            ))),
        };
    }
    if obj.is_instance_of::<PyString>() || obj.is_instance_of::<PyDict>() {
        return Err(not_a_vector(obj, what));
    }
    obj.try_iter()
        .map_err(|_| not_a_vector(obj, what))?
        .enumerate()
        .map(|(i, v)| vector(&v?, &format!("{what}[{i}]")))
        .collect()
}

enum Rows {
    One(Vec<f32>),
    Many(Vec<f32>, usize),
}

/// The numbers of a float32 or float64 buffer (numpy arrays), 1 or 2 dimensions.
fn buffer_rows(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Option<Rows>> {
    let py = obj.py();
    let (flat, shape) = if let Ok(b) = PyBuffer::<f32>::get(obj) {
        (b.to_vec(py)?, b.shape().to_vec())
    } else if let Ok(b) = PyBuffer::<f64>::get(obj) {
        let v = b.to_vec(py)?;
        (
            v.into_iter().map(|x| x as f32).collect(),
            b.shape().to_vec(),
        )
    } else {
        return Ok(None);
    };
    match shape.as_slice() {
        [_] => Ok(Some(Rows::One(flat))),
        [_, w] => Ok(Some(Rows::Many(flat, *w))),
        _ => Err(PyValueError::new_err(format!(
            "{what} must have 1 or 2 dimensions, got {}",
            shape.len()
        ))),
    }
}

/// `numpy.asarray(obj, dtype="float32")` for array-likes numpy understands, or `None`.
fn as_numpy<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyAny>>> {
    let source = if obj.hasattr("__array__")? {
        obj.clone()
    } else if obj.hasattr("to_numpy")? {
        obj.call_method0("to_numpy")?
    } else {
        return Ok(None);
    };
    let np = obj.py().import("numpy")?;
    let kwargs = PyDict::new(obj.py());
    kwargs.set_item("dtype", "float32")?;
    Ok(Some(np.call_method("asarray", (source,), Some(&kwargs))?))
}

fn number(x: &Bound<'_, PyAny>, what: &str) -> PyResult<f32> {
    if x.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{what} must hold numbers, got a bool"
        )));
    }
    x.extract::<f64>().map(|v| v as f32).map_err(|_| {
        PyTypeError::new_err(format!("{what} must hold numbers, got {}", type_name(x)))
    })
}

fn not_a_vector(obj: &Bound<'_, PyAny>, what: &str) -> PyErr {
    PyTypeError::new_err(format!(
        "{what} must be a vector of numbers (a list, a numpy or pyarrow array), got {}",
        type_name(obj)
    ))
}

pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "an object".into())
}

/// The `(index, vector)` relation of a batch search: index `i` is the `i`-th vector.
pub(crate) fn query_batch(vectors: &[Vec<f32>]) -> datafusion::error::Result<RecordBatch> {
    let index = Int64Array::from_iter_values(0..vectors.len() as i64);
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>(
        vectors.iter().map(|v| Some(v.iter().map(|x| Some(*x)))),
    );
    let schema = Schema::new(vec![
        Field::new("index", DataType::Int64, false),
        Field::new("vector", list.data_type().clone(), true),
    ]);
    Ok(RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(index), Arc::new(list)],
    )?)
}

/// SQL parameters: a list or tuple binds `$1`, `$2`, ...; a dict binds `$name`.
pub(crate) fn params(obj: &Bound<'_, PyAny>) -> PyResult<ParamValues> {
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = HashMap::new();
        for (k, v) in d.iter() {
            let name: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("parameter names must be strings"))?;
            let value = scalar(&v, &format!("parameter ${name}"))?;
            map.insert(name, value.into());
        }
        return Ok(ParamValues::Map(map));
    }
    if obj.is_instance_of::<PyString>()
        || !(obj.is_instance_of::<PyList>() || obj.is_instance_of::<PyTuple>())
    {
        return Err(PyTypeError::new_err(format!(
            "params must be a list or tuple (binding $1, $2, ...) or a dict (binding $name), got {}",
            type_name(obj)
        )));
    }
    let values = obj
        .try_iter()?
        .enumerate()
        .map(|(i, v)| scalar(&v?, &format!("parameter ${}", i + 1)).map(Into::into))
        .collect::<PyResult<Vec<_>>>()?;
    Ok(ParamValues::List(values))
}

/// One parameter: `None`, a bool, an int, a float, a str, or a vector (FLOAT[]).
fn scalar(v: &Bound<'_, PyAny>, what: &str) -> PyResult<ScalarValue> {
    if v.is_none() {
        return Ok(ScalarValue::Null);
    }
    if v.is_instance_of::<PyBool>() {
        return Ok(ScalarValue::Boolean(Some(v.extract()?)));
    }
    if v.is_instance_of::<PyInt>() {
        return Ok(ScalarValue::Int64(Some(v.extract().map_err(|_| {
            PyValueError::new_err(format!("{what}: the integer does not fit in 64 bits"))
        })?)));
    }
    if v.is_instance_of::<PyFloat>() {
        return Ok(ScalarValue::Float64(Some(v.extract()?)));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(ScalarValue::Utf8(Some(s.to_str()?.to_string())));
    }
    let vector = vector(v, what).map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}: unsupported type {}; expected None, bool, int, float, str or a vector \
             (a list, a numpy or pyarrow array of numbers)",
            type_name(v)
        ))
    })?;
    Ok(list_scalar(&vector))
}

/// A query vector as a `FLOAT[]` value.
pub(crate) fn list_scalar(vector: &[f32]) -> ScalarValue {
    let list = ListArray::from_iter_primitive::<Float32Type, _, _>([Some(
        vector.iter().map(|v| Some(*v)),
    )]);
    ScalarValue::List(Arc::new(list))
}

/// An options dictionary (`aws.*`, `gcp.*`, `azure.*`, `format.*` keys) as strings;
/// booleans are written `true`/`false`, as in SQL `OPTIONS`.
pub(crate) fn options(
    obj: Option<&Bound<'_, PyDict>>,
    what: &str,
) -> PyResult<HashMap<String, String>> {
    let mut out = HashMap::new();
    let Some(d) = obj else { return Ok(out) };
    for (k, v) in d.iter() {
        let key: String = k
            .extract()
            .map_err(|_| PyTypeError::new_err(format!("{what} keys must be strings")))?;
        let value = if v.is_instance_of::<PyBool>() {
            if v.extract::<bool>()? {
                "true"
            } else {
                "false"
            }
            .to_string()
        } else if v.is_instance_of::<PyString>()
            || v.is_instance_of::<PyInt>()
            || v.is_instance_of::<PyFloat>()
        {
            v.str()?.to_str()?.to_string()
        } else {
            // The value is not shown: it may be a secret.
            return Err(PyTypeError::new_err(format!(
                "{what}['{key}'] must be a str, bool or number, got {}",
                type_name(&v)
            )));
        };
        out.insert(key, value);
    }
    Ok(out)
}
