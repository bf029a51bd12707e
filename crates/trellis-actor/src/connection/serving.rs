//! The calls this side serves: each runs in its own cancel scope in the service's nursery;
//! its end (value, failure, cancellation, panic) becomes the call's terminal message.

use std::panic::AssertUnwindSafe;
use std::task::Poll;

use trellis::{CancelScope, Cancelled, Nursery};
use trellis_wire::{CallKind, ErrorKind, Outcome, Payload, Role, SendError};

use super::chan::{CallEnd, Chan};
use super::conn::{Conn, Flush, Incoming, Local, Served};
use super::link::Link;
use crate::actor_error::ActorError;
use crate::error::{CallFailure, report, runtime_report};

/// A future as a served call runs it.
pub(crate) type BoxFuture<T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send>>;

/// A served call, ready to run: stream and context calls get their call's [`Link`].
pub(crate) type Prepared =
    Box<dyn FnOnce(Option<Link>) -> BoxFuture<Result<Payload, CallFailure>> + Send>;

impl Conn {
    pub(super) fn serve(&self, call: Incoming) {
        match self.inner.service.get() {
            Some(service) => service.clone().call(self, call),
            None => self.refuse(
                call.cid,
                ErrorKind::UnknownFunction,
                format!("actor {} serves no calls", self.inner.local),
            ),
        }
    }

    /// Refuses a call the peer started: an `Error` instead of the acknowledgement.
    pub(crate) fn refuse(&self, cid: u64, kind: ErrorKind, text: String) {
        let report = runtime_report(&self.inner.local, kind, text);
        let _ = self.act(Flush::Now, |s| s.refuse(cid, report));
    }

    /// Acknowledges a call and returns its value at once (the runtime's own quick calls).
    pub(crate) fn answer(&self, cid: u64, value: Payload) {
        let _ = self.act(Flush::Now, |s| {
            s.accept(cid)?;
            s.finish(cid, Outcome::Returned(value))
        });
    }

    /// Serves a call the peer started with `prepared` (its arguments decoded already) in
    /// `work`: acknowledges it and runs it in its own cancel scope.
    pub(crate) fn serve_call(
        &self,
        (cid, function): (u64, &str),
        kind: CallKind,
        prepared: Prepared,
        work: &Nursery,
    ) {
        let scope = CancelScope::new();
        let chan = (kind != CallKind::Run).then(Chan::new);
        {
            let mut state = self.lock();
            // The acknowledgement waits in the buffer: a call that completes at once sends it
            // in the same write as its result; one that has to wait flushes it then.
            if state.session.accept(cid).is_err() {
                return;
            }
            state.calls.insert(
                cid,
                Local {
                    chan: chan.clone(),
                    served: Some(Served {
                        scope: scope.clone(),
                        cancelled_by: None,
                        reason: None,
                        overrun: None,
                    }),
                    ..Local::default()
                },
            );
        }
        let link = chan.map(|chan| Link::new(self.clone(), cid, chan, kind, Role::Callee));
        let call = prepared(link);
        let conn = self.clone();
        let name = format!("serving `{function}` for actor {}", self.inner.peer.actor);
        let serves = super::conn::call_key(&self.inner.peer.actor, cid);
        let spawned = work.start_soon_named(name, async move {
            trellis::dump::serves(serves);
            let mut call = std::pin::pin!(call);
            let mut flushed = false;
            // A panic in the function fails the call (with the panic's backtrace when one was
            // captured), like any other failure; the actor goes on serving.
            let call = std::future::poll_fn(|cx| {
                let polled =
                    match std::panic::catch_unwind(AssertUnwindSafe(|| call.as_mut().poll(cx))) {
                        Ok(polled) => polled,
                        Err(payload) => {
                            Poll::Ready(Err(CallFailure::Panicked(crate::panic::report(payload))))
                        }
                    };
                if polled.is_pending() && !std::mem::replace(&mut flushed, true) {
                    conn.flush();
                }
                polled
            });
            let call = async {
                match call.await {
                    Err(CallFailure::Failed(e)) if e.is_cancelled() => Err(e),
                    other => Ok::<_, trellis::Error>(other),
                }
            };
            let outcome = scope.run(call).await;
            conn.finish_serving(cid, kind, outcome);
            Ok::<_, trellis::Error>(())
        });
        if spawned.is_err() {
            let local = self.lock().calls.remove(&cid);
            drop(local);
            let actor = self.inner.local.clone();
            let report = runtime_report(
                &actor,
                ErrorKind::ActorShuttingDown,
                format!("actor {actor} is shutting down"),
            );
            let _ = self.act(Flush::Now, |s| {
                s.finish(cid, Outcome::Failed(Box::new(report)))
            });
        }
    }

