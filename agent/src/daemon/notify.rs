//! systemd's notification protocol through the `sd-notify` crate: `READY=1`,
//! `WATCHDOG=1`, `STOPPING=1` and `STATUS=…`. Outside systemd (no `$NOTIFY_SOCKET`)
//! nothing is sent.

pub use sd_notify::NotifyState;
use std::time::Duration;

/// Sends `states` as one notification; a failure is logged (notifications never stop
/// the daemon).
pub fn notify_logged(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(false, states) {
        log::warn!("cannot notify systemd: {e}");
    }
}

/// How often to send `WATCHDOG=1`: half of `WATCHDOG_USEC`, when systemd set a watchdog
/// for this process (`WATCHDOG_PID` is ours).
pub fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    sd_notify::watchdog_enabled(false, &mut usec)
        .then_some(usec)
        .and_then(half_of)
}

/// Half of a watchdog period in microseconds; `None` for a period of zero.
fn half_of(usec: u64) -> Option<Duration> {
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    #[test]
    fn sends_one_datagram_to_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        // The only test in this process that reads NOTIFY_SOCKET.
        std::env::set_var("NOTIFY_SOCKET", &path);
        notify_logged(&[NotifyState::Ready, NotifyState::Status("waiting")]);
        std::env::remove_var("NOTIFY_SOCKET");
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=waiting\n");
    }

    #[test]
    fn watchdog_is_pinged_at_half_its_period() {
        assert_eq!(half_of(30_000_000), Some(Duration::from_secs(15)));
        assert_eq!(half_of(0), None);
    }
}
