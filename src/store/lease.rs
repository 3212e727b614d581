//! Writer leases: `<root>/_jammi/leases/<table>.json`, written before the first sibling and
//! renewed while the write runs, so a recovery pass (in any process) can tell a live
//! writer's uncommitted files from a crashed writer's.
//!
//! A lease is live when: it belongs to an active write of this process; or it was written on
//! this host by a process that still runs and it has not expired; or it was written on
//! another host and has not expired. The TTL (`JAMMI_LEASE_TTL_SECS`, default 60 s) bounds
//! how long a crashed writer on another host blocks recovery; renewals run every TTL/4.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};
use crate::storage::StorageUrl;

/// Writes in progress in this process (lease ids). Process-wide on purpose: liveness of a
/// lease written by this pid cannot be judged by asking the OS.
static ACTIVE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// Contents of a lease object.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Lease {
    /// Random id of this write.
    pub id: String,
    /// Table being written.
    pub table: String,
    /// Host name of the writer.
    pub host: String,
    /// Process id of the writer.
    pub pid: u32,
    /// Expiry, Unix milliseconds.
    pub expires_ms: i64,
}

pub(crate) fn ttl() -> Duration {
    Duration::from_secs(
        std::env::var("JAMMI_LEASE_TTL_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(60),
    )
}

pub(crate) fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn pid_alive(pid: u32) -> bool {
    if cfg!(target_os = "linux") {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
    } else {
        true
    }
}

impl Lease {
    /// Whether the writer holding this lease may still be running.
    pub fn is_live(&self) -> bool {
        let unexpired = self.expires_ms > now_ms();
        if self.host == host() {
            if self.pid == std::process::id() {
                return ACTIVE.lock().expect("lock").contains(&self.id);
            }
            return unexpired && pid_alive(self.pid);
        }
        unexpired
    }
}

/// The URL of a table's lease under `root`.
pub(crate) fn lease_url(root: &StorageUrl, table: &str) -> Result<StorageUrl> {
    root.join(&format!("_jammi/leases/{table}.json"))
}

/// Reads a lease; `None` if absent or unreadable (an unreadable lease is treated as dead).
pub(crate) async fn read(store: &Arc<dyn ObjectStore>, url: &StorageUrl) -> Result<Option<Lease>> {
    match store.get(&url.object_path()?).await {
        Ok(r) => {
            let bytes = r.bytes().await.map_err(|e| JammiError::storage(url, e))?;
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(JammiError::storage(url, e)),
    }
}

/// A held lease: renewed in the background until released or dropped.
pub(crate) struct LeaseGuard {
    pub(crate) lease: Lease,
    url: StorageUrl,
    store: Arc<dyn ObjectStore>,
    renewer: tokio::task::JoinHandle<()>,
}

impl LeaseGuard {
    /// Takes a lease on `table` (create-only: a second writer of the same name fails).
    pub(crate) async fn acquire(
        store: Arc<dyn ObjectStore>,
        root: &StorageUrl,
        table: &str,
    ) -> Result<LeaseGuard> {
        let url = lease_url(root, table)?;
        let lease = Lease {
            id: format!("{:016x}", rand::random::<u64>()),
            table: table.to_string(),
            host: host(),
            pid: std::process::id(),
            expires_ms: now_ms() + ttl().as_millis() as i64,
        };
        ACTIVE.lock().expect("lock").insert(lease.id.clone());
        let payload = PutPayload::from(serde_json::to_vec(&lease).expect("lease serialises"));
        let put = store
            .put_opts(
                &url.object_path()?,
                payload,
                object_store::PutMode::Create.into(),
            )
            .await;
        if let Err(e) = put {
            ACTIVE.lock().expect("lock").remove(&lease.id);
            return Err(match e {
                object_store::Error::AlreadyExists { .. } => JammiError::AlreadyExists {
                    kind: "write in progress for table",
                    name: table.to_string(),
                },
                e => JammiError::storage(&url, e),
            });
        }
        let renewer = {
            let (store, url, mut lease) = (store.clone(), url.clone(), lease.clone());
            tokio::spawn(async move {
                let every = ttl() / 4;
                loop {
                    tokio::time::sleep(every).await;
                    lease.expires_ms = now_ms() + ttl().as_millis() as i64;
                    let Ok(path) = url.object_path() else { return };
                    let body = PutPayload::from(serde_json::to_vec(&lease).expect("lease"));
                    if let Err(e) = store.put(&path, body).await {
                        tracing::warn!("renewing the write lease at {url} failed: {e}");
                    }
                }
            })
        };
        Ok(LeaseGuard {
            lease,
            url,
            store,
            renewer,
        })
    }

    /// Errors unless the lease on storage is still this write's (checked before commit, so a
    /// write whose files a recovery pass reclaimed never publishes a manifest).
    pub(crate) async fn check_held(&self) -> Result<()> {
        match read(&self.store, &self.url).await? {
            Some(l) if l.id == self.lease.id => Ok(()),
            _ => Err(JammiError::Storage {
                url: self.url.to_string(),
                source: object_store::Error::Precondition {
                    path: self.url.to_string(),
                    source: "the write lease was lost (a recovery pass reclaimed this write)"
                        .into(),
                },
            }),
        }
    }

    /// Stops renewing and deletes the lease.
    pub(crate) async fn release(self) -> Result<()> {
        self.renewer.abort();
        let r = match self.store.delete(&self.url.object_path()?).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(JammiError::storage(&self.url, e)),
        };
        ACTIVE.lock().expect("lock").remove(&self.lease.id);
        r
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.renewer.abort();
        ACTIVE.lock().expect("lock").remove(&self.lease.id);
    }
}
