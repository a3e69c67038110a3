//! Typed operations shared by the CLI (and later the daemon): status, install, mark.
//! Each loads what it needs from the [`Agent`] context and returns plain data.

pub mod render;

use crate::bootloader::{self, Bootloader, SlotBootState};
use crate::config::{Slot, SystemConfig};
use crate::host::clock::SystemClock;
use crate::host::paths::{self, Root};
use crate::install::{self, InstallEnv, InstallOptions, InstallOutcome, Progress};
use crate::net::{HttpOptions, HttpSource};
use crate::slot::cmdline;
use crate::slot::device::HostDevices;
use crate::slot::status::{RollbackRecord, SlotRecord, StatusFile};
use crate::slot::{self, FsResolver};
use anyhow::{bail, Context, Result};
use flipslot_format::source::{ByteSource, FileSource};
use flipslot_format::Keyring;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// The agent's view of the system: config, root directory and where the kernel command
/// line is read from.
#[derive(Debug)]
pub struct Agent {
    /// The validated config.
    pub cfg: SystemConfig,
    /// All paths are resolved under this root.
    pub root: Root,
    /// File holding the kernel command line (normally `/proc/cmdline`), under the root.
    pub cmdline_file: PathBuf,
    /// Use direct I/O for slot devices.
    pub direct_io: bool,
}

