//! Progress reporting for long operations, shared by both binaries: a bar on a terminal,
//! JSON lines for machines, or nothing.
//!
//! JSON lines go to standard output, one object per line, each flushed, every object
//! starting with `"v":1` (the schema version) and `"event"`:
//!
//! ```text
//! {"v":1,"event":"progress","phase":"write","done":1048576,"total":4194304}
//! {"v":1,"event":"done", ...}
//! ```
//!
//! A progress line is printed at most once per second or once per 1 % step of a phase,
//! whichever comes first, at the first update of a phase, and always when `done == total`.
//! The bar is drawn on standard error, redrawn at most ten times a second:
//!
//! ```text
//! write [############..................]  42%  420.0 MiB / 1.0 GiB  350 MiB/s  ETA 0:02
//! ```
//!
//! Writing progress never fails an operation: if standard output or standard error cannot
//! be written (a closed pipe), a warning is logged once and reporting stops.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Version of the JSON-lines schema, the `"v"` field of every line.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// Width of the bar between the brackets, in characters.
const BAR_WIDTH: usize = 30;
/// Shortest time between two redraws of the bar.
const BAR_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest time between two JSON progress lines (unless a 1 % step was made).
const JSON_INTERVAL: Duration = Duration::from_secs(1);
/// A rate is shown only after a phase has run this long.
const MIN_RATE_WINDOW: Duration = Duration::from_millis(200);

/// Where progress goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on standard error when it is a terminal, otherwise nothing.
    Auto,
    /// JSON lines on standard output.
    Json,
    /// Nothing.
    Quiet,
}

/// What a [`Reporter`] actually does once `Auto` has been resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sink {
    Bar,
    Json,
    Quiet,
}

