//! systemd's notification protocol without a crate: `READY=1`, `WATCHDOG=1`,
//! `STOPPING=1` and `STATUS=…` as one datagram to the Unix socket in `$NOTIFY_SOCKET`
//! (a path, or `@name` for the abstract namespace). Outside systemd nothing is sent.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` to `$NOTIFY_SOCKET`, if set; `Ok(false)` when it is not.
pub fn notify(state: &str) -> io::Result<bool> {
    match std::env::var_os("NOTIFY_SOCKET") {
        Some(sock) => notify_to(&sock, state).map(|()| true),
        None => Ok(false),
    }
}

/// Sends `state` as one datagram to the socket `sock` (`@name`: abstract namespace).
pub fn notify_to(sock: &OsStr, state: &str) -> io::Result<()> {
    let s = UnixDatagram::unbound()?;
    let bytes = sock.as_bytes();
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        s.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        s.send_to(state.as_bytes(), sock)?;
    }
    Ok(())
}

/// Logs a failed notification (they never stop the daemon).
pub fn notify_logged(state: &str) {
    if let Err(e) = notify(state) {
        log::warn!("cannot notify systemd ({state:?}): {e}");
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when it is set for this
/// process (`WATCHDOG_PID` absent or ours).
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok()?;
    let pid = std::env::var("WATCHDOG_PID").ok();
    watchdog_from(&usec, pid.as_deref(), std::process::id())
}

/// [`watchdog_interval`] from the variables' values (pure).
pub fn watchdog_from(usec: &str, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(p) = pid {
        if p.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    let usec: u64 = usec.trim().parse().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sends_a_datagram() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(notify_to(OsStr::new("/nonexistent/notify"), "READY=1").is_err());
    }

    #[test]
    fn abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("flipslot-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[test]
    fn watchdog_values() {
        assert_eq!(
            watchdog_from("30000000", None, 5),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            watchdog_from("30000000", Some("5"), 5),
            Some(Duration::from_secs(15))
        );
        assert_eq!(watchdog_from("30000000", Some("6"), 5), None);
        assert_eq!(watchdog_from("0", None, 5), None);
        assert_eq!(watchdog_from("x", None, 5), None);
    }
}
