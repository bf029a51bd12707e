//! Actor nurseries: child actor processes supervised like tasks, and portals to call them.

use std::future::Future;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::process::{Child, Command};
use trellis::sync::Event;
use trellis::{CancelScope, Cancelled, Nursery, TaskHandle};
use trellis_wire::{ActorId, Payload};

use crate::actor::{Actor, current, env, new_uid};
use crate::conn::{CANCEL_ACTOR, Conn, End};
use crate::error::ActorError;
use crate::functions::RemoteFn;
use crate::transport::Transport;

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
    /// # Errors
    ///
    /// The remote failure as a [`RemoteActorError`](crate::RemoteActorError) (or a group of
    /// them), [`ActorError::ConnectionLost`] when the actor went away, `Cancelled`.
    pub async fn run<F, Args>(&self, function: F, args: Args) -> Result<F::Output, trellis::Error>
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
    pub async fn run_named<R, Args>(&self, name: &str, args: Args) -> Result<R, trellis::Error>
    where
        R: DeserializeOwned,
        Args: Serialize,
    {
        let args = Payload::encode(&args).map_err(ActorError::from)?;
        let value = self.conn.call(name, args).await?;
        Ok(value.decode().map_err(ActorError::from)?)
    }

    /// Asks the actor to cancel everything it runs and exit. Returns once the request is
    /// acknowledged; its parent's nursery reaps it.
    ///
    /// # Errors
    ///
    /// When the actor is gone already, or `Cancelled`.
    pub async fn cancel_actor(&self) -> Result<(), trellis::Error> {
        self.conn.call(CANCEL_ACTOR, Payload::unit()).await?;
        Ok(())
    }
}

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
}

/// Opens a nursery of child actors in the current actor, runs `body` with it, and returns
/// once every child has exited and been reaped.
///
/// When `body` returns, the results of [`run_in_actor`](ActorNursery::run_in_actor) are
/// awaited and daemon actors ([`start_actor`](ActorNursery::start_actor)) are cancelled. When
/// anything fails (the body, a remote call, a child dying), every child is cancelled — asked
/// to exit, then killed after the grace period — and the failures come back as an error group.
///
/// # Errors
///
/// The group of failures, or `Cancelled`.
pub async fn open_nursery<B, Fut, T>(body: B) -> Result<T, trellis::Error>
where
    B: FnOnce(ActorNursery) -> Fut,
    Fut: Future<Output = Result<T, trellis::Error>>,
{
    let actor = current();
    let outcome = trellis::open_nursery(|nursery| async move {
        let closing = Arc::new(Event::new());
        let an = ActorNursery {
            inner: Arc::new(Inner {
                actor,
                nursery,
                closing: closing.clone(),
            }),
        };
        let outcome = body(an).await;
        closing.set();
        outcome
    })
    .await?;
    outcome.ok_or_else(|| Cancelled.into())
}

impl ActorNursery {
    /// Starts a daemon actor named `name` and returns a portal to it. It runs until the
    /// nursery's body returns (or something fails), then is cancelled.
    ///
    /// # Errors
    ///
    /// [`ActorError::SpawnFailed`] when the process did not start or did not connect back in
    /// time; `Cancelled`.
    pub async fn start_actor(&self, name: &str) -> Result<Portal, trellis::Error> {
        let (child, conn) = spawn(&self.inner.actor, name).await?;
        self.inner.nursery.start_soon(supervise(
            child,
            conn.clone(),
            self.inner.closing.clone(),
            self.inner.actor.inner.config.grace,
        ))?;
        Ok(Portal::new(conn))
    }

    /// Starts an actor named `name` that runs `function(args…)` once; the result is in the
    /// returned handle after the nursery has closed. The actor exits when the function
    /// returns.
    ///
    /// # Errors
    ///
    /// As [`start_actor`](ActorNursery::start_actor).
    pub async fn run_in_actor<F, Args>(
        &self,
        name: &str,
        function: F,
        args: Args,
    ) -> Result<TaskHandle<F::Output>, trellis::Error>
    where
        F: RemoteFn<Args>,
        Args: Serialize + Send + 'static,
    {
        let (child, conn) = spawn(&self.inner.actor, name).await?;
        let done = Arc::new(Event::new());
        self.inner.nursery.start_soon(supervise(
            child,
            conn.clone(),
            done.clone(),
            self.inner.actor.inner.config.grace,
        ))?;
        let portal = Portal::new(conn);
        let name = function.name();
        let handle = self.inner.nursery.start_soon(async move {
            let result = portal.run_named::<F::Output, Args>(name, args).await;
            done.set();
            result
        })?;
        Ok(handle)
    }

