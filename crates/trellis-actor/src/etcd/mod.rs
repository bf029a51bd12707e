//! An etcd v3 client for the registry (feature `etcd`): names kept as keys under leases, found
//! by range reads and waited for by watches, over etcd's JSON gateway (HTTP/1.1, `/v3/…`).
//! It speaks the little of etcd the registry needs, with no gRPC stack underneath.

mod client;
// Public to the fuzz target under `--cfg fuzzing` only.
#[cfg(fuzzing)]
#[doc(hidden)]
pub mod http;
#[cfg(not(fuzzing))]
#[allow(unreachable_pub)]
mod http;

use std::time::Duration;

pub(crate) use client::{Client, Event, KeyValue};

/// An etcd cluster as the registry uses it: its client endpoints, the prefix of the keys
/// (one per tree, or shared by trees that find each other), and the lease time of an
/// actor's entry (how long a killed actor's name outlives it when nobody removes it).
///
/// Each actor's entry is the key `<prefix>/actors/<name>/<uid>` (its value: JSON with the
/// name, uid and address), under a lease the actor keeps alive while it lives.
#[derive(Debug, Clone)]
pub struct Etcd {
    pub(crate) endpoints: Vec<String>,
    pub(crate) prefix: String,
    pub(crate) lease: Duration,
    pub(crate) timeout: Duration,
}

impl Etcd {
    /// The cluster whose client endpoints are `endpoints` (`http://host:port` or
    /// `host:port`; tried in order). Keys go under `/trellis`; leases last 10 s.
    pub fn new<I, S>(endpoints: I) -> Etcd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: "/trellis".into(),
            lease: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
        }
    }

    /// The prefix of the registry's keys (default `/trellis`).
    #[must_use]
    pub fn prefix(mut self, prefix: impl Into<String>) -> Etcd {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// How long an actor's entry outlives the actor when nobody removes it (default 10 s;
    /// etcd rounds very short leases up).
    #[must_use]
    pub fn lease(mut self, lease: Duration) -> Etcd {
        self.lease = lease.max(Duration::from_secs(1));
        self
    }

    /// How long one request to etcd may take before the endpoint counts as unreachable
    /// (default 5 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Etcd {
        self.timeout = timeout;
        self
    }
}

/// Why etcd did not answer as asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum EtcdError {
    /// No endpoint could be reached, or one stopped answering.
    #[error("etcd is unreachable: {0}")]
    Unreachable(String),
    /// etcd refused the request.
    #[error("etcd refused the request: {0}")]
    Refused(String),
    /// What came back is not what etcd sends.
    #[error("etcd sent a bad reply: {0}")]
    BadReply(String),
}

/// Standard base64 (RFC 4648, with padding): how etcd's gateway carries keys and values.
pub(crate) mod base64 {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub(crate) fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for group in bytes.chunks(3) {
            let n = group
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= group.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
        let text = text.as_bytes();
        if text.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(text.len() / 4 * 3);
        for (index, group) in text.chunks(4).enumerate() {
            let last = index == text.len() / 4 - 1;
            let pad = group.iter().rev().take_while(|&&c| c == b'=').count();
            if pad > 2 || pad > 0 && !last {
                return None;
            }
            let mut n = 0u32;
            for &c in &group[..4 - pad] {
                let v = ALPHABET.iter().position(|&a| a == c)? as u32;
                n = n << 6 | v;
            }
            n <<= 6 * pad as u32;
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        Some(out)
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn round_trips_and_refuses_what_is_not_base64() {
            for text in [
                "",
                "f",
                "fo",
                "foo",
                "foob",
                "fooba",
                "foobar",
                "/trellis/actors/x",
            ] {
                let encoded = super::encode(text.as_bytes());
                assert_eq!(
                    super::decode(&encoded).unwrap(),
                    text.as_bytes(),
                    "{encoded}"
                );
            }
            assert_eq!(super::encode(b"foobar"), "Zm9vYmFy");
            assert_eq!(super::encode(b"fo"), "Zm8=");
            for bad in ["Zm8", "Zm=8", "Z===", "Zm9v!mFy", "Zm8=Zm8="] {
                assert_eq!(super::decode(bad), None, "{bad}");
            }
        }
    }
}