impl Agent {
    /// Loads the config from `config` (under `root`).
    pub fn load(root: Root, config: &Path, cmdline_file: Option<&Path>) -> Result<Agent> {
        let cfg = SystemConfig::load_in_root(&root.resolve(config), config)?;
        Ok(Agent {
            cfg,
            root,
            cmdline_file: cmdline_file
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(paths::PROC_CMDLINE)),
            direct_io: true,
        })
    }

    fn status_path(&self) -> PathBuf {
        self.root
            .resolve(&self.cfg.data_dir.join(paths::STATUS_FILE_NAME))
    }

    /// The slot the system booted from, if any.
    pub fn booted(&self) -> Result<Option<&Slot>> {
        let file = self.root.resolve(&self.cmdline_file);
        let text = std::fs::read_to_string(&file).with_context(|| {
            format!(
                "cannot read the kernel command line from {}",
                file.display()
            )
        })?;
        let mut hint = cmdline::booted_hint(&text);
        if hint.bootname.is_none() && self.cfg.bootloader == crate::config::BootloaderKind::Custom {
            // RAUC's custom backends may tell which slot booted (`get-current`).
            if let Some(script) = &self.cfg.custom_backend {
                let mut b = bootloader::custom::CustomBackend::new(
                    self.root.resolve(script),
                    self.cfg.bootnames(),
                );
                hint.bootname = Some(b.current_bootname()?).filter(|s| !s.is_empty());
            }
        }
        let resolver = FsResolver {
            root: self.root.clone(),
        };
        Ok(slot::detect_booted(&self.cfg, &hint, &resolver)?)
    }

    /// Takes the install lock without waiting. Every command that writes a slot or
    /// changes the bootloader's choice holds it (install, health, rollback, mark), so one
    /// runs at a time; while another holds it the error says so and names the file.
    pub fn lock(&self) -> Result<crate::host::sys::LockGuard> {
        let data_dir = self.root.resolve(&self.cfg.data_dir);
        std::fs::create_dir_all(&data_dir)
            .with_context(|| format!("cannot create data directory {}", data_dir.display()))?;
        let path = data_dir.join(paths::LOCK_FILE_NAME);
        match crate::host::sys::lock_exclusive(&path) {
            Ok(guard) => Ok(guard),
            // Already names the file and what holds it.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(e.into()),
            Err(e) => {
                Err(anyhow::Error::new(e)
                    .context(format!("cannot take the lock {}", path.display())))
            }
        }
    }

    /// The ed25519 keyring for flipslot bundles and channels.
    pub fn keyring(&self) -> Result<Keyring> {
        let path = self.cfg.keyring.as_ref().with_context(|| {
            format!(
                "config {} has no keyring for flipslot bundles and channels \
                 (it only trusts X.509 certificates for RAUC bundles)",
                self.cfg.path.display()
            )
        })?;
        let path = self.root.resolve(path);
        Keyring::load(&path).with_context(|| format!("cannot load keyring {}", path.display()))
    }

    /// The X.509 trust store and verification options for RAUC bundles.
    pub fn x509_trust(
        &self,
    ) -> Result<(
        flipslot_rauc::x509::TrustStore,
        flipslot_rauc::x509::VerifyOptions,
    )> {
        let k = self.cfg.x509_keyring.as_ref().with_context(|| {
            format!(
                "config {} has no X.509 keyring for RAUC bundles \
                 (set [keyring] in system.conf or [x509-keyring] in system.toml)",
                self.cfg.path.display()
            )
        })?;
        let path = k.path.as_ref().map(|p| self.root.resolve(p));
        let dir = k.directory.as_ref().map(|p| self.root.resolve(p));
        let store = flipslot_rauc::x509::TrustStore::load(path.as_deref(), dir.as_deref())
            .context("cannot load the X.509 keyring")?;
        let options = flipslot_rauc::x509::VerifyOptions {
            purpose: k
                .check_purpose
                .parse()
                .map_err(|e| anyhow::anyhow!("keyring check-purpose: {e}"))?,
            allow_partial_chain: k.allow_partial_chain,
            allowed_signer_cns: k.allowed_signer_cns.clone(),
            use_signing_time: k.use_bundle_signing_time,
        };
        Ok((store, options))
    }

    /// The config's notices (settings read but without effect), each naming the file.
    pub fn config_notices(&self) -> Vec<String> {
        self.cfg
            .notices
            .iter()
            .map(|n| format!("config {}: {n}", self.cfg.path.display()))
            .collect()
    }

    /// Whether the slot's device exists under the root (a dangling link counts as
    /// missing); `None` when that cannot be told (e.g. no permission to look).
    pub fn device_exists(&self, slot: &Slot) -> Option<bool> {
        self.root.resolve(&slot.device).try_exists().ok()
    }

    /// Refuses to make a slot bootable whose device does not exist: the bootloader would
    /// try to boot a partition that is not there.
    fn require_device(&self, slot: &Slot) -> Result<()> {
        if self.device_exists(slot) == Some(false) {
            bail!(
                "slot {} ({}): device {} does not exist",
                slot.name,
                slot.bootname,
                slot.device.display()
            );
        }
        Ok(())
    }

    fn bootloader(&self) -> Result<Box<dyn Bootloader>> {
        bootloader::open_backend(&self.cfg, &self.root)
    }

    /// Resolves `booted`, `other` or a slot name / bootname to a slot.
    pub fn select_slot(&self, which: &str) -> Result<&Slot> {
        let booted = self.booted()?;
        match which {
            "booted" => booted.context("the system did not boot from a configured slot"),
            "other" => {
                let b = booted.context(
                    "the system did not boot from a configured slot, so there is no \"other\" slot",
                )?;
                let others: Vec<&Slot> = self
                    .cfg
                    .slots_of_class(&b.class)
                    .into_iter()
                    .filter(|s| s.name != b.name)
                    .collect();
                match others.as_slice() {
                    [one] => Ok(one),
                    _ => bail!(
                        "class {} has {} other slots; name one of: {}",
                        b.class,
                        others.len(),
                        others
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            }
            name => self
                .cfg
                .slot_by_name(name)
                .or_else(|| self.cfg.slot_by_bootname(name))
                .with_context(|| {
                    format!(
                        "no slot named {name:?}; configured: {}",
                        self.cfg
                            .slots
                            .iter()
                            .map(|s| format!("{} ({})", s.name, s.bootname))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                }),
        }
    }
}

/// One slot in a status report.
#[derive(Debug, Clone, Serialize)]
pub struct SlotStatus {
    /// `class.index`.
    pub name: String,
    /// Slot class.
    pub class: String,
    /// Bootloader name.
    pub bootname: String,
    /// Device path.
    pub device: PathBuf,
    /// `booted` or `inactive`.
    pub state: &'static str,
    /// `good`, `bad` or `trying` as the bootloader sees it.
    pub boot_status: &'static str,
    /// Whether the bootloader will boot it next.
    pub primary: bool,
    /// The last install into it, if recorded.
    pub installed: Option<SlotRecord>,
    /// Whether its device exists (`false`: nothing can be installed into it or booted
    /// from it; `status` warns).
    pub device_exists: bool,
}

/// The answer of `flipslot status`.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// The system's compatible.
    pub compatible: String,
    /// The bootloader backend.
    pub bootloader: &'static str,
    /// The booted slot's name.
    pub booted: Option<String>,
    /// The primary slot's name.
    pub primary: Option<String>,
    /// Every slot.
    pub slots: Vec<SlotStatus>,
    /// The most recent rollback, if any.
    pub last_rollback: Option<RollbackRecord>,
    /// Settings of the config that were read but have no effect (a RAUC system.conf's
    /// ignored keys), each prefixed with `config <path>: `.
    pub config_notices: Vec<String>,
}

fn boot_status_str(s: SlotBootState) -> &'static str {
    match s {
        SlotBootState::Good => "good",
        SlotBootState::Bad => "bad",
        SlotBootState::Trying => "trying",
    }
}

