//! One error enum for every backend and layer, in the style of `object_store::Error`:
//! callers branch on meaning (not found, already exists, bad input), never on the backend.
//!
//! Messages never contain secrets: configuration values are only ever named by their key.

use std::fmt;

/// Result type used throughout jammi-db.
pub type Result<T, E = JammiError> = std::result::Result<T, E>;

/// Every error jammi-db returns.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JammiError {
    /// A storage URL or local path could not be parsed.
    #[error("invalid storage URL '{url}': {reason}")]
    InvalidUrl {
        /// The URL as given (URLs never carry secrets in jammi-db; SAS tokens go in config).
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The URL's scheme needs a cargo feature that this build does not have.
    #[error(
        "the '{scheme}://' scheme needs jammi-db's cargo feature '{feature}', which this build does not enable (add `features = [\"{feature}\"]`)"
    )]
    FeatureNotEnabled {
        /// Scheme as written in the canonical URL.
        scheme: String,
        /// Feature to enable.
        feature: &'static str,
    },
    /// A configuration key or value is wrong. Names the key, never echoes a secret value.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A named thing does not exist (source, table, object, column).
    #[error("{kind} not found: {name}")]
    NotFound {
        /// What kind of thing (e.g. "source", "result table", "object").
        kind: &'static str,
        /// Its name or URL.
        name: String,
    },
    /// A named thing exists already (e.g. a source name, a committed table).
    #[error("{kind} already exists: {name}")]
    AlreadyExists {
        /// What kind of thing.
        kind: &'static str,
        /// Its name or URL.
        name: String,
    },
    /// Input given by the caller is wrong (bad dimension, bad k, bad column, ...).
    #[error("{0}")]
    InvalidInput(String),
    /// A statement given to `prepare` is not a query (DDL, DML, `COPY`...): run it with
    /// `sql` instead.
    #[error("prepare: only a query can be prepared, not {statement}")]
    NotAQuery {
        /// The statement's plan, displayed.
        statement: String,
    },
    /// A stored table failed verification (missing, truncated or corrupt sibling, or a
    /// record naming objects that are not its own).
    #[error("{kind} '{table}' is broken: {reason}")]
    Corrupt {
        /// What is broken: "result table", "indexed file", "cache file".
        kind: &'static str,
        /// Its name (a result table's name, an indexed file's URL).
        table: String,
        /// What failed to verify.
        reason: String,
    },
    /// Another process is writing, indexing or deleting the same table right now.
    #[error("{name} is being written by {holder}; try again when it is done")]
    InProgress {
        /// The table (or file stem).
        name: String,
        /// Who holds its lease (process and host).
        holder: String,
    },
    /// A registered table cannot be read now (its file is gone, its credentials are missing,
    /// its sidecars are broken).
    #[error("{name} cannot be read: {reason}")]
    Unavailable {
        /// The table (`source.public.table` or the result table's name).
        name: String,
        /// Why.
        reason: String,
    },
    /// An operation's lease was taken over or lapsed: it stopped before publishing anything.
    #[error("the lease at {url} was lost ({reason}); nothing was published")]
    LeaseLost {
        /// The lease's URL.
        url: String,
        /// How it was lost.
        reason: String,
    },
    /// An object stands where an operation would create one, and no record of jammi-db's
    /// proves it wrote it: the operation refuses rather than overwrite it.
    #[error("{url} already exists and jammi-db did not write it; {hint}")]
    NotOwned {
        /// The object's URL.
        url: String,
        /// What the caller can do.
        hint: String,
    },
    /// A change could not be committed because other writers' changes conflict with it
    /// (or kept committing first).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Credentials are needed but missing (e.g. a source whose secrets were not persisted).
    #[error("{0}")]
    Credentials(String),
    /// An object-store operation failed.
    #[error("storage error at {url}: {source}")]
    Storage {
        /// The URL (or path) the operation was on.
        url: String,
        /// The underlying object_store error.
        #[source]
        source: object_store::Error,
    },
    /// A DataFusion or Arrow/Parquet error.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
    /// USearch reported an error.
    #[error("vector index error: {0}")]
    Index(String),
    /// Local I/O error (temp files, caches).
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The Ballista cluster at `url` (its scheduler) could not be reached, or cannot run
    /// what was asked of it.
    #[error("the cluster at {url}: {reason}")]
    Cluster {
        /// The scheduler's address as given (`df://host:port`).
        url: String,
        /// Why.
        reason: String,
    },
    /// JSON (manifest / catalog document) could not be read.
    #[error("invalid document {what}: {reason}")]
    Document {
        /// Which document.
        what: String,
        /// Why.
        reason: String,
    },
}

impl JammiError {
    /// Wraps an object-store error, keeping the URL it happened at.
    pub fn storage(url: impl fmt::Display, source: object_store::Error) -> Self {
        match source {
            object_store::Error::NotFound { .. } => JammiError::NotFound {
                kind: "object",
                name: url.to_string(),
            },
            source => JammiError::Storage {
                url: url.to_string(),
                source,
            },
        }
    }

    /// `true` when the error means "the thing does not exist".
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            JammiError::NotFound { .. }
                | JammiError::Storage {
                    source: object_store::Error::NotFound { .. },
                    ..
                }
        )
    }
}

impl From<datafusion::arrow::error::ArrowError> for JammiError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        JammiError::DataFusion(e.into())
    }
}

impl From<datafusion::parquet::errors::ParquetError> for JammiError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        JammiError::DataFusion(e.into())
    }
}

impl From<JammiError> for datafusion::error::DataFusionError {
    fn from(e: JammiError) -> Self {
        match e {
            JammiError::DataFusion(e) => e,
            other => datafusion::error::DataFusionError::External(Box::new(other)),
        }
    }
}
