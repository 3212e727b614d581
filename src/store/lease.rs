//! The writer's lease: `<dir>/<stem>.idx.lease.json`, created (create-only) before any object
//! of a write, delete or re-index exists, and the only record that lets jammi-db remove an
//! uncommitted object. It names the objects the operation may create, and — before each
//! upload completes — the size and CRC32C (then the store's ETag) of each one, so an object
//! is removed only when its identity or its bytes prove this operation produced it.
//!
//! Liveness: a lease is live while it is unexpired — its holder renews it every TTL/4 with
//! a compare-and-swap on its ETag (every store, local directories included), so a lease
//! taken over by a recovery pass is never written again by its old holder, which then fails
//! before publishing. A lease whose holder provably shares this process namespace (the same
//! host, boot and PID namespace, all recorded in the lease) is dead as soon as its process
//! is gone; a pid check is never trusted otherwise (containers share host names, PID
//! namespaces reuse pids), and it only ever shortens a lease, never extends one.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use bytes::Bytes;
use object_store::{GetOptions, ObjectStore, PutMode, PutPayload, UpdateVersion};
use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::format::manifest::Manifest;
use crate::storage::StorageUrl;

/// Lease format version.
pub const LEASE_VERSION: u32 = 2;

/// Default lease TTL; `JAMMI_LEASE_TTL_SECS` overrides it.
pub const DEFAULT_TTL: Duration = Duration::from_secs(60);

/// Shortest TTL accepted: renewals run every TTL/4 and must land before the TTL runs out,
/// through the store's connect timeout (10 s) and retries.
pub const MIN_TTL: Duration = Duration::from_secs(10);

/// Operations in progress in this process (lease ids). Liveness of a lease written by this
/// pid cannot be judged by asking the OS.
static ACTIVE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// What the holder of a lease is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Creating objects. A dead holder's recorded objects are removed.
    Writing,
    /// Every object is written and the manifest below is being published. A dead holder's
    /// commit is completed (rolled forward).
    Committing,
    /// Removing a committed table: manifest first, then the recorded objects. A dead holder's
    /// delete is completed.
    Deleting,
    /// A recovery pass took the lease over from a dead holder and removes its objects.
    Reaping,
}

/// An object the lease's operation created (or is about to complete), with its proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedObject {
    /// File name in the lease's directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// CRC32C of the whole object.
    pub crc32c: u32,
    /// The store's ETag once the upload completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_tag: Option<String>,
}

impl From<&crate::format::manifest::FileEntry> for OwnedObject {
    /// The record of a committed sibling, as a delete plans it.
    fn from(f: &crate::format::manifest::FileEntry) -> Self {
        OwnedObject {
            name: f.name.clone(),
            size: f.size,
            crc32c: f.crc32c,
            e_tag: f.e_tag.clone(),
        }
    }
}

/// Marks lease `id` as held by this process while the guard lives (a recovery pass that
/// settles it), so other passes of this process see it live.
pub(crate) struct ActiveGuard(String);

impl ActiveGuard {
    pub(crate) fn hold(id: &str) -> Option<ActiveGuard> {
        ACTIVE
            .lock()
            .expect("lock")
            .insert(id.to_string())
            .then(|| ActiveGuard(id.to_string()))
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        ACTIVE.lock().expect("lock").remove(&self.0);
    }
}

/// Contents of a lease object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lease {
    /// Lease format version (2).
    pub version: u32,
    /// Random id of the operation; also recorded as the manifest's `writer`.
    pub id: String,
    /// Stem of the siblings (the table name for result tables).
    pub stem: String,
    /// What the holder is doing.
    pub state: LeaseState,
    /// Host name of the holder.
    pub host: String,
    /// Process id of the holder.
    pub pid: u32,
    /// Start time of that process (Linux clock ticks since boot), against pid reuse.
    #[serde(default)]
    pub pid_start: Option<u64>,
    /// Boot id of the holder's kernel (`/proc/sys/kernel/random/boot_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_id: Option<String>,
    /// The holder's PID namespace (`/proc/self/ns/pid`, e.g. `pid:[4026531836]`): its pid
    /// means something here only when this matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_ns: Option<String>,
    /// Creation time, Unix milliseconds.
    pub created_ms: i64,
    /// Expiry, Unix milliseconds; the holder renews it every TTL/4.
    pub expires_ms: i64,
    /// Bumped by every write of the lease, so a read-back tells which write landed.
    pub seq: u64,
    /// File names the operation may create (checked free before anything is written).
    pub planned: Vec<String>,
    /// Objects created, with what proves them.
    #[serde(default)]
    pub objects: Vec<OwnedObject>,
    /// The manifest being published (state `committing`), or removed (state `deleting`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<Box<Manifest>>,
    /// Set by a holder that gave up without removing the lease (its cleanup failed): the
    /// next recovery pass settles it whether or not the holder's process still runs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub abandoned: bool,
}

