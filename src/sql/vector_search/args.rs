//! The arguments of `vector_search`: the options string, `k`, and the query vector in each
//! form it may take (an array literal or a bound parameter's list, or a string holding a
//! JSON array). Values are checked where they are used — at execution for the query vector —
//! with errors that name the bad thing.

use datafusion::arrow::array::{Array, ArrayRef, Float32Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use crate::error::{JammiError, Result};
use crate::index::Metric;

/// Largest accepted `k`.
pub const MAX_K: usize = 10_000;

/// Options of one call: `key=value` pairs separated by `;`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, PartialOrd)]
pub struct SearchOptions {
    /// HNSW expansion at search time.
    pub ef_search: Option<usize>,
    /// Force brute force.
    pub exact: bool,
    /// Pre-filter predicate (SQL over the table's columns).
    pub filter: Option<String>,
    /// Columns to return.
    pub columns: Option<Vec<String>>,
    /// Vector column (for tables without an index).
    pub column: Option<String>,
    /// Metric to use / to check against the index.
    pub metric: Option<Metric>,
    /// An older version of a result table to search (time travel).
    pub version: Option<u64>,
    /// Candidates per wanted row a quantised index gives for re-ranking by the exact
    /// vectors (`None`: the precision's default).
    pub oversample: Option<usize>,
    /// `false`: a quantised index's own (approximate) ranking and distances, not re-ranked.
    pub rescore: Option<bool>,
}

impl SearchOptions {
    /// Parses `key=value; key=value`. A `;` inside a quoted string or identifier (a
    /// filter's `'a;b'`) does not separate options.
    pub fn parse(s: &str) -> Result<Self> {
        let mut o = SearchOptions::default();
        for part in split_options(s)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                JammiError::InvalidInput(format!(
                    "vector_search option '{part}' is not of the form key=value"
                ))
            })?;
            o.set(&k.trim().to_ascii_lowercase(), v.trim())?;
        }
        Ok(o)
    }

    fn set(&mut self, key: &str, v: &str) -> Result<()> {
        match key {
            "ef_search" | "ef" => {
                self.ef_search =
                    Some(v.parse().ok().filter(|n: &usize| *n > 0).ok_or_else(|| {
                        JammiError::InvalidInput(format!(
                            "ef_search must be a positive integer, got '{v}'"
                        ))
                    })?)
            }
            "exact" => self.exact = boolean("exact", v)?,
            "rescore" => self.rescore = Some(boolean("rescore", v)?),
            "oversample" => {
                self.oversample =
                    Some(v.parse().ok().filter(|n: &usize| *n >= 1).ok_or_else(|| {
                        JammiError::InvalidInput(format!(
                            "oversample must be an integer of at least 1, got '{v}'"
                        ))
                    })?)
            }
            "filter" | "where" => self.filter = Some(v.to_string()),
            "columns" => {
                self.columns = Some(
                    v.split(',')
                        .map(|c| c.trim().to_string())
                        .filter(|c| !c.is_empty())
                        .collect(),
                )
            }
            "column" | "vector_column" => self.column = Some(v.to_string()),
            "metric" => self.metric = Some(v.parse()?),
            "version" => {
                self.version = Some(v.parse().map_err(|_| {
                    JammiError::InvalidInput(format!(
                        "version must be a version number of the table, got '{v}'"
                    ))
                })?)
            }
            other => {
                return Err(JammiError::InvalidInput(format!(
                    "unknown vector_search option '{other}'; expected ef_search, exact, filter, \
                     columns, column, metric, version, oversample, rescore"
                )));
            }
        }
        Ok(())
    }

    /// The options string these options parse from.
    pub fn to_option_string(&self) -> String {
        let mut parts = Vec::new();
        if let Some(ef) = self.ef_search {
            parts.push(format!("ef_search={ef}"));
        }
        if self.exact {
            parts.push("exact=true".into());
        }
        if let Some(c) = &self.columns {
            parts.push(format!("columns={}", c.join(",")));
        }
        if let Some(c) = &self.column {
            parts.push(format!("column={c}"));
        }
        if let Some(m) = self.metric {
            parts.push(format!("metric={m}"));
        }
        if let Some(v) = self.version {
            parts.push(format!("version={v}"));
        }
        if let Some(n) = self.oversample {
            parts.push(format!("oversample={n}"));
        }
        if let Some(r) = self.rescore {
            parts.push(format!("rescore={r}"));
        }
        // Last: a filter may itself hold `;`.
        if let Some(f) = &self.filter {
            parts.push(format!("filter={f}"));
        }
        parts.join("; ")
    }
}

/// A `true`/`false` option's value (`1`/`0`, `yes`/`no` too).
fn boolean(option: &str, v: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(JammiError::InvalidInput(format!(
            "{option} must be true or false, got '{v}'"
        ))),
    }
}

