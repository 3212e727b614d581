//! `DELETE FROM jammi.public.<t> WHERE ...`: the rows each segment matches are recorded in
//! a deletion file of the table's next version; no data is rewritten. `UPDATE ... SET ...
//! WHERE ...` deletes the rows it matches the same way and adds their new values as a new
//! segment, in the same version. The work happens in [`DeleteExec::execute`] (so `EXPLAIN`
//! changes nothing), which returns the count.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray, RecordBatch, UInt64Array};
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

/// Deletes (or updates) the rows of a version's segments a predicate matches (all rows
/// without one).
#[derive(Debug)]
pub(crate) struct DeleteExec {
    store: Arc<ResultStore>,
    base: TableVersion,
    schema: SchemaRef,
    predicate: Option<Predicate>,
    /// An UPDATE: each table column's new value, over the whole row.
    assignments: Option<Vec<Arc<dyn PhysicalExpr>>>,
    /// The session's write settings for an UPDATE's new rows.
    write: crate::store::WriteSettings,
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
        assignments: Option<Vec<(String, Expr)>>,
    ) -> Result<Self> {
        let whole = DFSchema::try_from(schema.as_ref().clone())?;
        let assignments = match assignments {
            None => None,
            Some(set) => Some(new_values(state, &base.table, &schema, &whole, set)?),
        };
        let predicate = match conjunction(filters) {
            None => None,
            // An update reads whole rows: its predicate sees every column.
            Some(e) if assignments.is_some() => Some(Predicate {
                text: e.to_string(),
                expr: state.create_physical_expr(e, &whole)?,
                columns: (0..schema.fields().len()).collect(),
            }),
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
        let properties = count_properties();
        Ok(DeleteExec {
            store,
            base,
            schema,
            predicate,
            assignments,
            write: crate::sql::options::session_write(state),
            properties,
        })
    }
}

/// The properties of a DML plan: one partition, one row, its `count` of rows changed.
pub(crate) fn count_properties() -> Arc<PlanProperties> {
    let count = Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]));
    Arc::new(PlanProperties::new(
        EquivalenceProperties::new(count),
        Partitioning::UnknownPartitioning(1),
        EmissionType::Final,
        Boundedness::Bounded,
    ))
}

/// Each table column's value after `set` (the column itself where `set` leaves it), over
/// the whole row, cast to the column's type.
fn new_values(
    state: &dyn datafusion::catalog::Session,
    table: &str,
    schema: &SchemaRef,
    whole: &DFSchema,
    set: Vec<(String, Expr)>,
) -> Result<Vec<Arc<dyn PhysicalExpr>>> {
    for (c, _) in &set {
        if schema.index_of(c).is_err() {
            return Err(JammiError::InvalidInput(format!(
                "UPDATE {table}: unknown column '{c}'"
            )));
        }
    }
    schema
        .fields()
        .iter()
        .map(|f| {
            let e = match set.iter().find(|(c, _)| c == f.name()) {
                Some((_, e)) => datafusion::logical_expr::cast(e.clone(), f.data_type().clone()),
                None => {
                    datafusion::prelude::col(datafusion::common::Column::new_unqualified(f.name()))
                }
            };
            Ok(state.create_physical_expr(e, whole)?)
        })
        .collect()
}

