//! Supervised actors: child actor processes restarted by OTP's strategies (the core's
//! [`trellis::supervisor`]), and portals that follow their restarts.

use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::watch;
use trellis::supervisor::{ChildHandle, ChildStatus, Restart, Supervision, Supervisor};
use trellis::sync::Event;
use trellis::{CancelScope, Cancelled};
use trellis_wire::ActorId;

use super::nursery::{lock, supervise};
use super::placement::Placement;
use super::spawn::spawn;
use crate::actor::{Actor, current};
use crate::actor_error::ActorError;
use crate::calls::{MsgStream, Portal, PortalContext};
use crate::connection::Conn;
use crate::functions::{ContextFn, RemoteFn, StreamFn};

/// Runs `body` with an [`ActorSupervisor`] in the current actor: child actors started through
/// it are restarted when they die, by `supervision`'s strategy, policies and intensity, and
/// none outlives it. It is [`trellis::supervisor::open_supervisor`] with actor processes for
/// children; its rules (restart, giving up, ending) are that function's.
///
/// A child that died is reaped (its process waited for, its socket removed) and gone from
/// the registry before its replacement starts, under the same name: [`find_actor`](crate::find_actor)
/// finds the replacement. Stopping a child asks it to exit and kills it after the grace period,
/// as an actor nursery does.
///
/// # Errors
///
/// As `trellis::supervisor::open_supervisor`: a group of every cause when the restart
/// intensity was exceeded (a killed child's cause is [`ActorError::Died`], with its exit
/// status); the body's error in a group; `Cancelled`.
pub async fn open_supervisor<B, Fut, T>(
    supervision: Supervision,
    body: B,
) -> Result<Option<T>, trellis::Error>
where
    B: FnOnce(ActorSupervisor) -> Fut,
    Fut: Future<Output = Result<T, trellis::Error>>,
{
    let actor = current();
    let roles = Arc::new(Mutex::new(Vec::<Arc<Role>>::new()));
    // Also when this future is dropped before its end.
    let mut ending = Ending {
        roles: roles.clone(),
        shown: None,
    };
    trellis::supervisor::open_supervisor(supervision, |supervisor| {
        ending.shown = Some((actor.clone(), actor.show_supervisor(supervisor.clone())));
        body(ActorSupervisor {
            supervisor,
            actor,
            roles,
        })
    })
    .await
}

/// When the supervisor ends: its children leave `trellis.info`, and their portals say that
/// they will not run again.
struct Ending {
    roles: Arc<Mutex<Vec<Arc<Role>>>>,
    shown: Option<(Actor, u64)>,
}

impl Drop for Ending {
    fn drop(&mut self) {
        if let Some((actor, id)) = self.shown.take() {
            actor.forget_supervisor(id);
        }
        for role in lock(&self.roles).drain(..) {
            role.end("its supervisor has ended");
        }
    }
}

/// Stops a child whose start the caller stopped waiting for (cancelled or dropped): nobody
/// holds its portal, and it would keep its name.
struct StopUnlessServing<'a> {
    supervisor: &'a ActorSupervisor,
    name: &'a str,
    armed: bool,
}

impl Drop for StopUnlessServing<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.supervisor.stop(self.name);
        }
    }
}

/// A supervisor of child actors. See [`open_supervisor`].
#[derive(Clone)]
pub struct ActorSupervisor {
    supervisor: Supervisor,
    actor: Actor,
    roles: Arc<Mutex<Vec<Arc<Role>>>>,
}

impl std::fmt::Debug for ActorSupervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorSupervisor")
            .field("supervisor", &self.supervisor)
            .finish()
    }
}

impl ActorSupervisor {
    /// Starts a child actor named `name` (unique among this supervisor's children) under
    /// the `restart` policy, waits until it serves, and returns a portal that follows its
    /// restarts. An actor whose process dies (a signal, an exit without a goodbye) has
    /// failed; one that ends itself with a goodbye (it cancelled itself) ended normally, so
    /// `Transient` does not restart it.
    ///
    /// # Errors
    ///
    /// [`ActorError::Start`] (a duplicate name, a supervisor that ended);
    /// [`ActorError::Unsupervised`] when the supervisor gave up before the child first served;
    /// [`ActorError::Cancelled`].
    pub async fn start_actor(
        &self,
        name: &str,
        restart: Restart,
    ) -> Result<SupervisedPortal, ActorError> {
        self.start_actor_on(name, restart, Placement::local()).await
    }

