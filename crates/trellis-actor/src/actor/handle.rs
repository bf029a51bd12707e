//! The actor running in this process: its identity, its connections and peers, the registry
//! client, and the handle its code reaches through [`current`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::oneshot;
use trellis::{Cancelled, Nursery};
use trellis_wire::{ActorId, Hello, PROTOCOL_VERSION, Payload, Side};

use super::config::Config;
use super::registry::{Entry, Registry};
use super::service::ActorService;
use crate::calls::Portal;
use crate::connection::{Conn, HANDSHAKE_TIMEOUT};
use crate::info::{ActorInfo, Registered, host_name};
use crate::names::{FIND, LIST, REGISTER, UNREGISTER, WAIT_FOR};
use crate::transport;
use crate::transport::{Addr, Listener, Reader, Writer};

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
    pub(crate) addr: Addr,
    /// Connections (their I/O tasks) run here.
    pub(crate) io: Nursery,
    /// Served calls and the root body run here; cancelling it cancels the actor.
    pub(crate) work: Nursery,
    /// Where the registrar listens (this actor's own address if it is the registrar).
    pub(crate) registrar: Addr,
    /// The table, when this actor is the registrar.
    pub(crate) registry: Option<Arc<Registry>>,
    pub(crate) started: std::time::Instant,
    /// The tree's terminal lock (used in the root).
    pub(crate) terminal: trellis::sync::Lock,
    pub(crate) state: Mutex<State>,
}

#[derive(Default)]
pub(crate) struct State {
    /// Children spawned and not yet connected back, by uid.
    expected: HashMap<String, oneshot::Sender<Conn>>,
    conns: Vec<Conn>,
    /// Connections this actor opened to others, by the peer's address.
    peers: HashMap<Addr, Conn>,
    cancelled_by: Option<ActorId>,
    /// The parent actor, for a child.
    parent: Option<ActorId>,
}

/// The actor this code runs in: inside the root body given to [`main`] or [`run_root`],
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

/// A portal to the first actor registered as `name` in this tree, if any (see
/// [`Actor::find_actor`]).
///
/// # Errors
///
/// When the registrar or the actor cannot be reached; `Cancelled`.
pub async fn find_actor(name: &str) -> Result<Option<Portal>, trellis::Error> {
    current().find_actor(name).await
}

/// A portal to the first actor registered as `name`, once there is one (see
/// [`Actor::wait_for_actor`]).
///
/// # Errors
///
/// When the registrar or the actor cannot be reached; `Cancelled`.
pub async fn wait_for_actor(name: &str) -> Result<Portal, trellis::Error> {
    current().wait_for_actor(name).await
}

/// [`current`], or `None` outside an actor.
pub fn try_current() -> Option<Actor> {
    trellis::local::<ActorCell>().and_then(|cell| cell.0.get().cloned())
}

impl Actor {
    fn lock(&self) -> MutexGuard<'_, State> {
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

