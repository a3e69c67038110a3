//! The `flipslot` binary: logging, then one call into the library.

fn main() {
    flipslot_image::logger::init();
    if let Err(e) = flipslot::cli::run() {
        eprintln!("error: {}", flipslot_image::cli::error_chain(&e));
        std::process::exit(1);
    }
}
