//! Exact (brute-force) search: streamed over the vector column, keeping a bounded top-k
//! with a deterministic tie-break (smaller row position first).

use crate::error::Result;
use crate::index::Metric;
use crate::index::vectors::VectorColumn;
use std::cmp::Ordering;
use std::collections::BinaryHeap;

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
        rank(self.dist)
            .total_cmp(&rank(o.dist))
            .then(self.row.cmp(&o.row))
    }
}

/// A distance as it ranks: any NaN (a vector holding NaN, or `inf - inf`) after every
/// number, +∞ included, as DataFusion sorts NaN distances ascending — whatever the NaN's
/// sign bit (`total_cmp` alone would put a negative NaN first).
fn rank(d: f32) -> f32 {
    if d.is_nan() { f32::NAN.abs() } else { d }
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

/// The vectors of one column, decoded once and kept for repeated exact searches.
#[derive(Debug)]
pub struct ExactVectors {
    /// Dimensions.
    pub dims: usize,
    /// Row position of each stored vector (rows with NULL or wrongly sized vectors are absent).
    pub rows: Vec<u64>,
    /// `rows.len() * dims` values.
    pub values: Vec<f32>,
}

impl ExactVectors {
    /// Bytes held.
    pub fn bytes(&self) -> usize {
        self.values.len() * 4 + self.rows.len() * 8
    }

    /// No vectors yet, of `dims` values each.
    pub fn new(dims: usize) -> Self {
        ExactVectors {
            dims,
            rows: Vec::new(),
            values: Vec::new(),
        }
    }

    /// Adds the vectors of `array` (column `column`), whose first row is row `base` of the
    /// file; NULL vectors and vectors of other lengths are left out.
    pub fn add(
        &mut self,
        column: &str,
        array: &datafusion::arrow::array::ArrayRef,
        base: u64,
    ) -> Result<()> {
        let vectors = VectorColumn::new(column, array)?;
        for r in 0..vectors.len() {
            if let Some(v) = vectors.get(r)
                && v.len() == self.dims
            {
                self.rows.push(base + r as u64);
                self.values.extend_from_slice(&v);
            }
        }
        Ok(())
    }

    /// Exact top-k; `allowed[row]` restricts the candidates. Distances are final.
    pub fn search(
        &self,
        query: &[f32],
        k: usize,
        metric: Metric,
        allowed: Option<&[bool]>,
    ) -> Vec<(u64, f32)> {
        let mut top = TopK::new(k);
        for (i, row) in self.rows.iter().enumerate() {
            if allowed.is_some_and(|a| !a.get(*row as usize).copied().unwrap_or(false)) {
                continue;
            }
            let v = &self.values[i * self.dims..(i + 1) * self.dims];
            top.push(metric.raw_distance(query, v), *row);
        }
        top.into_sorted()
            .into_iter()
            .map(|(r, d)| (r, metric.finalize(d)))
            .collect()
    }
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
    fn vectors_holding_nan_or_infinity_rank_last_with_the_distance_datafusion_gives() {
        use datafusion::arrow::array::{FixedSizeListArray, Float32Array};
        use datafusion::arrow::datatypes::{DataType, Field};
        let rows: [[f32; 2]; 4] = [
            [1.0, 0.0],
            [f32::NAN, 0.0],
            [f32::INFINITY, 1.0],
            [0.0, 1.0],
        ];
        let values: Vec<f32> = rows.iter().flatten().copied().collect();
        let array: datafusion::arrow::array::ArrayRef =
            std::sync::Arc::new(FixedSizeListArray::new(
                std::sync::Arc::new(Field::new("item", DataType::Float32, true)),
                2,
                std::sync::Arc::new(Float32Array::from(values)),
                None,
            ));
        let mut v = ExactVectors::new(2);
        v.add("v", &array, 0).unwrap();
        // l2: the infinite row at +inf, then the NaN row with a NaN distance (never 0).
        let got = v.search(&[1.0, 0.1], 4, Metric::L2, None);
        let order: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(order, [0, 3, 2, 1], "{got:?}");
        assert_eq!(got[2].1, f32::INFINITY);
        assert!(got[3].1.is_nan(), "{got:?}");
        // cosine: both are NaN (inf / inf), last, in row order.
        let got = v.search(&[1.0, 0.1], 4, Metric::Cosine, None);
        let order: Vec<u64> = got.iter().map(|(r, _)| *r).collect();
        assert_eq!(order, [0, 3, 1, 2], "{got:?}");
        assert!(got[2].1.is_nan() && got[3].1.is_nan(), "{got:?}");
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
