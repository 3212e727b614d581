//! Operations on a table's objects under a lease, and settling the lease of a dead one.
//!
//! A write (result table or sidecars of an existing file) takes the lease, checks that
//! every name it will create is free, records each object's size and CRC32C before its
//! upload completes (then its ETag), switches the lease to `committing` with the manifest
//! in it, publishes the manifest create-only and removes the lease. A lost response to the
//! manifest PUT is settled by reading the manifest back: it is this write's iff its `writer`
//! is this lease's id. A delete records the table's objects in a `deleting` lease, removes
//! the manifest, then the objects. Whoever finds the lease of a dead holder finishes its
//! work: a `committing` write is published (if its objects still prove theirs), a
//! `deleting` one completed, anything else rolled back — and only objects whose ETag or
//! bytes match the lease's record are ever removed.

use std::sync::Arc;
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutPayload};

use crate::error::{JammiError, Result};
use crate::format::manifest::Manifest;
use crate::format::naming::Siblings;
use crate::storage::StorageUrl;
use crate::store::lease::{self, Found, LeaseGuard, LeaseState, OwnedObject};
use crate::store::read::object_crc;

/// Whether an object is the one a record describes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Proof {
    /// Its ETag, or its size and bytes, match the record.
    Ours,
    /// There is no such object.
    Missing,
    /// Another object stands there (never removed).
    NotOurs,
}

/// Checks `dir/<obj.name>` against `obj`: the ETag when the record has it and the store
/// reports the same one, otherwise the size and then the CRC32C of the whole object.
pub(crate) async fn prove(
    store: &Arc<dyn ObjectStore>,
    dir: &StorageUrl,
    obj: &OwnedObject,
) -> Result<Proof> {
    let url = dir.join(&obj.name)?;
    let head = match store.head(&url.object_path()?).await {
        Ok(h) => h,
        Err(object_store::Error::NotFound { .. }) => return Ok(Proof::Missing),
        Err(e) => return Err(JammiError::storage(&url, e)),
    };
    if head.size != obj.size {
        return Ok(Proof::NotOurs);
    }
    if obj.e_tag.is_some() && head.e_tag == obj.e_tag {
        return Ok(Proof::Ours);
    }
    match object_crc(store, &url).await {
        Ok((size, crc)) if size == obj.size && crc == obj.crc32c => Ok(Proof::Ours),
        Ok(_) => Ok(Proof::NotOurs),
        Err(e) if e.is_not_found() => Ok(Proof::Missing),
        Err(e) => Err(e),
    }
}

/// What removing recorded objects did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Removal {
    /// URLs removed (or, in a dry run, to remove).
    pub removed: Vec<String>,
    /// URLs kept because another object stands where the record's was.
    pub kept: Vec<String>,
}

/// Removes the objects of `objects` that prove to be the recorded ones.
pub(crate) async fn remove_proven(
    store: &Arc<dyn ObjectStore>,
    dir: &StorageUrl,
    objects: &[OwnedObject],
    dry_run: bool,
) -> Result<Removal> {
    let mut out = Removal::default();
    for obj in objects {
        let url = dir.join(&obj.name)?;
        match prove(store, dir, obj).await? {
            Proof::Missing => {}
            Proof::NotOurs => out.kept.push(url.to_string()),
            Proof::Ours => {
                if !dry_run {
                    delete(store, &url).await?;
                }
                out.removed.push(url.to_string());
            }
        }
    }
    Ok(out)
}

async fn delete(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<()> {
    match store.delete(&url.object_path()?).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(JammiError::storage(url, e)),
    }
}

/// Reads a manifest if there is one.
pub(crate) async fn read_manifest_at(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    table: &str,
) -> Result<Option<Manifest>> {
    match store.get(&url.object_path()?).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| JammiError::storage(url, e))?;
            // The damaged file is named: it is what the user must look at.
            Manifest::from_json(table, &bytes)
                .map(Some)
                .map_err(|e| match e {
                    JammiError::Corrupt {
                        kind,
                        table,
                        reason,
                    } => JammiError::Corrupt {
                        kind,
                        table,
                        reason: format!("{}: {reason}", url.file_name()),
                    },
                    e => e,
                })
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(JammiError::storage(url, e)),
    }
}

/// How a publish ended.
#[derive(Debug)]
enum Published {
    /// The manifest is this writer's.
    Committed,
    /// No manifest landed.
    NotCommitted(JammiError),
    /// Unknown (the store could not be read back): nothing may be rolled back.
    Unknown(JammiError),
}