/// The rows of segment `url` the predicate matches, and (for an update) their new values.
async fn updated_rows(
    store: &Arc<dyn object_store::ObjectStore>,
    url: &crate::storage::StorageUrl,
    schema: &SchemaRef,
    predicate: Option<&Predicate>,
    assignments: &[Arc<dyn PhysicalExpr>],
) -> Result<(roaring::RoaringBitmap, Vec<RecordBatch>)> {
    let meta = read::load_metadata(store, url, None).await?;
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    let stream = read::scan_table_columns(store, url, &meta, schema, &all).await?;
    let mut stream = std::pin::pin!(stream);
    let (mut matched, mut updated, mut row) = (roaring::RoaringBitmap::new(), Vec::new(), 0u32);
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let mask = match predicate {
            Some(p) => {
                let v = p.expr.evaluate(&batch)?.into_array(batch.num_rows())?;
                let b = v.as_any().downcast_ref::<BooleanArray>().ok_or_else(|| {
                    JammiError::InvalidInput(format!(
                        "UPDATE: '{}' is not a boolean predicate",
                        p.text
                    ))
                })?;
                (0..b.len())
                    .map(|i| Some(b.is_valid(i) && b.value(i)))
                    .collect::<BooleanArray>()
            }
            None => BooleanArray::from(vec![true; batch.num_rows()]),
        };
        matched.extend(
            (0..mask.len())
                .filter(|&i| mask.value(i))
                .map(|i| row + i as u32),
        );
        row += batch.num_rows() as u32;
        let hit = datafusion::arrow::compute::filter_record_batch(&batch, &mask)?;
        if hit.num_rows() == 0 {
            continue;
        }
        let values = assignments
            .iter()
            .map(|e| e.evaluate(&hit)?.into_array(hit.num_rows()))
            .collect::<DfResult<Vec<_>>>()?;
        updated.push(RecordBatch::try_new(schema.clone(), values)?);
    }
    Ok((matched, updated))
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
    let stream = read::scan_table_columns(store, url, &meta, schema, &p.columns).await?;
    let mut stream = std::pin::pin!(stream);
    let mut matched = roaring::RoaringBitmap::new();
    let mut row = 0u32;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
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
        let mut updated = Vec::new();
        for seg in &self.base.segments {
            let url = self.store.root().join(&seg.path)?;
            // Rows deleted before are not deleted (or updated) again.
            let old = match &seg.deleted {
                Some(d) => {
                    crate::store::versions::read_deletions(&store, self.store.root(), d).await?
                }
                None => roaring::RoaringBitmap::new(),
            };
            match &self.assignments {
                None => {
                    let rows = matching_rows(
                        &store,
                        &url,
                        seg.manifest.rows,
                        &self.schema,
                        self.predicate.as_ref(),
                    )
                    .await?;
                    deleted.push((seg.path.clone(), rows - &old));
                }
                Some(set) => {
                    let (rows, values) =
                        updated_rows(&store, &url, &self.schema, self.predicate.as_ref(), set)
                            .await?;
                    let live = &rows - &old;
                    updated.extend(keep_live(values, &rows, &live)?);
                    deleted.push((seg.path.clone(), live));
                }
            }
        }
        let name = &self.base.table;
        if self.assignments.is_none() {
            let v = self.store.delete_rows(name, &self.base, deleted).await?;
            return Ok(if v.version == self.base.version {
                0
            } else {
                v.rows_deleted
            });
        }
        let n: u64 = deleted.iter().map(|(_, r)| r.len()).sum();
        if n == 0 {
            return Ok(0);
        }
        let change = crate::store::Change::new(crate::store::versions::Operation::Update, deleted)
            .with_settings(self.write);
        let rows = futures::stream::iter(updated.into_iter().map(Ok));
        let appended = Some((self.schema.clone(), rows));
        self.store
            .commit_change(name, Some(&self.base), change, appended)
            .await?;
        Ok(n)
    }
}

/// Of the new values of the rows `matched` (in row order), those of rows in `live`.
fn keep_live(
    values: Vec<RecordBatch>,
    matched: &roaring::RoaringBitmap,
    live: &roaring::RoaringBitmap,
) -> Result<Vec<RecordBatch>> {
    if matched.len() == live.len() {
        return Ok(values);
    }
    let mut flags = matched.iter().map(|r| live.contains(r));
    values
        .into_iter()
        .map(|b| {
            let mask: BooleanArray = (0..b.num_rows()).map(|_| flags.next()).collect();
            Ok(datafusion::arrow::compute::filter_record_batch(&b, &mask)?)
        })
        .collect()
}

impl DisplayAs for DeleteExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "{}: table={}, version={}, segments={}",
            if self.assignments.is_some() {
                "UpdateExec"
            } else {
                "DeleteExec"
            },
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
            assignments: self.assignments.clone(),
            write: self.write,
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
