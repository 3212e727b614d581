//! Table versions: a result table that changed is the list of segments its latest version
//! record names.
//!
//! A table written once is version 0: `<name>.parquet` and its sidecars, committed by
//! `<name>.idx.manifest.json` (the seed's layout, unchanged). Each change commits the next
//! version as `<name>.jammi/versions/<20 digits>.json`, written create-only: the number is
//! the lock, so of two writers racing for it exactly one lands, and the other re-reads
//! and tries the next. The digits are `u64::MAX - N`, so a listing (lexicographic on
//! every cloud store) names the latest first: opening the latest version is one LIST
//! page and one GET whatever the number of versions. Segments other than version 0's
//! live under `<name>.jammi/segments/` as tables of their own (`<id>.parquet`, its
//! sidecars and manifest, written and committed like any result table), so a record
//! names only objects whose own manifests prove jammi-db wrote them.

use std::sync::Arc;

use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::format::manifest::Manifest;
use crate::format::naming::{self, Siblings};
use crate::storage::{Scheme, StorageUrl};

/// Version record format this build writes (and the newest it reads).
pub const VERSION_FORMAT: u32 = 1;

/// What a version changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// Rows appended as new segments.
    Append,
    /// Rows deleted: new deletion files.
    Delete,
    /// Rows changed: deletions plus a segment of their new values.
    Update,
    /// An upsert: deletions plus a segment of updated and inserted rows.
    Merge,
    /// Segments rewritten into fewer (their live rows, the same answers).
    Compact,
}

/// The deleted rows of a segment: a Roaring bitmap of row positions, written once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletionRef {
    /// The file, relative to the root (`<name>.jammi/deletions/<segment>-<version>-<hex>.roaring`).
    pub path: String,
    /// Rows it deletes.
    pub rows: u64,
    /// Its size in bytes.
    pub size: u64,
    /// Its CRC32C.
    pub crc32c: u32,
}

/// One segment of a version: a committed table of its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentRef {
    /// Its Parquet file, relative to the root (`<name>.parquet` for version 0's segment,
    /// `<name>.jammi/segments/<id>.parquet` otherwise).
    pub path: String,
    /// Its manifest as committed (sizes and checksums of its files).
    pub manifest: Manifest,
    /// Its deleted rows, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<DeletionRef>,
}

impl SegmentRef {
    /// Live rows of the segment.
    pub fn rows(&self) -> u64 {
        self.manifest.rows - self.deleted.as_ref().map_or(0, |d| d.rows)
    }
}

/// A version record (see the module docs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableVersion {
    /// Record format ([`VERSION_FORMAT`]).
    pub format_version: u32,
    /// The table.
    pub table: String,
    /// Its number (version 0 is the table as first written).
    pub version: u64,
    /// Commit time, Unix milliseconds.
    pub created_ms: i64,
    /// Random id of the committing operation (tells a lost response's record apart).
    pub writer: String,
    /// What it changed.
    pub operation: Operation,
    /// Rows the change added.
    pub rows_added: u64,
    /// Rows the change deleted.
    #[serde(default)]
    pub rows_deleted: u64,
    /// The table's segments at this version, in order.
    pub segments: Vec<SegmentRef>,
}

impl TableVersion {
    /// Rows of the table at this version.
    pub fn rows(&self) -> u64 {
        self.segments.iter().map(SegmentRef::rows).sum()
    }

    /// Commit time as RFC 3339 UTC (`None` for version 0, whose manifest has it).
    pub fn created_at(&self) -> Option<String> {
        (self.version > 0)
            .then(|| chrono::DateTime::from_timestamp_millis(self.created_ms))
            .flatten()
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
    }

    /// Version 0 of a table written once: its one segment.
    pub fn initial(table: &str, manifest: Manifest) -> Self {
        TableVersion {
            format_version: VERSION_FORMAT,
            table: table.to_string(),
            version: 0,
            created_ms: 0,
            writer: manifest.writer.clone().unwrap_or_default(),
            operation: Operation::Append,
            rows_added: manifest.rows,
            rows_deleted: 0,
            segments: vec![SegmentRef {
                path: format!("{table}{}", naming::PARQUET_SUFFIX),
                manifest,
                deleted: None,
            }],
        }
    }

