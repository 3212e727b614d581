//! Result-table names: `{source}__{task}__{model}__{UTC timestamp}_{8 hex}` (DESIGN §4).

use crate::error::{JammiError, Result};

/// Suffixes of a result table's sibling objects, manifest last.
pub const PARQUET_SUFFIX: &str = ".parquet";
/// USearch HNSW graph.
pub const INDEX_SUFFIX: &str = ".idx.usearch";
/// Index key → Parquet row position.
pub const ROWMAP_SUFFIX: &str = ".idx.rowmap";
/// The commit record.
pub const MANIFEST_SUFFIX: &str = ".idx.manifest.json";
/// Every sibling suffix, in write order.
pub const SIBLING_SUFFIXES: [&str; 4] =
    [PARQUET_SUFFIX, INDEX_SUFFIX, ROWMAP_SUFFIX, MANIFEST_SUFFIX];

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

/// Splits a sibling object's file name into (table name, suffix), if it is one.
pub fn split_sibling(file_name: &str) -> Option<(&str, &'static str)> {
    // Longest suffixes first: `.idx.manifest.json` before `.json`-like overlaps.
    for suffix in [MANIFEST_SUFFIX, ROWMAP_SUFFIX, INDEX_SUFFIX, PARQUET_SUFFIX] {
        if let Some(stem) = file_name.strip_suffix(suffix)
            && validate_table_name(stem).is_ok()
        {
            return Some((stem, suffix));
        }
    }
    None
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
    fn siblings_are_recognised() {
        assert_eq!(
            split_sibling("t__a__b__20260101T000000Z_0011aabb.idx.manifest.json"),
            Some(("t__a__b__20260101T000000Z_0011aabb", MANIFEST_SUFFIX))
        );
        assert_eq!(split_sibling("x.parquet"), Some(("x", PARQUET_SUFFIX)));
        assert_eq!(split_sibling("x.csv"), None);
        assert_eq!(split_sibling("a b.parquet"), None);
    }
}
