//! The Python binding of jammi-db (`import jammi_ai`): a thin layer over
//! [`jammi_db::session::JammiSession`], so no logic lives here twice. Every call into Rust
//! releases the GIL and can be interrupted with Ctrl-C; results cross into Python through
//! the Arrow C stream interface, without a copy.

mod arrow;
mod database;
mod errors;
mod result;
mod runtime;
mod values;

use pyo3::prelude::*;

#[pymodule]
fn _jammi_ai(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<database::Database>()?;
    m.add_class::<result::QueryResult>()?;
    errors::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
