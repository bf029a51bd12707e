//! The actor running in this process: its identity, its connections and peers, the registry
//! client, and the handle its code reaches through [`current`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;
use trellis::Nursery;
use trellis::supervisor::ChildState;
use trellis_wire::{ActorId, CallKind, CancelReason as WireReason, Identity, Keyring, Role};

use super::config::Config;
use super::etcd_registry::EtcdRegistry;
use super::registry::Registry;
use crate::connection::Conn;
use crate::info::{ActorInfo, StreamInfo, SupervisedChild, host_name};
use crate::secret::Secret;
use crate::transport::Addr;

/// A handle to the actor running in this process.
#[derive(Clone)]
pub struct Actor {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Actor")
            .field("id", &self.inner.id)
            .field("addr", &self.inner.addr)
            .finish()
    }
}

pub(crate) struct Inner {
    pub(crate) id: ActorId,
    pub(crate) config: Config,
    /// The tree's secret.
    pub(crate) secret: Secret,
    /// What this actor proves when it connects, and accepts from those who connect to it.
    pub(crate) keyring: Keyring,
    /// What incomplete frames take of the memory `Limits::read_budget` allows.
    pub(crate) read_budget: Arc<crate::limits::ReadBudget>,
    /// Buffers for large incoming frames, free for the next one, shared by the connections.
    pub(crate) frame_pool: Arc<crate::connection::FramePool>,
    pub(crate) addr: Addr,
    /// Connections (their I/O tasks) run here.
    pub(crate) io: Nursery,
    /// Served calls and the root body run here; cancelling it cancels the actor.
    pub(crate) work: Nursery,
    /// Where the registrar listens (this actor's own address if it is the registrar).
    pub(crate) registrar: Addr,
    /// The table, when this actor is the registrar.
    pub(crate) registry: Option<Arc<Registry>>,
    /// The registry in etcd, when the configuration names one: then it, not the
    /// registrar, answers lookups.
    pub(crate) etcd: Option<Arc<EtcdRegistry>>,
    pub(crate) started: std::time::Instant,
    /// The tree's terminal lock (used in the root).
    pub(crate) terminal: trellis::sync::Lock,
    pub(crate) state: Mutex<State>,
    /// The zygote that forks this actor's children, once it has one
    /// ([`SpawnBackend::Zygote`](crate::SpawnBackend::Zygote)).
    pub(crate) zygote: Mutex<Option<std::sync::Arc<super::zygote_client::Zygote>>>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Children spawned and not yet connected back, by uid.
    expected: HashMap<String, oneshot::Sender<Conn>>,
    /// Children connected back and not yet gone, by uid.
    children: std::collections::HashSet<String>,
    pub(super) conns: Vec<Conn>,
    /// Connections this actor opened to others, by the peer's address.
    pub(super) peers: HashMap<Addr, Conn>,
    /// Who asked this actor to cancel itself, and why.
    cancelled_by: Option<(ActorId, Box<WireReason>)>,
    /// The parent actor, for a child.
    parent: Option<ActorId>,
    /// The supervisors running in this actor, by a number of their own, for `info`.
    supervisors: Vec<(u64, trellis::supervisor::Supervisor)>,
    next_supervisor: u64,
}

/// The actor this code runs in: inside the root body given to [`main`](crate::main) or [`run_root`](crate::run_root),
/// inside functions served to other actors, and in every task these start in trellis nurseries
/// (it is a [`trellis::with_local`] value).
///
/// # Panics
///
/// Outside an actor (in a plain `tokio::spawn`ed task, say: pass the [`Actor`] along there).
pub fn current() -> Actor {
    try_current().expect("not inside a trellis actor")
}

/// The actor of the code below, as a trellis local: set once the actor is built, inside the
/// local's scope, so that its connections, served calls and body all inherit it without a
/// scope of their own.
#[derive(Clone, Default)]
pub(crate) struct ActorCell(pub(crate) Arc<std::sync::OnceLock<Actor>>);

/// [`current`], or `None` outside an actor.
pub fn try_current() -> Option<Actor> {
    trellis::local::<ActorCell>().and_then(|cell| cell.0.get().cloned())
}

impl Actor {
    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This actor's name and id.
    pub fn id(&self) -> &ActorId {
        &self.inner.id
    }

    /// Where this actor listens.
    pub fn addr(&self) -> &Addr {
        &self.inner.addr
    }

    /// Shows a supervisor's children in [`info`](Actor::info) until the returned number is
    /// given to [`forget_supervisor`](Actor::forget_supervisor).
    pub(crate) fn show_supervisor(&self, supervisor: trellis::supervisor::Supervisor) -> u64 {
        let mut state = self.lock();
        let id = state.next_supervisor;
        state.next_supervisor += 1;
        state.supervisors.push((id, supervisor));
        id
    }

    pub(crate) fn forget_supervisor(&self, id: u64) {
        self.lock().supervisors.retain(|(i, _)| *i != id);
    }

