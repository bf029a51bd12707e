//! The actor layer: the actor running in this process and how it serves.
//!
//! * `config.rs`: [`Config`], and what a parent tells a child process;
//! * `handle.rs`: [`Actor`] and [`current`]: identity, connections, the registry client;
//! * `service.rs`: answering peers' calls (the runtime's functions, the registrar's, the
//!   registered ones);
//! * `run.rs`: the runtime around a body; `entry.rs`: [`main`]; `child.rs`: a child process;
//!   `launch.rs`: what a child started through a launcher (ssh, a cluster's command) reads;
//! * `registry.rs`: the registrar's table; `terminal.rs`: the tree's terminal lock.

mod child;
mod config;
mod dump;
mod entry;
mod etcd_registry;
mod handle;
mod launch;
mod peers;
mod registry;
mod run;
mod service;
mod terminal;
mod zygote;
mod zygote_client;

pub use config::{Config, SpawnBackend};
pub(crate) use config::{TCP_AUTO, env};
pub use entry::{main, main_with, serve_if_child, serve_if_child_async};
pub(crate) use handle::new_uid;
pub use handle::{Actor, current, try_current};
pub(crate) use launch::{FROM_STDIN, LAUNCH_ENV, Launch};
pub use peers::{find_actor, wait_for_actor};
pub use run::run_root;
pub use terminal::{Terminal, with_terminal};
pub(crate) use zygote_client::{Forked, Zygote};