/// Publishes `manifest` create-only; after an error, reads it back and decides by its writer.
async fn publish(store: &Arc<dyn ObjectStore>, url: &StorageUrl, manifest: &Manifest) -> Published {
    let path = match url.object_path() {
        Ok(p) => p,
        Err(e) => return Published::NotCommitted(e),
    };
    let put = store
        .put_opts(
            &path,
            PutPayload::from(manifest.to_json()),
            PutMode::Create.into(),
        )
        .await;
    let err = match put {
        Ok(_) => return Published::Committed,
        Err(e) => e,
    };
    match read_manifest_at(store, url, &manifest.table).await {
        Ok(Some(m)) if m.writer.is_some() && m.writer == manifest.writer => Published::Committed,
        Ok(Some(_)) => Published::NotCommitted(JammiError::AlreadyExists {
            kind: "result table",
            name: manifest.table.clone(),
        }),
        Ok(None) => Published::NotCommitted(JammiError::storage(url, err)),
        Err(_) => Published::Unknown(JammiError::storage(url, err)),
    }
}

/// An operation holding the lease of one set of siblings.
pub(crate) struct Txn {
    store: Arc<dyn ObjectStore>,
    siblings: Siblings,
    lease: LeaseGuard,
    /// ETags learnt since the lease was last written.
    pending: Vec<(String, Option<String>)>,
}

impl Txn {
    /// Takes the lease of `siblings` — settling a dead holder's lease first — and checks that
    /// none of `creates` exists. An object in the way is refused, never overwritten.
    pub(crate) async fn begin(
        store: Arc<dyn ObjectStore>,
        siblings: &Siblings,
        creates: &[&StorageUrl],
        state: LeaseState,
        ttl: Duration,
    ) -> Result<Txn> {
        let planned: Vec<String> = creates.iter().map(|u| u.file_name()).collect();
        let mut guard = None;
        for _ in 0..3 {
            if let Some(g) = LeaseGuard::create(
                store.clone(),
                &siblings.lease,
                &siblings.stem,
                state,
                planned.clone(),
                ttl,
            )
            .await?
            {
                guard = Some(g);
                break;
            }
            match lease::read(&store, &siblings.lease).await? {
                Found::Absent => continue,
                Found::Foreign => {
                    return Err(JammiError::NotOwned {
                        url: siblings.lease.to_string(),
                        hint: "it is not a jammi-db lease; move it away to write here".into(),
                    });
                }
                Found::Lease(r) if r.lease.is_live(ttl) => {
                    return Err(JammiError::InProgress {
                        name: siblings.stem.clone(),
                        holder: format!("process {} on {}", r.lease.pid, r.lease.host),
                    });
                }
                Found::Lease(r) => {
                    settle(&store, &siblings.dir, &siblings.lease, *r, ttl, false).await?;
                }
            }
        }
        let lease = guard.ok_or_else(|| JammiError::InProgress {
            name: siblings.stem.clone(),
            holder: "another process (its lease keeps changing)".into(),
        })?;
        let txn = Txn {
            store,
            siblings: siblings.clone(),
            lease,
            pending: Vec::new(),
        };
        if let Err(e) = txn.check_free(creates).await {
            txn.release().await;
            return Err(e);
        }
        Ok(txn)
    }

