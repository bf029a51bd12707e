//! A keyed cache of shared async resources (tractor's `maybe_open_context`): the first task to
//! ask for a key opens the resource, the tasks that ask while it is open share it, and it is
//! closed when the last of them leaves.
//!
//! A resource is an async function that opens something, hands it over with
//! [`Provide::provide`] (which returns once the last user has left), and then closes it. It
//! runs as a task of the cache's nursery, so it outlives whichever user happened to open it.
//!
//! ```
//! # trellis::testing::run_test(async {
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//! use trellis::resource::{Provide, ResourceCache};
//!
//! let opened = Arc::new(AtomicU32::new(0));
//! trellis::open_nursery(|service| async move {
//!     let cache = ResourceCache::<&str, String>::new(&service);
//!     let count = opened.clone();
//!     trellis::open_nursery(|users| async move {
//!         for _ in 0..5 {
//!             let (cache, opened) = (cache.clone(), count.clone());
//!             users.start_soon(async move {
//!                 let feed = move |provide: Provide<String>| async move {
//!                     opened.fetch_add(1, Ordering::SeqCst);
//!                     provide.provide("a connection".to_owned()).await?; // until the last leaves
//!                     Ok::<_, trellis::Error>(()) // close it here
//!                 };
//!                 cache
//!                     .open("feed", feed, |conn, _cache_hit| async move {
//!                         assert_eq!(*conn, "a connection");
//!                         trellis::sleep(std::time::Duration::from_millis(10)).await?;
//!                         Ok::<_, trellis::Error>(())
//!                     })
//!                     .await
//!             })?;
//!         }
//!         Ok::<_, trellis::Error>(())
//!     })
//!     .await?;
//!     assert_eq!(opened.load(Ordering::SeqCst), 1); // opened once for five users
//!     Ok::<_, trellis::Error>(())
//! })
//! .await
//! .unwrap();
//! # });
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

use crate::sync::{Event, lock};
use crate::{CancelScope, Cancelled, Error, Nursery};

/// The resource ended before it provided its value (the first user gets the resource's own
/// error; the users that waited with it get this).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the shared resource failed before it was provided")]
pub struct ResourceFailed;

/// Keyed shared resources. Cheap to clone; every clone is the same cache.
pub struct ResourceCache<K, V> {
    inner: Arc<Inner<K, V>>,
}

impl<K, V> Clone for ResourceCache<K, V> {
    fn clone(&self) -> Self {
        ResourceCache {
            inner: self.inner.clone(),
        }
    }
}

impl<K, V> std::fmt::Debug for ResourceCache<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResourceCache").finish_non_exhaustive()
    }
}

struct Inner<K, V> {
    nursery: Nursery,
    slots: Mutex<HashMap<K, Arc<Slot<V>>>>,
}

/// One key's resource, from the first user's request until the resource's task ended.
struct Slot<V> {
    state: Mutex<SlotState<V>>,
    /// Set once the value is provided, or the resource ended without providing it.
    ready: Event,
    /// Set when the last user left: `provide` returns.
    release: Event,
    /// Set when the resource's task ended (closed, or failed).
    closed: Event,
}

struct SlotState<V> {
    users: usize,
    value: Option<Arc<V>>,
    /// No user may join any more: the last one left, or the resource ended.
    closing: bool,
    /// How the resource's task ended, for the last user (or the first, if it never provided).
    outcome: Option<Result<(), Error>>,
}

/// Given to a resource function: hand the value over with [`provide`](Provide::provide).
pub struct Provide<V> {
    slot: Arc<Slot<V>>,
}

impl<V> std::fmt::Debug for Provide<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Provide").finish_non_exhaustive()
    }
}

impl<V> Provide<V> {
    /// Hands `value` to the users, and waits until the last of them left; the resource
    /// function then closes what it opened.
    ///
    /// # Errors
    ///
    /// `Cancelled` when the cache's nursery is cancelled meanwhile.
    pub async fn provide(self, value: V) -> Result<(), Cancelled> {
        lock(&self.slot.state).value = Some(Arc::new(value));
        self.slot.ready.set();
        self.slot.release.wait().await
    }
}

