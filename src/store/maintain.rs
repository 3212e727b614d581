//! Compaction and vacuum of result tables that changed. Compaction rewrites the live rows
//! of small segments and of segments with many deletions into fewer, larger ones under a
//! new version (the answers of every query stay the same). Vacuum removes the files only
//! versions past a retention use — each proven jammi-db's by the record that names it —
//! and what commits that never landed left, once older than the retention: segments (each
//! proven by its own manifest) and deletion files (each recorded by the commit's intent).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use datafusion::arrow::array::{BooleanArray, UInt64Array};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::{ObjectStore, ObjectStoreExt};

use super::versions::{self, Operation, SegmentRef, TableVersion};
use super::{Change, ResultStore, delete_if_present, delete_sidecars, lease, read, txn};
use crate::error::{JammiError, Result};
use crate::format::manifest::{FileRole, Manifest};
use crate::format::naming;

/// Default retention of `vacuum`: versions replaced more recently stay readable.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// What `compact` rewrites.
#[derive(Debug, Clone)]
pub struct CompactOptions {
    /// Size of the segments it writes (`None`: the table's own budget, else the store's).
    pub segment_max_bytes: Option<u64>,
    /// A segment with at least this fraction of its rows deleted is rewritten.
    pub deleted_fraction: f64,
}

impl Default for CompactOptions {
    fn default() -> Self {
        CompactOptions {
            segment_max_bytes: None,
            deleted_fraction: 0.1,
        }
    }
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactReport {
    /// The version it committed (`None`: nothing needed rewriting).
    pub version: Option<u64>,
    /// Segments before and after.
    pub segments_before: usize,
    /// Segments after (the same as before when nothing was rewritten).
    pub segments_after: usize,
    /// Segments rewritten.
    pub rewritten: usize,
    /// Live rows rewritten.
    pub rows: u64,
}

/// What a vacuum removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VacuumReport {
    /// Files, relative to the root.
    pub removed: Vec<String>,
    /// Version records removed (their versions can no longer be read).
    pub versions_removed: Vec<u64>,
    /// Whether nothing was actually removed.
    pub dry_run: bool,
}

impl ResultStore {
    /// Rewrites the small segments of result table `name` (under half the segment budget)
    /// and those with at least `deleted_fraction` of their rows deleted into segments of
    /// about the budget, committed as a new version — when at least two qualify, or one
    /// with deletions. Racing writers that delete rows of those segments make it (or them)
    /// fail with a conflict; appends commute.
    pub async fn compact(&self, name: &str, options: &CompactOptions) -> Result<CompactReport> {
        let manifest = self.manifest(name).await?;
        let store = self.object_store().await?;
        let base = versions::latest(&store, self.root(), name, || manifest.clone()).await?;
        let budget = self.budget_of(options.segment_max_bytes, &manifest)?;
        let picked: Vec<SegmentRef> = base
            .segments
            .iter()
            .filter(|s| worth_rewriting(s, budget, options.deleted_fraction))
            .cloned()
            .collect();
        let before = base.segments.len();
        if picked.len() < 2 && !picked.iter().any(|s| s.deleted.is_some()) {
            return Ok(CompactReport {
                version: None,
                segments_before: before,
                segments_after: before,
                rewritten: 0,
                rows: 0,
            });
        }
        let (rewritten, rows) = (
            picked.len(),
            picked.iter().map(SegmentRef::rows).sum::<u64>(),
        );
        let v = self.rewrite(name, &manifest, &base, picked, budget).await?;
        Ok(CompactReport {
            version: Some(v.version),
            segments_before: before,
            segments_after: v.segments.len(),
            rewritten,
            rows,
        })
    }

    /// After a change committed `v`, merges the size tiers of small segments it filled
    /// ([`tier_to_merge`]), each as a version of its own, until none is full or a merge
    /// fails (logged: the change has committed either way), on the table `manifest`
    /// describes, writing segments of about `budget`.
    pub(crate) async fn merge_filled_tiers(
        &self,
        name: &str,
        manifest: &Manifest,
        v: &TableVersion,
        budget: u64,
    ) {
        let mut base = v.clone();
        loop {
            let picked = tier_to_merge(&base.segments, budget);
            if picked.is_empty() {
                return;
            }
            let (before, rewritten) = (base.segments.len(), picked.len());
            let rows: u64 = picked.iter().map(SegmentRef::rows).sum();
            base = match self.rewrite(name, manifest, &base, picked, budget).await {
                Ok(next) => next,
                Err(e) => return tracing::warn!("{name}: small segments left unmerged: {e}"),
            };
            tracing::info!(
                "{name}: merged {rewritten} small segments ({rows} rows) as version {}",
                base.version
            );
            // Rows that make as many segments as they came from (the budget cut them) are
            // not merged again.
            if base.segments.len() + (MERGE_FACTOR as usize - 1) > before {
                return;
            }
        }
    }

