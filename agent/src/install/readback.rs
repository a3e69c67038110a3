//! The one read-back of both bundle formats: [`verify_chunks`] reads a slot back chunk by
//! chunk with direct I/O and checks each chunk with a caller-given check (a chunk hash from
//! a signed manifest, or one taken while the chunk was written). [`WORKERS`] threads each
//! take the next chunk, read it and check it, so while one hashes the other reads, and two
//! reads are in flight at once (storage that serves several requests in parallel answers
//! faster than to one at a time). Memory is one chunk buffer per worker, whatever the image
//! size.

use crate::slot::device::{AlignedBuf, SlotDevice, IO_ALIGN};
use anyhow::{anyhow, Context, Result};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::channel;

/// Threads reading and checking chunks, each with one chunk buffer.
const WORKERS: usize = 2;

/// A chunk check: `check(index, bytes)` says whether chunk `index` (its bytes as read back)
/// is the one that was meant to be written.
pub type ChunkCheck<'a> = dyn Fn(usize, &[u8]) -> bool + Sync + 'a;

/// Reads the first `size` bytes of `dev` back in chunks of `chunk_size` bytes (the last
/// one shorter) and checks each with `check`. A chunk that differs is named with its index,
/// length and offset (the lowest such chunk the workers had reached when they stopped).
/// `progress(done, size)` follows the bytes checked.
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
    let dev: &dyn SlotDevice = dev;
    let next = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let (done_tx, done_rx) = channel::<(u64, Result<u64>)>();
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            let done_tx = done_tx.clone();
            let (next, stop, path) = (&next, &stop, &path);
            s.spawn(move || {
                let mut buf = AlignedBuf::new(chunk as usize);
                loop {
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        return;
                    }
                    let off = i * chunk;
                    let want = chunk_len(i);
                    // Read whole 4 KiB blocks where the device has them (direct I/O).
                    let padded = want.next_multiple_of(IO_ALIGN);
                    let read_len = if off + padded as u64 <= dev_size {
                        padded
                    } else {
                        want
                    };
                    let read = dev.read_at(off, &mut buf.as_mut_slice()[..read_len]);
                    let outcome = read
                        .with_context(|| format!("reading back {} at offset {off}", path.display()))
                        .and_then(|()| {
                            if check(i as usize, &buf.as_slice()[..want]) {
                                Ok(want as u64)
                            } else {
                                Err(anyhow!(
                                    "chunk {i} ({want} bytes at offset {off}) differs from the image"
                                ))
                            }
                        });
                    if outcome.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    if done_tx.send((i, outcome)).is_err() {
                        return;
                    }
                }
            });
        }
        drop(done_tx);
        let mut done = 0u64;
        let mut first_err: Option<(u64, anyhow::Error)> = None;
        for (i, r) in done_rx {
            match r {
                Ok(n) => {
                    done += n;
                    progress(done, size);
                }
                Err(e) => {
                    if !first_err.as_ref().is_some_and(|(j, _)| *j < i) {
                        first_err = Some((i, e));
                    }
                }
            }
        }
        match first_err {
            Some((_, e)) => Err(e),
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
    use std::sync::Mutex;

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