/// Gathers the status report.
pub fn status(agent: &Agent) -> Result<StatusReport> {
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let ab = bl.state()?;
    let primary_bn = bl.primary()?;
    let status = StatusFile::load(&agent.status_path())?;
    let slots = agent
        .cfg
        .slots
        .iter()
        .map(|s| SlotStatus {
            name: s.name.clone(),
            class: s.class.clone(),
            bootname: s.bootname.clone(),
            device: s.device.clone(),
            state: if booted.is_some_and(|b| b.name == s.name) {
                "booted"
            } else {
                "inactive"
            },
            boot_status: boot_status_str(ab.state(&s.bootname)),
            primary: primary_bn.as_deref() == Some(s.bootname.as_str()),
            installed: status.slots.get(&s.name).cloned(),
            device_exists: agent.device_exists(s) != Some(false),
        })
        .collect();
    Ok(StatusReport {
        compatible: agent.cfg.compatible.clone(),
        bootloader: bl.name(),
        booted: booted.map(|s| s.name.clone()),
        primary: primary_bn
            .and_then(|bn| agent.cfg.slot_by_bootname(&bn))
            .map(|s| s.name.clone()),
        slots,
        last_rollback: status.last_rollback.clone(),
        config_notices: agent.config_notices(),
    })
}

/// Installs a bundle file, holding the install lock. The file is opened first, so that
/// what is not a regular file or block device is refused before the lock is taken.
pub fn install_file(
    agent: &Agent,
    bundle: &Path,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let mut source = FileSource::open(bundle)
        .with_context(|| format!("cannot open bundle {}", bundle.display()))?;
    let _lock = agent.lock()?;
    // A file too short for the magic is left to the flipslot reader, which says how it
    // is truncated.
    let mut head = [0u8; 8];
    let rauc = match source.read_exact_at(0, &mut head) {
        Ok(()) => flipslot_rauc::bundle::is_rauc_candidate(&head, &bundle.to_string_lossy()),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => false,
        Err(e) => {
            return Err(
                anyhow::Error::new(e).context(format!("cannot read bundle {}", bundle.display()))
            )
        }
    };
    install_source(agent, source, rauc, opts, progress)
}

/// Installs a bundle from an `http://` or `https://` URL, holding the install lock. The
/// bundle is streamed with range requests (see [`crate::net::http`]); nothing is stored.
pub fn install_url(
    agent: &Agent,
    url: &str,
    http: &HttpOptions,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let _lock = agent.lock()?;
    let source = HttpSource::open(url, http).context("cannot open bundle")?;
    // Told apart by name, so the stream is opened once (RAUC bundles are `.raucb`).
    let rauc = url
        .split(['?', '#'])
        .next()
        .is_some_and(|p| p.ends_with(".raucb"));
    install_source(agent, source, rauc, opts, progress)
}

/// The install pipeline over any source; the caller holds the lock.
fn install_source<S: ByteSource + Send>(
    agent: &Agent,
    source: S,
    rauc: bool,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let devices = HostDevices {
        root: agent.root.clone(),
        direct: agent.direct_io,
    };
    let mut env = InstallEnv {
        cfg: &agent.cfg,
        booted,
        bootloader: bl.as_mut(),
        devices: &devices,
        clock: &SystemClock,
        status_path: agent.status_path(),
    };
    if rauc {
        if opts.expected_manifest_sha256.is_some() {
            bail!(
                "bundle {} is a RAUC bundle; signed channels name flipslot bundles only",
                source.describe()
            );
        }
        let (store, options) = agent.x509_trust()?;
        let k = &agent.cfg.rauc_bundles;
        let trust = install::RaucTrust {
            store: &store,
            options: &options,
            formats: flipslot_rauc::bundle::AllowedFormats {
                plain: k.plain,
                verity: k.verity,
            },
        };
        install::install_rauc(&mut env, &trust, source, opts, progress)
    } else {
        let keyring = agent.keyring()?;
        install::install(&mut env, &keyring, source, opts, progress)
    }
}

/// What `mark-*` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// Commit.
    Good,
    /// Take out of rotation.
    Bad,
    /// Boot next.
    Active,
}

