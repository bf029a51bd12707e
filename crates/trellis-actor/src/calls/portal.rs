//! Portals: calling functions in another actor, with one result ([`Portal::run`]), a stream
//! of items ([`Portal::open_stream_from`]) or a context ([`Portal::open_context`]).

use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis::CancelScope;
use trellis_wire::{ActorId, CallKind, Outcome, Payload, Role};

use super::context::PortalContext;
use super::options::StreamOptions;
use super::stream::MsgStream;
use crate::actor_error::ActorError;
use crate::connection::{CallEnd, Conn, Link};
use crate::functions::{ContextFn, RemoteFn, StreamFn};
use crate::info::{ActorInfo, FunctionInfo};
use crate::names;

/// A way to call functions in another actor.
#[derive(Clone)]
pub struct Portal {
    conn: Conn,
}

impl std::fmt::Debug for Portal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Portal")
            .field("actor", &self.conn.peer().actor)
            .finish()
    }
}

impl Portal {
    pub(crate) fn new(conn: Conn) -> Self {
        Portal { conn }
    }

    /// The actor at the other end.
    pub fn actor_id(&self) -> &ActorId {
        &self.conn.peer().actor
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.conn.peer().pid
    }

    /// Calls `function(args…)` in the actor and returns its result. `args` is the tuple of
    /// its arguments: `portal.run(add, (1, 2))`.
    ///
    /// Cancelling the caller cancels the remote call: the remote function sees `Cancelled` at
    /// its next checkpoint, and this call returns `Cancelled` once the remote side
    /// acknowledged it.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future before the call ended (a `select!`, an aborted task, a web
    /// framework dropping the handler of a client that went away) asks the remote side to
    /// cancel the call too, without waiting for it; its answer is dropped. Cancelling the
    /// caller's scope instead waits for the acknowledgement, as above.
    ///
    /// # Errors
    ///
    /// [`ActorError::Remote`] when the function failed (`?` gives the remote failure
    /// itself); [`ActorError::ConnectionLost`] when the actor went away;
    /// [`ActorError::Cancelled`]; [`ActorError::Payload`] when the arguments or the result
    /// did not convert.
    pub async fn run<F, Args>(&self, function: F, args: Args) -> Result<F::Output, ActorError>
    where
        F: RemoteFn<Args>,
        Args: Serialize,
    {
        self.run_named(function.name(), args).await
    }

    /// [`run`](Portal::run) by the function's registered name.
    ///
    /// # Errors
    ///
    /// As [`run`](Portal::run).
    pub async fn run_named<R, Args>(&self, name: &str, args: Args) -> Result<R, ActorError>
    where
        R: DeserializeOwned,
        Args: Serialize,
    {
        let args = Payload::encode(&args)?;
        let value = self.conn.call(name, args).await?;
        Ok(value.decode()?)
    }

    /// What the actor tells about itself: identity, host, address, parent, uptime, open calls
    /// and streams (the runtime function `trellis.info`).
    ///
    /// # Errors
    ///
    /// [`ActorError::ConnectionLost`] when the actor is gone; [`ActorError::Cancelled`].
    pub async fn info(&self) -> Result<ActorInfo, ActorError> {
        self.run_named(names::INFO, ()).await
    }

    /// What every task of the actor is doing: its nurseries, scopes and tasks, each task with
    /// what it waits on (the runtime function `trellis.dump`).
    ///
    /// # Errors
    ///
    /// [`ActorError::ConnectionLost`] when the actor is gone; [`ActorError::Cancelled`].
    pub async fn dump(&self) -> Result<crate::ActorDump, ActorError> {
        self.run_named(names::DUMP, ()).await
    }

    /// The functions the actor serves, by name, with their call kinds (the runtime function
    /// `trellis.functions`).
    ///
    /// # Errors
    ///
    /// [`ActorError::ConnectionLost`] when the actor is gone; [`ActorError::Cancelled`].
    pub async fn functions(&self) -> Result<Vec<FunctionInfo>, ActorError> {
        self.run_named(names::FUNCTIONS, ()).await
    }

