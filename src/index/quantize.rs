//! Vectors in the graph's own scalar type. USearch converts `f32` input to `f16` and `i8`
//! itself; a binary (`b1`) graph takes packed sign bits, one per dimension, and ranks them by
//! Hamming distance. Every add, search and self-check of a graph goes through here, so a
//! binary graph is never handed `f32` values (USearch would read them as bits, past their end).

use usearch::{Index, b1x8, ffi::Matches};

use crate::error::{JammiError, Result};
use crate::format::Quantization;

/// A vector as the graph takes it.
pub(crate) enum GraphVector<'a> {
    /// `f32` values, converted by USearch to the graph's type.
    Floats(std::borrow::Cow<'a, [f32]>),
    /// Packed sign bits (a binary graph).
    Bits(Vec<b1x8>),
}

impl<'a> GraphVector<'a> {
    /// `v` in the form a graph of `q` takes.
    pub(crate) fn new(q: Quantization, v: &'a [f32]) -> Self {
        match q {
            Quantization::B1 => GraphVector::Bits(sign_bits(v)),
            _ => GraphVector::Floats(std::borrow::Cow::Borrowed(v)),
        }
    }

    /// The vector stored under `key`, as the graph holds it (lossy for quantised graphs).
    pub(crate) fn stored(index: &Index, q: Quantization, key: u64) -> Result<GraphVector<'static>> {
        let dims = index.dimensions();
        match q {
            Quantization::B1 => {
                // USearch 2.26's `get` wants room for `dimensions` words even where a word
                // holds eight dimensions; it fills the first `dimensions / 8`.
                let mut bits = vec![b1x8(0); dims];
                index.get(key, &mut bits).map_err(idx_err)?;
                bits.truncate(dims.div_ceil(8));
                Ok(GraphVector::Bits(bits))
            }
            _ => {
                let mut v = vec![0f32; dims];
                index.get(key, &mut v).map_err(idx_err)?;
                Ok(GraphVector::Floats(std::borrow::Cow::Owned(v)))
            }
        }
    }

    pub(crate) fn add(&self, index: &Index, key: u64) -> Result<()> {
        match self {
            GraphVector::Floats(v) => index.add(key, v),
            GraphVector::Bits(b) => index.add(key, b),
        }
        .map_err(idx_err)
    }

    pub(crate) fn search(&self, index: &Index, count: usize) -> Result<Matches> {
        match self {
            GraphVector::Floats(v) => index.search(v, count),
            GraphVector::Bits(b) => index.search(b, count),
        }
        .map_err(idx_err)
    }

    pub(crate) fn filtered_search<F: Fn(u64) -> bool>(
        &self,
        index: &Index,
        count: usize,
        filter: F,
    ) -> Result<Matches> {
        match self {
            GraphVector::Floats(v) => index.filtered_search(v, count, filter),
            GraphVector::Bits(b) => index.filtered_search(b, count, filter),
        }
        .map_err(idx_err)
    }
}

/// One bit per dimension, set where the value is positive, most significant bit first (as
/// USearch's own `f32` → `b1` cast packs them).
pub(crate) fn sign_bits(v: &[f32]) -> Vec<b1x8> {
    let mut bits = vec![b1x8(0); v.len().div_ceil(8)];
    for (i, x) in v.iter().enumerate() {
        if *x > 0.0 {
            bits[i / 8].0 |= 0x80 >> (i % 8);
        }
    }
    bits
}

/// The exact vectors of a quantised index (its `.idx.vectors` sibling: `f32`
/// little-endian, by index key), read a few at a time to re-rank candidates: a local file
/// mapped into memory; a remote one by ranged requests (object_store merges ranges less
/// than 1 MiB apart and runs the rest concurrently) until its copy, downloaded in the
/// background into the local cache, is mapped instead. The copy starts once the first
/// candidates are in, so it never competes with them: a cold search waits for the small
/// graph and its candidates alone, and a table searched only without re-ranking never
/// downloads its exact vectors. A read whose merged ranges would cover half the file or
/// more (many candidates: b1) downloads the copy first and reads from it, rather than
/// fetch most of the file twice.
pub struct VectorFile {
    source: VectorSource,
    dims: usize,
    size: u64,
}