/// The options string split at each `;` outside single-quoted strings (with `''` inside)
/// and double-quoted identifiers, as SQL reads it.
fn split_options(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quote) = (0, None::<char>);
    for (i, c) in s.char_indices() {
        match (quote, c) {
            // A doubled quote inside a string closes and reopens it: the same state.
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, '\'' | '"') => quote = Some(c),
            (None, ';') => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            (None, _) => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

/// `k` from its argument's value: an integer (of any integer type) from 1 to [`MAX_K`].
/// A fraction, a string or NULL is refused, naming `k`.
pub fn k_of(v: &ScalarValue) -> Result<usize> {
    if v.is_null() {
        return Err(JammiError::InvalidInput("vector_search: k is NULL".into()));
    }
    let k = match v.data_type().is_integer() {
        true => match v.cast_to(&DataType::Int64) {
            Ok(ScalarValue::Int64(Some(k))) => Some(k),
            // An unsigned value beyond i64 is above the maximum too.
            _ => Some(i64::MAX),
        },
        false => None,
    };
    let Some(k) = k else {
        return Err(JammiError::InvalidInput(format!(
            "vector_search: k must be an integer, got {v} ({})",
            v.data_type()
        )));
    };
    if k <= 0 || k as usize > MAX_K {
        return Err(JammiError::InvalidInput(format!(
            "vector_search: k must be between 1 and {MAX_K}, got {k}"
        )));
    }
    Ok(k as usize)
}

/// The query vector of a string: a JSON array of numbers, as applications often hold
/// embeddings. Each number is read as DataFusion reads a numeric literal (correctly rounded
/// to `f64`), then rounded to `f32`, so the string and the array literal are the same query.
pub(crate) fn query_vector_text(s: &str) -> Result<Vec<f32>> {
    let bad = |why: String| {
        let shown: String = s.chars().take(40).collect();
        let more = if s.chars().count() > 40 { "..." } else { "" };
        JammiError::InvalidInput(format!(
            "vector_search: the query must be an array of numbers (or a string holding one, \
             like '[0.1, 0.2]'); '{shown}{more}' is not: {why}"
        ))
    };
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .ok_or_else(|| bad("it is not in brackets".into()))?
        .trim();
    if inner.is_empty() {
        return Ok(Vec::new());
    }
    inner
        .split(',')
        .enumerate()
        .map(|(i, n)| {
            let n = n.trim();
            n.parse::<f64>()
                .map(|v| v as f32)
                .map_err(|_| bad(format!("element {i} ('{n}') is not a number")))
        })
        .collect()
}

/// The query vector of an array (a list's values).
pub(crate) fn query_vector_array(values: &ArrayRef) -> Result<Vec<f32>> {
    if !values.data_type().is_numeric() && values.data_type() != &DataType::Null {
        return Err(JammiError::InvalidInput(format!(
            "vector_search: the query must be an array of numbers, got an array of {}",
            values.data_type()
        )));
    }
    if values.null_count() > 0 {
        return Err(JammiError::InvalidInput(
            "vector_search: the query vector holds NULL".into(),
        ));
    }
    let f = cast(values, &DataType::Float32)?;
    let f = f
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("cast to f32");
    Ok(f.values().to_vec())
}

/// The query vector of a value (a literal, a bound parameter, a subquery's one row).
pub fn query_vector(v: &ScalarValue) -> Result<Vec<f32>> {
    let q = match v {
        ScalarValue::Utf8(Some(s))
        | ScalarValue::LargeUtf8(Some(s))
        | ScalarValue::Utf8View(Some(s)) => query_vector_text(s)?,
        ScalarValue::List(a) if !a.is_null(0) => query_vector_array(&a.value(0))?,
        ScalarValue::LargeList(a) if !a.is_null(0) => query_vector_array(&a.value(0))?,
        ScalarValue::FixedSizeList(a) if !a.is_null(0) => query_vector_array(&a.value(0))?,
        v if v.is_null() => {
            return Err(JammiError::InvalidInput(
                "vector_search: the query vector is NULL".into(),
            ));
        }
        other => {
            return Err(JammiError::InvalidInput(format!(
                "vector_search: the query must be an array of numbers, got {}",
                other.data_type()
            )));
        }
    };
    if q.is_empty() {
        return Err(JammiError::InvalidInput(
            "vector_search: the query vector is empty".into(),
        ));
    }
    crate::index::vectors::check_finite("vector_search: the query", &q)?;
    Ok(q)
}

/// The query vectors of a column (one per row; batch searches and subqueries).
pub fn query_vectors(column: &ArrayRef) -> Result<Vec<Vec<f32>>> {
    (0..column.len())
        .map(|i| query_vector(&ScalarValue::try_from_array(column, i)?))
        .collect()
}
