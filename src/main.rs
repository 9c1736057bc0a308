//! The `contact-sync` binary: parse the command line, set up logging, run, map the outcome to
//! an exit code. Everything else lives in the library.

use std::process::ExitCode;

fn main() -> ExitCode {
    contact_sync::cli::main()
}
