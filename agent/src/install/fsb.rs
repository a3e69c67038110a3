//! Installing a flipslot bundle (`.fsb`): [`install`] verifies it and hands a
//! `FlipslotWriter` to the shared install steps. The writer runs the two data paths, each
//! a pipeline of threads over a small pool of aligned buffers: bundle → slot (a reader
//! thread reads chunks as stored, two threads check them against the manifest's chunk hash
//! and decompress zstd chunks, the caller's thread writes them in order) and slot → check
//! (`install::readback`, each chunk against its signed hash). Memory while writing is three
//! chunk buffers (four for SHA-256 bundles; two plus two stored chunks for zstd), whatever
//! the image size.

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
use std::sync::mpsc::{channel, sync_channel, Receiver};
use std::sync::{Condvar, Mutex};

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

/// Aligned chunk buffers in flight while writing. Three (one being read, one being checked,
/// one being written) keep an uncompressed BLAKE3 pipeline busy: checking a chunk takes a
/// fraction of writing it. SHA-256 (format 1) images keep a fourth so both checkers can
/// hash at once. A zstd image reads into stored buffers of its own, so two suffice (one
/// being decompressed into, one being written); this keeps its peak memory under that of
/// an uncompressed install.
fn units_in_flight(alg: ChunkHash, compression: Compression) -> usize {
    match (alg, compression) {
        (_, Compression::Zstd) => 2,
        (ChunkHash::Blake3, Compression::None) => 3,
        (ChunkHash::Sha256, Compression::None) => 4,
    }
}

/// Stored (compressed) chunks in flight: one being read, one being decompressed.
const STORED_IN_FLIGHT: usize = 2;

/// A chunk as read from the bundle: its bytes straight in the aligned buffer that will be
/// written (uncompressed images), or its stored bytes (compressed images).
enum Data {
    Raw(AlignedBuf),
    Stored(Vec<u8>),
}

/// A chunk on its way from the bundle to the slot: read but not yet checked.
struct Pending {
    index: usize,
    data: Data,
}

/// A chunk checked against the signed manifest, ready to be written.
struct Checked {
    index: usize,
    buf: AlignedBuf,
    len: usize,
}

/// Hands out the aligned buffers to the checkers of a compressed image in chunk order, so
/// that later chunks can never hold every buffer while the next one to be written waits.
struct InOrder {
    turn: Mutex<usize>,
    cv: Condvar,
}

impl InOrder {
    /// Waits until it is chunk `index`'s turn, then takes a buffer from `free`.
    fn take(&self, index: usize, free: &Mutex<Receiver<AlignedBuf>>) -> Option<AlignedBuf> {
        let mut turn = self.turn.lock().ok()?;
        while *turn != index {
            turn = self.cv.wait(turn).ok()?;
        }
        let buf = free.lock().ok()?.recv().ok();
        *turn += 1;
        self.cv.notify_all();
        buf
    }
}

/// Writes image `image` of `bundle` to `dev` from offset 0, every chunk verified before it
/// is written. A reader thread reads chunks as stored (no hashing, no decompression), two
/// threads check them against the signed manifest (compressed ones: stored hash, then
/// decompression, then the hash of the result), and this thread writes them in order, so
/// neither hashing nor decompression is limited to one core. The last chunk is padded with
/// zeros to a 4 KiB boundary when the device has room, so every write can use direct I/O.
/// Memory is a few chunk buffers (`units_in_flight`, plus `STORED_IN_FLIGHT` stored
/// chunks when compressed), whatever the image size. Reports bytes written.
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
    let (free_tx, free_rx) = pool(units, || AlignedBuf::new(img.chunk_size as usize));
    let (stored_tx, stored_rx) = pool(STORED_IN_FLIGHT, Vec::new);
    let free_rx = Mutex::new(free_rx);
    let in_order = InOrder {
        turn: Mutex::new(0),
        cv: Condvar::new(),
    };
    let (checked_tx, checked_rx) = channel::<Result<Checked>>();
    let read_rx = Mutex::new(read_rx);
    let stop = AtomicBool::new(false);
    let img = &img;
    std::thread::scope(|s| {
        let stop = &stop;
        let read_rx = &read_rx;
        let free_rx = &free_rx;
        let in_order = &in_order;
        s.spawn(move || {
            for index in 0..img.chunks.len() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let read = match img.compression {
                    Compression::None => {
                        let next = free_rx.lock().ok().and_then(|rx| rx.recv().ok());
                        let Some(mut buf) = next else { return };
                        bundle
                            .read_chunk_unchecked(image, index, buf.as_mut_slice())
                            .map(|_| Data::Raw(buf))
                    }
                    Compression::Zstd => {
                        let Ok(mut stored) = stored_rx.recv() else {
                            return;
                        };
                        bundle
                            .read_stored(image, index, &mut stored)
                            .map(|()| Data::Stored(stored))
                    }
                };
                let msg = read
                    .map_err(anyhow::Error::from)
                    .map(|data| Pending { index, data });
                let failed = msg.is_err();
                if read_tx.send(msg).is_err() || failed {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        for _ in 0..CHECKERS {
            let checked_tx = checked_tx.clone();
            let free_tx = free_tx.clone();
            let stored_tx = stored_tx.clone();
            s.spawn(move || loop {
                // The lock is held only while waiting for the next chunk.
                let msg = match read_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(msg) = msg else { return };
                let msg = msg.and_then(|Pending { index, data }| match data {
                    Data::Raw(buf) => {
                        let len = img.chunk_len(index) as usize;
                        let checked = check_chunk(
                            alg,
                            img,
                            image,
                            index,
                            payload_offset,
                            &buf.as_slice()[..len],
                        );
                        match checked {
                            Ok(()) => Ok(Checked { index, buf, len }),
                            Err(e) => {
                                free_tx.send(buf).ok();
                                Err(e.into())
                            }
                        }
                    }
                    Data::Stored(stored) => {
                        let Some(mut buf) = in_order.take(index, free_rx) else {
                            return Err(anyhow!("the install pipeline stopped"));
                        };
                        let decoded = decode_chunk(
                            alg,
                            img,
                            image,
                            index,
                            payload_offset,
                            &stored,
                            buf.as_mut_slice(),
                        );
                        // Never blocks: the pool holds at most STORED_IN_FLIGHT buffers.
                        stored_tx.send(stored).ok();
                        match decoded {
                            Ok(len) => Ok(Checked { index, buf, len }),
                            Err(e) => {
                                free_tx.send(buf).ok();
                                Err(e.into())
                            }
                        }
                    }
                });
                checked_tx.send(msg).ok();
            });
        }
        drop(stored_tx);
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
                free_tx.send(p.buf).ok();
                continue;
            }
            waiting.insert(p.index, p);
            while let Some(p) = waiting.remove(&next) {
                let written = write_chunk(dev, dev_size, pos, &p.buf, p.len);
                free_tx.send(p.buf).ok();
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
                    free_tx.send(p.buf).ok();
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
/// manifest's chunk hash) in the signed manifest, through `readback::verify_chunks`. The chunk
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
