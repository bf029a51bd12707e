//! A dump of what every task is doing: the tree of nurseries, cancel scopes and tasks of a
//! run, each task with its name and what it waits on (tractor's SIGUSR1 task tree, Trio's
//! `trio.lowlevel` introspection in one call).
//!
//! Tasks are named when started ([`Nursery::start_soon_named`](crate::Nursery::start_soon_named));
//! unnamed ones take the name of the function their future comes from. A task says what it
//! waits on only on the slow path: a trellis operation that has to wait records a short
//! description (`sleep`, `channel receive`, `lock`, `event`, …) in its task's slot when it
//! starts waiting and clears it when it stops; code outside trellis can say the same with
//! [`waiting_on`]. Nothing is recorded for an operation that completes at once.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::cancel::node::Node;
use crate::time::{self, NO_DEADLINE};

/// What a dump knows of one task while it lives.
pub(crate) struct TaskSlot {
    /// The name given, or the future's type name (made readable only when a dump shows it:
    /// spawning stays free of string work).
    name: TaskName,
    waiting: Mutex<SlotState>,
    /// What the task provides that others may wait for (a served call's key).
    serves: std::sync::OnceLock<String>,
}

/// What a task's slot holds of its waits.
#[derive(Default)]
struct SlotState {
    /// The wait it shows (the last one recorded).
    wait: Option<Wait>,
    /// The deadlines of its live waits that end by themselves (sleeps), however many it
    /// waits on at once (`select!`): a task with one is not blocked.
    timers: Vec<i64>,
    /// How many waits it has recorded: two dumps that show the same count saw the same wait.
    waits: u64,
}

/// A wait as a task's slot holds it.
struct Wait {
    what: Cow<'static, str>,
    /// The key of what it waits for (the wait-for graph).
    key: Option<String>,
}

/// What a dump reads of a task's waits.
struct Seen {
    what: Option<String>,
    key: Option<String>,
    /// The earliest deadline of its timed waits, or `NO_DEADLINE`.
    until: i64,
    waits: u64,
}

