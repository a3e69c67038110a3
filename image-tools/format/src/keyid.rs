//! The key id that names a signing key in bundles, channels and keyrings: the first 8
//! bytes of SHA-256 over the raw 32-byte ed25519 public key.

/// A key id: the first 8 bytes of SHA-256 over the raw public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 8]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl std::fmt::Debug for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// The suffix of a "not enough signatures" message (bundle or channel) naming the keys
/// that signed but are not trusted; empty when there are none.
pub(crate) fn untrusted_note(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        String::new()
    } else {
        let ids: Vec<String> = ids.iter().map(|k| k.to_string()).collect();
        format!(" (signed by untrusted key(s) {})", ids.join(", "))
    }
}
