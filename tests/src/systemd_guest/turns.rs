//! Taking turns at QEMU with other test processes on this host (two cores; TCG is
//! CPU-bound): wait while a QEMU that another process started runs.

use std::time::{Duration, Instant};

/// QEMU processes on this host that this process did not start (the comm name is cut to
/// 15 bytes: `qemu-system-x86`).
pub fn foreign_qemus() -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim_end() != "qemu-system-x86" {
                return false;
            }
            // Field 4 of /proc/PID/stat (after the parenthesised comm) is the parent.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid != Some(me)
        })
        .collect()
}

/// Waits (up to `max`) while another process's QEMU runs: the machine has two cores and TCG
/// is CPU-bound, so VM tests of different test processes take turns. Returns the time waited.
pub fn wait_for_other_qemu(test: &str, max: Duration) -> Duration {
    let started = Instant::now();
    let mut said = false;
    loop {
        let others = foreign_qemus();
        if others.is_empty() || started.elapsed() >= max {
            if !others.is_empty() {
                eprintln!("{test}: QEMU {others:?} still running after {max:?}; starting anyway");
            }
            return started.elapsed();
        }
        if !said {
            eprintln!("{test}: waiting for QEMU {others:?} of another process to finish");
            said = true;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}
