//! `IndexedTable`: a table backed by one Parquet file with committed USearch sidecars. It
//! scans exactly like the `ListingTable` it wraps, and carries what `vector_search` needs.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{ScanArgs, ScanResult, Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::logical_expr::TableProviderFilterPushDown;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;

use crate::error::Result;
use crate::storage::{CloudConfig, StorageUrl};
use crate::store::versions::TableVersion;
use crate::store::{Manifest, ResultStore};
use datafusion::datasource::sink::DataSinkExec;
use datafusion::logical_expr::dml::InsertOp;
use datafusion::parquet::arrow::arrow_reader::{RowSelection, RowSelector};

/// A Parquet file with committed sidecars (a result table, or a file indexed from SQL) —
/// or the segments of one version of a result table that changed.
#[derive(Debug)]
pub struct IndexedTable {
    inner: ListingTable,
    /// Directory holding the siblings (of the first segment).
    pub dir: StorageUrl,
    /// URL of the Parquet file (of the first segment).
    pub parquet: StorageUrl,
    /// The commit record (of the first segment).
    pub manifest: Manifest,
    /// Cloud settings to reach the files (`None`: ambient / already bound).
    pub cloud: Option<CloudConfig>,
    /// The version a result table that changed was read at, and the root its segment
    /// paths are under.
    pub versioned: Option<(StorageUrl, TableVersion)>,
    /// The store that takes appends, for result tables of a session.
    pub(crate) writer: Option<Arc<ResultStore>>,
    /// The rows each segment with deletions keeps, by its path in the store (read once).
    selections: tokio::sync::OnceCell<Arc<Selections>>,
}

use crate::catalog::live::Selections;

/// The rows of a segment of `rows` rows that `deleted` does not name.
fn live_rows(rows: u64, deleted: &roaring::RoaringBitmap) -> RowSelection {
    let mut selectors = Vec::new();
    let mut at = 0u64;
    for d in deleted.iter().map(u64::from).filter(|&d| d < rows) {
        if d > at {
            selectors.push(RowSelector::select((d - at) as usize));
        }
        selectors.push(RowSelector::skip(1));
        at = d + 1;
    }
    if rows > at {
        selectors.push(RowSelector::select((rows - at) as usize));
    }
    RowSelection::from(selectors)
}

impl IndexedTable {
    /// Wraps the Parquet file `parquet` described by `manifest`.
    pub fn new(
        parquet: StorageUrl,
        manifest: Manifest,
        cloud: Option<CloudConfig>,
    ) -> Result<Self> {
        let schema = manifest.schema()?;
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
        let config = ListingTableConfig::new(ListingTableUrl::parse(parquet.to_string())?)
            .with_listing_options(options)
            .with_schema(schema);
        Ok(IndexedTable {
            inner: ListingTable::try_new(config)?,
            dir: parquet.parent(),
            parquet,
            manifest,
            cloud,
            versioned: None,
            writer: None,
            selections: Default::default(),
        })
    }

    /// Version `version` of a result table under `root`: its segments, scanned together.
    pub fn segmented(
        root: &StorageUrl,
        version: TableVersion,
        cloud: Option<CloudConfig>,
    ) -> Result<Self> {
        let urls = version
            .segments
            .iter()
            .map(|s| root.join(&s.path))
            .collect::<Result<Vec<_>>>()?;
        let first = version.segments.first().ok_or_else(|| {
            crate::error::JammiError::InvalidInput(format!(
                "version {} of {} has no segments",
                version.version, version.table
            ))
        })?;
        let manifest = first.manifest.clone();
        let options =
            ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
        let paths = urls
            .iter()
            .map(|u| ListingTableUrl::parse(u.to_string()))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        let config = ListingTableConfig::new_with_multi_paths(paths)
            .with_listing_options(options)
            .with_schema(manifest.schema()?);
        Ok(IndexedTable {
            inner: ListingTable::try_new(config)?,
            dir: urls[0].parent(),
            parquet: urls[0].clone(),
            manifest,
            cloud,
            versioned: Some((root.clone(), version)),
            writer: None,
            selections: Default::default(),
        })
    }

    /// This table, taking appends through `store` (`INSERT INTO`).
    pub(crate) fn writable(mut self, store: Arc<ResultStore>) -> Self {
        self.writer = Some(store);
        self
    }

    /// The store of a result table, which takes its changes.
    fn result_store(&self) -> Result<&Arc<ResultStore>> {
        self.writer.as_ref().ok_or_else(|| {
            crate::error::JammiError::InvalidInput(match &self.versioned {
                Some((_, v)) => format!(
                    "{}@{} is an older version, read-only: change {} itself",
                    v.table, v.version, v.table
                ),
                None => format!(
                    "{} is an indexed file, not a result table: only result tables can change",
                    self.parquet
                ),
            })
        })
    }

    /// The version read, as a record (version 0 for a table that never changed).
    fn table_version(&self) -> TableVersion {
        match &self.versioned {
            Some((_, v)) => v.clone(),
            None => TableVersion::initial(self.name(), self.manifest.clone()),
        }
    }

    /// The table's name (a result table's, or the indexed file's stem).
    pub fn name(&self) -> &str {
        match &self.versioned {
            Some((_, v)) => &v.table,
            None => &self.manifest.table,
        }
    }

    /// Number of segments (1 for a table written once).
    pub fn segment_count(&self) -> usize {
        self.versioned.as_ref().map_or(1, |(_, v)| v.segments.len())
    }