    fn from_json(table: &str, url: &StorageUrl, bytes: &[u8]) -> Result<Self> {
        let damaged = |reason: String| JammiError::Corrupt {
            kind: "result table",
            table: table.to_string(),
            reason: format!("{}: {reason}", url.file_name()),
        };
        let v: TableVersion = serde_json::from_slice(bytes)
            .map_err(|e| damaged(format!("version record is not valid: {e}")))?;
        if v.format_version > VERSION_FORMAT {
            return Err(damaged(format!(
                "version record format {} is newer than this build understands ({VERSION_FORMAT})",
                v.format_version
            )));
        }
        if v.table != table {
            return Err(damaged(format!("it records table '{}'", v.table)));
        }
        for s in &v.segments {
            check_segment_path(table, &s.path).map_err(damaged)?;
            if let Some(d) = &s.deleted {
                let own = format!("{}deletions/", table_dir(table));
                if d.path.strip_prefix(&own).is_none_or(|f| f.contains('/')) {
                    return Err(damaged(format!(
                        "it names {}, which is not one of table {table}'s deletion files",
                        d.path
                    )));
                }
            }
        }
        Ok(v)
    }
}

/// A segment's path must be the table's own: version 0's file or one under its
/// `segments/` directory whose manifest records that very segment.
fn check_segment_path(table: &str, path: &str) -> std::result::Result<(), String> {
    let base = format!("{table}{}", naming::PARQUET_SUFFIX);
    if path == base {
        return Ok(());
    }
    let own = segments_prefix(table);
    match path.strip_prefix(&own) {
        Some(file) if !file.contains('/') && file.ends_with(naming::PARQUET_SUFFIX) => Ok(()),
        _ => Err(format!(
            "it names {path}, which is not one of table {table}'s segments"
        )),
    }
}

/// `<name>.jammi/`: everything a table adds after version 0.
pub fn table_dir(table: &str) -> String {
    format!("{table}.jammi/")
}

fn versions_prefix(table: &str) -> String {
    format!("{}versions/", table_dir(table))
}

/// Where a table's later segments live, relative to the root.
pub fn segments_prefix(table: &str) -> String {
    format!("{}segments/", table_dir(table))
}

/// First line of a deletion file: what proves it jammi-db's when no record names it.
const DELETIONS_MAGIC: &[u8] = b"JAMMI-DELETIONS 1\n";

/// Who wrote a deletion file, from its second line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeletionsHeader {
    pub table: String,
    pub segment: String,
    pub version: u64,
    pub writer: String,
}

/// The header and the bitmap bytes of a deletion file (`None` header: not one of ours,
/// or one written before files carried it — a bare bitmap).
pub(crate) fn split_deletions(bytes: &[u8]) -> (Option<DeletionsHeader>, &[u8]) {
    let Some(rest) = bytes.strip_prefix(DELETIONS_MAGIC) else {
        return (None, bytes);
    };
    let Some(end) = rest.iter().position(|b| *b == b'\n') else {
        return (None, bytes);
    };
    match serde_json::from_slice(&rest[..end]) {
        Ok(h) => (Some(h), &rest[end + 1..]),
        Err(_) => (None, bytes),
    }
}

/// A deletion file about to be written: where, its bytes, and its record.
pub(crate) struct NewDeletions {
    pub bytes: Vec<u8>,
    pub entry: DeletionRef,
}

/// The deletion file of the deleted rows `rows` of segment `segment` for version `version`
/// by `writer`, under a fresh name, behind a header naming all four.
pub(crate) fn new_deletions(
    table: &str,
    segment: &str,
    version: u64,
    writer: &str,
    rows: &roaring::RoaringBitmap,
) -> Result<NewDeletions> {
    let header = DeletionsHeader {
        table: table.to_string(),
        segment: segment.to_string(),
        version,
        writer: writer.to_string(),
    };
    let mut bytes = DELETIONS_MAGIC.to_vec();
    serde_json::to_writer(&mut bytes, &header).expect("headers serialise");
    bytes.push(b'\n');
    rows.serialize_into(&mut bytes)?;
    let path = format!(
        "{}{segment}-{version}-{}.roaring",
        deletions_prefix(table),
        crate::store::lease::random_hex(4)
    );
    let entry = DeletionRef {
        path,
        rows: rows.len(),
        size: bytes.len() as u64,
        crc32c: crc32c::crc32c(&bytes),
    };
    Ok(NewDeletions { bytes, entry })
}

/// Writes `d` create-only.
pub(crate) async fn put_deletions(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    d: NewDeletions,
) -> Result<DeletionRef> {
    let url = root.join(&d.entry.path)?;
    store
        .put_opts(
            &url.object_path()?,
            PutPayload::from(d.bytes),
            PutOptions::from(PutMode::Create),
        )
        .await
        .map_err(|e| JammiError::storage(&url, e))?;
    Ok(d.entry)
}

