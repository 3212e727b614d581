//! Local cache of remote files (USearch sidecars need local files to memory-map).
//!
//! Entries are keyed by content (a manifest checksum), so a stale entry is impossible: a
//! rewritten table has a new key. Files arrive through a temp file and an atomic rename, so
//! concurrent processes sharing the directory never see a partial file. The directory is kept
//! under a byte budget by evicting least-recently-used entries (by modification time, which
//! every hit refreshes). It only ever removes files it named (`*.jammi-cache`,
//! `.tmp-*.jammi-part`), so pointing it at a directory that holds other files is safe. Within a process, concurrent requests for one key download once.
//! Temp files that killed downloads left are removed when a cache is opened.
//!
//! A directory that cannot be created or written disables the cache (with a warning): each
//! download then goes to a temp file that lives as long as its user.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;

use crate::error::{JammiError, Result};

/// Default byte budget of the cache directory (10 GiB).
pub const DEFAULT_CACHE_BYTES: u64 = 10 << 30;

/// A size-bounded directory of downloaded files, safe to share between processes.
#[derive(Debug, Clone)]
pub struct LocalCache {
    /// `None`: caching is disabled.
    dir: Option<PathBuf>,
    max_bytes: u64,
    inflight: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// A local copy of a remote file: in the cache directory, or a temp file removed on drop.
#[derive(Debug)]
pub struct LocalFile {
    path: PathBuf,
    _temp: Option<tempfile::TempPath>,
}

impl LocalFile {
    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The cache touches only files it named: entries end with this suffix…
const ENTRY_SUFFIX: &str = ".jammi-cache";
/// …and downloads in progress are `.tmp-<pid>-<key>-<16 hex>` with this one.
const PART_SUFFIX: &str = ".jammi-part";

/// Temp files older than this are leftovers of killed downloads whatever their pid says.
const STALE_TEMP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

impl LocalCache {
    /// A cache in `dir` (created if missing) holding at most `max_bytes`. Temp files of
    /// downloads killed before they finished are removed.
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Result<Self> {
        let dir = dir.into();
        std::fs::create_dir_all(&dir)?;
        // A directory we cannot write would fail every download: find out now.
        tempfile::Builder::new()
            .prefix(".probe-")
            .tempfile_in(&dir)?;
        remove_dead_temps(&dir);
        Ok(LocalCache {
            dir: Some(dir),
            max_bytes,
            inflight: Arc::default(),
        })
    }

    /// A cache at `dir`, or — when that directory is unusable — a disabled one, with a
    /// warning naming the directory and why.
    pub fn new_or_disabled(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        let dir = dir.into();
        match Self::new(&dir, max_bytes) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(
                    "the local cache directory {} is unusable ({e}); remote indexes are \
                     downloaded for each process instead (set JAMMI_CACHE_DIR to cache them)",
                    dir.display()
                );
                Self::disabled()
            }
        }
    }

    /// No cache: every fetch downloads to a temp file.
    pub fn disabled() -> Self {
        LocalCache {
            dir: None,
            max_bytes: 0,
            inflight: Arc::default(),
        }
    }

