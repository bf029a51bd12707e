//! The synchronisation types of the channel and the broadcast receiver: std's, or loom's when
//! the crate is built with `--cfg trellis_loom` for the model checks in `tests/loom.rs`.
//!
//! (A cfg of our own rather than `loom`, which would also switch tokio's internals.)

#[cfg(trellis_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicUsize, fence};
#[cfg(trellis_loom)]
pub(crate) use loom::sync::{Arc, Mutex, MutexGuard};
#[cfg(not(trellis_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicUsize, fence};
#[cfg(not(trellis_loom))]
pub(crate) use std::sync::{Arc, Mutex, MutexGuard};
