//! `INSERT INTO jammi.public.<t>`: DataFusion's `DataSinkExec` streams the rows here, and
//! they become a new segment of the table, committed as its next version.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::sink::DataSink;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::{DisplayAs, DisplayFormatType};
use futures::StreamExt;

use crate::error::JammiError;
use crate::store::versions::Operation;
use crate::store::{Change, ResultStore};

/// The sink of an `INSERT INTO` a result table.
pub(crate) struct AppendSink {
    store: Arc<ResultStore>,
    table: String,
    schema: SchemaRef,
    /// The session's write settings.
    write: crate::store::WriteSettings,
}

impl AppendSink {
    pub(crate) fn new(
        store: Arc<ResultStore>,
        table: String,
        schema: SchemaRef,
        write: crate::store::WriteSettings,
    ) -> Self {
        AppendSink {
            store,
            table,
            schema,
            write,
        }
    }
}

impl fmt::Debug for AppendSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AppendSink({})", self.table)
    }
}

impl DisplayAs for AppendSink {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "AppendSink: table={} (a new segment, the next version)",
            self.table
        )
    }
}

#[async_trait]
impl DataSink for AppendSink {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    async fn write_all(
        &self,
        data: SendableRecordBatchStream,
        _context: &Arc<TaskContext>,
    ) -> datafusion::error::Result<u64> {
        let schema = data.schema();
        let rows = data.map(|b| b.map_err(JammiError::from));
        let change = Change::new(Operation::Append, Vec::new()).with_settings(self.write);
        let v = self
            .store
            .commit_change(&self.table, None, change, Some((schema, rows)))
            .await?;
        Ok(v.rows_added)
    }
}
