//! Arrow data across the boundary through the C stream interface (`__arrow_c_stream__`):
//! buffers are shared, not copied.

use std::ffi::CStr;
use std::sync::Mutex;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::ffi::FFI_ArrowSchema;
use datafusion::arrow::ffi_stream::{ArrowArrayStreamReader, FFI_ArrowArrayStream};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchReader};
use datafusion::physical_plan::SendableRecordBatchStream;
use futures::StreamExt;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::runtime::runtime;
use crate::values::type_name;

const STREAM: &CStr = c"arrow_array_stream";
const SCHEMA: &CStr = c"arrow_schema";

/// `reader` as an `arrow_array_stream` capsule (the value of `__arrow_c_stream__`).
pub(crate) fn stream_capsule<'py>(
    py: Python<'py>,
    reader: Box<dyn RecordBatchReader + Send>,
) -> PyResult<Bound<'py, PyCapsule>> {
    PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(reader), STREAM)
}

/// `schema` as an `arrow_schema` capsule (the value of `__arrow_c_schema__`).
pub(crate) fn schema_capsule<'py>(
    py: Python<'py>,
    schema: &SchemaRef,
) -> PyResult<Bound<'py, PyCapsule>> {
    let ffi = FFI_ArrowSchema::try_from(schema.as_ref())
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    PyCapsule::new_with_value(py, ffi, SCHEMA)
}

/// The Arrow stream of any object with `__arrow_c_stream__` (pyarrow tables and readers,
/// polars, DuckDB, ...), taken over without a copy.
pub(crate) fn import_stream(
    obj: &Bound<'_, PyAny>,
    what: &str,
) -> PyResult<ArrowArrayStreamReader> {
    if !obj.hasattr("__arrow_c_stream__")? {
        return Err(PyTypeError::new_err(format!(
            "{what} must be Arrow data (a pyarrow Table or RecordBatchReader, a polars or \
             pandas DataFrame, a jammi_ai Result), got {}",
            type_name(obj)
        )));
    }
    let capsule = obj.call_method0("__arrow_c_stream__")?;
    let capsule = capsule.cast::<PyCapsule>().map_err(|_| {
        PyTypeError::new_err(format!(
            "{what}.__arrow_c_stream__() did not return a capsule"
        ))
    })?;
    let raw = capsule.pointer_checked(Some(STREAM))?;
    // SAFETY: the capsule holds an `ArrowArrayStream` (its name says so); `from_raw` moves
    // the stream out and leaves a released one behind, which the producer's destructor
    // then skips.
    unsafe { ArrowArrayStreamReader::from_raw(raw.as_ptr().cast()) }
        .map_err(|e| PyValueError::new_err(format!("{what}: {e}")))
}

/// A query's batches read as they are produced: `next` waits on the runtime.
pub(crate) struct StreamReader {
    schema: SchemaRef,
    stream: SendableRecordBatchStream,
}

impl StreamReader {
    pub(crate) fn new(stream: SendableRecordBatchStream) -> Self {
        StreamReader {
            schema: stream.schema(),
            stream,
        }
    }
}

impl Iterator for StreamReader {
    type Item = Result<RecordBatch, ArrowError>;

    fn next(&mut self) -> Option<Self::Item> {
        runtime()
            .block_on(self.stream.next())
            .map(|r| r.map_err(ArrowError::from))
    }
}

impl RecordBatchReader for StreamReader {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}

/// An Arrow stream handed to Python once (`pyarrow.RecordBatchReader.from_stream(s)`).
#[pyclass(name = "_Stream", module = "jammi_ai", frozen)]
pub(crate) struct OneStream(Mutex<Option<Box<dyn RecordBatchReader + Send>>>);

impl OneStream {
    pub(crate) fn new(reader: Box<dyn RecordBatchReader + Send>) -> Self {
        OneStream(Mutex::new(Some(reader)))
    }
}

#[pymethods]
impl OneStream {
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let reader = self
            .0
            .lock()
            .expect("lock")
            .take()
            .ok_or_else(|| PyValueError::new_err("this stream was already read"))?;
        stream_capsule(py, reader)
    }
}
