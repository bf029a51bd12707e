//! Large incoming frames, each read straight into a buffer of its own size: no copy into the
//! connection's read buffer and out again, and the buffer handed to the engine as the frame
//! (a `Yield`'s value, a `bytes::Bytes` item, shares it). Buffers come back to a small pool,
//! one per actor, when the last share of their frame is dropped, so that a stream of large
//! items reuses memory the kernel has already faulted in instead of fresh memory for each
//! frame.

use std::sync::{Arc, Mutex, Weak};

use bytes::{BufMut, Bytes};
use trellis_wire::HEADER_LEN;

/// Frames at least this long (body and header) are read into a buffer of their own; shorter
/// ones share the connection's read buffer.
pub(super) const OWN_BUFFER_FRAME: usize = 64 * 1024;

/// The most an actor's pool keeps of buffers no frame uses: memory beyond the read budget,
/// held for the actor's life whatever its peers do, so it stays small (a buffer that would
/// exceed it is freed).
const POOL_BYTES: usize = 8 << 20;

/// An actor's buffers for large frames, free for the next one (of any connection).
#[derive(Debug, Default)]
pub(crate) struct FramePool {
    idle: Mutex<Vec<Vec<u8>>>,
}

impl FramePool {
    /// An empty buffer that holds `len` bytes without growing: the smallest idle one that
    /// does, else a new one.
    fn take(&self, len: usize) -> Vec<u8> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let fit = (idle.iter().enumerate())
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        match fit {
            Some(i) => {
                let mut buf = idle.swap_remove(i);
                buf.clear();
                buf
            }
            None => Vec::with_capacity(len),
        }
    }

    fn give(&self, buf: Vec<u8>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let held: usize = idle.iter().map(Vec::capacity).sum();
        if held + buf.capacity() <= POOL_BYTES {
            idle.push(buf);
        }
    }
}

/// The length the frame whose header starts `buf` announces, once the header is whole.
pub(super) fn announced(buf: &[u8]) -> Option<usize> {
    let header: [u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(header) as usize)
}

/// The length of the frame whose header starts `buf`, when it is one to read into a buffer
/// of its own and `buf` does not hold all of it yet.
pub(super) fn large_frame_at(buf: &[u8]) -> Option<usize> {
    let len = announced(buf)?;
    (len + HEADER_LEN >= OWN_BUFFER_FRAME && buf.len() < len + HEADER_LEN).then_some(len)
}

/// A large frame on its way in.
#[derive(Debug)]
pub(super) struct LargeFrame {
    body: Vec<u8>,
    len: usize,
    pool: Weak<FramePool>,
}

impl LargeFrame {
    /// A frame of `len` bytes whose first bytes, `start`, were read already (less than
    /// `len`: the caller checked the frame is not whole).
    pub(super) fn start(pool: &Arc<FramePool>, len: usize, start: &[u8]) -> LargeFrame {
        let mut body = pool.take(len);
        body.extend_from_slice(&start[..start.len().min(len)]);
        LargeFrame {
            body,
            len,
            pool: Arc::downgrade(pool),
        }
    }

    /// Where the next read goes: the rest of the frame, and nothing past it.
    pub(super) fn rest(&mut self) -> impl BufMut + '_ {
        let missing = self.len - self.body.len();
        (&mut self.body).limit(missing)
    }

    /// The frame and its header's length, which the read budget counts.
    pub(super) fn wire_len(&self) -> usize {
        self.len + HEADER_LEN
    }

    pub(super) fn is_whole(&self) -> bool {
        self.body.len() == self.len
    }

    /// The whole frame's body, its memory back to the pool when the last share of it goes.
    pub(super) fn finish(self) -> Bytes {
        Bytes::from_owner(Pooled {
            body: self.body,
            pool: self.pool,
        })
    }
}

/// A large frame's memory, owned by its `Bytes`.
struct Pooled {
    body: Vec<u8>,
    pool: Weak<FramePool>,
}

impl AsRef<[u8]> for Pooled {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl Drop for Pooled {
    fn drop(&mut self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.give(std::mem::take(&mut self.body));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(len: usize) -> Vec<u8> {
        (len as u32).to_be_bytes().to_vec()
    }

    #[test]
    fn only_an_incomplete_large_frame_gets_a_buffer_of_its_own() {
        let large = OWN_BUFFER_FRAME;
        assert_eq!(large_frame_at(&header(large)), Some(large));
        assert_eq!(large_frame_at(&header(100)), None, "a short frame");
        assert_eq!(large_frame_at(&header(large)[..3]), None, "no whole header");
        let mut whole = header(large);
        whole.resize(HEADER_LEN + large, 0);
        assert_eq!(large_frame_at(&whole), None, "read whole already");
    }

    #[test]
    fn a_frame_is_read_up_to_its_end_and_its_memory_comes_back() {
        let pool = Arc::new(FramePool::default());
        let len = 100_000;
        let mut frame = LargeFrame::start(&pool, len, &[1, 2, 3]);
        let address = frame.body.as_ptr();
        {
            let mut rest = frame.rest();
            assert_eq!(rest.remaining_mut(), len - 3);
            rest.put_bytes(9, len - 3);
        }
        assert!(frame.is_whole());
        let bytes = frame.finish();
        assert_eq!(bytes.len(), len);
        assert_eq!(&bytes[..4], &[1, 2, 3, 9]);
        let share = bytes.slice(10..20);
        drop(bytes);
        assert!(
            pool.idle.lock().unwrap().is_empty(),
            "a share still holds it"
        );
        drop(share);
        // The next large frame reuses the same memory.
        let again = LargeFrame::start(&pool, len, &[]);
        assert_eq!(again.body.as_ptr(), address);
        assert!(again.body.is_empty());
    }

    #[test]
    fn the_pool_keeps_a_bounded_amount() {
        let pool = Arc::new(FramePool::default());
        let frames: Vec<Bytes> = (0..POOL_BYTES / (1 << 20) + 4)
            .map(|_| {
                let mut frame = LargeFrame::start(&pool, 1 << 20, &[]);
                frame.rest().put_bytes(0, 1 << 20);
                frame.finish()
            })
            .collect();
        drop(frames);
        let held: usize = pool.idle.lock().unwrap().iter().map(Vec::capacity).sum();
        assert!(held <= POOL_BYTES, "{held}");
        assert!(held >= 1 << 20);
        // A pool that is gone frees what comes back.
        let mut frame = LargeFrame::start(&pool, 1 << 20, &[]);
        frame.rest().put_bytes(0, 1 << 20);
        let bytes = frame.finish();
        drop(pool);
        drop(bytes);
    }
}
