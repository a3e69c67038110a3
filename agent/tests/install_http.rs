#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `flipslot install URL` end to end against a real nginx, directly or through a
//! fault-injecting proxy: resumes after drops and stalls, retries of 5xx, the errors a
//! user sees for everything else, TLS and mutual TLS. Every failure checks that the booted
//! slot, the bootloader's primary slot and the booted slot's status record are untouched.

mod support;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

use support::faultproxy::{Fault, FaultProxy};
use support::nginx::{Nginx, NginxConfig, Tls};
use support::{expect_failure, expect_success, pseudo_random, sha256_hex, stderr, Fixture};

/// An image of three and a bit chunks.
fn image(seed: u64) -> Vec<u8> {
    pseudo_random((3 << 20) + 1234, seed)
}

/// The payload offset written in a bundle's header.
fn payload_offset(bundle: &Path) -> u64 {
    let b = std::fs::read(bundle).unwrap();
    u64::from_le_bytes(b[32..40].try_into().unwrap())
}

/// Runs `flipslot install EXTRA… URL` with retries logged and no proxy from the
/// environment (unless `env` sets one).
fn install_url(f: &Fixture, url: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_flipslot"));
    cmd.arg("--config")
        .arg(f.config_path())
        .arg("--cmdline-file")
        .arg(f.cmdline_path())
        .arg("install")
        .args(extra.iter().map(OsStr::new))
        .arg(url)
        .stdin(Stdio::null())
        .env("FLIPSLOT_LOG", "info");
    for v in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Slot `bn` holds `img`, is primary and recorded as installed.
fn assert_installed(f: &Fixture, bn: &str, img: &[u8]) {
    let dev = f.slot_bytes(bn);
    assert!(
        dev[..img.len()] == img[..],
        "slot {bn} does not hold the image"
    );
    assert_eq!(f.primary().as_deref(), Some(bn));
    let rec = f.record(bn).expect("no status record");
    assert_eq!(
        rec.image_sha256.map(|d| d.to_hex()).as_deref(),
        Some(sha256_hex(img).as_str())
    );
}

/// A fixture, nginx serving one bundle of `image(seed)` as `b.fsb`, and the image.
struct Served {
    f: Fixture,
    nginx: Nginx,
    img: Vec<u8>,
    bundle: std::path::PathBuf,
    published: std::path::PathBuf,
    /// Kept for the test's lifetime (TLS material).
    _keep: Option<tempfile::TempDir>,
}

fn served(seed: u64, cfg: &NginxConfig) -> Option<Served> {
    let nginx = Nginx::start(cfg)?;
    let f = Fixture::new();
    let img = image(seed);
    let bundle = f.bundle("1.0.0", &img);
    let published = nginx.publish(&bundle, "b.fsb");
    Some(Served {
        f,
        nginx,
        img,
        bundle,
        published,
        _keep: None,
    })
}

/// The first byte asked for in a `Range: bytes=A-B` header.
fn range_start(range: &Option<String>) -> u64 {
    let r = range.as_deref().expect("no Range header");
    r.trim_start_matches("bytes=")
        .split('-')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// Expects a failed install mentioning `phrase` with nothing written; returns stderr.
fn refused(s: &Served, url: &str, extra: &[&str], phrase: &str) -> String {
    let before = s.f.snapshot();
    let err = expect_failure(&install_url(&s.f, url, extra, &[]), phrase);
    s.f.assert_nothing_written(&before);
    err
}

// ---------------------------------------------------------------------------------------
// Happy path and resumes

#[test]
fn plain_install_over_http() {
    let Some(s) = served(1, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    let before = s.f.snapshot();
    let out = install_url(&s.f, &proxy.url("b.fsb"), &["--json"], &[]);
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
    // One probe for the size, then one stream for everything, resumable with If-Range.
    let seen = proxy.seen();
    let total = std::fs::metadata(&s.bundle).unwrap().len();
    assert_eq!(seen.len(), 2, "{seen:#?}");
    assert_eq!(seen[0].range.as_deref(), Some("bytes=0-0"));
    assert_eq!(seen[0].status, Some(206));
    assert_eq!(
        seen[1].range.as_deref(),
        Some(format!("bytes=0-{}", total - 1).as_str())
    );
    assert!(
        seen[1]
            .if_range
            .as_deref()
            .is_some_and(|v| v.starts_with('"')),
        "no ETag in If-Range: {seen:#?}"
    );
    assert_eq!(seen[1].body_sent, total);
    let start: serde_json::Value = support::stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|l| l["event"] == "start")
        .expect("no start event");
    assert_eq!(start["bundle"], proxy.url("b.fsb"), "{start}");
}

#[test]
fn direct_install_without_proxy() {
    let Some(s) = served(2, &NginxConfig::default()) else {
        return;
    };
    let before = s.f.snapshot();
    expect_success(&install_url(&s.f, &s.nginx.url("b.fsb"), &[], &[]));
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
}

#[test]
fn dropped_connections_resume_at_the_exact_offset() {
    let Some(s) = served(3, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    // Six drops at pseudo-random points, each within the next 400 KiB.
    let cuts: Vec<u64> = pseudo_random(6 * 8, 77)
        .chunks(8)
        .map(|c| 1 + u64::from_le_bytes(c.try_into().unwrap()) % (400 << 10))
        .collect();
    for (i, &n) in cuts.iter().enumerate() {
        proxy.fault(i + 1, Fault::DropAfter(n));
    }
    let before = s.f.snapshot();
    let out = install_url(&s.f, &proxy.url("b.fsb"), &[], &[]);
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
    let seen = proxy.seen();
    assert_eq!(seen.len(), 2 + cuts.len(), "{seen:#?}");
    for i in 2..seen.len() {
        assert_eq!(
            range_start(&seen[i].range),
            range_start(&seen[i - 1].range) + seen[i - 1].body_sent,
            "request {i} does not resume where {} stopped: {seen:#?}",
            i - 1
        );
        assert_eq!(seen[i].status, Some(206));
    }
    let err = stderr(&out);
    assert!(
        err.matches("retry").count() >= cuts.len(),
        "retries not logged:\n{err}"
    );
}

#[test]
fn stall_longer_than_the_window_resumes() {
    let Some(s) = served(4, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.fault(
        1,
        Fault::StallAfter {
            after: 100_000,
            pause: Duration::from_secs(10),
        },
    );
    let out = install_url(&s.f, &proxy.url("b.fsb"), &["--stall-timeout", "1"], &[]);
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    // The agent gave up on the stalled response once and resumed on a new one at the
    // offset where the data stopped, instead of waiting the stall out (after which the
    // stalled response would have delivered the rest, with no third request).
    let err = stderr(&out);
    let retries: Vec<&str> = err.lines().filter(|l| l.contains(": retry ")).collect();
    assert_eq!(retries.len(), 1, "{err}");
    assert!(
        retries[0].contains("retry 1/") && retries[0].contains("at offset 100000"),
        "{err}"
    );
    assert!(retries[0].contains("stalled"), "{err}");
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(range_start(&seen[2].range), 100_000, "{seen:#?}");
    assert_eq!(seen[2].status, Some(206), "{seen:#?}");
}

#[test]
fn server_error_then_success() {
    let Some(s) = served(5, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    let e500 = Fault::Respond {
        status: 500,
        headers: vec![],
    };
    proxy.fault(0, e500.clone()).fault(2, e500);
    let out = install_url(&s.f, &proxy.url("b.fsb"), &[], &[]);
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    assert!(stderr(&out).contains("500"), "{}", stderr(&out));
}

#[test]
fn unavailable_with_retry_after_waits_and_succeeds() {
    let Some(s) = served(6, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.fault(
        1,
        Fault::Respond {
            status: 503,
            headers: vec![("Retry-After".into(), "1".into())],
        },
    );
    let started = Instant::now();
    let out = install_url(&s.f, &proxy.url("b.fsb"), &[], &[]);
    expect_success(&out);
    assert!(started.elapsed() >= Duration::from_secs(1));
    assert_installed(&s.f, "B", &s.img);
    assert!(stderr(&out).contains("in 1.0s"), "{}", stderr(&out));
}

#[test]
fn content_length_lies_resume_or_are_cut() {
    let Some(s) = served(7, &NginxConfig::default()) else {
        return;
    };
    let total = std::fs::metadata(&s.bundle).unwrap().len();
    // Smaller: the body looks complete too early; the rest is asked for again.
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.fault(1, Fault::ContentLength(total / 2));
    expect_success(&install_url(&s.f, &proxy.url("b.fsb"), &[], &[]));
    assert_installed(&s.f, "B", &s.img);
    let seen = proxy.seen();
    assert_eq!(range_start(&seen[2].range), total / 2, "{seen:#?}");

    // Larger: the connection closes before the announced end; everything needed arrived.
    let img = image(8);
    let other = s.f.bundle("1.1.0", &img);
    s.nginx.publish(&other, "c.fsb");
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.fault(1, Fault::ContentLength(total + 100_000));
    expect_success(&install_url(&s.f, &proxy.url("c.fsb"), &[], &[]));
    assert_installed(&s.f, "B", &img);
}

#[test]
fn endless_data_is_never_read_past_the_signed_size() {
    let Some(s) = served(9, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.every(Fault::Endless);
    let before = s.f.snapshot();
    expect_success(&install_url(&s.f, &proxy.url("b.fsb"), &[], &[]));
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
    // The client hung up (after its last chunk) instead of draining the stream.
    let deadline = Instant::now() + Duration::from_secs(40);
    while !proxy.seen()[1].client_closed && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let seen = proxy.seen();
    assert!(seen[1].client_closed, "{seen:#?}");
    assert_eq!(seen.len(), 2, "{seen:#?}");
}

// ---------------------------------------------------------------------------------------
// Errors

#[test]
fn not_found_is_a_clear_error() {
    let Some(s) = served(10, &NginxConfig::default()) else {
        return;
    };
    let url = s.nginx.url("missing.fsb");
    let err = refused(&s, &url, &[], "HTTP 404 Not Found");
    assert!(err.contains(&url), "{err}");
}

#[test]
fn range_not_satisfiable_is_final() {
    let Some(s) = served(11, &NginxConfig::default()) else {
        return;
    };
    for n in [0, 1] {
        let proxy = FaultProxy::start(s.nginx.port);
        proxy.fault(
            n,
            Fault::Respond {
                status: 416,
                headers: vec![],
            },
        );
        refused(
            &s,
            &proxy.url("b.fsb"),
            &[],
            "HTTP 416 Range Not Satisfiable",
        );
        assert_eq!(proxy.seen().len(), n + 1, "a 416 was retried");
    }
}

#[test]
fn server_without_range_support_is_refused() {
    let Some(s) = served(12, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.every(Fault::StripRange);
    refused(
        &s,
        &proxy.url("b.fsb"),
        &[],
        "server does not support HTTP range requests",
    );
    assert_eq!(proxy.seen().len(), 1);
}

#[test]
fn file_replaced_mid_download_is_refused() {
    let Some(s) = served(13, &NginxConfig::default()) else {
        return;
    };
    let other = s.f.bundle("1.1.0", &image(14));
    assert_eq!(
        std::fs::metadata(&other).unwrap().len(),
        std::fs::metadata(&s.bundle).unwrap().len(),
        "same size, so only the ETag's time tells them apart"
    );
    let proxy = FaultProxy::start(s.nginx.port);
    // Drop inside chunk 1, then swap the file before the resumed request.
    proxy.fault(1, Fault::DropAfter(payload_offset(&s.bundle) + (3 << 19)));
    let published = s.published.clone();
    proxy.before(2, move || {
        let tmp = published.with_extension("new");
        std::fs::copy(&other, &tmp).unwrap();
        let later = SystemTime::now() + Duration::from_secs(100);
        std::fs::File::options()
            .write(true)
            .open(&tmp)
            .unwrap()
            .set_modified(later)
            .unwrap();
        std::fs::rename(&tmp, &published).unwrap();
    });
    let before = s.f.snapshot();
    let err = expect_failure(
        &install_url(&s.f, &proxy.url("b.fsb"), &[], &[]),
        "bundle changed on the server during the download",
    );
    assert!(
        err.contains("rootfs.1") && err.contains("marked bad"),
        "{err}"
    );
    s.f.assert_untouched(&before);
    assert_eq!(s.f.primary().as_deref(), Some("A"));
    assert_eq!(s.f.var("B_OK").as_deref(), Some("0"));
    let seen = proxy.seen();
    assert_eq!(seen.len(), 3, "{seen:#?}");
    assert_eq!(
        seen[2].status,
        Some(200),
        "nginx honoured If-Range: {seen:#?}"
    );
}

#[test]
fn bit_flip_in_transit_fails_the_chunk_hash() {
    let Some(s) = served(15, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    let at = payload_offset(&s.bundle) + (1 << 20) + 777;
    proxy.fault(1, Fault::FlipBit { at });
    let before = s.f.snapshot();
    let err = expect_failure(
        &install_url(&s.f, &proxy.url("b.fsb"), &[], &[]),
        "blake3 mismatch",
    );
    assert!(
        err.contains("chunk 1") && err.contains("rootfs.1") && err.contains("marked bad"),
        "{err}"
    );
    s.f.assert_untouched(&before);
    assert_eq!(s.f.primary().as_deref(), Some("A"));
    assert_eq!(s.f.var("B_OK").as_deref(), Some("0"));
    let rec = s.f.record("B").unwrap();
    assert!(
        rec.message.unwrap_or_default().contains("chunk 1"),
        "failure not recorded"
    );
}

#[test]
fn retries_give_up_with_a_clear_error() {
    let Some(s) = served(16, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.every(Fault::Respond {
        status: 503,
        headers: vec![("Retry-After".into(), "0".into())],
    });
    let err = refused(
        &s,
        &proxy.url("b.fsb"),
        &["--max-retries", "2"],
        "giving up at offset 0 after 3 failed attempts",
    );
    assert!(err.contains("503"), "{err}");
    assert_eq!(proxy.seen().len(), 3);
}

#[test]
fn credentials_and_headers_are_never_shown() {
    let Some(s) = served(17, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    proxy.fault(
        0,
        Fault::Respond {
            status: 500,
            headers: vec![],
        },
    );
    let url = format!(
        "http://user:pa55word@127.0.0.1:{}/missing.fsb?token=t0ken",
        proxy.port()
    );
    let before = s.f.snapshot();
    let out = install_url(
        &s.f,
        &url,
        &["--header", "X-Device-Token: s3cr3t-device"],
        &[],
    );
    let err = expect_failure(&out, "HTTP 404");
    s.f.assert_nothing_written(&before);
    for secret in ["pa55word", "t0ken", "s3cr3t-device"] {
        assert!(!err.contains(secret), "{secret} shown:\n{err}");
    }
    assert!(err.contains("token=***"), "{err}");
    // ... but they were sent.
    let seen = proxy.seen();
    assert!(
        seen[1]
            .head
            .to_lowercase()
            .contains("x-device-token: s3cr3t-device"),
        "{seen:#?}"
    );
    assert!(
        seen[1].head.to_lowercase().contains("authorization: basic"),
        "{seen:#?}"
    );
}

#[test]
fn header_file_is_sent() {
    let Some(s) = served(18, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    let hf = s.f.path().join("headers");
    std::fs::write(&hf, "# device identity\nX-Device-Id: 42\n").unwrap();
    let out = install_url(
        &s.f,
        &proxy.url("b.fsb"),
        &["--header-file", hf.to_str().unwrap()],
        &[],
    );
    expect_success(&out);
    assert!(proxy
        .seen()
        .iter()
        .all(|r| r.head.to_lowercase().contains("x-device-id: 42")));
}

#[test]
fn http_proxy_from_the_environment_is_used() {
    let Some(s) = served(19, &NginxConfig::default()) else {
        return;
    };
    let proxy = FaultProxy::start(s.nginx.port);
    let via = format!("http://127.0.0.1:{}", proxy.port());
    // The host does not resolve: only the proxy can reach it.
    let out = install_url(
        &s.f,
        "http://flipslot-bundles.invalid/b.fsb",
        &[],
        &[("http_proxy", &via)],
    );
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    let seen = proxy.seen();
    assert!(
        seen[0]
            .request_line
            .contains("http://flipslot-bundles.invalid/b.fsb"),
        "{seen:#?}"
    );
    // no_proxy exempts a host.
    let proxy2 = FaultProxy::start(s.nginx.port);
    let via2 = format!("http://127.0.0.1:{}", proxy2.port());
    let out = install_url(
        &s.f,
        &s.nginx.url("b.fsb"),
        &[],
        &[("http_proxy", &via2), ("no_proxy", "127.0.0.1")],
    );
    expect_success(&out);
    assert!(proxy2.seen().is_empty());
}

#[test]
fn url_options_need_a_url() {
    let f = Fixture::new();
    let bundle = f.bundle("1.0.0", &image(20));
    let out = f.install(&bundle, &["--header", "X-A: b"]);
    expect_failure(&out, "need a bundle URL");
}

// ---------------------------------------------------------------------------------------
// TLS

fn tls_served(seed: u64, verify_client: bool) -> Option<(Served, Tls)> {
    let dir = tempfile::tempdir().unwrap();
    let tls = Tls::generate(&dir.path().join("pki"))?;
    let cfg = NginxConfig {
        tls: Some(tls.clone()),
        verify_client,
    };
    let mut s = served(seed, &cfg)?;
    s._keep = Some(dir);
    Some((s, tls))
}

#[test]
fn untrusted_certificate_is_a_clear_tls_error() {
    let Some((s, _)) = tls_served(21, false) else {
        return;
    };
    let err = refused(&s, &s.nginx.url("b.fsb"), &[], "TLS error");
    assert!(
        err.contains("invalid peer certificate") && err.contains("UnknownIssuer"),
        "{err}"
    );
    // Final at once: no retry logged (every retry is, at info level), and not the error
    // of giving up after retries.
    assert!(!err.contains(": retry "), "a TLS error was retried:\n{err}");
    assert!(!err.contains("giving up"), "{err}");
}

#[test]
fn ca_file_makes_the_server_trusted() {
    let Some((s, tls)) = tls_served(22, false) else {
        return;
    };
    let before = s.f.snapshot();
    let out = install_url(
        &s.f,
        &s.nginx.url("b.fsb"),
        &["--ca-file", tls.ca.to_str().unwrap()],
        &[],
    );
    expect_success(&out);
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
}

#[test]
fn mutual_tls_with_and_without_a_client_certificate() {
    let Some((s, tls)) = tls_served(23, true) else {
        return;
    };
    let url = s.nginx.url("b.fsb");
    let ca = ["--ca-file", tls.ca.to_str().unwrap()];
    let err = refused(&s, &url, &ca, "No required SSL certificate was sent");
    assert!(err.contains("HTTP 400"), "{err}");

    let mut args = ca.to_vec();
    args.extend([
        "--client-cert",
        tls.client_cert.to_str().unwrap(),
        "--client-key",
        tls.client_key.to_str().unwrap(),
    ]);
    let before = s.f.snapshot();
    expect_success(&install_url(&s.f, &url, &args, &[]));
    assert_installed(&s.f, "B", &s.img);
    s.f.assert_booted_intact(&before);
    let log = s.nginx.error_log();
    assert!(!log.contains("[crit]"), "{log}");
}
