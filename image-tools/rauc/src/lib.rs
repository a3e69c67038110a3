//! RAUC bundles (`.raucb`): their trailer, CMS signature, X.509 keyring, dm-verity hash
//! tree, squashfs payload and `manifest.raucm`, read in-process so a RAUC device moves to
//! flipslot without RAUC, OpenSSL or `unsquashfs` on it.
//!
//! As with flipslot's own bundles, nothing is parsed before the signature over it has
//! been verified: the CMS blob (bounded in size) is the only input read unverified.
//!
//! This crate owns the RAUC side of flipslot: the bundle trailer and payload formats, the
//! CMS `SignedData` check, the X.509 keyring and chain rules, `manifest.raucm` and the
//! GLib key-file syntax it (and RAUC's `system.conf`) are written in. Bytes come through
//! [`flipslot_format::source::ByteSource`]; it never runs a program, never opens a device
//! and never writes a file.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod bundle;
pub mod cms;
pub mod digest;
pub mod keyfile;
pub mod manifest;
pub(crate) mod oid;
pub mod plain;
pub mod verity;
pub mod x509;
