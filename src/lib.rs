//! jammi-db: local disk, S3, GCS and Azure Blob as interchangeable storage backends for
//! Apache DataFusion, with result tables (Parquet + USearch ANN sidecars) and
//! `vector_search` in SQL.
//!
//! - [`storage`]: storage URLs, cloud configuration, the object-store registry.
//! - [`source`]: file-shaped sources (`<source>.public.<table>`).
//! - [`catalog`]: the persistent catalog and DataFusion catalog providers.
//! - [`store`]: result tables with a crash-safe commit, delete and recovery.
//! - [`format`]: on-storage formats (manifest, naming, rowmap).
//! - [`index`]: the USearch sidecar.
//! - [`sql`]: option namespaces, DDL, `vector_search`; [`register`] installs it all into
//!   any `SessionContext`.
//! - [`session`]: `JammiSession`, a database under one root.

#![warn(missing_docs)]

pub mod catalog;
#[cfg(feature = "ballista")]
pub mod cluster;
pub mod error;
pub mod format;
pub mod index;
pub(crate) mod lru;
pub mod session;
pub mod source;
pub mod sql;
pub mod storage;
pub mod store;

pub use error::{JammiError, Result};
pub use sql::register;
