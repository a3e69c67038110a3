//! The provisioning steps, in order, over one open disk. The partition table is written
//! last, so the disk stays blank to firmware and to a later run until everything else has
//! been written and read back:
//!
//! 1. `inspect`: plan the table for this disk and read what is there ([`plan::disk_state`]);
//!    a finished disk ends here ("nothing to do"), a disk holding data is refused unless
//!    `--wipe` is given and the signed description allows it;
//! 2. `clear`: zero the protective MBR and both GPT headers (and, when wiping, the
//!    signatures of whatever was there), then flush;
//! 3. `esp`: stream the ESP image into its partition, hashing it; compare with the signed
//!    SHA-256, then read it back;
//! 4. `slot <label>`: the bundle's image, every chunk verified before it is written, read
//!    back against the signed manifest (the install pipeline's own data path);
//! 5. `data`: an ext4 filesystem holding the description's files and the factory status
//!    record, made in place by `mke2fs -d`;
//! 6. `partition-table`: backup GPT, primary GPT, flush, then the protective MBR, flush,
//!    and read back. Only now does the disk boot.
//!
//! A power cut anywhere before step 6 leaves a disk without a partition table, which the
//! next run provisions again from the start; in step 6 it leaves this description's
//! table unfinished, which the next run recognises as its own and writes again.

use super::plan::{self, DiskState, Factory, SlotTarget};
use super::{Events, MakeFs, Outcome, PartitionReport};
use crate::host::failpoint;
use crate::install::fsb::{verify_device, write_image};
use crate::slot::device::{AlignedBuf, IoMode, SlotDevice};
use anyhow::{anyhow, bail, Context, Result};
use flipslot_format::provision::{PartitionRole, Provision};
use flipslot_format::source::ByteSource;
use flipslot_format::{Bundle, Sha256Digest};
use flipslot_gpt::{Encoded, Plan};
use sha2::{Digest, Sha256};
use std::io;
use std::path::{Path, PathBuf};

/// Failpoints of provisioning, in order (see `host::failpoint`).
pub const FAILPOINTS: &[&str] = &[
    "provision-after-clear",
    "provision-mid-slot",
    "provision-before-table",
    "provision-mid-table",
];

/// Bytes per copy step of the ESP image.
const COPY_CHUNK: usize = 1 << 20;

/// What one run needs besides the disk.
pub struct Job<'a, S: ByteSource + Send> {
    /// The verified description.
    pub desc: &'a Provision,
    /// The ESP image it names, opened.
    pub esp: &'a mut dyn ByteSource,
    /// The verified bundle.
    pub bundle: &'a mut Bundle<S>,
    /// The disk's logical sector size.
    pub sector_size: u64,
    /// `--wipe` was given.
    pub wipe: bool,
    /// Now, unix seconds (the factory record's time).
    pub now: u64,
    /// Makes the data filesystem.
    pub mkfs: &'a dyn MakeFs,
    /// A directory for staging the data partition's files.
    pub scratch: &'a Path,
}

impl<S: ByteSource + Send> std::fmt::Debug for Job<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job")
            .field("compatible", &self.desc.compatible)
            .field("sector_size", &self.sector_size)
            .field("wipe", &self.wipe)
            .finish_non_exhaustive()
    }
}

/// A window of a disk: one partition, as the install data path sees a slot device.
struct Region<'d> {
    disk: &'d mut dyn SlotDevice,
    offset: u64,
    len: u64,
    path: PathBuf,
}

impl SlotDevice for Region<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn write_at(&mut self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        self.disk.write_at(self.offset + offset, buf)
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.check(offset, buf.len())?;
        self.disk.read_at(self.offset + offset, buf)
    }

    fn sync(&mut self) -> io::Result<()> {
        self.disk.sync()
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn io_mode(&self) -> IoMode {
        self.disk.io_mode()
    }
}

