//! Names on storage: result-table names (`{source}__{task}__{model}__{UTC timestamp}_{8 hex}`,
//! DESIGN §4) and the sibling objects of a table or an indexed Parquet file.
//!
//! Sidecars are named from the whole file name minus its final extension
//! (`emb.2024.parquet` → `emb.2024.idx.*`), so two files of one directory never share them.
//! Result-table names have no dots, so their siblings keep the seed's layout.

use crate::error::{JammiError, Result};
use crate::storage::StorageUrl;

/// The Parquet file of a result table.
pub const PARQUET_SUFFIX: &str = ".parquet";
/// USearch HNSW graph.
pub const INDEX_SUFFIX: &str = ".idx.usearch";
/// Index key → Parquet row position.
pub const ROWMAP_SUFFIX: &str = ".idx.rowmap";
/// The exact `f32` vectors beside a quantised index, by index key.
pub const VECTORS_SUFFIX: &str = ".idx.vectors";
/// The commit record.
pub const MANIFEST_SUFFIX: &str = ".idx.manifest.json";
/// The writer's lease and intent record, present only while a write runs (or after it crashed).
pub const LEASE_SUFFIX: &str = ".idx.lease.json";

/// Reduces a name component to `[A-Za-z0-9_-]`, with no `__` inside it and no leading or
/// trailing `_`, so the `__` separators stay unambiguous. Empty results become `x`.
pub fn sanitize_component(raw: &str) -> String {
    let mapped: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut out = String::with_capacity(mapped.len());
    for c in mapped.chars() {
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    let out = out.trim_matches('_').to_string();
    if out.is_empty() { "x".to_string() } else { out }
}

/// A fresh table name for (source, task, model) at the current UTC time.
pub fn table_name(source: &str, task: &str, model: &str) -> String {
    let ts = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    let suffix: u32 = rand::random();
    format!(
        "{}__{}__{}__{ts}_{suffix:08x}",
        sanitize_component(source),
        sanitize_component(task),
        sanitize_component(model)
    )
}

/// Checks a name given by a caller can be a result table (one path segment of safe chars).
pub fn validate_table_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(JammiError::InvalidInput(format!(
            "invalid result table name '{name}': use 1-200 characters from [A-Za-z0-9_-]"
        )))
    }
}

/// The stem sidecars of a file take: its name minus the final extension (`a.b.parquet` →
/// `a.b`; a name without an extension, or a dot file, is kept whole).
pub fn sidecar_stem(file_name: &str) -> &str {
    match file_name.rfind('.') {
        Some(i) if i > 0 => &file_name[..i],
        _ => file_name,
    }
}

/// The stem older versions gave a file's sidecars: the name cut at its first dot.
pub fn legacy_sidecar_stem(file_name: &str) -> &str {
    match file_name.find('.') {
        Some(i) if i > 0 => &file_name[..i],
        _ => file_name,
    }
}

/// The name of the table whose manifest `file_name` is, if it is a result table's manifest.
pub fn table_of_manifest(file_name: &str) -> Option<&str> {
    file_name
        .strip_suffix(MANIFEST_SUFFIX)
        .filter(|stem| validate_table_name(stem).is_ok())
}

/// What a settler appends to a lease's name when it claims it on a local root
/// (`<stem>.idx.lease.json.settling-<hex>`).
pub const SETTLING_INFIX: &str = ".settling-";

/// Whether a file name is one jammi-db gives its sidecars, leases and manifests (or a
/// staging copy of one, `<name>#<digits>`): never a source's data.
pub fn is_sidecar_name(file_name: &str) -> bool {
    let base = unstaged(file_name);
    SIDECAR_SUFFIXES.iter().any(|s| base.ends_with(s))
}

/// The endings jammi-db gives sidecars, leases and manifests.
const SIDECAR_SUFFIXES: [&str; 5] = [
    INDEX_SUFFIX,
    ROWMAP_SUFFIX,
    VECTORS_SUFFIX,
    MANIFEST_SUFFIX,
    LEASE_SUFFIX,
];

