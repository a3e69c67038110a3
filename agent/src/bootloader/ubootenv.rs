//! U-Boot environments on this machine: `fw_env.config` ([`config`]) and the storage of
//! the copies ([`store`]). The byte layout and the choice of the current copy are the pure
//! codec [`flipslot_bootenv::ubootenv`], re-exported here.

pub mod config;
pub mod store;

pub use config::{EnvDevice, FwEnvConfig};
pub use flipslot_bootenv::ubootenv::*;
pub use store::{EnvStore, FwEnvStore, MemEnvStore};