/// How a task is named.
pub(crate) enum TaskName {
    Given(Cow<'static, str>),
    Type(&'static str),
}

impl TaskSlot {
    pub(crate) fn new(name: TaskName) -> Arc<TaskSlot> {
        Arc::new(TaskSlot {
            name,
            waiting: Mutex::new(SlotState::default()),
            serves: std::sync::OnceLock::new(),
        })
    }

    /// The name a dump shows.
    fn name(&self) -> String {
        match &self.name {
            TaskName::Given(name) => name.to_string(),
            TaskName::Type(name) => readable(name),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.waiting.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Shows `wait` (a new wait, counted), or nothing.
    fn set(&self, wait: Option<Wait>) {
        let mut state = self.state();
        if wait.is_some() {
            state.waits += 1;
        }
        state.wait = wait;
    }

    /// What a dump reads.
    fn seen(&self) -> Seen {
        let state = self.state();
        Seen {
            what: state.wait.as_ref().map(|w| w.what.to_string()),
            key: state.wait.as_ref().and_then(|w| w.key.clone()),
            until: state.timers.iter().copied().min().unwrap_or(NO_DEADLINE),
            waits: state.waits,
        }
    }
}

thread_local! {
    /// The slot of the task being polled on this thread.
    static CURRENT: RefCell<Option<Arc<TaskSlot>>> = const { RefCell::new(None) };
}

/// Makes `slot` the current task's for the duration of a poll; gives back the previous one.
pub(crate) fn enter(slot: Option<Arc<TaskSlot>>) -> Option<Arc<TaskSlot>> {
    CURRENT
        .try_with(|current| current.replace(slot))
        .ok()
        .flatten()
}

/// The current task's slot, if trellis runs the current task.
pub(crate) fn current() -> Option<Arc<TaskSlot>> {
    CURRENT
        .try_with(|current| current.borrow().clone())
        .ok()
        .flatten()
}

/// A wait recorded in a task's slot; clears it when dropped.
pub(crate) struct Recorded {
    slot: Arc<TaskSlot>,
    /// Its deadline when it ends by itself, or `NO_DEADLINE`.
    until: i64,
}

impl Recorded {
    /// Records that the current task waits on `what`, if trellis runs it.
    pub(crate) fn start(what: Cow<'static, str>) -> Option<Recorded> {
        Recorded::keyed(what, None)
    }

    /// [`start`](Recorded::start), with the key of what it waits for (`task:ID` for the
    /// holder of a lock, a served call's key for a call), which a dump's wait-for graph
    /// follows.
    pub(crate) fn keyed(what: Cow<'static, str>, key: Option<String>) -> Option<Recorded> {
        let slot = current()?;
        slot.set(Some(Wait { what, key }));
        Some(Recorded {
            slot,
            until: NO_DEADLINE,
        })
    }

    /// [`start`](Recorded::start) for a wait that ends by itself at `until` (a sleep).
    pub(crate) fn until(what: Cow<'static, str>, until: i64) -> Option<Recorded> {
        let slot = current()?;
        slot.state().timers.push(until);
        slot.set(Some(Wait { what, key: None }));
        Some(Recorded { slot, until })
    }
}

impl Drop for Recorded {
    fn drop(&mut self) {
        let mut state = self.slot.state();
        state.wait = None;
        if self.until != NO_DEADLINE
            && let Some(at) = state.timers.iter().position(|&t| t == self.until)
        {
            state.timers.swap_remove(at);
        }
    }
}

/// Runs `future`, recording while it waits that the current task waits on `what` (for
/// [`dump`]). `what` is made only when the future has to wait.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), trellis::Error> {
/// trellis::open_nursery(|n| async move {
///     n.start_soon_named("poller", async {
///         trellis::dump::waiting_on(|| "the upstream service".into(), async {
///             trellis::sleep(std::time::Duration::from_millis(50)).await
///         })
///         .await
///     })?;
///     trellis::sleep(std::time::Duration::from_millis(10)).await?;
///     let dump = trellis::dump::dump();
///     assert!(dump.to_string().contains("poller — waiting on the upstream service"));
///     Ok::<_, trellis::Error>(())
/// })
/// .await?;
/// # Ok(()) }
/// ```
pub fn waiting_on<F, D>(what: D, future: F) -> WaitingOn<F, impl FnOnce() -> Waits>
where
    F: Future,
    D: FnOnce() -> Cow<'static, str>,
{
    waiting_for(
        move || Waits {
            what: what(),
            key: None,
        },
        future,
    )
}

/// What a task waits on ([`waiting_for`]): a description for people, and a key for the
/// wait-for graph of [`deadlocks`]: the key another task [`serves`], or `task:ID` for a task
/// by its tokio id.
#[derive(Debug, Clone)]
pub struct Waits {
    /// What it waits on, for people.
    pub what: Cow<'static, str>,
    /// What it waits for, for the wait-for graph.
    pub key: Option<String>,
}

/// [`waiting_on`] with a key for the wait-for graph (what [`deadlocks`] follows): the key of
/// what the task waits for, which another task [`serves`].
pub fn waiting_for<F, D>(what: D, future: F) -> WaitingOn<F, D>
where
    F: Future,
    D: FnOnce() -> Waits,
{
    WaitingOn {
        future,
        what: Some(what),
        described: None,
        recorded: None,
    }
}

/// Marks the current task as serving `key` (a served call, say): a task whose wait has this
/// key waits for this task, in the wait-for graph of [`deadlocks`]. Outside a trellis task,
/// nothing happens.
pub fn serves(key: impl Into<String>) {
    if let Some(slot) = current() {
        let _ = slot.serves.set(key.into());
    }
}

pin_project_lite::pin_project! {
    /// The future of [`waiting_on`].
    #[must_use = "futures do nothing unless you .await or poll them"]
    pub struct WaitingOn<F, D> {
        #[pin]
        future: F,
        what: Option<D>,
        described: Option<Waits>,
        recorded: Option<Recorded>,
    }
}

impl<F: Future, D: FnOnce() -> Waits> Future for WaitingOn<F, D> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.future.poll(cx) {
            Poll::Ready(output) => {
                *this.recorded = None;
                Poll::Ready(output)
            }
            Poll::Pending => {
                if let Some(what) = this.what.take() {
                    *this.described = Some(what());
                }
                // Set after every pending poll: the inner future's own waits (a channel under
                // a remote call) say less than this one.
                let Waits { what, key } = this.described.clone().expect("described above");
                match this.recorded {
                    Some(recorded) => recorded.slot.set(Some(Wait { what, key })),
                    None => *this.recorded = Recorded::keyed(what, key),
                }
                Poll::Pending
            }
        }
    }
}

/// The name a task gets from its future's type when it is not given one: the path of the
/// function the future comes from (`my_app::worker` for `worker(…)` or an `async` block in
/// it), without closures and generic arguments — worked out when a dump shows it.
pub(crate) fn name_of<F>() -> TaskName {
    TaskName::Type(std::any::type_name::<F>())
}

/// A future's type name as a task's name: `app::worker::{{closure}}` reads `app::worker`.
fn readable(mut name: &str) -> String {
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    if !name.contains('<') {
        return name.to_owned();
    }
    without_generics(name)
}

/// `name` without generic arguments and `<impl …>` segments:
/// `my::Pool::<impl my::Pool>::run<u64>` reads `my::Pool::run`.
fn without_generics(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut depth = 0usize;
    let mut previous = ' ';
    for c in name.chars() {
        match c {
            '<' => depth += 1,
            // The arrow of a `fn() -> T` argument closes nothing.
            '>' if previous != '-' => depth = depth.saturating_sub(1),
            _ if depth == 0 => out.push(c),
            _ => {}
        }
        previous = c;
    }
    while let Some(at) = out.find("::::") {
        out.replace_range(at..at + 4, "::");
    }
    let out = out.trim_end_matches("::{{closure}}");
    out.to_owned()
}

#[cfg(test)]
mod tests {
    use super::without_generics;

    #[test]
    fn generic_arguments_and_impl_blocks_are_left_out() {
        assert_eq!(
            without_generics("app::peers::<impl app::handle::Actor>::accept_loop"),
            "app::peers::accept_loop"
        );
        assert_eq!(
            without_generics(
                "app::Nursery::run_in<app::watch, (alloc::string::String, fn() -> u8)>::{{closure}}"
            ),
            "app::Nursery::run_in"
        );
    }
}

/// A snapshot of a run's nurseries, scopes and tasks, from its root scope down. Printed
/// (`Display`), it is an indented tree; its parts are public for programs (a supervisor's
/// health page, a test).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dump {
    /// The root scope of the run the calling task belongs to.
    pub root: ScopeDump,
}

/// A nursery or a cancel scope in a [`Dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScopeDump {
    /// A nursery (its tasks listed), or a scope.
    pub nursery: bool,
    /// Time left until its own deadline, if it has one (zero once passed).
    pub deadline_in: Option<std::time::Duration>,
    /// Whether it is shielded.
    pub shielded: bool,
    /// Whether its own cancellation was asked for.
    pub cancel_called: bool,
    /// Whether code in it is cancelled (by itself or from above).
    pub cancelled: bool,
    /// Its tasks (nurseries only), with the scopes each opened.
    pub tasks: Vec<TaskDump>,
    /// Scopes and nurseries opened in it outside any of its tasks (by the nursery's body, or by
    /// the code of the scope).
    pub children: Vec<ScopeDump>,
}

