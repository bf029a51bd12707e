//! Pools: identical supervised actors, resized at run time, with calls routed among them
//! (OTP's `simple_one_for_one`).

use std::future::Future;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis::supervisor::Restart;

use super::nursery::lock;
use super::supervisor::{ActorSupervisor, SupervisedPortal};
use crate::actor_error::ActorError;
use crate::calls::MsgStream;
use crate::functions::{RemoteFn, StreamFn};

/// Which worker of a pool a call goes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Route {
    /// Each worker in turn.
    RoundRobin,
    /// The worker with the fewest calls in flight through this pool (the first of them on a
    /// tie).
    LeastBusy,
    /// Always the same worker for the same key while that worker is in the pool, across its
    /// restarts (it waits while the worker is down); resizing moves only the keys of the
    /// workers added or removed (rendezvous hashing). Make one with [`Route::key`].
    Key(u64),
}

impl Route {
    /// The route of `key`: equal keys take the same route.
    pub fn key<K: Hash + ?Sized>(key: &K) -> Route {
        let mut hasher = DefaultHasher::new();
        key.hash(&mut hasher);
        Route::Key(hasher.finish())
    }
}

/// A pool of identical child actors of one [`ActorSupervisor`], named `NAME-0`, `NAME-1`, …,
/// each restarted by the supervisor's rules. Made by [`ActorSupervisor::start_pool`]. Cheap
/// to clone.
#[derive(Clone)]
pub struct ActorPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    supervisor: ActorSupervisor,
    name: String,
    restart: Restart,
    workers: Mutex<Vec<Worker>>,
    next: AtomicUsize,
    /// One resize at a time.
    resizing: trellis::sync::Lock,
}

#[derive(Clone)]
struct Worker {
    portal: SupervisedPortal,
    /// Calls in flight through the pool.
    busy: Arc<AtomicUsize>,
}

impl std::fmt::Debug for ActorPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActorPool")
            .field("name", &self.inner.name)
            .field("size", &self.len())
            .finish()
    }
}

/// Counts a call in flight on a worker for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ActorSupervisor {
    /// Starts a pool of `size` workers named `NAME-0` … under this supervisor, each with the
    /// `restart` policy, and waits until every one serves.
    ///
    /// # Errors
    ///
    /// As [`start_actor`](ActorSupervisor::start_actor) for each worker.
    pub async fn start_pool(
        &self,
        name: &str,
        size: usize,
        restart: Restart,
    ) -> Result<ActorPool, ActorError> {
        let pool = ActorPool {
            inner: Arc::new(PoolInner {
                supervisor: self.clone(),
                name: name.to_owned(),
                restart,
                workers: Mutex::new(Vec::new()),
                next: AtomicUsize::new(0),
                resizing: trellis::sync::Lock::new(),
            }),
        };
        // A pool that could not be made whole (a worker did not start, the caller was
        // cancelled) leaves no worker behind.
        let mut whole = StopWorkers {
            pool: &pool,
            armed: true,
        };
        pool.resize(size).await?;
        whole.armed = false;
        drop(whole);
        Ok(pool)
    }
}

/// Stops every worker of a pool when dropped, unless disarmed.
struct StopWorkers<'a> {
    pool: &'a ActorPool,
    armed: bool,
}

impl Drop for StopWorkers<'_> {
    fn drop(&mut self) {
        if self.armed {
            for worker in self.pool.workers() {
                self.pool.inner.supervisor.stop(worker.name());
            }
        }
    }
}

/// Stops the named children when dropped: workers that were to be stopped, or that were
/// started for a pool that failed, whatever interrupts the caller.
struct StopOnDrop<'a> {
    supervisor: &'a ActorSupervisor,
    names: Vec<String>,
}

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        for name in self.names.drain(..) {
            self.supervisor.stop(&name);
        }
    }
}

impl ActorPool {
    /// The number of workers.
    pub fn len(&self) -> usize {
        lock(&self.inner.workers).len()
    }

    /// Whether it has no worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The workers' portals, in order.
    pub fn workers(&self) -> Vec<SupervisedPortal> {
        lock(&self.inner.workers)
            .iter()
            .map(|w| w.portal.clone())
            .collect()
    }

