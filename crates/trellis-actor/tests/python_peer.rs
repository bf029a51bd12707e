//! The Python peer (`clients/python`, written from `docs/wire-protocol.md` alone) against a
//! real actor: its test suite runs against this test's root actor, over a Unix socket and over
//! TCP. Python needs `msgpack`; when the system's Python lacks it, the test installs it into a
//! virtual environment under the target directory (from PyPI, once).

use std::convert::Infallible;
use std::process::Command;

use serde::{Deserialize, Serialize};
use trellis_actor::{Config, Context, Functions, MsgStream, Secret, StreamOptions, Transport};

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
    .secret(Secret::new(SECRET).unwrap())
}

/// The tree's secret, which the Python peer reads from `TRELLIS_SECRET`.
const SECRET: &str = "the python peer's tree secret";

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

fn python_suite(transport: Transport) {
    let python = common::python();
    common::root_with(config(), transport, || async move {
        trellis_actor::open_nursery(|an| async move {
            an.start_actor("worker").await?;
            let addr = trellis_actor::current().addr().to_string();
            let out = trellis::threads::run_sync(move || {
                Command::new(python)
                    .args([
                        "-m",
                        "unittest",
                        "discover",
                        "-v",
                        "-s",
                        "tests",
                        "-p",
                        "test_peer.py",
                    ])
                    .current_dir(common::repo_root().join("clients/python"))
                    .env("TRELLIS_PEER_ADDR", addr)
                    .env("TRELLIS_SECRET", SECRET)
                    .env("PYTHONPATH", common::repo_root().join("clients/python"))
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
            assert!(report.contains("Ran 16 tests"), "{report}");
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
