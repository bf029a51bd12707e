//! B5, B6, B8: spawning an actor, round trips to it, and the memory of an idle one, each side
//! by side with the same work done by raw tokio — a child process (this executable in a role)
//! talking over a Unix socket with no framework at all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use trellis_actor::{Config, Functions, open_nursery};
use trellis_wire::{CallKind, Codec, Message, Payload};

use crate::{Comparison, anchors, median};

/// The raw child's role: `echo:PATH:REQUEST:RESPONSE` (answer each request of REQUEST bytes
/// with RESPONSE bytes) or `idle:PATH` (hold the connection).
const RAW_ROLE: &str = "TRELLIS_BENCH_RAW_CHILD";

async fn echo(x: u64) -> Result<u64, trellis::Error> {
    Ok(x)
}

fn config() -> Config {
    Config::new(Functions::new().register(echo))
}

/// Runs this process as a child of a benchmark when it was started as one (an actor, or a raw
/// child); returns otherwise.
pub(crate) fn serve_roles() {
    trellis_actor::serve_if_child(config());
    if let Ok(role) = std::env::var(RAW_ROLE) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(raw_child(&role));
        std::process::exit(0);
    }
}

async fn raw_child(role: &str) {
    let mut parts = role.split(':');
    let (kind, path) = (parts.next().unwrap(), parts.next().unwrap());
    let mut stream = UnixStream::connect(path).await.expect("connect");
    match kind {
        "echo" => {
            let request: usize = parts.next().unwrap().parse().unwrap();
            let response = vec![7u8; parts.next().unwrap().parse().unwrap()];
            let mut buf = vec![0u8; request];
            while stream.read_exact(&mut buf).await.is_ok() {
                if stream.write_all(&response).await.is_err() {
                    break;
                }
            }
        }
        _ => {
            let mut buf = [0u8; 1];
            let _ = stream.read(&mut buf).await;
        }
    }
}

/// A raw child process and its connection.
struct RawChild {
    process: tokio::process::Child,
    stream: UnixStream,
}

async fn spawn_raw(listener: &UnixListener, path: &Path, role: &str) -> RawChild {
    let process = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(RAW_ROLE, role.replace("PATH", &path.display().to_string()))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the raw child");
    let (stream, _) = listener.accept().await.expect("accept");
    RawChild { process, stream }
}

/// A listener on a fresh socket path, removed when dropped.
struct RawListener {
    listener: UnixListener,
    path: PathBuf,
}

