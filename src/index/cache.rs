//! Loaded indexes, kept in memory across queries (LRU under a byte budget, shared by
//! concurrent queries, one load per key at a time).
//!
//! Local sidecars are memory-mapped in place (USearch `view`); remote ones are downloaded
//! once into the [`LocalCache`] and mapped from there. Every load verifies the sidecars'
//! sizes and CRC32C against the manifest, and the index header against its parameters.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use object_store::{ObjectStore, ObjectStoreExt};

use crate::error::{JammiError, Result};
use crate::format::manifest::{FileRole, IndexInfo, Manifest};
use crate::format::rowmap;
use crate::index::quantize::VectorFile;
use crate::lru::BoundedLru;
use crate::storage::StorageUrl;
use crate::storage::cache::LocalCache;

/// Default in-memory budget for loaded indexes (4 GiB); `JAMMI_INDEX_CACHE_BYTES` overrides.
pub const DEFAULT_INDEX_CACHE_BYTES: u64 = 4 << 30;

pub use crate::index::loaded::LoadedIndex;

/// Counters of the index cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexCacheStats {
    /// Lookups served from memory.
    pub hits: u64,
    /// Lookups that had to load.
    pub misses: u64,
    /// Downloads of remote sidecars into the local cache.
    pub downloads: u64,
    /// Entries evicted to stay within budget.
    pub evictions: u64,
    /// Entries held now.
    pub entries: u64,
    /// Bytes held now.
    pub bytes: u64,
    /// Budget in bytes.
    pub budget: u64,
}

/// The in-memory LRU of loaded indexes.
#[derive(Debug)]
pub struct IndexCache {
    local: LocalCache,
    entries: Mutex<BoundedLru<String, Arc<LoadedIndex>>>,
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    hits: AtomicU64,
    misses: AtomicU64,
    downloads: AtomicU64,
}

impl IndexCache {
    /// A cache holding at most `budget` bytes of indexes, downloading into `local`.
    pub fn new(budget: u64, local: LocalCache) -> Self {
        IndexCache {
            local,
            entries: Mutex::new(BoundedLru::new(budget)),
            gates: Mutex::default(),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
        }
    }

    /// A cache with the default budget and local directory (disabled, with a warning, when
    /// that directory is unusable).
    pub fn with_defaults() -> Self {
        let budget = std::env::var("JAMMI_INDEX_CACHE_BYTES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(DEFAULT_INDEX_CACHE_BYTES);
        Self::new(
            budget,
            LocalCache::new_or_disabled(
                LocalCache::default_dir(),
                crate::storage::cache::DEFAULT_CACHE_BYTES,
            ),
        )
    }

    /// Counters and current size.
    pub fn stats(&self) -> IndexCacheStats {
        let e = self.entries.lock().expect("lock");
        IndexCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            downloads: self.downloads.load(Ordering::Relaxed),
            evictions: e.evictions(),
            entries: e.len() as u64,
            bytes: e.bytes(),
            budget: e.budget(),
        }
    }

    /// Drops every entry.
    pub fn clear(&self) {
        self.entries.lock().expect("lock").clear();
    }

    /// Drops the entries of table `name` (after it was deleted).
    pub fn forget_table(&self, name: &str) {
        let prefix = format!("{name}-");
        self.entries
            .lock()
            .expect("lock")
            .retain(|k| !k.starts_with(&prefix));
    }

    fn lookup(&self, key: &str) -> Option<Arc<LoadedIndex>> {
        self.entries
            .lock()
            .expect("lock")
            .get(&key.to_string())
            .cloned()
    }

    /// The loaded index of a committed table whose siblings live under `dir`.
    pub async fn get(
        &self,
        dir: &StorageUrl,
        store: &Arc<dyn ObjectStore>,
        manifest: &Manifest,
    ) -> Result<Arc<LoadedIndex>> {
        Ok(self.get_traced(dir, store, manifest).await?.0)
    }

