//! The `cloudlake` binary: parse flags, run the command, print one clear sentence on failure.

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