    /// Rewrites the live rows of `picked`, segments of `base`, into segments of about
    /// `budget`, committed as a compaction in their place.
    async fn rewrite(
        &self,
        name: &str,
        manifest: &Manifest,
        base: &TableVersion,
        picked: Vec<SegmentRef>,
        budget: u64,
    ) -> Result<TableVersion> {
        let store = self.object_store().await?;
        let schema = manifest.schema()?;
        let change = Change {
            segment_max_bytes: Some(budget),
            replaced: picked.iter().map(|s| s.path.clone()).collect(),
            ..Change::new(Operation::Compact, Vec::new())
        };
        let live = live_rows(store, self.root().clone(), schema.clone(), picked);
        self.commit_version(
            name,
            manifest,
            Some(base),
            change,
            Some((schema, Box::pin(live))),
        )
        .await
    }

    /// Removes what only versions of result table `name` replaced more than `older_than`
    /// ago use: their segments (each proven by its committed manifest) and deletion files
    /// (each the object its record describes), then their records; and segments no version
    /// names whose manifests are older than that (writes that died before committing).
    /// The latest version, every version current within the retention and the table's
    /// first file are always kept; nothing a version record does not prove is touched.
    pub async fn vacuum(
        &self,
        name: &str,
        older_than: Duration,
        dry_run: bool,
    ) -> Result<VacuumReport> {
        self.manifest(name).await?;
        let store = self.object_store().await?;
        let records = versions::all(&store, self.root(), name).await?;
        let cutoff = lease::now_ms() - older_than.as_millis().min(i64::MAX as u128) as i64;
        // The newest version created before the cutoff was current at the cutoff: kept.
        let first_kept = records
            .iter()
            .position(|(_, v)| v.created_ms >= cutoff)
            .unwrap_or(records.len())
            .saturating_sub(1);
        let (expired, kept) = records.split_at(first_kept);
        let mut report = VacuumReport {
            dry_run,
            ..Default::default()
        };
        let keep = used_files(name, kept);
        let mut gone = std::collections::BTreeMap::new();
        let mut deletions = std::collections::BTreeMap::new();
        for (_, v) in expired {
            for s in &v.segments {
                if !keep.contains(&s.path) {
                    gone.insert(s.path.clone(), s);
                }
                if let Some(d) = s.deleted.as_ref().filter(|d| !keep.contains(&d.path)) {
                    deletions.insert(d.path.clone(), d);
                }
            }
        }
        let all_named = used_files(name, &records);
        for seg in orphans(&store, self, name, &all_named, cutoff).await? {
            self.remove_segment(&store, name, &seg, dry_run, &mut report)
                .await?;
        }
        let settled = settle_intents(
            &store,
            self.root(),
            name,
            &records,
            &all_named,
            cutoff,
            dry_run,
        )
        .await?;
        report.removed.extend(settled);
        for seg in gone.into_values() {
            self.remove_segment(&store, name, seg, dry_run, &mut report)
                .await?;
        }
        for d in deletions.into_values() {
            self.remove_deletions(&store, name, d, dry_run, &mut report)
                .await?;
        }
        for (url, v) in expired {
            if !dry_run {
                delete_if_present(&store, url).await?;
            }
            report.versions_removed.push(v.version);
        }
        Ok(report)
    }

