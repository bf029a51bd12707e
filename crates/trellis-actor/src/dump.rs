//! What an actor tells of its tasks (`trellis.dump`): the core's [`trellis::dump::Dump`] of
//! its process, as it travels, and how `trellis dump` and SIGUSR1 at the root draw a tree's.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trellis_wire::ActorId;

/// One actor's tasks, as `trellis.dump` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorDump {
    /// The actor.
    pub id: ActorId,
    /// Its process id.
    pub pid: u32,
    /// Its parent's unique id; `None` for a root.
    pub parent: Option<String>,
    /// Its outermost scope, with everything below.
    pub root: ScopeInfo,
}

/// A nursery or a cancel scope, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeInfo {
    /// A nursery (with tasks), or a scope.
    pub nursery: bool,
    /// Time left until its own deadline, if it has one.
    pub deadline_in: Option<Duration>,
    /// Whether it is shielded.
    pub shielded: bool,
    /// Whether its own cancellation was asked for.
    pub cancel_called: bool,
    /// Whether code in it is cancelled.
    pub cancelled: bool,
    /// Its tasks.
    pub tasks: Vec<TaskInfo>,
    /// Scopes opened in it outside its tasks.
    pub children: Vec<ScopeInfo>,
}

/// A task, as it travels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// Its name.
    pub name: String,
    /// Its tokio task id in its process.
    #[serde(default)]
    pub id: Option<String>,
    /// What it waits on, when it says.
    pub waiting_on: Option<String>,
    /// The key of what it waits for (`task:ID`, `call:UID:CID`), for the wait-for graph.
    #[serde(default)]
    pub waits_for: Option<String>,
    /// The key of what it serves (`call:UID:CID` for a served call).
    #[serde(default)]
    pub serves: Option<String>,
    /// The time left until its wait ends by itself (a sleep).
    #[serde(default)]
    pub wakes_in: Option<Duration>,
    /// Whether it is the task that took the dump (answering `trellis.dump`).
    #[serde(default)]
    pub dumping: bool,
    /// How many waits it has recorded (`None` from a peer that does not say).
    #[serde(default)]
    pub waits: Option<u64>,
    /// The scopes it opened.
    pub children: Vec<ScopeInfo>,
}

impl From<trellis::dump::ScopeDump> for ScopeInfo {
    fn from(scope: trellis::dump::ScopeDump) -> Self {
        ScopeInfo {
            nursery: scope.nursery,
            deadline_in: scope.deadline_in,
            shielded: scope.shielded,
            cancel_called: scope.cancel_called,
            cancelled: scope.cancelled,
            tasks: scope.tasks.into_iter().map(TaskInfo::from).collect(),
            children: scope.children.into_iter().map(ScopeInfo::from).collect(),
        }
    }
}

impl From<trellis::dump::TaskDump> for TaskInfo {
    fn from(t: trellis::dump::TaskDump) -> Self {
        TaskInfo {
            name: t.name,
            id: t.id,
            waiting_on: t.waiting_on,
            waits_for: t.waits_for,
            serves: t.serves,
            wakes_in: t.wakes_in,
            dumping: t.dumping,
            waits: Some(t.waits),
            children: t.children.into_iter().map(ScopeInfo::from).collect(),
        }
    }
}

impl From<ScopeInfo> for trellis::dump::ScopeDump {
    fn from(scope: ScopeInfo) -> Self {
        trellis::dump::ScopeDump {
            nursery: scope.nursery,
            deadline_in: scope.deadline_in,
            shielded: scope.shielded,
            cancel_called: scope.cancel_called,
            cancelled: scope.cancelled,
            tasks: scope
                .tasks
                .into_iter()
                .map(|t| trellis::dump::TaskDump {
                    name: t.name,
                    id: t.id,
                    waiting_on: t.waiting_on,
                    waits_for: t.waits_for,
                    serves: t.serves,
                    wakes_in: t.wakes_in,
                    dumping: t.dumping,
                    waits: t.waits.unwrap_or(0),
                    children: t.children.into_iter().map(Into::into).collect(),
                })
                .collect(),
            children: scope.children.into_iter().map(Into::into).collect(),
        }
    }
}

