//! Installing a RAUC bundle (`.raucb`): [`install_rauc`] checks it against a
//! [`RaucTrust`] and hands a `RaucWriter` to the shared steps. The writer streams an image
//! out of the bundle's squashfs into a slot and reads the slot back against hashes taken
//! while writing (flipslot's own bundles use the per-chunk pipeline in
//! [`crate::install::fsb`]).
//!
//! What proves the bytes: every byte the squashfs reader sees has been checked against the
//! signature before it is handed out (a verity bundle's blocks against the signed hash
//! tree as they are read, on two threads; a plain bundle's 4 MiB blocks against BLAKE3
//! hashes taken in the same pass as the signature's SHA-256). The image is a file inside
//! that signed squashfs, so the manifest's SHA-256 of it would prove only that the
//! squashfs reader decoded what `rauc bundle` packed: it is not computed on the device
//! (`flipslot-image verify` checks it on the build host) and is recorded in the status
//! file as the signed manifest's value. The read-back checks the slot against BLAKE3
//! hashes of every [`HASH_CHUNK`] written, taken on a thread of their own while writing.
//!
//! Three threads over a pool of four [`CHUNK`]-sized aligned buffers: the caller's thread
//! reads (decompressing and checking blocks), one thread hashes each chunk, one writes in
//! order with direct I/O. The caller keeps the slot marked bad until the image is written,
//! flushed and read back.

use std::io::Read;
use std::sync::mpsc::sync_channel;

use anyhow::{anyhow, bail, Context, Result};

use crate::install::plan::Target;
use crate::install::pool::{buffer_pool, write_chunk};
use crate::install::readback::verify_chunks;
use crate::install::{
    steps, ImageWriter, InstallEnv, InstallOptions, InstallOutcome, InstalledImage, Progress,
    Verified,
};
use crate::slot::device::{AlignedBuf, SlotDevice};
use flipslot_format::source::ByteSource;
use flipslot_rauc::bundle::RaucBundle;

/// The X.509 trust a RAUC bundle is checked against.
#[derive(Debug)]
pub struct RaucTrust<'a> {
    /// Trusted certificates.
    pub store: &'a flipslot_rauc::x509::TrustStore,
    /// Purpose, partial chains, allowed signers, signing time.
    pub options: &'a flipslot_rauc::x509::VerifyOptions,
    /// Which bundle formats are accepted.
    pub formats: flipslot_rauc::bundle::AllowedFormats,
}

/// Installs the RAUC bundle (`.raucb`) read from `source`, with the same steps and
/// guarantees as [`crate::install::install`]: its CMS signature is verified against
/// `trust` before anything is parsed, every block of the payload is checked against the
/// signature (hash tree or block hashes) as it is read and written, the slot is read back
/// against hashes of what was written, and it is activated only after all of that. A
/// damaged verity bundle fails while it is written; the target then stays marked bad.
pub fn install_rauc<S: ByteSource + Send>(
    env: &mut InstallEnv<'_>,
    trust: &RaucTrust<'_>,
    source: S,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let what = source.describe();
    let now = env.clock.now_unix();
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    let mut bundle = RaucBundle::open(
        source,
        trust.store,
        trust.options,
        trust.formats,
        now,
        &mut |d, n| progress.update("verify signature", d, n),
    )
    .with_context(|| format!("bundle {what} rejected"))?;
    log::info!(
        "bundle {what}: {} bundle signed by {}",
        bundle.manifest().format.as_str(),
        bundle.signer().subject
    );
    let mut writer = RaucWriter {
        bundle: &mut bundle,
    };
    steps::run(env, &what, &mut writer, opts, progress)
}

/// Writes the images of a verified RAUC bundle and reads them back against hashes taken
/// while writing.
struct RaucWriter<'b, S: ByteSource + Send> {
    bundle: &'b mut RaucBundle<S>,
}