    /// Removes segment `seg` of `name` as its committed manifest proves it.
    async fn remove_segment(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        seg: &SegmentRef,
        dry_run: bool,
        report: &mut VacuumReport,
    ) -> Result<()> {
        let Some(id) = segment_id(name, &seg.path) else {
            return Ok(());
        };
        let s = versions::segment_siblings(self.root(), name, id)?;
        let Some(m) = txn::read_manifest_at(store, &s.manifest, id).await? else {
            return Ok(());
        };
        if !txn::same_commit(&m, &seg.manifest) {
            tracing::warn!("kept {}: it is not the segment its record names", seg.path);
            return Ok(());
        }
        let dir = versions::segments_prefix(name);
        if dry_run {
            report
                .removed
                .extend(m.files.iter().map(|f| format!("{dir}{}", f.name)));
            report
                .removed
                .push(format!("{dir}{id}{}", naming::MANIFEST_SUFFIX));
            return Ok(());
        }
        let removal = delete_sidecars(store.clone(), &s, &m, self.ttl()?).await?;
        for kept in &removal.kept {
            tracing::warn!("kept {kept}: it is not the object segment {id} committed");
        }
        report.removed.extend(removal.removed.iter().map(|u| {
            u.strip_prefix(&self.root().to_string())
                .unwrap_or(u)
                .to_string()
        }));
        Ok(())
    }

    /// Removes deletion file `d` of `name` when it is still the object its record describes.
    async fn remove_deletions(
        &self,
        store: &Arc<dyn ObjectStore>,
        name: &str,
        d: &versions::DeletionRef,
        dry_run: bool,
        report: &mut VacuumReport,
    ) -> Result<()> {
        let dir = self
            .root()
            .join(&format!("{}deletions/", versions::table_dir(name)))?;
        let Some(file) = d.path.rsplit('/').next() else {
            return Ok(());
        };
        let obj = lease::OwnedObject {
            name: file.to_string(),
            size: d.size,
            crc32c: d.crc32c,
            e_tag: None,
        };
        if txn::prove(store, &dir, &obj).await? != txn::Proof::Ours {
            return Ok(());
        }
        if !dry_run {
            delete_if_present(store, &dir.join(file)?).await?;
        }
        report.removed.push(d.path.clone());
        Ok(())
    }
}

/// Segments that merge when a change fills their size tier: [`MERGE_FACTOR`] or more
/// small segments (under half the segment `budget`, sized as the budget counts: Arrow bytes
/// of their rows) of about one size — the largest at most [`TIER_RATIO`] times the
/// smallest, sizes under [`TIER_FLOOR`] counting as that — the group of the smallest sizes
/// first, in table order. Empty when no tier is full.
///
/// A merge within the budget makes a segment at least 1.5 times the largest it rewrites
/// (the other two are at least a quarter of it), so a row is rewritten about
/// log₃(budget / write size) times for equal writes however many a table takes, and a
/// table grown by n equal writes keeps O(log n) segments: the log-structured merging of
/// Lucene's merge policies. A merge over the budget makes full segments (never merged
/// again) and a remainder. The ratio is looser than the factor so that three merged writes
/// (a little more or less than three times one) still join the next two.
pub fn tier_to_merge(segments: &[SegmentRef], budget: u64) -> Vec<SegmentRef> {
    let mut small: Vec<(u64, &str)> = segments
        .iter()
        .map(|s| (segment_bytes(s), s.path.as_str()))
        .filter(|(b, _)| *b < budget / 2)
        .map(|(b, p)| (b.max(TIER_FLOOR), p))
        .collect();
    small.sort_by_key(|(b, _)| *b);
    for (i, (smallest, _)) in small.iter().enumerate() {
        let top = smallest.saturating_mul(TIER_RATIO);
        let tier = small[i..].iter().take_while(|(b, _)| *b <= top).count();
        if tier >= MERGE_FACTOR as usize {
            let paths: BTreeSet<&str> = small[i..i + tier].iter().map(|(_, p)| *p).collect();
            return segments
                .iter()
                .filter(|s| paths.contains(s.path.as_str()))
                .cloned()
                .collect();
        }
    }
    Vec::new()
}

/// Segments of about one size that fill a tier (see [`tier_to_merge`]).
pub const MERGE_FACTOR: u64 = 3;

/// The largest segment of a tier is at most this many times its smallest.
pub const TIER_RATIO: u64 = 4;

/// Segments under this size (Parquet bytes) are one tier.
pub const TIER_FLOOR: u64 = 1 << 20;

/// The size of `seg` in the unit of the segment budget: the Arrow bytes of the rows it was
/// written from, or its Parquet file's bytes where those were not recorded.
fn segment_bytes(seg: &SegmentRef) -> u64 {
    seg.manifest.row_bytes.unwrap_or_else(|| {
        seg.manifest
            .files
            .iter()
            .filter(|f| f.role == FileRole::Parquet)
            .map(|f| f.size)
            .sum()
    })
}

