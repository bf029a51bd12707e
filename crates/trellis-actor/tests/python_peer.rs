//! The Python peer (`clients/python`, written from `docs/wire-protocol.md` alone) against a
//! real actor: its test suite runs against this test's root actor, over a Unix socket and over
//! TCP. Python needs `msgpack`; when the system's Python lacks it, the test installs it into a
//! virtual environment under the target directory (from PyPI, once).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use trellis_actor::{Config, Context, Functions, MsgStream, StreamOptions, Transport};

mod common;

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

#[derive(Debug, Serialize, Deserialize)]
struct Person {
    name: String,
    age: u32,
    #[serde(default)]
    tags: Vec<String>,
}

async fn describe(person: Person) -> Result<Person, trellis::Error> {
    Ok(Person {
        name: person.name.to_uppercase(),
        age: person.age + 1,
        tags: vec!["older".into()],
    })
}

#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
#[error("out of stock: {0}")]
struct OutOfStock(String);

async fn fails(item: String) -> Result<(), trellis::Error> {
    Err(trellis::Error::new(OutOfStock(item)))
}

async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 1..=n {
        stream.send(i).await?;
    }
    Ok(())
}

async fn count_forever(stream: MsgStream<Infallible, u64>) -> Result<(), trellis::Error> {
    for i in 0.. {
        stream.send(i).await?;
    }
    Ok(())
}

/// Answers `greeting back`, then doubles every item until the caller stops.
async fn echo(ctx: Context, greeting: String) -> Result<u64, trellis::Error> {
    ctx.started(format!("{greeting} back")).await?;
    let stream = ctx.open_stream::<i64, i64>()?;
    let mut n = 0;
    while let Some(item) = stream.recv().await? {
        stream.send(item * 2).await?;
        n += 1;
    }
    Ok(n)
}

/// Sums what it receives, granting 4 items at a time; more than granted fails the call.
async fn sink(ctx: Context) -> Result<i64, trellis::Error> {
    ctx.set_stream_options(StreamOptions::new().capacity(4));
    ctx.started(()).await?;
    let stream = ctx.open_stream::<i64, ()>()?;
    let mut sum = 0;
    while let Some(item) = stream.recv().await? {
        sum += item;
        trellis::checkpoint().await?;
    }
    Ok(sum)
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(describe)
            .register(fails)
            .register(count_to)
            .register(count_forever)
            .register(echo)
            .register(sink)
            .error_type::<OutOfStock>(),
    )
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Python interpreter that can `import msgpack`: the system's, or one of a virtual
/// environment made for these tests.
fn python() -> PathBuf {
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

fn python_suite(transport: Transport) {
    let python = python();
    common::root_with(config(), transport, || async move {
        trellis_actor::open_nursery(|an| async move {
            an.start_actor("worker").await?;
            let addr = trellis_actor::current().addr().to_string();
            let out = trellis::threads::run_sync(move || {
                Command::new(python)
                    .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
                    .current_dir(repo_root().join("clients/python"))
                    .env("TRELLIS_PEER_ADDR", addr)
                    .env("PYTHONPATH", repo_root().join("clients/python"))
                    .env("PYTHONDONTWRITEBYTECODE", "1")
                    .output()
            })
            .await?
            .map_err(trellis::Error::new)?;
            let report = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "the Python peer's tests failed:\n{report}"
            );
            assert!(!report.contains("skipped"), "{report}");
            assert!(report.contains("Ran 13 tests"), "{report}");
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
}

#[test]
fn python_peer_over_unix_sockets() {
    python_suite(Transport::Unix);
}

#[test]
fn python_peer_over_tcp() {
    python_suite(Transport::tcp_loopback());
}
