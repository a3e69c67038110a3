#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The read-ahead against a small in-process range server: bytes and requests of
//! sequential, skipping and backward reads, the thread stopping when the source is dropped,
//! and a stalling server's error reaching the reader.

use crate::net::{HttpOptions, HttpSource, RetryPolicy, StallPolicy};
use flipslot_format::source::ByteSource;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

/// What the server saw.
#[derive(Debug)]
enum Seen {
    /// A request for bytes `first..=last`.
    Range(u64, u64),
    /// A response body ended early because the client went away.
    ClientLeft,
}

/// Serves `data` with ranges on every connection; bytes from offset `stall_at` on are never
/// sent: the connection is held for `stall_for` instead.
fn serve(data: Vec<u8>, stall_at: Option<usize>, stall_for: Duration) -> (String, Receiver<Seen>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/b.fsb", l.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(c) = c else { return };
            let (data, tx) = (data.clone(), tx.clone());
            std::thread::spawn(move || connection(c, &data, stall_at, stall_for, &tx));
        }
    });
    (url, rx)
}

fn connection(
    c: TcpStream,
    data: &[u8],
    stall_at: Option<usize>,
    stall_for: Duration,
    tx: &Sender<Seen>,
) {
    let mut r = BufReader::new(c.try_clone().unwrap());
    let mut w = c;
    loop {
        let mut range = None;
        loop {
            let mut line = String::new();
            if r.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("range: bytes=") {
                let (a, b) = v.split_once('-').unwrap();
                range = Some((a.parse::<u64>().unwrap(), b.parse::<u64>().unwrap()));
            }
        }
        let (first, last) = range.expect("a range request");
        tx.send(Seen::Range(first, last)).ok();
        let body = &data[first as usize..=last as usize];
        let head = format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{last}/{}\r\n\
             Content-Length: {}\r\nETag: \"v1\"\r\n\r\n",
            data.len(),
            body.len()
        );
        if w.write_all(head.as_bytes()).is_err() {
            return;
        }
        let cut = stall_at
            .map_or(body.len(), |s| s.saturating_sub(first as usize))
            .min(body.len());
        for piece in body[..cut].chunks(64 << 10) {
            if w.write_all(piece).is_err() {
                tx.send(Seen::ClientLeft).ok();
                return;
            }
        }
        if cut < body.len() {
            std::thread::sleep(stall_for);
            return;
        }
    }
}

fn data(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

fn ranges(rx: &Receiver<Seen>) -> Vec<(u64, u64)> {
    rx.try_iter()
        .filter_map(|s| match s {
            Seen::Range(a, b) => Some((a, b)),
            Seen::ClientLeft => None,
        })
        .collect()
}

#[test]
fn sequential_reads_share_one_request_and_jumps_start_another() {
    let d = data(5 << 20);
    let (url, rx) = serve(d.clone(), None, Duration::ZERO);
    let mut src = HttpSource::open(&url, &HttpOptions::default()).unwrap();
    let last = d.len() as u64 - 1;
    let mut buf = vec![0u8; 64];
    src.read_exact_at(0, &mut buf).unwrap();
    assert_eq!(buf, d[..64]);
    let mut buf = vec![0u8; 100];
    src.read_exact_at(64, &mut buf).unwrap();
    assert_eq!(buf, d[64..164]);
    // A little further on: the bytes between are skipped, not requested again.
    let mut off = 4096;
    let mut chunk = vec![0u8; 1 << 20];
    while off < d.len() {
        let n = chunk.len().min(d.len() - off);
        src.read_exact_at(off as u64, &mut chunk[..n]).unwrap();
        assert!(chunk[..n] == d[off..off + n], "bytes at {off}");
        off += n;
    }
    assert_eq!(ranges(&rx), [(0, 0), (0, last)]);
    // Backwards, and past what a read-ahead skips: new requests from there.
    src.read_exact_at(10, &mut buf).unwrap();
    assert_eq!(buf, d[10..110]);
    src.read_exact_at(4 << 20, &mut buf).unwrap();
    assert_eq!(buf, d[4 << 20..(4 << 20) + 100]);
    assert_eq!(ranges(&rx), [(10, last), (4 << 20, last)]);
    // Never past the end.
    let e = src.read_exact_at(last, &mut buf).unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
}

#[test]
fn dropping_the_source_stops_its_read_ahead() {
    // Much more than the read-ahead holds, so the server is still sending when we drop.
    let (url, rx) = serve(data(64 << 20), None, Duration::ZERO);
    let mut src = HttpSource::open(&url, &HttpOptions::default()).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    src.read_exact_at(0, &mut buf).unwrap();
    drop(src);
    let left = rx.iter().find(|s| matches!(s, Seen::ClientLeft)).is_some();
    assert!(left, "the server never saw the read-ahead go away");
}

#[test]
fn a_stalling_server_gives_the_same_error_through_the_read_ahead() {
    let (url, rx) = serve(data(4 << 20), Some(100_000), Duration::from_secs(3));
    let opts = HttpOptions {
        stall: StallPolicy {
            window: Duration::from_millis(300),
            min_bytes: 1024,
        },
        retry: RetryPolicy {
            base: Duration::from_millis(10),
            cap: Duration::from_millis(20),
            max_retries: 1,
        },
        ..Default::default()
    };
    let mut src = HttpSource::open(&url, &opts).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let e = src.read_exact_at(0, &mut buf).unwrap_err().to_string();
    assert!(e.contains("offset 100000") && e.contains("stalled"), "{e}");
    // Resumed once at the exact offset after the first stall, then gave up.
    assert_eq!(
        ranges(&rx),
        [(0, 0), (0, (4 << 20) - 1), (100_000, (4 << 20) - 1)]
    );
}