    /// What this actor tells about itself (what `trellis.info` answers): identity, host,
    /// address, parent, uptime and the calls and streams open right now.
    pub fn info(&self) -> ActorInfo {
        let state = self.lock();
        let (mut serving, mut calling, mut streams) = (0, 0, 0);
        for conn in &state.conns {
            let (s, c, st) = conn.load();
            serving += s;
            calling += c;
            streams += st;
        }
        ActorInfo {
            id: self.inner.id.clone(),
            pid: std::process::id(),
            host: host_name(),
            addr: self.inner.addr.to_string(),
            parent: state.parent.as_ref().map(|p| p.uid.clone()),
            uptime_ms: u64::try_from(self.inner.started.elapsed().as_millis()).unwrap_or(u64::MAX),
            serving,
            calling,
            streams,
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

    /// Records the parent of this (child) actor.
    pub(crate) fn set_parent(&self, parent: ActorId) {
        self.lock().parent = Some(parent);
    }

    /// A portal to the actor listening at `addr` (any actor, of this tree or another).
    ///
    /// # Errors
    ///
    /// When it cannot be reached or the handshake fails; `Cancelled`.
    pub async fn portal(&self, addr: &Addr) -> Result<Portal, trellis::Error> {
        Ok(Portal::new(self.connect(addr).await?))
    }

    /// Every actor registered with this tree's registrar, in registration order.
    ///
    /// # Errors
    ///
    /// When the registrar cannot be reached; `Cancelled`.
    pub async fn registered(&self) -> Result<Vec<Registered>, trellis::Error> {
        let entries = match &self.inner.registry {
            Some(registry) => registry.list(),
            None => self
                .registrar_conn()
                .await?
                .call(LIST, Payload::unit())
                .await?
                .decode::<Vec<Entry>>()
                .map_err(crate::ActorError::from)?,
        };
        entries
            .into_iter()
            .map(|e| {
                Ok(Registered {
                    addr: e.parsed_addr()?,
                    id: ActorId::new(e.name, e.uid),
                })
            })
            .collect()
    }

    /// Cancels this actor: everything it runs is cancelled, then it exits.
    pub fn cancel(&self) {
        self.cancel_by(self.inner.id.clone());
    }

    /// Who asked this actor to cancel itself, once someone has.
    pub(crate) fn cancelled_by(&self) -> Option<ActorId> {
        self.lock().cancelled_by.clone()
    }

    pub(crate) fn cancel_by(&self, requested_by: ActorId) {
        self.lock().cancelled_by.get_or_insert(requested_by);
        self.inner.work.cancel();
    }

    pub(crate) fn hello(&self) -> Hello {
        Hello {
            version: PROTOCOL_VERSION,
            actor: self.inner.id.clone(),
            pid: std::process::id(),
        }
    }

    /// The registry's table, when this actor is the registrar.
    pub(crate) fn registry(&self) -> Option<&Arc<Registry>> {
        self.inner.registry.as_ref()
    }

    /// Where the registrar of this tree listens.
    pub fn registrar(&self) -> &Addr {
        &self.inner.registrar
    }

    fn entry(&self) -> Entry {
        Entry {
            name: self.inner.id.name.clone(),
            uid: self.inner.id.uid.clone(),
            addr: self.inner.addr.to_string(),
        }
    }

    /// A connection to the actor listening at `addr`: the one open already, or a new one.
    pub(crate) async fn connect(&self, addr: &Addr) -> Result<Conn, trellis::Error> {
        if let Some(conn) = self.lock().peers.get(addr)
            && conn.end().is_none()
        {
            return Ok(conn.clone());
        }
        let (mut reader, writer) =
            trellis::cancellable(transport::connect(addr, self.inner.config.keepalive))
                .await?
                .map_err(|e| crate::ActorError::Io {
                    context: format!("connecting to {addr}"),
                    source: e,
                })?;
        let (conn, buf) =
            Conn::handshake(Side::Connector, self.hello(), &mut reader, &writer).await?;
        self.adopt(conn.clone(), reader, writer, buf)?;
        self.lock().peers.insert(addr.clone(), conn.clone());
        Ok(conn)
    }

    async fn registrar_conn(&self) -> Result<Conn, trellis::Error> {
        let registrar = self.inner.registrar.clone();
        self.connect(&registrar).await
    }

    /// Registers this actor with the registrar.
    pub(crate) async fn register(&self) -> Result<(), trellis::Error> {
        if let Some(registry) = &self.inner.registry {
            registry.register(self.entry(), None);
            return Ok(());
        }
        let args = Payload::encode(&(self.entry(),)).map_err(crate::ActorError::from)?;
        self.registrar_conn().await?.call(REGISTER, args).await?;
        Ok(())
    }

    /// Unregisters this actor, best effort and briefly: its registration goes with its
    /// connection to the registrar anyway.
    pub(crate) async fn unregister(&self) {
        if let Some(registry) = &self.inner.registry {
            registry.unregister(&self.inner.id.uid);
            return;
        }
        let conn = self.lock().peers.get(&self.inner.registrar).cloned();
        let Some(conn) = conn else { return };
        let Ok(args) = Payload::encode(&(self.inner.id.uid.clone(),)) else {
            return;
        };
        let _ =
            trellis::move_on_after(Duration::from_millis(200), conn.call(UNREGISTER, args)).await;
    }

    /// A portal to the first actor registered as `name`, if any.
    ///
    /// # Errors
    ///
    /// When the registrar or the actor cannot be reached; `Cancelled`.
    pub async fn find_actor(&self, name: &str) -> Result<Option<Portal>, trellis::Error> {
        let entry = match &self.inner.registry {
            Some(registry) => registry.find(name),
            None => {
                let args = Payload::encode(&(name,)).map_err(crate::ActorError::from)?;
                let reply = self.registrar_conn().await?.call(FIND, args).await?;
                reply
                    .decode::<Option<Entry>>()
                    .map_err(crate::ActorError::from)?
            }
        };
        match entry {
            Some(entry) => Ok(Some(self.portal_to(&entry).await?)),
            None => Ok(None),
        }
    }

    /// A portal to the first actor registered as `name`, waiting until there is one.
    ///
    /// # Errors
    ///
    /// When the registrar or the actor cannot be reached; `Cancelled`.
    pub async fn wait_for_actor(&self, name: &str) -> Result<Portal, trellis::Error> {
        let entry = match &self.inner.registry {
            Some(registry) => registry.wait_for(name).await?,
            None => {
                let args = Payload::encode(&(name,)).map_err(crate::ActorError::from)?;
                let reply = self.registrar_conn().await?.call(WAIT_FOR, args).await?;
                reply.decode::<Entry>().map_err(crate::ActorError::from)?
            }
        };
        self.portal_to(&entry).await
    }

    async fn portal_to(&self, entry: &Entry) -> Result<Portal, trellis::Error> {
        self.portal(&entry.parsed_addr()?).await
    }

    /// Announces a child about to connect back with `uid`.
    pub(crate) fn expect_child(&self, uid: &str) -> oneshot::Receiver<Conn> {
        let (tx, rx) = oneshot::channel();
        self.lock().expected.insert(uid.to_owned(), tx);
        rx
    }

    /// A child reports ready over `conn`: hands the connection to its spawner.
    pub(crate) fn child_ready(&self, conn: &Conn) {
        let expected = self.lock().expected.remove(&conn.peer().actor.uid);
        if let Some(expected) = expected {
            let _ = expected.send(conn.clone());
        }
    }

    pub(crate) fn forget_child(&self, uid: &str) {
        self.lock().expected.remove(uid);
    }

    /// Starts the I/O of an established connection.
    pub(crate) fn adopt(
        &self,
        conn: Conn,
        reader: Reader,
        writer: Writer,
        buf: bytes::BytesMut,
    ) -> Result<(), trellis::Error> {
        self.lock().conns.push(conn.clone());
        if let Some(registry) = &self.inner.registry {
            let (registry, key) = (registry.clone(), conn.key());
            conn.on_end(move || registry.connection_ended(key));
        }
        let service = Arc::new(ActorService::new(self.clone()));
        let actor = self.clone();
        let c = conn.clone();
        self.inner.io.start_soon(async move {
            let run = c.clone().run(reader, writer, buf, service);
            let result = run.await;
            let mut state = actor.lock();
            state.conns.retain(|other| !other.same(&c));
            state.peers.retain(|_, other| !other.same(&c));
            drop(state);
            result
        })?;
        Ok(())
    }

    pub(crate) async fn accept_loop(self, listener: Listener) -> Result<(), trellis::Error> {
        loop {
            let (mut reader, writer) =
                match trellis::cancellable(listener.accept(self.inner.config.keepalive)).await? {
                    Ok(stream) => stream,
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        trellis::sleep(Duration::from_millis(10)).await?;
                        continue;
                    }
                };
            let actor = self.clone();
            // Each handshake on its own, so a slow or silent peer holds up nobody.
            self.inner.io.start_soon(async move {
                let shaken = trellis::move_on_after(
                    HANDSHAKE_TIMEOUT,
                    Conn::handshake(Side::Acceptor, actor.hello(), &mut reader, &writer),
                )
                .await;
                let (conn, buf) = match shaken {
                    Ok(Some(shaken)) => shaken,
                    Ok(None) => {
                        tracing::debug!("handshake timed out");
                        return Ok(());
                    }
                    Err(e) if e.is_cancelled() => return Err(e),
                    Err(e) => {
                        tracing::debug!("handshake failed: {e}");
                        return Ok(());
                    }
                };
                // A child reports ready (registered and serving) with a call over this
                // connection: see `child_ready`.
                actor.adopt(conn, reader, writer, buf)?;
                Ok::<_, trellis::Error>(())
            })?;
        }
    }

    /// Says goodbye on every connection and gives the writers a moment to send it.
    pub(crate) async fn close_all(&self) {
        let conns = self.lock().conns.clone();
        for conn in &conns {
            conn.close();
        }
        let _ = trellis::move_on_after(Duration::from_millis(500), async {
            for conn in &conns {
                conn.ended().await?;
            }
            Ok::<_, Cancelled>(())
        })
        .await;
    }
}

/// A fresh random actor id (128 bits, from the standard library's per-process random keys, the
/// clock and a counter).
pub(crate) fn new_uid() -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let half = |salt: u64| {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(salt);
        h.write_u64(n);
        h.write_u128(now);
        h.write_u32(std::process::id());
        h.finish()
    };
    format!("{:016x}{:016x}", half(1), half(2))
}
