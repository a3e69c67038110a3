//! `flipslot-image`, the build-host command line: build, sign, verify, inspect and
//! extract bundles ([`flipslot_format`]), read RAUC bundles ([`flipslot_rauc`]), sign
//! update channels and plan a change of one ([`channel_diff`]), make reproducible
//! filesystems ([`mkfs`]) from directories or from OCI and Docker images ([`oci`]), whole
//! disk images ([`disk`]), the signed provisioning set a network-booted machine installs
//! itself from ([`provision`]) and the PXE files that boot it ([`netboot`]).
//!
//! The library target exists for this package's integration tests; the agent does not
//! link it. Subprocesses go through [`flipslot_os::process`], file replacement through
//! [`flipslot_os::fs`]. It never writes to a block device.

pub mod channel_diff;
pub mod cli;
pub mod disk;
pub mod mkfs;
pub mod netboot;
pub mod oci;
pub mod provision;
