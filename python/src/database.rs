//! `jammi_ai.Database`: one jammi database (a root with its sources and result tables).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::LogicalPlan;
use futures::TryStreamExt;
use jammi_db::index::IndexParams;
use jammi_db::index::progress::TerminalBar;
use jammi_db::session::{JammiSession, OpenOptions, default_root};
use jammi_db::source::{FileFormat, SourceConnection, SourceType};
use jammi_db::sql::prepared::is_query;
use jammi_db::sql::{PreparedQuery, SearchOptions};
use jammi_db::storage::{CloudConfig, StorageUrl};
use jammi_db::store::{RecoveryReport, TableSpec};
use jammi_db::{JammiError, Result};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};

use crate::arrow::import_stream;
use crate::errors::{ClosedError, df_to_py, to_py};
use crate::result::{Frame, QueryResult};
use crate::runtime::{runtime, wait};
use crate::values;

/// A jammi database: sources and result tables under one root (a local path or a storage
/// URL), queried with SQL.
#[pyclass(name = "Database", module = "jammi_ai", frozen)]
pub(crate) struct Database {
    root: String,
    session: RwLock<Option<Arc<JammiSession>>>,
    /// Plans of `search` and of `sql` with parameters, kept across calls (a warm search
    /// then skips DataFusion's planning); emptied by anything that changes sources or
    /// tables through this database.
    prepared: Mutex<HashMap<String, Arc<PreparedQuery>>>,
}

/// Plans kept at most; the set is emptied when full.
const PREPARED_MAX: usize = 64;