    /// Removes the cached copy of `key` (one that failed its checksum).
    pub fn invalidate(&self, key: &str) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_file(dir.join(entry_name(key)));
        }
    }

    /// The default location: `$JAMMI_CACHE_DIR`, else `$XDG_CACHE_HOME/jammi`, else
    /// `~/.cache/jammi`, else a directory under the system temp dir.
    pub fn default_dir() -> PathBuf {
        if let Some(d) = std::env::var_os("JAMMI_CACHE_DIR") {
            return d.into();
        }
        if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
            return Path::new(&d).join("jammi");
        }
        if let Some(h) = std::env::var_os("HOME") {
            return Path::new(&h).join(".cache").join("jammi");
        }
        std::env::temp_dir().join("jammi-cache")
    }

    /// The cache directory (`None` when disabled).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// `true` when the directory is enabled and `bytes` fit in a quarter of its budget: an
    /// optional copy (a quantised index's exact vectors) never evicts most of the cache.
    pub fn has_room_for(&self, bytes: u64) -> bool {
        self.dir.is_some() && bytes <= self.max_bytes / 4
    }

    /// A local copy of `key`, downloading `location` from `store` first if needed.
    /// `expected_size` guards against truncated downloads. Returns the file and, when this
    /// call downloaded it, its CRC32C (computed on the way, so callers need not re-read).
    pub async fn fetch(
        &self,
        key: &str,
        store: &Arc<dyn ObjectStore>,
        location: &ObjectPath,
        expected_size: u64,
    ) -> Result<(LocalFile, Option<u32>)> {
        let Some(dir) = &self.dir else {
            let temp = tempfile::NamedTempFile::new()?.into_temp_path();
            let crc = download(store, location, &temp, expected_size).await?;
            let file = LocalFile {
                path: temp.to_path_buf(),
                _temp: Some(temp),
            };
            return Ok((file, Some(crc)));
        };
        let safe = safe_name(key);
        let target = dir.join(entry_name(key));
        let cached = |p: PathBuf| LocalFile {
            path: p,
            _temp: None,
        };
        if is_complete(&target, expected_size) {
            touch(&target);
            return Ok((cached(target), None));
        }
        let gate = {
            let mut m = self.inflight.lock().expect("lock");
            m.entry(safe.clone()).or_default().clone()
        };
        let _g = gate.lock().await;
        if is_complete(&target, expected_size) {
            touch(&target);
            return Ok((cached(target), None));
        }
        let tmp = dir.join(format!(
            ".tmp-{}-{}-{:016x}{PART_SUFFIX}",
            std::process::id(),
            safe,
            rand::random::<u64>()
        ));
        let result = download(store, location, &tmp, expected_size).await;
        let crc = match result {
            Ok(crc) => {
                std::fs::rename(&tmp, &target)?;
                self.evict(dir, &target);
                crc
            }
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        self.inflight.lock().expect("lock").remove(&safe);
        Ok((cached(target), Some(crc)))
    }

    /// Removes least-recently-used entries until the directory fits its budget (never `keep`).
    fn evict(&self, dir: &Path, keep: &Path) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        let mut entries: Vec<(PathBuf, u64, std::time::SystemTime)> = rd
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let m = e.metadata().ok()?;
                let name = e.file_name();
                let modified = m.modified().ok()?;
                (m.is_file() && name.to_string_lossy().ends_with(ENTRY_SUFFIX))
                    .then(|| (e.path(), m.len(), modified))
            })
            .collect();
        let mut total: u64 = entries.iter().map(|e| e.1).sum();
        entries.sort_by_key(|e| e.2);
        for (p, len, _) in entries {
            if total <= self.max_bytes {
                break;
            }
            if p != keep && std::fs::remove_file(&p).is_ok() {
                total -= len;
            }
        }
    }
}

fn entry_name(key: &str) -> String {
    format!("{}{ENTRY_SUFFIX}", safe_name(key))
}

fn safe_name(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Removes `.tmp-<pid>-....jammi-part` files whose download process no longer runs (or
/// that are a day old, for caches shared across hosts). Other files are never touched.
fn remove_dead_temps(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(rest) = name
            .strip_prefix(".tmp-")
            .filter(|_| name.ends_with(PART_SUFFIX))
        else {
            continue;
        };
        let pid: Option<u32> = rest.split('-').next().and_then(|p| p.parse().ok());
        let dead = match pid {
            Some(p) if cfg!(target_os = "linux") => {
                p != std::process::id() && !Path::new(&format!("/proc/{p}")).exists()
            }
            _ => false,
        };
        let stale = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > STALE_TEMP);
        if dead || stale {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

fn is_complete(p: &Path, size: u64) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.len() == size)
}

fn touch(p: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(p) {
        let _ = f.set_modified(std::time::SystemTime::now());
    }
}

/// Streams `location` into `tmp` (one GET; local object-store servers serve parallel ranged
/// reads slower than one stream) and returns its CRC32C, computed on the way. A blocking
/// thread writes the file while the next chunks arrive.
async fn download(
    store: &Arc<dyn ObjectStore>,
    location: &ObjectPath,
    tmp: &Path,
    expected_size: u64,
) -> Result<u32> {
    use object_store::ObjectStoreExt;
    use std::io::Write;
    let got = store
        .get(location)
        .await
        .map_err(|e| JammiError::storage(location, e))?;
    let mut stream = got.into_stream();
    let file = std::fs::File::create(tmp)?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut f = std::io::BufWriter::with_capacity(4 << 20, file);
        while let Some(chunk) = rx.blocking_recv() {
            f.write_all(&chunk)?;
        }
        f.flush()
    });
    let (mut n, mut crc) = (0u64, 0u32);
    let received: Result<()> = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| JammiError::storage(location, e))?;
            n += chunk.len() as u64;
            crc = crc32c::crc32c_append(crc, &chunk);
            if tx.send(chunk).await.is_err() {
                // The writer stopped: its error is reported below.
                break;
            }
        }
        Ok(())
    }
    .await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| JammiError::Index(format!("cache writer: {e}")))?;
    received?;
    written?;
    if n != expected_size {
        return Err(JammiError::Corrupt {
            kind: "download of",
            table: location.to_string(),
            reason: format!("downloaded {n} bytes, expected {expected_size}"),
        });
    }
    Ok(crc)
}