/// Whether compaction rewrites `seg`: small beside the budget, or many rows deleted.
fn worth_rewriting(seg: &SegmentRef, budget: u64, deleted_fraction: f64) -> bool {
    let bytes = segment_bytes(seg);
    let deleted = seg.deleted.as_ref().map_or(0, |d| d.rows);
    bytes < budget / 2
        || (deleted > 0 && deleted as f64 >= deleted_fraction * seg.manifest.rows.max(1) as f64)
}

/// Paths of the segments and deletion files `records` use, and the table's first file.
pub(crate) fn used_files(
    name: &str,
    records: &[(crate::storage::StorageUrl, TableVersion)],
) -> BTreeSet<String> {
    let mut used = BTreeSet::from([format!("{name}{}", naming::PARQUET_SUFFIX)]);
    for (_, v) in records {
        for s in &v.segments {
            used.insert(s.path.clone());
            if let Some(d) = &s.deleted {
                used.insert(d.path.clone());
            }
        }
    }
    used
}

/// The id of a segment under `name`'s segments directory (`None`: the table's first file).
fn segment_id<'a>(name: &str, path: &'a str) -> Option<&'a str> {
    path.strip_prefix(&versions::segments_prefix(name))
        .and_then(|f| f.strip_suffix(naming::PARQUET_SUFFIX))
}

/// Committed segments of `name` that no version names, committed before `cutoff`.
async fn orphans(
    store: &Arc<dyn ObjectStore>,
    rs: &ResultStore,
    name: &str,
    named: &BTreeSet<String>,
    cutoff: i64,
) -> Result<Vec<SegmentRef>> {
    let prefix = rs.root().join(&versions::segments_prefix(name))?;
    let mut listed = store.list(Some(&prefix.object_path()?));
    let mut ids = Vec::new();
    while let Some(m) = listed.next().await {
        let m = m.map_err(|e| JammiError::storage(&prefix, e))?;
        if let Some(id) = m
            .location
            .filename()
            .and_then(|f| f.strip_suffix(naming::MANIFEST_SUFFIX))
        {
            ids.push(id.to_string());
        }
    }
    let mut out = Vec::new();
    for id in ids {
        let path = format!(
            "{}{id}{}",
            versions::segments_prefix(name),
            naming::PARQUET_SUFFIX
        );
        if named.contains(&path) {
            continue;
        }
        let s = versions::segment_siblings(rs.root(), name, &id)?;
        let Ok(Some(m)) = txn::read_manifest_at(store, &s.manifest, &id).await else {
            continue;
        };
        let created = chrono::DateTime::parse_from_rfc3339(&m.created_at)
            .map(|t| t.timestamp_millis())
            .unwrap_or(i64::MAX);
        if created < cutoff {
            out.push(SegmentRef {
                path,
                manifest: m,
                deleted: None,
            });
        }
    }
    Ok(out)
}

/// Settles the intent records of `name` written before `cutoff`: a commit that landed (its
/// version's record holds the intent's writer) only loses its intent; one that did not loses
/// the deletion files its intent records — each still the object recorded (size and CRC32C)
/// and named by no version record — then its intent. Returns the paths removed.
pub(crate) async fn settle_intents(
    store: &Arc<dyn ObjectStore>,
    root: &crate::storage::StorageUrl,
    name: &str,
    records: &[(crate::storage::StorageUrl, TableVersion)],
    named: &BTreeSet<String>,
    cutoff: i64,
    dry_run: bool,
) -> Result<Vec<String>> {
    let dir_path = versions::deletions_prefix(name);
    let dir = root.join(&dir_path)?;
    let mut listed = store.list(Some(&dir.object_path()?));
    let mut intents = Vec::new();
    while let Some(m) = listed.next().await {
        let m = m.map_err(|e| JammiError::storage(&dir, e))?;
        let Some(file) = m.location.filename() else {
            continue;
        };
        if file.ends_with(versions::INTENT_SUFFIX) && m.last_modified.timestamp_millis() < cutoff {
            intents.push(file.to_string());
        }
    }
    let mut out = Vec::new();
    for file in intents {
        let url = dir.join(&file)?;
        let bytes = match store.get(&url.object_path()?).await {
            Ok(r) => r.bytes().await.map_err(|e| JammiError::storage(&url, e))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(JammiError::storage(&url, e)),
        };
        let Ok(intent) = serde_json::from_slice::<versions::Intent>(&bytes) else {
            tracing::warn!("kept {url}: it is not an intent record jammi-db wrote");
            continue;
        };
        if intent.table != name
            || file
                != format!(
                    "{}-{}{}",
                    intent.version,
                    intent.writer,
                    versions::INTENT_SUFFIX
                )
        {
            tracing::warn!("kept {url}: it records another table or name");
            continue;
        }
        let landed = records
            .iter()
            .any(|(_, v)| v.version == intent.version && v.writer == intent.writer);
        if !landed {
            for obj in &intent.files {
                let path = format!("{dir_path}{}", obj.name);
                if obj.name.contains('/') || named.contains(&path) {
                    continue;
                }
                if txn::prove(store, &dir, obj).await? == txn::Proof::Ours {
                    if !dry_run {
                        delete_if_present(store, &dir.join(&obj.name)?).await?;
                    }
                    out.push(path);
                }
            }
        }
        if !dry_run {
            delete_if_present(store, &url).await?;
        }
        out.push(format!("{dir_path}{file}"));
    }
    Ok(out)
}