/// Reports progress and events in the chosen [`ProgressMode`].
pub struct Reporter {
    sink: Sink,
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    throttle: Throttle,
    /// Phase name and start time, for the rate and ETA of the bar.
    phase_start: Option<(String, Instant, u64)>,
    /// Whether a bar is on screen (so `finish` has something to clear).
    bar_drawn: bool,
    /// Set after a failed write; nothing more is written.
    broken: bool,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("sink", &self.sink)
            .field("bar_drawn", &self.bar_drawn)
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Reporter {
    /// A reporter writing to the process's standard output (JSON) or standard error (bar).
    pub fn new(mode: ProgressMode) -> Reporter {
        let sink = match mode {
            ProgressMode::Auto if std::io::stderr().is_terminal() => Sink::Bar,
            ProgressMode::Auto | ProgressMode::Quiet => Sink::Quiet,
            ProgressMode::Json => Sink::Json,
        };
        Reporter::with_writers(
            sink,
            Box::new(std::io::stdout()),
            Box::new(std::io::stderr()),
        )
    }

    /// A JSON-lines reporter writing to `out` instead of standard output (the daemon
    /// streams the lines to a socket client, or reads them for its own reports).
    pub fn json_to(out: Box<dyn Write + Send>) -> Reporter {
        Reporter::with_writers(Sink::Json, out, Box::new(std::io::sink()))
    }

    fn with_writers(
        sink: Sink,
        out: Box<dyn Write + Send>,
        err: Box<dyn Write + Send>,
    ) -> Reporter {
        let throttle = match sink {
            Sink::Json => Throttle::new(JSON_INTERVAL, true),
            Sink::Bar | Sink::Quiet => Throttle::new(BAR_INTERVAL, false),
        };
        Reporter {
            sink,
            out,
            err,
            throttle,
            phase_start: None,
            bar_drawn: false,
            broken: false,
        }
    }

    /// Progress of a phase ("scan", "write", "verify", "read-back", ...): `done` of `total`
    /// bytes. Rate-limited: the bar is redrawn at most ~10 times a second; a JSON line is
    /// printed at most once per second or per 1 % step, and always at `done == total`.
    pub fn update(&mut self, phase: &str, done: u64, total: u64) {
        if self.sink == Sink::Quiet || self.broken {
            return;
        }
        let now = Instant::now();
        let restarted = match &self.phase_start {
            Some((p, _, last_done)) => p != phase || done < *last_done,
            None => true,
        };
        if restarted {
            self.phase_start = Some((phase.to_string(), now, done));
        } else if let Some(ps) = &mut self.phase_start {
            ps.2 = done;
        }
        if !self.throttle.should_emit(phase, done, total, now) {
            return;
        }
        match self.sink {
            Sink::Json => {
                let line = progress_line(phase, done, total);
                self.write_out(&line);
            }
            Sink::Bar => {
                let elapsed = self
                    .phase_start
                    .as_ref()
                    .map_or(Duration::ZERO, |(_, start, _)| now.duration_since(*start));
                let line = render_bar(phase, done, total, elapsed);
                self.write_err(&format!("\r{line}\x1b[K"));
                self.bar_drawn = true;
            }
            Sink::Quiet => {}
        }
    }

    /// One JSON-lines event (JSON mode only; a no-op otherwise): prints
    /// `{"v":1,"event":<event>, ...fields}` on standard output as one line, flushed.
    /// `fields` should be an object; any other value is put under the key `"value"`.
    pub fn event(&mut self, event: &str, fields: serde_json::Value) {
        if self.sink != Sink::Json || self.broken {
            return;
        }
        let line = json_line(event, &fields);
        self.write_out(&line);
    }

    /// Clears the bar line, if one is drawn.
    pub fn finish(&mut self) {
        if self.bar_drawn && !self.broken {
            self.write_err("\r\x1b[K");
        }
        self.bar_drawn = false;
    }

    /// Whether this reporter prints JSON lines.
    pub fn is_json(&self) -> bool {
        self.sink == Sink::Json
    }

    fn write_out(&mut self, line: &str) {
        let r = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        self.check(r, "standard output");
    }

    fn write_err(&mut self, text: &str) {
        let r = self
            .err
            .write_all(text.as_bytes())
            .and_then(|()| self.err.flush());
        self.check(r, "standard error");
    }

    fn check(&mut self, r: std::io::Result<()>, what: &str) {
        if let Err(e) = r {
            log::warn!("cannot write progress to {what}, progress reporting stops: {e}");
            self.broken = true;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The JSON progress line, fields in a fixed order:
/// `{"v":1,"event":"progress","phase":"write","done":N,"total":N}`.
fn progress_line(phase: &str, done: u64, total: u64) -> String {
    format!(
        "{{\"v\":{JSON_SCHEMA_VERSION},\"event\":\"progress\",\"phase\":{},\"done\":{done},\"total\":{total}}}",
        serde_json::Value::from(phase)
    )
}

/// Builds one JSON line: `{"v":1,"event":...}` followed by the fields of `fields` (keys
/// in sorted order; `v` and `event` in `fields` are ignored).
fn json_line(event: &str, fields: &serde_json::Value) -> String {
    let mut line = format!(
        "{{\"v\":{JSON_SCHEMA_VERSION},\"event\":{}",
        serde_json::Value::from(event)
    );
    match fields {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "v" || k == "event" {
                    continue;
                }
                line.push_str(&format!(",{}:{v}", serde_json::Value::from(k.as_str())));
            }
        }
        serde_json::Value::Null => {}
        other => line.push_str(&format!(",\"value\":{other}")),
    }
    line.push('}');
    line
}

/// Decides which updates are shown: the first of a phase, the last (`done == total`),
/// and otherwise one per `interval`, or per 1 % step when `percent_step` is set.
#[derive(Debug)]
struct Throttle {
    interval: Duration,
    percent_step: bool,
    /// Phase, time, percent, done and total of the last update shown.
    last: Option<(String, Instant, u64, u64, u64)>,
}

impl Throttle {
    fn new(interval: Duration, percent_step: bool) -> Throttle {
        Throttle {
            interval,
            percent_step,
            last: None,
        }
    }

    fn should_emit(&mut self, phase: &str, done: u64, total: u64, now: Instant) -> bool {
        let pct = percent(done, total);
        let emit = match &self.last {
            None => true,
            Some((p, t, last_pct, last_done, last_total)) => {
                if p != phase || total != *last_total || done < *last_done {
                    true
                } else if done == *last_done {
                    // Nothing new (this also keeps a repeated final update from printing twice).
                    false
                } else {
                    done == total
                        || now.duration_since(*t) >= self.interval
                        || (self.percent_step && pct > *last_pct)
                }
            }
        };
        if emit {
            self.last = Some((phase.to_string(), now, pct, done, total));
        }
        emit
    }
}

/// Whole percent of `done` in `total` (100 for an empty total), at most 100.
fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        return 100;
    }
    let p = u128::from(done.min(total)) * 100 / u128::from(total);
    // At most 100 after the min above.
    p as u64
}

