//! `DELETE FROM jammi.public.<t> WHERE ...`: the rows each segment matches are recorded in
//! a deletion file of the table's next version; no data is rewritten. The work happens in
//! [`DeleteExec::execute`] (so `EXPLAIN DELETE` changes nothing), which returns the count.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{DFSchema, Result as DfResult, internal_err};
use datafusion::execution::TaskContext;
use datafusion::logical_expr::utils::conjunction;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};
use datafusion::prelude::Expr;
use futures::StreamExt;

use crate::error::{JammiError, Result};
use crate::store::versions::TableVersion;
use crate::store::{ResultStore, read};

/// The predicate of a DELETE, over the table columns it reads.
#[derive(Debug, Clone)]
struct Predicate {
    expr: Arc<dyn PhysicalExpr>,
    /// Table columns it reads (ascending), in the order the expression sees them.
    columns: Vec<usize>,
    text: String,
}

/// Deletes the rows of a version's segments a predicate matches (all rows without one).
#[derive(Debug)]
pub(crate) struct DeleteExec {
    store: Arc<ResultStore>,
    base: TableVersion,
    schema: SchemaRef,
    predicate: Option<Predicate>,
    properties: Arc<PlanProperties>,
}

impl DeleteExec {
    /// The DELETE of `filters` (ANDed) from `base`, a version of a table with `schema`.
    pub(crate) fn try_new(
        state: &dyn datafusion::catalog::Session,
        store: Arc<ResultStore>,
        base: TableVersion,
        schema: SchemaRef,
        filters: Vec<Expr>,
    ) -> Result<Self> {
        let predicate = match conjunction(filters) {
            None => None,
            Some(e) => {
                let mut columns: Vec<usize> = e
                    .column_refs()
                    .iter()
                    .map(|c| {
                        schema.index_of(&c.name).map_err(|_| {
                            JammiError::InvalidInput(format!(
                                "DELETE from {}: unknown column '{}'",
                                base.table, c.name
                            ))
                        })
                    })
                    .collect::<Result<_>>()?;
                columns.sort_unstable();
                columns.dedup();
                let projected = DFSchema::try_from(schema.project(&columns)?)?;
                let text = e.to_string();
                let expr = state.create_physical_expr(e, &projected)?;
                Some(Predicate {
                    expr,
                    columns,
                    text,
                })
            }
        };
        let count = Arc::new(Schema::new(vec![Field::new(
            "count",
            DataType::UInt64,
            false,
        )]));
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(DeleteExec {
            store,
            base,
            schema,
            predicate,
            properties,
        })
    }
}

/// Row positions of segment `url` the predicate matches (every row without one).
async fn matching_rows(
    store: &Arc<dyn object_store::ObjectStore>,
    url: &crate::storage::StorageUrl,
    rows: u64,
    schema: &SchemaRef,
    predicate: Option<&Predicate>,
) -> Result<roaring::RoaringBitmap> {
    let Some(p) = predicate else {
        return Ok((0..rows as u32).collect());
    };
    let meta = read::load_metadata(store, url, None).await?;
    let projected = Arc::new(schema.project(&p.columns)?);
    let in_file = read::file_columns(url, &meta, schema, &p.columns)?;
    let mut stream = read::scan_columns(store, url, &meta, &in_file).await?;
    let mut matched = roaring::RoaringBitmap::new();
    let mut row = 0u32;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let columns = projected
            .fields()
            .iter()
            .map(|f| read::table_column(&batch, f))
            .collect::<Result<Vec<_>>>()?;
        let batch = RecordBatch::try_new_with_options(
            projected.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
        )?;
        let v = p.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
        let b = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
            JammiError::InvalidInput(format!("DELETE: '{}' is not a boolean predicate", p.text))
        })?;
        // SQL's three-valued logic: only rows where the predicate is true go.
        matched.extend(
            (0..b.len())
                .filter(|&i| b.is_valid(i) && b.value(i))
                .map(|i| row + i as u32),
        );
        row += batch.num_rows() as u32;
    }
    Ok(matched)
}

impl DeleteExec {
    async fn run(&self) -> Result<u64> {
        let store = self.store.object_store().await?;
        let mut deleted = Vec::new();
        for seg in &self.base.segments {
            let url = self.store.root().join(&seg.path)?;
            let rows = matching_rows(
                &store,
                &url,
                seg.manifest.rows,
                &self.schema,
                self.predicate.as_ref(),
            )
            .await?;
            deleted.push((seg.path.clone(), rows));
        }
        let v = self
            .store
            .delete_rows(&self.base.table, &self.base, deleted)
            .await?;
        Ok(if v.version == self.base.version {
            0
        } else {
            v.rows_deleted
        })
    }
}

impl DisplayAs for DeleteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "DeleteExec: table={}, version={}, segments={}",
            self.base.table,
            self.base.version,
            self.base.segments.len()
        )?;
        if let Some(p) = &self.predicate {
            write!(f, ", predicate={}", p.text)?;
        }
        Ok(())
    }
}

impl ExecutionPlan for DeleteExec {
    fn name(&self) -> &str {
        "DeleteExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(
            &Arc<dyn PhysicalExpr>,
        ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> DfResult<datafusion::common::tree_node::TreeNodeRecursion> {
        match &self.predicate {
            Some(p) => f(&p.expr),
            None => Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue),
        }
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: datafusion::physical_plan::execution_plan::ReplaceChildrenOptions,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("DeleteExec has no children");
        }
        Ok(self)
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        if !children.is_empty() {
            return internal_err!("DeleteExec has no children");
        }
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        _context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("DeleteExec has one partition, asked for {partition}");
        }
        let schema = self.properties.eq_properties.schema().clone();
        let this = DeleteExec {
            store: self.store.clone(),
            base: self.base.clone(),
            schema: self.schema.clone(),
            predicate: self.predicate.clone(),
            properties: self.properties.clone(),
        };
        let out = schema.clone();
        let run = async move {
            let n = this.run().await?;
            Ok(RecordBatch::try_new(
                out,
                vec![Arc::new(UInt64Array::from(vec![n]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            futures::stream::once(run),
        )))
    }
}
