//! The stores, one module each, behind cargo features.
