//! The commit record of a result table or of the sidecars of an existing Parquet file:
//! written last, create-only, and the only thing that makes a table visible. It pins every
//! sibling's size and CRC32C (and the store's ETag/version where it has one), names the
//! write that committed it, and says which files jammi-db wrote: an indexed file's Parquet
//! is the user's and is never removed.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::format::Metric;
use crate::format::naming::Siblings;

/// Current manifest format version (2 adds `writer`, `kind` and store versions of files;
/// 3 a quantised index and its `vectors` file, written only by quantised tables so every
/// other manifest stays readable by builds that know 2). Readers refuse newer versions.
pub const FORMAT_VERSION: u32 = 3;

/// The version a manifest of an index of `quantization` (if any) is written with.
pub(crate) fn format_version_for(quantization: Option<super::Quantization>) -> u32 {
    match quantization {
        Some(q) if q != super::Quantization::F32 => FORMAT_VERSION,
        _ => 2,
    }
}

/// What a manifest commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableKind {
    /// A result table: jammi-db wrote the Parquet file and the sidecars.
    ResultTable,
    /// Sidecars of a Parquet file jammi-db did not write.
    IndexedFile,
}

/// Role of a sibling object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileRole {
    /// The rows.
    Parquet,
    /// USearch graph.
    Index,
    /// Index key → row position.
    Rowmap,
    /// The exact vectors of a quantised index (`f32`, little-endian, by index key).
    Vectors,
}

/// One committed sibling.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// What the file is.
    pub role: FileRole,
    /// Object name relative to the table's directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the whole object (Castagnoli, as used by GCS and S3 checksums).
    pub crc32c: u32,
    /// The store's ETag of the object when it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
    /// The store's version of the object when it was recorded (GCS generation, S3 version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// Parameters of the USearch index beside the Parquet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IndexInfo {
    /// Vector column.
    pub column: String,
    /// Dimensions.
    pub dimensions: usize,
    /// Distance metric.
    pub metric: Metric,
    /// Scalar type the graph stores its vectors in (`f32`, `f16`, `i8`, `b1`).
    pub quantization: super::Quantization,
    /// HNSW connectivity (M).
    pub connectivity: usize,
    /// HNSW expansion at build time (ef_construction).
    pub expansion_add: usize,
    /// Default HNSW expansion at search time (ef).
    pub expansion_search: usize,
    /// Number of vectors in the index (rows whose vector was not NULL).
    pub vectors: u64,
    /// USearch version that wrote the index.
    pub usearch_version: String,
}

/// The commit record `<name>.idx.manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Manifest format version.
    pub format_version: u32,
    /// Table name.
    pub table: String,
    /// Commit time, RFC 3339 UTC.
    pub created_at: String,
    /// Id of the write that committed it (its lease id); absent in format 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writer: Option<String>,
    /// What is committed; absent in format 1, whose Parquet file is then never removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<TableKind>,
    /// Source name the rows came from.
    pub source: Option<String>,
    /// Task (e.g. `text_embedding`).
    pub task: Option<String>,
    /// Model id.
    pub model: Option<String>,
    /// Key column, if the job declared one.
    pub key_column: Option<String>,
    /// Row count of the Parquet file.
    pub rows: u64,
    /// Arrow schema of the rows, as Arrow IPC bytes in hex (exact types, incl. nested).
    pub schema_ipc: String,
    /// Index parameters, when the table has a vector index.
    pub index: Option<IndexInfo>,
    /// Every sibling, with size and checksum.
    pub files: Vec<FileEntry>,
    /// Bytes of rows per segment the table's later writes add (`jammi.segment_max_bytes`
    /// when it was created); absent: the writer's setting.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment_max_bytes: Option<u64>,
    /// Arrow in-memory bytes of the rows written (what a segment budget counts); absent in
    /// files written before it was recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub row_bytes: Option<u64>,
}

impl Manifest {
    /// Parses and checks the format version.
    pub fn from_json(table: &str, bytes: &[u8]) -> Result<Manifest> {
        let invalid = |e: serde_json::Error| JammiError::Corrupt {
            kind: "table",
            table: table.to_string(),
            reason: format!("manifest is not valid: {e}"),
        };
        // The version first: a newer format may hold what this build cannot parse.
        #[derive(Deserialize)]
        struct Version {
            format_version: u32,
        }
        let v: Version = serde_json::from_slice(bytes).map_err(invalid)?;
        if v.format_version > FORMAT_VERSION {
            return Err(JammiError::Corrupt {
                kind: "table",
                table: table.to_string(),
                reason: format!(
                    "manifest format version {} is newer than this build understands ({FORMAT_VERSION})",
                    v.format_version
                ),
            });
        }
        serde_json::from_slice(bytes).map_err(invalid)
    }