enum VectorSource {
    Local(memmap2::Mmap),
    Remote {
        path: object_store::path::Path,
        /// The whole file, once a background download into the local cache landed.
        copy: LocalCopy,
        /// That download, not yet started; taken by the first read.
        start_copy: std::sync::Mutex<Option<CopyTask>>,
    },
}

/// Where a remote exact-vectors file's local copy is put once downloaded and checked.
pub(crate) type LocalCopy =
    std::sync::Arc<std::sync::OnceLock<(memmap2::Mmap, crate::storage::cache::LocalFile)>>;

/// The download of a remote exact-vectors file's local copy (it fills its [`LocalCopy`]
/// or warns).
pub(crate) type CopyTask = futures::future::BoxFuture<'static, ()>;

/// Ranges closer than this are fetched as one, as object_store's `get_ranges` merges them.
const COALESCE_GAP: u64 = 1024 * 1024;

/// The bytes `ranges` cover once ranges less than [`COALESCE_GAP`] apart are merged.
fn covered_bytes(ranges: &[std::ops::Range<u64>]) -> u64 {
    let mut sorted: Vec<_> = ranges.iter().map(|r| (r.start, r.end)).collect();
    sorted.sort_unstable();
    let mut total = 0;
    let mut open: Option<(u64, u64)> = None;
    for (s, e) in sorted {
        open = match open {
            Some((os, oe)) if s <= oe.saturating_add(COALESCE_GAP) => Some((os, oe.max(e))),
            Some((os, oe)) => {
                total += oe - os;
                Some((s, e))
            }
            None => Some((s, e)),
        };
    }
    total + open.map_or(0, |(s, e)| e - s)
}

/// Maps the downloaded copy `file` of a remote exact-vectors file into `copy`.
pub(crate) fn adopt_copy(copy: &LocalCopy, file: crate::storage::cache::LocalFile) -> Result<()> {
    let f = std::fs::File::open(file.path())?;
    // SAFETY: the cache's files are its own, checked before use and never rewritten in place.
    let map = unsafe { memmap2::Mmap::map(&f)? };
    let _ = copy.set((map, file));
    Ok(())
}

impl VectorFile {
    /// The local file at `path`, checked to hold `size` bytes.
    pub(crate) fn local(path: &std::path::Path, dims: usize, size: u64) -> Result<Self> {
        let file = std::fs::File::open(path)?;
        let found = file.metadata()?.len();
        // SAFETY: jammi-db's siblings are immutable once committed, and the caller checks
        // this one's size and CRC32C against its manifest before it is used.
        let map = unsafe { memmap2::Mmap::map(&file)? };
        let f = VectorFile {
            source: VectorSource::Local(map),
            dims,
            size,
        };
        f.check_size(found)?;
        Ok(f)
    }

    /// The object `path` of a store, whose size `found` (the store's) must be `size`.
    pub(crate) fn remote(
        path: object_store::path::Path,
        dims: usize,
        (size, found): (u64, u64),
    ) -> Result<Self> {
        let f = VectorFile {
            source: VectorSource::Remote {
                path,
                copy: LocalCopy::default(),
                start_copy: Default::default(),
            },
            dims,
            size,
        };
        f.check_size(found)?;
        Ok(f)
    }

    /// Where a downloaded copy of a remote file goes (`None` for a local file).
    pub(crate) fn copy_slot(&self) -> Option<LocalCopy> {
        match &self.source {
            VectorSource::Remote { copy, .. } => Some(copy.clone()),
            VectorSource::Local(_) => None,
        }
    }

    /// Runs `start` (the download of a remote file's copy) with the first read of
    /// candidates; a local file needs no copy.
    pub(crate) fn copy_after_first_read(&self, start: CopyTask) {
        if let VectorSource::Remote { start_copy, .. } = &self.source {
            *start_copy.lock().expect("lock") = Some(start);
        }
    }

