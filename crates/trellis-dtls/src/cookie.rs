//! The stateless cookie exchange (RFC 6347 §4.2.1): a server answers a ClientHello without a
//! valid cookie with a HelloVerifyRequest carrying one, and keeps no state until the client
//! proves, by echoing it, that it receives at its claimed address.
//!
//! A cookie is a random salt and an HMAC-SHA256 (truncated) over the salt, a time tick, the
//! peer's address and the ClientHello without its cookie, under a key drawn at random per
//! endpoint. A cookie is accepted during the tick it was made in and the next one (so for 30
//! to 60 seconds), and compared in constant time.

#![forbid(unsafe_code)]

use std::net::SocketAddr;
use std::time::Duration;

use openssl::sha::Sha256;

use crate::record::{
    ClientHello, DTLS1_0, content_type, encode_handshake_fragment, encode_record, handshake_type,
};

/// How long one cookie tick lasts.
pub const COOKIE_TICK: Duration = Duration::from_secs(30);
/// Bytes of random salt at the start of a cookie.
pub const SALT_LEN: usize = 8;
/// A cookie's length: the salt and 24 bytes of HMAC (192 bits; RFC 2104 §5 allows
/// truncation), within DTLS 1.0's 32-byte limit.
pub const COOKIE_LEN: usize = 32;

/// An endpoint's secret for its cookies. Dropping it forgets the secret.
///
/// The HMAC (RFC 2104) is computed here over OpenSSL's SHA-256 with the key's inner and outer
/// blocks hashed once, when the key is made: a cookie then costs two SHA-256 runs over a few
/// dozen bytes, not the set-up of a MAC through OpenSSL's providers (which the handshake
/// profile showed as a few percent of each handshake, for three cookies).
#[derive(Clone)]
pub struct CookieKey {
    /// SHA-256 after the key XOR ipad block.
    inner: Sha256,
    /// SHA-256 after the key XOR opad block.
    outer: Sha256,
}

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

/// SHA-256's block size, which the HMAC key is padded to.
const BLOCK: usize = 64;

impl CookieKey {
    /// A fresh random key.
    ///
    /// # Panics
    ///
    /// When OpenSSL's random generator fails (it cannot be seeded), as nothing is safe then.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).expect("OpenSSL's random generator works");
        CookieKey::with_key(&key)
    }

    /// A key from fixed bytes (tests and fuzz targets).
    #[cfg(any(test, fuzzing))]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CookieKey::with_key(&bytes)
    }

    fn with_key(key: &[u8; 32]) -> Self {
        let block = |pad: u8| {
            let mut block = [pad; BLOCK];
            block.iter_mut().zip(key).for_each(|(b, k)| *b ^= k);
            let mut hash = Sha256::new();
            hash.update(&block);
            hash
        };
        CookieKey {
            inner: block(0x36),
            outer: block(0x5c),
        }
    }

    /// HMAC-SHA256 under this key of `fields`, each length-prefixed, so that no two inputs
    /// sign the same bytes.
    fn mac(&self, fields: &[&[u8]]) -> [u8; 32] {
        let mut inner = self.inner.clone();
        for field in fields {
            inner.update(&(field.len() as u64).to_be_bytes());
            inner.update(field);
        }
        let mut outer = self.outer.clone();
        outer.update(&inner.finish());
        outer.finish()
    }

    fn cookie(&self, salt: &[u8], tick: u64, peer: &SocketAddr, signed: &[u8]) -> [u8; COOKIE_LEN] {
        let (address, len) = address(peer);
        let digest = self.mac(&[salt, &tick.to_be_bytes(), &address[..len], signed]);
        let mut cookie = [0u8; COOKIE_LEN];
        cookie[..SALT_LEN].copy_from_slice(salt);
        cookie[SALT_LEN..].copy_from_slice(&digest[..COOKIE_LEN - SALT_LEN]);
        cookie
    }

    /// Whether `hello`'s cookie is one this key made for `peer` and this ClientHello, in the
    /// tick of `now` or the one before. `now` is the endpoint's clock (any fixed origin).
    pub fn valid(&self, hello: &ClientHello<'_>, peer: &SocketAddr, now: Duration) -> bool {
        let cookie = hello.cookie;
        if cookie.len() != COOKIE_LEN {
            return false;
        }
        let salt = &cookie[..SALT_LEN];
        let tick = tick(now);
        let current = self.cookie(salt, tick, peer, &hello.signed);
        let previous = self.cookie(salt, tick.saturating_sub(1), peer, &hello.signed);
        // Both compared, in constant time, whatever the first gives.
        let a = openssl::memcmp::eq(cookie, &current);
        let b = openssl::memcmp::eq(cookie, &previous);
        a | b
    }

    /// The HelloVerifyRequest datagram that answers `hello` from `peer`, with a fresh cookie;
    /// `None` when it would be larger than the ClientHello `packet` itself (the server never
    /// sends more than it received to an address it has not verified).
    pub fn challenge(
        &self,
        packet: &[u8],
        hello: &ClientHello<'_>,
        peer: &SocketAddr,
        now: Duration,
    ) -> Option<Vec<u8>> {
        let mut salt = [0u8; SALT_LEN];
        openssl::rand::rand_bytes(&mut salt).expect("OpenSSL's random generator works");
        let cookie = self.cookie(&salt, tick(now), peer, &hello.signed);
        let challenge = hello_verify_request(hello.epoch_seq, &cookie);
        (challenge.len() <= packet.len()).then_some(challenge)
    }
}

