//! One tokio runtime for the process, and the wait that every blocking call goes through.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;
use tokio::runtime::Runtime;

/// How often a wait looks for a pending signal (Ctrl-C).
const SIGNAL_POLL: Duration = Duration::from_millis(50);

pub(crate) fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("jammi")
            .build()
            .expect("cannot start the tokio runtime")
    })
}

/// Runs `fut` to completion with the GIL released, so other Python threads run meanwhile.
/// A signal handler that raises (Ctrl-C's `KeyboardInterrupt`) cancels it: the future is
/// dropped, which stops the query, and the exception propagates.
pub(crate) fn wait<F, T>(py: Python<'_>, fut: F) -> PyResult<T>
where
    F: Future<Output = T> + Send,
    T: Send,
{
    py.detach(|| {
        runtime().block_on(async {
            let mut fut = std::pin::pin!(fut);
            loop {
                match tokio::time::timeout(SIGNAL_POLL, &mut fut).await {
                    Ok(value) => return Ok(value),
                    Err(_) => Python::attach(|py| py.check_signals())?,
                }
            }
        })
    })
}