impl RawListener {
    fn bind() -> RawListener {
        let path = std::env::temp_dir().join(format!("trellis-bench-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).expect("bind");
        RawListener { listener, path }
    }
}

impl Drop for RawListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The sizes of the frames one `portal.run(echo, (x,))` exchanges: the `Start` and the
/// `Return` (their acknowledgement is one more small frame, which raw does without).
fn call_sizes() -> (usize, usize) {
    let codec = Codec::new();
    let mut start = BytesMut::new();
    codec
        .encode(
            &Message::Start {
                cid: 10_001,
                function: std::any::type_name_of_val(&echo).to_owned(),
                kind: CallKind::Run,
                args: Payload::encode(&(5_000u64,)).unwrap(),
            },
            &mut start,
        )
        .unwrap();
    let mut ret = BytesMut::new();
    codec
        .encode(
            &Message::Return {
                cid: 10_001,
                value: Payload::encode(&5_000u64).unwrap(),
            },
            &mut ret,
        )
        .unwrap();
    (start.len(), ret.len())
}

fn root_runtime() -> trellis::Runner {
    trellis::Runner::multi_thread().handle_ctrl_c(false)
}

/// B5: spawn an actor, one call, tear down; median of 20 (at least `runs`).
pub(crate) fn b5(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let reps = runs.max(20);
    let mut trellis_times = root_runtime()
        .run(trellis_actor::run_root("bench", config(), || async move {
            let mut times = Vec::new();
            for i in 0..=reps as u64 {
                let t0 = Instant::now();
                open_nursery(|an| async move {
                    let portal = an.start_actor("w").await?;
                    assert_eq!(portal.run(echo, (i,)).await?, i);
                    Ok(())
                })
                .await?;
                // The first is a warm-up.
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            Ok::<_, trellis::Error>(times)
        }))
        .map_err(|e| format!("{e:?}"))?;
    let (request, response) = call_sizes();
    let mut raw_times = root_runtime()
        .run(async move {
            let raw = RawListener::bind();
            let mut times = Vec::new();
            for i in 0..=reps {
                let t0 = Instant::now();
                let mut child = spawn_raw(
                    &raw.listener,
                    &raw.path,
                    &format!("echo:PATH:{request}:{response}"),
                )
                .await;
                child.stream.write_all(&vec![1u8; request]).await.unwrap();
                let mut buf = vec![0u8; response];
                child.stream.read_exact(&mut buf).await.unwrap();
                drop(child.stream);
                child.process.wait().await.unwrap();
                if i > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
            }
            Ok::<_, trellis::Error>(times)
        })
        .map_err(|e| format!("{e:?}"))?;
    let trellis = median(&mut trellis_times);
    let mut out = vec![Comparison {
        id: "B5",
        case: "spawn+call+teardown".into(),
        trellis,
        anchor: "raw tokio process + unix socket".into(),
        anchor_value: median(&mut raw_times),
    }];
    if python {
        let ms = anchors::tractor(
            "spawn",
            &["--reps", "10"],
            &["start_actor+run+cancel_actor median_ms"],
        )?;
        out.push(Comparison {
            id: "B5",
            case: "spawn+call+teardown".into(),
            trellis,
            anchor: "tractor 0.1.0a5 (python)".into(),
            anchor_value: ms / 1e3,
        });
    }
    Ok(out)
}

/// B6: 10,000 sequential round trips, p50 and p99.
pub(crate) fn b6(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    const CALLS: usize = 10_000;
    let rounds = (runs / 5).max(1);
    let trellis_lat = root_runtime()
        .run(trellis_actor::run_root("bench", config(), || async move {
            open_nursery(|an| async move {
                let portal = an.start_actor("rpc").await?;
                for i in 0..200u64 {
                    portal.run(echo, (i,)).await?;
                }
                let mut lat = Vec::with_capacity(CALLS * rounds);
                for i in 0..(CALLS * rounds) as u64 {
                    let t0 = Instant::now();
                    let got = portal.run(echo, (i,)).await?;
                    lat.push(t0.elapsed().as_secs_f64());
                    assert_eq!(got, i);
                }
                Ok(lat)
            })
            .await
        }))
        .map_err(|e| format!("{e:?}"))?;
    let (request, response) = call_sizes();
    let raw_lat = root_runtime()
        .run(async move {
            let raw = RawListener::bind();
            let mut child = spawn_raw(
                &raw.listener,
                &raw.path,
                &format!("echo:PATH:{request}:{response}"),
            )
            .await;
            let out = vec![1u8; request];
            let mut back = vec![0u8; response];
            let mut lat = Vec::with_capacity(CALLS * rounds);
            for i in 0..(200 + CALLS * rounds) {
                let t0 = Instant::now();
                child.stream.write_all(&out).await.unwrap();
                child.stream.read_exact(&mut back).await.unwrap();
                if i >= 200 {
                    lat.push(t0.elapsed().as_secs_f64());
                }
            }
            drop(child.stream);
            child.process.wait().await.unwrap();
            Ok::<_, trellis::Error>(lat)
        })
        .map_err(|e| format!("{e:?}"))?;
    let pct = |lat: &[f64], p: f64| {
        let mut sorted = lat.to_vec();
        sorted.sort_by(f64::total_cmp);
        sorted[((sorted.len() - 1) as f64 * p).round() as usize]
    };
    let mut out = Vec::new();
    for (case, p) in [("p50", 0.5), ("p99", 0.99)] {
        out.push(Comparison {
            id: "B6",
            case: case.into(),
            trellis: pct(&trellis_lat, p),
            anchor: format!("raw tokio unix socket ping-pong ({request} B / {response} B)"),
            anchor_value: pct(&raw_lat, p),
        });
    }
    if python {
        let p50 = anchors::tractor("rpc", &["--n", "2000", "--rounds", "5"], &["p50_us"])?;
        out.push(Comparison {
            id: "B6",
            case: "p50".into(),
            trellis: pct(&trellis_lat, 0.5),
            anchor: "tractor 0.1.0a5 (python)".into(),
            anchor_value: p50 / 1e6,
        });
    }
    Ok(out)
}

/// Peak resident memory of a process, in bytes (`VmHWM`).
fn peak_rss(pid: u32) -> Result<f64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("reading /proc/{pid}/status: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb * 1024.0)
        .ok_or_else(|| "no VmHWM".to_owned())
}

/// B8: peak RSS of an idle child actor, after one call and a second of idling.
pub(crate) fn b8(python: bool) -> Result<Vec<Comparison>, String> {
    let idle = Duration::from_secs(1);
    let trellis = root_runtime()
        .run(trellis_actor::run_root("bench", config(), || async move {
            open_nursery(|an| async move {
                let portal = an.start_actor("idle").await?;
                portal.run(echo, (1,)).await?;
                trellis::sleep(idle).await?;
                peak_rss(portal.pid()).map_err(trellis::Error::msg)
            })
            .await
        }))
        .map_err(|e| format!("{e:?}"))?;
    let raw = root_runtime()
        .run(async move {
            let raw = RawListener::bind();
            let mut child = spawn_raw(&raw.listener, &raw.path, "idle:PATH").await;
            tokio::time::sleep(idle).await;
            let rss = peak_rss(child.process.id().unwrap()).map_err(trellis::Error::msg)?;
            drop(child.stream);
            child.process.wait().await.unwrap();
            Ok::<_, trellis::Error>(rss)
        })
        .map_err(|e| format!("{e:?}"))?;
    let mut out = vec![Comparison {
        id: "B8",
        case: "idle child peak RSS (bytes)".into(),
        trellis,
        anchor: "raw tokio child holding a unix socket".into(),
        anchor_value: raw,
    }];
    if python {
        let kb = anchors::tractor("rss", &[], &["child_kB", "VmHWM"])?;
        out.push(Comparison {
            id: "B8",
            case: "idle child peak RSS (bytes)".into(),
            trellis,
            anchor: "tractor 0.1.0a5 (python)".into(),
            anchor_value: kb * 1024.0,
        });
    }
    Ok(out)
}