impl<S: ByteSource + Send> ImageWriter for RaucWriter<'_, S> {
    fn verified(&self) -> Verified {
        let m = self.bundle.manifest();
        let images = m
            .images
            .iter()
            .map(|i| (i.class.as_str(), i.size, i.sha256));
        Verified::new(
            &m.compatible,
            m.version.clone().unwrap_or_default(),
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
        let phase = format!("write {}", t.slot.name);
        // The bytes come through the bundle's checks (every verity block against the
        // tree, every plain block against the hashes taken with the signature), so they
        // are the signed ones; the hashes taken now only say what reached the slot.
        let mut result: Option<Result<Vec<ChunkHash>>> = None;
        self.bundle
            .with_image_reader(t.image, |r| {
                result = Some(write_from_reader(
                    r,
                    img.size,
                    &img.filename,
                    &mut *dev,
                    opts.read_back,
                    &mut |d, n| progress.update(&phase, d, n),
                ));
                Ok(())
            })
            .with_context(|| format!("cannot read image {} from the bundle", img.filename))?;
        let hashes = result.context("the image was not read")??;
        dev.sync()
            .with_context(|| format!("cannot flush slot device {}", dev.path().display()))?;
        if opts.read_back {
            let phase = format!("read-back {}", t.slot.name);
            verify_written(dev, img.size, &hashes, &mut |d, n| {
                progress.update(&phase, d, n)
            })
            .with_context(|| {
                format!(
                    "read-back of slot {} ({}) does not match the image",
                    t.slot.name,
                    dev.path().display()
                )
            })?;
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

/// Bytes per buffer (a multiple of 4 KiB).
pub const CHUNK: usize = 1 << 20;
/// Bytes per hash taken while writing, and the read-back's chunk size: `CHUNKS_PER_HASH`
/// buffers.
pub const HASH_CHUNK: u32 = 4 << 20;
/// Buffers hashed into one [`HASH_CHUNK`] hash.
const CHUNKS_PER_HASH: usize = HASH_CHUNK as usize / CHUNK;
/// Buffers in flight: one being read, one being hashed, two being written. Small buffers
/// keep peak memory low while the bundle's own reads hold a 4 MiB block of the payload.
const POOL: usize = 4;

/// The BLAKE3 hash of one [`HASH_CHUNK`] of an image as it was written.
pub type ChunkHash = [u8; 32];

/// Fills `buf` from `r` until it is full or the reader ends; returns the bytes read.
fn fill(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Writes exactly `size` bytes from `r` to `dev` from offset 0; with `hash`, also returns
/// the BLAKE3 hash of every [`HASH_CHUNK`] of them (the last one shorter), taken on a
/// thread of its own, for [`verify_written`]. `what` names the image in errors;
/// `progress(done, size)` follows the bytes read.
///
/// Memory: `POOL` buffers of [`CHUNK`] bytes, plus the hashes: 32 bytes per 4 MiB of an
/// image no larger than the slot (checked first), so 8 KiB per GiB.
pub fn write_from_reader(
    r: &mut dyn Read,
    size: u64,
    what: &str,
    dev: &mut dyn SlotDevice,
    hash: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<ChunkHash>> {
    let dev_size = dev.size();
    if size > dev_size {
        bail!(
            "{what} ({size} bytes) does not fit {} ({dev_size} bytes)",
            dev.path().display()
        );
    }
    let (free_tx, free_rx) = buffer_pool(POOL, CHUNK);
    let (hash_tx, hash_rx) = sync_channel::<(AlignedBuf, usize)>(POOL);
    let (write_tx, write_rx) = sync_channel::<(AlignedBuf, usize)>(POOL);
    std::thread::scope(|s| {
        let hasher = s.spawn(move || {
            let mut hashes = Vec::new();
            // Every buffer but the last is a whole CHUNK, so every hash but the last
            // covers exactly HASH_CHUNK bytes.
            let mut state = blake3::Hasher::new();
            let mut in_state = 0usize;
            for (buf, len) in hash_rx {
                if hash {
                    state.update(&buf.as_slice()[..len]);
                    in_state += 1;
                    if in_state == CHUNKS_PER_HASH {
                        hashes.push(*state.finalize().as_bytes());
                        state.reset();
                        in_state = 0;
                    }
                }
                if write_tx.send((buf, len)).is_err() {
                    break;
                }
            }
            if hash && in_state > 0 {
                hashes.push(*state.finalize().as_bytes());
            }
            hashes
        });
        let free_back = free_tx.clone();
        let writer = s.spawn(move || -> Result<u64> {
            let mut pos = 0u64;
            for (buf, len) in write_rx {
                write_chunk(dev, dev_size, pos, &buf, len)?;
                let before = pos;
                pos += len as u64;
                free_back.send(buf).ok();
                if before < size / 2 && pos >= size / 2 {
                    crate::host::failpoint::hit("install-mid-write");
                }
            }
            Ok(pos)
        });

        let mut done = 0u64;
        let mut read_err = None;
        while done < size {
            let Ok(mut buf) = free_rx.recv() else { break };
            let want = usize::try_from(size - done).map_or(CHUNK, |l| l.min(CHUNK));
            match fill(r, &mut buf.as_mut_slice()[..want]) {
                Ok(n) if n == want => {}
                Ok(n) => {
                    read_err = Some(anyhow!(
                        "{what} ended after {} of {size} bytes",
                        done + n as u64
                    ));
                    break;
                }
                Err(e) => {
                    read_err = Some(
                        anyhow::Error::new(e)
                            .context(format!("cannot read {what} at image offset {done}")),
                    );
                    break;
                }
            }
            done += want as u64;
            if hash_tx.send((buf, want)).is_err() {
                break;
            }
            progress(done, size);
        }
        drop(hash_tx);
        drop(free_rx);
        let hashes = hasher
            .join()
            .map_err(|_| anyhow!("the hashing thread panicked"))?;
        let written = writer
            .join()
            .map_err(|_| anyhow!("the writing thread panicked"))??;
        if let Some(e) = read_err {
            return Err(e);
        }
        if written != size {
            bail!("wrote {written} bytes of the {size}-byte {what}");
        }
        Ok(hashes)
    })
}

/// Reads `size` bytes back from `dev` through `readback::verify_chunks` and checks every
/// [`HASH_CHUNK`] against the hash [`write_from_reader`] took of it; the first chunk that
/// differs is named with its offset.
pub fn verify_written(
    dev: &mut dyn SlotDevice,
    size: u64,
    hashes: &[ChunkHash],
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    if (hashes.len() as u64) != size.div_ceil(u64::from(HASH_CHUNK)) {
        bail!(
            "{} chunk hashes were taken of a {size}-byte image",
            hashes.len()
        );
    }
    let check = |i: usize, data: &[u8]| hashes.get(i) == Some(blake3::hash(data).as_bytes());
    verify_chunks(dev, size, HASH_CHUNK, &check, progress)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::device::MemDevice;

    fn dev(len: usize) -> MemDevice {
        MemDevice::new(len, 0xAA)
    }

    fn image(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 % 251) as u8).collect()
    }

    #[test]
    fn writes_hashes_every_chunk_and_reads_back() {
        const HC: usize = HASH_CHUNK as usize;
        let image = image(3 * HC + 1234);
        let mut d = dev(4 * HC);
        let mut seen = 0;
        let hashes = write_from_reader(
            &mut image.as_slice(),
            image.len() as u64,
            "rootfs.img",
            &mut d,
            true,
            &mut |done, _| seen = done,
        )
        .unwrap();
        assert_eq!(seen, image.len() as u64);
        assert_eq!(hashes.len(), 4);
        for (h, chunk) in hashes.iter().zip(image.chunks(HC)) {
            assert_eq!(h, blake3::hash(chunk).as_bytes());
        }
        assert_eq!(&d.data[..image.len()], &image[..]);
        let mut last = 0;
        verify_written(&mut d, image.len() as u64, &hashes, &mut |n, _| last = n).unwrap();
        assert_eq!(last, image.len() as u64);
        // Bytes past the image do not count.
        d.data[image.len() + 10] ^= 1;
        verify_written(&mut d, image.len() as u64, &hashes, &mut |_, _| {}).unwrap();
    }

    #[test]
    fn read_back_names_the_chunk_and_offset_that_changed() {
        const HC: usize = HASH_CHUNK as usize;
        let image = image(3 * HC + 1234);
        let mut d = dev(4 * HC);
        let size = image.len() as u64;
        let hashes = write_from_reader(
            &mut image.as_slice(),
            size,
            "img",
            &mut d,
            true,
            &mut |_, _| {},
        )
        .unwrap();
        for at in [5, 2 * HC + 77, image.len() - 1] {
            d.data[at] ^= 0x10;
            let e = verify_written(&mut d, size, &hashes, &mut |_, _| {}).unwrap_err();
            let chunk = at / HC;
            let want = format!("chunk {chunk} ");
            let offset = format!("offset {}", chunk * HC);
            let e = format!("{e:#}");
            assert!(e.contains(&want) && e.contains(&offset), "{e}");
            d.data[at] ^= 0x10;
        }
        verify_written(&mut d, size, &hashes, &mut |_, _| {}).unwrap();
        // Hashes of another image size are refused, not half-checked.
        let e = verify_written(&mut d, size + HC as u64, &hashes, &mut |_, _| {}).unwrap_err();
        assert!(format!("{e:#}").contains("4 chunk hashes"), "{e:#}");
    }

    #[test]
    fn without_read_back_no_hashes_are_taken() {
        let image = image(CHUNK + 1);
        let mut d = dev(2 * CHUNK);
        let hashes = write_from_reader(
            &mut image.as_slice(),
            image.len() as u64,
            "img",
            &mut d,
            false,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(hashes.is_empty());
        assert_eq!(&d.data[..image.len()], &image[..]);
    }

    #[test]
    fn short_reader_and_small_device_fail() {
        let image = vec![1u8; 5000];
        let mut d = dev(2 * CHUNK);
        let e = write_from_reader(
            &mut image.as_slice(),
            9000,
            "img",
            &mut d,
            false,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(
            format!("{e:#}").contains("ended after 5000 of 9000"),
            "{e:#}"
        );
        let mut small = dev(4096);
        let e = write_from_reader(
            &mut image.as_slice(),
            5000,
            "img",
            &mut small,
            false,
            &mut |_, _| {},
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("does not fit"), "{e:#}");
    }
}
