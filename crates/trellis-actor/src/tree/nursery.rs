//! Actor nurseries: child actor processes supervised like tasks, and portals to call them.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use tokio::sync::Notify;
use trellis::sync::Event;
use trellis::{CancelScope, CancelSource, Cancelled, Nursery, TaskHandle};

use super::placement::Placement;
use super::spawn::{Process, spawn};
use crate::actor::{Actor, current};
use crate::actor_error::ActorError;
use crate::calls::Portal;
use crate::connection::{Conn, End};
use crate::functions::RemoteFn;
use crate::names::CANCEL_ACTOR;
use crate::transport::remove_socket_dir;

/// A nursery of actors: child processes that live no longer than it. See [`open_nursery`].
#[derive(Clone)]
pub struct ActorNursery {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ActorNursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorNursery")
            .field("actor", self.inner.actor.id())
            .finish()
    }
}

struct Inner {
    actor: Actor,
    nursery: Nursery,
    /// Set when the body is done: daemon actors are then cancelled.
    closing: Arc<Event>,
    /// Failures of `run_in_actor` functions, raised when the nursery closes.
    failures: Mutex<Vec<trellis::Error>>,
    /// `run_in_actor` calls still running.
    running: Mutex<usize>,
    settled: Notify,
}

/// Opens a nursery of child actors in the current actor, runs `body` with it, and returns
/// once every child has exited and been reaped.
///
/// As in tractor: when `body` returns, the nursery waits for every
/// [`run_in_actor`](ActorNursery::run_in_actor) result, then cancels the daemon actors
/// ([`start_actor`](ActorNursery::start_actor)). `run_in_actor` results, failures included,
/// are gathered at that point: a failing function does not interrupt the body, and the
/// nursery raises every failure once all results are in, after cancelling the daemons (one
/// cancels all). When the body fails or a child dies, every child is
/// cancelled at once. Cancelling a child means asking it to exit, then killing it after the
/// grace period; every child process is reaped before this returns.
///
/// # Errors
///
/// An [`ErrorGroup`](trellis::ErrorGroup) of every failure, or `Cancelled`.
pub async fn open_nursery<B, Fut, T>(body: B) -> Result<T, trellis::Error>
where
    B: FnOnce(ActorNursery) -> Fut,
    Fut: Future<Output = Result<T, trellis::Error>>,
{
    let actor = current();
    let mut shared = None;
    let outcome = trellis::open_nursery(|nursery| {
        let an = ActorNursery {
            inner: Arc::new(Inner {
                actor,
                nursery: nursery.clone(),
                closing: Arc::new(Event::new()),
                failures: Mutex::new(Vec::new()),
                running: Mutex::new(0),
                settled: Notify::new(),
            }),
        };
        shared = Some(an.inner.clone());
        async move {
            let inner = an.inner.clone();
            let outcome = body(an).await;
            match &outcome {
                Ok(_) => inner.wait_run_in_actor().await?,
                // The children are cancelled for the body's reason (a cancellation's, passed
                // on), not for a mere release: each learns why.
                Err(error) => nursery
                    .cancel_scope()
                    .cancel_because(match error.as_cancelled() {
                        Some(cancelled) => (cancelled.cancel_reason().map(|r| (**r).clone()))
                            .unwrap_or_else(|| trellis::CancelReason::new(CancelSource::Unknown)),
                        None => {
                            let text = error.to_string();
                            let first = text.lines().next().unwrap_or_default().to_owned();
                            trellis::CancelReason::new(CancelSource::Nursery)
                                .with_message(format!("the actor nursery's body failed: {first}"))
                        }
                    }),
            }
            inner.closing.set();
            if !lock(&inner.failures).is_empty() {
                nursery.cancel_with_reason("an actor run with run_in_actor failed");
            }
            outcome
        }
    })
    .await;
    let shared = shared.expect("the body was called");
    let mut failures = std::mem::take(&mut *lock(&shared.failures));
    match outcome {
        Ok(Some(value)) if failures.is_empty() => Ok(value),
        Ok(None) if failures.is_empty() => Err(Cancelled::new().into()),
        Ok(_) => Err(trellis::ErrorGroup::new("actor nursery", failures).into()),
        Err(error) if failures.is_empty() => Err(error),
        // Cancelled from outside after failures: the failures are what happened.
        Err(error) if error.is_cancelled() => {
            Err(trellis::ErrorGroup::new("actor nursery", failures).into())
        }
        Err(error) => {
            match error.into_group() {
                Ok(group) => failures.extend(group.into_errors()),
                Err(single) => failures.push(single),
            }
            Err(trellis::ErrorGroup::new("actor nursery", failures).into())
        }
    }
}

