//! Is a Parquet file still the one its index was built for? The manifest records the file's
//! size, CRC32C and the store's ETag: a file whose size differs has changed; one whose ETag
//! matches has not; any other (no ETag recorded, or another ETag — a copy, a touch, a
//! rewrite) is compared by its bytes, once per version of the file in a process.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use object_store::{ObjectMeta, ObjectStore};

use crate::error::Result;
use crate::format::manifest::FileEntry;
use crate::storage::StorageUrl;
use crate::store::read::object_crc;

/// What [`check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileCheck {
    /// The file is the indexed one.
    Same,
    /// It changed; the reason says how.
    Changed(String),
}

/// A version of an object: what can tell two versions apart without reading them.
pub(crate) fn version_key(url: &StorageUrl, meta: &ObjectMeta) -> String {
    format!(
        "{url}#{}#{}#{}#{}",
        meta.size,
        meta.e_tag.as_deref().unwrap_or(""),
        meta.version.as_deref().unwrap_or(""),
        meta.last_modified.timestamp_nanos_opt().unwrap_or(0)
    )
}

/// Byte comparisons already made: (version key, recorded CRC) → same. Bounded: cleared
/// when full (it only saves re-reading files).
static COMPARED: LazyLock<Mutex<HashMap<(String, u32), bool>>> = LazyLock::new(Mutex::default);
const COMPARED_MAX: usize = 4096;

/// Compares the file at `url`, currently `meta`, with the manifest's `entry`.
pub async fn check(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ObjectMeta,
    entry: &FileEntry,
) -> Result<FileCheck> {
    if meta.size != entry.size {
        return Ok(FileCheck::Changed(format!(
            "{} is {} bytes, the index was built for {} bytes",
            url.file_name(),
            meta.size,
            entry.size
        )));
    }
    if entry.e_tag.is_some() && meta.e_tag == entry.e_tag {
        return Ok(FileCheck::Same);
    }
    let key = (version_key(url, meta), entry.crc32c);
    let known = COMPARED.lock().expect("lock").get(&key).copied();
    let same = match known {
        Some(same) => same,
        None => {
            let (size, crc) = object_crc(store, url).await?;
            let same = size == entry.size && crc == entry.crc32c;
            let mut c = COMPARED.lock().expect("lock");
            if c.len() >= COMPARED_MAX {
                c.clear();
            }
            c.insert(key, same);
            same
        }
    };
    Ok(if same {
        FileCheck::Same
    } else {
        FileCheck::Changed(format!(
            "{} was rewritten after it was indexed (same size, other content)",
            url.file_name()
        ))
    })
}