impl Database {
    /// The kept plan under `key`, or the one `prepare` makes (then kept).
    fn prepared<F, Fut>(
        &self,
        py: Python<'_>,
        key: String,
        prepare: F,
    ) -> PyResult<Option<Arc<PreparedQuery>>>
    where
        F: FnOnce(Arc<JammiSession>) -> Fut,
        Fut: Future<Output = Result<PreparedQuery>> + Send,
    {
        if let Some(p) = self.prepared.lock().expect("lock").get(&key) {
            return Ok(Some(p.clone()));
        }
        // A statement that is not a query is no error here: the caller runs it once.
        let prepared = run(py, self, |s| {
            let preparing = prepare(s);
            async move {
                match preparing.await {
                    Ok(p) => Ok(Some(p)),
                    Err(jammi_db::JammiError::NotAQuery { .. }) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })?;
        let Some(p) = prepared.map(Arc::new) else {
            return Ok(None);
        };
        let mut kept = self.prepared.lock().expect("lock");
        if kept.len() >= PREPARED_MAX {
            kept.clear();
        }
        kept.insert(key, p.clone());
        Ok(Some(p))
    }

    /// Forgets the kept plans: sources or tables changed.
    fn changed(&self) {
        self.prepared.lock().expect("lock").clear();
    }

    fn session(&self) -> PyResult<Arc<JammiSession>> {
        self.session
            .read()
            .expect("lock")
            .clone()
            .ok_or_else(|| ClosedError::new_err(format!("the database at {} is closed", self.root)))
    }
}

/// Runs `f` on the session with the GIL released; its error as a Python exception.
fn run<T, F, Fut>(py: Python<'_>, db: &Database, f: F) -> PyResult<T>
where
    F: FnOnce(Arc<JammiSession>) -> Fut,
    Fut: Future<Output = Result<T>> + Send,
    T: Send,
{
    let session = db.session()?;
    wait(py, f(session))?.map_err(to_py)
}

#[pymethods]
impl Database {
    /// Opens (or creates) the database under `root` (default: the `jammi` CLI's,
    /// `~/.local/share/jammi`). `storage_options` holds the root's cloud settings
    /// (`aws.*`, `gcp.*`, `azure.*` keys); without them, credentials come from the
    /// process environment.
    #[new]
    #[pyo3(signature = (root=None, *, storage_options=None))]
    fn new(
        py: Python<'_>,
        root: Option<String>,
        storage_options: Option<Bound<'_, PyDict>>,
    ) -> PyResult<Self> {
        let root = root.unwrap_or_else(default_root);
        let options = values::options(storage_options.as_ref(), "storage_options")?;
        let cloud = StorageUrl::parse(&root)
            .and_then(|u| CloudConfig::from_cloud_options(u.scheme(), &options))
            .map_err(to_py)?;
        let opened = root.clone();
        let session = wait(py, async move {
            JammiSession::open_with(
                &opened,
                OpenOptions {
                    cloud,
                    ..Default::default()
                },
            )
            .await
        })?
        .map_err(to_py)?;
        session.set_build_progress(Arc::new(TerminalBar::default()));
        Ok(Database {
            root,
            session: RwLock::new(Some(Arc::new(session))),
            prepared: Mutex::default(),
        })
    }

    /// The root this database lives under.
    #[getter]
    fn root(&self) -> &str {
        &self.root
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.session.read().expect("lock").is_none()
    }

    /// Closes the database; later calls raise `ClosedError`. Results already returned
    /// stay readable.
    fn close(&self) {
        self.changed();
        self.session.write().expect("lock").take();
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { ", closed" } else { "" };
        format!("Database('{}'{state})", self.root)
    }

    /// Registers a file-shaped source (Parquet, CSV, JSON, Arrow, Avro: one file, a
    /// prefix ending in `/`, or a glob), queried as `<name>.public.<table>`. `options`
    /// takes `aws.*`/`gcp.*`/`azure.*` keys (as SQL `OPTIONS`) and `format.*` keys.
    #[pyo3(signature = (name, *, url, format=None, options=None))]
    fn add_source(
        &self,
        py: Python<'_>,
        name: String,
        url: String,
        format: Option<String>,
        options: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let options = values::options(options.as_ref(), "options")?;
        let conn =
            SourceConnection::from_options(&url, format.as_deref(), &options).map_err(to_py)?;
        self.changed();
        run(py, self, |s| async move {
            s.add_source(&name, SourceType::File, conn).await
        })
    }

    /// Forgets a source (its files are not touched).
    fn remove_source(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.changed();
        run(py, self, |s| async move { s.remove_source(&name).await })
    }

    /// Every source: name, the table to query, URL, format (no secrets).
    fn list_sources<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let entries = run(py, self, |s| async move { s.list_sources().await })?;
        let out = PyList::empty(py);
        for e in entries {
            let d = PyDict::new(py);
            d.set_item("name", &e.name)?;
            d.set_item("table", format!("{}.public.{}", e.name, e.table))?;
            d.set_item("url", e.connection.url.as_deref())?;
            // The declared format, else the one the file name implies.
            let url = e.connection.url.as_deref().unwrap_or_default();
            let format = e
                .connection
                .format
                .or_else(|| FileFormat::from_file_name(url));
            d.set_item("format", format.map(|f| f.to_string()))?;
            d.set_item("credentials_withheld", e.credentials_withheld)?;
            d.set_item("created_at", &e.created_at)?;
            out.append(d)?;
        }
        Ok(out)
    }

    /// Supplies a source's credentials for this process (they are never persisted):
    /// `aws.*`/`gcp.*`/`azure.*` keys, or none to use the process environment.
    #[pyo3(signature = (name, options=None))]
    fn set_source_credentials(
        &self,
        py: Python<'_>,
        name: String,
        options: Option<Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        let options = values::options(options.as_ref(), "options")?;
        self.changed();
        run(py, self, |s| async move {
            let entry = s
                .catalog()
                .source(&name)
                .await?
                .ok_or_else(|| JammiError::NotFound {
                    kind: "source",
                    name: name.clone(),
                })?;
            let url = StorageUrl::parse(entry.connection.url.as_deref().unwrap_or_default())?;
            let cloud = match CloudConfig::from_cloud_options(url.scheme(), &options)? {
                Some(c) => c,
                None => CloudConfig::empty_for(url.scheme()).ok_or_else(|| {
                    JammiError::Config(format!("source '{name}' is local: it takes no credentials"))
                })?,
            };
            s.set_source_credentials(&name, cloud).await
        })
    }

    /// Runs SQL. DDL and DML (`CREATE`, `INSERT`, `COPY`) run now; a query returns a lazy
    /// `Result`. `params` binds `$1, $2, ...` (a list) or `$name` (a dict): numbers,
    /// strings, booleans, `None`, and vectors (lists, numpy or pyarrow arrays).
    #[pyo3(signature = (query, params=None))]
    fn sql(
        &self,
        py: Python<'_>,
        query: String,
        params: Option<Bound<'_, PyAny>>,
    ) -> PyResult<QueryResult> {
        let params = params.map(|p| values::params(&p)).transpose()?;
        if let Some(params) = &params {
            let key = format!("sql\u{1f}{query}");
            let q = query.clone();
            match self.prepared(py, key, |s| async move { s.prepare(&q).await })? {
                // Only a kept physical plan saves anything: other queries plan per run.
                Some(prepared) if prepared.plans_once() => {
                    let (session, bound) = (self.session()?, params.clone());
                    let frame: Frame = Arc::new(move || {
                        let (s, q, p) = (session.clone(), query.clone(), bound.clone());
                        Box::pin(async move { Ok(s.sql(&q).await?.with_param_values(p)?) })
                    });
                    return Ok(QueryResult::prepared(prepared, params.clone(), frame));
                }
                // DDL and DML with parameters run once, below.
                Some(_) | None => {}
            }
        }
        let df = run(py, self, |s| async move { s.sql(&query).await })?;
        let df = match params {
            Some(p) => df.with_param_values(p).map_err(df_to_py)?,
            None => df,
        };
        let plan = df.logical_plan();
        if !is_query(plan) || matches!(plan, LogicalPlan::EmptyRelation(_)) {
            // DDL ran at `sql` (leaving an empty relation), DML and COPY run below: sources
            // or tables may change.
            self.changed();
        }
        if !matches!(
            df.logical_plan(),
            LogicalPlan::Dml(_) | LogicalPlan::Copy(_)
        ) {
            return Ok(QueryResult::new(df));
        }
        let ctx = self.session()?.context().clone();
        let batches = wait(py, df.collect())?.map_err(df_to_py)?;
        Ok(QueryResult::new(
            ctx.read_batches(batches).map_err(df_to_py)?,
        ))
    }

    /// The `k` nearest rows of `table` (a result table, or a table indexed with
    /// `jammi.vector_column`) to `vector`, closest first, with `_distance`.
    #[pyo3(signature = (table, vector, k=10, *, filter=None, columns=None, ef_search=None, exact=false, oversample=None, rescore=true))]
    #[allow(clippy::too_many_arguments)]
    fn search(
        &self,
        py: Python<'_>,
        table: String,
        vector: Bound<'_, PyAny>,
        k: usize,
        filter: Option<String>,
        columns: Option<Vec<String>>,
        ef_search: Option<usize>,
        exact: bool,
        oversample: Option<usize>,
        rescore: bool,
    ) -> PyResult<QueryResult> {
        let vector = values::vector(&vector, "vector")?;
        let options = search_options(filter, columns, ef_search, exact)
            .with_rescoring(oversample, rescore)?;
        let key = format!("search\u{1f}{table}\u{1f}{k}\u{1f}{options:?}");
        let (t, o) = (table.clone(), options.clone());
        let prepared = self
            .prepared(py, key, |s| async move { s.prepare_search(&t, k, o).await })?
            .ok_or_else(|| {
                to_py(jammi_db::JammiError::InvalidInput(
                    "vector_search: the search did not plan as a query".into(),
                ))
            })?;
        let params = ParamValues::List(vec![values::list_scalar(&vector).into()]);
        let session = self.session()?;
        let frame: Frame = Arc::new(move || {
            let (s, t, v, o) = (
                session.clone(),
                table.clone(),
                vector.clone(),
                options.clone(),
            );
            Box::pin(async move { s.search(&t, &v, k, o).await })
        });
        Ok(QueryResult::prepared(prepared, params, frame))
    }

    /// The `k` nearest rows to each of many vectors (a 2-dimensional array or a list of
    /// vectors), searched in parallel: `query_index` (the vector's position), the hit's
    /// columns, `_distance` and `_rank`.
    #[pyo3(signature = (table, vectors, k=10, *, filter=None, columns=None, ef_search=None, exact=false, oversample=None, rescore=true))]
    #[allow(clippy::too_many_arguments)]
    fn search_batch(
        &self,
        py: Python<'_>,
        table: String,
        vectors: Bound<'_, PyAny>,
        k: usize,
        filter: Option<String>,
        columns: Option<Vec<String>>,
        ef_search: Option<usize>,
        exact: bool,
        oversample: Option<usize>,
        rescore: bool,
    ) -> PyResult<QueryResult> {
        let vectors = values::vectors(&vectors, "vectors")?;
        let batch = values::query_batch(&vectors).map_err(df_to_py)?;
        let options = search_options(filter, columns, ef_search, exact)
            .with_rescoring(oversample, rescore)?;
        let df = run(py, self, |s| async move {
            let queries = s.context().read_batch(batch)?;
            s.search_batch(&table, queries, k, options).await
        })?;
        Ok(QueryResult::new(df))
    }

    /// Writes a result table (Parquet plus its vector index) from any Arrow data: a
    /// pyarrow Table or RecordBatchReader, a polars or pandas DataFrame, or a `db.sql(...)`
    /// result (streamed in Rust, never through Python). Returns its manifest.
    /// `segment_max_bytes` (bytes, or a size such as `"256MiB"`) is recorded as the table's
    /// own segment budget for later appends, updates and merges. `quantization` (`"f32"`,
    /// `"f16"`, `"i8"`, `"b1"`) is the index's precision.
    #[pyo3(signature = (data, *, source, task, model, key_column=None, vector_column=None, metric="cosine", name=None, segment_max_bytes=None, quantization="f32"))]
    #[allow(clippy::too_many_arguments)]
    fn write_table<'py>(
        &self,
        py: Python<'py>,
        data: Bound<'py, PyAny>,
        source: String,
        task: String,
        model: String,
        key_column: Option<String>,
        vector_column: Option<String>,
        metric: &str,
        name: Option<String>,
        segment_max_bytes: Option<Bound<'py, PyAny>>,
        quantization: &str,
    ) -> PyResult<Bound<'py, PyAny>> {
        let spec = TableSpec {
            segment_max_bytes: byte_size(segment_max_bytes, "segment_max_bytes")?,
            source,
            task,
            model,
            name,
            key_column,
            vector_column,
            index: IndexParams {
                metric: metric.parse().map_err(to_py)?,
                quantization: quantization.parse().map_err(to_py)?,
                ..Default::default()
            },
        };
        self.changed();
        let manifest = if let Ok(result) = data.cast::<QueryResult>() {
            let df = result.get().dataframe(py)?;
            run(py, self, |s| async move {
                s.write_result_table(&spec, df).await
            })?
        } else {
            let data = pandas_to_arrow(&data)?;
            let reader = import_stream(&data, "data")?;
            run(py, self, |s| async move {
                write_reader(&s, &spec, reader).await
            })?
        };
        manifest_dict(py, &manifest)
    }

