//! Cancel nodes: the plumbing of cancellation.
//!
//! A [`Node`] is to trellis what `CancelStatus` is to Trio: [`CancelScope`](super::CancelScope)
//! is where cancellation *originates*; the node tree is how it *travels*. Each scope and each
//! nursery owns a node; the tasks of a nursery sit directly in the nursery's node; a scope entered
//! inside a task hangs a child node below the task's current one.
//!
//! Each node caches whether it is *effectively* cancelled (its own scope was cancelled, or a
//! parent is effectively cancelled and this node is not shielded) and its *effective deadline*,
//! both as atomics, so that a checkpoint costs a thread-local read and one or two atomic loads.
//! Any change to a node's own state recomputes the cached values downward through its children
//! and wakes every task blocked in an affected node, so they can re-check (level-triggered).
//!
//! Locking: a node's mutex guards its own state, children and waiters. Locks are taken parent
//! before child and never the other way round; propagation holds one lock at a time.

use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicI64;
use std::sync::atomic::Ordering::SeqCst;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::task::Waker;

use crate::error::{CancelReason, Cancelled};
use crate::instrument::Instruments;
use crate::slab::Slab;
use crate::time::{self, NO_DEADLINE};

pub(crate) struct Node {
    state: Mutex<State>,
    /// The instruments of the run this node belongs to; inherited from the parent at creation.
    instruments: OnceLock<Arc<Instruments>>,
    /// A value for code running in this node and below (see `crate::local`).
    local: OnceLock<Arc<dyn std::any::Any + Send + Sync>>,
    /// Why this node's own scope was cancelled; set once, with `cancel_called`, by the first
    /// cancellation (later ones do not overwrite it, as in Trio). Read without the lock.
    reason: OnceLock<Arc<CancelReason>>,
    effectively_cancelled: AtomicBool,
    effective_deadline: AtomicI64,
    /// Never reused (unlike the node's address): what a thread's checkpoint cache remembers.
    id: u64,
    /// Set by a thread before it caches this node as clear. Only then must the node's turning
    /// cancelled or deadline-bound advance the global epoch: a scope entered with a deadline
    /// (every `fail_after`) does not invalidate every thread's cache.
    observed_clear: AtomicBool,
    /// The nursery whose node this is, for a dump.
    nursery: OnceLock<Weak<crate::nursery::Shared>>,
    /// The main future of the run whose root node this is, for a dump.
    main: OnceLock<(Option<tokio::task::Id>, Arc<crate::dump::TaskSlot>)>,
}

/// A node's state as a dump shows it.
pub(crate) struct NodeView {
    pub(crate) nursery: bool,
    pub(crate) deadline: i64,
    pub(crate) shield: bool,
    pub(crate) cancel_called: bool,
    pub(crate) cancelled: bool,
    pub(crate) children: Vec<Arc<Node>>,
}

/// How many unused nodes a thread keeps for reuse.
const RECYCLED_MAX: usize = 64;

thread_local! {
    static RECYCLED: std::cell::RefCell<Vec<Arc<Node>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Node ids, handed to each thread in blocks so that making a node touches no shared line.
fn next_id() -> u64 {
    use std::cell::Cell;
    use std::sync::atomic::AtomicU64;
    const BLOCK: u64 = 1 << 16;
    static NEXT_BLOCK: AtomicU64 = AtomicU64::new(1);
    thread_local! {
        static RANGE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    }
    RANGE
        .try_with(|range| {
            let (mut next, mut end) = range.get();
            if next == end {
                next = NEXT_BLOCK.fetch_add(1, SeqCst) * BLOCK;
                end = next + BLOCK;
            }
            range.set((next + 1, end));
            next
        })
        // In a thread-local destructor: a block of one.
        .unwrap_or_else(|_| NEXT_BLOCK.fetch_add(1, SeqCst) * BLOCK)
}

struct State {
    parent: Option<ParentLink>,
    children: Slab<Weak<Node>>,
    /// Wakers of tasks blocked in a checkpoint while sitting in this node. They stay registered
    /// across wake-ups until their checkpoint completes or is dropped.
    waiters: Slab<Waker>,
    cancel_called: bool,
    deadline: i64,
    /// A deadline relative to entry (Trio's `relative_deadline`), resolved when entered.
    timeout: Option<std::time::Duration>,
    shield: bool,
    entered: bool,
    /// Left (its code finished or was dropped): a deadline passing from now on no longer
    /// cancels it, since it is no longer active.
    exited: bool,
    cancelled_caught: bool,
    /// The task this node was attached in, for a dump (which of a nursery's tasks opened it).
    opened_in: Option<tokio::task::Id>,
}

struct ParentLink {
    node: Arc<Node>,
    key: usize,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field(
                "effectively_cancelled",
                &self.effectively_cancelled.load(SeqCst),
            )
            .field(
                "effective_deadline",
                &time::decode_opt(self.effective_deadline.load(SeqCst)),
            )
            .finish_non_exhaustive()
    }
}