impl ActorDump {
    /// Every task of the actor, depth first, with what it waits on.
    pub fn tasks(&self) -> Vec<&TaskInfo> {
        fn walk<'a>(scope: &'a ScopeInfo, out: &mut Vec<&'a TaskInfo>) {
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

    /// Whether every task of the actor is blocked and no timer is pending
    /// ([`trellis::dump::Dump::all_blocked`]), the runtime's own tasks (its connections,
    /// waiting on their sockets) left out.
    pub fn all_blocked(&self) -> bool {
        let root: trellis::dump::ScopeDump = self.root.clone().into();
        root.all_blocked(|task| !task.name.starts_with(RUNTIME))
    }

    /// The application's tasks, what each waits on and how many waits it has recorded (the
    /// task taking the dump left out); `None` when a task does not say how many (an older
    /// peer: its dumps cannot tell a task that moved on from one that did not).
    #[allow(clippy::type_complexity)]
    fn waits(&self) -> Option<Vec<(Option<&str>, &str, Option<&str>, u64)>> {
        let mut waits = (self.tasks().into_iter())
            .filter(|t| !t.dumping && !t.name.starts_with(RUNTIME))
            .map(|t| {
                let count = t.waits?;
                Some((
                    t.id.as_deref(),
                    t.name.as_str(),
                    t.waiting_on.as_deref(),
                    count,
                ))
            })
            .collect::<Option<Vec<_>>>()?;
        waits.sort_unstable();
        Some(waits)
    }
}

/// How far apart the two rounds of dumps that [`stalled`] compares are taken.
pub const STALL_CHECK: Duration = Duration::from_millis(100);

/// Whether a tree is stalled, from two rounds of its dumps taken [`STALL_CHECK`] apart: the
/// same actors answered both; in each round every actor's tasks are all blocked with no timer
/// pending ([`ActorDump::all_blocked`]); and every task waits on the same thing in both (one
/// round is not a snapshot: the actors answer one after the other, while messages may be on
/// their way), the same wait and not a new one of the same description (each task's count of
/// recorded waits is the same). A stalled tree goes on only when something outside it
/// happens; with nothing outside to wait for, it is deadlocked, whether or not a cycle shows
/// ([`deadlocks`]).
pub fn stalled(first: &[ActorDump], second: &[ActorDump]) -> bool {
    let key = |d: &&ActorDump| d.id.uid.clone();
    let mut first: Vec<&ActorDump> = first.iter().collect();
    let mut second: Vec<&ActorDump> = second.iter().collect();
    first.sort_by_key(key);
    second.sort_by_key(key);
    !first.is_empty()
        && first.len() == second.len()
        && first.iter().zip(&second).all(|(a, b)| {
            a.id == b.id
                && a.all_blocked()
                && b.all_blocked()
                && a.waits().is_some_and(|waits| Some(waits) == b.waits())
        })
}

/// Takes a round of a tree's dumps with `round`; when every actor answered (`answered` gives
/// their dumps, or `None`) and each looks all blocked, takes a second round [`STALL_CHECK`]
/// later and asks [`stalled`] of the two. Gives back the last round taken and the verdict:
/// what `trellis dump` and SIGUSR1 at a root draw.
///
/// # Errors
///
/// `round`'s error, or `Cancelled` while waiting between the rounds.
pub async fn stall_checked<R, E, Fut>(
    mut round: impl FnMut() -> Fut,
    answered: impl Fn(&R) -> Option<Vec<ActorDump>>,
) -> Result<(R, bool), E>
where
    Fut: std::future::Future<Output = Result<R, E>>,
    E: From<trellis::Cancelled>,
{
    let first = round().await?;
    let Some(before) = answered(&first).filter(|d| d.iter().all(ActorDump::all_blocked)) else {
        return Ok((first, false));
    };
    trellis::sleep(STALL_CHECK).await?;
    let second = round().await?;
    let verdict = answered(&second).is_some_and(|after| stalled(&before, &after));
    Ok((second, verdict))
}

/// The line a drawn dump ends with when [`stalled`] says so.
pub const STALLED: &str =
    "stalled: every task in the tree is blocked and no timer is pending (two rounds agree)";

/// What the runtime names its own tasks with (connections, the writer, supervision).
const RUNTIME: &str = "trellis: ";

impl ScopeInfo {
    /// The scope with the runtime's own tasks folded into one line per scope, where nothing
    /// of the application's runs below them.
    fn folded(&self) -> ScopeInfo {
        let mut runtime = 0;
        let mut tasks = Vec::new();
        for task in &self.tasks {
            let children: Vec<ScopeInfo> = task.children.iter().map(ScopeInfo::folded).collect();
            let quiet = children.iter().all(ScopeInfo::only_runtime);
            if task.name.starts_with(RUNTIME) && quiet {
                runtime += 1;
                continue;
            }
            tasks.push(TaskInfo {
                children,
                ..task.clone()
            });
        }
        if runtime > 0 {
            tasks.push(TaskInfo {
                name: format!(
                    "{RUNTIME}{runtime} runtime task{}",
                    if runtime == 1 { "" } else { "s" }
                ),
                id: None,
                waiting_on: None,
                waits_for: None,
                serves: None,
                wakes_in: None,
                dumping: false,
                waits: None,
                children: Vec::new(),
            });
        }
        ScopeInfo {
            tasks,
            children: self.children.iter().map(ScopeInfo::folded).collect(),
            ..self.clone()
        }
    }