    /// The live rows of each segment with deletions (read on first use).
    async fn selections(&self, state: &dyn Session) -> Result<Arc<Selections>> {
        let Some((root, v)) = &self.versioned else {
            return Ok(Arc::default());
        };
        self.selections
            .get_or_try_init(|| async {
                let mut out = Selections::new();
                for seg in &v.segments {
                    let Some(d) = &seg.deleted else { continue };
                    let url = root.join(&seg.path)?;
                    let store = state.runtime_env().object_store(url.object_store_url())?;
                    let deleted = crate::store::versions::read_deletions(&store, root, d).await?;
                    out.insert(url.object_path()?, live_rows(seg.manifest.rows, &deleted));
                }
                Ok(Arc::new(out))
            })
            .await
            .cloned()
    }

    /// `plan` (the listing table's scan) reading only the live rows of each segment: a
    /// [`LiveRowsExec`](crate::catalog::live::LiveRowsExec) above it, so the selections
    /// travel with the plan.
    fn without_deleted(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        selections: &Arc<Selections>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        if selections.is_empty() {
            return Ok(plan);
        }
        Ok(Arc::new(crate::catalog::live::LiveRowsExec::try_new(
            plan,
            selections.clone(),
        )?))
    }

    /// The version read (0 for a table that never changed).
    pub fn version(&self) -> u64 {
        self.versioned.as_ref().map_or(0, |(_, v)| v.version)
    }
}

#[async_trait]
impl TableProvider for IndexedTable {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        let selections = self.selections(state).await?;
        self.without_deleted(plan, &selections)
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::error::Result<ScanResult> {
        let selections = self.selections(state).await?;
        let scanned = self.inner.scan_with_args(state, args).await?;
        if selections.is_empty() {
            return Ok(scanned);
        }
        let plan = self.without_deleted(scanned.plan().clone(), &selections)?;
        Ok(ScanResult::new(plan))
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    /// `DELETE FROM jammi.public.<t> [WHERE ...]`: the matching rows are recorded as
    /// deleted in the table's next version (see [`dml`](crate::catalog::dml)).
    async fn delete_from(
        &self,
        state: &dyn Session,
        filters: Vec<Expr>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(crate::catalog::dml::DeleteExec::try_new(
            state,
            self.result_store()?.clone(),
            self.table_version(),
            self.schema(),
            filters,
            None,
        )?))
    }

    /// `UPDATE jammi.public.<t> SET ... [WHERE ...]`: the matching rows are deleted and
    /// their new values added as a segment, in one new version.
    async fn update(
        &self,
        state: &dyn Session,
        assignments: Vec<(String, Expr)>,
        filters: Vec<Expr>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(crate::catalog::dml::DeleteExec::try_new(
            state,
            self.result_store()?.clone(),
            self.table_version(),
            self.schema(),
            filters,
            Some(assignments),
        )?))
    }

    /// `MERGE INTO jammi.public.<t> USING ... ON ... WHEN ...`: the rows it deletes and
    /// updates become deletions, the rows it updates and inserts a new segment, in one new
    /// version.
    async fn merge_into(
        &self,
        state: &dyn Session,
        source: Arc<dyn ExecutionPlan>,
        merge_schema: datafusion::common::DFSchemaRef,
        on: Expr,
        clauses: Vec<datafusion::logical_expr::dml::MergeIntoClause>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Ok(crate::catalog::merge::plan(
            state,
            self.result_store()?.clone(),
            self.table_version(),
            self.schema(),
            source,
            merge_schema,
            on,
            clauses,
        )
        .await?)
    }

    /// `INSERT INTO jammi.public.<t> ...`: the rows become a new segment, committed as the
    /// table's next version.
    async fn insert_into(
        &self,
        state: &dyn Session,
        input: Arc<dyn ExecutionPlan>,
        insert_op: InsertOp,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let store = self.result_store()?;
        if insert_op != InsertOp::Append {
            return Err(crate::error::JammiError::InvalidInput(format!(
                "INSERT {insert_op} into result table {}: only appending rows is supported",
                self.name()
            ))
            .into());
        }
        let sink = crate::catalog::append::AppendSink::new(
            store.clone(),
            self.name().to_string(),
            self.schema(),
            crate::sql::options::session_write(state),
        );
        Ok(Arc::new(DataSinkExec::new(input, Arc::new(sink), None)))
    }
}

/// A table that cannot be opened now — its file is gone, its credentials were withheld,
/// its manifest is broken — listed like any other (in `SHOW TABLES` and
/// `information_schema`, with the columns last known) and failing, naming itself and the
/// reason, only when a query reads it.
#[derive(Debug)]
pub struct UnavailableTable {
    name: String,
    schema: SchemaRef,
    reason: String,
}

impl UnavailableTable {
    /// Why the table cannot be read, as an error naming it (and, for a damaged result
    /// table, the damaged file).
    pub fn error(&self) -> crate::error::JammiError {
        crate::error::JammiError::Unavailable {
            name: self.name.clone(),
            reason: self.reason.clone(),
        }
    }

    /// `name` cannot be read because of `reason`; `schema` is what it last had (or empty).
    pub fn new(name: impl Into<String>, schema: Option<SchemaRef>, reason: impl ToString) -> Self {
        UnavailableTable {
            name: name.into(),
            schema: schema
                .unwrap_or_else(|| Arc::new(datafusion::arrow::datatypes::Schema::empty())),
            reason: reason.to_string(),
        }
    }
}

#[async_trait]
impl TableProvider for UnavailableTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        Err(crate::error::JammiError::Unavailable {
            name: self.name.clone(),
            reason: self.reason.clone(),
        }
        .into())
    }
}