    /// Grows the pool to `size` workers (each started, and serving, before this returns) or
    /// shrinks it: the last workers leave the routing at once, their calls in flight through
    /// the pool finish (for up to the supervisor's grace period), then they are stopped.
    ///
    /// # Errors
    ///
    /// As [`ActorSupervisor::start_actor`] when growing; [`ActorError::Cancelled`].
    pub async fn resize(&self, size: usize) -> Result<(), ActorError> {
        let _one_at_a_time = (self.inner.resizing.acquire().await).map_err(trellis::Error::from)?;
        Self::prune(&mut lock(&self.inner.workers));
        loop {
            let len = self.len();
            if len >= size {
                break;
            }
            let name = self.free_name();
            let portal = self
                .inner
                .supervisor
                .start_actor(&name, self.inner.restart)
                .await?;
            lock(&self.inner.workers).push(Worker {
                portal,
                busy: Arc::new(AtomicUsize::new(0)),
            });
        }
        let leaving = {
            let mut workers = lock(&self.inner.workers);
            let keep = size.min(workers.len());
            workers.split_off(keep)
        };
        // Stopped even if this is cancelled while their calls finish.
        let mut stopping = StopOnDrop {
            supervisor: &self.inner.supervisor,
            names: leaving.iter().map(|w| w.portal.name().to_owned()).collect(),
        };
        let grace = self.inner.supervisor.grace();
        for worker in leaving.iter().rev() {
            // Let the calls already routed to it finish, for a while.
            let _ = trellis::move_on_after(grace, async {
                while worker.busy.load(Ordering::Relaxed) > 0 {
                    trellis::sleep(Duration::from_millis(5)).await?;
                }
                Ok::<_, trellis::Cancelled>(())
            })
            .await?;
            self.inner.supervisor.stop(worker.portal.name());
            stopping.names.retain(|n| n != worker.portal.name());
        }
        // Gone (reaped, unregistered) before this returns: a later resize reuses the names.
        for worker in &leaving {
            while (self.inner.supervisor.children())
                .iter()
                .any(|c| c.name == worker.portal.name())
            {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
        }
        Ok(())
    }

    /// Forgets the workers that will not run again (a transient one that ended normally, a
    /// temporary one that died): they take no call, and a resize replaces them.
    fn prune(workers: &mut Vec<Worker>) {
        workers.retain(|w| !w.portal.is_over());
    }

    /// `NAME-i` for the smallest `i` no worker of this pool is named.
    fn free_name(&self) -> String {
        let workers = lock(&self.inner.workers);
        (0..)
            .map(|i| format!("{}-{i}", self.inner.name))
            .find(|name| workers.iter().all(|w| w.portal.name() != name))
            .expect("a free index")
    }

    /// The worker `route` chooses, counted busy until the guard is dropped.
    fn pick(&self, route: Route) -> Result<(SupervisedPortal, Busy), ActorError> {
        let mut workers = lock(&self.inner.workers);
        // Under the lock the choice is made with.
        Self::prune(&mut workers);
        if workers.is_empty() {
            return Err(ActorError::NoWorker {
                pool: self.inner.name.clone(),
            });
        }
        let index = match route {
            Route::RoundRobin => self.inner.next.fetch_add(1, Ordering::Relaxed) % workers.len(),
            Route::LeastBusy => (0..workers.len())
                .min_by_key(|&i| workers[i].busy.load(Ordering::Relaxed))
                .expect("not empty"),
            Route::Key(key) => (0..workers.len())
                .max_by_key(|&i| {
                    let mut hasher = DefaultHasher::new();
                    (key, workers[i].portal.name()).hash(&mut hasher);
                    hasher.finish()
                })
                .expect("not empty"),
        };
        let worker = &workers[index];
        worker.busy.fetch_add(1, Ordering::Relaxed);
        Ok((worker.portal.clone(), Busy(worker.busy.clone())))
    }

    /// [`SupervisedPortal::run`] in the worker `route` chooses.
    ///
    /// # Errors
    ///
    /// As [`SupervisedPortal::run`]; [`ActorError::NoWorker`] when the pool has no worker.
    pub async fn run<F, Args>(
        &self,
        route: Route,
        function: F,
        args: Args,
    ) -> Result<F::Output, ActorError>
    where
        F: RemoteFn<Args>,
        Args: Serialize,
    {
        let (portal, _busy) = self.pick(route)?;
        portal.run(function, args).await
    }

    /// [`run`](ActorPool::run) by the function's registered name.
    ///
    /// # Errors
    ///
    /// As [`run`](ActorPool::run).
    pub async fn run_named<R, Args>(
        &self,
        route: Route,
        name: &str,
        args: Args,
    ) -> Result<R, ActorError>
    where
        R: DeserializeOwned,
        Args: Serialize,
    {
        let (portal, _busy) = self.pick(route)?;
        portal.run_named(name, args).await
    }

    /// [`SupervisedPortal::open_stream_from`] in the worker `route` chooses; the worker counts
    /// as busy until `body` returns.
    ///
    /// # Errors
    ///
    /// As [`SupervisedPortal::open_stream_from`]; [`ActorError::NoWorker`] when the pool has
    /// no worker.
    pub async fn open_stream_from<F, M, B, Fut, T>(
        &self,
        route: Route,
        function: F,
        args: F::Args,
        body: B,
    ) -> Result<T, trellis::Error>
    where
        F: StreamFn<M>,
        B: FnOnce(MsgStream<F::Item>) -> Fut,
        Fut: Future<Output = Result<T, trellis::Error>>,
    {
        let (portal, _busy) = self.pick(route)?;
        portal.open_stream_from(function, args, body).await
    }
}
