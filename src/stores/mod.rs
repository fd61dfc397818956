//! The stores, one module each, behind cargo features.
#[cfg(feature = "redis")]
pub mod redis;