    async fn check_free(&self, creates: &[&StorageUrl]) -> Result<()> {
        for url in creates {
            match self.store.head(&url.object_path()?).await {
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(JammiError::storage(url, e)),
                Ok(_) if **url == self.siblings.manifest => {
                    return Err(JammiError::AlreadyExists {
                        kind: "result table",
                        name: self.siblings.stem.clone(),
                    });
                }
                Ok(_) => {
                    return Err(JammiError::NotOwned {
                        url: url.to_string(),
                        hint: "choose another name, or move the file away".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// The operation's id (the manifest's `writer`).
    pub(crate) fn id(&self) -> &str {
        self.lease.id()
    }

    /// The siblings this operation works on.
    pub(crate) fn siblings(&self) -> &Siblings {
        &self.siblings
    }

    /// Records, before an upload completes, the size and CRC32C `url` will have.
    pub(crate) async fn intend(&mut self, url: &StorageUrl, size: u64, crc32c: u32) -> Result<()> {
        let pending = std::mem::take(&mut self.pending);
        let obj = OwnedObject {
            name: url.file_name(),
            size,
            crc32c,
            e_tag: None,
        };
        self.lease
            .update(move |l| {
                apply_etags(l, &pending);
                l.objects.retain(|o| o.name != obj.name);
                l.objects.push(obj);
            })
            .await
    }

    /// Notes the ETag the store gave `url` (written with the next lease update).
    pub(crate) fn completed(&mut self, url: &StorageUrl, e_tag: Option<String>) {
        self.pending.push((url.file_name(), e_tag));
    }

    /// Publishes `manifest` (its `writer` is set to this operation's id) and ends the
    /// operation. On failure nothing is published and the objects are removed, unless the
    /// outcome cannot be known, in which case the lease is left for recovery to settle.
    pub(crate) async fn commit(mut self, mut manifest: Manifest) -> Result<Manifest> {
        manifest.writer = Some(self.id().to_string());
        for (name, e_tag) in &self.pending {
            if let Some(f) = manifest.files.iter_mut().find(|f| &f.name == name) {
                f.e_tag = e_tag.clone();
            }
        }
        let pending = std::mem::take(&mut self.pending);
        let staged = manifest.clone();
        if let Err(e) = self
            .lease
            .update(move |l| {
                apply_etags(l, &pending);
                l.state = LeaseState::Committing;
                l.manifest = Some(Box::new(staged));
            })
            .await
        {
            self.abort().await;
            return Err(e);
        }
        match publish(&self.store, &self.siblings.manifest, &manifest).await {
            Published::Committed => {
                if let Err(e) = self.lease.release().await {
                    tracing::warn!(
                        "{} committed, but its lease was not removed ({e}); `recover` removes it",
                        self.siblings.stem
                    );
                }
                Ok(manifest)
            }
            Published::NotCommitted(e) => {
                self.abort().await;
                Err(e)
            }
            Published::Unknown(e) => {
                // Decided, not known to be published: recovery finishes it.
                self.lease.abandon().await;
                Err(JammiError::Storage {
                    url: self.siblings.manifest.to_string(),
                    source: object_store::Error::Generic {
                        store: "jammi",
                        source: format!(
                            "the commit's outcome could not be read back ({e}); the next recovery \
                         pass completes or removes it"
                        )
                        .into(),
                    },
                })
            }
        }
    }

    /// Gives up: claims the clean-up in the lease (a holder that lost its lease removes
    /// nothing: whoever took it over does), removes the objects this operation recorded,
    /// then the lease. A clean-up that cannot finish marks the lease abandoned, so recovery
    /// finishes it.
    pub(crate) async fn abort(self) {
        if self
            .lease
            .update(|l| l.state = LeaseState::Reaping)
            .await
            .is_err()
        {
            return;
        }
        let lease = self.lease.lease().await;
        match remove_proven(&self.store, &self.siblings.dir, &lease.objects, false).await {
            Ok(r) if r.kept.is_empty() => self.release().await,
            Ok(r) => {
                tracing::warn!(
                    "kept {} after a failed write: they are not the objects it wrote",
                    r.kept.join(", ")
                );
                self.release().await;
            }
            Err(e) => {
                tracing::warn!(
                    "cleaning up a failed write of {} failed ({e}); `recover` finishes it",
                    self.siblings.stem
                );
                self.lease.abandon().await;
            }
        }
    }

    async fn release(self) {
        if let Err(e) = self.lease.release().await {
            tracing::warn!("removing the lease of {} failed: {e}", self.siblings.stem);
        }
    }

    /// Records objects this operation will remove and the manifest they belong to
    /// (`deleting` state), before anything is removed.
    pub(crate) async fn plan_delete(
        &mut self,
        manifest: &Manifest,
        objects: Vec<OwnedObject>,
    ) -> Result<()> {
        let m = manifest.clone();
        self.lease
            .update(move |l| {
                l.state = LeaseState::Deleting;
                l.manifest = Some(Box::new(m));
                l.objects = objects;
            })
            .await
    }

    /// Completes a planned delete: the manifest (if it is still the planned one), then the
    /// objects, then the lease.
    pub(crate) async fn finish_delete(self) -> Result<Removal> {
        let lease = self.lease.lease().await;
        match complete_delete(&self.store, &self.siblings, &lease, false).await {
            Ok(removal) => {
                self.release().await;
                Ok(removal)
            }
            Err(e) => {
                self.lease.abandon().await;
                Err(e)
            }
        }
    }

    /// Ends an operation that changed nothing (its lease only).
    pub(crate) async fn finish_unchanged(self) {
        self.release().await;
    }
}

/// Whether two manifests record the same commit.
pub(crate) fn same_commit(a: &Manifest, b: &Manifest) -> bool {
    a.writer == b.writer && a.created_at == b.created_at && a.table == b.table
}

fn apply_etags(l: &mut lease::Lease, pending: &[(String, Option<String>)]) {
    for (name, e_tag) in pending {
        if let Some(o) = l.objects.iter_mut().find(|o| &o.name == name) {
            o.e_tag = e_tag.clone();
        }
    }
}

async fn complete_delete(
    store: &Arc<dyn ObjectStore>,
    siblings: &Siblings,
    lease: &lease::Lease,
    dry_run: bool,
) -> Result<Removal> {
    let mut removal = Removal::default();
    if let Some(planned) = &lease.manifest {
        match read_manifest_at(store, &siblings.manifest, &siblings.stem).await {
            Ok(Some(m)) if same_commit(&m, planned) => {
                if !dry_run {
                    delete(store, &siblings.manifest).await?;
                }
                removal.removed.push(siblings.manifest.to_string());
            }
            // Un-published already: the objects go.
            Ok(None) => {}
            // Another commit (or a manifest nothing can read) stands there: its objects may
            // share names with the planned ones, so nothing is removed.
            Ok(Some(_)) | Err(JammiError::Corrupt { .. }) => {
                removal.kept.push(siblings.manifest.to_string());
                return Ok(removal);
            }
            Err(e) => return Err(e),
        }
    }
    let objects = remove_proven(store, &siblings.dir, &lease.objects, dry_run).await?;
    removal.removed.extend(objects.removed);
    removal.kept.extend(objects.kept);
    Ok(removal)
}

/// How a settler holds a dead holder's lease while it works.
enum Claim {
    /// A dry run: nothing is claimed or changed.
    Dry,
    /// Taken over by compare-and-swap; removed if unchanged.
    Swapped(Box<lease::Lease>),
}

/// Claims the lease `found` for settling (a compare-and-swap that names this process as its
/// holder, so a settler that dies is itself settled by the next pass); `None` when another
/// settler (or the holder) changed it first.
async fn claim(
    store: &Arc<dyn ObjectStore>,
    lease_url: &StorageUrl,
    found: lease::Read,
    ttl: Duration,
    dry_run: bool,
) -> Result<Option<(lease::Lease, Claim)>> {
    if dry_run {
        return Ok(Some((found.lease, Claim::Dry)));
    }
    let mut taken = found.lease.clone();
    taken.hold_here(ttl);
    taken.seq += 1;
    taken.abandoned = false;
    if taken.state == LeaseState::Writing {
        taken.state = LeaseState::Reaping;
    }
    Ok(lease::swap(store, lease_url, &found.version, &taken)
        .await?
        .map(|_| (taken.clone(), Claim::Swapped(Box::new(taken)))))
}

/// Ends a claim: the lease is gone.
async fn release_claim(
    store: &Arc<dyn ObjectStore>,
    lease_url: &StorageUrl,
    claim: Claim,
) -> Result<()> {
    match claim {
        Claim::Dry => Ok(()),
        Claim::Swapped(taken) => lease::remove_if(store, lease_url, &taken).await,
    }
}

/// What settling a dead holder's lease did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Settled {
    /// Another pass (or the holder) changed the lease first: nothing was done.
    pub skipped: bool,
    /// The write was published (rolled forward), or found published.
    pub published: bool,
    /// Objects removed (or to remove), and objects kept as not provably the holder's.
    pub removal: Removal,
}

/// Finishes the work of a dead holder of the lease `found` at `lease_url`: publishes a
/// `committing` write whose objects still prove theirs, completes a `deleting` one, rolls
/// anything else back; then removes the lease. The lease is claimed first, by a
/// compare-and-swap, so the old holder can never write it again and two passes never settle one lease twice. With
/// `dry_run` nothing changes.
pub(crate) async fn settle(
    store: &Arc<dyn ObjectStore>,
    dir: &StorageUrl,
    lease_url: &StorageUrl,
    found: lease::Read,
    ttl: Duration,
    dry_run: bool,
) -> Result<Settled> {
    let started = std::time::SystemTime::now();
    // A lease names only its own table's siblings; one naming other objects (a copy of
    // another table's lease, a hand-edited one) is damaged and settles nothing.
    let own = Siblings::table(dir, &found.lease.stem)?;
    let names = found.lease.objects.iter().map(|o| &o.name);
    if let Some(other) = names
        .chain(&found.lease.planned)
        .find(|n| !own.owns(n.as_str()))
    {
        return Err(JammiError::Corrupt {
            kind: "lease of",
            table: found.lease.stem.clone(),
            reason: format!(
                "{} records {other}, which is not one of its table's own objects; it is left \
                 as it is",
                lease_url.file_name()
            ),
        });
    }
    // Another pass of this process settling the same lease sees it live.
    let _active = if dry_run {
        None
    } else {
        match lease::ActiveGuard::hold(&found.lease.id) {
            Some(g) => Some(g),
            None => {
                return Ok(Settled {
                    skipped: true,
                    ..Settled::default()
                });
            }
        }
    };
    let Some((held, claimed)) = claim(store, lease_url, found, ttl, dry_run).await? else {
        return Ok(Settled {
            skipped: true,
            ..Settled::default()
        });
    };
    let siblings = Siblings::table(dir, &held.stem)?;
    let mut out = Settled::default();
    // Staging files to look for: the holder's own interrupted rewrites of its lease (local
    // leases are overwritten by their holder alone), and those of a write's planned objects.
    let lease_name = lease_url.file_name();
    let mut staged_names = vec![lease_name.as_str()];
    match held.state {
        LeaseState::Committing => match settle_commit(store, dir, &siblings, &held, dry_run).await?
        {
            Forward::Published => out.published = true,
            Forward::Foreign => {}
            Forward::NotProven => {
                out.removal = remove_proven(store, dir, &held.objects, dry_run).await?;
            }
        },
        LeaseState::Deleting => {
            out.removal = complete_delete(store, &siblings, &held, dry_run).await?;
        }
        LeaseState::Writing | LeaseState::Reaping => {
            out.removal = remove_proven(store, dir, &held.objects, dry_run).await?;
            staged_names.extend(held.planned.iter().map(String::as_str));
        }
    }
    out.removal
        .removed
        .extend(remove_staged(dir, &staged_names, &held, started, dry_run));
    release_claim(store, lease_url, claimed).await?;
    Ok(out)
}

/// How a dead writer's commit ends.
enum Forward {
    /// Its manifest is (now) published.
    Published,
    /// Its objects no longer prove theirs: roll back.
    NotProven,
    /// Another commit stands at its name: touch nothing.
    Foreign,
}

/// Publishes a dead writer's staged manifest if every object it lists is still the one
/// written — or finds it published already.
async fn settle_commit(
    store: &Arc<dyn ObjectStore>,
    dir: &StorageUrl,
    siblings: &Siblings,
    held: &lease::Lease,
    dry_run: bool,
) -> Result<Forward> {
    let Some(manifest) = held.manifest.as_deref() else {
        return Ok(Forward::NotProven);
    };
    match read_manifest_at(store, &siblings.manifest, &siblings.stem).await {
        Ok(Some(current)) if same_commit(&current, manifest) => return Ok(Forward::Published),
        Ok(Some(_)) | Err(JammiError::Corrupt { .. }) => return Ok(Forward::Foreign),
        Ok(None) => {}
        Err(e) => return Err(e),
    }
    for obj in &held.objects {
        if prove(store, dir, obj).await? != Proof::Ours {
            return Ok(Forward::NotProven);
        }
    }
    if dry_run {
        return Ok(Forward::Published);
    }
    // The holder had decided to commit: a failed publish is retried by the next pass,
    // never turned into a roll-back.
    match publish(store, &siblings.manifest, manifest).await {
        Published::Committed => Ok(Forward::Published),
        Published::NotCommitted(JammiError::AlreadyExists { .. }) => Ok(Forward::Foreign),
        Published::NotCommitted(e) | Published::Unknown(e) => Err(e),
    }
}

/// Staging files (`<name>#<n>`) that the local backend's uploads of a dead writer left for
/// `names` (objects its lease planned, or the lease itself): made after its lease and before
/// this pass began.
fn remove_staged(
    dir: &StorageUrl,
    names: &[&str],
    held: &lease::Lease,
    started: std::time::SystemTime,
    dry_run: bool,
) -> Vec<String> {
    let Some(path) = dir.local_path() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    // File times come from the kernel's coarse clock: allow a second before the lease.
    let since =
        std::time::UNIX_EPOCH + Duration::from_millis((held.created_ms - 1000).max(0) as u64);
    let mut removed = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((base, n)) = name.rsplit_once('#') else {
            continue;
        };
        let staged = names.contains(&base)
            && !n.is_empty()
            && n.chars().all(|c| c.is_ascii_digit())
            && e.metadata()
                .and_then(|m| m.modified())
                .is_ok_and(|t| t >= since && t <= started);
        if staged {
            if !dry_run {
                let _ = std::fs::remove_file(e.path());
            }
            removed.push(e.path().display().to_string());
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::lease::MIN_TTL;

    async fn memory_txn(name: &str) -> (Arc<dyn ObjectStore>, Siblings, Txn) {
        let store: Arc<dyn ObjectStore> = Arc::new(object_store::memory::InMemory::new());
        let dir = StorageUrl::parse("memory://txn-tests/").unwrap();
        let s = Siblings::table(&dir, name).unwrap();
        let txn = Txn::begin(
            store.clone(),
            &s,
            &[&s.parquet],
            LeaseState::Writing,
            MIN_TTL,
        )
        .await
        .unwrap();
        (store, s, txn)
    }

    async fn put(store: &Arc<dyn ObjectStore>, url: &StorageUrl, bytes: &'static [u8]) {
        store
            .put(&url.object_path().unwrap(), PutPayload::from_static(bytes))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_holder_whose_lease_was_taken_over_removes_nothing() {
        let (store, s, mut txn) = memory_txn("t").await;
        txn.intend(&s.parquet, 4, crc32c::crc32c(b"rows"))
            .await
            .unwrap();
        put(&store, &s.parquet, b"rows").await;
        // A recovery pass takes the lease over.
        let Found::Lease(r) = lease::read(&store, &s.lease).await.unwrap() else {
            panic!("no lease")
        };
        let mut taken = r.lease.clone();
        taken.state = LeaseState::Reaping;
        taken.seq += 1;
        lease::swap(&store, &s.lease, &r.version, &taken)
            .await
            .unwrap()
            .unwrap();
        txn.abort().await;
        // The object and the recovery pass's lease are left to the recovery pass.
        assert!(store.head(&s.parquet.object_path().unwrap()).await.is_ok());
        let Found::Lease(now) = lease::read(&store, &s.lease).await.unwrap() else {
            panic!("the taken-over lease was removed")
        };
        assert_eq!(now.lease, taken);
    }

    #[tokio::test]
    async fn a_delete_planned_on_an_older_commit_removes_nothing() {
        let (store, s, txn) = memory_txn("t").await;
        txn.finish_unchanged().await;
        let manifest = |writer: &str| Manifest {
            format_version: 2,
            table: "t".into(),
            created_at: "2026-01-01T00:00:00.000Z".into(),
            writer: Some(writer.into()),
            kind: Some(crate::format::manifest::TableKind::ResultTable),
            source: None,
            task: None,
            model: None,
            key_column: None,
            rows: 1,
            schema_ipc: String::new(),
            index: None,
            files: Vec::new(),
            segment_max_bytes: None,
            row_bytes: None,
        };
        // The table was deleted and written again since the delete was planned.
        put(&store, &s.parquet, b"new rows").await;
        store
            .put(
                &s.manifest.object_path().unwrap(),
                PutPayload::from(manifest("new").to_json()),
            )
            .await
            .unwrap();
        let planned = lease::Lease {
            manifest: Some(Box::new(manifest("old"))),
            objects: vec![OwnedObject {
                name: s.parquet.file_name(),
                size: 8,
                crc32c: crc32c::crc32c(b"new rows"),
                e_tag: None,
            }],
            ..taken_lease()
        };
        let removal = complete_delete(&store, &s, &planned, false).await.unwrap();
        assert!(removal.removed.is_empty(), "{removal:?}");
        assert!(store.head(&s.parquet.object_path().unwrap()).await.is_ok());
        assert!(store.head(&s.manifest.object_path().unwrap()).await.is_ok());
    }

    fn taken_lease() -> lease::Lease {
        lease::Lease {
            version: lease::LEASE_VERSION,
            id: "00".into(),
            stem: "t".into(),
            state: LeaseState::Deleting,
            host: "h".into(),
            pid: 1,
            pid_start: None,
            boot_id: None,
            pid_ns: None,
            created_ms: 0,
            expires_ms: 0,
            seq: 0,
            planned: Vec::new(),
            objects: Vec::new(),
            manifest: None,
            abandoned: false,
        }
    }
}
