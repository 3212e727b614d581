//! The recovery pass: removes what crashed or failed writes and interrupted deletes left
//! under a root, without touching committed tables or live writers' files.
//!
//! For every table name seen under the root (from its siblings or its lease):
//! - a manifest exists → committed: kept (a stale lease beside it is removed; a sibling that
//!   no longer matches the manifest is reported as broken, never deleted);
//! - no manifest and a live lease → a write in progress: skipped;
//! - no manifest and no live lease → removed: data siblings first, then the lease.
//!
//! Deletes are idempotent (NotFound is success), so two passes may run at once. Multipart
//! uploads that a crash left open cannot be listed through object_store; the local backend
//! stages them as `<file>#<n>` files, which are removed here, and cloud buckets should carry
//! the usual abort-incomplete-multipart lifecycle rule.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::storage::StorageUrl;
use crate::store::lease;
use crate::store::naming::{self, MANIFEST_SUFFIX};

/// What a recovery pass found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Uncommitted tables whose files were (or, in a dry run, would be) removed.
    pub reclaimed_tables: Vec<String>,
    /// Objects removed (or to remove), as URLs.
    pub removed_objects: Vec<String>,
    /// Uncommitted tables skipped because their writer is alive.
    pub live_writes: Vec<String>,
    /// Committed tables whose siblings do not match the manifest (kept, reported).
    pub broken_tables: Vec<String>,
    /// Committed tables seen.
    pub committed_tables: usize,
}

impl RecoveryReport {
    /// `true` when nothing needed doing.
    pub fn is_clean(&self) -> bool {
        self.removed_objects.is_empty() && self.broken_tables.is_empty()
    }
}

#[derive(Default)]
struct Group {
    objects: BTreeMap<String, u64>,
    manifest: bool,
    lease: bool,
}

/// Runs the pass over `root`; with `dry_run` nothing is deleted.
pub async fn recover(
    store: &Arc<dyn ObjectStore>,
    root: &StorageUrl,
    dry_run: bool,
) -> Result<RecoveryReport> {
    let root = root.as_prefix();
    let listed = store
        .list_with_delimiter(Some(&root.object_path()?))
        .await
        .map_err(|e| JammiError::storage(&root, e))?;
    let mut groups: BTreeMap<String, Group> = BTreeMap::new();
    for meta in &listed.objects {
        let Some(file) = meta.location.filename() else {
            continue;
        };
        let Some((name, suffix)) = naming::split_sibling(file) else {
            continue;
        };
        let g = groups.entry(name.to_string()).or_default();
        g.objects.insert(file.to_string(), meta.size);
        g.manifest |= suffix == MANIFEST_SUFFIX;
    }
    let lease_dir = root.join("_jammi/leases/")?;
    let leases: Vec<_> = store
        .list(Some(&lease_dir.object_path()?))
        .try_collect()
        .await
        .map_err(|e| JammiError::storage(&lease_dir, e))?;
    for meta in &leases {
        if let Some(name) = meta
            .location
            .filename()
            .and_then(|f| f.strip_suffix(".json"))
        {
            groups.entry(name.to_string()).or_default().lease = true;
        }
    }
    let staged = staged_local_files(&root);

    let mut report = RecoveryReport::default();
    for (name, g) in &groups {
        let lease_url = lease::lease_url(&root, name)?;
        let held = if g.lease {
            lease::read(store, &lease_url).await?
        } else {
            None
        };
        let live = held.as_ref().is_some_and(|l| l.is_live());
        if g.manifest {
            report.committed_tables += 1;
            match crate::store::read_manifest(store, &root, name).await {
                Ok(_) => {}
                Err(JammiError::Corrupt { .. }) => report.broken_tables.push(name.clone()),
                Err(JammiError::NotFound { .. }) => continue, // deleted meanwhile
                Err(e) => return Err(e),
            }
            if g.lease && !live {
                remove(store, &lease_url, dry_run, &mut report).await?;
            }
            continue;
        }
        if live {
            report.live_writes.push(name.clone());
            continue;
        }
        report.reclaimed_tables.push(name.clone());
        for file in g.objects.keys() {
            remove(store, &root.join(file)?, dry_run, &mut report).await?;
        }
        if g.lease {
            remove(store, &lease_url, dry_run, &mut report).await?;
        }
    }
    for path in staged {
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        let base = file.split('#').next().unwrap_or(file);
        let owner = naming::split_sibling(base).map(|(n, _)| n.to_string());
        let owner_live = match &owner {
            Some(n) => report.live_writes.contains(n),
            None => true,
        };
        if !owner_live {
            report.removed_objects.push(format!("{}", path.display()));
            if !dry_run {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    Ok(report)
}

async fn remove(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    dry_run: bool,
    report: &mut RecoveryReport,
) -> Result<()> {
    report.removed_objects.push(url.to_string());
    if dry_run {
        return Ok(());
    }
    match store.delete(&url.object_path()?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(JammiError::storage(url, e)),
    }
}

/// Staged multipart parts (`<file>#<n>`) of the local backend under a `file://` root.
fn staged_local_files(root: &StorageUrl) -> Vec<std::path::PathBuf> {
    let Some(dir) = root.local_path() else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let names: BTreeSet<std::path::PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.contains('#'))
        })
        .collect();
    names.into_iter().collect()
}