    /// Asks the actor to cancel everything it runs and exit. Returns once the request is
    /// acknowledged; its parent's nursery reaps it.
    ///
    /// # Errors
    ///
    /// [`ActorError::ConnectionLost`] when the actor is gone already;
    /// [`ActorError::Cancelled`].
    pub async fn cancel_actor(&self) -> Result<(), ActorError> {
        let reason = crate::cancel_reason::to_wire(
            Some(&trellis::CancelReason::new(trellis::CancelSource::Explicit)),
            self.conn.local(),
        );
        self.conn
            .call(names::CANCEL_ACTOR, crate::cancel_reason::to_args(&reason))
            .await?;
        Ok(())
    }

    /// [`cancel_actor`](Portal::cancel_actor), saying why: the actor's calls see a
    /// `Cancelled` with this reason, and their callers a
    /// [`ContextCancelled`](ActorError::ContextCancelled) carrying it.
    ///
    /// # Errors
    ///
    /// As [`cancel_actor`](Portal::cancel_actor).
    pub async fn cancel_actor_with_reason(&self, reason: &str) -> Result<(), ActorError> {
        let reason =
            crate::cancel_reason::here(trellis::CancelSource::Explicit, reason, self.conn.local());
        self.conn
            .call(names::CANCEL_ACTOR, crate::cancel_reason::to_args(&reason))
            .await?;
        Ok(())
    }
}

/// Sends `Cancel` if the caller's future is dropped while its call runs (an aborted task): the
/// remote function does not outlive its caller.
struct CallGuard<'a> {
    link: &'a Link,
    armed: bool,
}

impl<'a> CallGuard<'a> {
    fn new(link: &'a Link) -> Self {
        CallGuard { link, armed: true }
    }

    /// The call ends through another guard, or normally.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for CallGuard<'_> {
    fn drop(&mut self) {
        if self.armed && !self.link.call_over() {
            self.link
                .send_cancel(self.link.reason("the caller stopped waiting for the call"));
            self.link.conn.forget_call(self.link.cid);
        }
    }
}

/// Runs the caller's `body` of a stream or context call, then ends the call by tractor's
/// rules: a body that fails cancels the remote function and its error is what the caller
/// gets (never masked by the cancellation it caused); a failure of the call (a remote error,
/// an overrun, the connection lost) cancels the body and is what the caller gets; a body that
/// succeeds waits for the context's result (a context) or cancels the rest of the stream (a
/// one-way stream).
async fn run_body<T>(
    link: &Link,
    body: impl Future<Output = Result<T, trellis::Error>>,
) -> Result<T, trellis::Error> {
    let _guard = CallGuard::new(link);
    let scope = CancelScope::new();
    link.chan.set_body(scope.clone(), link.conn.local());
    let value = match scope.run(body).await {
        Ok(Some(value)) => value,
        Ok(None) => {
            link.cancel_and_wait(link.reason("the caller's body was cancelled"))
                .await;
            return Err(link.failure());
        }
        Err(error) => {
            link.cancel_and_wait(link.reason_for(&error, "the caller's body"))
                .await;
            return Err(error);
        }
    };
    let end = if link.kind == CallKind::Stream {
        link.cancel_and_wait(link.reason("the caller is done with the stream"))
            .await;
        match link.chan.terminal() {
            Some(end) => end,
            None => return Ok(value), // gave up waiting for the acknowledgement
        }
    } else {
        match link.wait_end().await {
            Ok(end) => end,
            Err(cancelled) => {
                let cancelled = trellis::Error::from(cancelled);
                link.cancel_and_wait(link.reason_for(&cancelled, "the caller"))
                    .await;
                return Err(cancelled);
            }
        }
    };
    match end {
        CallEnd::Ended(Outcome::Returned(_)) => Ok(value),
        CallEnd::Ended(Outcome::Cancelled { requested_by, .. })
            if &requested_by == link.conn.local() =>
        {
            Ok(value)
        }
        CallEnd::Over => Err(link.conn.lost()),
        end => link.conn.call_result(end).map(|_| value),
    }
}