    /// Cancels the nursery: every child actor is asked to exit (and killed after the grace
    /// period), and the body's checkpoints see `Cancelled`.
    pub fn cancel(&self) {
        self.inner.nursery.cancel();
    }
}

/// Starts a child process for an actor named `name` and waits until it has connected back.
async fn spawn(actor: &Actor, name: &str) -> Result<(Child, Conn), trellis::Error> {
    let config = &actor.inner.config;
    let failed = |reason: String| ActorError::SpawnFailed {
        name: name.to_owned(),
        reason,
    };
    let exe = std::env::current_exe().map_err(|e| failed(format!("no executable: {e}")))?;
    let uid = new_uid();
    let mut connected = actor.expect_child(&uid);
    let transport = match &config.transport {
        Transport::Unix => "unix".to_owned(),
        Transport::Tcp { bind } => format!("tcp:{bind}"),
    };
    let mut command = Command::new(exe);
    command
        .args(&config.child_args)
        .env(env::NAME, name)
        .env(env::UID, &uid)
        .env(env::PARENT, actor.addr().to_string())
        .env(env::PARENT_PID, std::process::id().to_string())
        .env(env::TRANSPORT, transport)
        .stdin(Stdio::null())
        // Its own process group: a Ctrl-C at the terminal reaches the root only, which tears
        // the tree down in order.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| {
        actor.forget_child(&uid);
        failed(e.to_string())
    })?;
    let waited = trellis::move_on_after(config.spawn_timeout, async {
        let outcome = trellis::cancellable(async {
            tokio::select! {
                accepted = &mut connected => accepted.map(|a| a.conn).map_err(|_| "the actor shut down".to_owned()),
                status = child.wait() => Err(match status {
                    Ok(status) => format!("exited before connecting: {status}"),
                    Err(e) => e.to_string(),
                }),
            }
        })
        .await?;
        Ok::<_, trellis::Error>(outcome)
    })
    .await;
    let outcome = match waited {
        Ok(Some(Ok(conn))) => return Ok((child, conn)),
        Ok(Some(Err(reason))) => Err(failed(reason).into()),
        Ok(None) => Err(failed(format!("no connection within {:?}", config.spawn_timeout)).into()),
        Err(e) => Err(e),
    };
    actor.forget_child(&uid);
    kill_and_reap(&mut child).await;
    outcome
}

/// Kills the process (if still running) and waits for it, whatever the caller's cancellation.
async fn kill_and_reap(child: &mut Child) {
    let _ = child.start_kill();
    let _ = CancelScope::shielded()
        .run(async { trellis::cancellable(child.wait()).await })
        .await;
}

/// Watches one child actor: when `release` is set or the nursery is cancelled, asks it to exit
/// and kills it after `grace`; if it dies on its own first, that is this task's error. The
/// process is always reaped.
async fn supervise(
    mut child: Child,
    conn: Conn,
    release: Arc<Event>,
    grace: Duration,
) -> Result<(), trellis::Error> {
    let actor = conn.peer().actor.clone();
    let pid = conn.peer().pid;
    let lost = tokio::select! {
        released = release.wait() => match released {
            Ok(()) => None,
            Err(Cancelled) => None,
        },
        ended = conn.ended() => match ended {
            Ok(End::Lost(reason)) => Some(reason),
            Ok(End::Goodbye) | Err(Cancelled) => None,
        },
    };
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
                kill_and_reap(&mut child).await;
                format!("{reason}; killed")
            }
        };
        tracing::warn!(%actor, pid, %status, "child actor died");
        return Err(ActorError::Died { actor, pid, status }.into());
    }
    // Ask it to go, give it the grace period, then kill it.
    let exited = CancelScope::shielded()
        .run(trellis::move_on_after(grace, async {
            if conn.end().is_none() {
                let _ = Portal::new(conn.clone()).cancel_actor().await;
            }
            trellis::cancellable(child.wait()).await
        }))
        .await;
    if !matches!(exited, Ok(Some(Some(Ok(_))))) {
        tracing::warn!(%actor, pid, "child actor did not exit within {grace:?}: killing it");
        kill_and_reap(&mut child).await;
    }
    Ok(())
}