impl Node {
    /// A node with no parent: nothing outside can cancel it.
    pub(crate) fn new_root() -> Arc<Node> {
        // (Not from a thread-local destructor: the pool is gone then.)
        let recycled = RECYCLED
            .try_with(|pool| pool.borrow_mut().pop())
            .ok()
            .flatten();
        recycled.unwrap_or_else(|| Arc::new(Node::fresh()))
    }

    fn fresh() -> Node {
        Node {
            state: Mutex::new(State {
                parent: None,
                children: Slab::default(),
                waiters: Slab::default(),
                cancel_called: false,
                deadline: NO_DEADLINE,
                timeout: None,
                shield: false,
                entered: false,
                exited: false,
                cancelled_caught: false,
                opened_in: None,
            }),
            instruments: OnceLock::new(),
            local: OnceLock::new(),
            reason: OnceLock::new(),
            effectively_cancelled: AtomicBool::new(false),
            effective_deadline: AtomicI64::new(NO_DEADLINE),
            id: next_id(),
            observed_clear: AtomicBool::new(false),
            nursery: OnceLock::new(),
            main: OnceLock::new(),
        }
    }

    /// Marks this node as `nursery`'s.
    pub(crate) fn set_nursery(&self, nursery: Weak<crate::nursery::Shared>) {
        let _ = self.nursery.set(nursery);
    }

    /// Marks this root node as the run of `main`.
    pub(crate) fn set_main(&self, main: Arc<crate::dump::TaskSlot>) {
        // The tokio task it is polled in, when it is (`trellis::root` in `#[tokio::main]`).
        let _ = self.main.set((tokio::task::try_id(), main));
    }

    /// The tasks that run directly in this node: a nursery's, or a run's main future (with
    /// the id of the tokio task that polls it, if any).
    pub(crate) fn tasks(&self) -> Vec<(Option<tokio::task::Id>, Arc<crate::dump::TaskSlot>)> {
        let mut tasks: Vec<_> = self.main.get().cloned().into_iter().collect();
        tasks.extend(
            self.nursery_tasks()
                .into_iter()
                .map(|(id, slot)| (Some(id), slot)),
        );
        tasks
    }

    /// The task this node was entered in, when it was entered in one.
    pub(crate) fn opened_in(&self) -> Option<tokio::task::Id> {
        self.lock().opened_in
    }

    /// The parent node, if any.
    pub(crate) fn parent(&self) -> Option<Arc<Node>> {
        self.lock().parent.as_ref().map(|p| p.node.clone())
    }

    /// What a dump shows of this node, with its live children.
    pub(crate) fn view(self: &Arc<Self>) -> NodeView {
        let mut state = self.lock();
        NodeView {
            nursery: self.nursery.get().is_some(),
            deadline: state.deadline,
            shield: state.shield,
            cancel_called: state.cancel_called,
            cancelled: self.effectively_cancelled.load(SeqCst),
            children: state
                .children
                .iter_mut()
                .filter_map(|w| w.upgrade())
                .collect(),
        }
    }