    /// [`get`](Self::get), also saying whether this call loaded the index (`true`) or found
    /// it in memory.
    pub async fn get_traced(
        &self,
        dir: &StorageUrl,
        store: &Arc<dyn ObjectStore>,
        manifest: &Manifest,
    ) -> Result<(Arc<LoadedIndex>, bool)> {
        let (Some(info), Some(idx), Some(rm)) = (
            manifest.index.as_ref(),
            manifest.file(FileRole::Index),
            manifest.file(FileRole::Rowmap),
        ) else {
            return Err(JammiError::InvalidInput(format!(
                "result table '{}' has no vector index",
                manifest.table
            )));
        };
        let key = format!("{}-{:08x}-{:08x}", manifest.table, idx.crc32c, rm.crc32c);
        if let Some(hit) = self.lookup(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((hit, false));
        }
        let gate = self
            .gates
            .lock()
            .expect("lock")
            .entry(key.clone())
            .or_default()
            .clone();
        let _g = gate.lock().await;
        if let Some(hit) = self.lookup(&key) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((hit, false));
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let corrupt = |reason: String| JammiError::Corrupt {
            kind: manifest.kind_name(),
            table: manifest.table.clone(),
            reason,
        };

        // Rowmap (small, read whole) and index (local file in place, or downloaded into the
        // local cache) are fetched side by side.
        let rowmap = async {
            let rm_url = dir.join(&rm.name)?;
            let rm_bytes = store
                .get(&rm_url.object_path()?)
                .await
                .map_err(|e| JammiError::storage(&rm_url, e))?
                .bytes()
                .await
                .map_err(|e| JammiError::storage(&rm_url, e))?;
            if rm_bytes.len() as u64 != rm.size || crc32c::crc32c(&rm_bytes) != rm.crc32c {
                return Err(corrupt(format!(
                    "{} does not match its manifest checksum",
                    rm.name
                )));
            }
            rowmap::decode(&rm_bytes)
        };
        let index_file = async {
            let idx_url = dir.join(&idx.name)?;
            if let Some(p) = idx_url.local_path() {
                let (size, crc) = local_crc(&p).await?;
                return Ok::<_, JammiError>((p, None, size, crc));
            }
            let location = idx_url.object_path()?;
            // A copy already in the cache is checked; one that fails is fetched again, once.
            let mut refetched = false;
            loop {
                let (file, fresh_crc) = self.local.fetch(&key, store, &location, idx.size).await?;
                if fresh_crc.is_some() {
                    self.downloads.fetch_add(1, Ordering::Relaxed);
                }
                let crc = match fresh_crc {
                    Some(crc) => crc,
                    None => local_crc(file.path()).await?.1,
                };
                if crc == idx.crc32c || fresh_crc.is_some() || refetched {
                    let path = file.path().to_path_buf();
                    return Ok((path, Some(file), idx.size, crc));
                }
                tracing::warn!(
                    "the cached copy of {idx_url} fails its checksum; fetching it again"
                );
                drop(file);
                self.local.invalidate(&key);
                refetched = true;
            }
        };
        // A quantised index's exact vectors are checked (not read) beside the two.
        let exact = async {
            match manifest.file(FileRole::Vectors) {
                Some(v) if info.quantization != crate::index::Quantization::F32 => {
                    let f = vector_file(dir, store, v, info.dimensions)
                        .await
                        .map_err(|e| corrupt(e.to_string()))?;
                    Ok(Some((f, v)))
                }
                _ => Ok(None),
            }
        };
        let (rowmap::RowMap { rows: rowmap, keys }, (path, file, size, crc), exact) =
            tokio::try_join!(rowmap, index_file, exact)?;
        if size != idx.size || crc != idx.crc32c {
            return Err(corrupt(format!(
                "{} does not match its manifest checksum",
                idx.name
            )));
        }
        let index = open_view(&path, info).map_err(|e| corrupt(e.to_string()))?;
        if index.size() != rowmap.len() {
            return Err(corrupt(format!(
                "index holds {} vectors but the rowmap {}",
                index.size(),
                rowmap.len()
            )));
        }
        let exact = match exact {
            Some((f, v)) => {
                if let Some(slot) = f.copy_slot()
                    && self.local.has_room_for(v.size)
                {
                    let key = format!("{}-vectors-{:08x}", manifest.table, v.crc32c);
                    let copy = self.download_copy(key, store, dir.join(&v.name)?, v, slot);
                    f.copy_after_first_read(copy);
                }
                Some(f)
            }
            None => None,
        };
        let loaded = LoadedIndex::new(
            index,
            rowmap,
            keys,
            info.clone(),
            idx.size + rm.size,
            file,
            path,
        );
        let loaded = Arc::new(loaded.with_exact(exact));
        self.insert(key.clone(), loaded.clone());
        self.gates.lock().expect("lock").remove(&key);
        Ok((loaded, true))
    }

