//! File I/O whose operations are checkpoints: a thin layer over `tokio::fs` (which runs the
//! blocking calls on tokio's blocking threads, as Trio's `Path` and `open_file` run them on
//! worker threads). A cancelled operation fails with `Cancelled`; one already handed to a
//! thread finishes there, and its result is dropped.

use std::io;

use crate::IoError;
use std::path::Path;

use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

/// Reads a whole file; a checkpoint.
///
/// # Errors
///
/// The I/O error, or `Cancelled`.
pub async fn read(path: impl AsRef<Path>) -> Result<Vec<u8>, IoError> {
    trellis::checkpoint_if_cancelled()?;
    Ok(trellis::cancellable(tokio::fs::read(path.as_ref())).await??)
}

/// Writes a whole file (creating or truncating it); a checkpoint.
///
/// # Errors
///
/// The I/O error, or `Cancelled`.
pub async fn write(path: impl AsRef<Path>, data: impl AsRef<[u8]>) -> Result<(), IoError> {
    trellis::checkpoint_if_cancelled()?;
    Ok(trellis::cancellable(tokio::fs::write(path.as_ref(), data.as_ref())).await??)
}

/// Removes a file; a checkpoint.
///
/// # Errors
///
/// The I/O error, or `Cancelled`.
pub async fn remove_file(path: impl AsRef<Path>) -> Result<(), IoError> {
    trellis::checkpoint_if_cancelled()?;
    Ok(trellis::cancellable(tokio::fs::remove_file(path.as_ref())).await??)
}

/// An open file whose operations are checkpoints (Trio's async file object).
#[derive(Debug)]
pub struct File {
    inner: tokio::fs::File,
}

impl File {
    /// Opens a file for reading; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn open(path: impl AsRef<Path>) -> Result<File, IoError> {
        trellis::checkpoint_if_cancelled()?;
        let inner = trellis::cancellable(tokio::fs::File::open(path.as_ref())).await??;
        Ok(File { inner })
    }

    /// Creates (or truncates) a file for writing; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn create(path: impl AsRef<Path>) -> Result<File, IoError> {
        trellis::checkpoint_if_cancelled()?;
        let inner = trellis::cancellable(tokio::fs::File::create(path.as_ref())).await??;
        Ok(File { inner })
    }

    /// Reads up to `buf.len()` bytes; 0 at the end of the file; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.read(buf)).await??)
    }

    /// Reads the rest of the file; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn read_to_end(&mut self) -> Result<Vec<u8>, IoError> {
        trellis::checkpoint_if_cancelled()?;
        let mut all = Vec::new();
        trellis::cancellable(self.inner.read_to_end(&mut all)).await??;
        Ok(all)
    }

    /// Writes all of `data`; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn write_all(&mut self, data: &[u8]) -> Result<(), IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.write_all(data)).await??)
    }

    /// Moves the file position; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn seek(&mut self, pos: io::SeekFrom) -> Result<u64, IoError> {
        trellis::checkpoint_if_cancelled()?;
        Ok(trellis::cancellable(self.inner.seek(pos)).await??)
    }

    /// Flushes to the operating system and waits for the data to reach the disk; a checkpoint.
    ///
    /// # Errors
    ///
    /// The I/O error, or `Cancelled`.
    pub async fn sync_all(&mut self) -> Result<(), IoError> {
        trellis::checkpoint_if_cancelled()?;
        trellis::cancellable(self.inner.flush()).await??;
        Ok(trellis::cancellable(self.inner.sync_all()).await??)
    }

    /// The tokio file underneath (`AsyncRead`/`AsyncWrite`/`AsyncSeek`).
    pub fn get_mut(&mut self) -> &mut tokio::fs::File {
        &mut self.inner
    }
}
