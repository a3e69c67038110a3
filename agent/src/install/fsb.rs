//! Installing a flipslot bundle (`.fsb`): [`install`] verifies it and hands a
//! `FlipslotWriter` to the shared install steps. The writer runs the two data paths, each
//! a pipeline of threads over a small pool of aligned buffers: bundle → slot (a reader
//! thread reads chunks as stored, two threads check them against the manifest's chunk hash
//! and decompress zstd chunks, the caller's thread writes them in order) and slot → check
//! ([`crate::install::readback`], each chunk against its signed hash). Memory is three or
//! four chunk buffers (plus their stored bytes when compressed), whatever the image size.

use crate::install::plan::Target;
use crate::install::pool::{pool, write_chunk};
use crate::install::readback::verify_chunks;
use crate::install::{
    steps, ImageWriter, InstallEnv, InstallOptions, InstallOutcome, InstalledImage, Progress,
    Verified,
};
use crate::slot::device::{AlignedBuf, SlotDevice};
use anyhow::{anyhow, bail, Context, Result};
use flipslot_format::manifest::{ChunkHash, Compression, Image};
use flipslot_format::reader::{check_chunk, decode_chunk};
use flipslot_format::source::ByteSource;
use flipslot_format::{Bundle, Keyring, VerifyPolicy};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

/// Installs the flipslot bundle read from `source`, verified against `keyring`. On
/// error nothing about the booted slot or the bootloader's primary slot has changed; a
/// target that was being written stays marked bad.
pub fn install<S: ByteSource + Send>(
    env: &mut InstallEnv<'_>,
    keyring: &Keyring,
    source: S,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let what = source.describe();
    let policy = VerifyPolicy {
        min_signatures: env.cfg.min_signatures,
    };
    let mut bundle = Bundle::open(source, keyring, &policy)
        .with_context(|| format!("bundle {what} rejected"))?;
    if let Some(want) = opts.expected_manifest_sha256 {
        let got = bundle.manifest_sha256();
        if got != want {
            bail!(
                "bundle {what} rejected: its manifest has sha256 {}, but {} was expected \
                 (the channel names another bundle)",
                got.to_hex(),
                want.to_hex()
            );
        }
    }
    let mut writer = FlipslotWriter {
        bundle: &mut bundle,
    };
    steps::run(env, &what, &mut writer, opts, progress)
}

/// Writes the images of a verified flipslot bundle, every chunk checked before it is
/// written and again on read-back.
struct FlipslotWriter<'b, S: ByteSource + Send> {
    bundle: &'b mut Bundle<S>,
}

impl<S: ByteSource + Send> ImageWriter for FlipslotWriter<'_, S> {
    fn verified(&self) -> Verified {
        let m = self.bundle.manifest();
        let images = m
            .images
            .iter()
            .map(|i| (i.class.as_str(), i.size, i.sha256));
        Verified::new(
            &m.compatible,
            m.version.to_string(),
            images,
            self.bundle.manifest_sha256(),
        )
    }

    fn write(
        &mut self,
        t: &Target,
        dev: &mut dyn SlotDevice,
        opts: &InstallOptions,
        progress: &mut dyn Progress,
    ) -> Result<InstalledImage> {
        let img = self.bundle.manifest().images[t.image].clone();
        let alg = self.bundle.manifest().chunk_hash();
        let phase = format!("write {}", t.slot.name);
        write_image(self.bundle, t.image, dev, &mut |d, n| {
            progress.update(&phase, d, n)
        })?;
        dev.sync()
            .with_context(|| format!("cannot flush slot device {}", dev.path().display()))?;
        if opts.read_back {
            let phase = format!("read-back {}", t.slot.name);
            verify_device(dev, alg, &img, &mut |d, n| progress.update(&phase, d, n)).with_context(
                || {
                    format!(
                        "read-back of slot {} ({}) does not match the image",
                        t.slot.name,
                        dev.path().display()
                    )
                },
            )?;
        }
        Ok(InstalledImage {
            class: img.class.clone(),
            slot: t.slot.name.clone(),
            device: t.slot.device.clone(),
            size: img.size,
            sha256: img.sha256,
            io: Some(dev.io_mode()),
        })
    }
}

/// Threads checking (and, for compressed images, decompressing) chunks.
const CHECKERS: usize = 2;

/// Chunks in flight while writing. Three (one being read, one being checked, one being
/// written) keep a BLAKE3 pipeline busy: checking a chunk takes a fraction of writing it,
/// and a zstd chunk's decompression overlaps the next chunk's read and the last one's
/// write. SHA-256 (format 1) images keep a fourth so both checkers can hash at once.
fn units_in_flight(alg: ChunkHash, _compression: Compression) -> usize {
    match alg {
        ChunkHash::Blake3 => 3,
        ChunkHash::Sha256 => 4,
    }
}

