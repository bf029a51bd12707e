//! Who may talk: the secrets the two sides of a connection prove they share, and the proofs
//! (`docs/wire-protocol.md` §4).
//!
//! Each side sends a fresh random nonce in its `Hello`. The connector then proves it holds the
//! secret of a named credential with an HMAC-SHA256 over both nonces and its identity; the
//! acceptor checks it (in constant time) and answers with its own proof, over both nonces and
//! both identities. A proof is bound to the verifier's fresh nonce, so it cannot be replayed,
//! and to the prover's role, so it cannot be reflected back at its maker; the secret itself
//! never travels.

use std::fmt;
use std::sync::Arc;

use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

use crate::{ActorId, Side};

/// The length of a `Hello`'s nonce, in bytes.
pub const NONCE_LEN: usize = 32;

/// The length of a proof (an HMAC-SHA256), in bytes.
pub const PROOF_LEN: usize = 32;

/// The shortest secret a [`Key`] takes, in bytes.
pub const MIN_SECRET_LEN: usize = 16;

/// The name of the credential every member of an actor tree holds.
pub const TREE_CREDENTIAL: &str = "tree";

/// A secret that may not serve as a [`Key`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Too few bytes to resist guessing.
    #[error("a secret must have at least {MIN_SECRET_LEN} bytes, this one has {len}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// A credential's name is empty or longer than 255 bytes.
    #[error("a credential's name must have 1 to 255 bytes")]
    BadName,
}

/// A named secret: the credential a connector presents, or one an acceptor accepts. Its
/// `Debug` shows the name only.
#[derive(Clone)]
pub struct Key {
    name: Arc<str>,
    key: hmac::Key,
}

impl Key {
    /// The credential `name` with `secret`.
    ///
    /// # Errors
    ///
    /// The secret is shorter than [`MIN_SECRET_LEN`], or the name empty or too long.
    pub fn new(name: &str, secret: &[u8]) -> Result<Key, KeyError> {
        if name.is_empty() || name.len() > 255 {
            return Err(KeyError::BadName);
        }
        if secret.len() < MIN_SECRET_LEN {
            return Err(KeyError::TooShort { len: secret.len() });
        }
        Ok(Key {
            name: name.into(),
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        })
    }

    /// The tree credential ([`TREE_CREDENTIAL`]) with `secret`.
    ///
    /// # Errors
    ///
    /// As [`Key::new`].
    pub fn tree(secret: &[u8]) -> Result<Key, KeyError> {
        Key::new(TREE_CREDENTIAL, secret)
    }

    /// The credential's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// What one side of a connection proves and accepts. As the connector it presents its first
/// key (or no credential when it has none); as the acceptor it accepts any of its keys, and
/// peers without a credential when [`accept_anonymous`](Keyring::accept_anonymous) says so.
#[derive(Debug, Clone, Default)]
pub struct Keyring {
    keys: Vec<Key>,
    anonymous: bool,
}

impl Keyring {
    /// Presents and accepts `key`.
    pub fn new(key: Key) -> Keyring {
        Keyring {
            keys: vec![key],
            anonymous: false,
        }
    }

    /// Presents no credential, and accepts only peers that present none: a connection between
    /// two sides that authenticate nothing (tests, public services).
    pub fn open() -> Keyring {
        Keyring {
            keys: Vec::new(),
            anonymous: true,
        }
    }

    /// Accepts `key` too (presented only when it is the first).
    #[must_use]
    pub fn accept(mut self, key: Key) -> Keyring {
        self.keys.push(key);
        self
    }

    /// Accepts peers that present no credential.
    #[must_use]
    pub fn accept_anonymous(mut self) -> Keyring {
        self.anonymous = true;
        self
    }

    /// The key presented as the connector, if any.
    pub fn presented(&self) -> Option<&Key> {
        self.keys.first()
    }

    /// Whether peers without a credential are accepted.
    pub fn accepts_anonymous(&self) -> bool {
        self.anonymous
    }

    /// The accepted key named `name`.
    pub fn find(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| &*k.name == name)
    }
}

/// A fresh random nonce from the operating system's generator.
///
/// # Panics
///
/// If the operating system has no random numbers to give (it always has, on Linux).
pub fn nonce() -> [u8; NONCE_LEN] {
    let mut nonce = [0; NONCE_LEN];
    SystemRandom::new()
        .fill(&mut nonce)
        .expect("the system's random number generator works");
    nonce
}

/// What a proof is computed over (§4): a label naming the prover's side, both nonces, the
/// credential's name and the identities, each field preceded by its length as a big-endian
/// `u32`.
fn transcript(
    prover: Side,
    nonce_connector: &[u8],
    nonce_acceptor: &[u8],
    credential: &str,
    connector: &ActorId,
    acceptor: Option<&ActorId>,
) -> Vec<u8> {
    let label: &[u8] = match prover {
        Side::Connector => b"trellis connector proof",
        Side::Acceptor => b"trellis acceptor proof",
    };
    let mut fields = vec![
        label,
        nonce_connector,
        nonce_acceptor,
        credential.as_bytes(),
        connector.name.as_bytes(),
        connector.uid.as_bytes(),
    ];
    if let (Side::Acceptor, Some(acceptor)) = (prover, acceptor) {
        fields.push(acceptor.name.as_bytes());
        fields.push(acceptor.uid.as_bytes());
    }
    let mut out = Vec::with_capacity(fields.iter().map(|f| 4 + f.len()).sum());
    for field in fields {
        let len = u32::try_from(field.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(field);
    }
    out
}

/// The proof a `prover` sends in its `Auth`: HMAC-SHA256 under `key` over the transcript of
/// §4. The connector's proof covers its own identity (`acceptor` is ignored: the acceptor has
/// not said who it is yet); the acceptor's covers both.
pub fn proof(
    key: &Key,
    prover: Side,
    nonce_connector: &[u8],
    nonce_acceptor: &[u8],
    connector: &ActorId,
    acceptor: Option<&ActorId>,
) -> [u8; PROOF_LEN] {
    let message = transcript(
        prover,
        nonce_connector,
        nonce_acceptor,
        &key.name,
        connector,
        acceptor,
    );
    let tag = hmac::sign(&key.key, &message);
    let mut out = [0; PROOF_LEN];
    out.copy_from_slice(tag.as_ref());
    out
}

/// Whether `claimed` is the proof [`proof`] computes, compared in constant time.
pub(crate) fn verify(
    key: &Key,
    prover: Side,
    nonce_connector: &[u8],
    nonce_acceptor: &[u8],
    connector: &ActorId,
    acceptor: Option<&ActorId>,
    claimed: &[u8],
) -> bool {
    let message = transcript(
        prover,
        nonce_connector,
        nonce_acceptor,
        &key.name,
        connector,
        acceptor,
    );
    hmac::verify(&key.key, &message, claimed).is_ok()
}
