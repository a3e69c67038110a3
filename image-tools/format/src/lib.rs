//! The flipslot bundle format: building, signing, verifying and reading signed A/B update
//! bundles (`.fsb`), and the small signed documents around them: the update channel that
//! points at them and the provisioning description that sets up a new machine.
//!
//! This crate owns the byte layout ([`mod@format`]), the manifest, the keys and keyrings,
//! the reader, the builder, the signed envelope ([`envelope`]) and the two documents signed
//! in it: the channel file ([`channel`]) and the provisioning description ([`provision`]).
//! It does no I/O of its own: the reader is generic over a [`source::ByteSource`] and the
//! builder writes to any [`std::io::Write`]; files are only opened at paths a caller passes
//! in (image inputs, key files, [`source::FileSource`]). It never runs a program, never
//! touches a terminal or a block device and never writes a file by itself. Every length
//! read from a bundle is bounded before anything is allocated, and the signature over the
//! manifest bytes (or over an envelope's payload) is verified before it is parsed. The byte
//! layout is specified in [`mod@format`] and in `docs/bundle-format.md`.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

pub mod builder;
pub mod channel;
pub mod digest;
pub mod envelope;
pub mod error;
pub mod format;
pub mod keyid;
pub mod keys;
pub mod manifest;
pub mod provision;
pub mod reader;
pub mod source;
pub mod timefmt;
pub mod units;

pub use digest::{Blake3Digest, Sha256Digest};
pub use error::BundleError;
pub use keyid::KeyId;
pub use keys::Keyring;
pub use manifest::{ChunkHash, Compression, Manifest};
pub use reader::{Bundle, VerifyPolicy};
