//! `SegmentMergeExec`: the global top k of a search over a table's segments.
//!
//! A result table that changed is searched one partition per segment (each a
//! [`VectorSearchExec`](super::exec::VectorSearchExec) partition returning its own top k,
//! nearest first, its rows tagged with their segment's number); this node reads them,
//! coalesced into one partition in any order, and keeps, per query, the k nearest rows by
//! distance — ties in segment order, then in each segment's order — renumbering `_rank`,
//! then keeps the output columns the plan asked for. A distributed engine schedules the
//! partitions below the coalesce as tasks.

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array, UInt64Array,
};
use datafusion::arrow::compute::{concat_batches, take};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::datatypes::{DataType, UInt32Type};
use datafusion::arrow::row::{RowConverter, SortField};
use datafusion::common::{Result, internal_err};
use datafusion::execution::TaskContext;
use datafusion::physical_expr::{EquivalenceProperties, Partitioning};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
    execute_stream_partitioned,
};
use futures::TryStreamExt;

/// Where the merge finds what it orders by, in its input's columns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeColumns {
    /// The distance.
    pub distance: usize,
    /// Nearest first is the largest value (inner products of an `ORDER BY ... DESC`).
    pub descending: bool,
    /// The query key of a batch search.
    pub query_key: Option<usize>,
    /// `_rank` of a batch search.
    pub rank: Option<usize>,
    /// The partition (segment) number of each row ([`PART`](super::exec::PART)): ties
    /// go to the earlier segment whatever order the partitions arrive in.
    pub part: Option<usize>,
}

