//! Installing a RAUC bundle (`.raucb`): [`install_rauc`] checks it against a
//! [`RaucTrust`] and hands a `RaucWriter` to the shared steps. The writer streams an image
//! from a plain reader into a slot while hashing it, and reads a slot back against a
//! whole-image SHA-256: a RAUC bundle's images are files in its squashfs with one SHA-256
//! each in the signed manifest (flipslot's own bundles use the per-chunk pipeline in
//! [`crate::install::fsb`]).
//!
//! Three threads over a pool of four 1 MiB aligned buffers: the caller's thread reads
//! (decompressing and, for verity bundles, checking blocks against the hash tree), one
//! thread hashes, one writes in order with direct I/O. The written image counts only if
//! its hash matches the manifest; the caller keeps the slot marked bad until then.

use std::io::Read;
use std::sync::mpsc::sync_channel;

use anyhow::{anyhow, bail, Context, Result};
use flipslot_format::Sha256Digest;
use sha2::{Digest, Sha256};

use crate::install::plan::Target;
use crate::install::pool::{buffer_pool, write_chunk};
use crate::install::{
    steps, ImageWriter, InstallEnv, InstallOptions, InstallOutcome, InstalledImage, Progress,
    Verified,
};
use crate::slot::device::{AlignedBuf, SlotDevice, IO_ALIGN};
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
/// guarantees as [`crate::install::install`]: its CMS signature (and hash tree) is verified against
/// `trust` before anything is parsed, each image's SHA-256 is checked as it is written
/// and again on read-back, and the slot is activated only after all of that.
pub fn install_rauc<S: ByteSource + Send>(
    env: &mut InstallEnv<'_>,
    trust: &RaucTrust<'_>,
    source: S,
    opts: &InstallOptions,
    progress: &mut dyn Progress,
) -> Result<InstallOutcome> {
    let what = source.describe();
    let local = source.rereads_are_cheap();
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
    if local && bundle.is_verity() {
        // A local file is cheap to read twice: check every block now, so a damaged
        // bundle is refused before the target slot is touched. (Streamed bundles are
        // checked block by block as they are written; the target stays marked bad.)
        bundle
            .verify_payload(&mut |d, n| progress.update("verify payload", d, n))
            .with_context(|| format!("bundle {what} rejected"))?;
    }
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

/// Writes the images of a verified RAUC bundle, each checked against its SHA-256 in the
/// signed manifest.
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
        // are the signed ones. The manifest's SHA-256 is still checked once: on read-back,
        // or, without read-back, while writing.
        let hash_now = !opts.read_back;
        let mut result: Option<Result<Option<flipslot_format::Sha256Digest>>> = None;
        self.bundle
            .with_image_reader(t.image, |r| {
                result = Some(write_from_reader(
                    r,
                    img.size,
                    &img.filename,
                    &mut *dev,
                    hash_now,
                    &mut |d, n| progress.update(&phase, d, n),
                ));
                Ok(())
            })
            .with_context(|| format!("cannot read image {} from the bundle", img.filename))?;
        if let Some(got) = result.context("the image was not read")?? {
            if got != img.sha256 {
                bail!(
                    "image {} has sha256 {}, but the signed manifest says {}",
                    img.filename,
                    got.to_hex(),
                    img.sha256.to_hex()
                );
            }
        }
        dev.sync()
            .with_context(|| format!("cannot flush slot device {}", dev.path().display()))?;
        if opts.read_back {
            let phase = format!("read-back {}", t.slot.name);
            verify_sha256(dev, img.size, &img.sha256, &mut |d, n| {
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

/// Bytes per buffer.
const CHUNK: usize = 1 << 20;
/// Buffers in flight.
const POOL: usize = 4;

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
/// their SHA-256 (computed on a thread of its own). `what` names the image in errors;
/// `progress(done, size)` follows the bytes read.
pub fn write_from_reader(
    r: &mut dyn Read,
    size: u64,
    what: &str,
    dev: &mut dyn SlotDevice,
    hash: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Option<Sha256Digest>> {
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
            let mut h = hash.then(Sha256::new);
            for (buf, len) in hash_rx {
                if let Some(h) = h.as_mut() {
                    h.update(&buf.as_slice()[..len]);
                }
                if write_tx.send((buf, len)).is_err() {
                    break;
                }
            }
            h.map(|h| Sha256Digest(h.finalize().into()))
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
        let digest = hasher
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
        Ok(digest)
    })
}

/// Reads `size` bytes back from `dev` and checks their SHA-256 against `want`.
pub fn verify_sha256(
    dev: &mut dyn SlotDevice,
    size: u64,
    want: &Sha256Digest,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let dev_size = dev.size();
    let path = dev.path().to_path_buf();
    let (free_tx, free_rx) = buffer_pool(POOL, CHUNK);
    let (full_tx, full_rx) = sync_channel::<Result<(AlignedBuf, usize)>>(POOL);
    let got = std::thread::scope(|s| -> Result<Sha256Digest> {
        s.spawn(move || {
            let mut off = 0u64;
            while off < size {
                let Ok(mut buf) = free_rx.recv() else { return };
                let want = usize::try_from(size - off).map_or(CHUNK, |l| l.min(CHUNK));
                let padded = want.next_multiple_of(IO_ALIGN);
                let len = if off + padded as u64 <= dev_size {
                    padded
                } else {
                    want
                };
                let msg = dev
                    .read_at(off, &mut buf.as_mut_slice()[..len])
                    .with_context(|| format!("reading back {} at offset {off}", path.display()))
                    .map(|()| (buf, want));
                let failed = msg.is_err();
                if full_tx.send(msg).is_err() || failed {
                    return;
                }
                off += want as u64;
            }
        });
        let mut h = Sha256::new();
        let mut done = 0u64;
        for msg in full_rx {
            let (buf, len) = msg?;
            h.update(&buf.as_slice()[..len]);
            done += len as u64;
            free_tx.send(buf).ok();
            progress(done, size);
        }
        if done != size {
            bail!("read back {done} of {size} bytes");
        }
        Ok(Sha256Digest(h.finalize().into()))
    })?;
    if got != *want {
        bail!(
            "the slot holds sha256 {} over the image's {size} bytes, not {}",
            got.to_hex(),
            want.to_hex()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::device::MemDevice;

    fn dev(len: usize) -> MemDevice {
        MemDevice::new(len, 0xAA)
    }

    #[test]
    fn writes_hashes_and_reads_back() {
        let image: Vec<u8> = (0..(3 * CHUNK + 1234))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut d = dev(4 * CHUNK);
        let mut seen = 0;
        let digest = write_from_reader(
            &mut image.as_slice(),
            image.len() as u64,
            "rootfs.img",
            &mut d,
            true,
            &mut |done, _| seen = done,
        )
        .unwrap()
        .unwrap();
        assert_eq!(seen, image.len() as u64);
        assert_eq!(digest.0, <[u8; 32]>::from(Sha256::digest(&image)));
        assert_eq!(&d.data[..image.len()], &image[..]);
        verify_sha256(&mut d, image.len() as u64, &digest, &mut |_, _| {}).unwrap();
        d.data[CHUNK + 5] ^= 1;
        let e = verify_sha256(&mut d, image.len() as u64, &digest, &mut |_, _| {}).unwrap_err();
        assert!(format!("{e:#}").contains("not"), "{e:#}");
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
