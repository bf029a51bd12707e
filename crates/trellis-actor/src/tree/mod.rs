//! The tree layer: actor nurseries, which spawn child actor processes and supervise them like
//! tasks.

mod nursery;

pub use nursery::{ActorNursery, RunHandle, open_nursery};
