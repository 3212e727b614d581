//! The recovery pass: finishes or undoes the operations whose holders died, and removes
//! nothing else.
//!
//! Every object jammi-db may remove is named, before it exists, by a lease
//! (`<stem>.idx.lease.json`, see [`lease`](crate::store::lease)) that also records its size
//! and CRC32C before it becomes visible. The pass lists the root, and for each lease whose
//! holder is dead: publishes a write that reached `committing` (its objects still prove
//! theirs), completes a `deleting`, or removes the recorded objects that still prove to be
//! the ones written — then the lease. Live leases are reported, never touched. Any other
//! object under the root — committed tables, user files, files named like result tables or
//! sidecars — is never removed, whatever its name.
//!
//! Leases of format 1 (`_jammi/leases/<table>.json`) named no objects: a dead one is
//! removed, the objects its write left are not (nothing proves them).
//!
//! Multipart uploads a crash left open on a cloud bucket cannot be listed through
//! object_store; buckets should carry the usual abort-incomplete-multipart lifecycle rule.
//! The local backend stages them as `<file>#<n>` files: those of a dead lease's planned
//! objects, made after the lease, are removed with it.

use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::Deserialize;

use crate::error::{JammiError, Result};
use crate::format::naming;
use crate::storage::StorageUrl;
use crate::store::lease::{self, Found};
use crate::store::txn;

/// What a recovery pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Dead writes undone: their recorded objects were (or, in a dry run, would be) removed.
    pub reclaimed_tables: Vec<String>,
    /// Dead writes that had reached their commit point, published now (or in a dry run,
    /// to publish).
    pub completed_commits: Vec<String>,
    /// Dead deletes completed.
    pub completed_deletes: Vec<String>,
    /// Objects removed (or to remove), as URLs.
    pub removed_objects: Vec<String>,
    /// Objects a dead write recorded but that another object has replaced: kept.
    pub kept_objects: Vec<String>,
    /// Operations skipped because their holder is alive.
    pub live_writes: Vec<String>,
    /// Committed tables whose siblings do not match the manifest (kept, reported).
    pub broken_tables: Vec<String>,
    /// Committed tables seen.
    pub committed_tables: usize,
    /// Leases this pass could not settle (a request failed), with why: the next pass
    /// tries again.
    pub failed: Vec<String>,
}

impl RecoveryReport {
    /// Adds what a pass over the segments directory `prefix` found.
    fn absorb(&mut self, sub: RecoveryReport, prefix: &str) {
        let named = |v: Vec<String>| v.into_iter().map(move |n| format!("{prefix}{n}"));
        self.reclaimed_tables.extend(named(sub.reclaimed_tables));
        self.completed_commits.extend(named(sub.completed_commits));
        self.completed_deletes.extend(named(sub.completed_deletes));
        self.broken_tables.extend(named(sub.broken_tables));
        self.live_writes.extend(named(sub.live_writes));
        self.removed_objects.extend(sub.removed_objects);
        self.kept_objects.extend(sub.kept_objects);
        self.failed.extend(sub.failed);
    }

    /// `true` when nothing needed doing.
    pub fn is_clean(&self) -> bool {
        self.removed_objects.is_empty()
            && self.completed_commits.is_empty()
            && self.broken_tables.is_empty()
            && self.failed.is_empty()
    }
}

/// Runs the pass over `root`; with `dry_run` nothing is changed.
pub async fn recover(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    ttl: Duration,
    dry_run: bool,
) -> Result<RecoveryReport> {
    let root = root.as_prefix();
    let listed = store
        .list_with_delimiter(Some(&root.object_path()?))
        .await
        .map_err(|e| JammiError::storage(&root, e))?;
    let mut report = RecoveryReport::default();
    let files: Vec<String> = listed
        .objects
        .iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .collect();
    for file in &files {
        let Some(stem) = naming::stem_of_lease(file) else {
            continue;
        };
        let url = root.join(file)?;
        // One lease that cannot be settled now does not stop the others.
        if let Err(e) = settle_one(store, &root, &url, stem, ttl, dry_run, &mut report).await {
            report.failed.push(format!("{url}: {e}"));
        }
    }
    // Committed tables are counted after the leases: a pass may have published some.
    let listed = if report.completed_commits.is_empty() || dry_run {
        files
    } else {
        list_names(store, &root).await?
    };
    for file in &listed {
        let Some(name) = naming::table_of_manifest(file) else {
            continue;
        };
        report.committed_tables += 1;
        let siblings = naming::Siblings::table(&root, name)?;
        match crate::store::read_manifest(store, &siblings).await {
            Ok(_) | Err(JammiError::NotFound { .. }) => {}
            Err(JammiError::Corrupt { .. }) => report.broken_tables.push(name.to_string()),
            Err(e) => return Err(e),
        }
    }
    remove_dead_v1_leases(store, &root, ttl, dry_run, &mut report).await?;
    // The segments of tables that changed are written under leases of their own.
    let listed = store
        .list_with_delimiter(Some(&root.object_path()?))
        .await
        .map_err(|e| JammiError::storage(&root, e))?;
    for dir in &listed.common_prefixes {
        let Some(table) = dir.filename().and_then(|d| d.strip_suffix(".jammi")) else {
            continue;
        };
        if naming::validate_table_name(table).is_err() {
            continue;
        }
        let segments = root.join(&crate::store::versions::segments_prefix(table))?;
        let sub = Box::pin(recover(store, &segments, ttl, dry_run)).await?;
        report.absorb(sub, &crate::store::versions::segments_prefix(table));
    }
    Ok(report)
}