/// The longest address [`address`] writes: the family, an IPv6 address, its flow and scope,
/// and the port.
const ADDRESS_MAX: usize = 1 + 16 + 4 + 4 + 2;

/// A peer's address as the cookie signs it: IP, port and, for IPv6, flow and scope, without
/// making a string or allocating; the bytes are `.0[..len]`.
fn address(peer: &SocketAddr) -> ([u8; ADDRESS_MAX], usize) {
    let mut out = [0; ADDRESS_MAX];
    let mut len = 0;
    let mut put = |bytes: &[u8]| {
        out[len..len + bytes.len()].copy_from_slice(bytes);
        len += bytes.len();
    };
    match peer {
        SocketAddr::V4(v4) => {
            put(&[4]);
            put(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            put(&[6]);
            put(&v6.ip().octets());
            put(&v6.flowinfo().to_be_bytes());
            put(&v6.scope_id().to_be_bytes());
        }
    }
    put(&peer.port().to_be_bytes());
    (out, len)
}

fn tick(now: Duration) -> u64 {
    now.as_secs() / COOKIE_TICK.as_secs()
}

/// A HelloVerifyRequest datagram carrying `cookie`. As OpenSSL does, it copies the
/// ClientHello's record sequence number and uses message sequence 0; both version fields say
/// DTLS 1.0, as RFC 6347 §4.2.1 asks for this message (errata 4103).
pub fn hello_verify_request(epoch_seq: u64, cookie: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(3 + cookie.len());
    body.extend_from_slice(&DTLS1_0);
    body.push(u8::try_from(cookie.len()).expect("a cookie is at most 255 bytes"));
    body.extend_from_slice(cookie);
    let mut fragment = Vec::with_capacity(12 + body.len());
    encode_handshake_fragment(
        handshake_type::HELLO_VERIFY_REQUEST,
        body.len(),
        0,
        0,
        &body,
        &mut fragment,
    );
    let mut packet = Vec::with_capacity(13 + fragment.len());
    encode_record(
        content_type::HANDSHAKE,
        DTLS1_0,
        epoch_seq,
        &fragment,
        &mut packet,
    );
    packet
}

#[cfg(test)]
mod tests {
    use openssl::hash::MessageDigest;
    use openssl::pkey::PKey;
    use openssl::sign::Signer;

    use super::CookieKey;

    /// The precomputed HMAC is OpenSSL's HMAC-SHA256 of the same bytes (RFC 2104).
    #[test]
    fn the_mac_is_hmac_sha256() {
        let key = [7u8; 32];
        let fields: [&[u8]; 3] = [b"salt", &[0; 100], b""];
        let mut signer = Signer::new(MessageDigest::sha256(), &PKey::hmac(&key).unwrap()).unwrap();
        for field in fields {
            signer.update(&(field.len() as u64).to_be_bytes()).unwrap();
            signer.update(field).unwrap();
        }
        let expected = signer.sign_to_vec().unwrap();
        assert_eq!(CookieKey::from_bytes(key).mac(&fields)[..], expected[..]);
        assert_ne!(CookieKey::from_bytes([8; 32]).mac(&fields)[..], expected[..]);
    }

    /// A cookie signs every part of the peer's address: another IP, port, family, IPv6 flow
    /// or scope gives another cookie.
    #[test]
    fn every_part_of_the_address_is_signed() {
        let key = CookieKey::from_bytes([7; 32]);
        let peers = [
            "127.0.0.1:4000",
            "127.0.0.2:4000",
            "127.0.0.1:4001",
            "[::ffff:127.0.0.1]:4000",
            "[fe80::1]:4000",
            "[fe80::1%2]:4000",
        ];
        let mut peers: Vec<std::net::SocketAddr> = peers.iter().map(|p| p.parse().unwrap()).collect();
        let mut flowed = peers[4];
        if let std::net::SocketAddr::V6(v6) = &mut flowed {
            v6.set_flowinfo(9);
        }
        peers.push(flowed);
        let cookies: std::collections::HashSet<_> = (peers.iter())
            .map(|peer| key.cookie(b"saltsalt", 1, peer, b"hello"))
            .collect();
        assert_eq!(cookies.len(), peers.len());
        let (_, len) = super::address(&"[fe80::1%2]:4000".parse().unwrap());
        assert_eq!(len, super::ADDRESS_MAX);
    }
}
