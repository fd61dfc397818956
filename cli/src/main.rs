//! The `cadenas` command: see `cadenas --help` and the README.

fn main() -> std::process::ExitCode {
    cadenas_cli::main()
}