async fn list_names(store: &Arc<dyn ObjectStore>, root: &StorageUrl) -> Result<Vec<String>> {
    let listed = store
        .list_with_delimiter(Some(&root.object_path()?))
        .await
        .map_err(|e| JammiError::storage(root, e))?;
    Ok(listed
        .objects
        .iter()
        .filter_map(|m| m.location.filename().map(str::to_string))
        .collect())
}

async fn settle_one(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    url: &StorageUrl,
    stem: &str,
    ttl: Duration,
    dry_run: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let found = match lease::read(store, url).await? {
        Found::Lease(r) if r.lease.stem == stem => r,
        // Gone meanwhile, or not a lease of ours: never touched.
        _ => return Ok(()),
    };
    if found.lease.is_live(ttl) {
        report.live_writes.push(stem.to_string());
        return Ok(());
    }
    let state = found.lease.state;
    let settled = txn::settle(store, root, url, *found, ttl, dry_run).await?;
    if settled.skipped {
        return Ok(());
    }
    if settled.published {
        report.completed_commits.push(stem.to_string());
    } else if state == lease::LeaseState::Deleting {
        report.completed_deletes.push(stem.to_string());
    } else {
        report.reclaimed_tables.push(stem.to_string());
    }
    report.removed_objects.extend(settled.removal.removed);
    report.kept_objects.extend(settled.removal.kept);
    report.removed_objects.push(url.to_string());
    Ok(())
}

/// A lease of format 1.
#[derive(Deserialize)]
struct LeaseV1 {
    table: String,
    host: String,
    pid: u32,
    expires_ms: i64,
}

impl LeaseV1 {
    fn is_dead(&self) -> bool {
        if self.host == lease::host() && cfg!(target_os = "linux") {
            return !std::path::Path::new(&format!("/proc/{}", self.pid)).exists();
        }
        self.expires_ms < lease::now_ms()
    }
}

/// Removes dead format-1 leases (`_jammi/leases/<table>.json`); they name no objects.
async fn remove_dead_v1_leases(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    ttl: Duration,
    dry_run: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    let dir = root.join("_jammi/leases/")?;
    let metas: Vec<_> = store
        .list(Some(&dir.object_path()?))
        .try_collect()
        .await
        .map_err(|e| JammiError::storage(&dir, e))?;
    for meta in metas {
        let Some(file) = meta.location.filename() else {
            continue;
        };
        let url = dir.join(file)?;
        let bytes = match store.get(&meta.location).await {
            Ok(r) => r.bytes().await.map_err(|e| JammiError::storage(&url, e))?,
            Err(object_store::Error::NotFound { .. }) => continue,
            Err(e) => return Err(JammiError::storage(&url, e)),
        };
        let Ok(old) = serde_json::from_slice::<LeaseV1>(&bytes) else {
            continue;
        };
        if file != format!("{}.json", old.table) {
            continue;
        }
        // Allow one TTL of clock skew, as for current leases.
        let skewed = old.expires_ms + ttl.as_millis() as i64 > lease::now_ms();
        if !old.is_dead() || (old.host != lease::host() && skewed) {
            report.live_writes.push(old.table);
            continue;
        }
        if !dry_run {
            match store.delete(&meta.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(JammiError::storage(&url, e)),
            }
        }
        report.removed_objects.push(url.to_string());
    }
    Ok(())
}
