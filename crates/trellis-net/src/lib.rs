//! Trio's high-level networking on trellis and tokio's reactor: streams whose every operation
//! is a checkpoint, TCP with happy eyeballs, structured servers that run each connection in a
//! nursery task, Unix domain sockets with a listener, in-memory stream pairs, and conformance
//! checks every stream passes.
//!
//! Every trellis stream is also tokio's `AsyncRead`/`AsyncWrite`, so tokio-util codecs and the
//! rest of the ecosystem work on it, and any tokio stream becomes a trellis stream with
//! [`SocketStream::new`].

#![forbid(unsafe_code)]

mod error;
pub mod fs;
mod memory;
mod process;
mod signals;
mod socket;
mod stream;
mod tcp;
pub mod testing;
mod tls;
mod udp;
mod unix;

pub use error::IoError;
pub use memory::{MemoryStream, lockstep_stream_pair, memory_stream_pair};
pub use process::{
    Completed, DEFAULT_GRACE, PipeWriter, Process, ProcessError, RunOptions, open_process,
    run_process,
};
pub use signals::{SignalReceiver, open_signal_receiver};
pub use socket::SocketStream;
pub use stream::{HalfCloseableStream, Listener, ReceiveStream, SendStream, Stream, StreamError};
pub use tcp::{
    ConnectError, ConnectOptions, HAPPY_EYEBALLS_DELAY, Resolve, SystemResolver, TcpListener,
    TcpStream, open_tcp_listeners, open_tcp_stream, open_tcp_stream_with, reorder_for_rfc_6555,
    serve_listeners, serve_tcp,
};
pub use tls::{
    TlsError, TlsStream, open_tls_over_tcp_stream, serve_tls_over_tcp, tls_client, tls_server,
};
pub use tokio_rustls::rustls;
pub use udp::UdpSocket;
pub use unix::{UnixListener, UnixStream, open_unix_stream, serve_unix};

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