/// The TTL in effect (`JAMMI_LEASE_TTL_SECS` or the default), refused below [`MIN_TTL`].
pub fn ttl_from_env() -> Result<Duration> {
    let ttl = match std::env::var("JAMMI_LEASE_TTL_SECS") {
        Ok(v) => Duration::from_secs(v.trim().parse().map_err(|_| {
            JammiError::Config(format!(
                "JAMMI_LEASE_TTL_SECS must be a whole number of seconds, got '{v}'"
            ))
        })?),
        Err(_) => DEFAULT_TTL,
    };
    check_ttl(ttl)
}

/// Longest TTL accepted: a crashed writer on another host blocks recovery this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Refuses a TTL too small to renew in time, or longer than a day.
pub fn check_ttl(ttl: Duration) -> Result<Duration> {
    if ttl > MAX_TTL {
        return Err(JammiError::Config(format!(
            "lease TTL of {} s is longer than the maximum of {} s",
            ttl.as_secs(),
            MAX_TTL.as_secs()
        )));
    }
    if ttl < MIN_TTL {
        return Err(JammiError::Config(format!(
            "lease TTL of {} s is too small to renew in time; the minimum is {} s",
            ttl.as_secs_f64(),
            MIN_TTL.as_secs()
        )));
    }
    Ok(ttl)
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// `bytes` random bytes in hex (ids of writes and segments).
pub(crate) fn random_hex(bytes: usize) -> String {
    (0..bytes)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Start time of a process (field 22 of `/proc/<pid>/stat`), `None` when unknown.
pub(crate) fn process_start(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is parenthesised and may hold spaces: count after it.
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Whether process `pid` of this namespace (started at `start`) still runs. `None`: cannot
/// tell.
fn process_alive(pid: u32, start: Option<u64>) -> Option<bool> {
    if !cfg!(target_os = "linux") {
        return None;
    }
    match process_start(pid) {
        None => Some(false),
        Some(now) => Some(start.is_none_or(|s| s == now)),
    }
}

/// This kernel's boot id.
pub(crate) fn boot_id() -> Option<String> {
    static ID: LazyLock<Option<String>> = LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    });
    ID.clone()
}

/// This process's PID namespace.
pub(crate) fn pid_namespace() -> Option<String> {
    static NS: LazyLock<Option<String>> = LazyLock::new(|| {
        std::fs::read_link("/proc/self/ns/pid")
            .ok()
            .and_then(|p| p.to_str().map(str::to_string))
    });
    NS.clone()
}

impl Lease {
    /// Whether the holder may still be running. `ttl` is the reader's TTL, allowed on top
    /// of the expiry for clock skew between hosts.
    pub fn is_live(&self, ttl: Duration) -> bool {
        if self.abandoned {
            return false;
        }
        let unexpired = self.expires_ms + ttl.as_millis() as i64 > now_ms();
        unexpired && !self.holder_provably_gone()
    }

    /// `true` only when the holder shares this process namespace (host, boot and PID
    /// namespace recorded and equal to ours) and its process no longer runs — or, for a
    /// lease of this very process, no operation of this process holds it.
    fn holder_provably_gone(&self) -> bool {
        let ours = self.host == host()
            && self.boot_id.is_some()
            && self.boot_id == boot_id()
            && self.pid_ns.is_some()
            && self.pid_ns == pid_namespace();
        if !ours {
            return false;
        }
        if self.pid == std::process::id() {
            return !ACTIVE.lock().expect("lock").contains(&self.id);
        }
        process_alive(self.pid, self.pid_start) == Some(false)
    }

    /// Sets the holder to this process, expiring one TTL from now.
    pub(crate) fn hold_here(&mut self, ttl: Duration) {
        self.host = host();
        self.pid = std::process::id();
        self.pid_start = process_start(self.pid);
        self.boot_id = boot_id();
        self.pid_ns = pid_namespace();
        self.expires_ms = now_ms() + ttl.as_millis() as i64;
    }

    fn encode(&self) -> PutPayload {
        PutPayload::from(serde_json::to_vec_pretty(self).expect("lease serialises"))
    }
}

/// A lease as read, with the version a conditional update must match.
#[derive(Debug, Clone)]
pub(crate) struct Read {
    pub lease: Lease,
    pub version: UpdateVersion,
}

/// What is at a lease's URL.
#[derive(Debug)]
pub(crate) enum Found {
    /// Nothing.
    Absent,
    /// A lease.
    Lease(Box<Read>),
    /// An object that is not a jammi-db lease (never touched).
    Foreign,
}

/// Reads the lease at `url`.
pub(crate) async fn read(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<Found> {
    let got = match store
        .get_opts(&url.object_path()?, GetOptions::default())
        .await
    {
        Ok(g) => g,
        Err(object_store::Error::NotFound { .. }) => return Ok(Found::Absent),
        Err(e) => return Err(JammiError::storage(url, e)),
    };
    let version = UpdateVersion {
        e_tag: got.meta.e_tag.clone(),
        version: got.meta.version.clone(),
    };
    let bytes = got.bytes().await.map_err(|e| JammiError::storage(url, e))?;
    Ok(match parse(&bytes) {
        Some(lease) => Found::Lease(Box::new(Read { lease, version })),
        None => Found::Foreign,
    })
}

pub(crate) fn parse(bytes: &Bytes) -> Option<Lease> {
    serde_json::from_slice::<Lease>(bytes)
        .ok()
        .filter(|l| l.version == LEASE_VERSION)
}

/// Writes `lease` over the version `expected` (a compare-and-swap on every store). A lost
/// response is settled by reading back: the write landed iff the lease now holds `lease`.
/// `Ok(None)`: the lease is no longer the one expected (taken over or removed).
pub(crate) async fn swap(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    expected: &UpdateVersion,
    lease: &Lease,
) -> Result<Option<UpdateVersion>> {
    let mode = PutMode::Update(expected.clone());
    match store
        .put_opts(&url.object_path()?, lease.encode(), mode.into())
        .await
    {
        Ok(r) => Ok(Some(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })),
        Err(object_store::Error::Precondition { .. } | object_store::Error::NotFound { .. }) => {
            Ok(None)
        }
        Err(e) => match read(store, url).await {
            Ok(Found::Lease(r)) if r.lease == *lease => Ok(Some(r.version)),
            Ok(Found::Lease(r)) if r.lease.id == lease.id && r.lease.seq < lease.seq => {
                Err(JammiError::storage(url, e))
            }
            Ok(_) => Ok(None),
            Err(_) => Err(JammiError::storage(url, e)),
        },
    }
}

/// Creates `lease` at `url` (create-only). `Ok(false)`: something is already there. A lost
/// response is settled by reading back.
pub(crate) async fn create(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    lease: &Lease,
) -> Result<Option<UpdateVersion>> {
    match store
        .put_opts(&url.object_path()?, lease.encode(), PutMode::Create.into())
        .await
    {
        Ok(r) => Ok(Some(UpdateVersion {
            e_tag: r.e_tag,
            version: r.version,
        })),
        Err(e) => match read(store, url).await? {
            Found::Lease(r) if r.lease.id == lease.id => Ok(Some(r.version)),
            _ if matches!(e, object_store::Error::AlreadyExists { .. }) => Ok(None),
            Found::Absent => Err(JammiError::storage(url, e)),
            _ => Ok(None),
        },
    }
}

/// Removes the lease at `url` if it is still exactly `lease`.
pub(crate) async fn remove_if(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    lease: &Lease,
) -> Result<()> {
    match read(store, url).await? {
        Found::Lease(r) if r.lease == *lease => match store.delete(&url.object_path()?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(JammiError::storage(url, e)),
        },
        _ => Ok(()),
    }
}

use object_store::ObjectStoreExt;

/// The holder's side of a lease: its current contents and version, renewed in the
/// background where the store supports it.
pub(crate) struct LeaseGuard {
    url: StorageUrl,
    store: Arc<dyn ObjectStore>,
    ttl: Duration,
    held: Arc<tokio::sync::Mutex<Held>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
    id: String,
}

struct Held {
    lease: Lease,
    version: UpdateVersion,
    /// Unix ms until which the lease is known to be held (last successful write + TTL).
    valid_until: i64,
    /// Set once a write found the lease taken over.
    lost: bool,
}

impl LeaseGuard {
    /// Creates a lease for `stem` at `url`, planning `planned`. `Ok(None)`: another lease (or
    /// a foreign object) is there.
    pub(crate) async fn create(
        store: Arc<dyn ObjectStore>,
        url: &StorageUrl,
        stem: &str,
        state: LeaseState,
        planned: Vec<String>,
        ttl: Duration,
    ) -> Result<Option<LeaseGuard>> {
        let mut lease = Lease {
            version: LEASE_VERSION,
            id: format!("{:032x}", rand::random::<u128>()),
            stem: stem.to_string(),
            state,
            host: String::new(),
            pid: 0,
            pid_start: None,
            boot_id: None,
            pid_ns: None,
            created_ms: now_ms(),
            expires_ms: 0,
            seq: 0,
            planned,
            objects: Vec::new(),
            manifest: None,
            abandoned: false,
        };
        lease.hold_here(ttl);
        ACTIVE.lock().expect("lock").insert(lease.id.clone());
        let created = create(&store, url, &lease).await;
        let version = match created {
            Ok(Some(v)) => v,
            other => {
                ACTIVE.lock().expect("lock").remove(&lease.id);
                return other.map(|_| None);
            }
        };
        let id = lease.id.clone();
        let held = Arc::new(tokio::sync::Mutex::new(Held {
            valid_until: lease.expires_ms,
            lease,
            version,
            lost: false,
        }));
        let renewer = {
            let (store, url, held) = (store.clone(), url.clone(), held.clone());
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 4).await;
                    let mut h = held.lock().await;
                    if h.lost {
                        return;
                    }
                    if let Err(e) = write_locked(&store, &url, ttl, &mut h, |_| {}).await {
                        tracing::warn!("renewing the lease at {url} failed: {e}");
                    }
                }
            })
        };
        Ok(Some(LeaseGuard {
            url: url.clone(),
            store,
            ttl,
            held,
            renewer: Some(renewer),
            id,
        }))
    }

    /// The operation's id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// A copy of the lease as last written.
    pub(crate) async fn lease(&self) -> Lease {
        self.held.lock().await.lease.clone()
    }

    /// Changes the lease with `change` (and extends it). Fails when the lease was taken over
    /// or has lapsed: the operation must then stop before publishing anything.
    pub(crate) async fn update(&self, change: impl FnOnce(&mut Lease)) -> Result<()> {
        let mut h = self.held.lock().await;
        if h.lost {
            return Err(self.lost());
        }
        if now_ms() > h.valid_until {
            h.lost = true;
            return Err(JammiError::LeaseLost {
                url: self.url.to_string(),
                reason: "it lapsed before it could be renewed".into(),
            });
        }
        write_locked(&self.store, &self.url, self.ttl, &mut h, change).await
    }

    fn lost(&self) -> JammiError {
        JammiError::LeaseLost {
            url: self.url.to_string(),
            reason: "a recovery pass took it over".into(),
        }
    }

    /// Stops renewing and removes the lease — only if it is still exactly what this holder
    /// last wrote (a recovery pass that took it over keeps it).
    pub(crate) async fn release(mut self) -> Result<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let ours = self.held.lock().await.lease.clone();
        remove_if(&self.store, &self.url, &ours).await
    }

    /// Gives the lease up without removing it (its holder could not finish cleaning up):
    /// marks it abandoned, so the next recovery pass settles it even while this process
    /// runs. Best effort: an unmarked lease is settled once this process exits.
    pub(crate) async fn abandon(mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let mut h = self.held.lock().await;
        if !h.lost {
            let _ = write_locked(&self.store, &self.url, self.ttl, &mut h, |l| {
                l.abandoned = true
            })
            .await;
        }
    }
}