    /// How a served call that was cancelled ends: at the caller's request (its reason
    /// repeated), or because this actor was cancelled (naming whoever asked for that, with
    /// their reason), or for a reason of this actor's own (`cancelled`, when it came from
    /// outside the call's scope).
    fn cancelled_outcome(&self, served: Option<Served>, cancelled: Option<&Cancelled>) -> Outcome {
        let actor = &self.inner.local;
        if let Some(served) = served
            && let Some(requested_by) = served.cancelled_by
        {
            return Outcome::Cancelled {
                requested_by,
                reason: served.reason,
            };
        }
        let (requested_by, reason) = match self.inner.service.get().and_then(|s| s.cancelled_by()) {
            Some(asked) => asked,
            None => {
                let reason = match cancelled {
                    Some(cancelled) => crate::cancel_reason::cancelled_to_wire(cancelled, actor),
                    None => crate::cancel_reason::to_wire(None, actor),
                };
                (actor.clone(), reason)
            }
        };
        Outcome::Cancelled {
            requested_by,
            reason: Some(reason),
        }
    }

    /// Sends the end of a call we served.
    fn finish_serving(
        &self,
        cid: u64,
        kind: CallKind,
        outcome: Result<Option<Result<Payload, CallFailure>>, trellis::Error>,
    ) {
        let Some(local) = self.lock().calls.remove(&cid) else {
            // The call is over already: the peer broke it, or the connection ended.
            return;
        };
        if let Some(chan) = &local.chan {
            chan.end(CallEnd::Over, &self.inner.local);
        }
        let served = local.served;
        let actor = &self.inner.local;
        let overrun = served.as_ref().and_then(|s| s.overrun.clone());
        let outcome = match overrun {
            Some(overrun) => Ok(Some(Err(CallFailure::Failed(trellis::Error::new(overrun))))),
            None => outcome,
        };
        let outcome = match outcome {
            // A stream whose caller stopped taking items ends normally.
            Ok(Some(Err(CallFailure::Failed(error))))
                if kind == CallKind::Stream
                    && matches!(
                        error.downcast_ref::<ActorError>(),
                        Some(ActorError::ReceiverStopped)
                    ) =>
            {
                Outcome::Returned(Payload::unit())
            }
            Ok(Some(Ok(value))) => Outcome::Returned(value),
            Ok(Some(Err(failure))) => Outcome::Failed(Box::new(match failure {
                CallFailure::BadResult(text) => runtime_report(
                    actor,
                    ErrorKind::Failed,
                    format!("the result does not encode: {text}"),
                ),
                CallFailure::Failed(error) => {
                    self.with_error_types(|types| report(actor, ErrorKind::Failed, &error, types))
                }
                CallFailure::Panicked(panic) => crate::panic::error_report(actor, panic),
            })),
            Ok(None) => self.cancelled_outcome(served, None),
            Err(error) => self.cancelled_outcome(served, error.as_cancelled()),
        };
        // The caller waits for the end of its call: a result too large for a frame still
        // ends it, as an error.
        let sent = self.act(Flush::Now, |s| s.finish(cid, outcome));
        if let Err(SendError::TooLarge(e)) = sent {
            let report = runtime_report(
                actor,
                ErrorKind::Failed,
                format!("the result is too large: {e}"),
            );
            let _ = self.act(Flush::Now, |s| {
                s.finish(cid, Outcome::Failed(Box::new(report)))
            });
        } else if let Err(e) = sent {
            tracing::debug!(cid, %e, "could not end a served call");
        }
    }
}