impl Region<'_> {
    fn check(&self, offset: u64, len: usize) -> io::Result<()> {
        if offset
            .checked_add(len as u64)
            .map_or(true, |end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: {len} bytes at offset {offset} run past the partition's {} bytes",
                    self.path.display(),
                    self.len
                ),
            ));
        }
        Ok(())
    }
}

/// Provisions `disk` (shown as `shown`). See the module documentation for the steps.
pub fn run<S: ByteSource + Send>(
    job: Job<'_, S>,
    disk: &mut dyn SlotDevice,
    shown: &str,
    ev: &mut dyn Events,
) -> Result<Outcome> {
    let desc = job.desc;
    let disk_size = disk.size();
    let requests = plan::requests(desc)?;
    let seed = plan::seed(desc, disk_size)?;
    let table = flipslot_gpt::plan(disk_size, job.sector_size, &requests, &seed)
        .with_context(|| format!("cannot lay out disk {shown}"))?;
    let enc = flipslot_gpt::encode(&table);
    let manifest = job.bundle.manifest().clone();
    let images: Vec<(String, u64)> = manifest
        .images
        .iter()
        .map(|i| (i.class.clone(), i.size))
        .collect();
    let sizes: Vec<u64> = table
        .partitions
        .iter()
        .map(|p| p.len(table.sector_size))
        .collect();
    let slots = plan::slot_targets(desc, &images, &sizes)?;
    let mut outcome = Outcome {
        disk: shown.to_string(),
        disk_size,
        nothing_to_do: false,
        wiped: false,
        compatible: manifest.compatible.clone(),
        version: manifest.version.to_string(),
        manifest_sha256: job.bundle.manifest_sha256(),
        disk_guid: table.disk_guid.to_string(),
        partitions: partition_reports(desc, &table, &slots),
        slots_written: Vec::new(),
    };

    ev.step("inspect", &format!("disk {shown}: {disk_size} bytes"));
    let state = inspect(disk, &table, &enc).with_context(|| format!("cannot read disk {shown}"))?;
    match &state {
        DiskState::Provisioned => {
            ev.step(
                "nothing-to-do",
                &format!("disk {shown} is already provisioned"),
            );
            outcome.nothing_to_do = true;
            return Ok(outcome);
        }
        DiskState::Foreign(found) => {
            let what = found.join(", ");
            if !job.wipe {
                bail!(
                    "disk {shown} holds data ({what}): refusing to overwrite it; run again \
                     with --wipe to erase it{}",
                    if desc.target.allow_wipe {
                        ""
                    } else {
                        " (the provisioning description would also have to allow wiping)"
                    }
                );
            }
            if !desc.target.allow_wipe {
                bail!(
                    "disk {shown} holds data ({what}) and --wipe was given, but the signed \
                     provisioning description does not allow wiping (allow_wipe is false)"
                );
            }
            ev.step("wipe", &format!("disk {shown}: erasing {what}"));
            outcome.wiped = true;
        }
        DiskState::Blank | DiskState::Interrupted => {}
    }
    ev.step(
        "clear",
        &format!("disk {shown}: clearing the partition table"),
    );
    clear(disk, &table).with_context(|| format!("cannot clear the partition table of {shown}"))?;
    failpoint::hit("provision-after-clear");

    // The ESP.
    let esp_index = desc
        .partitions
        .iter()
        .position(|p| p.role == PartitionRole::Esp)
        .ok_or_else(|| anyhow!("the description has no ESP"))?;
    let esp_part = &table.partitions[esp_index];
    {
        let mut region = region(disk, &table, esp_index, shown);
        ev.step(
            "esp",
            &format!("partition {} ({})", esp_part.number, esp_part.label),
        );
        write_esp(job.esp, &desc.esp.sha256, desc.esp.size, &mut region, ev)?;
    }

    // The slots.
    let mut image_hashes: Vec<Sha256Digest> = Vec::new();
    for img in &manifest.images {
        image_hashes.push(img.sha256);
    }
    for s in slots.iter().filter(|s| s.write) {
        let part = &table.partitions[s.partition];
        let mut region = region(disk, &table, s.partition, shown);
        ev.step(
            &format!("slot {}", s.label),
            &format!(
                "partition {} ({}): {} {} as {} (bootname {})",
                part.number, s.label, manifest.compatible, manifest.version, s.name, s.bootname
            ),
        );
        let phase = format!("write {}", s.label);
        let mut mid = false;
        let total = manifest.images[s.image].size;
        write_image(job.bundle, s.image, &mut region, &mut |d, n| {
            ev.bytes(&phase, d, n);
            if !mid && d >= total / 2 {
                mid = true;
                failpoint::hit("provision-mid-slot");
            }
        })
        .with_context(|| format!("cannot write slot {} of disk {shown}", s.label))?;
        region
            .sync()
            .with_context(|| format!("cannot flush disk {shown}"))?;
        let phase = format!("read-back {}", s.label);
        verify_device(
            &mut region,
            manifest.chunk_hash(),
            &manifest.images[s.image],
            &mut |d, n| ev.bytes(&phase, d, n),
        )
        .with_context(|| {
            format!(
                "read-back of slot {} (partition {} of {shown}) does not match the image",
                s.label, part.number
            )
        })?;
        outcome.slots_written.push(s.name.clone());
    }

    // The data partition.
    let data_index = desc
        .partitions
        .iter()
        .position(|p| p.role == PartitionRole::Data)
        .ok_or_else(|| anyhow!("the description has no data partition"))?;
    let data_part = &table.partitions[data_index];
    ev.step(
        "data",
        &format!(
            "partition {} ({}): ext4 with {} file(s){}",
            data_part.number,
            data_part.label,
            desc.data_files.len(),
            if desc.status_file.is_some() {
                " and the factory status record"
            } else {
                ""
            }
        ),
    );
    let staging = job.scratch.join("data");
    stage_data(
        desc,
        &slots,
        &image_hashes,
        &manifest,
        job.bundle.manifest_sha256(),
        job.now,
        &staging,
    )?;
    disk.sync()
        .with_context(|| format!("cannot flush disk {shown}"))?;
    let offset = data_part.offset(table.sector_size);
    let len = data_part.len(table.sector_size);
    job.mkfs
        .make_ext4(disk.path(), offset, len, &data_part.label, &staging)
        .with_context(|| {
            format!(
                "cannot make the data filesystem on partition {} ({}) of {shown}",
                data_part.number, data_part.label
            )
        })?;
    check_ext4(disk, offset).with_context(|| {
        format!(
            "read-back of the data partition {} ({}) of {shown}",
            data_part.number, data_part.label
        )
    })?;
    failpoint::hit("provision-before-table");

    // The partition table, last.
    ev.step(
        "partition-table",
        &format!(
            "disk {shown}: GPT with {} partitions",
            table.partitions.len()
        ),
    );
    write_table(disk, &enc)
        .with_context(|| format!("cannot write the partition table of {shown}"))?;
    match inspect(disk, &table, &enc).with_context(|| format!("cannot read disk {shown}"))? {
        DiskState::Provisioned => {}
        other => {
            bail!("read-back of the partition table of {shown} failed: the disk reads as {other:?}")
        }
    }
    ev.step("done", &format!("disk {shown} is provisioned"));
    Ok(outcome)
}

