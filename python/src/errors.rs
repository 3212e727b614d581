//! The exception hierarchy, mirroring `JammiError`: every error jammi-db raises is a
//! `jammi_ai.JammiError`, with the Rust message unchanged.

use datafusion::error::DataFusionError;
use jammi_db::JammiError as RustError;
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;

create_exception!(
    jammi_ai,
    JammiError,
    PyException,
    "Base class of every jammi-db error."
);
create_exception!(
    jammi_ai,
    InvalidUrlError,
    JammiError,
    "A storage URL that cannot be used."
);
create_exception!(
    jammi_ai,
    FeatureNotEnabledError,
    JammiError,
    "A URL scheme whose cloud support is not in this build."
);
create_exception!(
    jammi_ai,
    OptionError,
    JammiError,
    "Bad options or credentials: an unknown key, a value of the wrong form."
);
create_exception!(
    jammi_ai,
    InvalidInputError,
    JammiError,
    "A bad argument: wrong dimensions, NaN in a vector, a bad table name."
);
create_exception!(
    jammi_ai,
    NotFoundError,
    JammiError,
    "A source or table that does not exist."
);
create_exception!(
    jammi_ai,
    AlreadyExistsError,
    JammiError,
    "A name already taken."
);
create_exception!(
    jammi_ai,
    CorruptError,
    JammiError,
    "A result table or sidecar that is damaged."
);
create_exception!(
    jammi_ai,
    ConflictError,
    JammiError,
    "Another writer holds the table, or an object jammi-db did not write is in the way."
);
create_exception!(
    jammi_ai,
    StorageError,
    JammiError,
    "The storage backend failed."
);
create_exception!(
    jammi_ai,
    QueryError,
    JammiError,
    "SQL that cannot be planned or run."
);
create_exception!(
    jammi_ai,
    ClosedError,
    JammiError,
    "The database was closed."
);

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("JammiError", py.get_type::<JammiError>())?;
    m.add("InvalidUrlError", py.get_type::<InvalidUrlError>())?;
    m.add(
        "FeatureNotEnabledError",
        py.get_type::<FeatureNotEnabledError>(),
    )?;
    m.add("OptionError", py.get_type::<OptionError>())?;
    m.add("InvalidInputError", py.get_type::<InvalidInputError>())?;
    m.add("NotFoundError", py.get_type::<NotFoundError>())?;
    m.add("AlreadyExistsError", py.get_type::<AlreadyExistsError>())?;
    m.add("CorruptError", py.get_type::<CorruptError>())?;
    m.add("ConflictError", py.get_type::<ConflictError>())?;
    m.add("StorageError", py.get_type::<StorageError>())?;
    m.add("QueryError", py.get_type::<QueryError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    Ok(())
}

/// The Python exception for `e`: its class from the innermost jammi-db error (DataFusion
/// wraps the errors of jammi's planners and providers), its message the outer one's.
pub(crate) fn to_py(e: RustError) -> PyErr {
    class_of(&e).new_err(e.to_string())
}

/// A DataFusion error as a Python exception.
pub(crate) fn df_to_py(e: DataFusionError) -> PyErr {
    to_py(RustError::DataFusion(e))
}

fn inner_jammi(e: &DataFusionError) -> Option<&RustError> {
    match e {
        DataFusionError::External(b) => {
            if let Some(j) = b.downcast_ref::<RustError>() {
                return match j {
                    RustError::DataFusion(d) => inner_jammi(d).or(Some(j)),
                    _ => Some(j),
                };
            }
            b.downcast_ref::<DataFusionError>().and_then(inner_jammi)
        }
        DataFusionError::Context(_, d) | DataFusionError::Diagnostic(_, d) => inner_jammi(d),
        DataFusionError::Shared(d) => inner_jammi(d),
        DataFusionError::ArrowError(a, _) => match a.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(b) => b
                .downcast_ref::<DataFusionError>()
                .and_then(inner_jammi)
                .or_else(|| b.downcast_ref::<RustError>()),
            _ => None,
        },
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Class {
    Base,
    InvalidUrl,
    FeatureNotEnabled,
    Option,
    InvalidInput,
    NotFound,
    AlreadyExists,
    Corrupt,
    Conflict,
    Storage,
    Query,
}

fn class_of(e: &RustError) -> Class {
    match e {
        RustError::InvalidUrl { .. } => Class::InvalidUrl,
        RustError::FeatureNotEnabled { .. } => Class::FeatureNotEnabled,
        RustError::Config(_) | RustError::Credentials(_) => Class::Option,
        RustError::InvalidInput(_) | RustError::NotAQuery { .. } => Class::InvalidInput,
        RustError::NotFound { .. } => Class::NotFound,
        RustError::AlreadyExists { .. } => Class::AlreadyExists,
        RustError::Corrupt { .. } | RustError::Document { .. } => Class::Corrupt,
        RustError::InProgress { .. }
        | RustError::LeaseLost { .. }
        | RustError::NotOwned { .. }
        | RustError::Conflict(_) => Class::Conflict,
        RustError::Storage { .. } | RustError::Io(_) | RustError::Unavailable { .. } => {
            Class::Storage
        }
        RustError::DataFusion(d) => inner_jammi(d).map_or(Class::Query, class_of),
        _ => Class::Base,
    }
}

impl Class {
    fn new_err(self, message: String) -> PyErr {
        match self {
            Class::Base => JammiError::new_err(message),
            Class::InvalidUrl => InvalidUrlError::new_err(message),
            Class::FeatureNotEnabled => FeatureNotEnabledError::new_err(message),
            Class::Option => OptionError::new_err(message),
            Class::InvalidInput => InvalidInputError::new_err(message),
            Class::NotFound => NotFoundError::new_err(message),
            Class::AlreadyExists => AlreadyExistsError::new_err(message),
            Class::Corrupt => CorruptError::new_err(message),
            Class::Conflict => ConflictError::new_err(message),
            Class::Storage => StorageError::new_err(message),
            Class::Query => QueryError::new_err(message),
        }
    }
}
