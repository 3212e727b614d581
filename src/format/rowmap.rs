//! The rowmap sidecar: index key → row position in the Parquet file, and — for result
//! tables with a key column — the key values in index-key order, so a query that returns
//! only keys and distances never touches the Parquet file.
//!
//! Layout (little endian): magic `JMROWMAP` (8 bytes), version `u32`, flags `u32`, count
//! `u64`, then `count` row positions as `u64`. Index keys are positions in this array.
//! Version 2 with flag bit 0 set appends the key column as an Arrow IPC stream of one
//! column and `count` rows. Version 1 files (no flags, no keys) are still read.

use std::io::Write;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use datafusion::arrow::compute::{concat, take};
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;

use crate::error::{JammiError, Result};

const MAGIC: &[u8; 8] = b"JMROWMAP";
const VERSION: u32 = 2;
const HEADER: usize = 24;
const HAS_KEYS: u32 = 1;

/// A decoded rowmap.
#[derive(Debug, Clone)]
pub struct RowMap {
    /// Row position of each index key.
    pub rows: Vec<u64>,
    /// Key column value of each index key, when the table has a key column.
    pub keys: Option<ArrayRef>,
}

/// Serialises row positions and, optionally, the key column's IPC stream (from
/// [`SpilledKeys::read`]).
pub fn encode(rows: &[u64], keys_ipc: Option<&[u8]>) -> Vec<u8> {
    let extra = keys_ipc.map_or(0, <[u8]>::len);
    let mut out = Vec::with_capacity(HEADER + rows.len() * 8 + extra);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    let flags = if keys_ipc.is_some() { HAS_KEYS } else { 0 };
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&r.to_le_bytes());
    }
    if let Some(k) = keys_ipc {
        out.extend_from_slice(k);
    }
    out
}

/// Parses a rowmap, checking magic, version, length and the key column's row count.
pub fn decode(bytes: &[u8]) -> Result<RowMap> {
    let bad = |reason: String| JammiError::Index(format!("invalid rowmap: {reason}"));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("missing header".into()));
    }
    let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let version = word(8);
    if version == 0 || version > VERSION {
        return Err(bad(format!("unsupported version {version}")));
    }
    let flags = if version >= 2 { word(12) } else { 0 };
    let count = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    let end = count
        .checked_mul(8)
        .and_then(|n| n.checked_add(HEADER))
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| bad(format!("{} bytes for {count} entries", bytes.len())))?;
    let has_keys = flags & HAS_KEYS != 0;
    if !has_keys && end != bytes.len() {
        return Err(bad(format!("{} bytes for {count} entries", bytes.len())));
    }
    let rows = bytes[HEADER..end]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    let keys = if has_keys {
        let reader = StreamReader::try_new(&bytes[end..], None)
            .map_err(|e| bad(format!("key column: {e}")))?;
        let parts = reader
            .map(|b| b.map(|b| b.column(0).clone()))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| bad(format!("key column: {e}")))?;
        let refs: Vec<&dyn datafusion::arrow::array::Array> =
            parts.iter().map(|a| a.as_ref()).collect();
        let keys = match refs.len() {
            0 => return Err(bad("key column: no batches".into())),
            1 => parts[0].clone(),
            _ => concat(&refs).map_err(|e| bad(format!("key column: {e}")))?,
        };
        if keys.len() != count {
            return Err(bad(format!(
                "key column has {} values for {count} entries",
                keys.len()
            )));
        }
        Some(keys)
    } else {
        None
    };
    Ok(RowMap { rows, keys })
}

/// The key values of indexed rows, written to a local temp file as they arrive, so a
/// large table's keys do not sit in memory beside the index being built.
pub struct KeySpill {
    schema: SchemaRef,
    writer: StreamWriter<std::io::BufWriter<std::fs::File>>,
    file: tempfile::NamedTempFile,
}

impl KeySpill {
    /// A spill for values of `field`.
    pub fn new(field: &Field) -> Result<Self> {
        let file = tempfile::NamedTempFile::new()?;
        let schema = Arc::new(Schema::new(vec![field.clone()]));
        let writer = StreamWriter::try_new(std::io::BufWriter::new(file.reopen()?), &schema)?;
        Ok(KeySpill {
            schema,
            writer,
            file,
        })
    }

    /// Appends the keys of rows `rows` of `keys` (all of them when `rows` covers the array).
    pub fn push(&mut self, keys: &ArrayRef, rows: &[usize]) -> Result<()> {
        let values = if rows.len() == keys.len() {
            keys.clone()
        } else {
            let idx = UInt32Array::from_iter_values(rows.iter().map(|&r| r as u32));
            take(keys.as_ref(), &idx, None)?
        };
        let batch = RecordBatch::try_new(self.schema.clone(), vec![values])?;
        self.writer.write(&batch)?;
        Ok(())
    }

    /// Ends the stream; its bytes stay on disk until [`SpilledKeys::read`].
    pub fn finish(mut self) -> Result<SpilledKeys> {
        self.writer.finish()?;
        self.writer.get_mut().flush()?;
        Ok(SpilledKeys(self.file))
    }
}

/// A finished [`KeySpill`]: read it once the index no longer takes memory.
#[derive(Debug)]
pub struct SpilledKeys(tempfile::NamedTempFile);

impl SpilledKeys {
    /// The IPC stream's bytes, for [`encode`].
    pub fn read(&self) -> Result<Vec<u8>> {
        Ok(std::fs::read(self.0.path())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, StringArray};
    use datafusion::arrow::datatypes::DataType;

    #[test]
    fn round_trips_and_rejects_damage() {
        let rows = vec![0, 2, 5, u64::MAX];
        let bytes = encode(&rows, None);
        let decoded = decode(&bytes).unwrap();
        assert_eq!(decoded.rows, rows);
        assert!(decoded.keys.is_none());
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut newer = bytes;
        newer[8] = 9;
        assert!(
            decode(&newer)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }

    #[test]
    fn version_1_files_still_decode() {
        let mut v1 = encode(&[3, 4], None);
        v1[8] = 1;
        assert_eq!(decode(&v1).unwrap().rows, vec![3, 4]);
    }

    #[test]
    fn keys_of_the_indexed_rows_round_trip_in_key_order() {
        let field = Field::new("id", DataType::Utf8, true);
        let mut spill = KeySpill::new(&field).unwrap();
        let a: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), Some("b"), None]));
        let b: ArrayRef = Arc::new(StringArray::from(vec!["c", "d", "e"]));
        spill.push(&a, &[0, 1, 2]).unwrap();
        // Rows 0 and 2 of the second batch had vectors; row 1 did not.
        spill.push(&b, &[0, 2]).unwrap();
        let bytes = encode(
            &[0, 1, 2, 3, 5],
            Some(&spill.finish().unwrap().read().unwrap()),
        );
        let decoded = decode(&bytes).unwrap();
        let keys = decoded.keys.unwrap();
        let keys = keys.as_any().downcast_ref::<StringArray>().unwrap();
        assert_eq!(keys.len(), 5);
        assert_eq!(keys.value(1), "b");
        assert!(keys.is_null(2));
        assert_eq!(keys.value(4), "e");
        // A key section with a row count other than the positions' is refused.
        let short = encode(&[0, 1, 2, 3, 5, 6], Some(&bytes[24 + 5 * 8..]));
        assert!(
            decode(&short)
                .unwrap_err()
                .to_string()
                .contains("5 values for 6 entries")
        );
        // A key section cut short loses values (or its framing): refused either way.
        assert!(decode(&bytes[..bytes.len() - 40]).is_err());
    }
}