/// A task in a [`Dump`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskDump {
    /// Its name.
    pub name: String,
    /// Its tokio task id, when it runs in one (as `task:ID` keys name it).
    pub id: Option<String>,
    /// What it waits on, when it is blocked in an operation that says.
    pub waiting_on: Option<String>,
    /// The key of what it waits for, when its wait has one ([`deadlocks`]).
    pub waits_for: Option<String>,
    /// The key of what it serves ([`serves`]).
    pub serves: Option<String>,
    /// The time left until a wait of its ends by itself (the earliest of its sleeps), zero
    /// once passed.
    pub wakes_in: Option<std::time::Duration>,
    /// Whether it is the task that took the dump: it runs, so it waits on nothing.
    pub dumping: bool,
    /// How many waits it has recorded so far: two dumps showing the same count (and a wait)
    /// saw it in the same wait.
    pub waits: u64,
    /// The scopes and nurseries it opened.
    pub children: Vec<ScopeDump>,
}

impl Dump {
    /// Every task in the dump, depth first.
    pub fn tasks(&self) -> Vec<&TaskDump> {
        fn walk<'a>(scope: &'a ScopeDump, out: &mut Vec<&'a TaskDump>) {
            for task in &scope.tasks {
                out.push(task);
                task.children.iter().for_each(|c| walk(c, out));
            }
            scope.children.iter().for_each(|c| walk(c, out));
        }
        let mut out = Vec::new();
        walk(&self.root, &mut out);
        out
    }

    /// Whether every task is blocked and no timer is pending: each task (the one taking the
    /// dump aside) waits in an operation that says what it waits on, none of them will wake by
    /// itself at a time (a sleep), and no scope that is not cancelled yet has a deadline to
    /// come. Then nothing in the run can go on until something outside it happens (a socket,
    /// a signal, another thread) — in a run that has no such thing to wait for, a deadlock
    /// even where no cycle shows ([`deadlocks`](Dump::deadlocks)).
    ///
    /// A wait in code that does not say what it waits on (a foreign future not wrapped in
    /// [`waiting_on`]) counts as not blocked: the verdict errs on the side of silence.
    pub fn all_blocked(&self) -> bool {
        self.root.all_blocked(|_| true)
    }

    /// The cycles of this run's wait-for graph: tasks each waiting for the next, the last for
    /// the first (a lock held by a task that waits for the lock's waiter, say). Each is a
    /// deadlock: none of its tasks can go on by itself.
    pub fn deadlocks(&self) -> Vec<Vec<&TaskDump>> {
        let tasks: Vec<(&str, &TaskDump)> = self.tasks().into_iter().map(|t| ("", t)).collect();
        deadlocks(&tasks)
            .into_iter()
            .map(|cycle| cycle.into_iter().map(|i| tasks[i].1).collect())
            .collect()
    }
}

