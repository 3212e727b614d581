//! The USearch sidecar: building it while batches arrive, the rowmap, loading and caching
//! indexes, and the exact (brute-force) search used when no index is usable.

pub mod build;
pub mod cache;
pub mod exact;
pub mod loaded;
pub mod progress;
pub mod quantize;
pub mod vectors;

pub use crate::format::{Metric, Quantization};

impl Metric {
    pub(crate) fn usearch(self) -> usearch::MetricKind {
        match self {
            Metric::Cosine => usearch::MetricKind::Cos,
            Metric::L2 => usearch::MetricKind::L2sq,
            Metric::Ip => usearch::MetricKind::IP,
        }
    }

    /// Converts a USearch distance to this crate's `_distance` (`l2sq` → `l2`).
    pub(crate) fn finalize(self, d: f32) -> f32 {
        match self {
            // NaN stays NaN (`max` would make it 0), as DataFusion's `l2_distance` gives.
            Metric::L2 if d.is_nan() => d,
            Metric::L2 => d.max(0.0).sqrt(),
            _ => d,
        }
    }

    /// Distance between two vectors of equal length, as USearch ranks them (before
    /// [`finalize`](Self::finalize)).
    pub(crate) fn raw_distance(self, a: &[f32], b: &[f32]) -> f32 {
        match self {
            Metric::Cosine => {
                let (mut dot, mut na, mut nb) = (0f32, 0f32, 0f32);
                for (x, y) in a.iter().zip(b) {
                    dot += x * y;
                    na += x * x;
                    nb += y * y;
                }
                if na == 0.0 || nb == 0.0 {
                    return 1.0;
                }
                1.0 - dot / (na.sqrt() * nb.sqrt())
            }
            Metric::L2 => a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum(),
            Metric::Ip => 1.0 - a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>(),
        }
    }
}

/// HNSW parameters of an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    /// Distance metric.
    pub metric: Metric,
    /// Graph connectivity (M); USearch's default is 16.
    pub connectivity: usize,
    /// Expansion while building (ef_construction); USearch's default is 128.
    pub expansion_add: usize,
    /// Default expansion while searching (ef); USearch's default is 64.
    pub expansion_search: usize,
    /// Scalar type the graph stores its vectors in.
    pub quantization: Quantization,
}

impl From<&crate::format::manifest::IndexInfo> for IndexParams {
    /// The parameters an index was built with (so a table's new segments match it).
    fn from(i: &crate::format::manifest::IndexInfo) -> Self {
        IndexParams {
            metric: i.metric,
            connectivity: i.connectivity,
            expansion_add: i.expansion_add,
            expansion_search: i.expansion_search,
            quantization: i.quantization,
        }
    }
}

impl Default for IndexParams {
    fn default() -> Self {
        IndexParams {
            metric: Metric::Cosine,
            connectivity: 16,
            expansion_add: 128,
            expansion_search: 64,
            quantization: Quantization::F32,
        }
    }
}

impl Quantization {
    pub(crate) fn usearch(self) -> usearch::ScalarKind {
        match self {
            Quantization::F32 => usearch::ScalarKind::F32,
            Quantization::F16 => usearch::ScalarKind::F16,
            Quantization::I8 => usearch::ScalarKind::I8,
            Quantization::B1 => usearch::ScalarKind::B1,
        }
    }
}

impl IndexParams {
    /// Checks that the parameters make an index: a metric the precision can rank by.
    pub fn check(&self) -> crate::error::Result<()> {
        self.quantization.check_metric(self.metric)
    }

    /// The metric USearch ranks the graph by: a binary graph by Hamming distance between
    /// sign bits (the cosine of the exact vectors re-ranks its candidates).
    pub(crate) fn usearch_metric(&self) -> usearch::MetricKind {
        match self.quantization {
            Quantization::B1 => usearch::MetricKind::Hamming,
            _ => self.metric.usearch(),
        }
    }

    pub(crate) fn options(&self, dimensions: usize) -> usearch::IndexOptions {
        usearch::IndexOptions {
            dimensions,
            metric: self.usearch_metric(),
            quantization: self.quantization.usearch(),
            connectivity: self.connectivity,
            expansion_add: self.expansion_add,
            expansion_search: self.expansion_search,
            multi: false,
        }
    }
}