/// `file_name` without a staging (`#<digits>`) or settling (`.settling-<hex>`) tail.
fn unstaged(file_name: &str) -> &str {
    let base = file_name.split('#').next().unwrap_or(file_name);
    base.split(SETTLING_INFIX).next().unwrap_or(base)
}

/// The stem a sidecar-named object belongs to (`a.b.idx.usearch`, `a.b.idx.rowmap#3`,
/// `a.b.idx.lease.json.settling-1f` → `a.b`), if its name is a sidecar's.
pub fn stem_of_sidecar(file_name: &str) -> Option<&str> {
    let base = unstaged(file_name);
    SIDECAR_SUFFIXES
        .iter()
        .find_map(|s| base.strip_suffix(s))
        .filter(|stem| !stem.is_empty())
}

/// The stem of a lease object's name (`<stem>.idx.lease.json`, or a settler's claimed
/// `<stem>.idx.lease.json.settling-<hex>`), if it is one.
pub fn stem_of_lease(file_name: &str) -> Option<&str> {
    let name = match file_name.split_once(SETTLING_INFIX) {
        Some((lease, tail)) if !tail.is_empty() && tail.chars().all(|c| c.is_ascii_hexdigit()) => {
            lease
        }
        Some(_) => return None,
        None => file_name,
    };
    name.strip_suffix(LEASE_SUFFIX).filter(|s| !s.is_empty())
}

/// The objects of one table (or indexed file) in one directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Siblings {
    /// The directory (a prefix).
    pub dir: StorageUrl,
    /// The common stem of the sidecars.
    pub stem: String,
    /// The Parquet file.
    pub parquet: StorageUrl,
    /// The USearch graph.
    pub index: StorageUrl,
    /// The rowmap.
    pub rowmap: StorageUrl,
    /// The exact vectors of a quantised index.
    pub vectors: StorageUrl,
    /// The manifest (commit record).
    pub manifest: StorageUrl,
    /// The writer's lease.
    pub lease: StorageUrl,
}

impl Siblings {
    /// The siblings of result table `name` under `dir` (`<name>.parquet` and sidecars).
    pub fn table(dir: &StorageUrl, name: &str) -> Result<Self> {
        let dir = dir.as_prefix();
        Self::with_stem(dir.join(&format!("{name}{PARQUET_SUFFIX}"))?, name)
    }

    /// The sidecars of an existing Parquet file (named from its whole name minus the final
    /// extension).
    pub fn of_file(parquet: &StorageUrl) -> Result<Self> {
        let name = parquet.file_name();
        Self::with_stem(parquet.clone(), sidecar_stem(&name))
    }

    /// The sidecars older versions gave `parquet` when they differ from [`of_file`]'s
    /// (`emb.2024.parquet` → `emb.idx.*`). They may belong to another file of the directory:
    /// the manifest tells which.
    ///
    /// [`of_file`]: Self::of_file
    pub fn legacy_of_file(parquet: &StorageUrl) -> Result<Option<Self>> {
        let name = parquet.file_name();
        let (stem, legacy) = (sidecar_stem(&name), legacy_sidecar_stem(&name));
        if stem == legacy {
            return Ok(None);
        }
        Self::with_stem(parquet.clone(), legacy).map(Some)
    }

    /// Whether `name` (in this directory) is one of these siblings: the Parquet file, a
    /// sidecar or the lease. Records naming anything else are not acted on.
    pub fn owns(&self, name: &str) -> bool {
        [
            &self.parquet,
            &self.index,
            &self.rowmap,
            &self.vectors,
            &self.manifest,
            &self.lease,
        ]
        .iter()
        .any(|u| u.file_name() == name)
    }

