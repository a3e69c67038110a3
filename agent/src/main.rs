//! The `flipslot` binary (also the `rauc` drop-in, through a symlink): logging, then one
//! call into the library, which picks the command line from argv[0].

fn main() {
    flipslot_cli_support::logger::init();
    if let Err(e) = flipslot::cli::main() {
        eprintln!("error: {}", flipslot_cli_support::error_chain(&e));
        std::process::exit(1);
    }
}