    /// Appends rows to result table `table` as a new segment (its own Parquet file and
    /// index), committed as the table's next version; the existing files are not rewritten.
    /// `data` is what `write_table` takes. Returns the version: `version`, `rows` (live rows
    /// of the table), `rows_added`, `segments`.
    /// `segment_max_bytes` (bytes, or a size such as `"256MiB"`) bounds each segment this
    /// append writes (default: the table's own, else 256 MiB). `auto_compact=False` leaves
    /// the small segments it fills a tier with unmerged (default: merged, as a later
    /// version; `JAMMI_AUTO_COMPACT`).
    #[pyo3(signature = (table, data, *, segment_max_bytes=None, auto_compact=None))]
    fn append<'py>(
        &self,
        py: Python<'py>,
        table: String,
        data: Bound<'py, PyAny>,
        segment_max_bytes: Option<Bound<'py, PyAny>>,
        auto_compact: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let settings = jammi_db::store::WriteSettings {
            segment_max_bytes: byte_size(segment_max_bytes, "segment_max_bytes")?,
            auto_compact,
        };
        let change = || {
            jammi_db::store::Change::new(jammi_db::store::versions::Operation::Append, vec![])
                .with_settings(settings)
        };
        self.changed();
        let v = if let Ok(result) = data.cast::<QueryResult>() {
            let df = result.get().dataframe(py)?;
            run(py, self, |s| async move {
                let schema = Arc::new(df.schema().as_arrow().clone());
                let stream = df.execute_stream().await?.map_err(JammiError::from);
                s.result_store()
                    .commit_change(&table, None, change(), Some((schema, stream)))
                    .await
            })?
        } else {
            let data = pandas_to_arrow(&data)?;
            let reader = import_stream(&data, "data")?;
            run(py, self, |s| async move {
                let (schema, batches) = reader_stream(reader);
                s.result_store()
                    .commit_change(&table, None, change(), Some((schema, batches)))
                    .await
            })?
        };
        let d = PyDict::new(py);
        d.set_item("version", v.version)?;
        d.set_item("rows", v.rows())?;
        d.set_item("rows_added", v.rows_added)?;
        d.set_item("segments", v.segments.len())?;
        Ok(d.into_any())
    }

    /// Upserts `data` into result table `table` by the key column(s) `on` (a name or a
    /// list): rows whose key is in the table replace it, the others are inserted, as one
    /// version. `data` is what `write_table` takes, with the table's columns. Returns the
    /// rows updated plus inserted. A key two rows of `data` share fails, naming it, before
    /// anything is committed.
    fn merge<'py>(
        &self,
        py: Python<'py>,
        table: String,
        data: Bound<'py, PyAny>,
        on: Bound<'py, PyAny>,
    ) -> PyResult<u64> {
        let on: Vec<String> = match on.extract::<String>() {
            Ok(one) => vec![one],
            Err(_) => on.extract::<Vec<String>>().map_err(|_| {
                PyTypeError::new_err("on must be a column name or a list of column names")
            })?,
        };
        self.changed();
        if let Ok(result) = data.cast::<QueryResult>() {
            let df = result.get().dataframe(py)?;
            return run(py, self, |s| async move {
                let on: Vec<&str> = on.iter().map(String::as_str).collect();
                s.merge(&table, df, &on).await
            });
        }
        let data = pandas_to_arrow(&data)?;
        let reader = import_stream(&data, "data")?;
        run(py, self, |s| async move {
            let (schema, batches) = reader_stream(reader);
            let batches: Vec<RecordBatch> = batches.try_collect().await?;
            let mem = datafusion::datasource::MemTable::try_new(schema, vec![batches])?;
            let df = s.context().read_table(Arc::new(mem))?;
            let on: Vec<&str> = on.iter().map(String::as_str).collect();
            s.merge(&table, df, &on).await
        })
    }

    /// Rewrites the table's small segments and those with many deleted rows into fewer,
    /// larger ones, as a new version; every query answers the same. Returns `version`
    /// (None: nothing to rewrite), `segments_before`, `segments_after`, `rewritten`, `rows`.
    fn compact<'py>(&self, py: Python<'py>, table: String) -> PyResult<Bound<'py, PyDict>> {
        self.changed();
        let r = run(py, self, |s| async move {
            s.compact(&table, &Default::default()).await
        })?;
        let d = PyDict::new(py);
        d.set_item("version", r.version)?;
        d.set_item("segments_before", r.segments_before)?;
        d.set_item("segments_after", r.segments_after)?;
        d.set_item("rewritten", r.rewritten)?;
        d.set_item("rows", r.rows)?;
        Ok(d)
    }

    /// Removes the files only versions replaced more than `older_than` ago use (a duration
    /// such as "7d", "12h", "0s"), each proven jammi-db's by its version record; those
    /// versions can no longer be read. Returns `removed` (files), `versions_removed`.
    #[pyo3(signature = (table, *, older_than="7d", dry_run=false))]
    fn vacuum<'py>(
        &self,
        py: Python<'py>,
        table: String,
        older_than: &str,
        dry_run: bool,
    ) -> PyResult<Bound<'py, PyDict>> {
        let retention = jammi_db::sql::options::parse_duration(older_than)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(format!("older_than: {e}")))?;
        self.changed();
        let r = run(py, self, |s| async move {
            s.vacuum(&table, retention, dry_run).await
        })?;
        let d = PyDict::new(py);
        d.set_item("removed", r.removed)?;
        d.set_item("versions_removed", r.versions_removed)?;
        d.set_item("dry_run", r.dry_run)?;
        Ok(d)
    }

    /// Names of the committed result tables.
    fn list_tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        run(py, self, |s| async move { s.list_tables().await })
    }

    /// A result table's manifest: rows, dimensions, metric, files and sizes.
    fn describe_table<'py>(&self, py: Python<'py>, name: String) -> PyResult<Bound<'py, PyAny>> {
        let m = run(py, self, |s| async move { s.describe_table(&name).await })?;
        manifest_dict(py, &m)
    }

    /// Deletes a result table and its sidecars.
    fn delete_table(&self, py: Python<'_>, name: String) -> PyResult<()> {
        self.changed();
        run(py, self, |s| async move { s.delete_table(&name).await })
    }

    /// Settles writes that died midway (only objects their own records prove jammi-db
    /// wrote); `dry_run=True` reports what it would do and changes nothing.
    #[pyo3(signature = (*, dry_run=false))]
    fn recover<'py>(&self, py: Python<'py>, dry_run: bool) -> PyResult<Bound<'py, PyDict>> {
        if !dry_run {
            self.changed();
        }
        let r = run(py, self, |s| async move {
            if dry_run {
                s.result_store().recover_dry_run().await
            } else {
                s.recover().await
            }
        })?;
        report(py, &r)
    }
}

