//! GUID partition tables for provisioning a blank disk: a layout planner ([`plan()`]).
//!
//! Pure: bytes in, bytes out. This crate never opens a file or a device and never runs a
//! program.
//!
//! The GUIDs of a plan are derived from a seed ([`Guid::derive`]), so the same
//! description on the same disk gives the same table.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod guid;
mod ondisk;
mod planner;

pub use guid::{Guid, GuidError, ESP_TYPE, LINUX_FS_TYPE};
pub use planner::{
    min_disk_size, plan, PartitionRequest, Plan, PlanError, PlannedPartition, ALIGNMENT,
    MAX_LABEL_UNITS, MAX_PARTITIONS,
};
