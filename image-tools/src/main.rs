//! The `flipslot-image` binary: sets up logging, runs the command line of
//! [`flipslot_image::cli`] and prints the error chain on failure.

use std::process::ExitCode;

fn main() -> ExitCode {
    flipslot_image::logger::init();
    match flipslot_image::cli::run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", flipslot_image::cli::error_chain(&e));
            ExitCode::FAILURE
        }
    }
}