/// Locks a mutex of the tree layer, taking it over if a panic poisoned it.
pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Inner {
    /// Waits until every `run_in_actor` call has returned.
    async fn wait_run_in_actor(&self) -> Result<(), Cancelled> {
        loop {
            let settled = self.settled.notified();
            let mut settled = std::pin::pin!(settled);
            settled.as_mut().enable();
            if *lock(&self.running) == 0 {
                return Ok(());
            }
            let what = || "the actors run with run_in_actor".into();
            trellis::dump::waiting_on(what, trellis::cancellable(settled)).await?;
        }
    }
}

/// The result of a [`run_in_actor`](ActorNursery::run_in_actor) function, available once
/// the nursery has closed.
#[derive(Debug)]
pub struct RunHandle<T> {
    task: TaskHandle<Option<T>>,
}

impl<T> RunHandle<T> {
    /// The function's result, once it has returned; `None` if it failed or was cancelled (its
    /// error is in the nursery's group).
    pub fn into_value(self) -> Option<T> {
        self.task.into_value().flatten()
    }
}

impl ActorNursery {
    /// Starts a daemon actor named `name` and returns a portal to it. It runs until the
    /// nursery's body returns (or something fails), then is cancelled.
    ///
    /// # Errors
    ///
    /// [`ActorError::SpawnFailed`] when the process did not start or did not connect back in
    /// time; [`ActorError::Cancelled`].
    pub async fn start_actor(&self, name: &str) -> Result<Portal, ActorError> {
        self.start_actor_on(name, &Placement::local()).await
    }

    /// [`start_actor`](ActorNursery::start_actor) with the child placed by `placement`: on
    /// another host through ssh, or by a cluster's launcher (see [`Placement`]).
    ///
    /// # Errors
    ///
    /// As [`start_actor`](ActorNursery::start_actor); [`ActorError::SpawnFailed`] also when
    /// the launcher could not run or the child never connected back.
    pub async fn start_actor_on(
        &self,
        name: &str,
        placement: &Placement,
    ) -> Result<Portal, ActorError> {
        let (child, conn) = spawn(&self.inner.actor, name, placement).await?;
        let watching = format!("trellis: supervising actor {}", conn.peer().actor);
        self.inner.nursery.start_soon_named(
            watching,
            supervise(
                child,
                conn.clone(),
                self.inner.closing.clone(),
                self.inner.actor.inner.config.grace,
            ),
        )?;
        Ok(Portal::new(conn))
    }

    /// Starts an actor named `name` that runs `function(args…)` once and then exits. The
    /// result is in the returned handle after the nursery has closed; a failure is raised
    /// when the nursery closes.
    ///
    /// # Errors
    ///
    /// As [`start_actor`](ActorNursery::start_actor).
    pub async fn run_in_actor<F, Args>(
        &self,
        name: &str,
        function: F,
        args: Args,
    ) -> Result<RunHandle<F::Output>, ActorError>
    where
        F: RemoteFn<Args>,
        Args: Serialize + Send + 'static,
    {
        self.run_in_actor_on(name, &Placement::local(), function, args)
            .await
    }

    /// [`run_in_actor`](ActorNursery::run_in_actor) with the child placed by `placement`.
    ///
    /// # Errors
    ///
    /// As [`start_actor_on`](ActorNursery::start_actor_on).
    pub async fn run_in_actor_on<F, Args>(
        &self,
        name: &str,
        placement: &Placement,
        function: F,
        args: Args,
    ) -> Result<RunHandle<F::Output>, ActorError>
    where
        F: RemoteFn<Args>,
        Args: Serialize + Send + 'static,
    {
        let (child, conn) = spawn(&self.inner.actor, name, placement).await?;
        let done = Arc::new(Event::new());
        let watching = format!("trellis: supervising actor {}", conn.peer().actor);
        let running = format!(
            "run_in_actor `{}` in actor {}",
            function.name(),
            conn.peer().actor
        );
        self.inner.nursery.start_soon_named(
            watching,
            supervise(
                child,
                conn.clone(),
                done.clone(),
                self.inner.actor.inner.config.grace,
            ),
        )?;
        let portal = Portal::new(conn);
        let name = function.name();
        let inner = self.inner.clone();
        *lock(&inner.running) += 1;
        let task = self.inner.nursery.start_soon_named(running, async move {
            let result = portal
                .run_named::<F::Output, Args>(name, args)
                .await
                .map_err(trellis::Error::from);
            done.set();
            let outcome = match result {
                Ok(value) => Ok(Some(value)),
                Err(error) if error.is_cancelled() => Err(error),
                Err(error) => {
                    lock(&inner.failures).push(error);
                    Ok(None)
                }
            };
            *lock(&inner.running) -= 1;
            inner.settled.notify_waiters();
            outcome
        });
        match task {
            Ok(task) => Ok(RunHandle { task }),
            Err(closed) => {
                *lock(&self.inner.running) -= 1;
                Err(trellis::Error::from(closed).into())
            }
        }
    }

