//! flipslot's operating-system helpers shared by the agent and `flipslot-image`, each the
//! one home of its concern: [`process`] runs every external program (argv only, never a
//! shell, stdin null, an optional timeout), [`fs`] does every atomic file replacement
//! (temporary file, fsync, rename, fsync the directory).
//!
//! Apart from the agent's `sys` module, this is the only code in flipslot that makes
//! system calls beyond plain file reads and writes. It knows nothing about bundles,
//! slots or bootloaders and never reads a path of its own choosing: every path and
//! program comes from the caller.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod fs;
pub mod process;
