//! A Unix domain connection registered with the runtime for reading only.
//!
//! Linux wakes a Unix stream socket's waiters each time its peer reads what it sent and the
//! send buffer drops under a quarter full (`unix_write_space`), with no regard to whether
//! anyone wants to write: with writability in the registration, as tokio's `UnixStream` has
//! it, every read of a stream's items woke the sending actor's runtime, waiting for credit,
//! for nothing (and each credit read woke the receiver's). Here the connection is registered
//! for reading only; a write that finds the buffer full waits through a second registration
//! of a duplicate descriptor, kept while writes keep waiting and dropped when the writer has
//! nothing left to write.

use std::io::{self, IoSlice, Write};
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, Interest, ReadBuf};

/// Splits `stream` into a reader and a writer over one read-only registration.
pub(crate) fn split(stream: tokio::net::UnixStream) -> io::Result<(UnixReader, UnixWriter)> {
    let stream = stream.into_std()?;
    stream.set_nonblocking(true)?;
    let fd = Arc::new(register(stream, Interest::READABLE)?);
    let writer = UnixWriter {
        fd: fd.clone(),
        room: Mutex::new(None),
    };
    Ok((UnixReader(fd), writer))
}

/// The receiving half.
#[derive(Debug)]
pub(crate) struct UnixReader(Arc<AsyncFd<UnixStream>>);

#[allow(unsafe_code)]
impl AsyncRead for UnixReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut ready = ready!(self.0.poll_read_ready(cx))?;
            // Read into the buffer's memory as it is: zeroing it first, as a safe read must,
            // cost a 1 MiB item's buffer a clearing per read.
            // SAFETY: nothing is read from `unfilled`; only the system writes into it.
            let unfilled = unsafe { buf.unfilled_mut() };
            let len = unfilled.len();
            let read = ready.try_io(|fd| {
                // SAFETY: `unfilled` is valid for `len` bytes of writes, and the descriptor is
                // open (owned by the registration).
                let n =
                    unsafe { nix::libc::read(fd.as_raw_fd(), unfilled.as_mut_ptr().cast(), len) };
                usize::try_from(n).map_err(|_| io::Error::last_os_error())
            });
            match read {
                Ok(Ok(n)) => {
                    // A short read emptied the socket (as tokio's streams assume): the next
                    // read waits for news instead of asking the system first.
                    if n > 0 && n < len {
                        ready.clear_ready();
                    }
                    // SAFETY: the system wrote the first `n` bytes of `unfilled`.
                    unsafe { buf.assume_init(n) };
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => return Poll::Ready(Err(e)),
                // Found empty: readiness cleared; wait for the next.
                Err(_would_block) => continue,
            }
        }
    }
}

/// The sending half; dropping it shuts the sending direction down.
#[derive(Debug)]
pub(crate) struct UnixWriter {
    fd: Arc<AsyncFd<UnixStream>>,
    /// The registration for writability while writes wait for room (until [`idle`]).
    ///
    /// [`idle`]: UnixWriter::idle
    room: Mutex<Option<Arc<AsyncFd<UnixStream>>>>,
}

impl UnixWriter {
    pub(crate) fn try_write(&self, buf: &[u8]) -> io::Result<usize> {
        self.fd.get_ref().write(buf)
    }

    pub(crate) fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.fd.get_ref().write_vectored(bufs)
    }

    /// Waits until the socket takes more (at once if it does already). The registration it
    /// makes stays for the waits that follow, until [`idle`](UnixWriter::idle).
    pub(crate) async fn writable(&self) -> io::Result<()> {
        let room = {
            let mut room = self.room.lock().unwrap_or_else(|e| e.into_inner());
            match &*room {
                Some(room) => room.clone(),
                // Registered after the refusal: room made meanwhile is reported at once.
                None => room
                    .insert(Arc::new(register(
                        self.fd.get_ref().try_clone()?,
                        Interest::WRITABLE,
                    )?))
                    .clone(),
            }
        };
        loop {
            let mut ready = room.writable().await?;
            // The readiness may be from before the refusal that brought us here: ask the
            // socket. When it has no room, only that readiness is cleared (a newer one stays).
            match ready.try_io(|fd| has_room(fd.get_ref())) {
                Ok(answer) => return answer,
                Err(_no_room) => continue,
            }
        }
    }

    /// Nothing waits to be written: the registration for writability goes (so the peer's
    /// reads no longer wake this side).
    pub(crate) fn idle(&self) {
        let mut room = self.room.lock().unwrap_or_else(|e| e.into_inner());
        if room.is_some() {
            *room = None;
        }
    }
}

/// Whether `stream` takes more now (`WouldBlock` when it does not).
fn has_room(stream: &UnixStream) -> io::Result<()> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(stream.as_fd(), PollFlags::POLLOUT)];
    poll(&mut fds, PollTimeout::ZERO)?;
    let revents = fds[0].revents().unwrap_or(PollFlags::empty());
    if revents.intersects(PollFlags::POLLOUT | PollFlags::POLLERR | PollFlags::POLLHUP) {
        Ok(())
    } else {
        Err(io::ErrorKind::WouldBlock.into())
    }
}

impl Drop for UnixWriter {
    fn drop(&mut self) {
        let _ = self.fd.get_ref().shutdown(Shutdown::Write);
    }
}

/// Registers `stream` with the runtime for `interest`.
#[allow(unsafe_code)]
fn register(stream: UnixStream, interest: Interest) -> io::Result<AsyncFd<UnixStream>> {
    // SAFETY: the `AsyncFd` owns the stream, so its descriptor stays open and names the same
    // file description until the `AsyncFd` is dropped; nothing here closes or replaces it
    // (the halves only borrow it).
    Ok(unsafe { AsyncFd::register_with_interest(stream, interest) }?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Polls `future` once: whether it finished.
    async fn ready_now(future: impl std::future::Future) -> bool {
        let mut future = std::pin::pin!(future);
        std::future::poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx).is_ready())).await
    }

    /// Writes until the system refuses; returns how much it took.
    fn fill(writer: &UnixWriter) -> usize {
        let chunk = vec![7u8; 64 * 1024];
        let mut sent = 0;
        loop {
            match writer.try_write(&chunk) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return sent,
                Err(e) => panic!("write failed: {e}"),
            }
        }
    }

    /// A writer refused for a full buffer waits (also on its kept registration, whose old
    /// readiness must not end the wait) and goes on once the peer reads; every byte
    /// arrives, and the reader sees the end when the writer is dropped.
    #[test]
    fn a_writer_held_by_a_full_buffer_goes_on_when_the_peer_reads() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (a, b) = tokio::net::UnixStream::pair().unwrap();
            let (_a_reader, writer) = split(a).unwrap();
            let (mut reader, _b_writer) = split(b).unwrap();
            let mut buf = vec![0u8; 256 * 1024];
            for round in 0..3 {
                // Round 1 waits on the registration round 0 made; round 2 on a new one.
                if round == 2 {
                    writer.idle();
                }
                let sent = fill(&writer);
                assert!(
                    !ready_now(writer.writable()).await,
                    "no room until the peer reads"
                );
                let mut got = 0;
                while got < sent {
                    got += reader.read(&mut buf).await.unwrap();
                }
                assert_eq!(got, sent);
                writer.writable().await.unwrap();
                assert!(writer.try_write(b"more").unwrap() > 0);
                let n = reader.read(&mut buf).await.unwrap();
                assert_eq!(&buf[..n], b"more");
            }
            drop(writer);
            assert_eq!(
                reader.read(&mut buf).await.unwrap(),
                0,
                "the end, once dropped"
            );
        });
    }
}
