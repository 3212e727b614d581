//! Progress of index builds, reported to whatever displays it: the library draws nothing
//! itself, so a terminal bar (the CLI) or a notebook bar (Python) is the caller's choice.

use std::sync::Arc;

/// Receives the progress of one index build at a time.
pub trait BuildProgress: Send + Sync + std::fmt::Debug {
    /// A build of `total_rows` rows of `what` (a file name) starts.
    fn start(&self, what: &str, total_rows: u64);
    /// `rows` more rows were added to the index.
    fn advance(&self, rows: u64);
    /// The build ended (committed or failed).
    fn finish(&self);
}

/// The session-config extension that carries a [`BuildProgress`] to the DDL that builds
/// indexes (`SessionConfig::with_extension(Arc::new(ProgressReporter(...)))`).
#[derive(Debug, Clone)]
pub struct ProgressReporter(pub Arc<dyn BuildProgress>);
