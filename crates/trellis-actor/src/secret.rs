//! The tree's secret: what every member proves in each connection's handshake
//! (`docs/wire-protocol.md` §4), where it comes from, and how it reaches a child.

use std::fmt;
use std::io::Read;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use trellis_wire::auth::{MIN_SECRET_LEN, nonce};
use trellis_wire::{Key, KeyError};

/// The environment variable naming a file that holds the tree's secret.
pub const SECRET_FILE_ENV: &str = "TRELLIS_SECRET_FILE";

/// The environment variable holding the tree's secret itself (prefer [`SECRET_FILE_ENV`]: a
/// process's environment is passed on to everything it starts).
pub const SECRET_ENV: &str = "TRELLIS_SECRET";

/// The name of the file, in an actor's private socket directory, that holds its tree's secret
/// for the operator's tools (the `trellis` command finds it next to a `unix:` address).
pub const SECRET_FILE_NAME: &str = "secret";

/// The secret every member of an actor tree holds, and proves (without revealing it) in the
/// handshake of every connection. The root makes a fresh one unless given one; children get
/// it from their parent through a pipe, never on a command line or in the environment. Its
/// `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

/// A secret that could not be read or used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// Shorter than 16 bytes.
    #[error("a tree secret must have at least {MIN_SECRET_LEN} bytes, this one has {len}")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// The file could not be read.
    #[error("cannot read the secret file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Other users may read or write the file: its secret may be known.
    #[error(
        "the secret file {path} is accessible to other users (mode {mode:o}): make it 0600 or 0400"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A parent handed over something that is not a secret.
    #[error("the parent's secret did not arrive: {0}")]
    Handoff(String),
}

impl Secret {
    /// A fresh secret: 32 bytes from the operating system's random generator.
    pub fn generate() -> Secret {
        Secret(nonce().to_vec().into())
    }

    /// A secret of the given bytes (16 at least; 32 random bytes are what
    /// [`generate`](Secret::generate) makes).
    ///
    /// # Errors
    ///
    /// [`SecretError::TooShort`].
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Secret, SecretError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_SECRET_LEN {
            return Err(SecretError::TooShort { len: bytes.len() });
        }
        Ok(Secret(bytes.into()))
    }

    /// The secret in the file at `path` (a final newline is not part of it). The file must be
    /// accessible to its owner only, as ssh demands of a private key.
    ///
    /// # Errors
    ///
    /// The file cannot be read, other users may access it, or its secret is too short.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Secret, SecretError> {
        let path = path.as_ref();
        let read = |source| SecretError::Read {
            path: path.to_owned(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(read)?;
        let mode = file.metadata().map_err(read)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(SecretError::Exposed {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(read)?;
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
        }
        Secret::new(bytes)
    }

    /// The secret the environment names: the file [`SECRET_FILE_ENV`] names, else the value
    /// of [`SECRET_ENV`]; `None` when neither is set.
    ///
    /// # Errors
    ///
    /// As [`from_file`](Secret::from_file) and [`new`](Secret::new).
    pub fn from_env() -> Result<Option<Secret>, SecretError> {
        if let Some(path) = std::env::var_os(SECRET_FILE_ENV) {
            return Secret::from_file(path).map(Some);
        }
        match std::env::var_os(SECRET_ENV) {
            Some(value) => Secret::new(value.into_encoded_bytes()).map(Some),
            None => Ok(None),
        }
    }

    /// The secret next to the actor socket `socket` (in its private directory), written there
    /// by the actor for its user's tools.
    ///
    /// # Errors
    ///
    /// As [`from_file`](Secret::from_file).
    pub fn beside(socket: &Path) -> Result<Secret, SecretError> {
        let dir = socket.parent().unwrap_or(Path::new("."));
        Secret::from_file(dir.join(SECRET_FILE_NAME))
    }

    /// Writes the secret to a new file `path`, readable by its owner only.
    pub(crate) fn write_private(&self, path: &Path) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(&self.0)
    }

    /// The secret as a line of hex digits, as a parent hands it to its child.
    pub(crate) fn handoff(&self) -> String {
        let mut line: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        line.push('\n');
        line
    }

    /// Reads the line [`handoff`](Secret::handoff) writes.
    pub(crate) fn receive(mut from: impl Read) -> Result<Secret, SecretError> {
        let mut line = Vec::new();
        let mut byte = [0];
        // Byte by byte up to the newline: nothing after it is taken from the stream.
        while line.len() < 1024 {
            match from.read(&mut byte) {
                Ok(0) => break,
                Ok(_) if byte[0] == b'\n' => break,
                Ok(_) => line.push(byte[0]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(SecretError::Handoff(e.to_string())),
            }
        }
        let hex = std::str::from_utf8(&line).map_err(|e| SecretError::Handoff(e.to_string()))?;
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| SecretError::Handoff("not hex digits".into()))?;
        Secret::new(bytes)
    }

    /// The tree credential this secret makes.
    pub(crate) fn key(&self) -> Key {
        Key::tree(&self.0).expect("a secret has at least MIN_SECRET_LEN bytes")
    }

    /// The credential `name` this secret makes (a client's).
    pub(crate) fn named_key(&self, name: &str) -> Result<Key, KeyError> {
        Key::new(name, &self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}
