//! `LiveRowsExec`: the scan of a result table whose segments have deleted rows, holding
//! which rows of each segment are live.
//!
//! The scan skips a segment's deleted rows by a row selection on its file
//! (`ParquetRowSelection`, a `PartitionedFile` extension). `datafusion-proto` does not
//! carry file extensions, so a plan shipped to another process (a Ballista executor)
//! would read the deleted rows again. This node keeps the selections beside the scan: the
//! physical codec carries them and puts them back on the files when it decodes the plan.
//! It passes everything else through (rows, partitions, order, projections, filters,
//! limits), so a plan with it optimises and runs as the scan alone would.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{Result, Statistics, internal_err};
use datafusion::datasource::physical_plan::parquet::ParquetRowSelection;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfig, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::TaskContext;
use datafusion::parquet::arrow::arrow_reader::RowSelection;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::execution_plan::{ChildrenPropertiesMode, ReplaceChildrenOptions};
use datafusion::physical_plan::filter_pushdown::{FilterDescription, FilterPushdownPhase};
use datafusion::physical_plan::projection::{ProjectionExec, make_with_child};
use datafusion::physical_plan::statistics::{ChildStats, StatisticsArgs};
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PlanProperties, SendableRecordBatchStream,
};

/// The live rows of segments with deletions, by object path.
pub(crate) type Selections = HashMap<object_store::path::Path, RowSelection>;

/// The node (see the module docs).
#[derive(Debug)]
pub struct LiveRowsExec {
    input: Arc<dyn ExecutionPlan>,
    selections: Arc<Selections>,
}

impl LiveRowsExec {
    /// `input` (a scan of the segments) reading only the rows `selections` keeps of each
    /// file it names; the selections are set on `input`'s files.
    pub(crate) fn try_new(
        input: Arc<dyn ExecutionPlan>,
        selections: Arc<Selections>,
    ) -> Result<Self> {
        let input = select(input, &selections)?;
        Ok(LiveRowsExec { input, selections })
    }

    /// The live rows of each file with deletions.
    pub(crate) fn selections(&self) -> &Arc<Selections> {
        &self.selections
    }

    fn wrap(&self, input: Arc<dyn ExecutionPlan>) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(LiveRowsExec::try_new(
            input,
            self.selections.clone(),
        )?))
    }
}

/// `plan` with each file `selections` names reading only its selected rows. A file's
/// statistics go: they count the deleted rows.
fn select(plan: Arc<dyn ExecutionPlan>, selections: &Selections) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|node| {
        let Some(ds) = node.downcast_ref::<DataSourceExec>() else {
            return Ok(Transformed::no(node));
        };
        let Some(config) = ds.data_source().downcast_ref::<FileScanConfig>() else {
            return Ok(Transformed::no(node));
        };
        let groups = config
            .file_groups
            .iter()
            .map(|g| {
                FileGroup::new(
                    g.iter()
                        .map(|f| match selections.get(&f.object_meta.location) {
                            Some(live) => {
                                let mut f = f.clone();
                                f.statistics = None;
                                f.with_extension(ParquetRowSelection::new(live.clone()))
                            }
                            None => f.clone(),
                        })
                        .collect(),
                )
            })
            .collect();
        let table_schema = config.file_source.table_schema().table_schema().clone();
        let config = FileScanConfigBuilder::from(config.clone())
            .with_file_groups(groups)
            .with_statistics(Statistics::new_unknown(&table_schema))
            .build();
        Ok(Transformed::yes(DataSourceExec::from_data_source(config)))
    })
    .map(|t| t.data)
}

impl DisplayAs for LiveRowsExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(
            f,
            "LiveRowsExec: segments_with_deletions={}",
            self.selections.len()
        )
    }
}

impl ExecutionPlan for LiveRowsExec {
    fn name(&self) -> &str {
        "LiveRowsExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn maintains_input_order(&self) -> Vec<bool> {
        vec![true]
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn replace_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
        _options: ReplaceChildrenOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let Some(input) = children.into_iter().next() else {
            return internal_err!("LiveRowsExec has one child");
        };
        self.wrap(input)
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
        self.input.execute(partition, context)
    }

    fn statistics_from_inputs(
        &self,
        input_stats: &[Arc<Statistics>],
        _args: &StatisticsArgs,
    ) -> Result<Arc<Statistics>> {
        match input_stats {
            [s] => Ok(s.clone()),
            _ => Ok(Arc::new(Statistics::new_unknown(&self.schema()))),
        }
    }

    fn child_stats_requests(&self, partition: Option<usize>) -> Vec<ChildStats> {
        vec![ChildStats::At(partition)]
    }

    fn repartitioned(
        &self,
        target_partitions: usize,
        config: &ConfigOptions,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        match self.input.repartitioned(target_partitions, config)? {
            Some(input) => Ok(Some(self.wrap(input)?)),
            None => Ok(None),
        }
    }

    fn try_swapping_with_projection(
        &self,
        projection: &ProjectionExec,
    ) -> Result<Option<Arc<dyn ExecutionPlan>>> {
        if projection.expr().len() >= projection.input().schema().fields().len() {
            return Ok(None);
        }
        Ok(Some(self.wrap(make_with_child(projection, &self.input)?)?))
    }

    fn gather_filters_for_pushdown(
        &self,
        _phase: FilterPushdownPhase,
        parent_filters: Vec<Arc<dyn PhysicalExpr>>,
        _config: &ConfigOptions,
    ) -> Result<FilterDescription> {
        FilterDescription::from_children(parent_filters, &self.children())
    }

    fn supports_limit_pushdown(&self) -> bool {
        true
    }

    fn with_fetch(&self, limit: Option<usize>) -> Option<Arc<dyn ExecutionPlan>> {
        let input = self.input.with_fetch(limit)?;
        self.wrap(input).ok()
    }

    fn fetch(&self) -> Option<usize> {
        self.input.fetch()
    }
}
