//! The tree layer: actor nurseries, which spawn child actor processes and supervise them like
//! tasks.

mod nursery;
mod placement;
mod pool;
mod spawn;
mod supervisor;

pub use nursery::{ActorNursery, RunHandle, open_nursery};
pub use placement::{CommandLauncher, Placement, SshHost};
pub use pool::{ActorPool, Route};
pub use supervisor::{ActorSupervisor, SupervisedPortal, open_supervisor};
