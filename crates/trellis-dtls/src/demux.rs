//! What a server does with a datagram that arrives on its socket, decided before any
//! per-peer state exists (Trio's receive loop and `handle_client_hello_untrusted`).

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use crate::cookie::CookieKey;
use crate::record::{BadPacket, ClientHello, decode_client_hello, is_client_hello};

/// The decision for one incoming datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming<'a> {
    /// For the association with the datagram's source address.
    ToPeer,
    /// A ClientHello without a valid cookie: send this HelloVerifyRequest to the source and
    /// forget it.
    Challenge(Vec<u8>),
    /// A ClientHello with a valid cookie: start an association (replacing an older one from
    /// the same address, unless this is a duplicate of the ClientHello that started it).
    Hello(ClientHello<'a>),
    /// Dropped, for this reason.
    Drop(Dropped),
}

/// Why a datagram was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A ClientHello, but nobody serves on this endpoint.
    NotListening,
    /// From an address with no association, and not a ClientHello.
    UnknownPeer,
    /// A ClientHello that does not parse.
    Bad(BadPacket),
    /// A ClientHello too small to answer without sending more than it (amplification).
    TooSmallToChallenge,
}

/// Decides what to do with `packet` from `peer`. `key` is the endpoint's cookie key when it
/// serves (`None`: it only connects), `known_peer` whether `peer` has an association, `now`
/// the endpoint's clock.
pub fn classify<'a>(
    packet: &'a [u8],
    peer: &SocketAddr,
    key: Option<&CookieKey>,
    known_peer: bool,
    now: Duration,
) -> Incoming<'a> {
    if !is_client_hello(packet) {
        return if known_peer {
            Incoming::ToPeer
        } else {
            Incoming::Drop(Dropped::UnknownPeer)
        };
    }
    let Some(key) = key else {
        // A client's own peer does not send it ClientHellos; nothing serves here.
        return if known_peer {
            Incoming::ToPeer
        } else {
            Incoming::Drop(Dropped::NotListening)
        };
    };
    let hello = match decode_client_hello(packet) {
        Ok(hello) => hello,
        Err(bad) => return Incoming::Drop(Dropped::Bad(bad)),
    };
    if key.valid(&hello, peer, now) {
        return Incoming::Hello(hello);
    }
    match key.challenge(packet, &hello, peer, now) {
        Some(challenge) => Incoming::Challenge(challenge),
        None => Incoming::Drop(Dropped::TooSmallToChallenge),
    }
}
