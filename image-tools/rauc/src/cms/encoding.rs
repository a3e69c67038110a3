//! The DER that CMS verification walks by hand: tag-length-value splitting, the raw
//! signed-attributes bytes (re-tagged as a `SET OF` for the signature check) and the
//! signed attributes the checks look at.

use der::asn1::{ObjectIdentifier, SetOfVec};
use der::{Decode, Encode, Header, Reader, SliceReader};
use x509_cert::attr::Attribute;

use super::CmsError;

pub(super) const ATTR_CONTENT_TYPE: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.3");
pub(super) const ATTR_MESSAGE_DIGEST: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
pub(super) const ATTR_SIGNING_TIME: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.5");

/// DER identifier octets of the structures walked here.
pub(super) const TAG_INTEGER: u8 = 0x02;
pub(super) const TAG_SEQUENCE: u8 = 0x30;
pub(super) const TAG_SET: u8 = 0x31;
pub(super) const TAG_CONTEXT_0: u8 = 0xa0;
pub(super) const TAG_CONTEXT_1: u8 = 0xa1;

/// The signed attributes verification looks at.
#[derive(Debug)]
pub(super) struct SignedAttrs {
    pub(super) content_type: ObjectIdentifier,
    pub(super) message_digest: Vec<u8>,
    pub(super) signing_time: Option<i64>,
}

impl SignedAttrs {
    pub(super) fn parse(set: &SetOfVec<Attribute>) -> Result<Self, CmsError> {
        let mut content_type = None;
        let mut message_digest = None;
        let mut signing_time = None;
        for attr in set.iter() {
            let name = match attr.oid {
                ATTR_CONTENT_TYPE => "contentType",
                ATTR_MESSAGE_DIGEST => "messageDigest",
                ATTR_SIGNING_TIME => "signingTime",
                _ => continue,
            };
            let [value] = attr.values.as_slice() else {
                return Err(malformed(format!(
                    "{name} attribute does not have one value"
                )));
            };
            let bad = |e: der::Error| malformed(format!("{name} attribute: {e}"));
            let dup = || malformed(format!("{name} attribute appears twice"));
            match attr.oid {
                ATTR_CONTENT_TYPE => {
                    let v: ObjectIdentifier = value.decode_as().map_err(bad)?;
                    if content_type.replace(v).is_some() {
                        return Err(dup());
                    }
                }
                ATTR_MESSAGE_DIGEST => {
                    let v: der::asn1::OctetString = value.decode_as().map_err(bad)?;
                    if message_digest.replace(v.into_bytes()).is_some() {
                        return Err(dup());
                    }
                }
                _ => {
                    let der = value.to_der().map_err(bad)?;
                    let time = x509_cert::time::Time::from_der(&der).map_err(bad)?;
                    let secs = i64::try_from(time.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
                    if signing_time.replace(secs).is_some() {
                        return Err(dup());
                    }
                }
            }
        }
        Ok(SignedAttrs {
            content_type: content_type.ok_or(CmsError::MissingAttribute("contentType"))?,
            message_digest: message_digest.ok_or(CmsError::MissingAttribute("messageDigest"))?,
            signing_time,
        })
    }
}

pub(super) fn malformed(reason: impl Into<String>) -> CmsError {
    CmsError::Malformed(reason.into())
}

/// The value of the single DER TLV `tlv`, which must have identifier octet `tag` and no
/// trailing bytes.
pub(super) fn expect<'a>(tlv: &'a [u8], tag: u8, what: &str) -> Result<&'a [u8], CmsError> {
    let bad = |e: der::Error| malformed(format!("{what}: {e}"));
    let mut reader = SliceReader::new(tlv).map_err(bad)?;
    let header = Header::decode(&mut reader).map_err(bad)?;
    let value = reader.read_slice(header.length).map_err(bad)?;
    reader.finish(()).map_err(bad)?;
    match tlv.first() {
        Some(&t) if t == tag => Ok(value),
        other => Err(malformed(format!(
            "{what}: expected tag {tag:#04x}, found {:#04x}",
            other.copied().unwrap_or_default()
        ))),
    }
}

/// The TLVs that make up a constructed value.
pub(super) fn elements<'a>(value: &'a [u8], what: &str) -> Result<Vec<&'a [u8]>, CmsError> {
    let bad = |e: der::Error| malformed(format!("{what}: {e}"));
    let mut reader = SliceReader::new(value).map_err(bad)?;
    let mut out = Vec::new();
    while !reader.is_finished() {
        out.push(reader.tlv_bytes().map_err(bad)?);
    }
    Ok(out)
}

/// The signed attributes of a raw SignerInfo, re-tagged from `[0] IMPLICIT` to the
/// `SET OF` (0x31) the signature covers (RFC 5652 section 5.4), keeping the original
/// bytes and order.
pub(super) fn signed_attrs_der(signer_info: &[u8]) -> Result<Option<Vec<u8>>, CmsError> {
    let value = expect(signer_info, TAG_SEQUENCE, "signer info")?;
    // version, sid, digestAlgorithm, then the optional [0] signedAttrs.
    let Some(&attrs) = elements(value, "signer info")?.get(3) else {
        return Ok(None);
    };
    if attrs.first() != Some(&TAG_CONTEXT_0) {
        return Ok(None);
    }
    let mut der = attrs.to_vec();
    if let Some(tag) = der.first_mut() {
        *tag = TAG_SET;
    }
    Ok(Some(der))
}