/// A quantised index's re-ranking options, checked as the SQL option is.
trait Rescoring: Sized {
    fn with_rescoring(self, oversample: Option<usize>, rescore: bool) -> PyResult<Self>;
}

impl Rescoring for SearchOptions {
    fn with_rescoring(mut self, oversample: Option<usize>, rescore: bool) -> PyResult<Self> {
        if oversample == Some(0) {
            return Err(to_py(jammi_db::JammiError::InvalidInput(
                "oversample must be an integer of at least 1, got '0'".into(),
            )));
        }
        self.oversample = oversample;
        self.rescore = (!rescore).then_some(false);
        Ok(self)
    }
}

fn search_options(
    filter: Option<String>,
    columns: Option<Vec<String>>,
    ef_search: Option<usize>,
    exact: bool,
) -> SearchOptions {
    SearchOptions {
        filter,
        columns,
        ef_search,
        exact,
        ..Default::default()
    }
}

/// pandas DataFrames through `pyarrow.Table.from_pandas` (without the index); anything
/// else as it is.
/// A byte size given as an int or a string such as `"256MiB"`.
fn byte_size(value: Option<Bound<'_, PyAny>>, what: &str) -> PyResult<Option<u64>> {
    let Some(v) = value else { return Ok(None) };
    let parsed = match v.extract::<u64>() {
        Ok(0) => Err(format!("{what} must be at least 1 byte")),
        Ok(n) => Ok(n),
        Err(_) => match v.extract::<String>() {
            Ok(text) => {
                jammi_db::sql::options::parse_bytes(&text).map_err(|e| format!("{what}: {e}"))
            }
            Err(_) => Err(format!(
                "{what} must be a number of bytes or a size such as '256MiB'"
            )),
        },
    };
    parsed
        .map(Some)
        .map_err(pyo3::exceptions::PyValueError::new_err)
}