    /// What downloads the remote exact-vectors file `entry` (at `url`) into the local cache
    /// in the background and maps it into `slot` once its checksum matches: later searches
    /// then read candidates from memory instead of the store. Only with a cache directory
    /// that has room for it (never into temp files, never evicting the graph just
    /// fetched). A failure only warns.
    fn download_copy(
        &self,
        key: String,
        store: &Arc<dyn ObjectStore>,
        url: StorageUrl,
        entry: &crate::format::manifest::FileEntry,
        slot: crate::index::quantize::LocalCopy,
    ) -> crate::index::quantize::CopyTask {
        let (local, store, entry) = (self.local.clone(), store.clone(), entry.clone());
        Box::pin(async move {
            let got: Result<()> = async {
                let location = url.object_path()?;
                let (file, crc) = local.fetch(&key, &store, &location, entry.size).await?;
                let crc = match crc {
                    Some(c) => c,
                    None => local_crc(file.path()).await?.1,
                };
                if crc != entry.crc32c {
                    drop(file);
                    local.invalidate(&key);
                    return Err(JammiError::Index("its copy fails its checksum".into()));
                }
                crate::index::quantize::adopt_copy(&slot, file)
            }
            .await;
            if let Err(e) = got {
                tracing::warn!("exact vectors {url} stay remote: {e}");
            }
        })
    }

    fn insert(&self, key: String, loaded: Arc<LoadedIndex>) {
        self.entries.lock().expect("lock").put(key, loaded);
    }
}

impl crate::lru::Weighed for LoadedIndex {
    fn weight(&self) -> u64 {
        self.bytes()
    }
}

/// The exact-vectors sibling `entry` of a quantised index under `dir`, checked against
/// its manifest entry: a local file's size and CRC32C, a remote object's size and the
/// store's ETag where both have one (it is not downloaded here).
async fn vector_file(
    dir: &StorageUrl,
    store: &Arc<dyn ObjectStore>,
    entry: &crate::format::manifest::FileEntry,
    dims: usize,
) -> Result<VectorFile> {
    let url = dir.join(&entry.name)?;
    if let Some(p) = url.local_path() {
        let (size, crc) = local_crc(&p).await?;
        if size != entry.size || crc != entry.crc32c {
            return Err(JammiError::Index(format!(
                "{} does not match its manifest checksum",
                entry.name
            )));
        }
        return VectorFile::local(&p, dims, entry.size);
    }
    let location = url.object_path()?;
    let head = store
        .head(&location)
        .await
        .map_err(|e| JammiError::storage(&url, e))?;
    if let (Some(want), Some(got)) = (&entry.e_tag, &head.e_tag)
        && want != got
    {
        return Err(JammiError::Index(format!(
            "{} changed since its manifest recorded it (ETag {got}, recorded {want})",
            entry.name
        )));
    }
    VectorFile::remote(location, dims, (entry.size, head.size))
}

/// Memory-maps an index file and checks its header against the manifest.
fn open_view(path: &Path, info: &IndexInfo) -> Result<usearch::Index> {
    let p = path
        .to_str()
        .ok_or_else(|| JammiError::Index("non-UTF-8 cache path".into()))?;
    let meta = usearch::Index::metadata(p).map_err(|e| JammiError::Index(e.to_string()))?;
    if meta.dimensions as usize != info.dimensions {
        return Err(JammiError::Index(format!(
            "index file has {} dimensions, manifest says {}",
            meta.dimensions, info.dimensions
        )));
    }
    // USearch adopts the file's scalar type silently: a graph of another precision than
    // the manifest's would be searched as if it were the recorded one.
    let q = info.quantization;
    if meta.quantization != q.usearch() {
        return Err(JammiError::Index(format!(
            "index file stores {} vectors, manifest says {q}",
            scalar_name(meta.quantization)
        )));
    }
    let params = crate::index::IndexParams::from(info);
    let index = usearch::Index::new(&params.options(info.dimensions))
        .map_err(|e| JammiError::Index(e.to_string()))?;
    index
        .view(p)
        .map_err(|e| JammiError::Index(e.to_string()))?;
    if index.metric_kind() != params.usearch_metric() {
        return Err(JammiError::Index(format!(
            "index file metric differs from the manifest's {}",
            info.metric
        )));
    }
    index.change_expansion_search(info.expansion_search);
    Ok(index)
}

/// A USearch scalar type by jammi-db's name for it (USearch's own for kinds it never writes).
fn scalar_name(kind: usearch::ScalarKind) -> String {
    crate::index::Quantization::ALL
        .into_iter()
        .find(|q| q.usearch() == kind)
        .map_or_else(|| format!("{kind:?}").to_lowercase(), |q| q.to_string())
}

/// [`file_crc`] on a blocking thread, for async callers.
async fn local_crc(path: &Path) -> Result<(u64, u32)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || file_crc(&path))
        .await
        .map_err(|e| JammiError::Index(e.to_string()))?
}

/// Size and CRC32C of a local file.
pub(crate) fn file_crc(path: &Path) -> Result<(u64, u32)> {
    use std::io::Read;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut crc, mut n) = (0u32, 0u64);
    loop {
        let r = f.read(&mut buf)?;
        if r == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..r]);
        n += r as u64;
    }
    Ok((n, crc))
}