impl<K, V> ResourceCache<K, V>
where
    K: Eq + Hash + Clone + Send + 'static,
    V: Send + Sync + 'static,
{
    /// A cache whose resources run in `nursery` (which must outlive their users).
    pub fn new(nursery: &Nursery) -> Self {
        ResourceCache {
            inner: Arc::new(Inner {
                nursery: nursery.clone(),
                slots: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Runs `body` with the resource of `key`, opening it with `resource` if no task holds it
    /// now (`body`'s second argument says whether it was open already: a cache hit). A user
    /// that comes while the resource is closing waits for it to close, then opens it afresh.
    /// The last user to leave waits for the resource to close — also when it was cancelled —
    /// and gets its closing error, unless `body` failed (`body`'s error is never masked).
    ///
    /// # Errors
    ///
    /// `body`'s error; the resource's own error when it fails to open (the user that opened
    /// it) or to close (the last user); [`ResourceFailed`] for users that waited for a
    /// resource that failed to open; `Cancelled`.
    pub async fn open<R, RFut, B, BFut, T>(&self, key: K, resource: R, body: B) -> Result<T, Error>
    where
        R: FnOnce(Provide<V>) -> RFut,
        RFut: Future<Output = Result<(), Error>> + Send + 'static,
        B: FnOnce(Arc<V>, bool) -> BFut,
        BFut: Future<Output = Result<T, Error>>,
    {
        let (slot, first) = self.join(&key).await?;
        if first {
            let future = resource(Provide { slot: slot.clone() });
            let (inner, ended, owned_key) = (self.inner.clone(), slot.clone(), key.clone());
            let started = self.inner.nursery.start_soon(async move {
                let outcome = future.await;
                inner.finish(&owned_key, &ended, outcome);
                Ok::<_, Error>(())
            });
            if started.is_err() {
                self.inner
                    .finish(&key, &slot, Err(crate::NurseryClosed.into()));
            }
        }
        if let Err(cancelled) = slot.ready.wait().await {
            self.leave(&slot).await?;
            return Err(cancelled.into());
        }
        let value = lock(&slot.state).value.clone();
        let Some(value) = value else {
            let outcome = lock(&slot.state).outcome.take();
            self.leave(&slot).await?;
            return Err(match outcome {
                Some(Err(error)) if first => error,
                _ => ResourceFailed.into(),
            });
        };
        let outcome = body(value, !first).await;
        let closed = self.leave(&slot).await;
        match (outcome, closed) {
            (Err(error), _) => Err(error),
            (Ok(_), Err(error)) => Err(error),
            (Ok(value), Ok(())) => Ok(value),
        }
    }

    /// Joins `key`'s resource, waiting out one that is closing; `true` if this user opens it.
    async fn join(&self, key: &K) -> Result<(Arc<Slot<V>>, bool), Cancelled> {
        loop {
            let closing = {
                let mut slots = lock(&self.inner.slots);
                match slots.get(key) {
                    Some(slot) => {
                        let mut state = lock(&slot.state);
                        if !state.closing {
                            state.users += 1;
                            drop(state);
                            return Ok((slot.clone(), false));
                        }
                        drop(state);
                        slot.clone()
                    }
                    None => {
                        let slot = Arc::new(Slot {
                            state: Mutex::new(SlotState {
                                users: 1,
                                value: None,
                                closing: false,
                                outcome: None,
                            }),
                            ready: Event::new(),
                            release: Event::new(),
                            closed: Event::new(),
                        });
                        slots.insert(key.clone(), slot.clone());
                        return Ok((slot, true));
                    }
                }
            };
            closing.closed.wait().await?;
        }
    }

    /// One user leaves; the last releases the resource and waits, shielded, until it closed,
    /// returning its closing error.
    async fn leave(&self, slot: &Arc<Slot<V>>) -> Result<(), Error> {
        let last = {
            let mut state = lock(&slot.state);
            state.users -= 1;
            if state.users == 0 {
                state.closing = true;
                true
            } else {
                false
            }
        };
        if !last {
            return Ok(());
        }
        slot.release.set();
        CancelScope::shielded()
            .run(async { slot.closed.wait().await })
            .await?;
        let outcome = lock(&slot.state).outcome.take();
        outcome.unwrap_or(Ok(()))
    }
}

impl<K: Eq + Hash, V> Inner<K, V> {
    /// `key`'s resource task ended: the key is free for a fresh resource (removed before the
    /// users waiting for the close wake up and look again), then the users are told.
    fn finish(&self, key: &K, slot: &Arc<Slot<V>>, outcome: Result<(), Error>) {
        {
            let mut state = lock(&slot.state);
            state.closing = true;
            state.outcome = Some(outcome);
        }
        {
            let mut slots = lock(&self.slots);
            if slots.get(key).is_some_and(|s| Arc::ptr_eq(s, slot)) {
                slots.remove(key);
            }
        }
        slot.ready.set();
        slot.closed.set();
    }
}