fn pandas_to_arrow<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    let module = data.get_type().module()?;
    if !module.to_str()?.starts_with("pandas") || data.hasattr("__arrow_c_stream__")? {
        return Ok(data.clone());
    }
    let kwargs = PyDict::new(data.py());
    kwargs.set_item("preserve_index", false)?;
    data.py().import("pyarrow")?.getattr("Table")?.call_method(
        "from_pandas",
        (data,),
        Some(&kwargs),
    )
}

/// Writes the batches of `reader` as a result table.
async fn write_reader(
    s: &JammiSession,
    spec: &TableSpec,
    reader: datafusion::arrow::ffi_stream::ArrowArrayStreamReader,
) -> Result<jammi_db::store::Manifest> {
    let (schema, batches) = reader_stream(reader);
    s.write_result_stream(spec, schema, batches).await
}

/// The schema and batches of `reader`, read on a blocking thread (the producer may be
/// Python code that takes the GIL).
fn reader_stream(
    reader: datafusion::arrow::ffi_stream::ArrowArrayStreamReader,
) -> (
    datafusion::arrow::datatypes::SchemaRef,
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch>> + Send>>,
) {
    use datafusion::arrow::record_batch::RecordBatchReader;
    let schema = reader.schema();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<RecordBatch>>(2);
    runtime().spawn_blocking(move || {
        for batch in reader {
            let batch = batch.map_err(|e| JammiError::from(DataFusionError::from(e)));
            if tx.blocking_send(batch).is_err() {
                break;
            }
        }
    });
    let batches =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) });
    (schema, Box::pin(batches))
}

/// A manifest as a dict, as its JSON reads (without the schema's IPC bytes: `db.sql`
/// gives the schema).
fn manifest_dict<'py>(
    py: Python<'py>,
    m: &jammi_db::store::Manifest,
) -> PyResult<Bound<'py, PyAny>> {
    let text = serde_json::to_string(m)
        .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))?;
    let d = py.import("json")?.call_method1("loads", (text,))?;
    d.del_item("schema_ipc")?;
    Ok(d)
}

fn report<'py>(py: Python<'py>, r: &RecoveryReport) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("reclaimed_tables", &r.reclaimed_tables)?;
    d.set_item("completed_commits", &r.completed_commits)?;
    d.set_item("completed_deletes", &r.completed_deletes)?;
    d.set_item("removed_objects", &r.removed_objects)?;
    d.set_item("kept_objects", &r.kept_objects)?;
    d.set_item("live_writes", &r.live_writes)?;
    d.set_item("broken_tables", &r.broken_tables)?;
    d.set_item("committed_tables", r.committed_tables)?;
    d.set_item("failed", &r.failed)?;
    Ok(d)
}
