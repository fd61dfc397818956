//! `cadenas-torture`: many processes take cadenas locks under fault injection; a checker
//! proves from their logs that two holders never overlapped. See the README's "Torture"
//! section and `cadenas-torture run --help`.

mod checker;
mod cli;
mod clock;
mod counter;
mod env;
mod faults;
mod long;
mod netns;
mod orchestrator;
mod proxy;
mod record;
mod servers;
mod worker;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(cli::main())
}
