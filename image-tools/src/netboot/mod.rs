//! The files a PXE server serves to provision bare machines: a kernel, an initramfs that runs
//! `flipslot provision`, and the iPXE script that boots them.
//!
//! [`cpio`] writes the initramfs reproducibly; [`elf`] tells a static executable from a
//! dynamically linked one.

pub mod cpio;
pub mod elf;