fn region<'d>(disk: &'d mut dyn SlotDevice, table: &Plan, index: usize, shown: &str) -> Region<'d> {
    let p = &table.partitions[index];
    Region {
        offset: p.offset(table.sector_size),
        len: p.len(table.sector_size),
        path: PathBuf::from(format!("{shown} partition {} ({})", p.number, p.label)),
        disk,
    }
}

/// Reads the disk's head and tail and classifies it.
fn inspect(disk: &mut dyn SlotDevice, table: &Plan, enc: &Encoded) -> Result<DiskState> {
    let size = disk.size();
    let head_len = (flipslot_gpt::head_len(table.sector_size) as u64).min(size);
    let tail_len = (flipslot_gpt::tail_len(table.sector_size) as u64).min(size);
    let mut head = AlignedBuf::new(head_len.next_multiple_of(4096) as usize);
    let head = read_into(disk, 0, &mut head, head_len as usize)?;
    let mut tail_buf = AlignedBuf::new(tail_len.next_multiple_of(4096) as usize);
    let tail = read_into(disk, size - tail_len, &mut tail_buf, tail_len as usize)?.to_vec();
    Ok(plan::disk_state(head, &tail, table, enc))
}

fn read_into<'b>(
    disk: &mut dyn SlotDevice,
    offset: u64,
    buf: &'b mut AlignedBuf,
    len: usize,
) -> Result<&'b [u8]> {
    let slice = &mut buf.as_mut_slice()[..len];
    disk.read_at(offset, slice)
        .with_context(|| format!("cannot read {len} bytes at offset {offset}"))?;
    Ok(&buf.as_slice()[..len])
}