/// The cycles of the wait-for graph of `tasks`, each given with the process it runs in (any
/// string naming it: a `task:ID` key is looked up among the tasks of the same process; any
/// other key among the tasks of every process that [`serves`] it). A task waits for at most
/// one thing, so each cycle is found once, as indices into `tasks` starting from its
/// earliest task.
pub fn deadlocks(tasks: &[(&str, &TaskDump)]) -> Vec<Vec<usize>> {
    use std::collections::HashMap;
    let mut by_id: HashMap<(&str, &str), usize> = HashMap::new();
    let mut by_serves: HashMap<&str, usize> = HashMap::new();
    for (i, (process, task)) in tasks.iter().enumerate() {
        if let Some(id) = &task.id {
            by_id.insert((process, id.as_str()), i);
        }
        if let Some(key) = &task.serves {
            by_serves.insert(key.as_str(), i);
        }
    }
    let next = |i: usize| -> Option<usize> {
        let (process, task) = tasks[i];
        let key = task.waits_for.as_deref()?;
        match key.strip_prefix("task:") {
            Some(id) => by_id.get(&(process, id)).copied(),
            None => by_serves.get(key).copied(),
        }
    };
    // 0: not seen; 1: on the current walk; 2: done.
    let mut state = vec![0u8; tasks.len()];
    let mut cycles = Vec::new();
    for start in 0..tasks.len() {
        let mut walk = Vec::new();
        let mut at = Some(start);
        while let Some(i) = at {
            match state[i] {
                0 => {
                    state[i] = 1;
                    walk.push(i);
                    at = next(i);
                }
                1 => {
                    let from = walk.iter().position(|&w| w == i).expect("on the walk");
                    let mut cycle = walk[from..].to_vec();
                    let first = (0..cycle.len()).min_by_key(|&k| cycle[k]).unwrap_or(0);
                    cycle.rotate_left(first);
                    cycles.push(cycle);
                    break;
                }
                _ => break,
            }
        }
        walk.iter().for_each(|&w| state[w] = 2);
    }
    cycles
}

/// A dump of the run the calling code belongs to, from its root scope; an empty root outside
/// any trellis scope.
pub fn dump() -> Dump {
    let Some(mut node) = crate::context::current() else {
        return Dump {
            root: scope_of(None),
        };
    };
    while let Some(parent) = node.parent() {
        node = parent;
    }
    Dump {
        root: scope_of(Some(&node)),
    }
}

fn scope_of(node: Option<&Arc<Node>>) -> ScopeDump {
    let Some(node) = node else {
        return ScopeDump {
            nursery: false,
            deadline_in: None,
            shielded: false,
            cancel_called: false,
            cancelled: false,
            tasks: Vec::new(),
            children: Vec::new(),
        };
    };
    let view = node.view();
    let tasks = node.tasks();
    let dumping = current();
    let now = time::now();
    let mut task_dumps: Vec<TaskDump> = tasks
        .iter()
        .map(|(id, slot)| {
            let seen = slot.seen();
            TaskDump {
                name: slot.name(),
                id: id.map(|id| id.to_string()),
                waiting_on: seen.what,
                waits_for: seen.key,
                serves: slot.serves.get().cloned(),
                wakes_in: (seen.until != NO_DEADLINE)
                    .then(|| nanos(seen.until.saturating_sub(now))),
                dumping: dumping.as_ref().is_some_and(|d| Arc::ptr_eq(d, slot)),
                waits: seen.waits,
                children: Vec::new(),
            }
        })
        .collect();
    let mut children = Vec::new();
    for child in &view.children {
        let dump = scope_of(Some(child));
        let opened_in = child.opened_in();
        let owner = tasks.iter().position(|(task, _)| *task == opened_in);
        match owner {
            Some(i) => task_dumps[i].children.push(dump),
            None => children.push(dump),
        }
    }
    ScopeDump {
        nursery: view.nursery,
        deadline_in: (view.deadline != NO_DEADLINE)
            .then(|| nanos(view.deadline.saturating_sub(now))),
        shielded: view.shield,
        cancel_called: view.cancel_called,
        cancelled: view.cancelled,
        tasks: task_dumps,
        children,
    }
}

