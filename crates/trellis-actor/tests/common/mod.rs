//! What the actor test files share: running a root actor, running each test on both
//! transports, and handling the programs a test starts (each test binary uses some of it).

#![allow(dead_code)]

pub(crate) mod etcd_server;
pub(crate) mod netns;
pub(crate) mod sshd;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use trellis_actor::{Config, Transport};

/// Runs `body` as the root actor of a tree configured by `config`, over `transport`.
pub(crate) fn root_with<F, Fut>(
    config: Config,
    transport: Transport,
    body: F,
) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    trellis::Runner::multi_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root(
            "root",
            config.transport(transport),
            body,
        ))
}

/// Generates, for each named `fn(Transport)`, one test over Unix sockets and one over TCP on
/// the loopback interface.
#[macro_export]
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod unix {
            $( #[test] fn $name() { super::$name(trellis_actor::Transport::Unix) } )*
        }
        mod tcp {
            $( #[test] fn $name() { super::$name(trellis_actor::Transport::tcp_loopback()) } )*
        }
    };
}

/// Ends a program the test started as one of its roles: 0 when `outcome` is fine, 130 when it
/// was interrupted (Ctrl-C, SIGINT), 1 otherwise, with the error printed for the test to read.
pub(crate) fn exit_as(outcome: Result<(), trellis::Error>) -> ! {
    std::process::exit(match outcome {
        Ok(()) => 0,
        Err(e) if e.is_interrupted() => 130,
        Err(e) => {
            println!("failed: {e}\r");
            1
        }
    });
}

/// The exit code of `child` once it exits, or `None` after `limit` (it is then killed and
/// reaped). The limit only keeps a broken build from hanging the suite.
pub(crate) fn exit_code_within(child: &mut Child, limit: Duration) -> Option<Option<i32>> {
    let until = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status.code());
        }
        if Instant::now() > until {
            kill_unless_exited(child);
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Kills and reaps `child` unless it exited already: a failed test leaves nothing behind.
pub(crate) fn kill_unless_exited(child: &mut Child) {
    if child.try_wait().ok().flatten().is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The repository's root.
pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python interpreter that can `import msgpack`: the system's, or one of a virtual
/// environment made for these tests.
pub(crate) fn python() -> PathBuf {
    static PYTHON: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut python = PYTHON.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(python) = &*python {
        return python.clone();
    }
    let has_msgpack = |python: &Path| {
        Command::new(python)
            .args(["-c", "import msgpack"])
            .output()
            .is_ok_and(|out| out.status.success())
    };
    let system = PathBuf::from("python3");
    let found = if has_msgpack(&system) {
        system
    } else {
        let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-peer-venv");
        let venv_python = venv.join("bin/python");
        if !has_msgpack(&venv_python) {
            let run = |cmd: &mut Command| {
                let out = cmd.output().expect("python3 runs");
                assert!(
                    out.status.success(),
                    "{cmd:?} failed:\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            };
            run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
            run(Command::new(&venv_python)
                .args(["-m", "pip", "install", "--quiet", "-r"])
                .arg(repo_root().join("clients/python/requirements.txt")));
        }
        venv_python
    };
    *python = Some(found.clone());
    found
}

/// A `tracing` subscriber that hands each event's level and text (its fields, `name=value`)
/// to a function: what the tests that read the root's log install.
pub(crate) struct TextCapture<F>(F);

impl<F: Fn(tracing::Level, String) + Send + Sync + 'static> TextCapture<F> {
    pub(crate) fn new(sink: F) -> Self {
        TextCapture(sink)
    }
}

struct Text(String);

impl tracing::field::Visit for Text {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        let _ = write!(self.0, " {}={value:?}", field.name());
    }
}

impl<F: Fn(tracing::Level, String) + Send + Sync + 'static> tracing::Subscriber for TextCapture<F> {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        let mut text = Text(String::new());
        event.record(&mut text);
        (self.0)(*event.metadata().level(), text.0);
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

/// The socket directories of actors of process `pid`.
pub(crate) fn socket_dirs_of(pid: u32) -> Vec<std::path::PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let prefix = format!("trellis-{pid}-");
    std::fs::read_dir(base)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}
