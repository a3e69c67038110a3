//! What the install pipelines of both formats share: the one buffer pool (a fixed number
//! of aligned buffers that travel between the reader, checker and writer threads and come
//! back over a channel, so memory stays bounded whatever the image size) and the one
//! aligned write of a checked chunk into a slot.

use crate::slot::device::{AlignedBuf, SlotDevice, IO_ALIGN};
use anyhow::{Context, Result};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// `count` buffers of `len` bytes: the sender returns a buffer to the pool, the receiver
/// waits for a free one.
pub(crate) fn buffer_pool(
    count: usize,
    len: usize,
) -> (SyncSender<AlignedBuf>, Receiver<AlignedBuf>) {
    pool(count, || AlignedBuf::new(len))
}

/// `count` items made by `make` (a pipeline's buffers): the sender returns one to the
/// pool, the receiver waits for a free one. Every buffer passed between threads comes from
/// here (the read-back's workers each keep their own one buffer).
pub(crate) fn pool<T>(count: usize, mut make: impl FnMut() -> T) -> (SyncSender<T>, Receiver<T>) {
    let (free_tx, free_rx) = sync_channel::<T>(count);
    for _ in 0..count {
        // Cannot fail: the channel holds `count` items and its receiver is alive.
        free_tx.send(make()).ok();
    }
    (free_tx, free_rx)
}

/// Writes one verified chunk at `pos`, padding a short last chunk with zeros to a 4 KiB
/// boundary when the device has room (so the write can use direct I/O).
pub(crate) fn write_chunk(
    dev: &mut dyn SlotDevice,
    dev_size: u64,
    pos: u64,
    buf: &AlignedBuf,
    len: usize,
) -> Result<()> {
    let padded = len.next_multiple_of(IO_ALIGN);
    let padded_buf;
    let data = if padded != len && pos + padded as u64 <= dev_size {
        // Only the short last chunk: copy once into a zero-filled aligned buffer.
        let mut b = AlignedBuf::new(padded);
        b.as_mut_slice()[..len].copy_from_slice(&buf.as_slice()[..len]);
        padded_buf = b;
        padded_buf.as_slice()
    } else {
        &buf.as_slice()[..len]
    };
    dev.write_at(pos, data).with_context(|| {
        format!(
            "writing {} bytes to {} at offset {pos}",
            data.len(),
            dev.path().display()
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_holds_exactly_its_buffers() {
        let (tx, rx) = buffer_pool(3, 4096);
        let bufs: Vec<AlignedBuf> = (0..3).map(|_| rx.recv().unwrap()).collect();
        assert!(bufs.iter().all(|b| b.len() == 4096));
        assert!(rx.try_recv().is_err(), "no fourth buffer");
        for b in bufs {
            tx.send(b).unwrap();
        }
        assert!(rx.try_recv().is_ok());
    }
}
