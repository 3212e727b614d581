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
use crate::store::Manifest;

/// A Parquet file with committed sidecars (a result table, or a file indexed from SQL).
#[derive(Debug)]
pub struct IndexedTable {
    inner: ListingTable,
    /// Directory holding the siblings.
    pub dir: StorageUrl,
    /// URL of the Parquet file.
    pub parquet: StorageUrl,
    /// The commit record.
    pub manifest: Manifest,
    /// Cloud settings to reach the files (`None`: ambient / already bound).
    pub cloud: Option<CloudConfig>,
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
        })
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
        self.inner.scan(state, projection, filters, limit).await
    }

    async fn scan_with_args<'a>(
        &self,
        state: &dyn Session,
        args: ScanArgs<'a>,
    ) -> datafusion::error::Result<ScanResult> {
        self.inner.scan_with_args(state, args).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
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
