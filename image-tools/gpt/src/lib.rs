//! GUID partition tables for provisioning a blank disk.
//!
//! Pure: bytes in, bytes out. This crate never opens a file or a device and never runs a
//! program.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod guid;

pub use guid::{Guid, GuidError, ESP_TYPE, LINUX_FS_TYPE};