    /// [`start_actor`](ActorSupervisor::start_actor) with every incarnation of the child
    /// placed by `placement` (see [`Placement`]).
    ///
    /// # Errors
    ///
    /// As [`start_actor`](ActorSupervisor::start_actor).
    pub async fn start_actor_on(
        &self,
        name: &str,
        restart: Restart,
        placement: Placement,
    ) -> Result<SupervisedPortal, ActorError> {
        let role = Arc::new(Role::new(name, self.actor.inner.config.grace));
        let (actor, child_role, child_name) = (self.actor.clone(), role.clone(), name.to_owned());
        // Known before the child can start, so that `stop` finds it.
        lock(&self.roles).push(role.clone());
        let started = self.supervisor.start(name, restart, move || {
            run_child(
                actor.clone(),
                child_role.clone(),
                child_name.clone(),
                placement.clone(),
            )
        });
        let child = match started {
            Ok(child) => child,
            Err(error) => {
                lock(&self.roles).retain(|r| !Arc::ptr_eq(r, &role));
                return Err(error.into());
            }
        };
        let _ = role.child.set(child);
        let mut guard = StopUnlessServing {
            supervisor: self,
            name,
            armed: true,
        };
        let portal = SupervisedPortal { role };
        portal.portal().await?;
        guard.armed = false;
        Ok(portal)
    }

    /// Stops the child named `name` for good (see [`Supervisor::stop`]); its portal fails
    /// with [`ActorError::Unsupervised`] from then on.
    pub fn stop(&self, name: &str) -> bool {
        {
            let mut roles = lock(&self.roles);
            // Roles of children removed for good are forgotten; the live one of that name
            // ends.
            roles.retain(|r| !r.is_over());
            if let Some(index) = roles.iter().position(|r| r.name == name) {
                roles.remove(index).end("stopped by its supervisor");
            }
        }
        self.supervisor.stop(name)
    }

    /// Stops every child, last started first (see [`Supervisor::shutdown`]).
    pub fn shutdown(&self) {
        self.supervisor.shutdown();
    }

    /// The children, with their restart counts and last causes.
    pub fn children(&self) -> Vec<ChildStatus> {
        self.supervisor.children()
    }

    /// The grace period its children get when they are stopped.
    pub(crate) fn grace(&self) -> Duration {
        self.actor.inner.config.grace
    }

    /// The task supervisor underneath.
    pub fn supervisor(&self) -> &Supervisor {
        &self.supervisor
    }
}

/// One run of a supervised child: spawned, published to its role, watched until it dies or
/// is stopped, reaped, and gone from the registry before this returns (and a replacement
/// can start).
async fn run_child(
    actor: Actor,
    role: Arc<Role>,
    name: String,
    placement: Placement,
) -> Result<(), trellis::Error> {
    let (child, conn) = match spawn(&actor, &name, &placement).await {
        Ok(spawned) => spawned,
        Err(error) => {
            role.down(None, error.to_string());
            return Err(error);
        }
    };
    let id = conn.peer().actor.clone();
    role.up(&conn);
    let outcome = supervise(
        child,
        conn,
        Arc::new(Event::new()),
        actor.inner.config.grace,
    )
    .await;
    let died = outcome.as_ref().err().and_then(|e| match e.downcast_ref() {
        Some(ActorError::Died { actor, pid, status }) => {
            Some((actor.clone(), *pid, status.clone()))
        }
        _ => None,
    });
    let cause = match &outcome {
        Ok(()) => "it ended normally".to_owned(),
        Err(error) => error.to_string(),
    };
    role.down(died, cause);
    // Its registration goes with its connection to the registrar, which may not have
    // noticed yet; the replacement must be the only one of its name.
    let gone = CancelScope::shielded()
        .run(trellis::move_on_after(
            actor.inner.config.grace,
            actor.wait_unregistered(&id),
        ))
        .await;
    if !matches!(gone, Ok(Some(Some(())))) {
        tracing::warn!(actor = %name, uid = %id.uid, "the registry still lists a dead child");
    }
    // Whether it runs again is the supervisor's decision; its portals learn it from the
    // child's handle.
    outcome
}