/// A span of nanoseconds as a duration, zero when negative.
fn nanos(left: i64) -> std::time::Duration {
    std::time::Duration::from_nanos(u64::try_from(left).unwrap_or(0))
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut out = String::new();
        write_scope(&mut out, &self.root, "", "");
        f.write_str(out.trim_end())
    }
}

impl TaskDump {
    /// Whether it waits on something that only another task (or the world outside) can end:
    /// a wait it says, not a sleep, and not the task taking the dump.
    pub fn blocked(&self) -> bool {
        !self.dumping && self.waiting_on.is_some() && self.wakes_in.is_none()
    }
}

impl ScopeDump {
    /// [`Dump::all_blocked`] for this scope and everything below it, asking only of the tasks
    /// `counts` takes: a runtime's own tasks, waiting on its sockets and keeping their own
    /// timers, may be left out (with the deadlines of the scopes they open; the tasks below
    /// those still count).
    pub fn all_blocked(&self, counts: impl Fn(&TaskDump) -> bool + Copy) -> bool {
        self.blocked_below(counts, true)
    }

    fn blocked_below(&self, counts: impl Fn(&TaskDump) -> bool + Copy, timers: bool) -> bool {
        // A deadline is pending until the code under it is cancelled.
        let timer = timers && self.deadline_in.is_some() && !self.cancelled;
        !timer
            && self.tasks.iter().all(|task| {
                let counted = counts(task);
                (!counted || task.dumping || task.blocked())
                    && (task.children.iter()).all(|c| c.blocked_below(counts, counted))
            })
            && (self.children.iter()).all(|c| c.blocked_below(counts, timers))
    }

    /// A scope with nothing of its own to say: no nursery, deadline, shield, cancellation or
    /// tasks.
    fn says_nothing(&self) -> bool {
        !self.nursery
            && self.deadline_in.is_none()
            && !self.shielded
            && !self.cancel_called
            && !self.cancelled
            && self.tasks.is_empty()
    }

    /// A scope that says nothing around one scope (the runtime's own wrappers, mostly).
    /// Drawn, it is left out.
    fn is_plain(&self) -> bool {
        self.says_nothing() && self.children.len() == 1
    }

    /// A scope with nothing in it and nothing to say (a served call's own scope, say).
    fn is_empty(&self) -> bool {
        self.says_nothing() && self.children.iter().all(ScopeDump::is_empty)
    }
}

fn write_scope(out: &mut String, scope: &ScopeDump, first: &str, rest: &str) {
    if scope.is_plain() {
        return write_scope(out, &scope.children[0], first, rest);
    }
    let _ = write!(
        out,
        "{first}{}",
        if scope.nursery { "nursery" } else { "scope" }
    );
    if let Some(left) = scope.deadline_in {
        let _ = write!(out, ", deadline in {left:.1?}");
    }
    if scope.shielded {
        out.push_str(", shielded");
    }
    if scope.cancel_called {
        out.push_str(", cancelled");
    } else if scope.cancelled {
        out.push_str(", cancelled from above");
    }
    out.push('\n');
    let children = shown(&scope.children);
    let count = scope.tasks.len() + children.len();
    let mut i = 0;
    for task in &scope.tasks {
        i += 1;
        let (branch, indent) = branches(i == count);
        let _ = write!(out, "{rest}{branch}task {}", task.name);
        if let Some(what) = &task.waiting_on {
            let _ = write!(out, " — waiting on {what}");
            if let Some(left) = task.wakes_in {
                let _ = write!(out, " ({left:.1?} left)");
            }
        }
        out.push('\n');
        let inner = format!("{rest}{indent}");
        let opened = shown(&task.children);
        let n = opened.len();
        for (j, child) in opened.into_iter().enumerate() {
            let (branch, indent) = branches(j + 1 == n);
            write_scope(
                out,
                child,
                &format!("{inner}{branch}"),
                &format!("{inner}{indent}"),
            );
        }
    }
    for child in children {
        i += 1;
        let (branch, indent) = branches(i == count);
        write_scope(
            out,
            child,
            &format!("{rest}{branch}"),
            &format!("{rest}{indent}"),
        );
    }
}

/// The scopes worth drawing.
fn shown(scopes: &[ScopeDump]) -> Vec<&ScopeDump> {
    scopes.iter().filter(|s| !s.is_empty()).collect()
}

fn branches(last: bool) -> (&'static str, &'static str) {
    if last {
        ("└─ ", "   ")
    } else {
        ("├─ ", "│  ")
    }
}