/// Writes the held lease after `change`, extending it; marks it lost when taken over.
async fn write_locked(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    ttl: Duration,
    h: &mut Held,
    change: impl FnOnce(&mut Lease),
) -> Result<()> {
    let mut next = h.lease.clone();
    change(&mut next);
    next.seq += 1;
    let started = now_ms();
    next.expires_ms = started + ttl.as_millis() as i64;
    match swap(store, url, &h.version, &next).await? {
        Some(v) => {
            h.lease = next;
            h.version = v;
            h.valid_until = started + ttl.as_millis() as i64;
            Ok(())
        }
        None => {
            h.lost = true;
            Err(JammiError::LeaseLost {
                url: url.to_string(),
                reason: "a recovery pass took it over".into(),
            })
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        ACTIVE.lock().expect("lock").remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory() -> (Arc<dyn ObjectStore>, StorageUrl) {
        let url = StorageUrl::parse("memory://lease-tests/t.idx.lease.json").unwrap();
        (Arc::new(object_store::memory::InMemory::new()), url)
    }

    async fn held(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> LeaseGuard {
        LeaseGuard::create(
            store.clone(),
            url,
            "t",
            LeaseState::Writing,
            vec![],
            MIN_TTL,
        )
        .await
        .unwrap()
        .expect("no lease there yet")
    }

    #[tokio::test]
    async fn a_lease_taken_over_is_never_written_again_by_its_old_holder() {
        let (store, url) = memory();
        let guard = held(&store, &url).await;
        guard
            .update(|l| l.planned.push("t.parquet".into()))
            .await
            .unwrap();
        // A recovery pass takes the lease over (compare-and-swap), then removes it.
        let Found::Lease(r) = read(&store, &url).await.unwrap() else {
            panic!("no lease")
        };
        let mut taken = r.lease.clone();
        taken.state = LeaseState::Reaping;
        taken.seq += 1;
        assert!(
            swap(&store, &url, &r.version, &taken)
                .await
                .unwrap()
                .is_some()
        );
        // The old holder's next write (a renewal, a record) fails and writes nothing.
        let e = guard.update(|l| l.seq += 0).await.unwrap_err();
        assert!(matches!(e, JammiError::LeaseLost { .. }), "{e}");
        let Found::Lease(now) = read(&store, &url).await.unwrap() else {
            panic!("lease gone")
        };
        assert_eq!(now.lease.state, LeaseState::Reaping);
        store.delete(&url.object_path().unwrap()).await.unwrap();
        // Once lost, a holder never recreates the lease, however often it tries.
        assert!(guard.update(|_| {}).await.is_err());
        assert!(matches!(read(&store, &url).await.unwrap(), Found::Absent));
    }

    #[tokio::test]
    async fn a_holder_whose_lease_lapsed_fails_before_writing() {
        let (store, url) = memory();
        let guard = held(&store, &url).await;
        guard.held.lock().await.valid_until = now_ms() - 1;
        let e = guard
            .update(|l| l.state = LeaseState::Committing)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("lapsed"), "{e}");
        let Found::Lease(r) = read(&store, &url).await.unwrap() else {
            panic!("no lease")
        };
        assert_eq!(r.lease.state, LeaseState::Writing, "nothing was written");
    }

    #[test]
    fn a_ttl_below_the_minimum_is_refused_by_value() {
        let e = check_ttl(Duration::from_secs(3)).unwrap_err().to_string();
        assert!(e.contains("3 s") && e.contains("10 s"), "{e}");
        let e = check_ttl(Duration::from_secs(u64::MAX / 2))
            .unwrap_err()
            .to_string();
        assert!(e.contains("maximum"), "{e}");
        assert_eq!(check_ttl(MIN_TTL).unwrap(), MIN_TTL);
    }

    #[test]
    fn this_process_is_alive_and_its_start_time_is_checked() {
        let pid = std::process::id();
        let start = process_start(pid);
        if cfg!(target_os = "linux") {
            assert!(start.is_some());
            assert_eq!(process_alive(pid, start), Some(true));
            assert_eq!(process_alive(pid, start.map(|s| s + 1)), Some(false));
        }
    }
}