/// One chunk's buffers: the aligned buffer that is written to the slot and, for compressed
/// images, the stored bytes it is decompressed from (grown to the largest stored chunk).
struct Unit {
    buf: AlignedBuf,
    stored: Vec<u8>,
}

/// A chunk on its way from the bundle to the slot: read but not yet checked.
struct Pending {
    index: usize,
    unit: Unit,
}

/// A chunk checked against the signed manifest, ready to be written.
struct Checked {
    index: usize,
    unit: Unit,
    len: usize,
}

/// Writes image `image` of `bundle` to `dev` from offset 0, every chunk verified before it
/// is written. A reader thread reads chunks as stored (no hashing, no decompression), two
/// threads check them against the signed manifest (compressed ones: stored hash, then
/// decompression, then the hash of the result), and this thread writes them in order, so
/// neither hashing nor decompression is limited to one core. The last chunk is padded with
/// zeros to a 4 KiB boundary when the device has room, so every write can use direct I/O.
/// Memory is a few chunk buffers ([`units_in_flight`]), whatever the image size. Reports
/// bytes written.
pub fn write_image<S: ByteSource + Send>(
    bundle: &mut Bundle<S>,
    image: usize,
    dev: &mut dyn SlotDevice,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let img = bundle
        .manifest()
        .images
        .get(image)
        .ok_or_else(|| anyhow!("bundle has no image {image}"))?
        .clone();
    let payload_offset = bundle.payload_offset();
    let alg = bundle.manifest().chunk_hash();
    let total = img.size;
    let dev_size = dev.size();
    let units = units_in_flight(alg, img.compression);
    let (read_tx, read_rx) = sync_channel::<Result<Pending>>(units);
    let (free_tx, free_rx) = pool(units, || Unit {
        buf: AlignedBuf::new(img.chunk_size as usize),
        stored: Vec::new(),
    });
    let (checked_tx, checked_rx) = channel::<Result<Checked>>();
    let read_rx = Mutex::new(read_rx);
    let stop = AtomicBool::new(false);
    let img = &img;
    std::thread::scope(|s| {
        let stop = &stop;
        let read_rx = &read_rx;
        s.spawn(move || {
            for index in 0..img.chunks.len() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut unit) = free_rx.recv() else { return };
                let read = match img.compression {
                    Compression::None => bundle
                        .read_chunk_unchecked(image, index, unit.buf.as_mut_slice())
                        .map(drop),
                    Compression::Zstd => bundle.read_stored(image, index, &mut unit.stored),
                };
                let msg = read
                    .map_err(anyhow::Error::from)
                    .map(|()| Pending { index, unit });
                let failed = msg.is_err();
                if read_tx.send(msg).is_err() || failed {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        for _ in 0..CHECKERS {
            let checked_tx = checked_tx.clone();
            s.spawn(move || loop {
                // The lock is held only while waiting for the next chunk.
                let msg = match read_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(msg) = msg else { return };
                let msg = msg.and_then(|p| {
                    let Pending { index, mut unit } = p;
                    let len = match img.compression {
                        Compression::None => {
                            let len = img.chunk_len(index) as usize;
                            let data = &unit.buf.as_slice()[..len];
                            check_chunk(alg, img, image, index, payload_offset, data)?;
                            len
                        }
                        Compression::Zstd => decode_chunk(
                            alg,
                            img,
                            image,
                            index,
                            payload_offset,
                            &unit.stored,
                            unit.buf.as_mut_slice(),
                        )?,
                    };
                    Ok(Checked { index, unit, len })
                });
                checked_tx.send(msg).ok();
            });
        }
        drop(checked_tx);

        // Write in order; on the first error stop the others, but keep returning buffers
        // until they have stopped, so nobody waits for one.
        let mut waiting = std::collections::BTreeMap::new();
        let mut next = 0usize;
        let mut pos = 0u64;
        let mut first_err: Option<anyhow::Error> = None;
        for msg in checked_rx {
            let p = match msg {
                Ok(p) => p,
                Err(e) => {
                    stop.store(true, Ordering::Relaxed);
                    first_err.get_or_insert(e);
                    continue;
                }
            };
            if first_err.is_some() {
                free_tx.send(p.unit).ok();
                continue;
            }
            waiting.insert(p.index, p);
            while let Some(p) = waiting.remove(&next) {
                let written = write_chunk(dev, dev_size, pos, &p.unit.buf, p.len);
                free_tx.send(p.unit).ok();
                if let Err(e) = written {
                    stop.store(true, Ordering::Relaxed);
                    first_err = Some(e);
                    break;
                }
                pos += p.len as u64;
                next += 1;
                progress(pos, total);
                if pos >= total / 2 && pos - (p.len as u64) < total / 2 {
                    crate::host::failpoint::hit("install-mid-write");
                }
            }
            if first_err.is_some() {
                for (_, p) in std::mem::take(&mut waiting) {
                    free_tx.send(p.unit).ok();
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        if pos != total {
            return Err(anyhow!("wrote {pos} bytes of a {total}-byte image"));
        }
        Ok(())
    })
}

/// Reads an image back from `dev` and checks every chunk against its hash (`alg`, the
/// manifest's chunk hash) in the signed manifest, through [`verify_chunks`]. The chunk
/// hashes together fix the whole image, so there is no second whole-image pass. The first
/// chunk that differs is named with its offset.
pub fn verify_device(
    dev: &mut dyn SlotDevice,
    alg: ChunkHash,
    img: &Image,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let check = |i: usize, data: &[u8]| img.chunks.get(i).is_some_and(|c| c.matches(alg, data));
    verify_chunks(dev, img.size, img.chunk_size, &check, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::device::MemDevice;
    use flipslot_format::builder::{build, BuildOptions, ImageInput};
    use flipslot_format::source::FileSource;
    use flipslot_format::{keys, Compression, Keyring, VerifyPolicy};
    use std::path::PathBuf;

    #[test]
    fn write_then_verify_and_detect_a_changed_chunk() {
        for alg in [ChunkHash::Blake3, ChunkHash::Sha256] {
            write_then_verify(alg);
        }
    }

    fn write_then_verify(alg: ChunkHash) {
        let dir = tempfile::tempdir().unwrap();
        let key = keys::generate().unwrap();
        let image: Vec<u8> = (0..200_000u32).map(|i| (i * 31 % 253) as u8).collect();
        std::fs::write(dir.path().join("img"), &image).unwrap();
        let opts = BuildOptions {
            compatible: "t".into(),
            version: semver::Version::new(1, 0, 0),
            build_time: 0,
            description: None,
            chunk_size: 65536,
            compression: Compression::Zstd,
            zstd_level: 3,
            block_index: false,
            chunk_hash: alg,
        };
        let input = ImageInput {
            class: "rootfs".into(),
            path: dir.path().join("img"),
        };
        build(
            &[input],
            &opts,
            std::slice::from_ref(&key),
            &mut std::fs::File::create(dir.path().join("b.fsb")).unwrap(),
            &mut |_, _, _| {},
        )
        .unwrap();
        let ring = Keyring::from_keys([(key.verifying_key(), PathBuf::from("k"))]);
        let src = FileSource::open(&dir.path().join("b.fsb")).unwrap();
        let mut bundle = Bundle::open(src, &ring, &VerifyPolicy::default()).unwrap();
        let mut dev = MemDevice {
            data: vec![0xee; 300_000],
            path: PathBuf::from("/dev/mem-slot"),
        };
        write_image(&mut bundle, 0, &mut dev, &mut |_, _| {}).unwrap();
        assert_eq!(&dev.data[..image.len()], &image[..]);
        let img = bundle.manifest().images[0].clone();
        assert_eq!(bundle.manifest().chunk_hash(), alg);
        let mut seen = 0;
        verify_device(&mut dev, alg, &img, &mut |d, _| seen = d).unwrap();
        assert_eq!(seen, image.len() as u64);
        dev.data[2 * 65536 + 5] ^= 1;
        let err = verify_device(&mut dev, alg, &img, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chunk 2") && err.contains("offset 131072"),
            "{err}"
        );

        // A flipped byte in chunk 2's stored (compressed) bytes: found by a checker before
        // the chunk is decompressed; nothing from chunk 2 on reaches the slot.
        let mut bytes = std::fs::read(dir.path().join("b.fsb")).unwrap();
        let c = &img.chunks[2];
        let at = bundle.payload_offset() + c.offset + c.stored_size / 2;
        bytes[at as usize] ^= 0x20;
        std::fs::write(dir.path().join("bad.fsb"), &bytes).unwrap();
        let src = FileSource::open(&dir.path().join("bad.fsb")).unwrap();
        let mut bad = Bundle::open(src, &ring, &VerifyPolicy::default()).unwrap();
        let mut dev = MemDevice::new(300_000, 0xee);
        let err = write_image(&mut bad, 0, &mut dev, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("chunk 2") && err.contains(&format!("{alg} mismatch")),
            "{err}"
        );
        assert!(dev.data[2 * 65536..].iter().all(|&b| b == 0xee));
    }
}
