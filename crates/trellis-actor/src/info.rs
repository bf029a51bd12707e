//! What an actor tells about itself (`trellis.info`), and what the registrar tells about every
//! actor it knows (`trellis.list`): the raw material of `trellis tree`.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use trellis_wire::ActorId;

use crate::transport::Addr;

/// One actor, as it describes itself: identity, where it runs, and what it is doing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActorInfo {
    /// Its name and unique id.
    pub id: ActorId,
    /// Its process id.
    pub pid: u32,
    /// The name of the host it runs on.
    pub host: String,
    /// Where it listens (`unix:PATH` or `tcp:HOST:PORT`).
    pub addr: String,
    /// The unique id of its parent actor; `None` for the root of a tree.
    pub parent: Option<String>,
    /// How long it has been running, in milliseconds.
    pub uptime_ms: u64,
    /// Calls it serves now (every kind; not the question that asked for this).
    pub serving: usize,
    /// Calls it has made and waits on now.
    pub calling: usize,
    /// Open streams (of stream and context calls, made or served).
    pub streams: usize,
    /// The children its supervisors hold, with their restarts (absent on the wire when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supervised: Vec<SupervisedChild>,
    /// Its open streams' traffic so far (absent on the wire when none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stream_stats: Vec<StreamInfo>,
}

/// One open stream or context call of an actor, as `trellis.info` tells it: what went each way
/// so far, and how often the actor waited for its peer's credit (backpressure). Rates come from
/// two snapshots (`trellis tree --watch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The actor at the other end.
    pub peer: String,
    /// The call's id on that connection.
    pub cid: u64,
    /// `stream` or `context`.
    pub kind: String,
    /// `caller` or `callee`.
    pub role: String,
    /// Items this actor sent.
    pub sent: u64,
    /// Items it received.
    pub received: u64,
    /// Items received and not yet read.
    pub unread: u64,
    /// Times it found no credit for its next item and waited.
    pub credit_waits: u64,
}

/// A child of one of an actor's supervisors, as `trellis.info` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SupervisedChild {
    /// Its name (the role: each incarnation registers under it).
    pub name: String,
    /// The supervisor's name.
    pub supervisor: String,
    /// How many times it was restarted.
    pub restarts: u64,
    /// Why it last ended, when that was a failure or a sibling's.
    pub last_cause: Option<String>,
    /// `running`, `stopping` or `restarting`.
    pub state: String,
}

impl ActorInfo {
    /// How long the actor has been running.
    pub fn uptime(&self) -> Duration {
        Duration::from_millis(self.uptime_ms)
    }
}

/// An actor as the registrar lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registered {
    /// Its name and unique id.
    pub id: ActorId,
    /// Where it listens.
    pub addr: Addr,
}

/// A function an actor serves, as it lists them (`trellis.functions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionInfo {
    /// The name it is called by.
    pub name: String,
    /// `run`, `stream` or `context`.
    pub kind: String,
}

/// This host's name (`/proc/sys/kernel/hostname`, else `localhost`).
pub(crate) fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
