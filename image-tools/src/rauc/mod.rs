//! RAUC bundles (`.raucb`): their trailer, CMS signature, X.509 keyring, dm-verity hash
//! tree, squashfs payload and `manifest.raucm`, read in-process so a RAUC device moves to
//! flipslot without RAUC, OpenSSL or `unsquashfs` on it.
//!
//! As with flipslot's own bundles, nothing is parsed before the signature over it has
//! been verified: the CMS blob (bounded in size) is the only input read unverified.

pub mod bundle;
pub mod cms;
pub mod manifest;
pub mod plain;
pub mod verity;
pub mod x509;
