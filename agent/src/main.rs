//! The `flipslot` binary: logging, then one call into the library.

fn main() {
    flipslot_cli_support::logger::init();
    let as_rauc = std::env::args_os()
        .next()
        .is_some_and(|a| flipslot::cli::rauc::invoked_as_rauc(&a));
    let result = if as_rauc {
        flipslot::cli::rauc::run()
    } else {
        flipslot::cli::run()
    };
    if let Err(e) = result {
        eprintln!("error: {}", flipslot_cli_support::error_chain(&e));
        std::process::exit(1);
    }
}
