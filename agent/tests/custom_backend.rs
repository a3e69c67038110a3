#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail by panicking
//! The custom bootloader backend driving a real script: a POSIX shell script that keeps
//! its state in a file, like RAUC's `test/bin/custom-bootloader-script`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use flipslot::bootloader::abstate::SlotBootState;
use flipslot::bootloader::custom::CustomBackend;
use flipslot::bootloader::Bootloader;

/// The script; `@STATE@` and `@LOG@` are replaced by paths.
const SCRIPT: &str = r#"#!/bin/sh
# A custom bootloader backend keeping PRIMARY, CURRENT and STATE_<bootname> in a file.
state='@STATE@'
printf '%s|' "$@" >> '@LOG@'
echo >> '@LOG@'
get() { sed -n "s/^$1=//p" "$state"; }
put() {
	grep -v "^$1=" "$state" > "$state.new" || true
	echo "$1=$2" >> "$state.new"
	mv "$state.new" "$state"
}
[ -f "$state" ] || { echo "no state file $state" >&2; exit 3; }
case "$1" in
get-primary)
	p=$(get PRIMARY)
	if [ -n "$p" ] && [ "$(get "STATE_$p")" = good ]; then echo "$p"; fi ;;
set-primary) put PRIMARY "$2" ;;
get-state) get "STATE_$2" ;;
set-state) put "STATE_$2" "$3" ;;
get-current) get CURRENT ;;
*) echo "unknown command: $1" >&2; exit 2 ;;
esac
"#;

struct Rig {
    _dir: tempfile::TempDir,
    script: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

impl Rig {
    fn new(state: &str) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let script = dir.path().join("bootloader-script");
        let state_path = dir.path().join("state");
        let log = dir.path().join("calls.log");
        let text = SCRIPT
            .replace("@STATE@", state_path.to_str().unwrap())
            .replace("@LOG@", log.to_str().unwrap());
        write_executable(&script, &text);
        std::fs::write(&state_path, state).unwrap();
        Rig {
            _dir: dir,
            script,
            state: state_path,
            log,
        }
    }

    fn backend(&self) -> CustomBackend {
        CustomBackend::new(self.script.clone(), vec!["A".into(), "B".into()])
    }

    fn state(&self) -> String {
        let mut lines: Vec<String> = std::fs::read_to_string(&self.state)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect();
        lines.sort();
        lines.join(" ")
    }

    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Writes an executable and waits until it can be executed: a test thread forking while
/// the file is still open for writing makes exec fail with ETXTBSY for a moment.
fn write_executable(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    for _ in 0..100 {
        match std::process::Command::new(path)
            .arg("probe")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
        {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
    panic!("{} stays busy", path.display());
}

#[test]
fn update_cycle_through_a_script() {
    let rig = Rig::new("PRIMARY=A\nCURRENT=A\nSTATE_A=good\nSTATE_B=good\n");
    std::fs::remove_file(&rig.log).ok();
    let mut b = rig.backend();
    assert_eq!(b.name(), "custom");
    assert_eq!(b.current_bootname().unwrap(), "A");
    assert_eq!(b.primary().unwrap().as_deref(), Some("A"));
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Good);

    // Install into B: mark it bad, write it, activate it.
    b.mark_bad("B").unwrap();
    assert_eq!(b.slot_state("B").unwrap(), SlotBootState::Bad);
    b.mark_active("B").unwrap();
    assert_eq!(
        rig.state(),
        "CURRENT=A PRIMARY=B STATE_A=good STATE_B=good",
        "mark-active is set-state good, then set-primary"
    );
    assert_eq!(b.primary().unwrap().as_deref(), Some("B"));
    b.mark_good("B").unwrap();
    assert_eq!(b.primary().unwrap().as_deref(), Some("B"));

    // Booted into B.
    std::fs::write(
        &rig.state,
        std::fs::read_to_string(&rig.state)
            .unwrap()
            .replace("CURRENT=A", "CURRENT=B"),
    )
    .unwrap();
    assert_eq!(b.current_bootname().unwrap(), "B");
    let s = b.state().unwrap();
    assert_eq!(s.order, ["B".to_string(), "A".to_string()]);
    assert_eq!(s.state("A"), SlotBootState::Good);
    assert_eq!(s.state("B"), SlotBootState::Good);
    assert_eq!(s.primary(), Some("B"));

    assert_eq!(
        rig.calls(),
        [
            "get-current|",
            "get-primary|",
            "get-state|B|",
            "set-state|B|bad|",
            "get-state|B|",
            "set-state|B|good|",
            "set-primary|B|",
            "get-primary|",
            "set-state|B|good|",
            "get-primary|",
            "get-current|",
            "get-primary|",
            "get-state|A|",
            "get-state|B|",
        ]
    );
}

#[test]
fn script_failures_and_bad_output() {
    let rig = Rig::new("PRIMARY=A\nCURRENT=A\nSTATE_A=maybe\n");
    let mut b = rig.backend();
    let e = b.slot_state("A").unwrap_err().to_string();
    assert!(
        e.contains(rig.script.to_str().unwrap()) && e.contains("get-state A printed \"maybe\""),
        "{e}"
    );
    // Missing state file: the script exits 3 with a message.
    std::fs::remove_file(&rig.state).unwrap();
    let e = b.mark_active("A").unwrap_err().to_string();
    assert!(
        e.contains("set-state A good failed with exit status: 3") && e.contains("no state file"),
        "{e}"
    );
    // An empty get-current is an error.
    std::fs::write(&rig.state, "PRIMARY=A\n").unwrap();
    let e = b.current_bootname().unwrap_err().to_string();
    assert!(e.contains("get-current printed nothing"), "{e}");
    // A script that hangs is killed at the timeout.
    let dir = tempfile::tempdir().unwrap();
    let slow = dir.path().join("slow");
    write_executable(
        &slow,
        "#!/bin/sh\n[ \"$1\" = probe ] && exit 0\nexec sleep 30\n",
    );
    let mut b = CustomBackend::new(slow, vec!["A".into()]).with_timeout(Duration::from_millis(300));
    let e = b.primary().unwrap_err().to_string();
    assert!(e.contains("get-primary did not finish"), "{e}");
}