/// `<name>.jammi/deletions/`.
pub(crate) fn deletions_prefix(table: &str) -> String {
    format!("{}deletions/", table_dir(table))
}

/// What a commit is about to write beside its version record, recorded first (create-only)
/// so the files of a commit that never lands are proven jammi-db's:
/// `<name>.jammi/deletions/<version>-<writer>.intent.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Intent {
    pub format_version: u32,
    pub table: String,
    pub version: u64,
    pub writer: String,
    /// The deletion files, by name under the deletions directory.
    pub files: Vec<crate::store::lease::OwnedObject>,
}

/// The suffix of intent records.
pub(crate) const INTENT_SUFFIX: &str = ".intent.json";

/// Records, create-only, the deletion files `files` version `version` by `writer` is about
/// to write; returns the record's URL.
pub(crate) async fn put_intent(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    table: &str,
    version: u64,
    writer: &str,
    files: &[&DeletionRef],
) -> Result<StorageUrl> {
    let intent = Intent {
        format_version: 1,
        table: table.to_string(),
        version,
        writer: writer.to_string(),
        files: files
            .iter()
            .map(|d| crate::store::lease::OwnedObject {
                name: d.path.rsplit('/').next().unwrap_or(&d.path).to_string(),
                size: d.size,
                crc32c: d.crc32c,
                e_tag: None,
            })
            .collect(),
    };
    let url = root.join(&format!(
        "{}{version}-{writer}{INTENT_SUFFIX}",
        deletions_prefix(table)
    ))?;
    let body = serde_json::to_vec_pretty(&intent).expect("intents serialise");
    store
        .put_opts(
            &url.object_path()?,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await
        .map_err(|e| JammiError::storage(&url, e))?;
    Ok(url)
}

/// Reads a deletion file, checked against its record.
pub(crate) async fn read_deletions(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    d: &DeletionRef,
) -> Result<roaring::RoaringBitmap> {
    read_deletions_at(store, &root.join(&d.path)?, d).await
}

/// Reads the deletion file at `url`, checked against its record `d`.
pub(crate) async fn read_deletions_at(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    d: &DeletionRef,
) -> Result<roaring::RoaringBitmap> {
    let url = url.clone();
    let bytes = store
        .get(&url.object_path()?)
        .await
        .map_err(|e| JammiError::storage(&url, e))?
        .bytes()
        .await
        .map_err(|e| JammiError::storage(&url, e))?;
    let damaged = |reason: String| JammiError::Corrupt {
        kind: "result table",
        table: url.to_string(),
        reason,
    };
    if bytes.len() as u64 != d.size || crc32c::crc32c(&bytes) != d.crc32c {
        return Err(damaged(format!(
            "{} does not match its version record's size and checksum",
            url.file_name()
        )));
    }
    roaring::RoaringBitmap::deserialize_from(split_deletions(&bytes).1)
        .map_err(|e| damaged(format!("{} is not a deletion file: {e}", url.file_name())))
}

/// The record name of version `n` (sorts the latest first).
fn record_name(n: u64) -> String {
    format!("{:020}.json", u64::MAX - n)
}

fn version_of_record(file: &str) -> Option<u64> {
    let digits = file.strip_suffix(".json")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse::<u64>().ok())
        .flatten()
        .map(|inv| u64::MAX - inv)
}

/// The siblings of segment `id` of `table`.
pub(crate) fn segment_siblings(root: &StorageUrl, table: &str, id: &str) -> Result<Siblings> {
    Siblings::table(&root.join(&segments_prefix(table))?, id)
}

/// The latest version number recorded under `root` for `table`, if any (one LIST page on
/// stores that list in order; the whole listing on a local disk, which is one directory).
pub(crate) async fn latest_number(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    table: &str,
) -> Result<Option<u64>> {
    let prefix = root.join(&versions_prefix(table))?;
    let mut listed = store.list(Some(&prefix.object_path()?));
    let ordered = !matches!(root.scheme(), Scheme::File);
    let mut latest: Option<u64> = None;
    while let Some(m) = listed.next().await {
        let m = m.map_err(|e| JammiError::storage(&prefix, e))?;
        let Some(n) = m.location.filename().and_then(version_of_record) else {
            continue;
        };
        latest = Some(latest.map_or(n, |l| l.max(n)));
        if ordered {
            break;
        }
    }
    Ok(latest)
}