    /// Serialised form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("manifest serialises")
    }

    /// The entry of a role.
    pub fn file(&self, role: FileRole) -> Option<&FileEntry> {
        self.files.iter().find(|f| f.role == role)
    }

    /// What the manifest commits, as errors name it: "result table" or "indexed file".
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            Some(TableKind::IndexedFile) => "indexed file",
            _ => "result table",
        }
    }

    /// Checks that every file the manifest records is one of `siblings` — the Parquet
    /// file, the graph and the rowmap named from its own stem — and that it names the
    /// table of that stem. A manifest naming any other object (a copy of another table's
    /// manifest, a hand-edited one) is a damaged table: nothing may act on what it names.
    pub fn check_names(&self, siblings: &Siblings) -> Result<()> {
        let damaged = |reason: String| {
            Err(JammiError::Corrupt {
                kind: self.kind_name(),
                table: siblings.stem.clone(),
                reason,
            })
        };
        // The table a manifest records is its Parquet file's stem (which the sidecars of
        // the older naming do not share).
        let parquet = siblings.parquet.file_name();
        let stem = crate::format::naming::sidecar_stem(&parquet);
        if self.table != stem {
            let other = match self.kind_name() {
                "indexed file" => "file",
                _ => "table",
            };
            return damaged(format!(
                "its manifest {} records table '{}', not '{stem}' (a copy of another \
                 {other}'s manifest?); nothing it names is used or removed",
                siblings.manifest.file_name(),
                self.table,
            ));
        }
        for f in &self.files {
            let own = match f.role {
                FileRole::Parquet => siblings.parquet.file_name(),
                FileRole::Index => siblings.index.file_name(),
                FileRole::Rowmap => siblings.rowmap.file_name(),
                FileRole::Vectors => siblings.vectors.file_name(),
            };
            if f.name != own {
                return damaged(format!(
                    "its manifest names {} as its {} file, not {own}; nothing it names is \
                     used or removed",
                    f.name,
                    format!("{:?}", f.role).to_lowercase()
                ));
            }
        }
        Ok(())
    }

    /// Whether jammi-db wrote `entry` (and so may remove it): sidecars always; the Parquet
    /// file only of result tables recorded as such.
    pub fn owns(&self, entry: &FileEntry) -> bool {
        entry.role != FileRole::Parquet || self.kind == Some(TableKind::ResultTable)
    }

    /// The Arrow schema of the rows.
    pub fn schema(&self) -> Result<SchemaRef> {
        decode_schema(&self.schema_ipc).map_err(|reason| JammiError::Corrupt {
            kind: self.kind_name(),
            table: self.table.clone(),
            reason,
        })
    }
}

/// Arrow schema → IPC bytes → hex.
pub fn encode_schema(schema: &Schema) -> String {
    use datafusion::arrow::ipc::writer::StreamWriter;
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, schema).expect("schema encodes");
        w.finish().expect("schema encodes");
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hex → IPC bytes → Arrow schema.
pub fn decode_schema(hex: &str) -> std::result::Result<SchemaRef, String> {
    use datafusion::arrow::ipc::reader::StreamReader;
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return Err("schema is not valid hex".into());
    }
    let bytes: std::result::Result<Vec<u8>, String> = digits
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| "schema is not valid hex".to_string())
        })
        .collect();
    let bytes = bytes?;
    let r = StreamReader::try_new(std::io::Cursor::new(bytes), None)
        .map_err(|e| format!("schema is not valid Arrow IPC: {e}"))?;
    Ok(Arc::clone(&r.schema()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schema_that_is_not_hex_is_an_error_not_a_panic() {
        for bad in ["aéa", "zz", "abc", "00"] {
            assert!(decode_schema(bad).is_err(), "{bad}");
        }
        let schema = Schema::new(vec![datafusion::arrow::datatypes::Field::new(
            "a",
            datafusion::arrow::datatypes::DataType::Int64,
            true,
        )]);
        assert_eq!(
            decode_schema(&encode_schema(&schema)).unwrap().as_ref(),
            &schema
        );
    }
}
