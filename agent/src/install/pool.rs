//! The install pipelines' one buffer pool: a fixed number of aligned buffers that travel
//! between the reader, checker and writer threads and come back over a channel, so memory
//! stays bounded whatever the image size.

use crate::slot::device::AlignedBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// `count` buffers of `len` bytes: the sender returns a buffer to the pool, the receiver
/// waits for a free one. Nothing else allocates buffers in a pipeline.
pub(crate) fn buffer_pool(
    count: usize,
    len: usize,
) -> (SyncSender<AlignedBuf>, Receiver<AlignedBuf>) {
    let (free_tx, free_rx) = sync_channel::<AlignedBuf>(count);
    for _ in 0..count {
        // Cannot fail: the channel holds `count` buffers and its receiver is alive.
        free_tx.send(AlignedBuf::new(len)).ok();
    }
    (free_tx, free_rx)
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
