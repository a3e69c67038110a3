//! The two data paths of an install, each a two-thread pipeline over a small pool of
//! aligned buffers: bundle → slot (a reader thread verifies chunks while the caller's
//! thread writes) and slot → hash (a reader thread reads the slot back while the caller's
//! thread hashes). Memory is three chunk buffers, whatever the image size.

use crate::device::{AlignedBuf, SlotDevice, IO_ALIGN};
use anyhow::{anyhow, Context, Result};
use flipslot_image::source::ByteSource;
use flipslot_image::{Bundle, Sha256Digest};
use sha2::{Digest, Sha256};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Buffers in flight per pipeline.
const POOL: usize = 3;
/// Read-back block size.
const READ_BACK_BLOCK: usize = 4 << 20;

type Filled = std::result::Result<(AlignedBuf, usize), anyhow::Error>;

/// Runs `produce` on a helper thread, which fills buffers of `buf_len` bytes and sends
/// them with their used length; `consume` gets each in order on this thread. Either side
/// stopping (error or end) stops the other.
fn pipeline<P, C>(buf_len: usize, produce: P, mut consume: C) -> Result<()>
where
    P: FnOnce(&Receiver<AlignedBuf>, &SyncSender<Filled>) + Send,
    C: FnMut(&AlignedBuf, usize) -> Result<()>,
{
    let (full_tx, full_rx) = sync_channel::<Filled>(POOL);
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(POOL);
    for _ in 0..POOL {
        free_tx
            .send(AlignedBuf::new(buf_len))
            .map_err(|_| anyhow!("buffer pool closed"))?;
    }
    std::thread::scope(|s| {
        let producer = s.spawn(move || produce(&free_rx, &full_tx));
        // Owning both channel ends here means returning early unblocks the producer.
        let result = (move || {
            for msg in full_rx.iter() {
                let (buf, len) = msg?;
                consume(&buf, len)?;
                // The producer may have finished; a closed pool is not an error.
                free_tx.send(buf).ok();
            }
            Ok(())
        })();
        match producer.join() {
            Ok(()) => result,
            Err(_) => Err(anyhow!("reader thread panicked")),
        }
    })
}

/// Writes image `image` of `bundle` to `dev` from offset 0, every chunk verified before it
/// is written. The last chunk is padded with zeros to a 4 KiB boundary when the device
/// has room, so every write can use direct I/O. Reports bytes written.
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
        .ok_or_else(|| anyhow!("bundle has no image {image}"))?;
    let (chunks, chunk_size, total) = (img.chunks.len(), img.chunk_size as usize, img.size);
    let dev_size = dev.size();
    let mut pos = 0u64;
    pipeline(
        chunk_size,
        |free, full| {
            let mut scratch = Vec::new();
            for i in 0..chunks {
                let Ok(mut buf) = free.recv() else { return };
                let msg = bundle
                    .read_chunk(image, i, &mut scratch, buf.as_mut_slice())
                    .map(|len| (buf, len))
                    .map_err(anyhow::Error::from);
                let failed = msg.is_err();
                if full.send(msg).is_err() || failed {
                    return;
                }
            }
        },
        |buf, len| {
            let mut write_len = len;
            let padded = len.next_multiple_of(IO_ALIGN);
            let mut padded_buf;
            let data = if padded != len && pos + padded as u64 <= dev_size {
                // Only the short last chunk: copy once into a zero-filled aligned buffer.
                padded_buf = AlignedBuf::new(padded);
                padded_buf.as_mut_slice()[..len].copy_from_slice(&buf.as_slice()[..len]);
                write_len = padded;
                padded_buf.as_slice()
            } else {
                &buf.as_slice()[..len]
            };
            dev.write_at(pos, &data[..write_len]).with_context(|| {
                format!(
                    "writing {} bytes to {} at offset {pos}",
                    write_len,
                    dev.path().display()
                )
            })?;
            pos += len as u64;
            progress(pos, total);
            if pos >= total / 2 && pos - (len as u64) < total / 2 {
                crate::failpoint::hit("install-mid-write");
            }
            Ok(())
        },
    )?;
    if pos != total {
        return Err(anyhow!("wrote {pos} bytes of a {total}-byte image"));
    }
    Ok(())
}

/// Reads the first `len` bytes of `dev` back and returns their SHA-256.
pub fn hash_device(
    dev: &mut dyn SlotDevice,
    len: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Sha256Digest> {
    let dev_size = dev.size();
    let path = dev.path().to_path_buf();
    let mut hasher = Sha256::new();
    let mut done = 0u64;
    pipeline(
        READ_BACK_BLOCK,
        |free, full| {
            let mut off = 0u64;
            while off < len {
                let Ok(mut buf) = free.recv() else { return };
                let want = (len - off).min(READ_BACK_BLOCK as u64) as usize;
                // Read whole 4 KiB blocks where the device has them (direct I/O).
                let padded = want.next_multiple_of(IO_ALIGN);
                let read_len = if off + padded as u64 <= dev_size {
                    padded
                } else {
                    want
                };
                let msg = dev
                    .read_at(off, &mut buf.as_mut_slice()[..read_len])
                    .with_context(|| format!("reading back {} at offset {off}", path.display()))
                    .map(|()| (buf, want));
                let failed = msg.is_err();
                if full.send(msg).is_err() || failed {
                    return;
                }
                off += want as u64;
            }
        },
        |buf, n| {
            hasher.update(&buf.as_slice()[..n]);
            done += n as u64;
            progress(done, len);
            Ok(())
        },
    )?;
    Ok(Sha256Digest::from(hasher))
}
