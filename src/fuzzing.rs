//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (which
//! `cargo fuzz` sets). Not part of the API.

pub use crate::token::Token;

#[cfg(feature = "cli")]
pub use crate::cli::fuzz_run as cli_run;