    /// Cancels the nursery: every child actor is asked to exit (and killed after the grace
    /// period), and the body's checkpoints see `Cancelled`.
    pub fn cancel(&self) {
        self.inner
            .nursery
            .cancel_with_reason("ActorNursery::cancel was called");
    }
}

/// Watches one child actor: when `release` is set or the nursery is cancelled, asks it to exit
/// and kills it after `grace`; if it dies on its own first, that is this task's error. The
/// process is always reaped.
pub(super) async fn supervise(
    child: Process,
    conn: Conn,
    release: Arc<Event>,
    grace: Duration,
) -> Result<(), trellis::Error> {
    let id = conn.peer().actor.clone();
    let outcome = watch(child, conn, release, grace).await;
    if let Some(actor) = crate::actor::try_current() {
        actor.forget_child(&id.uid);
        // A registry in etcd does not see a death or a kill: the parent removes the entry
        // (gone already when the child ended cleanly).
        if let Some(etcd) = &actor.inner.etcd {
            Box::pin(etcd.remove(&id)).await;
        }
    }
    outcome
}

/// [`supervise`], but for forgetting the child at the end.
async fn watch(
    mut child: Process,
    conn: Conn,
    release: Arc<Event>,
    grace: Duration,
) -> Result<(), trellis::Error> {
    let actor = conn.peer().actor.clone();
    let pid = conn.peer().pid;
    // Whether it left on its own, saying goodbye: normal if it exits with success (it
    // cancelled itself), a death if not (it lost its parent's control channel, say).
    let mut goodbye = false;
    // The nursery's cancellation, when that is why it is asked to go (either branch may see
    // it first; a release by a body that saw the cancellation first is one too).
    let mut cancelled = None;
    let lost = tokio::select! {
        released = release.wait() => {
            cancelled = released.err().or_else(|| trellis::checkpoint_if_cancelled().err());
            None
        }
        ended = conn.ended() => match ended {
            Ok(End::Lost(reason)) => Some(reason),
            Ok(End::Goodbye) => {
                goodbye = true;
                None
            }
            Err(seen) => {
                cancelled = Some(seen);
                None
            }
        },
    };
    // Why it is asked to go: the cancellation passed on, or its release.
    let why = cancelled.map(|c| crate::cancel_reason::cancelled_to_wire(&c, conn.local()));
    let uid = actor.uid.clone();
    if let Some(reason) = lost {
        // It died (or broke the protocol): make sure it is gone, and say how it ended.
        let status = CancelScope::shielded()
            .run(trellis::move_on_after(grace, async {
                trellis::cancellable(child.wait()).await
            }))
            .await;
        let status = match status {
            Ok(Some(Some(Ok(status)))) => status.to_string(),
            _ => {
                child.kill_and_reap(Some(pid), grace).await;
                format!("{reason}; killed")
            }
        };
        remove_socket_dir(pid, &uid);
        tracing::warn!(%actor, pid, %status, "child actor died");
        return Err(ActorError::Died { actor, pid, status }.into());
    }
    // Ask it to go, give it the grace period, then kill it.
    let exited = CancelScope::shielded()
        .run(trellis::move_on_after(grace, async {
            // Asked, not awaited: a child that cannot answer (stopped, stuck) is killed when
            // the grace period ends, not when the request gives up on it too.
            if conn.end().is_none() {
                let why = why.unwrap_or_else(|| {
                    let text = "its actor nursery released it";
                    crate::cancel_reason::here(CancelSource::Explicit, text, conn.local())
                });
                let _ = conn.tell(CANCEL_ACTOR, crate::cancel_reason::to_args(&why));
            }
            trellis::cancellable(child.wait()).await
        }))
        .await;
    match exited {
        Ok(Some(Some(Ok(status)))) if goodbye && !status.success() => {
            remove_socket_dir(pid, &uid);
            let status = status.to_string();
            tracing::warn!(%actor, pid, %status, "child actor left and failed");
            return Err(ActorError::Died { actor, pid, status }.into());
        }
        Ok(Some(Some(Ok(_)))) => {}
        _ => {
            tracing::warn!(%actor, pid, "child actor did not exit within {grace:?}: killing it");
            child.kill_and_reap(Some(pid), grace).await;
            remove_socket_dir(pid, &uid);
        }
    }
    Ok(())
}
