//! What a session has to send: messages encoded into one buffer, and the long byte-string
//! values of stream items queued as they are, shared rather than copied, in order.

use std::collections::VecDeque;
use std::io::IoSlice;

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Byte strings at least this long are queued as they are, not copied into the buffer.
pub const SHARE_FROM: usize = 16 * 1024;

/// The bytes a [`Session`](crate::Session) has to send, in order: what it encoded, and the
/// values of stream items it queued without copying them (see
/// [`Session::send_item_bytes`](crate::Session::send_item_bytes)). A [`Buf`]: a transport
/// writes [`chunks_vectored`](Buf::chunks_vectored) (or [`chunk`](Buf::chunk)) and
/// [`advance`](Buf::advance)s past what the socket took.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Bytes ahead of `tail`, in order: encoded bytes cut off the tail, and shared values.
    queued: VecDeque<Bytes>,
    /// The sum of `queued`'s lengths.
    queued_len: usize,
    /// Where messages are encoded, after everything queued.
    tail: BytesMut,
}

impl Outgoing {
    /// Bytes waiting to be sent.
    pub fn len(&self) -> usize {
        self.queued_len + self.tail.len()
    }

    /// Whether nothing waits to be sent.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets everything that waits.
    pub fn clear(&mut self) {
        self.queued.clear();
        self.queued_len = 0;
        self.tail.clear();
    }

    /// Takes everything that waits, as one buffer (shared values copied into it).
    pub fn split(&mut self) -> BytesMut {
        self.split_to(self.len())
    }

    /// Takes the first `n` bytes that wait, as one buffer (shared values copied into it).
    ///
    /// # Panics
    ///
    /// When fewer than `n` bytes wait.
    pub fn split_to(&mut self, n: usize) -> BytesMut {
        assert!(n <= self.len(), "split_to past the end");
        if self.queued.is_empty() {
            return self.tail.split_to(n);
        }
        let mut out = BytesMut::with_capacity(n);
        out.put(self.take(n));
        out
    }

    /// Where the next message is encoded.
    pub(crate) fn tail(&mut self) -> &mut BytesMut {
        &mut self.tail
    }

    /// Queues `value` after everything encoded so far, without copying it.
    pub(crate) fn share(&mut self, value: Bytes) {
        if !self.tail.is_empty() {
            let encoded = self.tail.split().freeze();
            self.queued_len += encoded.len();
            self.queued.push_back(encoded);
        }
        self.queued_len += value.len();
        self.queued.push_back(value);
    }
}

impl Buf for Outgoing {
    fn remaining(&self) -> usize {
        self.len()
    }

    fn chunk(&self) -> &[u8] {
        match self.queued.front() {
            Some(first) => first,
            None => &self.tail,
        }
    }

    fn chunks_vectored<'a>(&'a self, dst: &mut [IoSlice<'a>]) -> usize {
        let chunks = (self.queued.iter().map(|b| &b[..]))
            .chain(std::iter::once(&self.tail[..]))
            .filter(|c| !c.is_empty());
        let mut filled = 0;
        for (slot, chunk) in dst.iter_mut().zip(chunks) {
            *slot = IoSlice::new(chunk);
            filled += 1;
        }
        filled
    }

    fn advance(&mut self, mut n: usize) {
        assert!(n <= self.len(), "advance past the end");
        while n > 0 {
            let Some(first) = self.queued.front_mut() else {
                self.tail.advance(n);
                return;
            };
            let step = n.min(first.len());
            first.advance(step);
            self.queued_len -= step;
            n -= step;
            if first.is_empty() {
                self.queued.pop_front();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled() -> Outgoing {
        let mut out = Outgoing::default();
        out.tail().put_slice(b"ab");
        out.share(Bytes::from_static(b"cdef"));
        out.tail().put_slice(b"gh");
        out.share(Bytes::from_static(b"ij"));
        out
    }

    #[test]
    fn shared_values_keep_their_place() {
        let mut out = filled();
        assert_eq!(out.len(), 10);
        let mut slices = [IoSlice::new(&[]); 8];
        let n = out.chunks_vectored(&mut slices);
        let joined: Vec<u8> = slices[..n].iter().flat_map(|s| s.iter().copied()).collect();
        assert_eq!(joined, b"abcdefghij");
        assert_eq!(&out.split()[..], b"abcdefghij");
        assert!(out.is_empty());
    }

    #[test]
    fn advancing_across_chunks() {
        let mut out = filled();
        out.advance(3);
        assert_eq!(out.chunk(), b"def");
        out.advance(4);
        assert_eq!(out.chunk(), b"h");
        assert_eq!(out.len(), 3);
        assert_eq!(&out.split_to(2)[..], b"hi");
        assert_eq!(&out.split()[..], b"j");
        out.tail().put_slice(b"k");
        assert_eq!(out.chunk(), b"k");
    }

    #[test]
    fn few_slots_take_the_first_chunks() {
        let out = filled();
        let mut slices = [IoSlice::new(&[]); 2];
        assert_eq!(out.chunks_vectored(&mut slices), 2);
        assert_eq!(&slices[0][..], b"ab");
        assert_eq!(&slices[1][..], b"cdef");
    }
}
