//! Bootloader environment codecs shared by the agent and `flipslot-image`: the GRUB
//! environment block ([`grubenv`], byte compatible with `grub-editenv`) and the U-Boot
//! environment ([`ubootenv`]: CRC, single and redundant copies with their flag byte,
//! which copy is current, parse and serialise).
//!
//! Pure: bytes in, bytes out. This crate never opens a file or a device, never reads
//! `fw_env.config` and never runs a bootloader tool; the agent does that around it.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod grubenv;
pub mod ubootenv;