    /// What this actor tells about itself (what `trellis.info` answers): identity, host,
    /// address, parent, uptime and the calls and streams open right now.
    pub fn info(&self) -> ActorInfo {
        let state = self.lock();
        let (mut serving, mut calling, mut streams) = (0, 0, 0);
        let mut stream_stats = Vec::new();
        for conn in &state.conns {
            let (counts, stats) = conn.load();
            serving += counts.serving;
            calling += counts.calling;
            streams += counts.streams;
            let peer = conn.peer().actor.to_string();
            stream_stats.extend(stats.into_iter().map(|stats| {
                StreamInfo {
                    peer: peer.clone(),
                    cid: stats.cid,
                    kind: match stats.kind {
                        CallKind::Context => "context",
                        _ => "stream",
                    }
                    .to_owned(),
                    role: match stats.role {
                        Role::Caller => "caller",
                        Role::Callee => "callee",
                    }
                    .to_owned(),
                    sent: stats.sent,
                    received: stats.received,
                    unread: stats.unread,
                    credit_waits: stats.credit_waits,
                }
            }));
        }
        stream_stats.sort_by(|a, b| (&a.peer, a.cid).cmp(&(&b.peer, b.cid)));
        let supervised = state
            .supervisors
            .iter()
            .flat_map(|(_, sup)| {
                let supervisor = sup.name().to_owned();
                sup.children().into_iter().map(move |c| SupervisedChild {
                    name: c.name,
                    supervisor: supervisor.clone(),
                    restarts: c.restarts,
                    last_cause: c.last_cause,
                    state: match c.state {
                        ChildState::Running => "running",
                        ChildState::Stopping => "stopping",
                        _ => "restarting",
                    }
                    .to_owned(),
                })
            })
            .collect();
        ActorInfo {
            supervised,
            id: self.inner.id.clone(),
            pid: std::process::id(),
            host: host_name(),
            addr: self.inner.addr.to_string(),
            parent: state.parent.as_ref().map(|p| p.uid.clone()),
            uptime_ms: u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            serving,
            calling,
            streams,
            stream_stats,
        }
    }

    /// The root of this actor's tree, `None` for the root itself.
    pub(crate) fn root(&self) -> Option<Addr> {
        self.inner.config.root.clone()
    }

    /// Where the root of this actor's tree listens.
    pub(crate) fn root_addr(&self) -> Addr {
        self.root().unwrap_or_else(|| self.inner.addr.clone())
    }

    /// What every task of this actor's process is doing (`trellis.dump`). Called from any
    /// task of the actor: the dump starts at the outermost scope of the run it belongs to.
    pub fn dump(&self) -> crate::ActorDump {
        crate::ActorDump {
            id: self.inner.id.clone(),
            pid: std::process::id(),
            parent: self.lock().parent.as_ref().map(|p| p.uid.clone()),
            root: trellis::dump::dump().root.into(),
        }
    }

    /// Records the parent of this (child) actor.
    pub(crate) fn set_parent(&self, parent: ActorId) {
        self.lock().parent = Some(parent);
    }

    /// Cancels this actor: everything it runs is cancelled, then it exits.
    pub fn cancel(&self) {
        let id = self.inner.id.clone();
        let reason = crate::cancel_reason::here(
            trellis::CancelSource::Explicit,
            "ActorHandle::cancel was called",
            &id,
        );
        self.cancel_by(id, reason);
    }

    /// Who asked this actor to cancel itself, and why, once someone has.
    pub(crate) fn cancelled_by(&self) -> Option<(ActorId, Box<WireReason>)> {
        self.lock().cancelled_by.clone()
    }

    /// Cancels this actor at `requested_by`'s request, for `reason`: its calls' `Cancelled`
    /// carries it, and its served calls' `CancelAck`s repeat it.
    pub(crate) fn cancel_by(&self, requested_by: ActorId, reason: Box<WireReason>) {
        let core = crate::cancel_reason::from_wire(Some(&reason), &requested_by);
        self.lock()
            .cancelled_by
            .get_or_insert((requested_by, reason));
        self.inner.work.cancel_scope().cancel_because(core);
    }

    /// Who this actor says it is in a handshake.
    pub(crate) fn identity(&self) -> Identity {
        Identity::new(self.inner.id.clone(), std::process::id())
    }

    /// The registry's table, when this actor is the registrar.
    pub(crate) fn registry(&self) -> Option<&Arc<Registry>> {
        self.inner.registry.as_ref()
    }

    /// Where the registrar of this tree listens.
    pub fn registrar(&self) -> &Addr {
        &self.inner.registrar
    }

    /// Announces a child about to connect back with `uid`.
    pub(crate) fn expect_child(&self, uid: &str) -> oneshot::Receiver<Conn> {
        let (tx, rx) = oneshot::channel();
        self.lock().expected.insert(uid.to_owned(), tx);
        rx
    }

    /// A child reports ready over `conn`: hands the connection to its spawner.
    pub(crate) fn child_ready(&self, conn: &Conn) {
        let uid = &conn.peer().actor.uid;
        let mut state = self.lock();
        let expected = state.expected.remove(uid);
        if let Some(expected) = expected {
            state.children.insert(uid.clone());
            drop(state);
            let _ = expected.send(conn.clone());
        }
    }

    /// Forgets a child: it failed to start, or it is gone.
    pub(crate) fn forget_child(&self, uid: &str) {
        let mut state = self.lock();
        state.expected.remove(uid);
        state.children.remove(uid);
    }

    /// Whether `uid` is a child of this actor, starting or running, and not gone.
    pub(crate) fn is_child(&self, uid: &str) -> bool {
        let state = self.lock();
        state.children.contains(uid) || state.expected.contains_key(uid)
    }
}

/// A fresh random actor id: 128 bits from the operating system's generator, as hex.
pub(crate) fn new_uid() -> String {
    trellis_wire::auth::nonce()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}
