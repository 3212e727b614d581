//! On-storage formats shared by the result store and the index: the manifest (commit
//! record), sibling naming and the rowmap. Nothing here does I/O.

pub mod manifest;
pub mod naming;
pub mod rowmap;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::{JammiError, Result};

/// Distance metric of an index. `_distance` values are: cosine `1 - cos(a, b)`,
/// l2 the Euclidean distance, ip `1 - a·b` (smaller is nearer for all three).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Cosine distance (default).
    #[default]
    Cosine,
    /// Euclidean distance.
    L2,
    /// Inner-product distance.
    Ip,
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Metric::Cosine => "cosine",
            Metric::L2 => "l2",
            Metric::Ip => "ip",
        })
    }
}

impl FromStr for Metric {
    type Err = JammiError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "cos" | "cosine" => Metric::Cosine,
            "l2" | "l2sq" | "euclidean" => Metric::L2,
            "ip" | "dot" | "inner_product" => Metric::Ip,
            other => {
                return Err(JammiError::InvalidInput(format!(
                    "unknown metric '{other}'; expected cosine, l2 or ip"
                )));
            }
        })
    }
}

/// Scalar type an index stores its vectors in. Quantised kinds (`f16`, `i8`, `b1`) make
/// the graph file smaller; their searches re-rank candidates by the exact vectors.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "lowercase")]
pub enum Quantization {
    /// 32-bit floats: the vectors as given (default).
    #[default]
    F32,
    /// 16-bit floats.
    F16,
    /// 8-bit integers of the normalised vector (cosine only).
    I8,
    /// One sign bit per dimension, ranked by Hamming distance (cosine only).
    B1,
}

impl Quantization {
    /// Every kind, as the option accepts them.
    pub const ALL: [Quantization; 4] = [
        Quantization::F32,
        Quantization::F16,
        Quantization::I8,
        Quantization::B1,
    ];

    /// Checks that an index of this kind can rank by `metric`: `i8` and `b1` keep only a
    /// vector's direction, so they serve cosine alone.
    pub fn check_metric(self, metric: Metric) -> Result<()> {
        match (self, metric) {
            (Quantization::I8 | Quantization::B1, Metric::L2 | Metric::Ip) => {
                Err(JammiError::InvalidInput(format!(
                    "jammi.quantization '{self}' ranks by cosine only, not {metric}; \
                     use f32 or f16 with {metric}"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Candidates taken per wanted row before re-ranking by the exact vectors, when a
    /// search sets no `oversample` (measured on MiniLM in `benches/quantization.rs`).
    pub fn default_oversample(self) -> usize {
        match self {
            Quantization::F32 | Quantization::F16 => 1,
            Quantization::I8 => 2,
            Quantization::B1 => 16,
        }
    }
}

impl fmt::Display for Quantization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quantization::F32 => "f32",
            Quantization::F16 => "f16",
            Quantization::I8 => "i8",
            Quantization::B1 => "b1",
        })
    }
}

impl FromStr for Quantization {
    type Err = JammiError;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Quantization::F32,
            "f16" => Quantization::F16,
            "i8" => Quantization::I8,
            "b1" => Quantization::B1,
            other => {
                return Err(JammiError::InvalidInput(format!(
                    "unknown jammi.quantization '{other}'; expected f32, f16, i8 or b1"
                )));
            }
        })
    }
}
