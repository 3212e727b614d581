//! The listing filter SQL sessions get: a directory's jammi-db sidecars (manifest, graph,
//! rowmap, lease, staged parts) are left out of DataFusion's listings, so a source or an
//! external table over the directory never reads them as data.
//!
//! Names alone prove nothing: a user's own `notes.idx.manifest.json` stays visible. The
//! objects of stem `s` are hidden only when `s.idx.manifest.json` is a manifest jammi-db
//! wrote (it parses, and names only the siblings of `s`) or `s.idx.lease.json` is one of its
//! leases for `s`. Proofs are kept per object version, so a listing of an unchanged
//! directory reads nothing more.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};

use crate::format::manifest::{FileRole, Manifest};
use crate::format::naming::{self, LEASE_SUFFIX, MANIFEST_SUFFIX, Siblings};
use crate::lru::{BoundedLru, Weighed};
use crate::storage::{ListingFilter, StorageUrl};
use crate::store::lease;

/// Proofs remembered (record path and version → whether it is jammi-db's).
const REMEMBERED: u64 = 1 << 14;

struct Proof(bool);

impl Weighed for Proof {
    fn weight(&self) -> u64 {
        1
    }
}

/// The filter (see the module docs).
pub(crate) struct OwnSidecars {
    proofs: Mutex<BoundedLru<(Path, String), Proof>>,
}

impl std::fmt::Debug for OwnSidecars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OwnSidecars")
    }
}

impl OwnSidecars {
    pub(crate) fn new() -> Self {
        OwnSidecars {
            proofs: Mutex::new(BoundedLru::new(REMEMBERED)),
        }
    }

    /// Whether the record `meta` (a manifest or lease of `stem`) is jammi-db's.
    async fn proves(&self, store: &Arc<dyn ObjectStore>, meta: &ObjectMeta, stem: &str) -> bool {
        let version = format!(
            "{}|{}|{}",
            meta.e_tag.as_deref().unwrap_or_default(),
            meta.size,
            meta.last_modified.timestamp_nanos_opt().unwrap_or_default()
        );
        let key = (meta.location.clone(), version);
        if let Some(p) = self.proofs.lock().expect("lock").get(&key) {
            return p.0;
        }
        let proven = match store.get(&meta.location).await {
            Ok(got) => match got.bytes().await {
                Ok(bytes) => record_is_own(&meta.location, &bytes, stem),
                Err(_) => return false,
            },
            // Unreadable now: visible, and asked again next time.
            Err(_) => return false,
        };
        self.proofs.lock().expect("lock").put(key, Proof(proven));
        proven
    }
}

/// Whether `bytes`, read at `location`, is a manifest or lease jammi-db wrote for `stem`.
fn record_is_own(location: &Path, bytes: &bytes::Bytes, stem: &str) -> bool {
    let name = location.filename().unwrap_or_default();
    if name.ends_with(LEASE_SUFFIX) {
        return lease::parse(bytes).is_some_and(|l| l.stem == stem);
    }
    let Ok(m) = Manifest::from_json(stem, bytes) else {
        return false;
    };
    let Some(parquet) = m.file(FileRole::Parquet) else {
        return false;
    };
    // Only the names matter to the check: any scheme places them.
    let Ok(url) = StorageUrl::parse(&format!("memory:///{location}")) else {
        return false;
    };
    let Ok(file) = url.parent().join(&parquet.name) else {
        return false;
    };
    let siblings = match Siblings::of_file(&file) {
        Ok(s) if s.stem == stem => Ok(s),
        _ => match Siblings::legacy_of_file(&file) {
            Ok(Some(s)) if s.stem == stem => Ok(s),
            _ => Err(()),
        },
    };
    siblings.is_ok_and(|s| m.check_names(&s).is_ok())
}

#[async_trait]
impl ListingFilter for OwnSidecars {
    fn is_candidate(&self, file_name: &str) -> bool {
        naming::stem_of_sidecar(file_name).is_some()
    }

    async fn hidden(
        &self,
        store: &Arc<dyn ObjectStore>,
        candidates: &[ObjectMeta],
    ) -> HashSet<Path> {
        // Candidates by (directory, stem); the records among them prove their group.
        let mut groups: HashMap<(String, String), Vec<&ObjectMeta>> = HashMap::new();
        for m in candidates {
            let name = m.location.filename().unwrap_or_default();
            let Some(stem) = naming::stem_of_sidecar(name) else {
                continue;
            };
            let dir = m.location.as_ref()[..m.location.as_ref().len() - name.len()].to_string();
            groups.entry((dir, stem.to_string())).or_default().push(m);
        }
        let mut hidden = HashSet::new();
        for ((_, stem), metas) in groups {
            let record = |suffix: &str| {
                let want = format!("{stem}{suffix}");
                metas
                    .iter()
                    .find(|m| m.location.filename() == Some(want.as_str()))
            };
            let mut own = false;
            for suffix in [MANIFEST_SUFFIX, LEASE_SUFFIX] {
                if let Some(m) = record(suffix)
                    && self.proves(store, m, &stem).await
                {
                    own = true;
                    break;
                }
            }
            if own {
                hidden.extend(metas.iter().map(|m| m.location.clone()));
            }
        }
        hidden
    }
}
