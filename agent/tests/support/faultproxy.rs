//! A fault-injecting HTTP/1.1 proxy for the network install tests: std threads, listens
//! on 127.0.0.1:0 and forwards each request to an upstream (nginx) on its own connection
//! (`Connection: close` both ways, so one request is one connection). Request `n` (from 0,
//! in arrival order) can be answered with a fault: the connection dropped or stalled after
//! N body bytes, a bit flipped, a false Content-Length, a canned status, range support
//! stripped, or endless data after the real body. Every request is recorded.
//!
//! It also works as a forward proxy for plain HTTP (`http_proxy=`): nginx accepts
//! absolute-form request targets.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest head accepted from either side.
const MAX_HEAD: usize = 64 << 10;
/// Endless bodies stop after this much or this long, whatever the client does.
const ENDLESS_LIMIT: u64 = 512 << 20;
const ENDLESS_TIME: Duration = Duration::from_secs(60);

/// What to do to one response.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Forward unchanged.
    Pass,
    /// Close the connection after N bytes of response body.
    DropAfter(u64),
    /// Send nothing for `pause` after N bytes of body, then go on (if the client is still
    /// there).
    StallAfter {
        /// Body bytes sent before the pause.
        after: u64,
        /// How long.
        pause: Duration,
    },
    /// Flip the lowest bit of body byte N.
    FlipBit {
        /// Body offset.
        at: u64,
    },
    /// Replace `Content-Length` with this value (the body is forwarded as it is).
    ContentLength(u64),
    /// Answer without asking upstream.
    Respond {
        /// Status code.
        status: u16,
        /// Extra headers.
        headers: Vec<(String, String)>,
    },
    /// Remove `Range` and `If-Range` from the request, so the server sends a full 200.
    StripRange,
    /// Remove `Content-Length` and keep sending bytes after the real body.
    Endless,
}

/// One request as the proxy saw it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// The request line.
    pub request_line: String,
    /// `Range`, if sent.
    pub range: Option<String>,
    /// `If-Range`, if sent.
    pub if_range: Option<String>,
    /// Every request header line (for checks that nothing leaked).
    pub head: String,
    /// The status answered.
    pub status: Option<u16>,
    /// Body bytes sent to the client (including endless ones).
    pub body_sent: u64,
    /// For [`Fault::Endless`]: whether the client closed the connection before the limit.
    pub client_closed: bool,
}

type Hook = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct Plan {
    faults: BTreeMap<usize, Fault>,
    every: Option<Fault>,
    hooks: BTreeMap<usize, Hook>,
}

struct Shared {
    upstream: SocketAddr,
    stop: AtomicBool,
    plan: Mutex<Plan>,
    seen: Mutex<Vec<Seen>>,
}

/// The proxy; stops accepting on drop.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FaultProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultProxy")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl FaultProxy {
    /// Starts a proxy in front of `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            upstream: SocketAddr::from(([127, 0, 0, 1], upstream_port)),
            stop: AtomicBool::new(false),
            plan: Mutex::new(Plan::default()),
            seen: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let accept = std::thread::spawn(move || {
            while !s.stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let s = s.clone();
                        std::thread::spawn(move || handle(&s, conn));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(5))
                    }
                    Err(e) => panic!("proxy accept: {e}"),
                }
            }
        });
        FaultProxy {
            addr,
            shared,
            accept: Some(accept),
        }
    }

    /// The listening port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `http://127.0.0.1:PORT/NAME`.
    pub fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}/{name}", self.port())
    }

    /// Applies `fault` to request `n` (0 is the first).
    pub fn fault(&self, n: usize, fault: Fault) -> &Self {
        self.shared.plan.lock().unwrap().faults.insert(n, fault);
        self
    }

    /// Applies `fault` to every request without a fault of its own.
    pub fn every(&self, fault: Fault) -> &Self {
        self.shared.plan.lock().unwrap().every = Some(fault);
        self
    }

    /// Runs `hook` when request `n` arrives, before it is forwarded.
    pub fn before(&self, n: usize, hook: impl FnOnce() + Send + 'static) -> &Self {
        self.shared
            .plan
            .lock()
            .unwrap()
            .hooks
            .insert(n, Box::new(hook));
        self
    }

    /// The requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.accept.take() {
            t.join().ok();
        }
    }
}

