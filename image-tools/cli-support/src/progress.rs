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
//!
//! The bar is an [`indicatif`] bar on standard error, one per phase, as wide as the
//! terminal, redrawn about ten times a second (indicatif allows short bursts) and cleared
//! when the phase ends or the reporter finishes. Rate and time left are indicatif's
//! estimates:
//!
//! ```text
//! write [########..........]  42%  420.00 MiB / 1000.00 MiB  350.00 MiB/s  ETA  2s
//! ```
//!
//! Writing progress never fails an operation: if standard output cannot be written (a
//! closed pipe), a warning is logged once and reporting stops; indicatif ignores errors
//! writing the bar.

use std::fmt;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Version of the JSON-lines schema, the `"v"` field of every line.
pub const JSON_SCHEMA_VERSION: u32 = 1;

/// The bar line: phase, a bar as wide as the terminal leaves room for, percent, amounts
/// (binary units), rate, time left. The changing fields are padded so that the bar keeps
/// its width through a phase.
const BAR_TEMPLATE: &str = "{prefix} [{wide_bar}] {percent:>3}%  {binary_bytes:>10} / {binary_total_bytes}  {binary_bytes_per_sec:>12}  ETA {eta:>3}";
/// Filled and to-do characters of the bar.
const BAR_CHARS: &str = "#.";
/// Redraws of the bar per second, on average (indicatif allows short bursts above it).
const BAR_HZ: u8 = 10;
/// Shortest time between two JSON progress lines (unless a 1 % step was made).
const JSON_INTERVAL: Duration = Duration::from_secs(1);

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

/// Makes the draw target of each new bar.
type BarTarget = Box<dyn Fn() -> ProgressDrawTarget + Send>;