/// The live rows of `segments`, in order: each segment's rows without its deleted ones.
fn live_rows(
    store: Arc<dyn ObjectStore>,
    root: crate::storage::StorageUrl,
    schema: SchemaRef,
    segments: Vec<SegmentRef>,
) -> impl Stream<Item = Result<RecordBatch>> + Send {
    futures::stream::iter(segments)
        .then(move |seg| {
            let (store, root, schema) = (store.clone(), root.clone(), schema.clone());
            async move { segment_live_rows(store, root, schema, seg).await }
        })
        .try_flatten()
}

async fn segment_live_rows(
    store: Arc<dyn ObjectStore>,
    root: crate::storage::StorageUrl,
    schema: SchemaRef,
    seg: SegmentRef,
) -> Result<impl Stream<Item = Result<RecordBatch>> + Send> {
    let rows = live_rows_at(store, &root, &schema, &seg).await?;
    Ok(rows.map(|r| r.map(|(batch, _)| batch)))
}

/// The live rows of segment `seg` (its rows without those its deletion file records), each
/// batch with the rows' positions in the segment's file.
pub(crate) async fn live_rows_at(
    store: Arc<dyn ObjectStore>,
    root: &crate::storage::StorageUrl,
    schema: &SchemaRef,
    seg: &SegmentRef,
) -> Result<impl Stream<Item = Result<(RecordBatch, UInt64Array)>> + Send + use<>> {
    let url = root.join(&seg.path)?;
    let deleted = match &seg.deleted {
        Some(d) => versions::read_deletions(&store, root, d).await?,
        None => roaring::RoaringBitmap::new(),
    };
    let meta = read::load_metadata(&store, &url, None).await?;
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    let stream = read::scan_table_columns(&store, &url, &meta, schema, &all).await?;
    let mut at = 0u64;
    Ok(stream.map(move |batch| {
        let batch = batch?;
        let n = batch.num_rows() as u64;
        let rows: UInt64Array = (at..at + n).collect();
        at += n;
        if deleted.is_empty() {
            return Ok((batch, rows));
        }
        let keep: BooleanArray = rows
            .values()
            .iter()
            .map(|&r| Some(!deleted.contains(r as u32)))
            .collect();
        let batch = datafusion::arrow::compute::filter_record_batch(&batch, &keep)?;
        let rows = UInt64Array::from_iter_values(
            rows.values()
                .iter()
                .copied()
                .filter(|&r| !deleted.contains(r as u32)),
        );
        Ok((batch, rows))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::manifest::{FileEntry, Manifest};

    /// A segment `path` whose Parquet file has `bytes`.
    fn seg(path: &str, bytes: u64) -> SegmentRef {
        SegmentRef {
            path: path.into(),
            manifest: Manifest {
                format_version: 2,
                table: path.into(),
                created_at: String::new(),
                writer: None,
                kind: None,
                source: None,
                task: None,
                model: None,
                key_column: None,
                rows: bytes / 100,
                schema_ipc: String::new(),
                index: None,
                files: vec![FileEntry {
                    role: FileRole::Parquet,
                    name: format!("{path}.parquet"),
                    size: bytes,
                    crc32c: 0,
                    e_tag: None,
                    version: None,
                }],
                segment_max_bytes: None,
                row_bytes: Some(bytes),
            },
            deleted: None,
        }
    }

    fn paths(segments: &[SegmentRef]) -> Vec<&str> {
        segments.iter().map(|s| s.path.as_str()).collect()
    }

    const MB: u64 = 1 << 20;
    const BUDGET: u64 = 256 * MB;

    #[test]
    fn a_tier_merges_once_it_holds_three_segments_of_about_one_size() {
        let two = [seg("a", 10 * MB), seg("b", 11 * MB)];
        assert!(tier_to_merge(&two, BUDGET).is_empty());
        let three = [seg("a", 10 * MB), seg("b", 11 * MB), seg("c", 9 * MB)];
        assert_eq!(paths(&tier_to_merge(&three, BUDGET)), ["a", "b", "c"]);
    }

    #[test]
    fn a_large_segment_beside_small_ones_is_not_rewritten() {
        // An append to a large table: its own segment stays, the small ones wait for peers.
        let segs = [seg("big", 40 * MB), seg("s1", 9 * MB), seg("s2", 9 * MB)];
        assert!(tier_to_merge(&segs, BUDGET).is_empty());
        let segs = [
            seg("big", 40 * MB),
            seg("s1", 9 * MB),
            seg("s2", 9 * MB),
            seg("s3", 8 * MB),
        ];
        assert_eq!(paths(&tier_to_merge(&segs, BUDGET)), ["s1", "s2", "s3"]);
    }

    #[test]
    fn three_merged_writes_join_the_next_two_whatever_the_rounding() {
        // Three writes merged come out a little over or under three times one write.
        for merged in [26 * MB + MB / 2, 27 * MB, 28 * MB] {
            let segs = [
                seg("m", merged),
                seg("a", 9 * MB),
                seg("b", 9 * MB - MB / 4),
            ];
            assert_eq!(paths(&tier_to_merge(&segs, BUDGET)), ["m", "a", "b"]);
        }
    }

    #[test]
    fn segments_the_budget_cut_are_full_however_small_their_files() {
        // Rows that compress well: a budget's worth of them writes a small Parquet file.
        let full = |path: &str| {
            let mut s = seg(path, 10 * MB);
            s.manifest.row_bytes = Some(BUDGET);
            s
        };
        assert!(tier_to_merge(&[full("a"), full("b"), full("c")], BUDGET).is_empty());
        // Where no row size was recorded (older segments), the file's size stands for it.
        let old = |path: &str| {
            let mut s = seg(path, 10 * MB);
            s.manifest.row_bytes = None;
            s
        };
        assert_eq!(
            paths(&tier_to_merge(&[old("a"), old("b"), old("c")], BUDGET)),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn segments_of_half_the_budget_or_more_never_merge() {
        let full = [seg("a", 128 * MB), seg("b", 130 * MB), seg("c", 129 * MB)];
        assert!(tier_to_merge(&full, BUDGET).is_empty());
    }

    #[test]
    fn tiny_segments_are_one_tier_and_merge_in_table_order() {
        let segs = [
            seg("x", 10),
            seg("y", 900_000),
            seg("z", 3),
            seg("w", 40 * MB),
        ];
        assert_eq!(paths(&tier_to_merge(&segs, BUDGET)), ["x", "y", "z"]);
    }

    #[test]
    fn equal_writes_keep_a_logarithmic_number_of_segments() {
        // 81 writes of 1 MiB each, merging after every write as the store does.
        let mut table: Vec<SegmentRef> = Vec::new();
        let mut rewritten = 0u64;
        for i in 0..81 {
            table.push(seg(&format!("w{i}"), MB));
            loop {
                let picked = tier_to_merge(&table, BUDGET);
                if picked.is_empty() {
                    break;
                }
                let bytes: u64 = picked.iter().map(segment_bytes).sum();
                rewritten += bytes;
                let names = paths(&picked).join("+");
                table.retain(|s| !picked.iter().any(|p| p.path == s.path));
                table.push(seg(&names, bytes));
            }
        }
        assert!(
            table.len() <= 8,
            "{} segments: {:?}",
            table.len(),
            paths(&table)
        );
        // Each MiB is rewritten once per tier it climbs: log3(81) = 4 times.
        assert!(rewritten <= 4 * 81 * MB, "rewrote {} MiB", rewritten / MB);
        assert_eq!(table.iter().map(segment_bytes).sum::<u64>(), 81 * MB);
    }
}
