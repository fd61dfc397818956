//! The stores, one module each, behind cargo features.

#[cfg(feature = "sqlite")]
pub mod sqlite;
