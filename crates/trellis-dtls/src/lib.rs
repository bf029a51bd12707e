//! DTLS 1.2 over UDP on trellis, as Trio's `DTLSEndpoint`: one UDP socket serving many peers,
//! a stateless cookie exchange, handshake retransmission and MTU control. OpenSSL provides the
//! cryptography and the DTLS state machine; what surrounds it — record parsing,
//! demultiplexing, cookies, retransmission, MTU — is this crate's.
//!
//! This first part is the sans-I/O core: no sockets, no tokio, driven by bytes and a clock.
//! Every function that reads network bytes can only fail with [`BadPacket`].
//!
//! * [`record`]: records, handshake fragments, the ClientHello's cookie.
//! * [`cookie`]: the cookie key, cookie checks, the HelloVerifyRequest.
//! * [`demux`]: what a server does with each datagram before any per-peer state exists.
//! * [`volley`]: handshake flights taken apart and packed again to the MTU.
//! * [`retransmit`]: the retransmission timer and the minimum-MTU fallback.
// Unsafe code is confined to `ffi` (one OpenSSL call); every other module forbids it.
#![deny(unsafe_code)]

pub mod cookie;
pub mod demux;
mod endpoint;
mod ffi;
pub mod record;
pub mod retransmit;
pub mod volley;

pub use endpoint::{
    ClientConfig, DatagramSocket, DtlsChannel, DtlsEndpoint, DtlsError, INCOMING_QUEUE,
    ServerConfig, SocketFuture, Statistics, open_endpoint,
};
pub use record::BadPacket;