/// The result of a mark operation.
#[derive(Debug, Clone, Serialize)]
pub struct MarkOutcome {
    /// The slot.
    pub slot: String,
    /// Its bootname.
    pub bootname: String,
    /// `good`, `bad` or `active`.
    pub mark: &'static str,
    /// The primary slot afterwards.
    pub primary: Option<String>,
}

/// Marks a slot good, bad or active, holding the install lock (refused while an install
/// or health run holds it: the slot it writes must not become primary half-written).
pub fn mark(agent: &Agent, which: &str, how: Mark) -> Result<MarkOutcome> {
    let slot = agent.select_slot(which)?;
    let name = match how {
        Mark::Good => "good",
        Mark::Bad => "bad",
        Mark::Active => "active",
    };
    if how == Mark::Active {
        agent
            .require_device(slot)
            .with_context(|| format!("cannot mark slot {} active", slot.name))?;
    }
    let _lock = agent
        .lock()
        .with_context(|| format!("cannot mark slot {} {name}", slot.name))?;
    let mut bl = agent.bootloader()?;
    match how {
        Mark::Good => bl.mark_good(&slot.bootname)?,
        Mark::Bad => bl.mark_bad(&slot.bootname)?,
        Mark::Active => bl.mark_active(&slot.bootname)?,
    }
    let primary = bl
        .primary()?
        .and_then(|bn| agent.cfg.slot_by_bootname(&bn))
        .map(|s| s.name.clone());
    Ok(MarkOutcome {
        slot: slot.name.clone(),
        bootname: slot.bootname.clone(),
        mark: name,
        primary,
    })
}

/// The answer of `flipslot health`.
#[derive(Debug, Clone, Serialize)]
pub struct HealthOutcome {
    /// The booted slot.
    pub booted: Option<String>,
    /// `trial`, `routine`, `booted-bad` or `not-from-slot`.
    pub boot: &'static str,
    /// The checks run.
    pub verdict: Option<crate::health::Verdict>,
    /// `committed`, `kept`, `fallback` or `none`.
    pub action: &'static str,
    /// Rollbacks noticed and recorded by this run.
    pub rollbacks: Vec<RollbackRecord>,
    /// Whether a reboot into the previous slot was requested.
    pub rebooting: bool,
}

impl HealthOutcome {
    /// Whether the command should exit non-zero.
    pub fn failed(&self) -> bool {
        self.verdict.as_ref().is_some_and(|v| !v.healthy)
    }
}

/// What `flipslot health` needs from the host.
pub struct HealthEnv<'a> {
    /// Runs single checks.
    pub checks: &'a dyn crate::health::CheckRunner,
    /// The clock.
    pub clock: &'a dyn crate::host::clock::Clock,
    /// Whether a failed trial may ask for a reboot (the config may also forbid it); the
    /// caller reboots when the outcome says `rebooting`.
    pub allow_reboot: bool,
}

impl std::fmt::Debug for HealthEnv<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthEnv")
            .field("allow_reboot", &self.allow_reboot)
            .finish_non_exhaustive()
    }
}

