//! An actor's connections: dialling peers (one connection per peer, reused), accepting
//! them, serving each with the actor's service, and the registry client on top.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use trellis::{CancelScope, Cancelled};
use trellis_wire::auth::TREE_CREDENTIAL;
use trellis_wire::{ActorId, Payload, Side};

use super::handle::{Actor, current};
use super::registry::Entry;
use super::service::ActorService;
use crate::ActorError;
use crate::calls::Portal;
use crate::connection::{Conn, ReadLimits};
use crate::info::Registered;
use crate::names::{FIND, LIST, REGISTER, UNREGISTER, WAIT_FOR, WAIT_UNREGISTERED};
use crate::transport;
use crate::transport::{Addr, Listener, Reader, Writer};

/// A portal to the first actor registered as `name` in this tree, if any (see
/// [`Actor::find_actor`]).
///
/// # Errors
///
/// [`ActorError::Io`] or [`ActorError::ConnectionLost`] when the registrar or the
/// actor cannot be reached; [`ActorError::NotAuthorized`] when the handshake is
/// refused; [`ActorError::Cancelled`].
pub async fn find_actor(name: &str) -> Result<Option<Portal>, ActorError> {
    current().find_actor(name).await
}

/// A portal to the first actor registered as `name`, once there is one (see
/// [`Actor::wait_for_actor`]).
///
/// # Errors
///
/// [`ActorError::Io`] or [`ActorError::ConnectionLost`] when the registrar or the
/// actor cannot be reached; [`ActorError::NotAuthorized`] when the handshake is
/// refused; [`ActorError::Cancelled`].
pub async fn wait_for_actor(name: &str) -> Result<Portal, ActorError> {
    current().wait_for_actor(name).await
}

impl Actor {
    /// A portal to the actor listening at `addr` (any actor, of this tree or another).
    ///
    /// # Errors
    ///
    /// [`ActorError::Io`] when it cannot be reached; [`ActorError::NotAuthorized`],
    /// [`ActorError::Tls`] or [`ActorError::Protocol`] when the handshake fails;
    /// [`ActorError::Cancelled`].
    pub async fn portal(&self, addr: &Addr) -> Result<Portal, ActorError> {
        Ok(Portal::new(self.connect(addr).await?))
    }