/// What a supervised child is now, as its portals see it.
#[derive(Clone, Default)]
struct RoleState {
    /// The running incarnation's portal, and its number (from 1).
    up: Option<(Portal, u64)>,
    /// The last incarnation that ended, and how.
    last_down: Option<(u64, Arc<Down>)>,
    incarnations: u64,
    /// Why it will not run again.
    ended: Option<String>,
}

struct Down {
    died: Option<(ActorId, u32, String)>,
    cause: String,
}

impl Down {
    fn error(&self, name: &str) -> ActorError {
        match &self.died {
            Some((actor, pid, status)) => ActorError::Died {
                actor: actor.clone(),
                pid: *pid,
                status: status.clone(),
            },
            None => ActorError::Down {
                name: name.to_owned(),
                cause: self.cause.clone(),
            },
        }
    }
}

struct Role {
    name: String,
    grace: Duration,
    state: watch::Sender<RoleState>,
    /// The core's handle: tells when the child is removed for good, and why.
    child: OnceLock<ChildHandle>,
}

impl Role {
    fn new(name: &str, grace: Duration) -> Self {
        Role {
            name: name.to_owned(),
            grace,
            state: watch::Sender::new(RoleState::default()),
            child: OnceLock::new(),
        }
    }

    /// Why it will not run again, once that is so.
    fn over_because(&self) -> Option<String> {
        if let Some(reason) = &self.state.borrow().ended {
            return Some(reason.clone());
        }
        let child = self.child.get()?;
        child.is_removed().then(|| {
            child
                .removed_because()
                .unwrap_or("no longer supervised")
                .to_owned()
        })
    }

    fn is_over(&self) -> bool {
        self.over_because().is_some()
    }

    fn up(&self, conn: &Conn) {
        self.state.send_modify(|s| {
            s.incarnations += 1;
            // A child stopped while it was spawning serves nobody.
            if s.ended.is_none() {
                s.up = Some((Portal::new(conn.clone()), s.incarnations));
            }
        });
    }

    fn down(&self, died: Option<(ActorId, u32, String)>, cause: String) {
        self.state.send_modify(|s| {
            s.up = None;
            s.last_down = Some((s.incarnations, Arc::new(Down { died, cause })));
        });
    }

    fn end(&self, reason: &str) {
        self.state.send_modify(|s| {
            s.up = None;
            s.ended.get_or_insert_with(|| reason.to_owned());
        });
    }

    fn unsupervised(&self, reason: &str) -> trellis::Error {
        ActorError::Unsupervised {
            name: self.name.clone(),
            reason: reason.to_owned(),
        }
        .into()
    }
}

/// A portal to a supervised child that follows its restarts (the *role*, not the process):
/// calls made while the child is down wait for its replacement, bounded by the caller's
/// scope ([`try_portal`](SupervisedPortal::try_portal) does not wait); a call in flight when
/// the child died fails with [`ActorError::Died`] and the exit status, once the child is
/// reaped. Cheap to clone.
#[derive(Clone)]
pub struct SupervisedPortal {
    role: Arc<Role>,
}

impl std::fmt::Debug for SupervisedPortal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.role.state.borrow();
        f.debug_struct("SupervisedPortal")
            .field("name", &self.role.name)
            .field("incarnation", &state.up.as_ref().map(|(_, n)| *n))
            .field("ended", &state.ended)
            .finish()
    }
}

