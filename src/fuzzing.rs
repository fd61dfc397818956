//! Entry points for the fuzz targets in `fuzz/`, compiled only with `--cfg fuzzing` (which
//! `cargo fuzz` sets). Not part of the API. The CLI's entry point is `cadenas_cli::fuzz_run`.

pub use crate::token::Token;
