//! The registry: which actor runs where. One actor of a tree is the registrar (the root,
//! unless configured otherwise); every other actor registers with it when it starts and
//! unregisters when it exits. A registration belongs to the connection that made it, so an
//! actor that dies without unregistering (killed) leaves no stale entry behind: its entry goes
//! with its connection.

use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use trellis::Cancelled;
use trellis_wire::{ActorId, Payload};

use crate::connection::Prepared;
use crate::error::CallFailure;
use crate::names::{FIND, LIST, REGISTER, UNREGISTER, WAIT_FOR, WAIT_UNREGISTERED};

/// An actor as the registry knows it: name, unique id, listening address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) name: String,
    pub(crate) uid: String,
    pub(crate) addr: String,
}

impl Entry {
    /// Where the actor listens, as an address to connect to.
    pub(crate) fn parsed_addr(&self) -> Result<crate::Addr, crate::ActorError> {
        self.addr.parse().map_err(|e| crate::ActorError::Protocol {
            actor: trellis_wire::ActorId::new(self.name.clone(), self.uid.clone()),
            error: format!("its registered address {:?} does not parse: {e}", self.addr),
        })
    }
}

/// The registrar's table, in registration order.
#[derive(Default)]
pub(crate) struct Registry {
    entries: Mutex<Vec<(Entry, Option<usize>)>>,
    changed: Notify,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Entry, Option<usize>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `entry`, made over the connection `conn` (none for the registrar itself).
    ///
    /// # Errors
    ///
    /// Another connection registered the same uid: nobody takes over another's entry.
    pub(crate) fn register(&self, entry: Entry, conn: Option<usize>) -> Result<(), Refused> {
        let mut entries = self.lock();
        if entries
            .iter()
            .any(|(e, c)| e.uid == entry.uid && *c != conn)
        {
            return Err(Refused(format!(
                "actor {} is registered already, by another connection",
                entry.uid
            )));
        }
        entries.retain(|(e, _)| e.uid != entry.uid);
        tracing::debug!(name = %entry.name, addr = %entry.addr, "actor registered");
        entries.push((entry, conn));
        drop(entries);
        self.changed.notify_waiters();
        Ok(())
    }

    /// Removes the entry of `uid`, if it was registered over the connection `conn`.
    ///
    /// # Errors
    ///
    /// It was registered over another connection.
    pub(crate) fn unregister(&self, uid: &str, conn: Option<usize>) -> Result<(), Refused> {
        let mut entries = self.lock();
        if entries.iter().any(|(e, c)| e.uid == uid && *c != conn) {
            return Err(Refused(format!(
                "actor {uid} was registered by another connection: only it may unregister"
            )));
        }
        entries.retain(|(e, _)| e.uid != uid);
        drop(entries);
        self.changed.notify_waiters();
        Ok(())
    }

    /// The connection `conn` ended: what was registered over it goes.
    pub(crate) fn connection_ended(&self, conn: usize) {
        self.lock().retain(|(e, c)| {
            let stale = *c == Some(conn);
            if stale {
                tracing::debug!(name = %e.name, "actor gone: registration removed");
            }
            !stale
        });
        self.changed.notify_waiters();
    }

    /// Every registered actor, in registration order.
    pub(crate) fn list(&self) -> Vec<Entry> {
        self.lock().iter().map(|(e, _)| e.clone()).collect()
    }

    /// The first registered actor named `name`.
    pub(crate) fn find(&self, name: &str) -> Option<Entry> {
        self.lock()
            .iter()
            .find(|(e, _)| e.name == name)
            .map(|(e, _)| e.clone())
    }

    /// Waits until an actor named `name` is registered.
    pub(crate) async fn wait_for(&self, name: &str) -> Result<Entry, Cancelled> {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if let Some(entry) = self.find(name) {
                return Ok(entry);
            }
            trellis::cancellable(changed).await?;
        }
    }

    /// Waits until no entry of `uid` is left: a supervisor waits for this after reaping a
    /// child, so that its replacement is the only actor of its name.
    pub(crate) async fn wait_unregistered(&self, uid: &str) -> Result<(), Cancelled> {
        loop {
            let changed = self.changed.notified();
            let mut changed = std::pin::pin!(changed);
            changed.as_mut().enable();
            if !self.lock().iter().any(|(e, _)| e.uid == uid) {
                return Ok(());
            }
            trellis::cancellable(changed).await?;
        }
    }
}

/// A registration or unregistration the registrar refuses: an actor registers and
/// unregisters itself only.
#[derive(Debug, thiserror::Error)]
#[error("registry: {0}")]
pub(crate) struct Refused(String);

/// Prepares a registry request made over connection `conn` by the actor `peer`, if
/// `function` is one: `Err` when its arguments do not decode.
pub(crate) fn serve(
    registry: &std::sync::Arc<Registry>,
    function: &str,
    args: &Payload,
    conn: usize,
    peer: &ActorId,
) -> Option<Result<Prepared, String>> {
    let peer = peer.clone();
    let peer_for_log = peer.clone();
    let refused = move |e: Refused| {
        tracing::warn!(peer = %peer_for_log, "refused a registry request: {}", e.0);
        CallFailure::Failed(e.into())
    };
    let registry = registry.clone();
    let name = || {
        args.decode::<(String,)>()
            .map(|(s,)| s)
            .map_err(|e| e.to_string())
    };
    let prepared: Result<Prepared, String> = match function {
        REGISTER => {
            args.decode::<(Entry,)>()
                .map_err(|e| e.to_string())
                .map(|(entry,)| -> Prepared {
                    Box::new(move |_| {
                        Box::pin(async move {
                            if entry.uid != peer.uid || entry.name != peer.name {
                                return Err(refused(Refused(format!(
                                    "actor {peer} may register itself only, not {} ({})",
                                    entry.name, entry.uid
                                ))));
                            }
                            registry.register(entry, Some(conn)).map_err(refused)?;
                            reply(&())
                        })
                    })
                })
        }
        UNREGISTER => name().map(|uid| -> Prepared {
            Box::new(move |_| {
                Box::pin(async move {
                    registry.unregister(&uid, Some(conn)).map_err(refused)?;
                    reply(&())
                })
            })
        }),
        LIST => Ok(Box::new(move |_| {
            Box::pin(async move { reply(&registry.list()) })
        })),
        FIND => name().map(|name| -> Prepared {
            Box::new(move |_| Box::pin(async move { reply(&registry.find(&name)) }))
        }),
        WAIT_FOR => name().map(|name| -> Prepared {
            Box::new(move |_| {
                Box::pin(async move {
                    let entry = registry
                        .wait_for(&name)
                        .await
                        .map_err(|c| CallFailure::Failed(c.into()))?;
                    reply(&entry)
                })
            })
        }),
        WAIT_UNREGISTERED => name().map(|uid| -> Prepared {
            Box::new(move |_| {
                Box::pin(async move {
                    registry
                        .wait_unregistered(&uid)
                        .await
                        .map_err(|c| CallFailure::Failed(c.into()))?;
                    reply(&())
                })
            })
        }),
        _ => return None,
    };
    Some(prepared)
}

fn reply<T: Serialize>(value: &T) -> Result<Payload, CallFailure> {
    Payload::encode(value).map_err(|e| CallFailure::BadResult(e.to_string()))
}
