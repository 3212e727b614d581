//! Query results on stdout: a table for people, CSV and JSON lines for programs — through
//! arrow's own writers, so values keep their types (a string stays a string, NULL stays
//! null, lists and structs stay nested in JSON).

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};

use crate::Error;

/// Output format of query results.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Output {
    /// An aligned table.
    Table,
    /// CSV with a header row.
    Csv,
    /// One JSON object per row.
    Json,
}

/// Prints `batches` (one statement's result) in `out`. Statements without columns print
/// nothing.
pub fn print_batches(batches: &[RecordBatch], out: Output) -> Result<(), Error> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    if first.schema().fields().is_empty() {
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut w = stdout.lock();
    match out {
        Output::Table => writeln!(
            w,
            "{}",
            datafusion::arrow::util::pretty::pretty_format_batches(batches)?
        )?,
        Output::Csv => {
            let mut csv = datafusion::arrow::csv::WriterBuilder::new()
                .with_header(true)
                .build(&mut w);
            for b in batches {
                csv.write(&flatten_nested(b)?)?;
            }
        }
        Output::Json => {
            let mut json = datafusion::arrow::json::WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut w);
            for b in batches {
                json.write(b)?;
            }
            json.finish()?;
        }
    }
    w.flush()?;
    Ok(())
}

/// CSV has no nesting: list, struct and map columns are written as their display text.
fn flatten_nested(batch: &RecordBatch) -> Result<RecordBatch, Error> {
    let nested = |t: &DataType| t.is_nested();
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| nested(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let opts = FormatOptions::default();
    let mut fields = Vec::new();
    let mut columns: Vec<ArrayRef> = Vec::new();
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        if !nested(f.data_type()) {
            fields.push(f.as_ref().clone());
            columns.push(c.clone());
            continue;
        }
        let fmt = ArrayFormatter::try_new(c.as_ref(), &opts)?;
        let text: StringArray = (0..c.len())
            .map(|i| (!c.is_null(i)).then(|| fmt.value(i).to_string()))
            .collect();
        fields.push(Field::new(f.name(), DataType::Utf8, true));
        columns.push(Arc::new(text));
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Prints rows of text under `header` (listings of sources and tables).
pub fn print_rows(header: &[&str], rows: &[Vec<String>], out: Output) -> Result<(), Error> {
    let schema = Arc::new(Schema::new(
        header
            .iter()
            .map(|h| Field::new(*h, DataType::Utf8, false))
            .collect::<Vec<_>>(),
    ));
    let cols: Vec<ArrayRef> = (0..header.len())
        .map(|c| {
            Arc::new(StringArray::from_iter_values(
                rows.iter().map(|r| r[c].clone()),
            )) as ArrayRef
        })
        .collect();
    print_batches(&[RecordBatch::try_new(schema, cols)?], out)
}