/// Zeroes the head (protective MBR, primary GPT and the whole-disk signatures probed
/// there) and the tail (backup GPT, md superblocks), then flushes.
fn clear(disk: &mut dyn SlotDevice, table: &Plan) -> Result<()> {
    let size = disk.size();
    let head = (flipslot_gpt::head_len(table.sector_size) as u64).min(size);
    let tail = (flipslot_gpt::tail_len(table.sector_size) as u64).min(size);
    let zeros = vec![0u8; head.max(tail) as usize];
    disk.write_at(0, &zeros[..head as usize])
        .context("cannot zero the start of the disk")?;
    disk.write_at(size - tail, &zeros[..tail as usize])
        .context("cannot zero the end of the disk")?;
    disk.sync().context("cannot flush")?;
    Ok(())
}

/// Streams the ESP image into its partition, hashing it, then reads it back.
fn write_esp(
    src: &mut dyn ByteSource,
    want: &Sha256Digest,
    size: u64,
    region: &mut Region<'_>,
    ev: &mut dyn Events,
) -> Result<()> {
    let what = src.describe();
    if let Some(n) = src.size() {
        if n != size {
            bail!("ESP image {what} is {n} bytes, the provisioning description says {size}");
        }
    }
    if size > region.len {
        bail!(
            "ESP image {what} of {size} bytes does not fit {} of {} bytes",
            region.path.display(),
            region.len
        );
    }
    let mut buf = AlignedBuf::new(COPY_CHUNK);
    let mut h = Sha256::new();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(COPY_CHUNK as u64) as usize;
        let chunk = &mut buf.as_mut_slice()[..n];
        src.read_exact_at(done, chunk)
            .with_context(|| format!("cannot read ESP image {what} at offset {done}"))?;
        h.update(&*chunk);
        region
            .write_at(done, chunk)
            .with_context(|| format!("cannot write {} at offset {done}", region.path.display()))?;
        done += n as u64;
        ev.bytes("write esp", done, size);
    }
    let got = Sha256Digest(h.finalize().into());
    if got != *want {
        bail!(
            "ESP image {what} has sha256 {}, the signed provisioning description says {}: \
             it was modified or is the wrong file",
            got.to_hex(),
            want.to_hex()
        );
    }
    region
        .sync()
        .with_context(|| format!("cannot flush {}", region.path.display()))?;
    let mut h = Sha256::new();
    let mut done = 0u64;
    while done < size {
        let n = (size - done).min(COPY_CHUNK as u64) as usize;
        let chunk = &mut buf.as_mut_slice()[..n];
        region.read_at(done, chunk).with_context(|| {
            format!(
                "cannot read back {} at offset {done}",
                region.path.display()
            )
        })?;
        h.update(&*chunk);
        done += n as u64;
        ev.bytes("read-back esp", done, size);
    }
    if Sha256Digest(h.finalize().into()) != *want {
        bail!(
            "read-back of {} does not match the ESP image",
            region.path.display()
        );
    }
    Ok(())
}