    fn with_stem(parquet: StorageUrl, stem: &str) -> Result<Self> {
        let dir = parquet.parent();
        Ok(Siblings {
            index: dir.join(&format!("{stem}{INDEX_SUFFIX}"))?,
            rowmap: dir.join(&format!("{stem}{ROWMAP_SUFFIX}"))?,
            vectors: dir.join(&format!("{stem}{VECTORS_SUFFIX}"))?,
            manifest: dir.join(&format!("{stem}{MANIFEST_SUFFIX}"))?,
            lease: dir.join(&format!("{stem}{LEASE_SUFFIX}"))?,
            stem: stem.to_string(),
            parquet,
            dir,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_layout() {
        let n = table_name("papers", "text_embedding", "BAAI/bge-m3");
        let parts: Vec<&str> = n.split("__").collect();
        assert_eq!(parts.len(), 4, "{n}");
        assert_eq!(parts[0], "papers");
        assert_eq!(parts[1], "text_embedding");
        assert_eq!(parts[2], "BAAI_bge-m3");
        let (ts, hex) = parts[3].split_once('_').unwrap();
        assert_eq!(ts.len(), 16);
        assert!(ts.ends_with('Z') && ts.as_bytes()[8] == b'T');
        assert_eq!(hex.len(), 8);
        assert!(hex.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn components_never_hold_double_underscores() {
        assert_eq!(sanitize_component("a__b"), "a_b");
        assert_eq!(sanitize_component("__a b/c__"), "a_b_c");
        assert_eq!(sanitize_component("ü"), "x");
        assert_eq!(sanitize_component("bge-m3"), "bge-m3");
    }

    #[test]
    fn dotted_file_names_keep_their_own_sidecars() {
        let dir = StorageUrl::parse("memory://b/emb/").unwrap();
        let a = Siblings::of_file(&dir.join("emb.2024.parquet").unwrap()).unwrap();
        let b = Siblings::of_file(&dir.join("emb.2025.parquet").unwrap()).unwrap();
        assert_eq!(a.index.file_name(), "emb.2024.idx.usearch");
        assert_eq!(b.manifest.file_name(), "emb.2025.idx.manifest.json");
        assert_ne!(a.rowmap, b.rowmap);
        let legacy = Siblings::legacy_of_file(&a.parquet).unwrap().unwrap();
        assert_eq!(legacy.manifest.file_name(), "emb.idx.manifest.json");
        assert_eq!(legacy.parquet, a.parquet);
        // One dot: the two namings agree, so there is no legacy alternative.
        let plain = dir.join("papers.parquet").unwrap();
        assert!(Siblings::legacy_of_file(&plain).unwrap().is_none());
        assert_eq!(Siblings::of_file(&plain).unwrap().stem, "papers");
    }

    #[test]
    fn result_tables_keep_the_seed_layout() {
        let root = StorageUrl::parse("memory://b/root/").unwrap();
        let name = "papers__text_embedding__bge-m3__20260520T120000Z_abc12345";
        let s = Siblings::table(&root, name).unwrap();
        assert_eq!(s.parquet.file_name(), format!("{name}.parquet"));
        assert_eq!(s.index.file_name(), format!("{name}.idx.usearch"));
        assert_eq!(s.rowmap.file_name(), format!("{name}.idx.rowmap"));
        assert_eq!(s.manifest.file_name(), format!("{name}.idx.manifest.json"));
        assert_eq!(s, Siblings::of_file(&s.parquet).unwrap());
    }

    #[test]
    fn only_result_table_manifests_name_tables() {
        assert_eq!(
            table_of_manifest("t__a__b__20260101T000000Z_0011aabb.idx.manifest.json"),
            Some("t__a__b__20260101T000000Z_0011aabb")
        );
        assert_eq!(table_of_manifest("x.idx.manifest.json"), Some("x"));
        assert_eq!(table_of_manifest("emb.2024.idx.manifest.json"), None);
        assert_eq!(table_of_manifest("x.parquet"), None);
        assert_eq!(stem_of_lease("emb.2024.idx.lease.json"), Some("emb.2024"));
        assert_eq!(
            stem_of_lease("t.idx.lease.json.settling-00ff00ff00ff00ff"),
            Some("t")
        );
        assert_eq!(stem_of_lease("t.idx.lease.json.settling-nothex"), None);
        assert_eq!(sidecar_stem(".hidden"), ".hidden");
        assert_eq!(sidecar_stem("noext"), "noext");
    }
}
