//! The QEMU rig of flipslot's end-to-end tests.
//!
//! A test builds a guest root tree ([`guest`]) holding Debian's kernel ([`kernel`]), a small
//! busybox initramfs ([`initramfs`], written with [`cpio`]) and the static agent
//! ([`cargo_build`]); turns it into a bundle with `flipslot-image build`; lays out a GPT disk
//! with `flipslot-image disk`; puts its scenario on the data partition ([`scenario`]); and
//! boots it under QEMU ([`qemu`]), watching the serial console for the guest's marker lines.
//!
//! Invariants: every host program runs through [`cmd`] (argv, never a shell); every QEMU run
//! has a hard deadline and is killed when its [`qemu::Vm`] is dropped; downloads and builds
//! are cached under `target/rig-cache/`, serial logs kept in `target/rig-logs/`. Shell
//! scripts exist only as guest programs (`src/scripts/`), never run on the host; the one
//! exception is `tests/yocto_layer.rs`, whose subjects are the Yocto layer's own scripts.

pub mod busybox;
pub mod cargo_build;
pub mod cmd;
pub mod cpio;
pub mod deb;
pub mod guest;
pub mod host;
pub mod images;
pub mod initramfs;
pub mod inspect;
pub mod kernel;
pub mod network;
pub mod paths;
pub mod pxe;
pub mod qemu;
pub mod scenario;
pub mod systemd_guest;
pub mod updates;
