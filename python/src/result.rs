//! `jammi_ai.Result`: a lazy query. Nothing runs until it is read; every read runs it again.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatchIterator;
use datafusion::arrow::util::pretty::pretty_format_batches;
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use futures::future::BoxFuture;
use jammi_db::sql::PreparedQuery;
use pyo3::exceptions::PyImportError;
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use crate::arrow::{OneStream, StreamReader, schema_capsule, stream_capsule};
use crate::errors::{df_to_py, to_py};
use crate::runtime::wait;

/// Rows `show()` and `repr()` print.
const SHOW_ROWS: usize = 20;

/// The result of `Database.sql` or `Database.search`: read it with `to_arrow()`,
/// `to_reader()`, `to_pandas()`, `to_polars()`, `to_pylist()`, or hand it to any library
/// that reads Arrow streams (`pyarrow.table(r)`, `polars.DataFrame(r)`, DuckDB).
#[pyclass(name = "Result", module = "jammi_ai", frozen)]
pub(crate) struct QueryResult {
    source: Source,
}

/// Plans a prepared query's statement as a DataFrame, for what runs it otherwise
/// (`show`, `explain`, streaming into `write_table`).
pub(crate) type Frame =
    Arc<dyn Fn() -> BoxFuture<'static, jammi_db::Result<DataFrame>> + Send + Sync>;

enum Source {
    Frame(DataFrame),
    /// A query prepared once (its plan cached by the database) and its parameter values.
    Prepared {
        query: Arc<PreparedQuery>,
        params: ParamValues,
        frame: Frame,
    },
}

impl QueryResult {
    pub(crate) fn new(df: DataFrame) -> Self {
        QueryResult {
            source: Source::Frame(df),
        }
    }

    pub(crate) fn prepared(query: Arc<PreparedQuery>, params: ParamValues, frame: Frame) -> Self {
        QueryResult {
            source: Source::Prepared {
                query,
                params,
                frame,
            },
        }
    }

    /// The query as a DataFrame.
    pub(crate) fn dataframe(&self, py: Python<'_>) -> PyResult<DataFrame> {
        match &self.source {
            Source::Frame(df) => Ok(df.clone()),
            Source::Prepared { frame, .. } => wait(py, frame())?.map_err(to_py),
        }
    }

    fn arrow_schema(&self) -> SchemaRef {
        match &self.source {
            Source::Frame(df) => Arc::new(df.schema().as_arrow().clone()),
            Source::Prepared { query, .. } => query.schema(),
        }
    }

    /// Runs the query to the end (interruptible) as a one-shot Arrow stream.
    fn collected(&self, py: Python<'_>) -> PyResult<OneStream> {
        let batches = match &self.source {
            Source::Frame(df) => wait(py, df.clone().collect())?.map_err(df_to_py)?,
            Source::Prepared { query, params, .. } => {
                wait(py, query.collect(params.clone()))?.map_err(to_py)?
            }
        };
        let reader = RecordBatchIterator::new(batches.into_iter().map(Ok), self.arrow_schema());
        Ok(OneStream::new(Box::new(reader)))
    }

    fn text(&self, py: Python<'_>, rows: usize) -> PyResult<String> {
        let df = self.dataframe(py)?.limit(0, Some(rows)).map_err(df_to_py)?;
        let batches = wait(py, df.collect())?.map_err(df_to_py)?;
        Ok(pretty_format_batches(&batches)
            .map_err(|e| df_to_py(e.into()))?
            .to_string())
    }
}

#[pymethods]
impl QueryResult {
    /// The Arrow C stream of the rows, read as the query produces them.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema;
        let stream = match &self.source {
            Source::Frame(df) => wait(py, df.clone().execute_stream())?.map_err(df_to_py)?,
            Source::Prepared { query, params, .. } => {
                wait(py, query.execute(params.clone()))?.map_err(to_py)?
            }
        };
        stream_capsule(py, Box::new(StreamReader::new(stream)))
    }

    /// The Arrow C schema of the rows.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        schema_capsule(py, &self.arrow_schema())
    }

    /// The schema, as a `pyarrow.Schema`.
    #[getter]
    fn schema<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        slf.py().import("pyarrow")?.call_method1("schema", (slf,))
    }

    /// Runs the query; all rows as a `pyarrow.Table`.
    fn to_arrow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stream = Bound::new(py, self.collected(py)?)?;
        reader_from(py, &stream)?.call_method0("read_all")
    }

    /// Runs the query; the rows as a streaming `pyarrow.RecordBatchReader`.
    fn to_reader<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        reader_from(slf.py(), slf.as_any())
    }

    /// Runs the query; all rows as a `pandas.DataFrame`.
    fn to_pandas<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_arrow(py)?.call_method0("to_pandas")
    }

    /// Runs the query; all rows as a `polars.DataFrame` (needs polars).
    fn to_polars<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let polars = py
            .import("polars")
            .map_err(|_| PyImportError::new_err("to_polars needs polars: pip install polars"))?;
        polars.call_method1("from_arrow", (self.to_arrow(py)?,))
    }

    /// Runs the query; the rows as a list of dicts.
    fn to_pylist<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.to_arrow(py)?.call_method0("to_pylist")
    }

    /// Prints the first `n` rows as a table.
    #[pyo3(signature = (n=SHOW_ROWS))]
    fn show(&self, py: Python<'_>, n: usize) -> PyResult<()> {
        let text = self.text(py, n)?;
        py.import("builtins")?.call_method1("print", (text,))?;
        Ok(())
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.text(py, SHOW_ROWS)
    }

    /// The plan as text; `analyze=True` runs the query and adds each operator's metrics
    /// (for `vector_search`: index load, candidates, rows hydrated, requests).
    #[pyo3(signature = (analyze=false, verbose=false))]
    fn explain(&self, py: Python<'_>, analyze: bool, verbose: bool) -> PyResult<String> {
        let df = self
            .dataframe(py)?
            .explain(verbose, analyze)
            .map_err(df_to_py)?;
        let batches = wait(py, df.collect())?.map_err(df_to_py)?;
        let mut out = String::new();
        for b in &batches {
            let cols: Vec<_> = (0..b.num_columns())
                .map(|c| {
                    datafusion::arrow::util::display::ArrayFormatter::try_new(
                        b.column(c).as_ref(),
                        &Default::default(),
                    )
                })
                .collect::<Result<_, _>>()
                .map_err(|e| df_to_py(e.into()))?;
            for r in 0..b.num_rows() {
                let (kind, plan) = (cols[0].value(r).to_string(), cols[1].value(r).to_string());
                out.push_str(&format!("{kind}:\n{plan}\n"));
            }
        }
        Ok(out)
    }

    /// Column names.
    #[getter]
    fn columns(&self) -> Vec<String> {
        self.arrow_schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect()
    }
}

fn reader_from<'py>(py: Python<'py>, source: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    py.import("pyarrow")?
        .getattr("RecordBatchReader")?
        .call_method1("from_stream", (source,))
}
