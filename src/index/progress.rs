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

/// Index builds drawn as a bar on stderr, only when stderr is a terminal (indicatif draws
/// nothing otherwise): what the `jammi` CLI and the Python binding show.
#[cfg(feature = "progress-bar")]
#[derive(Debug, Default)]
pub struct TerminalBar {
    bar: std::sync::Mutex<Option<indicatif::ProgressBar>>,
}

#[cfg(feature = "progress-bar")]
impl BuildProgress for TerminalBar {
    fn start(&self, what: &str, total_rows: u64) {
        let style = indicatif::ProgressStyle::with_template(
            "indexing {msg} {bar:30} {pos}/{len} rows ({eta})",
        )
        .expect("a valid template");
        let bar = indicatif::ProgressBar::new(total_rows).with_style(style);
        bar.set_message(what.to_string());
        *self.bar.lock().expect("lock") = Some(bar);
    }

    fn advance(&self, rows: u64) {
        if let Some(b) = self.bar.lock().expect("lock").as_ref() {
            b.inc(rows);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.lock().expect("lock").take() {
            b.finish_and_clear();
        }
    }
}
