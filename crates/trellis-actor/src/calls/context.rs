//! Contexts (tractor's `open_context`): the remote function reports a first value with
//! [`Context::started`], both sides may open one two-way [`MsgStream`], and the caller ends
//! with the function's result ([`PortalContext::result`]).

use std::marker::PhantomData;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_wire::{ActorId, Outcome, Payload};

use super::options::StreamOptions;
use super::stream::MsgStream;
use crate::actor_error::ActorError;
use crate::connection::{CallEnd, Link};

/// The remote function's side of a context: report the first value with
/// [`started`](Context::started), then optionally open the two-way stream.
pub struct Context {
    link: Link,
    started: Arc<AtomicBool>,
    opened: AtomicBool,
    options: Mutex<StreamOptions>,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("caller", &self.link.conn.peer().actor)
            .field("cid", &self.link.cid)
            .finish()
    }
}

impl Context {
    /// Why the caller is gone, when the connection it called over broke (it crashed, was
    /// killed, or became unreachable and the keepalive gave up): the
    /// [`ActorError::ConnectionLost`] its own calls got. This function is cancelled then; this
    /// says why.
    pub fn caller_lost(&self) -> Option<ActorError> {
        self.link.lost().map(ActorError::from)
    }

    pub(crate) fn new(link: Link) -> Self {
        Context {
            link,
            started: Arc::new(AtomicBool::new(false)),
            opened: AtomicBool::new(false),
            options: Mutex::new(StreamOptions::default()),
        }
    }

    /// Whether [`started`](Context::started) was called, readable after the context is gone.
    pub(crate) fn started_flag(&self) -> Arc<AtomicBool> {
        self.started.clone()
    }

    /// The actor that opened the context.
    pub fn caller(&self) -> &ActorId {
        &self.link.conn.peer().actor
    }

    /// Sets how this side receives on the stream; call before [`started`](Context::started),
    /// which grants the caller its first credit.
    pub fn set_stream_options(&self, options: StreamOptions) {
        *self.options.lock().unwrap_or_else(|e| e.into_inner()) = options;
    }

    /// Sends the first value to the caller, whose `open_context` returns with it. Call it
    /// once, before opening the stream.
    ///
    /// # Errors
    ///
    /// [`ActorError::StartedTwice`] on a second call; [`ActorError::ConnectionLost`];
    /// [`ActorError::Cancelled`].
    pub async fn started<T: Serialize>(&self, value: T) -> Result<(), ActorError> {
        trellis::checkpoint_if_cancelled()?;
        if self.started.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StartedTwice);
        }
        let value = Payload::encode(&value)?;
        let options = *self.options.lock().unwrap_or_else(|e| e.into_inner());
        Ok(self.link.started(value, options.window())?)
    }

    /// Opens this side of the two-way stream: receives `Rx`, sends `Tx`.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamBeforeStarted`] before [`started`](Context::started),
    /// [`ActorError::StreamOpenedTwice`] on a second call.
    pub fn open_stream<Rx, Tx>(&self) -> Result<MsgStream<Rx, Tx>, ActorError> {
        if !self.started.load(Ordering::Acquire) {
            return Err(ActorError::StreamBeforeStarted);
        }
        if self.opened.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StreamOpenedTwice);
        }
        let options = *self.options.lock().unwrap_or_else(|e| e.into_inner());
        Ok(MsgStream::new(self.link.clone(), options))
    }
}

/// The caller's side of a context (see `Portal::open_context`): open the two-way stream, wait
/// for the function's result, or cancel it.
pub struct PortalContext<R> {
    link: Link,
    opened: Arc<AtomicBool>,
    options: StreamOptions,
    _result: PhantomData<fn() -> R>,
}

impl<R> Clone for PortalContext<R> {
    fn clone(&self) -> Self {
        PortalContext {
            link: self.link.clone(),
            opened: self.opened.clone(),
            options: self.options,
            _result: PhantomData,
        }
    }
}

impl<R> std::fmt::Debug for PortalContext<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortalContext")
            .field("actor", &self.link.conn.peer().actor)
            .field("cid", &self.link.cid)
            .finish()
    }
}

impl<R: DeserializeOwned> PortalContext<R> {
    pub(crate) fn new(link: Link, options: StreamOptions) -> Self {
        PortalContext {
            link,
            opened: Arc::new(AtomicBool::new(false)),
            options,
            _result: PhantomData,
        }
    }

    /// The actor running the function.
    pub fn actor(&self) -> &ActorId {
        &self.link.conn.peer().actor
    }

    /// Opens the caller's side of the two-way stream: receives `Rx`, sends `Tx`.
    ///
    /// # Errors
    ///
    /// [`ActorError::StreamOpenedTwice`] on a second call.
    pub fn open_stream<Rx, Tx>(&self) -> Result<MsgStream<Rx, Tx>, ActorError> {
        if self.opened.swap(true, Ordering::AcqRel) {
            return Err(ActorError::StreamOpenedTwice);
        }
        Ok(MsgStream::new(self.link.clone(), self.options))
    }

    /// Waits for the function's result. A checkpoint.
    ///
    /// # Errors
    ///
    /// [`ActorError::Remote`] when the function failed; [`ActorError::ContextCancelled`]
    /// naming who cancelled the function (this actor, after [`cancel`](PortalContext::cancel));
    /// [`ActorError::ConnectionLost`]; [`ActorError::Cancelled`].
    pub async fn result(&self) -> Result<R, ActorError> {
        let end = match self.link.wait_end().await {
            Ok(end) => end,
            Err(cancelled) => return Err(self.link.failure_or(cancelled.into()).into()),
        };
        match end {
            CallEnd::Ended(Outcome::Cancelled {
                requested_by,
                reason,
            }) => Err(ActorError::context_cancelled(
                self.actor().clone(),
                requested_by,
                reason.as_deref(),
            )),
            CallEnd::Over => Err(self.link.conn.lost().into()),
            end => {
                let value = self.link.conn.call_result(end)?;
                Ok(value.decode()?)
            }
        }
    }

    /// Asks the remote function to cancel. The context's [`result`](PortalContext::result)
    /// then says it was cancelled by this actor, and `open_context` does not fail for it.
    pub fn cancel(&self) {
        self.link
            .send_cancel(self.link.reason("PortalContext::cancel was called"));
    }
}