    /// Whether only runtime tasks run in it (or nothing).
    fn only_runtime(&self) -> bool {
        self.tasks
            .iter()
            .all(|t| t.name.starts_with(RUNTIME) && t.children.iter().all(ScopeInfo::only_runtime))
            && self.children.iter().all(ScopeInfo::only_runtime)
    }
}

/// The deadlocks among a tree's tasks: cycles of its wait-for graph across processes — a
/// task waiting for a call, the task serving it waiting for a lock, its holder waiting for
/// the first call… Each cycle lists its actors and tasks in order, each waiting for the next
/// and the last for the first.
pub fn deadlocks(dumps: &[ActorDump]) -> Vec<Vec<(ActorId, TaskInfo)>> {
    let mut tasks: Vec<(&ActorId, trellis::dump::TaskDump)> = Vec::new();
    for dump in dumps {
        let core = trellis::dump::Dump {
            root: dump.root.clone().into(),
        };
        for task in core.tasks() {
            let mut task = task.clone();
            task.children.clear();
            tasks.push((&dump.id, task));
        }
    }
    let keyed: Vec<(&str, &trellis::dump::TaskDump)> =
        tasks.iter().map(|(id, t)| (id.uid.as_str(), t)).collect();
    trellis::dump::deadlocks(&keyed)
        .into_iter()
        .map(|cycle| {
            cycle
                .into_iter()
                .map(|i| {
                    let (actor, task) = &tasks[i];
                    ((*actor).clone(), TaskInfo::from(task.clone()))
                })
                .collect()
        })
        .collect()
}

/// The deadlocks of [`deadlocks`] as lines: `deadlock: actor A task X (waiting on …) → …`.
fn deadlock_lines(dumps: &[ActorDump]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for cycle in deadlocks(dumps) {
        out.push_str("deadlock:");
        for (i, (actor, task)) in cycle.iter().enumerate() {
            let arrow = if i == 0 { " " } else { "\n  → " };
            let what = task.waiting_on.as_deref().unwrap_or("?");
            let _ = write!(
                out,
                "{arrow}actor {actor} task {} (waiting on {what})",
                task.name
            );
        }
        let _ = writeln!(out, "\n  → back to the first");
    }
    out
}

/// [`draw`] with every task shown, the runtime's own included.
pub fn draw_all(dumps: &[ActorDump]) -> String {
    draw_with(dumps, false)
}

/// A tree's dumps drawn as one tree: each actor's line, its task tree under it, its child
/// actors under that, indented by depth; the runtime's own tasks (named `trellis: …`) are
/// folded into a count. Actors whose parent is not among `dumps` are roots.
pub fn draw(dumps: &[ActorDump]) -> String {
    draw_with(dumps, true)
}

fn draw_with(dumps: &[ActorDump], fold: bool) -> String {
    use std::fmt::Write as _;
    let known: std::collections::HashSet<&str> = dumps.iter().map(|d| d.id.uid.as_str()).collect();
    let mut out = String::new();
    fn one(out: &mut String, dumps: &[ActorDump], at: usize, depth: usize, fold: bool) {
        let dump = &dumps[at];
        let pad = "    ".repeat(depth);
        let _ = writeln!(out, "{pad}actor {} (pid {})", dump.id, dump.pid);
        let root = if fold {
            dump.root.folded()
        } else {
            dump.root.clone()
        };
        let tree = trellis::dump::Dump { root: root.into() };
        for line in tree.to_string().lines() {
            let _ = writeln!(out, "{pad}  {line}");
        }
        for (i, child) in dumps.iter().enumerate() {
            if child.parent.as_deref() == Some(dump.id.uid.as_str()) && i != at {
                one(out, dumps, i, depth + 1, fold);
            }
        }
    }
    for (i, dump) in dumps.iter().enumerate() {
        let rooted = dump.parent.as_deref().is_none_or(|p| !known.contains(p));
        if rooted {
            one(&mut out, dumps, i, 0, fold);
        }
    }
    out.push_str(&deadlock_lines(dumps));
    out
}
