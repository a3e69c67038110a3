//! A minimal HTTP/1.1 GET for local health endpoints: connect, send, read the status line.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Host, port and path of an `http://` URL.
pub fn parse_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') || path.contains(['\r', '\n', ' ']) {
        return None;
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 80),
    };
    if host.is_empty() || host.contains(['\r', '\n', ' ']) {
        return None;
    }
    Some((host.to_string(), port, path.to_string()))
}

/// The status code of an HTTP response's first line.
pub fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.split_whitespace();
    let version = parts.next()?;
    if !version.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

/// GETs `url` and returns `Ok(())` for a 2xx answer, or why not.
pub fn check(url: &str, timeout: Duration) -> Result<(), String> {
    let (host, port, path) = parse_url(url).ok_or_else(|| format!("bad URL {url:?}"))?;
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} has no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nUser-Agent: flipslot-health\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("cannot send request to {addr}: {e}"))?;
    let mut buf = [0u8; 256];
    let mut got = Vec::new();
    while !got.contains(&b'\n') && got.len() < 4096 {
        let n = s
            .read(&mut buf)
            .map_err(|e| format!("no answer from {url}: {e}"))?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&got);
    let line = line.lines().next().unwrap_or("");
    match parse_status_line(line) {
        Some(code) if (200..300).contains(&code) => Ok(()),
        Some(code) => Err(format!("{url} answered HTTP {code}")),
        None => Err(format!("{url} did not answer HTTP")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:8080/healthz"),
            Some(("127.0.0.1".into(), 8080, "/healthz".into()))
        );
        assert_eq!(
            parse_url("http://localhost"),
            Some(("localhost".into(), 80, "/".into()))
        );
        assert_eq!(parse_url("https://x/"), None);
        assert_eq!(parse_url("http://a b/"), None);
        assert_eq!(parse_url("http://u@h/"), None);
    }

    #[test]
    fn status_lines() {
        assert_eq!(parse_status_line("HTTP/1.1 204 No Content"), Some(204));
        assert_eq!(parse_status_line("SSH-2.0"), None);
    }

    #[test]
    fn live_server() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let t = std::thread::spawn(move || {
            for code in ["200 OK", "503 Unavailable"] {
                let (mut c, _) = l.accept().unwrap();
                let mut b = [0u8; 512];
                let _n = c.read(&mut b).unwrap();
                c.write_all(format!("HTTP/1.1 {code}\r\nContent-Length: 0\r\n\r\n").as_bytes())
                    .unwrap();
            }
        });
        let url = format!("http://127.0.0.1:{port}/h");
        assert_eq!(check(&url, Duration::from_secs(5)), Ok(()));
        let e = check(&url, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("503"), "{e}");
        t.join().unwrap();
    }
}