    /// The live tasks of this node's nursery (none for a scope's node).
    pub(crate) fn nursery_tasks(&self) -> Vec<(tokio::task::Id, Arc<crate::dump::TaskSlot>)> {
        match self.nursery.get().and_then(Weak::upgrade) {
            Some(nursery) => nursery.live_tasks(),
            None => Vec::new(),
        }
    }

    /// Keeps the allocation of a node that nothing refers to any more, for the next scope made
    /// on this thread: a timeout per task then costs no allocation (B11). The node gets a new
    /// id when reused, so no checkpoint cache can mistake it for the old one.
    pub(crate) fn recycle(mut node: Arc<Node>) {
        let Some(slot) = Arc::get_mut(&mut node) else {
            return;
        };
        // Reset now, so that a kept node holds nothing of its past (instruments, reason).
        *slot = Node::fresh();
        let _ = RECYCLED.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < RECYCLED_MAX {
                pool.push(node);
            }
        });
    }

    /// The node of a scope made from `spec`, not entered yet.
    pub(crate) fn new_scope(spec: &crate::cancel::scope::ScopeSpec) -> Arc<Node> {
        let node = Node::new_root();
        {
            let mut state = node.lock();
            if spec.relative {
                state.timeout = (spec.at != NO_DEADLINE)
                    .then(|| std::time::Duration::from_nanos(spec.at as u64));
            } else {
                state.deadline = spec.at;
            }
            state.shield = spec.shield;
        }
        node
    }

    /// The node of a scope made from `spec` as it is entered: a relative timeout counts from
    /// now.
    pub(crate) fn new_entered_scope(spec: &crate::cancel::scope::ScopeSpec) -> Arc<Node> {
        let node = Node::new_root();
        {
            let mut state = node.lock();
            state.deadline = spec.deadline_from_now();
            state.shield = spec.shield;
            state.entered = true;
        }
        node
    }

    /// The node's identity for the checkpoint cache (never 0, never reused).
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Called by a thread about to cache this node as clear, before it checks that it is.
    pub(crate) fn mark_observed_clear(&self) {
        if !self.observed_clear.load(SeqCst) {
            self.observed_clear.store(true, SeqCst);
        }
    }

    pub(crate) fn instruments(&self) -> Option<&Arc<Instruments>> {
        self.instruments.get()
    }

    pub(crate) fn set_instruments(&self, instruments: Arc<Instruments>) {
        let _ = self.instruments.set(instruments);
    }

    /// Sets the node's local value (once, before code runs in it).
    pub(crate) fn set_local(&self, value: Arc<dyn std::any::Any + Send + Sync>) {
        let _ = self.local.set(value);
    }

    /// The nearest local value of type `T`, from this node up through its parents.
    pub(crate) fn find_local<T: Clone + 'static>(self: &Arc<Self>) -> Option<T> {
        let mut node = self.clone();
        loop {
            if let Some(value) = node.local.get().and_then(|v| v.downcast_ref::<T>()) {
                return Some(value.clone());
            }
            let parent = node.lock().parent.as_ref().map(|p| p.node.clone())?;
            node = parent;
        }
    }

    /// A node below `parent` (or a root when there is none), already entered.
    pub(crate) fn new_child(parent: Option<&Arc<Node>>) -> Arc<Node> {
        let node = Node::new_root();
        node.lock().entered = true;
        if let Some(parent) = parent {
            node.attach(parent);
        }
        node
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned node only means a waker panicked while we held the lock elsewhere; the
        // state itself is always consistent between statements, so keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Marks the node entered, resolving a relative timeout into a deadline; returns false
    /// when it was entered before (a scope is single-use).
    ///
    /// The node's effective state is not recomputed here: the caller attaches it to its parent
    /// or calls [`update`](Node::update), once.
    pub(crate) fn mark_entered(self: &Arc<Self>) -> bool {
        let mut state = self.lock();
        if let Some(timeout) = state.timeout.take() {
            state.deadline = time::deadline_after(timeout);
        }
        !std::mem::replace(&mut state.entered, true)
    }

    /// Sets a deadline `timeout` after entry: on a scope not entered yet it waits for entry
    /// (replacing any absolute deadline); on an entered one it is a deadline `timeout` from now.
    pub(crate) fn set_relative_timeout(self: &Arc<Self>, timeout: std::time::Duration) {
        {
            let mut state = self.lock();
            if !state.entered {
                // Nothing runs in a node before it is entered, and entering computes its
                // effective state: nothing to recompute now.
                state.timeout = Some(timeout);
                state.deadline = NO_DEADLINE;
                return;
            }
            self.note_passed_deadline(&mut state);
            state.deadline = time::deadline_after(timeout);
        }
        self.update();
    }

    /// Before entry: the timeout that starts at entry, if one was set. After entry: the time
    /// left until the deadline (zero once it passed), if there is one (Trio's
    /// `relative_deadline`).
    pub(crate) fn relative_timeout(&self) -> Option<std::time::Duration> {
        let state = self.lock();
        if !state.entered {
            return state.timeout;
        }
        (state.deadline != NO_DEADLINE).then(|| {
            let left = state.deadline.saturating_sub(time::now());
            std::time::Duration::from_nanos(u64::try_from(left).unwrap_or(0))
        })
    }

    /// Moves this node below `parent`, leaving any previous parent.
    pub(crate) fn attach(self: &Arc<Self>, parent: &Arc<Node>) {
        // A scope made before it is entered (a timeout, a shielded scope) joins the run's
        // instruments where it is entered.
        if let Some(instruments) = parent.instruments() {
            self.set_instruments(instruments.clone());
        }
        let (old, settled) = {
            let mut parent_state = parent.lock();
            let key = parent_state.children.insert(Arc::downgrade(self));
            let link = ParentLink {
                node: parent.clone(),
                key,
            };
            let mut state = self.lock();
            if state.opened_in.is_none() {
                state.opened_in = tokio::task::try_id();
            }
            let old = state.parent.replace(link);
            // A scope being entered has no children and nobody waits in it yet: its effective
            // state is computed here, under the locks already held, and nothing needs waking.
            let settled = old.is_none() && state.children.is_empty() && state.waiters.is_empty();
            if settled {
                self.store_effective(&state);
            }
            (old, settled)
        };
        if let Some(old) = old {
            old.node.lock().children.remove(old.key);
        }
        if !settled {
            self.update();
        }
    }

    /// Computes and stores the node's effective state from its own state and its parent's
    /// (read under the node's lock, so a parent changing meanwhile recomputes it after us).
    /// Returns whether it changed; if it turned cancelled or deadline-bound and some thread
    /// may have cached the node as clear, moves the epoch. (A thread marks the node before
    /// checking it, and we changed it before reading the mark: one of us sees the other.)
    fn store_effective(&self, state: &State) -> bool {
        let (outer_cancelled, outer_deadline) = match &state.parent {
            Some(parent) if !state.shield => (
                parent.node.effectively_cancelled.load(SeqCst),
                parent.node.effective_deadline.load(SeqCst),
            ),
            _ => (false, NO_DEADLINE),
        };
        let cancelled = state.cancel_called || outer_cancelled;
        let deadline = state.deadline.min(outer_deadline);
        let was_cancelled = self.effectively_cancelled.swap(cancelled, SeqCst);
        let old_deadline = self.effective_deadline.swap(deadline, SeqCst);
        if was_cancelled == cancelled && old_deadline == deadline {
            return false;
        }
        if (cancelled || deadline != NO_DEADLINE) && self.observed_clear.load(SeqCst) {
            crate::context::node_no_longer_clear();
        }
        true
    }

    /// Leaves the parent: from now on nothing above can cancel this node.
    pub(crate) fn detach(&self) {
        let old = self.lock().parent.take();
        if let Some(old) = old {
            old.node.lock().children.remove(old.key);
        }
    }

    /// The scope's code is done: a deadline that passed while it ran has cancelled it (for
    /// good), one that passes later never will. Leaves the parent.
    pub(crate) fn leave(&self) {
        let old = {
            let mut state = self.lock();
            self.note_passed_deadline(&mut state);
            state.exited = true;
            state.parent.take()
        };
        if let Some(old) = old {
            old.node.lock().children.remove(old.key);
        }
    }

    /// Cancels the node's own scope; `reason` is asked for only by the first cancellation.
    pub(crate) fn cancel(self: &Arc<Self>, reason: impl FnOnce() -> CancelReason) {
        if self.lock().cancel_called {
            return;
        }
        // Made outside the lock: it may format a user's error, which may panic.
        let reason = Arc::new(reason());
        {
            let mut state = self.lock();
            if state.cancel_called {
                return;
            }
            state.cancel_called = true;
            let _ = self.reason.set(reason);
        }
        self.update();
    }

    /// Trio cancels a scope the moment its deadline passes while it is active (or not yet
    /// entered); trellis notices lazily, at checkpoints, and makes it so — permanently —
    /// wherever the difference could be seen: reading `cancel_called`, moving the deadline,
    /// leaving the scope. True when this call cancelled the node (the caller then updates).
    fn note_passed_deadline(&self, state: &mut State) -> bool {
        if state.cancel_called
            || state.exited
            || state.deadline == NO_DEADLINE
            || state.deadline > time::now()
        {
            return false;
        }
        state.cancel_called = true;
        let _ = self.reason.set(Arc::new(CancelReason::deadline()));
        true
    }

    pub(crate) fn set_deadline(self: &Arc<Self>, deadline: i64) {
        let entered = {
            let mut state = self.lock();
            if state.entered {
                self.note_passed_deadline(&mut state);
            }
            state.deadline = deadline;
            state.timeout = None;
            state.entered
        };
        // Before entry nothing runs in the node; entering computes its effective state.
        if entered {
            self.update();
        }
    }

    pub(crate) fn set_shield(self: &Arc<Self>, shield: bool) {
        let entered = {
            let mut state = self.lock();
            state.shield = shield;
            state.entered
        };
        if entered {
            self.update();
        }
    }

    pub(crate) fn deadline(&self) -> i64 {
        self.lock().deadline
    }

    pub(crate) fn shield(&self) -> bool {
        self.lock().shield
    }

    /// True once `cancel` was called, or the node's own deadline passed while its scope was
    /// active or before it was entered (which cancels it, for good).
    pub(crate) fn cancel_called(self: &Arc<Self>) -> bool {
        let newly = {
            let mut state = self.lock();
            if state.cancel_called {
                return true;
            }
            self.note_passed_deadline(&mut state)
        };
        if newly {
            self.update();
        }
        newly
    }

    /// The `Cancelled` that code in this node gets: with the reason of this node's scope, or of
    /// the nearest cancelled scope above it up to a shield.
    #[cold]
    pub(crate) fn cancelled(self: &Arc<Self>) -> Cancelled {
        let mut node = self.clone();
        loop {
            if let Some(reason) = node.reason.get() {
                return Cancelled::with_reason(reason.clone());
            }
            let parent = {
                let state = node.lock();
                if state.shield {
                    None
                } else {
                    state.parent.as_ref().map(|p| p.node.clone())
                }
            };
            match parent {
                Some(parent) => node = parent,
                None => return Cancelled::new(),
            }
        }
    }

    pub(crate) fn cancelled_caught(&self) -> bool {
        self.lock().cancelled_caught
    }

    pub(crate) fn effective_deadline(&self) -> i64 {
        self.effective_deadline.load(SeqCst)
    }

    /// Neither cancelled nor under a deadline: nothing can cancel code here until the node's
    /// state changes (which advances the checkpoint cache's epoch).
    pub(crate) fn is_clear(&self) -> bool {
        !self.effectively_cancelled.load(SeqCst)
            && self.effective_deadline.load(SeqCst) == NO_DEADLINE
    }

    /// Whether code in this node must get `Cancelled` now. Turns passed deadlines into
    /// cancellation of the scopes that own them, as Trio does.
    #[inline]
    pub(crate) fn is_cancelled(self: &Arc<Self>) -> bool {
        if self.effectively_cancelled.load(SeqCst) {
            return true;
        }
        let deadline = self.effective_deadline.load(SeqCst);
        if deadline == NO_DEADLINE {
            return false;
        }
        let now = time::now();
        if deadline > now {
            return false;
        }
        self.expire_deadlines(now);
        self.effectively_cancelled.load(SeqCst)
    }

    /// Cancels every scope from here up to the nearest shield whose deadline is at or before
    /// `now`.
    #[cold]
    fn expire_deadlines(self: &Arc<Self>, now: i64) {
        let mut node = self.clone();
        loop {
            let (expired, shield, parent) = {
                let state = node.lock();
                let expired = state.deadline <= now && !state.cancel_called;
                (
                    expired,
                    state.shield,
                    state.parent.as_ref().map(|p| p.node.clone()),
                )
            };
            if expired {
                node.cancel(CancelReason::deadline);
            }
            match parent {
                Some(parent) if !shield => node = parent,
                _ => return,
            }
        }
    }

    /// Trio's rule: a scope catches the `Cancelled` that reaches it when it was cancelled itself
    /// and no cancellation from outside is visible to it.
    pub(crate) fn can_catch(self: &Arc<Self>) -> bool {
        if !self.cancel_called() {
            return false;
        }
        let (shield, parent) = {
            let state = self.lock();
            (state.shield, state.parent.as_ref().map(|p| p.node.clone()))
        };
        shield || !parent.is_some_and(|p| p.is_cancelled())
    }

    /// Records that the scope caught a cancellation.
    pub(crate) fn caught(&self) {
        self.lock().cancelled_caught = true;
    }

    /// [`can_catch`](Node::can_catch), recording the catch.
    pub(crate) fn try_catch(self: &Arc<Self>) -> bool {
        let catch = self.can_catch();
        if catch {
            self.caught();
        }
        catch
    }

    /// Registers (or refreshes) the waker of a blocked checkpoint; `key` remembers its slot.
    pub(crate) fn register(&self, key: &mut Option<usize>, waker: &Waker) {
        let mut state = self.lock();
        match key.and_then(|k| state.waiters.get_mut(k)) {
            Some(slot) => slot.clone_from(waker),
            None => *key = Some(state.waiters.insert(waker.clone())),
        }
    }

    pub(crate) fn deregister(&self, key: usize) {
        self.lock().waiters.remove(key);
    }

    /// Recomputes the cached effective state of this node and, where it changed, of its
    /// descendants; wakes the waiters of every node whose state changed.
    pub(crate) fn update(self: &Arc<Self>) {
        /// Wakers are cloned out in batches and woken outside the lock, so that tasks waking
        /// up (and leaving the waiter list) do not wait for all 10,000 of their siblings.
        const BATCH: usize = 64;
        // Nothing is allocated unless something changed: entering a scope whose parent is not
        // cancelled calls this too.
        let mut pending: Vec<Arc<Node>> = Vec::new();
        let mut wake: Vec<Waker> = Vec::new();
        let mut next = Some(self.clone());
        while let Some(node) = next.take().or_else(|| pending.pop()) {
            let has_waiters = {
                let mut state = node.lock();
                if !node.store_effective(&state) {
                    continue;
                }
                pending.extend(state.children.iter_mut().filter_map(|c| c.upgrade()));
                !state.waiters.is_empty()
            };
            if !has_waiters {
                continue;
            }
            wake.reserve(BATCH);
            let mut from = 0;
            loop {
                from = node.lock().waiters.clone_from_index(from, BATCH, &mut wake);
                if wake.is_empty() {
                    break;
                }
                wake.drain(..).for_each(Waker::wake);
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(parent) = state.parent.take() {
            parent.node.lock().children.remove(parent.key);
        }
    }
}
