//! [`ReadAhead`]: one thread that streams a bundle from an offset towards its end through
//! its own [`Fetcher`], at most [`SEGMENTS`] × [`SEGMENT`] bytes ahead of the reader, so
//! that the download overlaps with what the reader does with the bytes (hashing, writing).
//!
//! The segments travel over two bounded channels: empty ones to the thread, filled ones
//! (each what one network read returned) back to the reader, which copies them out and
//! returns them. Memory is therefore the segments, whatever the bundle's size.
//!
//! Dropping the `ReadAhead` stops the thread: waits on either channel end at once, a retry
//! delay ends at once, and no new request is made; a network read already in progress ends
//! within the stall window. The thread is not joined (a drop never waits for the network).
//! An error from the fetcher (a final HTTP error, or retries given up) is handed to the
//! reader in place of the next segment, and the thread ends.

use super::fetch::Fetcher;
use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

/// Bytes per segment: the most one network read fills.
pub(crate) const SEGMENT: usize = 512 << 10;
/// Segments in flight: the read-ahead is at most `SEGMENTS × SEGMENT` bytes.
pub(crate) const SEGMENTS: usize = 2;

/// A filled segment: `buf[..len]` holds bytes of the bundle.
struct Segment {
    buf: Vec<u8>,
    len: usize,
}

/// The reader's side of a read-ahead thread.
pub(crate) struct ReadAhead {
    /// Offset of the next byte the reader gets.
    pos: u64,
    /// The segment being read from, and how much of it is used.
    cur: Option<(Segment, usize)>,
    filled: Receiver<io::Result<Segment>>,
    empty: SyncSender<Vec<u8>>,
    /// Dropped with the `ReadAhead`: cancels the thread's fetcher.
    _cancel: SyncSender<()>,
    /// Bytes still to come from the thread (it stops at the end of the bundle).
    remaining: u64,
}

impl ReadAhead {
    /// Starts a thread that reads `fetcher`'s bundle from `offset` to its end.
    pub(crate) fn start(mut fetcher: Fetcher, offset: u64) -> io::Result<ReadAhead> {
        let total = fetcher.total();
        let (empty_tx, empty_rx) = sync_channel::<Vec<u8>>(SEGMENTS);
        let (filled_tx, filled_rx) = sync_channel::<io::Result<Segment>>(SEGMENTS);
        let (cancel_tx, cancel_rx) = sync_channel::<()>(1);
        for _ in 0..SEGMENTS {
            // Cannot fail: the channel holds SEGMENTS buffers and its receiver is alive.
            empty_tx.send(vec![0u8; SEGMENT]).ok();
        }
        fetcher.cancel_on(cancel_rx);
        std::thread::Builder::new()
            .name("http-read-ahead".into())
            .spawn(move || fill(fetcher, offset, total, &empty_rx, &filled_tx))
            .map_err(|e| io::Error::other(format!("cannot start the read-ahead thread: {e}")))?;
        Ok(ReadAhead {
            pos: offset,
            cur: None,
            filled: filled_rx,
            empty: empty_tx,
            _cancel: cancel_tx,
            remaining: total.saturating_sub(offset),
        })
    }

    /// Offset of the next byte the reader gets.
    pub(crate) fn pos(&self) -> u64 {
        self.pos
    }

    /// Whether a read at `offset` can continue this read-ahead: at its position, or a
    /// little after it (the bytes between are skipped, cheaper than a new request).
    pub(crate) fn can_reach(&self, offset: u64) -> bool {
        offset >= self.pos
            && offset - self.pos <= (SEGMENTS * SEGMENT) as u64
            && offset - self.pos <= self.remaining
    }

    /// Drops the bytes before `offset` (which [`Self::can_reach`]).
    pub(crate) fn skip_to(&mut self, offset: u64) -> io::Result<()> {
        while self.pos < offset {
            let want = usize::try_from(offset - self.pos).unwrap_or(usize::MAX);
            self.take(want, None)?;
        }
        Ok(())
    }

    /// Fills `buf` with the next bytes.
    pub(crate) fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        let mut done = 0;
        while done < buf.len() {
            done += self.take(buf.len() - done, Some(&mut buf[done..]))?;
        }
        Ok(())
    }

    /// Takes up to `want` bytes (at least one) from the current segment, waiting for one
    /// if needed, copying them into `out` when given; returns how many.
    fn take(&mut self, want: usize, out: Option<&mut [u8]>) -> io::Result<usize> {
        let (seg, used) = match self.cur.take() {
            Some(c) => c,
            None => {
                if self.remaining == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                match self.filled.recv() {
                    Ok(Ok(seg)) => (seg, 0),
                    Ok(Err(e)) => return Err(e),
                    Err(_) => return Err(io::Error::other("the read-ahead thread ended")),
                }
            }
        };
        let n = want.min(seg.len - used);
        if let Some(out) = out {
            out[..n].copy_from_slice(&seg.buf[used..used + n]);
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        if used + n < seg.len {
            self.cur = Some((seg, used + n));
        } else {
            // The thread may be gone (at the end of the bundle): nothing to return then.
            self.empty.send(seg.buf).ok();
        }
        Ok(n)
    }
}

/// The thread: fills empty segments from `pos` until `total`, the reader leaves, or an
/// error (handed over in place of a segment).
fn fill(
    mut fetcher: Fetcher,
    mut pos: u64,
    total: u64,
    empty: &Receiver<Vec<u8>>,
    filled: &SyncSender<io::Result<Segment>>,
) {
    log::debug!("{}: read-ahead from offset {pos}", fetcher.shown());
    while pos < total {
        let Ok(mut buf) = empty.recv() else { return };
        let want = usize::try_from(total - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let msg = fetcher
            .read_some(pos, &mut buf[..want])
            .map(|len| Segment { buf, len });
        let failed = msg.is_err();
        if let Ok(seg) = &msg {
            pos += seg.len as u64;
        }
        if filled.send(msg).is_err() || failed {
            return;
        }
    }
}

#[cfg(test)]
#[path = "readahead_tests.rs"]
mod tests;
