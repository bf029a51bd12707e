//! The conformance scenarios (`conformance/scenarios.json`) against a live actor: the root
//! actor of this test serves the standard functions, and each scenario speaks to it over a
//! fresh Unix socket connection, as a peer in another language would.

#[path = "../../../conformance/runner.rs"]
mod runner;

mod common;

use std::convert::Infallible;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use bytes::BytesMut;
use trellis_actor::{Addr, Config, Context, Functions, MsgStream, StreamOptions, Transport};
use trellis_wire::{Codec, Message};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Failure(String);

async fn fail(text: String) -> Result<(), trellis::Error> {
    Err(trellis::Error::new(Failure(text)))
}

async fn hold() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

async fn count(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 0..n {
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

/// Started with nil, grants 4 items, sends each item back; returns how many it got.
async fn echo(ctx: Context) -> Result<u64, trellis::Error> {
    ctx.set_stream_options(StreamOptions::new().capacity(4));
    ctx.started(()).await?;
    let stream = ctx.open_stream::<serde_json::Value, serde_json::Value>()?;
    let mut seen = 0;
    while let Some(item) = stream.recv().await? {
        stream.send(item).await?;
        seen += 1;
    }
    Ok(seen)
}

/// Started with nil, grants 2 items and never reads them.
async fn deaf(ctx: Context) -> Result<(), trellis::Error> {
    ctx.set_stream_options(StreamOptions::new().capacity(2));
    ctx.started(()).await?;
    let _stream = ctx.open_stream::<serde_json::Value, ()>()?;
    trellis::sleep_forever().await?;
    Ok(())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fail)
            .register(hold)
            .register(count)
            .register(count_forever)
            .register(echo)
            .register(deaf),
    )
    .unregistered()
    .secret(trellis_actor::Secret::new(runner::SECRET).unwrap())
}

/// One connection to the actor, read with a generous bound (a hang guard, not a timing
/// claim).
struct Live {
    stream: UnixStream,
    inbox: BytesMut,
    codec: Codec,
}

impl Live {
    fn connect(path: &PathBuf) -> Live {
        let stream = UnixStream::connect(path).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Live {
            stream,
            inbox: BytesMut::new(),
            codec: Codec::new(),
        }
    }
}

impl runner::Wire for Live {
    fn send(&mut self, bytes: &[u8]) {
        // The actor may have closed already (a broken frame): what matters is what it said.
        let _ = self.stream.write_all(bytes);
    }

    fn next(&mut self) -> Option<Message> {
        loop {
            if let Some(message) = self
                .codec
                .decode(&mut self.inbox)
                .expect("the actor writes frames")
            {
                return Some(message);
            }
            let mut chunk = [0; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.inbox.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the actor: {e}"),
            }
        }
    }
}

/// The Python runner (`clients/python/tests/test_conformance.py`, written from the scenario
/// file's notation alone) against a live actor.
#[test]
fn the_python_runner_passes_every_scenario_against_a_live_actor() {
    let python = common::python();
    common::root_with(config(), Transport::Unix, || async move {
        let addr = trellis_actor::current().addr().to_string();
        let out = trellis::threads::run_sync(move || {
            std::process::Command::new(python)
                .args(["-m", "unittest", "discover", "-v", "-s", "tests"])
                .args(["-p", "test_conformance.py"])
                .current_dir(common::repo_root().join("clients/python"))
                .env("TRELLIS_CONFORMANCE_ADDR", addr)
                .env("PYTHONPATH", common::repo_root().join("clients/python"))
                .env("PYTHONDONTWRITEBYTECODE", "1")
                .output()
        })
        .await?
        .map_err(trellis::Error::new)?;
        let report = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the Python runner failed:\n{report}");
        assert!(
            report.contains("Ran 1 test") && !report.contains("skipped"),
            "{report}"
        );
        Ok(())
    })
    .unwrap();
}

/// Every scenario, against a live actor.
#[test]
fn a_live_actor_passes_every_scenario() {
    common::root_with(config(), Transport::Unix, || async {
        let Addr::Unix(path) = trellis_actor::current().addr().clone() else {
            unreachable!("a Unix transport")
        };
        let failures = trellis::threads::run_sync(move || {
            runner::load()
                .iter()
                .filter_map(|scenario| runner::run(scenario, &mut Live::connect(&path)).err())
                .collect::<Vec<String>>()
        })
        .await?;
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    })
    .unwrap();
}