/// The node (see the module docs).
#[derive(Debug)]
pub struct SegmentMergeExec {
    input: Arc<dyn ExecutionPlan>,
    k: usize,
    columns: MergeColumns,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl SegmentMergeExec {
    /// The top `k` per query of `input`'s partitions, projected to `projection`.
    pub fn try_new(
        input: Arc<dyn ExecutionPlan>,
        k: usize,
        columns: MergeColumns,
        projection: Option<Vec<usize>>,
    ) -> Result<Self> {
        let full = input.schema();
        if let Some(p) = columns.part
            && full.fields().get(p).map(|f| f.data_type()) != Some(&DataType::UInt32)
        {
            return internal_err!("SegmentMergeExec: input column {p} is no segment number");
        }
        let schema = match &projection {
            Some(p) => Arc::new(full.project(p)?),
            None => full,
        };
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Ok(SegmentMergeExec {
            input,
            k,
            columns,
            projection,
            schema,
            properties,
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    /// Rows per query kept.
    pub fn k(&self) -> usize {
        self.k
    }

    /// What the merge orders by.
    pub fn columns(&self) -> &MergeColumns {
        &self.columns
    }

    /// Output columns kept, as indices into the input's.
    pub fn projection(&self) -> Option<&[usize]> {
        self.projection.as_deref()
    }
}

/// The rows to keep, in order: per query (in order of first appearance), the `k` nearest.
fn top_k(all: &RecordBatch, k: usize, c: &MergeColumns) -> Result<Vec<u64>> {
    let distance = all.column(c.distance);
    let field = SortField::new_with_options(
        distance.data_type().clone(),
        datafusion::arrow::compute::SortOptions::new(c.descending, c.descending),
    );
    let rows = RowConverter::new(vec![field])?.convert_columns(std::slice::from_ref(distance))?;
    let part = c.part.map(|p| all.column(p).as_primitive::<UInt32Type>());
    let part_of = |i: usize| part.map_or(0, |p| p.value(i));
    // The rows in segment order (partitions arrive in any order; each keeps its own).
    let mut in_segment_order: Vec<usize> = (0..all.num_rows()).collect();
    in_segment_order.sort_by_key(|&i| (part_of(i), i));
    // Query of each row: its position among the distinct keys, as first seen in segment
    // order.
    let query_of: Vec<usize> = match c.query_key {
        None => vec![0; all.num_rows()],
        Some(key) => {
            let keys =
                RowConverter::new(vec![SortField::new(all.column(key).data_type().clone())])?
                    .convert_columns(&[all.column(key).clone()])?;
            let mut seen: Vec<datafusion::arrow::row::OwnedRow> = Vec::new();
            let mut query_of = vec![0; all.num_rows()];
            for &i in &in_segment_order {
                let r = keys.row(i);
                query_of[i] = match seen.iter().position(|s| s.row() == r) {
                    Some(q) => q,
                    None => {
                        seen.push(r.owned());
                        seen.len() - 1
                    }
                };
            }
            query_of
        }
    };
    let mut order: Vec<usize> = (0..all.num_rows()).collect();
    // Within a partition rows arrive in its order: the position breaks the last tie.
    order.sort_by(|&a, &b| {
        query_of[a]
            .cmp(&query_of[b])
            .then(rows.row(a).cmp(&rows.row(b)))
            .then(part_of(a).cmp(&part_of(b)))
            .then(a.cmp(&b))
    });
    let mut kept = Vec::new();
    let mut taken = 0;
    for (i, &row) in order.iter().enumerate() {
        if i > 0 && query_of[order[i - 1]] != query_of[row] {
            taken = 0;
        }
        if taken < k {
            kept.push(row as u64);
            taken += 1;
        }
    }
    Ok(kept)
}

impl DisplayAs for SegmentMergeExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        // The segments are the search's (its partitions arrive coalesced).
        write!(f, "SegmentMergeExec: k={}", self.k)
    }
}

impl ExecutionPlan for SegmentMergeExec {
    fn name(&self) -> &str {
        "SegmentMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    /// One partition: the segments' partitions coalesced below, so each segment's search
    /// is a task of its own (locally, and on a cluster a stage of one task per segment).
    fn required_input_distribution(&self) -> Vec<datafusion::physical_plan::Distribution> {
        vec![datafusion::physical_plan::Distribution::SinglePartition]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(
            &Arc<dyn datafusion::physical_expr::PhysicalExpr>,
        ) -> Result<datafusion::common::tree_node::TreeNodeRecursion>,
    ) -> Result<datafusion::common::tree_node::TreeNodeRecursion> {
        Ok(datafusion::common::tree_node::TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return internal_err!("SegmentMergeExec has one child");
        };
        Ok(Arc::new(SegmentMergeExec::try_new(
            input,
            self.k,
            self.columns.clone(),
            self.projection.clone(),
        )?))
    }

    #[allow(deprecated)]
    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.replace_children(
            children,
            ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute),
        )
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("SegmentMergeExec has one partition, asked for {partition}");
        }
        let (input, k, columns) = (self.input.clone(), self.k, self.columns.clone());
        let (projection, schema) = (self.projection.clone(), self.schema.clone());
        let baseline = BaselineMetrics::new(&self.metrics, partition);
        let run = async move {
            let full = input.schema();
            // One partition below (coalesced segments) in a planned query; a plan built by
            // hand may hand over every segment's partition: each runs as a task of its own
            // (a search is CPU-bound work: in one task the partitions would take turns).
            let streams = execute_stream_partitioned(input, context)?;
            let tasks: Vec<_> = streams
                .into_iter()
                .map(|s| {
                    datafusion::common::runtime::SpawnedTask::spawn(
                        s.try_collect::<Vec<RecordBatch>>(),
                    )
                })
                .collect();
            let mut parts = Vec::with_capacity(tasks.len());
            for t in tasks {
                parts.push(t.join_unwind().await.map_err(|e| {
                    datafusion::error::DataFusionError::Execution(format!(
                        "a segment's search task failed: {e}"
                    ))
                })??);
            }
            let batches: Vec<RecordBatch> = parts.into_iter().flatten().collect();
            let all = concat_batches(&full, &batches)?;
            let kept = UInt64Array::from(top_k(&all, k, &columns)?);
            let mut arrays: Vec<ArrayRef> = all
                .columns()
                .iter()
                .map(|c| take(c.as_ref(), &kept, None))
                .collect::<std::result::Result<_, _>>()?;
            if let Some(r) = columns.rank {
                arrays[r] = Arc::new(ranks(&arrays, &columns));
            }
            let rows = kept.len();
            let arrays = match &projection {
                Some(p) => p.iter().map(|&i| arrays[i].clone()).collect(),
                None => arrays,
            };
            // With no column kept (`count(*)`), the batch still carries its row count.
            let out = RecordBatch::try_new_with_options(
                schema.clone(),
                arrays,
                &RecordBatchOptions::new().with_row_count(Some(rows)),
            )?;
            baseline.record_output(out.num_rows());
            Ok(out)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            self.schema.clone(),
            futures::stream::once(run),
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// `_rank` of the kept rows: 1, 2, ... within each query's run.
fn ranks(arrays: &[ArrayRef], c: &MergeColumns) -> UInt32Array {
    let n = arrays.first().map_or(0, |a| a.len());
    let mut out = Vec::with_capacity(n);
    let key = c.query_key.map(|k| &arrays[k]);
    let mut rank = 0u32;
    for i in 0..n {
        let same = i > 0
            && key.is_some_and(|k| {
                datafusion::common::ScalarValue::try_from_array(k, i).ok()
                    == datafusion::common::ScalarValue::try_from_array(k, i - 1).ok()
            });
        rank = if same { rank + 1 } else { 1 };
        out.push(rank);
    }
    UInt32Array::from(out)
}
