//! The flipslot agent: everything that runs on the device.
//!
//! Rooms, from the top down (each imports only rooms below it): `cli` (the `flipslot`
//! and `rauc` command lines) → `daemon` → `ops` (typed operations and their rendering) →
//! `provision` → `install`, `health` → `slot`, `bootloader`, `config` → `net`, `host` (the side-effect
//! seams). `ARCHITECTURE.md` is the map.

pub mod bootloader;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod health;
pub mod host;
pub mod install;
pub mod net;
pub mod ops;
pub mod provision;
pub mod slot;
