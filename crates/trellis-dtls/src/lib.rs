//! DTLS 1.2 over UDP on trellis, as Trio's `DTLSEndpoint`: one UDP socket serving many peers,
//! a stateless cookie exchange, handshake retransmission and MTU control. OpenSSL provides the
//! cryptography and the DTLS state machine; what surrounds it — record parsing,
//! demultiplexing, cookies, retransmission, MTU — is this crate's.
//!
//! ```no_run
//! use std::time::Duration;
//! use openssl::ssl::{SslContextBuilder, SslMethod};
//! use trellis_dtls::{ClientConfig, ServerConfig, open_endpoint};
//! use trellis_net::UdpSocket;
//!
//! # async fn example(server: ServerConfig, client: ClientConfig) -> Result<(), trellis::Error> {
//! // A server: one socket, a handler per peer that proved its address.
//! let socket = UdpSocket::bind("127.0.0.1:4433").await?;
//! open_endpoint(socket, |endpoint| async move {
//!     endpoint
//!         .serve(server, |channel| async move {
//!             loop {
//!                 let datagram = channel.receive().await?; // the handshake happens first
//!                 channel.send(&datagram).await?;
//!             }
//!         })
//!         .await
//! })
//! .await?;
//!
//! // A client: any number of channels on one socket; a config serves many connects.
//! let socket = UdpSocket::bind("127.0.0.1:0").await?;
//! open_endpoint(socket, |endpoint| async move {
//!     let channel = endpoint.connect("127.0.0.1:4433".parse().unwrap(), &client)?;
//!     trellis::fail_after(Duration::from_secs(10), channel.do_handshake(Duration::from_secs(1)))
//!         .await?;
//!     channel.send(b"hello").await?;
//!     assert_eq!(channel.receive().await?, b"hello");
//!     Ok(())
//! })
//! .await
//! # }
//! # fn configs() -> Result<(), openssl::error::ErrorStack> {
//! // Configurations come from OpenSSL context builders for `SslMethod::dtls()`:
//! let mut server = SslContextBuilder::new(SslMethod::dtls())?;
//! server.set_certificate_chain_file("cert.pem")?;
//! server.set_private_key_file("key.pem", openssl::ssl::SslFiletype::PEM)?;
//! let server = ServerConfig::new(server);
//! let mut client = SslContextBuilder::new(SslMethod::dtls())?;
//! client.set_ca_file("ca.pem")?;
//! client.set_verify(openssl::ssl::SslVerifyMode::PEER);
//! let client = ClientConfig::new(client);
//! # let _ = (server, client); Ok(()) }
//! ```
//!
//! Underneath is a sans-I/O core: no sockets, no tokio, driven by bytes and a clock. Every
//! function that reads network bytes can only fail with [`BadPacket`]. It is not public API:
//! the fuzz targets reach it when built with `--cfg fuzzing` (as `cargo fuzz` builds).
//!
//! * `record`: records, handshake fragments, the ClientHello's cookie.
//! * `cookie`: the cookie key, cookie checks, the HelloVerifyRequest.
//! * `demux`: what a server does with each datagram before any per-peer state exists.
//! * `volley`: handshake flights taken apart and packed again to the MTU.
//! * `retransmit`: the retransmission timer and the minimum-MTU fallback.
// Unsafe code is confined to `ffi` (the OpenSSL calls the `openssl` crate lacks); every other
// module forbids it.
#![deny(unsafe_code)]

/// Declares the sans-I/O modules: private, or public to the fuzz targets under
/// `--cfg fuzzing`.
macro_rules! sans_io {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(fuzzing)]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(fuzzing))]
        #[allow(unreachable_pub)]
        mod $name;
    )*};
}

sans_io!(cookie, demux, record, retransmit, volley);

mod channel;
mod endpoint;
mod error;
mod ffi;
#[cfg(test)]
mod sans_io_tests;

pub use channel::DtlsChannel;
pub use endpoint::{
    ClientConfig, DatagramSocket, DtlsEndpoint, HANDSHAKE_TIMEOUT, INCOMING_QUEUE,
    MAX_ASSOCIATIONS, ServerConfig, SocketFuture, Statistics, open_endpoint,
};
pub use error::DtlsError;
pub use record::BadPacket;