    /// Every actor registered with this tree's registrar, in registration order.
    ///
    /// # Errors
    ///
    /// As [`find_actor`](Actor::find_actor); [`ActorError::Protocol`] for an entry whose
    /// address does not parse.
    pub async fn registered(&self) -> Result<Vec<Registered>, ActorError> {
        let entries = match (&self.inner.etcd, &self.inner.registry) {
            (Some(etcd), _) => Box::pin(etcd.list()).await?,
            (None, Some(registry)) => registry.list(),
            (None, None) => self
                .registrar_conn()
                .await?
                .call(LIST, Payload::unit())
                .await?
                .decode::<Vec<Entry>>()
                .map_err(ActorError::from)?,
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
        let (mut reader, writer) = trellis::cancellable(transport::connect(
            addr,
            self.inner.config.keepalive,
            self.inner.config.tls.as_ref(),
        ))
        .await?
        .map_err(|e| ActorError::Io {
            context: format!("connecting to {addr}"),
            source: e,
        })?;
        let keyring = self.inner.keyring.clone();
        let timeout = self.inner.config.limits.handshake_timeout;
        let (conn, buf) = trellis::move_on_after(
            timeout,
            Conn::handshake(
                Side::Connector,
                self.identity(),
                keyring,
                &mut reader,
                &writer,
            ),
        )
        .await?
        .ok_or_else(|| ActorError::Protocol {
            actor: ActorId::new("", ""),
            error: format!("{addr} did not complete the handshake within {timeout:?}"),
        })?;
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
        if let Some(etcd) = &self.inner.etcd {
            Box::pin(etcd.register(self.entry())).await?;
            (self.inner.work).start_soon_named("trellis: etcd lease", etcd.clone().keep())?;
            return Ok(());
        }
        if let Some(registry) = &self.inner.registry {
            registry
                .register(self.entry(), None)
                .map_err(trellis::Error::new)?;
            return Ok(());
        }
        let args = Payload::encode(&(self.entry(),)).map_err(ActorError::from)?;
        self.registrar_conn().await?.call(REGISTER, args).await?;
        Ok(())
    }

    /// Unregisters this actor, best effort and briefly: its registration goes with its
    /// connection to the registrar anyway.
    pub(crate) async fn unregister(&self) {
        if let Some(etcd) = &self.inner.etcd {
            Box::pin(etcd.unregister()).await;
            return;
        }
        if let Some(registry) = &self.inner.registry {
            let _ = registry.unregister(&self.inner.id.uid, None);
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
    /// [`ActorError::Io`] or [`ActorError::ConnectionLost`] when the registrar or the
    /// actor cannot be reached; [`ActorError::NotAuthorized`] when the handshake is
    /// refused; [`ActorError::Cancelled`].
    pub async fn find_actor(&self, name: &str) -> Result<Option<Portal>, ActorError> {
        let entry = match (&self.inner.etcd, &self.inner.registry) {
            (Some(etcd), _) => Box::pin(etcd.find(name)).await?,
            (None, Some(registry)) => registry.find(name),
            (None, None) => {
                let args = Payload::encode(&(name,)).map_err(ActorError::from)?;
                let reply = self.registrar_conn().await?.call(FIND, args).await?;
                reply.decode::<Option<Entry>>().map_err(ActorError::from)?
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
    /// [`ActorError::Io`] or [`ActorError::ConnectionLost`] when the registrar or the
    /// actor cannot be reached; [`ActorError::NotAuthorized`] when the handshake is
    /// refused; [`ActorError::Cancelled`].
    pub async fn wait_for_actor(&self, name: &str) -> Result<Portal, ActorError> {
        let entry = match (&self.inner.etcd, &self.inner.registry) {
            (Some(etcd), _) => Box::pin(etcd.wait_for(name)).await?,
            (None, Some(registry)) => registry.wait_for(name).await?,
            (None, None) => {
                let args = Payload::encode(&(name,)).map_err(ActorError::from)?;
                let reply = self.registrar_conn().await?.call(WAIT_FOR, args).await?;
                reply.decode::<Entry>().map_err(ActorError::from)?
            }
        };
        Ok(self.portal_to(&entry).await?)
    }

    /// Waits until the registrar holds no entry of `uid` (an actor that ended: its entry goes
    /// with its connection to the registrar, which may not have seen the end yet).
    ///
    /// # Errors
    ///
    /// When the registrar cannot be reached; `Cancelled`.
    pub(crate) async fn wait_unregistered(&self, id: &ActorId) -> Result<(), trellis::Error> {
        let uid = &id.uid;
        match (&self.inner.etcd, &self.inner.registry) {
            // Its parent (this actor) removes it.
            (Some(etcd), _) => {
                Box::pin(etcd.remove(id)).await;
                Ok(())
            }
            (None, Some(registry)) => Ok(registry.wait_unregistered(uid).await?),
            (None, None) => {
                let args = Payload::encode(&(uid,)).map_err(ActorError::from)?;
                let conn = self.registrar_conn().await?;
                conn.call(WAIT_UNREGISTERED, args).await?;
                Ok(())
            }
        }
    }

    async fn portal_to(&self, entry: &Entry) -> Result<Portal, trellis::Error> {
        Ok(self.portal(&entry.parsed_addr()?).await?)
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
        let config = &self.inner.config;
        // Outside peers that hold no call are let go; members are watched by keepalive.
        let outside = conn.peer().credential.as_deref() != Some(TREE_CREDENTIAL);
        let limits = ReadLimits {
            frame_timeout: config.limits.frame_timeout,
            idle_timeout: config.limits.idle_timeout.filter(|_| outside),
            max_peer_calls: config.limits.max_calls_per_connection,
            budget: self.inner.read_budget.clone(),
            frame_pool: self.inner.frame_pool.clone(),
        };
        let actor = self.clone();
        let c = conn.clone();
        let name = format!("trellis: connection with actor {}", conn.peer().actor);
        self.inner.io.start_soon_named(name, async move {
            let run = c.clone().run(reader, writer, buf, service, limits);
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
        let limits = self.inner.config.limits;
        // Handshakes in progress, oldest first: a new connection beyond the limit closes the
        // oldest, so silent connections cannot keep out a peer that does its handshake.
        let pending: Arc<std::sync::Mutex<VecDeque<(u64, CancelScope)>>> = Arc::default();
        for serial in 0u64.. {
            let (accepted, peer) = match trellis::cancellable(listener.accept()).await? {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    trellis::sleep(Duration::from_millis(10)).await?;
                    continue;
                }
            };
            let scope = CancelScope::with_timeout(limits.handshake_timeout);
            {
                let mut pending = lock(&pending);
                if pending.len() >= limits.max_handshakes
                    && let Some((_, oldest)) = pending.pop_front()
                {
                    oldest.cancel();
                }
                pending.push_back((serial, scope.clone()));
            }
            let actor = self.clone();
            let pending = pending.clone();
            // Each handshake on its own, so a slow or silent peer holds up nobody. A connection
            // beyond the limit is refused the same way, under the same deadline and count.
            self.inner.io.start_soon_named("trellis: handshake", async move {
                let shaken = scope
                    .run(async {
                        let config = &actor.inner.config;
                        let (mut reader, writer) = trellis::cancellable(
                            accepted.open(config.keepalive, config.tls.as_ref()),
                        )
                        .await?
                        .map_err(|e| ActorError::Tls(format!("with {peer}: {e}")))?;
                        if actor.lock().conns.len() >= limits.max_connections {
                            tracing::warn!(
                                peer = %peer,
                                limit = limits.max_connections,
                                "refused a connection: too many connections"
                            );
                            let why = "too many connections";
                            Conn::refuse_connection(actor.identity(), &writer, why).await;
                            return Ok(None);
                        }
                        let (conn, buf) = Conn::handshake(
                            Side::Acceptor,
                            actor.identity(),
                            actor.inner.keyring.clone(),
                            &mut reader,
                            &writer,
                        )
                        .await?;
                        Ok::<_, trellis::Error>(Some((conn, buf, reader, writer)))
                    })
                    .await;
                lock(&pending).retain(|(s, _)| *s != serial);
                let (conn, buf, reader, writer) = match shaken {
                    Ok(Some(Some(shaken))) => shaken,
                    // Refused: too many connections.
                    Ok(Some(None)) => return Ok(()),
                    Ok(None) => {
                        tracing::debug!(peer = %peer, "handshake timed out or made way");
                        return Ok(());
                    }
                    Err(e) if e.is_cancelled() => return Err(e),
                    Err(e) => {
                        // Once per connection: whoever knocks without the secret is seen.
                        match e.downcast_ref::<ActorError>() {
                            Some(ActorError::NotAuthorized(_)) => {
                                tracing::warn!(peer = %peer, "refused a connection: not authorized");
                            }
                            Some(ActorError::Tls(why)) => {
                                tracing::warn!("refused a connection: TLS handshake failed {why}");
                            }
                            _ => {
                                tracing::debug!(peer = %peer, "handshake failed: {e}");
                            }
                        }
                        return Ok(());
                    }
                };
                // A child reports ready (registered and serving) with a call over this
                // connection: see `child_ready`.
                actor.adopt(conn, reader, writer, buf)?;
                Ok::<_, trellis::Error>(())
            })?;
        }
        unreachable!("the accept loop ends by cancellation")
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

fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
