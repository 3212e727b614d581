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
