//! Exact (brute-force) search: streamed over the vector column, keeping a bounded top-k
//! with a deterministic tie-break (smaller row position first).

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::Arc;

use datafusion::parquet::arrow::arrow_reader::ArrowReaderMetadata;
use futures::StreamExt;
use object_store::ObjectStore;

use crate::error::Result;
use crate::index::Metric;
use crate::index::vectors::VectorColumn;
use crate::storage::StorageUrl;

#[derive(Debug, Clone, Copy)]
struct Entry {
    dist: f32,
    row: u64,
}

impl PartialEq for Entry {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Entry {
    fn cmp(&self, o: &Self) -> Ordering {
        self.dist.total_cmp(&o.dist).then(self.row.cmp(&o.row))
    }
}

/// A bounded max-heap keeping the k nearest (distance, row) pairs.
#[derive(Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Entry>,
}

impl TopK {
    /// Keeps at most `k` entries.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k + 1),
        }
    }

    /// Offers a candidate.
    pub fn push(&mut self, dist: f32, row: u64) {
        let e = Entry { dist, row };
        if self.heap.len() < self.k {
            self.heap.push(e);
        } else if let Some(top) = self.heap.peek()
            && e < *top
        {
            self.heap.pop();
            self.heap.push(e);
        }
    }

    /// (row, distance) nearest first.
    pub fn into_sorted(self) -> Vec<(u64, f32)> {
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|e| (e.row, e.dist))
            .collect()
    }
}

/// Exact top-k over column `column_idx` of a Parquet file. `allowed[row]` restricts the
/// candidates (pre-filter). Returned distances are final (`_distance` values).
#[allow(clippy::too_many_arguments)]
pub async fn exact_search(
    store: &Arc<dyn ObjectStore>,
    url: &StorageUrl,
    meta: &ArrowReaderMetadata,
    column_idx: usize,
    column: &str,
    query: &[f32],
    k: usize,
    metric: Metric,
    allowed: Option<&[bool]>,
) -> Result<Vec<(u64, f32)>> {
    let mut stream = crate::store::read::scan_columns(store, url, meta, &[column_idx]).await?;
    let mut top = TopK::new(k);
    let mut base = 0u64;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let col = batch.column(0);
        let vectors = VectorColumn::new(column, col)?;
        for r in 0..vectors.len() {
            let row = base + r as u64;
            if allowed.is_some_and(|a| !a.get(row as usize).copied().unwrap_or(false)) {
                continue;
            }
            let Some(v) = vectors.get(r) else { continue };
            if v.len() != query.len() {
                continue;
            }
            top.push(metric.raw_distance(query, &v), row);
        }
        base += batch.num_rows() as u64;
    }
    Ok(top
        .into_sorted()
        .into_iter()
        .map(|(r, d)| (r, metric.finalize(d)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_keeps_nearest_with_row_tie_break() {
        let mut t = TopK::new(3);
        for (d, r) in [(0.5, 7), (0.1, 9), (0.5, 2), (0.9, 1), (0.1, 3), (0.5, 0)] {
            t.push(d, r);
        }
        assert_eq!(t.into_sorted(), vec![(3, 0.1), (9, 0.1), (0, 0.5)]);
    }

    #[test]
    fn metrics_rank_as_expected() {
        let a = [1.0, 0.0];
        let b = [0.0, 1.0];
        assert!((Metric::Cosine.raw_distance(&a, &a)).abs() < 1e-6);
        assert!((Metric::Cosine.raw_distance(&a, &b) - 1.0).abs() < 1e-6);
        assert!((Metric::L2.finalize(Metric::L2.raw_distance(&a, &b)) - 2f32.sqrt()).abs() < 1e-6);
        assert!((Metric::Ip.raw_distance(&a, &a)).abs() < 1e-6);
    }
}
