//! The `flipslot-image` binary: sets up logging, runs the command line of
//! [`flipslot_image::cli`] and prints the error chain on failure.

use std::process::ExitCode;

fn main() -> ExitCode {
    flipslot_cli_support::logger::init();
    match flipslot_image::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", flipslot_cli_support::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