/// Formats a byte count with binary units: `512 B`, `1.5 KiB`, `420.0 MiB`, `1.0 GiB`.
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// Formats a rate in bytes per second: `350 MiB/s` (no decimal from 10 units up).
fn format_rate(bytes_per_sec: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes_per_sec.max(0.0);
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 10.0 || unit == 0 {
        format!("{v:.0} {}/s", UNITS[unit])
    } else {
        format!("{v:.1} {}/s", UNITS[unit])
    }
}

/// Formats a duration as `m:ss`, or `h:mm:ss` from an hour up.
fn format_eta(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

/// Renders one bar line (without the carriage return): phase, bar, percent, amounts,
/// and, once the phase has run long enough to tell, the rate and the time left.
pub fn render_bar(phase: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let pct = percent(done, total);
    let filled = if total == 0 {
        BAR_WIDTH
    } else {
        // At most BAR_WIDTH because done is capped at total.
        (u128::from(done.min(total)) * BAR_WIDTH as u128 / u128::from(total)) as usize
    };
    let bar: String = "#".repeat(filled) + &".".repeat(BAR_WIDTH - filled);
    let mut line = format!(
        "{phase} [{bar}] {pct:>3}%  {} / {}",
        format_bytes(done.min(total)),
        format_bytes(total)
    );
    if elapsed >= MIN_RATE_WINDOW && done > 0 {
        let rate = done as f64 / elapsed.as_secs_f64();
        line.push_str(&format!("  {}", format_rate(rate)));
        if done < total {
            let eta = ((total - done) as f64 / rate).ceil();
            // A float of any size converts saturating; absurd ETAs are shown as such.
            line.push_str(&format!("  ETA {}", format_eta(eta as u64)));
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn bytes_are_formatted_with_binary_units() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1023), "1023 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(420 << 20), "420.0 MiB");
        assert_eq!(format_bytes(1 << 30), "1.0 GiB");
        assert_eq!(format_bytes(u64::MAX), "16.0 EiB");
        assert_eq!(format_rate(350.0 * 1048576.0), "350 MiB/s");
        assert_eq!(format_rate(2.5 * 1048576.0), "2.5 MiB/s");
        assert_eq!(format_rate(12.0), "12 B/s");
        assert_eq!(format_eta(2), "0:02");
        assert_eq!(format_eta(125), "2:05");
        assert_eq!(format_eta(3725), "1:02:05");
    }

    #[test]
    fn bar_shows_fill_percent_rate_and_eta() {
        let total = 1u64 << 30;
        let done = total * 42 / 100 + 1;
        let line = render_bar("write", done, total, Duration::from_secs(1));
        assert!(
            line.starts_with("write [############..................]  42%  "),
            "{line}"
        );
        assert!(line.contains(" / 1.0 GiB  "), "{line}");
        assert!(line.contains(" MiB/s  ETA 0:02"), "{line}");
        // No rate before the phase has run a little.
        let line = render_bar("scan", 10, 100, Duration::from_millis(10));
        assert!(!line.contains("/s"), "{line}");
        // Complete: full bar, no ETA.
        let line = render_bar("verify", 100, 100, Duration::from_secs(1));
        assert!(
            line.contains(&format!("[{}] 100%", "#".repeat(BAR_WIDTH))),
            "{line}"
        );
        assert!(!line.contains("ETA"), "{line}");
        // Degenerate totals do not panic.
        assert!(render_bar("x", 5, 0, Duration::from_secs(1)).contains("100%"));
        assert!(render_bar("x", 50, 10, Duration::from_secs(1)).contains("100%"));
    }

    #[test]
    fn bar_is_redrawn_at_most_ten_times_a_second() {
        let mut t = Throttle::new(BAR_INTERVAL, false);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(
            t.should_emit("write", 1, 1000, ms(0)),
            "first update of a phase"
        );
        assert!(!t.should_emit("write", 2, 1000, ms(50)));
        assert!(
            !t.should_emit("write", 500, 1000, ms(99)),
            "no 1 % steps for the bar"
        );
        assert!(t.should_emit("write", 501, 1000, ms(100)));
        assert!(
            t.should_emit("write", 1000, 1000, ms(101)),
            "always the last one"
        );
        assert!(
            !t.should_emit("write", 1000, 1000, ms(102)),
            "but only once"
        );
        assert!(
            t.should_emit("verify", 1, 1000, ms(103)),
            "a new phase shows at once"
        );
        // Many updates in one second: at most ~10 are shown.
        let shown = (0..1000u64)
            .filter(|&i| t.should_emit("read-back", i + 1, 10_000, ms(200 + i)))
            .count();
        assert!(shown <= 11, "{shown} redraws in one second");
    }

    #[test]
    fn json_lines_once_per_second_or_per_percent() {
        let mut t = Throttle::new(JSON_INTERVAL, true);
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        assert!(t.should_emit("write", 0, 10_000, ms(0)));
        assert!(
            !t.should_emit("write", 50, 10_000, ms(10)),
            "half a percent, too soon"
        );
        assert!(t.should_emit("write", 100, 10_000, ms(20)), "a 1 % step");
        assert!(!t.should_emit("write", 150, 10_000, ms(500)));
        assert!(
            t.should_emit("write", 160, 10_000, ms(1020)),
            "a second passed"
        );
        assert!(
            t.should_emit("write", 10_000, 10_000, ms(1021)),
            "done == total"
        );
        // A fast phase of a million updates prints about a hundred lines.
        let shown = (1..=1_000_000u64)
            .filter(|&i| t.should_emit("verify", i, 1_000_000, ms(2000)))
            .count();
        assert!((100..=102).contains(&shown), "{shown} lines");
    }

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn json_mode_prints_versioned_lines() {
        let (out, err) = (Captured::default(), Captured::default());
        let mut r =
            Reporter::with_writers(Sink::Json, Box::new(out.clone()), Box::new(err.clone()));
        assert!(r.is_json());
        r.update("write", 0, 4);
        r.update("write", 4, 4);
        r.event("done", serde_json::json!({"size": 4, "v": 99}));
        r.event("note", serde_json::json!("text"));
        r.finish();
        let text = out.text();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"v":1,"event":"progress","phase":"write","done":0,"total":4}"#,
                r#"{"v":1,"event":"progress","phase":"write","done":4,"total":4}"#,
                r#"{"v":1,"event":"done","size":4}"#,
                r#"{"v":1,"event":"note","value":"text"}"#,
            ]
        );
        for l in lines {
            serde_json::from_str::<serde_json::Value>(l).unwrap();
        }
        assert!(err.text().is_empty());
    }

    #[test]
    fn bar_mode_draws_on_stderr_and_clears() {
        let (out, err) = (Captured::default(), Captured::default());
        let mut r = Reporter::with_writers(Sink::Bar, Box::new(out.clone()), Box::new(err.clone()));
        assert!(!r.is_json());
        r.update("scan", 1, 2);
        r.event("done", serde_json::json!({}));
        r.finish();
        assert!(out.text().is_empty(), "events are JSON-only");
        let e = err.text();
        assert!(e.starts_with("\rscan ["), "{e:?}");
        assert!(e.ends_with("\r\x1b[K"), "{e:?}");
    }

    #[test]
    fn quiet_mode_prints_nothing() {
        let (out, err) = (Captured::default(), Captured::default());
        let mut r =
            Reporter::with_writers(Sink::Quiet, Box::new(out.clone()), Box::new(err.clone()));
        r.update("scan", 1, 2);
        r.event("done", serde_json::json!({}));
        r.finish();
        assert!(out.text().is_empty() && err.text().is_empty());
    }

    #[test]
    fn a_failed_write_stops_reporting() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut r = Reporter::with_writers(Sink::Json, Box::new(Broken), Box::new(Broken));
        r.update("write", 0, 1);
        assert!(r.broken);
        r.event("done", serde_json::json!({}));
    }
}
