//! The rowmap sidecar: index key → row position in the Parquet file.
//!
//! Layout (little endian): magic `JMROWMAP` (8 bytes), version `u32` (= 1), reserved `u32`,
//! count `u64`, then `count` row positions as `u64`. Keys are positions in this array.

use crate::error::{JammiError, Result};

const MAGIC: &[u8; 8] = b"JMROWMAP";
const VERSION: u32 = 1;
const HEADER: usize = 24;

/// Serialises row positions.
pub fn encode(rows: &[u64]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + rows.len() * 8);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(rows.len() as u64).to_le_bytes());
    for r in rows {
        out.extend_from_slice(&r.to_le_bytes());
    }
    out
}

/// Parses a rowmap, checking magic, version and length.
pub fn decode(bytes: &[u8]) -> Result<Vec<u64>> {
    let bad = |reason: String| JammiError::Index(format!("invalid rowmap: {reason}"));
    if bytes.len() < HEADER || &bytes[..8] != MAGIC {
        return Err(bad("missing header".into()));
    }
    let version = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(bad(format!("unsupported version {version}")));
    }
    let count = u64::from_le_bytes(bytes[16..24].try_into().expect("8 bytes")) as usize;
    if bytes.len() != HEADER + count * 8 {
        return Err(bad(format!("{} bytes for {count} entries", bytes.len())));
    }
    Ok(bytes[HEADER..]
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let rows = vec![0, 2, 5, u64::MAX];
        let bytes = encode(&rows);
        assert_eq!(decode(&bytes).unwrap(), rows);
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(decode(&bad).is_err());
        let mut newer = bytes;
        newer[8] = 9;
        assert!(
            decode(&newer)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }
}
