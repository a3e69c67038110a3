//! Chain building from a signer to a trust anchor and the checks on each chain: validity
//! periods, signatures, OpenSSL's CA rules, pathLenConstraint, `check-purpose` and
//! `allowed-signer-cns`.

use der::asn1::ObjectIdentifier;

use super::cert::Exts;
use super::{fmt_time, name_string, Cert, Purpose, TrustStore, VerifyOptions, X509Error};
use crate::oid;

/// Longest chain tried, signer and anchor included (OpenSSL allows 100; RAUC chains have
/// two or three certificates).
const MAX_CHAIN_LEN: usize = 10;
/// Bound on chain-building steps, so that a signature carrying many certificates with
/// the same names cannot make the search explode.
const MAX_SEARCH_STEPS: usize = 256;

/// Builds and checks the chain from `leaf` to a trust anchor in `store`, at Unix time
/// `at`. `untrusted` are the certificates the signature carries. Returns the chain,
/// leaf first, anchor last.
pub fn verify_chain(
    leaf: &Cert,
    untrusted: &[Cert],
    store: &TrustStore,
    opts: &VerifyOptions,
    at: i64,
) -> Result<Vec<Cert>, X509Error> {
    let mut search = Search {
        store,
        untrusted,
        allow_partial: opts.allow_partial_chain,
        steps: 0,
        paths: Vec::new(),
        dead_end: Vec::new(),
    };
    let mut path = vec![leaf];
    search.extend(&mut path);
    let Search {
        paths, dead_end, ..
    } = search;
    let mut first_error = None;
    for path in &paths {
        match check_path(path, opts.purpose, at) {
            Ok(()) => return Ok(path.iter().map(|c| (*c).clone()).collect()),
            Err(e) => {
                log::debug!(
                    "chain {} rejected: {e}",
                    path.iter()
                        .map(|c| c.subject())
                        .collect::<Vec<_>>()
                        .join(" <- ")
                );
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Err(X509Error::Untrusted {
        subject: leaf.subject().to_owned(),
        reason: dead_end_reason(&dead_end, store, opts.allow_partial_chain),
    })
}

/// Why the longest chain found could not be completed.
fn dead_end_reason(path: &[&Cert], store: &TrustStore, allow_partial: bool) -> String {
    let Some(top) = path.last() else {
        return "no chain".to_owned();
    };
    if store.contains(top) && !allow_partial {
        format!(
            "{} is in the keyring but not self-signed, and allow-partial-chain is off",
            top.subject()
        )
    } else if top.is_self_issued() {
        format!(
            "self-signed certificate {} is not in the keyring",
            top.subject()
        )
    } else {
        format!(
            "no certificate for issuer {} of {} in the signature or the keyring",
            name_string(top.issuer_name()),
            top.subject()
        )
    }
}

/// Depth-first search for candidate chains, preferred ones first: keyring issuers before
/// the signature's certificates, and (with a partial chain) longer chains first.
struct Search<'a> {
    store: &'a TrustStore,
    untrusted: &'a [Cert],
    allow_partial: bool,
    steps: usize,
    paths: Vec<Vec<&'a Cert>>,
    dead_end: Vec<&'a Cert>,
}

impl<'a> Search<'a> {
    fn extend(&mut self, path: &mut Vec<&'a Cert>) {
        self.steps += 1;
        if self.steps > MAX_SEARCH_STEPS {
            return;
        }
        let Some(&cur) = path.last() else { return };
        let trusted = self.store.contains(cur);
        if trusted && cur.is_self_issued() {
            self.paths.push(path.clone());
            return;
        }
        let found_before = self.paths.len();
        if path.len() < MAX_CHAIN_LEN {
            // Once the chain is in the keyring, it stays there.
            let in_keyring = path.iter().any(|c| self.store.contains(c));
            let store = self.store.certificates().iter();
            let untrusted = self
                .untrusted
                .iter()
                .filter(|c| !in_keyring && !self.store.contains(c));
            for cand in store.chain(untrusted) {
                if cur.may_be_issued_by(cand) && !path.contains(&cand) {
                    path.push(cand);
                    self.extend(path);
                    path.pop();
                }
            }
        }
        if trusted && self.allow_partial {
            self.paths.push(path.clone());
        }
        if self.paths.len() == found_before && path.len() > self.dead_end.len() {
            self.dead_end = path.clone();
        }
    }
}

/// Checks one candidate chain (leaf first, anchor last).
fn check_path(path: &[&Cert], purpose: Purpose, at: i64) -> Result<(), X509Error> {
    // Non-self-issued intermediates seen so far, for pathLenConstraint.
    let mut intermediates = 0usize;
    let last = path.len() - 1;
    for (i, &cert) in path.iter().enumerate() {
        let exts = cert.exts()?;
        check_time(cert, at)?;
        if let Some(&issuer) = path.get(i + 1) {
            cert.verify_signed_by(issuer)?;
        }
        if i == 0 {
            check_leaf_purpose(cert, exts, purpose)?;
            continue;
        }
        match ca_kind(cert, exts) {
            Ok(CaKind::Ca) => {}
            Ok(CaKind::Tolerated) if i == last => {}
            Ok(CaKind::Tolerated) => {
                return Err(X509Error::NotCa {
                    subject: cert.subject().to_owned(),
                    reason: "it has no basic constraints extension".to_owned(),
                })
            }
            Err(reason) => {
                return Err(X509Error::NotCa {
                    subject: cert.subject().to_owned(),
                    reason,
                })
            }
        }
        check_ca_purpose(cert, exts, purpose)?;
        if let Some(limit) = exts.basic.as_ref().and_then(|b| b.path_len_constraint) {
            if intermediates > usize::from(limit) {
                return Err(X509Error::PathLength {
                    subject: cert.subject().to_owned(),
                    limit,
                    count: intermediates,
                });
            }
        }
        if !cert.is_self_issued() {
            intermediates += 1;
        }
    }
    Ok(())
}

fn check_time(cert: &Cert, at: i64) -> Result<(), X509Error> {
    if at < cert.not_before() {
        return Err(X509Error::NotYetValid {
            subject: cert.subject().to_owned(),
            not_before: fmt_time(cert.not_before()),
            time: fmt_time(at),
        });
    }
    if at > cert.not_after() {
        return Err(X509Error::Expired {
            subject: cert.subject().to_owned(),
            not_after: fmt_time(cert.not_after()),
            time: fmt_time(at),
        });
    }
    Ok(())
}

enum CaKind {
    /// basicConstraints cA=true.
    Ca,
    /// No basicConstraints, but a v1 self-issued root or a keyUsage with keyCertSign:
    /// OpenSSL accepts these as the top of a chain only.
    Tolerated,
}

/// OpenSSL's `check_ca`.
fn ca_kind(cert: &Cert, exts: &Exts) -> Result<CaKind, String> {
    if exts.key_usage.is_some_and(|ku| !ku.key_cert_sign()) {
        return Err("key usage lacks keyCertSign".to_owned());
    }
    match &exts.basic {
        Some(b) if b.ca => Ok(CaKind::Ca),
        Some(_) => Err("basic constraints say cA=false".to_owned()),
        None => {
            let v1 =
                cert.certificate().tbs_certificate.version == x509_cert::certificate::Version::V1;
            if (v1 && cert.is_self_issued()) || exts.key_usage.is_some() {
                Ok(CaKind::Tolerated)
            } else {
                Err("it has no basic constraints extension".to_owned())
            }
        }
    }
}

fn eku_has(exts: &Exts, id: ObjectIdentifier) -> Option<bool> {
    exts.eku.as_ref().map(|list| list.contains(&id))
}

fn check_leaf_purpose(cert: &Cert, exts: &Exts, purpose: Purpose) -> Result<(), X509Error> {
    let fail = |reason: &str| {
        Err(X509Error::Purpose {
            subject: cert.subject().to_owned(),
            purpose,
            reason: reason.to_owned(),
        })
    };
    let ku = exts.key_usage;
    match purpose {
        Purpose::Any => Ok(()),
        Purpose::SmimeSign => {
            if eku_has(exts, oid::KP_EMAIL_PROTECTION) == Some(false) {
                return fail("extended key usage lacks emailProtection");
            }
            if ku.is_some_and(|ku| !ku.digital_signature() && !ku.non_repudiation()) {
                return fail("key usage lacks digitalSignature and nonRepudiation");
            }
            Ok(())
        }
        Purpose::CodeSign => {
            if ku.is_some_and(|ku| !ku.digital_signature()) {
                return fail("key usage lacks digitalSignature");
            }
            match eku_has(exts, oid::KP_CODE_SIGNING) {
                None => return fail("it has no extended key usage (codeSigning is required)"),
                Some(false) => return fail("extended key usage lacks codeSigning"),
                Some(true) => {}
            }
            if ku.is_none() {
                log::warn!(
                    "signer certificate {} should have a critical key usage extension",
                    cert.subject()
                );
            }
            Ok(())
        }
    }
}

fn check_ca_purpose(cert: &Cert, exts: &Exts, purpose: Purpose) -> Result<(), X509Error> {
    let (required, name) = match purpose {
        Purpose::Any => return Ok(()),
        Purpose::SmimeSign => (oid::KP_EMAIL_PROTECTION, "emailProtection"),
        Purpose::CodeSign => (oid::KP_CODE_SIGNING, "codeSigning"),
    };
    if eku_has(exts, required) == Some(false) {
        return Err(X509Error::Purpose {
            subject: cert.subject().to_owned(),
            purpose,
            reason: format!("extended key usage of a CA lacks {name}"),
        });
    }
    Ok(())
}

/// RAUC's `allowed-signer-cns`: the signer's (first) common name must be in the list;
/// an empty list allows any signer. Compared byte for byte, as RAUC does.
pub fn check_signer_cn(signer: &Cert, allowed: &[String]) -> Result<(), X509Error> {
    if allowed.is_empty() {
        return Ok(());
    }
    if let Some(cn) = signer.common_name() {
        if cn.contains(&0) {
            return Err(X509Error::SignerCnNul {
                subject: signer.subject().to_owned(),
            });
        }
        if allowed.iter().any(|a| a.as_bytes() == cn) {
            return Ok(());
        }
    }
    Err(X509Error::SignerCnNotAllowed {
        subject: signer.subject().to_owned(),
        allowed: allowed.join(", "),
    })
}
