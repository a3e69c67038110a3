//! The flipslot bundle format: building, signing, verifying and reading signed A/B update
//! bundles (`.fsb`).
//!
//! This crate does no device I/O. Readers are generic over a [`source::ByteSource`];
//! every length read from a bundle is bounded before anything is allocated, and the
//! signature over the manifest bytes is verified before the manifest is parsed. The byte
//! layout is specified in [`mod@format`] and in `docs/bundle-format.md`.
#![forbid(unsafe_code)]

pub mod builder;
pub mod channel;
pub mod digest;
pub mod error;
pub mod format;
pub mod grubenv;
pub mod keyfile;
pub mod keys;
pub mod logger;
pub mod manifest;
pub mod rauc;
pub mod reader;
pub mod source;
pub mod timefmt;
pub mod units;

pub use digest::Sha256Digest;
pub use error::BundleError;
pub use format::KeyId;
pub use keys::Keyring;
pub use manifest::{Compression, Manifest};
pub use reader::{Bundle, VerifyPolicy};
pub mod cli;
pub mod command;
pub mod disk;
pub mod mkfs;
pub mod progress;
