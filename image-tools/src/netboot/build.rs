//! The steps of [`build_netboot`]: check the inputs, prepare the kernel and its modules,
//! then write `vmlinuz`, `initrd.img`, `boot.ipxe` and `netboot.json`.

use std::fs;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::Duration;

use sha2::{Digest, Sha256};

use flipslot_os::fs::AtomicFile;
use flipslot_os::process::Cmd;

use super::elf::{exec_kind, ExecKind};
use super::initramfs::{write_initramfs, InitramfsInputs};
use super::ipxe::{INITRD_NAME, KERNEL_NAME, SCRIPT_NAME};
use super::libs::{archive_path, host_program};
use super::modules::{resolve, DEFAULT_MODULES};
use super::{io_err, kernel, keys, NetbootError, NetbootOptions, NetbootSummary, OutputFile};
use super::{SUMMARY_FORMAT, SUMMARY_NAME};

/// How long `busybox --list` may take.
const BUSYBOX_TIMEOUT: Duration = Duration::from_secs(60);

/// Builds the netboot files of `opts` in `opts.out_dir` and returns what `netboot.json` says.
///
/// Every input is checked before anything is written: the URLs and words, the busybox
/// (static), the agent (not dynamically linked), the keyring, the kernel and its modules.
/// A scratch directory inside the output directory holds the unpacked package and the
/// private module tree; it is removed at the end, also after a failure.
pub fn build_netboot(opts: &NetbootOptions) -> Result<NetbootSummary, NetbootError> {
    let cmdline = opts.boot.kernel_cmdline()?;
    let script = opts.boot.ipxe_script()?;

    let busybox = read_static(&opts.busybox, "--busybox", true)?;
    let applets = Cmd::new(&opts.busybox)
        .arg("--list")
        .timeout(BUSYBOX_TIMEOUT)
        .run_stdout()?;
    let applets: Vec<String> = applets
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    if !applets.iter().any(|a| a == "sh") {
        return Err(NetbootError::Input {
            what: format!("--busybox {}", opts.busybox.display()),
            reason: "has no sh applet (busybox --list)".into(),
        });
    }
    let agent = read_static(&opts.agent, "--agent", false)?;
    let keyring = keys::load_keyring(&opts.keyring)?;
    let mke2fs = host_program(&opts.mke2fs)?;
    let mke2fs_conf = match fs::read(&opts.mke2fs_conf) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(io_err("read", &opts.mke2fs_conf)(e)),
    };

    fs::create_dir_all(&opts.out_dir).map_err(io_err("create directory", &opts.out_dir))?;
    let scratch = tempfile::Builder::new()
        .prefix(".netboot-")
        .tempdir_in(&opts.out_dir)
        .map_err(io_err("create a scratch directory in", &opts.out_dir))?;
    let kernel = kernel::prepare(&opts.kernel, scratch.path())?;
    let (names, required) = match &opts.modules {
        Some(names) => (names.clone(), true),
        None => (
            DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            false,
        ),
    };
    let modules = resolve(&kernel, &names, required)?;

    let vmlinuz = write_output(&opts.out_dir, KERNEL_NAME, |w| {
        let mut f = fs::File::open(&kernel.image).map_err(io_err("open", &kernel.image))?;
        io::copy(&mut f, w).map_err(io_err("copy", &kernel.image))?;
        Ok(())
    })?;
    let key_files: Vec<(String, Vec<u8>)> = keyring
        .iter()
        .map(|k| (k.name.clone(), k.contents.clone()))
        .collect();
    let programs = [mke2fs];
    let inputs = InitramfsInputs {
        busybox: &busybox,
        applets: &applets,
        agent: &agent,
        keys: &key_files,
        programs: &programs,
        mke2fs_conf: mke2fs_conf.as_deref(),
        modules: &modules.files,
    };
    let initrd = write_output(&opts.out_dir, INITRD_NAME, |w| {
        write_initramfs(w, &inputs, opts.timestamp)?;
        Ok(())
    })?;
    let ipxe = write_output(&opts.out_dir, SCRIPT_NAME, |w| {
        w.write_all(script.as_bytes())
            .map_err(io_err("write", &opts.out_dir.join(SCRIPT_NAME)))
    })?;
    drop(scratch);

    let mut host_files = Vec::new();
    for program in &programs {
        for path in std::iter::once(&program.path).chain(&program.libraries) {
            host_files.push(format!("/{}", archive_path(path)?));
        }
    }
    let summary = NetbootSummary {
        format: SUMMARY_FORMAT,
        kernel_version: kernel.release.clone(),
        files: vec![vmlinuz, initrd, ipxe],
        cmdline,
        modules: modules
            .files
            .iter()
            .map(|m| m.archive_path.clone())
            .collect(),
        modules_requested: names,
        modules_builtin: modules.builtin,
        modules_missing: modules.missing,
        agent_sha256: hex::encode(Sha256::digest(&agent)),
        busybox_sha256: hex::encode(Sha256::digest(&busybox)),
        key_ids: keyring.iter().map(|k| k.key_id.clone()).collect(),
        host_files,
        timestamp: opts.timestamp,
    };
    let mut json = serde_json::to_string_pretty(&summary).map_err(|e| NetbootError::Io {
        action: "encode".into(),
        path: opts.out_dir.join(SUMMARY_NAME),
        source: e.into(),
    })?;
    json.push('\n');
    write_output(&opts.out_dir, SUMMARY_NAME, |w| {
        w.write_all(json.as_bytes())
            .map_err(io_err("write", &opts.out_dir.join(SUMMARY_NAME)))
    })?;
    Ok(summary)
}

/// Reads an executable that must run without a C library: a dynamically linked ELF is
/// refused; with `elf_only`, so is anything that is not an ELF file.
fn read_static(path: &Path, option: &str, elf_only: bool) -> Result<Vec<u8>, NetbootError> {
    let bytes = fs::read(path).map_err(io_err("read", path))?;
    let bad = |reason: String| NetbootError::Input {
        what: format!("{option} {}", path.display()),
        reason,
    };
    match exec_kind(&bytes) {
        ExecKind::Static => Ok(bytes),
        ExecKind::NotElf if !elf_only => Ok(bytes),
        ExecKind::NotElf | ExecKind::Malformed => Err(bad("is not an ELF executable".into())),
        ExecKind::Dynamic { interpreter } => Err(bad(format!(
            "is dynamically linked (loader {interpreter}), but the initramfs has no C library \
             for it: use a static build{}",
            if option == "--busybox" {
                " (Debian's busybox-static)"
            } else {
                " (RUSTFLAGS=\"-C target-feature=+crt-static\")"
            }
        ))),
    }
}

/// Writes `OUT_DIR/name` atomically through `fill`, hashing what is written.
fn write_output(
    out_dir: &Path,
    name: &str,
    fill: impl FnOnce(&mut dyn Write) -> Result<(), NetbootError>,
) -> Result<OutputFile, NetbootError> {
    let path = out_dir.join(name);
    let mut file = AtomicFile::create(&path)?;
    let (size, sha256) = {
        let mut w = Hashing {
            inner: BufWriter::with_capacity(1 << 20, &mut file),
            hasher: Sha256::new(),
            len: 0,
        };
        fill(&mut w)?;
        w.inner.flush().map_err(io_err("write", &path))?;
        (w.len, hex::encode(w.hasher.finalize()))
    };
    file.commit()?;
    Ok(OutputFile {
        name: name.to_string(),
        size,
        sha256,
    })
}

/// A writer that hashes and counts what passes through it.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