/// Writes the description's data files and the factory status record under `dir`.
#[allow(clippy::too_many_arguments)]
fn stage_data(
    desc: &Provision,
    slots: &[SlotTarget],
    image_hashes: &[Sha256Digest],
    manifest: &flipslot_format::Manifest,
    manifest_sha256: Sha256Digest,
    now: u64,
    dir: &Path,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let put = |rel: &str, bytes: &[u8], mode: u32| -> Result<()> {
        let path = dir.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("cannot set the mode of {}", path.display()))?;
        Ok(())
    };
    for f in &desc.data_files {
        put(&f.path, f.contents.as_bytes(), f.mode)?;
    }
    if let Some(rel) = &desc.status_file {
        let st = plan::factory_status(
            slots,
            image_hashes,
            &Factory {
                compatible: manifest.compatible.clone(),
                version: manifest.version.to_string(),
                manifest_sha256,
                at: now,
            },
        );
        let text = st
            .to_json()
            .map_err(|e| anyhow!("cannot encode the factory status record: {e}"))?;
        put(rel, text.as_bytes(), 0o644)?;
    }
    Ok(())
}

/// The ext4 superblock's magic, read back from the disk.
fn check_ext4(disk: &mut dyn SlotDevice, offset: u64) -> Result<()> {
    let mut buf = AlignedBuf::new(4096);
    disk.read_at(offset, buf.as_mut_slice())
        .with_context(|| format!("cannot read offset {offset}"))?;
    let b = buf.as_slice();
    if b[1024 + 56..1024 + 58] != [0x53, 0xef] {
        bail!("no ext4 superblock at offset {offset}");
    }
    Ok(())
}

/// Writes the backup GPT, the primary GPT and, last, the protective MBR, flushing in
/// between: until the MBR is written firmware sees no GPT.
fn write_table(disk: &mut dyn SlotDevice, enc: &Encoded) -> Result<()> {
    disk.write_at(enc.backup_offset, &enc.backup)
        .with_context(|| {
            format!(
                "cannot write the backup GPT at offset {}",
                enc.backup_offset
            )
        })?;
    disk.write_at(enc.primary_offset, &enc.primary)
        .with_context(|| {
            format!(
                "cannot write the primary GPT at offset {}",
                enc.primary_offset
            )
        })?;
    disk.sync().context("cannot flush")?;
    failpoint::hit("provision-mid-table");
    disk.write_at(0, &enc.mbr)
        .context("cannot write the protective MBR at offset 0")?;
    disk.sync().context("cannot flush")?;
    Ok(())
}

/// What the outcome says about each partition.
fn partition_reports(desc: &Provision, table: &Plan, slots: &[SlotTarget]) -> Vec<PartitionReport> {
    table
        .partitions
        .iter()
        .zip(&desc.partitions)
        .enumerate()
        .map(|(i, (p, spec))| {
            let slot = slots.iter().find(|s| s.partition == i);
            PartitionReport {
                number: p.number,
                label: p.label.clone(),
                role: match spec.role {
                    PartitionRole::Esp => "esp",
                    PartitionRole::Slot => "slot",
                    PartitionRole::Data => "data",
                }
                .to_string(),
                offset: p.offset(table.sector_size),
                size: p.len(table.sector_size),
                type_guid: p.type_guid.to_string(),
                guid: p.unique_guid.to_string(),
                slot: slot.map(|s| s.name.clone()),
                bootname: slot.map(|s| s.bootname.clone()),
                written: match spec.role {
                    PartitionRole::Slot => slot.is_some_and(|s| s.write),
                    _ => true,
                },
            }
        })
        .collect()
}
