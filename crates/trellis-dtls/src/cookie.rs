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

use openssl::hash::MessageDigest;
use openssl::pkey::PKey;
use openssl::sign::Signer;

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
pub struct CookieKey([u8; 32]);

impl std::fmt::Debug for CookieKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieKey(..)")
    }
}

impl CookieKey {
    /// A fresh random key.
    ///
    /// # Panics
    ///
    /// When OpenSSL's random generator fails (it cannot be seeded), as nothing is safe then.
    pub fn random() -> Self {
        let mut key = [0u8; 32];
        openssl::rand::rand_bytes(&mut key).expect("OpenSSL's random generator works");
        CookieKey(key)
    }

    /// A key from fixed bytes (tests and fuzz targets).
    #[cfg(any(test, fuzzing))]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        CookieKey(bytes)
    }

    fn cookie(&self, salt: &[u8], tick: u64, peer: &SocketAddr, signed: &[u8]) -> [u8; COOKIE_LEN] {
        // Each field length-prefixed, so that no two inputs sign the same bytes.
        let field = |signer: &mut Signer<'_>, bytes: &[u8]| {
            signer
                .update(&(bytes.len() as u64).to_be_bytes())
                .and_then(|()| signer.update(bytes))
                .expect("HMAC update");
        };
        let key = PKey::hmac(&self.0).expect("an HMAC key");
        let mut signer = Signer::new(MessageDigest::sha256(), &key).expect("an HMAC signer");
        field(&mut signer, salt);
        field(&mut signer, &tick.to_be_bytes());
        field(&mut signer, peer.to_string().as_bytes());
        field(&mut signer, signed);
        let digest = signer.sign_to_vec().expect("HMAC");
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