/// Reads version `n`'s record (`None`: there is none).
pub(crate) async fn read(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    table: &str,
    n: u64,
) -> Result<Option<TableVersion>> {
    let url = root.join(&format!("{}{}", versions_prefix(table), record_name(n)))?;
    match store.get(&url.object_path()?).await {
        Ok(got) => {
            let bytes = got
                .bytes()
                .await
                .map_err(|e| JammiError::storage(&url, e))?;
            TableVersion::from_json(table, &url, &bytes).map(Some)
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(JammiError::storage(&url, e)),
    }
}

/// The latest version of `table` (version 0 from `base`, its manifest, when it never
/// changed).
pub(crate) async fn latest(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    table: &str,
    base: impl FnOnce() -> Manifest,
) -> Result<TableVersion> {
    match latest_number(store, root, table).await? {
        Some(n) => read(store, root, table, n)
            .await?
            .ok_or_else(|| JammiError::NotFound {
                kind: "table version",
                name: format!("{table} version {n}"),
            }),
        None => Ok(TableVersion::initial(table, base())),
    }
}

/// Every version record of `table` under `root`, as (URL, record), oldest first. Objects
/// under the versions prefix that are not records of this table are left out (and so are
/// never acted on).
pub(crate) async fn all(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    table: &str,
) -> Result<Vec<(StorageUrl, TableVersion)>> {
    let prefix = root.join(&versions_prefix(table))?;
    let mut listed = store.list(Some(&prefix.object_path()?));
    let mut numbers = Vec::new();
    while let Some(m) = listed.next().await {
        let m = m.map_err(|e| JammiError::storage(&prefix, e))?;
        if let Some(n) = m.location.filename().and_then(version_of_record) {
            numbers.push(n);
        }
    }
    numbers.sort_unstable();
    let mut out = Vec::new();
    for n in numbers {
        let url = root.join(&format!("{}{}", versions_prefix(table), record_name(n)))?;
        match read(store, root, table, n).await {
            Ok(Some(v)) if v.version == n => out.push((url, v)),
            Ok(_) => {}
            Err(e @ JammiError::Corrupt { .. }) => tracing::warn!("{e}; left as it is"),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// How a commit of a version ended.
#[derive(Debug)]
pub(crate) enum Committed {
    /// The record landed.
    Yes,
    /// Another writer took that number first.
    Taken,
}

/// Publishes `v` create-only. A lost response is settled by reading the record back: it
/// landed iff it holds this writer's id.
pub(crate) async fn commit(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    v: &TableVersion,
) -> Result<Committed> {
    let url = root.join(&format!(
        "{}{}",
        versions_prefix(&v.table),
        record_name(v.version)
    ))?;
    let body = serde_json::to_vec_pretty(v).expect("version records serialise");
    let put = store
        .put_opts(
            &url.object_path()?,
            PutPayload::from(body),
            PutOptions::from(PutMode::Create),
        )
        .await;
    match put {
        Ok(_) => Ok(Committed::Yes),
        Err(object_store::Error::AlreadyExists { .. }) => {
            match read(store, root, &v.table, v.version).await? {
                Some(there) if there.writer == v.writer => Ok(Committed::Yes),
                _ => Ok(Committed::Taken),
            }
        }
        Err(e) => match read(store, root, &v.table, v.version).await {
            Ok(Some(there)) if there.writer == v.writer => Ok(Committed::Yes),
            Ok(Some(_)) => Ok(Committed::Taken),
            _ => Err(JammiError::storage(&url, e)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_names_sort_the_latest_first_and_parse_back() {
        let names: Vec<String> = [0u64, 1, 9, 10, 10_000]
            .iter()
            .map(|n| record_name(*n))
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, names.iter().rev().cloned().collect::<Vec<_>>());
        for n in [0u64, 1, 10_000, u64::MAX - 1] {
            assert_eq!(version_of_record(&record_name(n)), Some(n));
        }
        assert_eq!(version_of_record("notes.json"), None);
        assert_eq!(version_of_record("0001.json"), None);
    }

    #[test]
    fn a_record_naming_another_tables_file_is_refused() {
        assert!(check_segment_path("t", "t.parquet").is_ok());
        assert!(check_segment_path("t", "t.jammi/segments/1-ab.parquet").is_ok());
        for bad in [
            "u.parquet",
            "t.jammi/segments/../../u.parquet",
            "t.jammi/x/1.parquet",
            "../t.parquet",
        ] {
            assert!(check_segment_path("t", bad).is_err(), "{bad}");
        }
    }
}
