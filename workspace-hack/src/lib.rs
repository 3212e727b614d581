//! No code: this crate only switches on features (see its Cargo.toml).