impl SupervisedPortal {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.role.name
    }

    /// Whether it will not run again (stopped, not restarted by its policy, or its
    /// supervisor ended).
    pub fn is_over(&self) -> bool {
        self.role.is_over()
    }

    /// How many times the child has started (1 before any restart).
    pub fn incarnations(&self) -> u64 {
        self.role.state.borrow().incarnations
    }

    /// The running child's portal, waiting while it is down.
    ///
    /// # Errors
    ///
    /// [`ActorError::Unsupervised`] when it will not run again; [`ActorError::Cancelled`].
    pub async fn portal(&self) -> Result<Portal, ActorError> {
        Ok(self.current().await?.0)
    }

    /// The running child's portal, without waiting.
    ///
    /// # Errors
    ///
    /// [`ActorError::Down`] (with why its last run ended) while it is down;
    /// [`ActorError::Unsupervised`] when it will not run again.
    pub fn try_portal(&self) -> Result<Portal, ActorError> {
        if let Some(reason) = self.role.over_because() {
            return Err(self.role.unsupervised(&reason).into());
        }
        let state = self.role.state.borrow();
        if let Some((portal, _)) = &state.up {
            return Ok(portal.clone());
        }
        let cause = state
            .last_down
            .as_ref()
            .map_or_else(|| "starting".to_owned(), |(_, d)| d.cause.clone());
        Err(ActorError::Down {
            name: self.role.name.clone(),
            cause,
        })
    }

    async fn current(&self) -> Result<(Portal, u64), trellis::Error> {
        let mut changes = self.role.state.subscribe();
        loop {
            if let Some(reason) = self.role.over_because() {
                return Err(self.role.unsupervised(&reason));
            }
            if let Some(up) = &changes.borrow_and_update().up {
                return Ok(up.clone());
            }
            let child = self.role.child.get();
            tokio::select! {
                // The sender lives in the role, which this portal holds: never closed.
                _ = changes.changed() => {}
                removed = async {
                    match child {
                        Some(child) => child.removed().await,
                        None => trellis::sleep_forever().await.map(|_| ()),
                    }
                } => removed?,
            }
        }
    }

    /// Makes `call` with the running child's portal (waiting while it is down); a failure is
    /// reported as [`after`](SupervisedPortal::after) says.
    async fn in_current<T, C, Fut>(&self, call: C) -> Result<T, trellis::Error>
    where
        C: FnOnce(Portal) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let (portal, incarnation) = self.current().await?;
        match call(portal).await {
            Ok(value) => Ok(value),
            Err(error) => Err(self.after(incarnation, error).await),
        }
    }

    /// What a call into incarnation `incarnation` that failed with `error` reports: the
    /// child's death, when the error is the lost connection of a child that died.
    async fn after(&self, incarnation: u64, error: trellis::Error) -> trellis::Error {
        if !matches!(
            error.downcast_ref(),
            Some(ActorError::ConnectionLost { .. })
        ) {
            return error;
        }
        // The reaper knows how it ended within the grace period (it waits that long for
        // the exit status before it kills).
        let mut changes = self.role.state.subscribe();
        let down = trellis::move_on_after(self.role.grace + Duration::from_secs(1), async {
            loop {
                if let Some((n, down)) = &changes.borrow_and_update().last_down
                    && *n >= incarnation
                {
                    return Ok::<_, Cancelled>(Some(down.clone()));
                }
                if trellis::cancellable(changes.changed()).await?.is_err() {
                    return Ok(None);
                }
            }
        })
        .await;
        match down {
            Ok(Some(Some(down))) => down.error(&self.role.name).into(),
            Err(cancelled) => cancelled.into(),
            _ => error,
        }
    }

    /// [`Portal::run`] in the running child, waiting while it is down.
    ///
    /// # Errors
    ///
    /// As [`Portal::run`], except that a call in flight when the child died fails with
    /// [`ActorError::Died`]; [`ActorError::Unsupervised`].
    pub async fn run<F, Args>(&self, function: F, args: Args) -> Result<F::Output, ActorError>
    where
        F: RemoteFn<Args>,
        Args: Serialize,
    {
        self.run_named(function.name(), args).await
    }

    /// [`run`](SupervisedPortal::run) by the function's registered name.
    ///
    /// # Errors
    ///
    /// As [`run`](SupervisedPortal::run).
    pub async fn run_named<R, Args>(&self, name: &str, args: Args) -> Result<R, ActorError>
    where
        R: DeserializeOwned,
        Args: Serialize,
    {
        let call = |portal: Portal| async move { Ok(portal.run_named(name, args).await?) };
        Ok(self.in_current(call).await?)
    }

    /// [`Portal::open_stream_from`] in the running child; the stream ends with
    /// [`ActorError::Died`] when the child dies.
    ///
    /// # Errors
    ///
    /// As [`Portal::open_stream_from`], with [`ActorError::Died`] for a child that died.
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
        self.in_current(|portal| async move { portal.open_stream_from(function, args, body).await })
            .await
    }

    /// [`Portal::open_context`] in the running child.
    ///
    /// # Errors
    ///
    /// As [`Portal::open_context`], with [`ActorError::Died`] for a child that died.
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
        self.in_current(|portal| async move { portal.open_context(function, args, body).await })
            .await
    }
}