/// Reads up to the end of an HTTP head; returns (head, bytes after it).
fn read_head(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Some((String::from_utf8_lossy(&buf).into_owned(), rest));
        }
        if buf.len() > MAX_HEAD {
            return None;
        }
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.split("\r\n").skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// `head` without the named headers, plus `extra` lines, ending in a blank line.
fn rewrite(head: &str, drop: &[&str], extra: &[String]) -> String {
    let mut out = String::new();
    for (i, line) in head.split("\r\n").enumerate() {
        if line.is_empty() {
            continue;
        }
        if i > 0 {
            let name = line.split(':').next().unwrap_or("").trim();
            if drop.iter().any(|d| d.eq_ignore_ascii_case(name)) {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    for e in extra {
        out.push_str(e);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        404 => "Not Found",
        403 => "Forbidden",
        416 => "Range Not Satisfiable",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

fn handle(shared: &Shared, mut client: TcpStream) {
    client.set_read_timeout(Some(Duration::from_secs(30))).ok();
    client.set_write_timeout(Some(Duration::from_secs(30))).ok();
    let Some((head, _)) = read_head(&mut client) else {
        return;
    };
    let (index, fault, hook) = {
        let mut seen = shared.seen.lock().unwrap();
        let index = seen.len();
        seen.push(Seen {
            request_line: head.lines().next().unwrap_or("").to_string(),
            range: header(&head, "range").map(str::to_string),
            if_range: header(&head, "if-range").map(str::to_string),
            head: head.clone(),
            ..Seen::default()
        });
        let mut plan = shared.plan.lock().unwrap();
        let fault = plan
            .faults
            .remove(&index)
            .or_else(|| plan.every.clone())
            .unwrap_or(Fault::Pass);
        (index, fault, plan.hooks.remove(&index))
    };
    if let Some(h) = hook {
        h();
    }
    let record = |f: &dyn Fn(&mut Seen)| f(&mut shared.seen.lock().unwrap()[index]);

    if let Fault::Respond { status, headers } = &fault {
        let body = format!("canned {status}\n");
        let mut resp = format!(
            "HTTP/1.1 {status} {}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
            reason(*status),
            body.len()
        );
        for (n, v) in headers {
            resp.push_str(&format!("{n}: {v}\r\n"));
        }
        resp.push_str("\r\n");
        resp.push_str(&body);
        client.write_all(resp.as_bytes()).ok();
        record(&|s| s.status = Some(*status));
        return;
    }

    let mut drop_req = vec!["connection", "keep-alive", "proxy-connection"];
    if matches!(fault, Fault::StripRange) {
        drop_req.extend(["range", "if-range"]);
    }
    let req = rewrite(&head, &drop_req, &["Connection: close".to_string()]);
    let Ok(mut up) = TcpStream::connect(shared.upstream) else {
        return;
    };
    up.set_read_timeout(Some(Duration::from_secs(30))).ok();
    if up.write_all(req.as_bytes()).is_err() {
        return;
    }
    let Some((rhead, mut first)) = read_head(&mut up) else {
        return;
    };
    let status = rhead.split_whitespace().nth(1).and_then(|s| s.parse().ok());
    record(&|s| s.status = status);
    let mut drop_resp = vec!["connection", "keep-alive"];
    let mut extra = vec!["Connection: close".to_string()];
    match &fault {
        Fault::ContentLength(n) => {
            drop_resp.push("content-length");
            extra.push(format!("Content-Length: {n}"));
        }
        Fault::Endless => drop_resp.push("content-length"),
        _ => {}
    }
    if client
        .write_all(rewrite(&rhead, &drop_resp, &extra).as_bytes())
        .is_err()
    {
        return;
    }

    let mut sent = 0u64;
    let mut stalled = false;
    let mut buf = vec![0u8; 16 << 10];
    let mut pending = std::mem::take(&mut first);
    loop {
        if pending.is_empty() {
            match up.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => pending.extend_from_slice(&buf[..n]),
            }
        }
        let len = pending.len() as u64;
        match &fault {
            Fault::DropAfter(n) if sent + len >= *n => {
                let keep = (*n - sent) as usize;
                client.write_all(&pending[..keep]).ok();
                sent += keep as u64;
                record(&|s| s.body_sent = sent);
                client.shutdown(Shutdown::Both).ok();
                return;
            }
            Fault::StallAfter { after, pause } if !stalled && sent + len >= *after => {
                let keep = (*after - sent) as usize;
                if client.write_all(&pending[..keep]).is_err() {
                    return;
                }
                client.flush().ok();
                std::thread::sleep(*pause);
                stalled = true;
                sent += keep as u64;
                pending.drain(..keep);
                continue;
            }
            Fault::FlipBit { at } if (sent..sent + len).contains(at) => {
                pending[(*at - sent) as usize] ^= 0x01;
            }
            _ => {}
        }
        if client.write_all(&pending).is_err() {
            record(&|s| s.body_sent = sent);
            return;
        }
        sent += len;
        pending.clear();
    }
    record(&|s| s.body_sent = sent);
    if matches!(fault, Fault::Endless) {
        let started = Instant::now();
        let junk = vec![0xA5u8; 64 << 10];
        let mut closed = false;
        while sent < ENDLESS_LIMIT && started.elapsed() < ENDLESS_TIME {
            if client.write_all(&junk).is_err() {
                closed = true;
                break;
            }
            sent += junk.len() as u64;
        }
        record(&|s| {
            s.body_sent = sent;
            s.client_closed = closed;
        });
    }
}