impl Portal {
    /// Starts a stream or context call (a checkpoint first).
    fn open_link<A: Serialize>(
        &self,
        function: &str,
        kind: CallKind,
        args: &A,
        options: StreamOptions,
    ) -> Result<Link, trellis::Error> {
        trellis::checkpoint_if_cancelled()?;
        let args = Payload::encode(args).map_err(ActorError::from)?;
        let (cid, chan) = self
            .conn
            .open_call(function, kind, args, options.window())?;
        Ok(Link::new(self.conn.clone(), cid, chan, kind, Role::Caller))
    }

    /// Calls a stream function in the actor and runs `body` with the stream of its items
    /// (tractor's `open_stream_from`). Returns what `body` returns.
    ///
    /// When `body` returns first, the remote function is cancelled (the caller sees no
    /// cancellation error for that). When the remote function fails, `body` is cancelled and
    /// the failure is returned; when `body` fails, the remote function is cancelled and
    /// `body`'s error is returned.
    ///
    /// # Errors
    ///
    /// As described; [`ActorError::ConnectionLost`] when the actor went away.
    pub async fn open_stream_from<F, M, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: StreamFn<M>,
        B: FnOnce(MsgStream<F::Item>) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        self.open_stream_from_with(function, args, StreamOptions::default(), body)
            .await
    }

    /// [`open_stream_from`](Portal::open_stream_from) with the receiving end's buffer and flow
    /// control.
    ///
    /// # Errors
    ///
    /// As [`open_stream_from`](Portal::open_stream_from); [`StreamOverrun`](crate::StreamOverrun) in
    /// [`Flow::Overrun`](crate::Flow::Overrun) mode.
    pub async fn open_stream_from_with<F, M, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        options: StreamOptions,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: StreamFn<M>,
        B: FnOnce(MsgStream<F::Item>) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let link = self.open_link(function.name(), CallKind::Stream, &args, options)?;
        let stream = MsgStream::new(link.clone(), options);
        run_body(&link, body(stream)).await
    }

    /// Opens a context with a context function in the actor (tractor's `open_context`): waits
    /// for the function's [`started`](crate::Context::started) value, then runs `body` with the
    /// caller's side of the context and that value. Returns what `body` returns, once the
    /// function returned too (its result is [`PortalContext::result`]).
    ///
    /// When `body` fails, the function is cancelled and `body`'s error is returned; when the
    /// function fails, `body` is cancelled and the function's error is returned. A context
    /// cancelled through [`PortalContext::cancel`] ends without error; one cancelled by
    /// another actor (`cancel_actor`) fails with [`ActorError::ContextCancelled`] naming it.
    ///
    /// # Errors
    ///
    /// As described; [`ActorError::NotStarted`] when the function returned without calling
    /// `started`; [`ActorError::ConnectionLost`] when the actor went away.
    pub async fn open_context<F, M, S, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: ContextFn<M>,
        S: DeserializeOwned,
        B: FnOnce(PortalContext<F::Output>, S) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        self.open_context_with(function, args, StreamOptions::default(), body)
            .await
    }

    /// [`open_context`](Portal::open_context) with the caller's receiving end's buffer and
    /// flow control.
    ///
    /// # Errors
    ///
    /// As [`open_context`](Portal::open_context).
    pub async fn open_context_with<F, M, S, B, Fut, T>(
        &self,
        function: F,
        args: F::Args,
        options: StreamOptions,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: ContextFn<M>,
        S: DeserializeOwned,
        B: FnOnce(PortalContext<F::Output>, S) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let link = self.open_link(function.name(), CallKind::Context, &args, options)?;
        let guard = CallGuard::new(&link);
        let first = match link.wait_started().await {
            Ok(first) => first,
            Err(error) => {
                link.cancel_and_wait(link.reason_for(&error, "the caller"))
                    .await;
                return Err(error);
            }
        };
        let first: S = match first.decode() {
            Ok(first) => first,
            Err(e) => {
                link.cancel_and_wait(link.reason("the context's first value did not decode"))
                    .await;
                return Err(ActorError::from(e).into());
            }
        };
        guard.disarm();
        let ctx = PortalContext::new(link.clone(), options);
        run_body(&link, body(ctx, first)).await
    }
}