/// Reports progress and events in the chosen [`ProgressMode`].
pub struct Reporter {
    sink: Sink,
    out: Box<dyn Write + Send>,
    /// Which JSON progress lines are printed.
    throttle: Throttle,
    /// Where bars are drawn (standard error, or a test's terminal).
    bar_target: BarTarget,
    /// The phase on screen and its bar (bar mode only).
    bar: Option<(String, ProgressBar)>,
    /// Set after a failed write; nothing more is written.
    broken: bool,
}

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reporter")
            .field("sink", &self.sink)
            .field("bar_phase", &self.bar.as_ref().map(|(phase, _)| phase))
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
        // Standard error as a plain terminal: indicatif's own stderr target would also
        // hide the bar under NO_COLOR or without TERM, and the choice above is the rule.
        let stderr: BarTarget = Box::new(|| {
            ProgressDrawTarget::term_like_with_hz(
                Box::new(console::Term::buffered_stderr()),
                BAR_HZ,
            )
        });
        Reporter::with_parts(sink, Box::new(std::io::stdout()), stderr)
    }

    /// A JSON-lines reporter writing to `out` instead of standard output (the daemon
    /// streams the lines to a socket client, or reads them for its own reports).
    pub fn json_to(out: Box<dyn Write + Send>) -> Reporter {
        Reporter::with_parts(Sink::Json, out, Box::new(ProgressDrawTarget::hidden))
    }

    fn with_parts(sink: Sink, out: Box<dyn Write + Send>, bar_target: BarTarget) -> Reporter {
        Reporter {
            sink,
            out,
            throttle: Throttle::new(JSON_INTERVAL, true),
            bar_target,
            bar: None,
            broken: false,
        }
    }

    /// Progress of a phase ("scan", "write", "verify", "read-back", ...): `done` of `total`
    /// bytes. Rate-limited: the bar is redrawn about ten times a second; a JSON line is
    /// printed at most once per second or per 1 % step, and always at `done == total`.
    pub fn update(&mut self, phase: &str, done: u64, total: u64) {
        match self.sink {
            Sink::Json if !self.broken => {
                if self
                    .throttle
                    .should_emit(phase, done, total, Instant::now())
                {
                    let line = progress_line(phase, done, total);
                    self.write_out(&line);
                }
            }
            Sink::Bar => self.draw_bar(phase, done, total),
            Sink::Json | Sink::Quiet => {}
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

    /// Clears the bar, if one is drawn.
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    /// Whether this reporter prints JSON lines.
    pub fn is_json(&self) -> bool {
        self.sink == Sink::Json
    }

    /// Moves the bar of `phase` to `done` of `total`, starting a new bar (the old one
    /// cleared) when the phase changes or starts over. A bar that reaches its total is
    /// drawn at once, as it may stay on screen while the next step runs.
    fn draw_bar(&mut self, phase: &str, done: u64, total: u64) {
        match &self.bar {
            Some((p, bar)) if p == phase && done >= bar.position() => {
                let moved = done != bar.position() || bar.length() != Some(total);
                if bar.length() != Some(total) {
                    bar.set_length(total);
                }
                bar.set_position(done);
                if moved && done >= total {
                    bar.force_draw();
                }
            }
            _ => {
                self.finish();
                let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::hidden())
                    .with_style(bar_style())
                    .with_prefix(phase.to_string())
                    .with_position(done);
                // What was done before the first update is not speed: let the estimator
                // record `done`, then forget the rate it implied (it keeps `done` as its
                // base). Only then show the bar.
                bar.tick();
                bar.reset_eta();
                bar.set_draw_target((self.bar_target)());
                bar.force_draw();
                self.bar = Some((phase.to_string(), bar));
            }
        }
    }

    fn write_out(&mut self, line: &str) {
        let r = writeln!(self.out, "{line}").and_then(|()| self.out.flush());
        if let Err(e) = r {
            log::warn!("cannot write progress to standard output, progress reporting stops: {e}");
            self.broken = true;
        }
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The style of every bar: [`BAR_TEMPLATE`] with [`BAR_CHARS`].
fn bar_style() -> ProgressStyle {
    // The template is a constant (a test parses it); indicatif's plain bar is the fallback.
    ProgressStyle::with_template(BAR_TEMPLATE)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars(BAR_CHARS)
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

/// Decides which JSON progress updates are printed: the first of a phase, the last
/// (`done == total`), and otherwise one per `interval`, or per 1 % step when
/// `percent_step` is set.
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

    /// What [`TestTerm`] writes to clear a line.
    const CLEAR: &str = "\r\x1b[2K";

    impl Reporter {
        /// A reporter printing JSON to `out` and drawing bars on a terminal that writes
        /// to `err`.
        fn with_writers(
            sink: Sink,
            out: Box<dyn Write + Send>,
            err: Box<dyn Write + Send>,
        ) -> Reporter {
            let err = Arc::new(Mutex::new(err));
            let target: BarTarget = Box::new(move || {
                ProgressDrawTarget::term_like(Box::new(TestTerm(Arc::clone(&err))))
            });
            Reporter::with_parts(sink, out, target)
        }
    }

    /// An 80-column terminal that writes the escape sequences of a real one to a writer.
    struct TestTerm(Arc<Mutex<Box<dyn Write + Send>>>);

    impl fmt::Debug for TestTerm {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("TestTerm")
        }
    }

    impl TestTerm {
        fn put(&self, s: &str) -> std::io::Result<()> {
            self.0.lock().unwrap().write_all(s.as_bytes())
        }
        /// Like a real terminal's handle, writes nothing for a move of 0.
        fn move_cursor(&self, n: usize, direction: char) -> std::io::Result<()> {
            if n == 0 {
                return Ok(());
            }
            self.put(&format!("\x1b[{n}{direction}"))
        }
    }

    impl indicatif::TermLike for TestTerm {
        fn width(&self) -> u16 {
            80
        }
        fn move_cursor_up(&self, n: usize) -> std::io::Result<()> {
            self.move_cursor(n, 'A')
        }
        fn move_cursor_down(&self, n: usize) -> std::io::Result<()> {
            self.move_cursor(n, 'B')
        }
        fn move_cursor_right(&self, n: usize) -> std::io::Result<()> {
            self.move_cursor(n, 'C')
        }
        fn move_cursor_left(&self, n: usize) -> std::io::Result<()> {
            self.move_cursor(n, 'D')
        }
        fn write_line(&self, s: &str) -> std::io::Result<()> {
            self.put(&format!("{s}\n"))
        }
        fn write_str(&self, s: &str) -> std::io::Result<()> {
            self.put(s)
        }
        fn clear_line(&self) -> std::io::Result<()> {
            self.put(CLEAR)
        }
        fn flush(&self) -> std::io::Result<()> {
            self.0.lock().unwrap().flush()
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
    fn bar_template_parses() {
        assert!(ProgressStyle::with_template(BAR_TEMPLATE).is_ok());
    }

    #[test]
    fn bar_mode_draws_on_stderr_and_clears() {
        let (out, err) = (Captured::default(), Captured::default());
        let mut r = Reporter::with_writers(Sink::Bar, Box::new(out.clone()), Box::new(err.clone()));
        assert!(!r.is_json());
        r.update("scan", 1024, 2048);
        r.event("done", serde_json::json!({}));
        let e = err.text();
        let line = e.trim_end();
        assert!(line.starts_with("scan ["), "{e:?}");
        assert!(
            line.ends_with("]  50%    1.00 KiB / 2.00 KiB         0 B/s  ETA  0s"),
            "no rate yet from the first update: {e:?}"
        );
        let bar = &line["scan [".len()..line.find(']').unwrap()];
        assert_eq!(line.len(), 80, "as wide as the terminal: {e:?}");
        assert_eq!(bar.matches('#').count() * 2, bar.len(), "{bar:?}");
        assert_eq!(bar.trim_start_matches('#').trim_end_matches('.'), "");
        // A new phase clears the old bar and draws its own.
        let before = e.len();
        r.update("write", 0, 10);
        let e = err.text();
        assert!(e[before..].starts_with(CLEAR), "{e:?}");
        assert!(e[before..].contains("write [...."), "{e:?}");
        // The end of a phase is drawn at once, whatever the redraw rate.
        let before = e.len();
        r.update("write", 10, 10);
        let e = err.text();
        assert!(
            e[before..].contains("####] 100%        10 B / 10 B  "),
            "{e:?}"
        );
        // Degenerate totals do not panic.
        r.update("x", 5, 0);
        assert!(
            err.text()
                .ends_with("] 100%         5 B / 0 B         0 B/s  ETA  0s"),
            "{:?}",
            err.text()
        );
        r.update("y", 50, 10);
        assert!(
            err.text().contains("] 100%        50 B / 10 B  "),
            "{:?}",
            err.text()
        );
        r.finish();
        assert!(out.text().is_empty(), "events are JSON-only");
        assert!(err.text().ends_with(CLEAR), "{:?}", err.text());
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