/// Assesses this boot: records earlier failed trials as rollbacks, runs the health checks,
/// and commits the booted slot or falls back from it.
pub fn health(agent: &Agent, env: &HealthEnv<'_>) -> Result<HealthOutcome> {
    use crate::health::assess::{assess, BootKind};
    let _lock = agent.lock()?;
    let booted = agent.booted()?;
    let mut bl = agent.bootloader()?;
    let ab = bl.state()?;
    let status_path = agent.status_path();
    let mut status = StatusFile::load(&status_path)?;
    let a = assess(&agent.cfg, booted, &ab, &status);
    let now = env.clock.now_unix();

    let mut rollbacks = Vec::new();
    for f in &a.failed_trials {
        if f.needs_mark_bad {
            bl.mark_bad(&f.slot.bootname)
                .with_context(|| format!("cannot mark failed slot {} bad", f.slot.name))?;
        }
        let to = booted.map(|b| b.name.clone()).unwrap_or_default();
        let to_version = status.slots.get(&to).and_then(|r| r.bundle_version.clone());
        let Some(rec) = status.slots.get_mut(&f.slot.name) else {
            continue;
        };
        rec.trial.rolled_back_at = Some(now);
        let rb = RollbackRecord {
            from_slot: f.slot.name.clone(),
            from_version: rec.bundle_version.clone(),
            to_slot: to,
            to_version,
            reason: f.reason.clone(),
            at: now,
        };
        log::warn!(
            "rolled back from slot {} to {}: {}",
            rb.from_slot,
            rb.to_slot,
            rb.reason
        );
        status.last_rollback = Some(rb.clone());
        rollbacks.push(rb);
    }
    if !rollbacks.is_empty() {
        status.save(&status_path)?;
    }

    let (boot, run) = match a.kind {
        BootKind::NotFromSlot => ("not-from-slot", false),
        BootKind::BootedBad => ("booted-bad", true),
        BootKind::Routine => ("routine", true),
        BootKind::Trial => ("trial", true),
    };
    let verdict = run.then(|| crate::health::run_checks(&agent.cfg.health, env.checks));
    let mut out = HealthOutcome {
        booted: booted.map(|b| b.name.clone()),
        boot,
        verdict: verdict.clone(),
        action: "none",
        rollbacks,
        rebooting: false,
    };
    let (Some(b), Some(v)) = (booted, verdict) else {
        return Ok(out);
    };
    match a.kind {
        BootKind::Trial if v.healthy => {
            bl.mark_good(&b.bootname)
                .with_context(|| format!("cannot commit slot {}", b.name))?;
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.committed_at = Some(now);
            }
            status.save(&status_path)?;
            out.action = "committed";
        }
        BootKind::Trial => {
            // Record the reason first: whatever happens next, the boot after this one
            // finds it (the bootloader falls back on its own if we crash here).
            if let Some(rec) = status.slots.get_mut(&b.name) {
                rec.trial.health_failure = v.reason.clone();
            }
            status.save(&status_path)?;
            crate::host::failpoint::hit("health-before-mark-bad");
            bl.mark_bad(&b.bootname)
                .with_context(|| format!("cannot mark slot {} bad", b.name))?;
            out.action = "fallback";
            out.rebooting = agent.cfg.health.reboot_on_failure && env.allow_reboot;
        }
        BootKind::Routine => {
            if !v.healthy {
                log::warn!(
                    "slot {} is committed; keeping it although a health check failed: {}",
                    b.name,
                    v.reason.as_deref().unwrap_or("")
                );
            }
            bl.mark_good(&b.bootname)
                .with_context(|| format!("cannot mark slot {} good", b.name))?;
            out.action = "kept";
        }
        BootKind::BootedBad | BootKind::NotFromSlot => {}
    }
    Ok(out)
}

/// The answer of `flipslot rollback`.
#[derive(Debug, Clone, Serialize)]
pub struct RollbackOutcome {
    /// The slot that will boot next.
    pub to_slot: String,
    /// Its bootname.
    pub to_bootname: String,
    /// Its recorded version.
    pub to_version: Option<String>,
    /// The slot running now.
    pub from_slot: String,
}

/// Makes the other (still good) slot primary, so the next boot runs it.
pub fn rollback(
    agent: &Agent,
    to: Option<&str>,
    clock: &dyn crate::host::clock::Clock,
) -> Result<RollbackOutcome> {
    let _lock = agent.lock()?;
    let booted = agent
        .booted()?
        .context("the system did not boot from a configured slot; use mark-active SLOT")?;
    let target = agent.select_slot(to.unwrap_or("other"))?;
    if target.name == booted.name {
        bail!("slot {} is the booted slot", target.name);
    }
    agent
        .require_device(target)
        .with_context(|| format!("cannot roll back to slot {}", target.name))?;
    let mut bl = agent.bootloader()?;
    if bl.slot_state(&target.bootname)? == SlotBootState::Bad {
        bail!(
            "cannot roll back to slot {} ({}): the bootloader has it marked bad",
            target.name,
            target.bootname
        );
    }
    let status_path = agent.status_path();
    let mut status = StatusFile::load(&status_path)?;
    let rec = status.slots.get(&target.name);
    if rec.is_some_and(|r| r.result != crate::slot::status::InstallResult::Ok) {
        bail!(
            "cannot roll back to slot {}: its last install did not complete",
            target.name
        );
    }
    let to_version = rec.and_then(|r| r.bundle_version.clone());
    bl.mark_active(&target.bootname)?;
    status.last_rollback = Some(RollbackRecord {
        from_slot: booted.name.clone(),
        from_version: status
            .slots
            .get(&booted.name)
            .and_then(|r| r.bundle_version.clone()),
        to_slot: target.name.clone(),
        to_version: to_version.clone(),
        reason: "requested by an operator (flipslot rollback)".into(),
        at: clock.now_unix(),
    });
    status.save(&status_path)?;
    Ok(RollbackOutcome {
        to_slot: target.name.clone(),
        to_bootname: target.bootname.clone(),
        to_version,
        from_slot: booted.name.clone(),
    })
}