    fn check_size(&self, found: u64) -> Result<()> {
        if found != self.size || !self.size.is_multiple_of((self.dims as u64 * 4).max(1)) {
            return Err(JammiError::Index(format!(
                "the exact-vectors file holds {found} bytes, its manifest says {}",
                self.size
            )));
        }
        Ok(())
    }

    /// The vectors of `keys`, one after the other (`dims` values each); a remote file is
    /// read through `store` (the caller's, so its requests count as the caller's).
    pub async fn read(
        &self,
        store: &std::sync::Arc<dyn object_store::ObjectStore>,
        keys: &[u64],
    ) -> Result<Vec<f32>> {
        let width = self.dims as u64 * 4;
        let ranges: Vec<std::ops::Range<u64>> =
            keys.iter().map(|k| k * width..(k + 1) * width).collect();
        if let Some(r) = ranges.iter().find(|r| r.end > self.size) {
            return Err(JammiError::Index(format!(
                "key {} is past the end of the exact-vectors file",
                r.start / width
            )));
        }
        let mut out = Vec::with_capacity(keys.len() * self.dims);
        match &self.source {
            VectorSource::Local(map) => {
                for r in &ranges {
                    push_le(&mut out, &map[r.start as usize..r.end as usize]);
                }
            }
            VectorSource::Remote { copy, .. } if copy.get().is_some() => {
                let (map, _) = copy.get().expect("checked");
                for r in &ranges {
                    push_le(&mut out, &map[r.start as usize..r.end as usize]);
                }
            }
            VectorSource::Remote {
                path,
                copy,
                start_copy,
            } => {
                let start = start_copy.lock().expect("lock").take();
                let most = covered_bytes(&ranges).saturating_mul(2) >= self.size;
                let parts = match start {
                    Some(task) if most => {
                        task.await;
                        None
                    }
                    Some(task) => {
                        let parts = store.get_ranges(path, &ranges).await;
                        drop(tokio::spawn(task));
                        Some(parts)
                    }
                    None => Some(store.get_ranges(path, &ranges).await),
                };
                match (parts, copy.get()) {
                    (Some(parts), _) => {
                        let parts = parts.map_err(|e| {
                            JammiError::Index(format!("reading exact vectors: {e}"))
                        })?;
                        parts.iter().for_each(|b| push_le(&mut out, b));
                    }
                    (None, Some((map, _))) => {
                        ranges.iter().for_each(|r| {
                            push_le(&mut out, &map[r.start as usize..r.end as usize])
                        });
                    }
                    // The copy failed (it warned): the ranges, from the store.
                    (None, None) => {
                        let parts = store.get_ranges(path, &ranges).await.map_err(|e| {
                            JammiError::Index(format!("reading exact vectors: {e}"))
                        })?;
                        parts.iter().for_each(|b| push_le(&mut out, b));
                    }
                }
            }
        }
        Ok(out)
    }
}

fn push_le(out: &mut Vec<f32>, bytes: &[u8]) {
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
    );
}

fn idx_err(e: impl std::fmt::Display) -> JammiError {
    JammiError::Index(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_closer_than_the_gap_cover_their_span_and_far_ones_only_themselves() {
        let mib = COALESCE_GAP;
        assert_eq!(covered_bytes(&[]), 0);
        // Out of order, one inside another, and a gap of exactly the limit: one span.
        assert_eq!(covered_bytes(&[mib + 10..mib + 20, 0..10, 2..5]), mib + 20);
        // Two far apart: their own bytes.
        assert_eq!(covered_bytes(&[0..10, 5 * mib..5 * mib + 10]), 20);
    }

    #[test]
    fn sign_bits_pack_positive_values_most_significant_first() {
        let v = [1.0, -1.0, 0.0, 0.5, -0.1, 2.0, 3.0, -4.0, 0.25];
        let bits: Vec<u8> = sign_bits(&v).iter().map(|b| b.0).collect();
        assert_eq!(bits, vec![0b1001_0110, 0b1000_0000]);
    }
}
