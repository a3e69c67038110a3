//! The one read-back of both bundle formats: [`verify_chunks`] reads a slot back chunk by
//! chunk with direct I/O on one thread while two threads check each chunk with a
//! caller-given check (a chunk hash from a signed manifest, or one taken while the chunk
//! was written), so read-back is limited by the device's read speed, not by one core's
//! hashing. Memory is [`POOL`] chunk buffers, whatever the image size.

use crate::install::pool::buffer_pool;
use crate::slot::device::{AlignedBuf, SlotDevice, IO_ALIGN};
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, sync_channel};
use std::sync::Mutex;

/// Buffers in flight: one being read, two being checked.
const POOL: usize = 3;
/// Threads checking chunks.
const CHECKERS: usize = 2;

/// A chunk check: `check(index, bytes)` says whether chunk `index` (its bytes as read back)
/// is the one that was meant to be written.
pub type ChunkCheck<'a> = dyn Fn(usize, &[u8]) -> bool + Sync + 'a;

/// Reads the first `size` bytes of `dev` back in chunks of `chunk_size` bytes (the last
/// one shorter) and checks each with `check`. The first chunk that differs is named with
/// its index, length and offset. `progress(done, size)` follows the bytes checked.
pub fn verify_chunks(
    dev: &mut dyn SlotDevice,
    size: u64,
    chunk_size: u32,
    check: &ChunkCheck<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<()> {
    let dev_size = dev.size();
    let path = dev.path().to_path_buf();
    let chunk = u64::from(chunk_size.max(1));
    let count = size.div_ceil(chunk);
    let chunk_len = |i: u64| size.saturating_sub(i * chunk).min(chunk) as usize;
    let (full_tx, full_rx) = sync_channel::<Result<(u64, AlignedBuf, usize)>>(POOL);
    let (free_tx, free_rx) = buffer_pool(POOL, chunk as usize);
    let full_rx = Mutex::new(full_rx);
    let stop = AtomicBool::new(false);
    let (done_tx, done_rx) = channel::<Result<u64>>();
    std::thread::scope(|s| {
        let stop = &stop;
        let full_rx = &full_rx;
        let path = &path;
        s.spawn(move || {
            for i in 0..count {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(mut buf) = free_rx.recv() else { return };
                let off = i * chunk;
                let want = chunk_len(i);
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
                    .map(|()| (i, buf, want));
                let failed = msg.is_err();
                if full_tx.send(msg).is_err() || failed {
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            }
        });
        for _ in 0..CHECKERS {
            let free_tx = free_tx.clone();
            let done_tx = done_tx.clone();
            s.spawn(move || loop {
                // The lock is held only while waiting for the next buffer.
                let msg = match full_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(_) => return,
                };
                let Ok(msg) = msg else { return };
                let outcome = match msg {
                    Ok((i, buf, len)) => {
                        let same = check(i as usize, &buf.as_slice()[..len]);
                        // Never blocks: the pool holds at most POOL buffers.
                        free_tx.send(buf).ok();
                        if same {
                            Ok(len as u64)
                        } else {
                            Err(anyhow!(
                                "chunk {i} ({len} bytes at offset {}) differs from the image",
                                i * chunk
                            ))
                        }
                    }
                    Err(e) => Err(e),
                };
                if outcome.is_err() {
                    stop.store(true, Ordering::Relaxed);
                }
                done_tx.send(outcome).ok();
            });
        }
        drop(done_tx);
        drop(free_tx);
        let mut done = 0u64;
        let mut first_err = None;
        for r in done_rx {
            match r {
                Ok(n) => {
                    done += n;
                    progress(done, size);
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None if done == size => Ok(()),
            None => Err(anyhow!("read back {done} of {size} bytes")),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slot::device::MemDevice;
    use std::path::PathBuf;

    fn dev(data: Vec<u8>) -> MemDevice {
        MemDevice {
            data,
            path: PathBuf::from("/dev/mem-slot"),
        }
    }

    #[test]
    fn every_chunk_is_checked_once_and_a_changed_one_is_named() {
        let image: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut d = dev([image.clone(), vec![0; 20_000]].concat());
        let seen = Mutex::new(Vec::new());
        let check = |i: usize, data: &[u8]| {
            seen.lock().unwrap().push(i);
            data == &image[i * 8192..(i * 8192 + data.len())]
        };
        let mut last = 0;
        verify_chunks(&mut d, image.len() as u64, 8192, &check, &mut |n, _| {
            last = n
        })
        .unwrap();
        let mut seen = seen.into_inner().unwrap();
        seen.sort_unstable();
        assert_eq!(seen, (0..7).collect::<Vec<_>>());
        assert_eq!(last, image.len() as u64);
        d.data[3 * 8192 + 7] ^= 1;
        let check = |i: usize, data: &[u8]| data == &image[i * 8192..(i * 8192 + data.len())];
        let e = verify_chunks(&mut d, image.len() as u64, 8192, &check, &mut |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("chunk 3") && e.contains("offset 24576"), "{e}");
    }

    #[test]
    fn a_device_shorter_than_the_image_is_an_error() {
        let mut d = dev(vec![0; 10_000]);
        let e = verify_chunks(&mut d, 20_000, 8192, &|_, _| true, &mut |_, _| {}).unwrap_err();
        assert!(format!("{e:#}").contains("offset"), "{e:#}");
    }
}
