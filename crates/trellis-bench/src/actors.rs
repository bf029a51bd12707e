//! B5, B6, B8: spawning an actor, round trips to it, and the memory of an idle one, each side
//! by side with the same work done by raw tokio — a child process (this executable in a role)
//! talking over a Unix socket with no framework at all.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use std::convert::Infallible;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

use trellis_actor::{
    Config, Context, Functions, MsgStream, PortalContext, StreamOptions, open_nursery,
};
use trellis_wire::{CallKind, Codec, Message, Payload};

use crate::{Comparison, anchors, median};

/// The raw child's role: `echo:PATH:REQUEST:RESPONSE` (answer each request of REQUEST bytes
/// with RESPONSE bytes) or `idle:PATH` (hold the connection).
const RAW_ROLE: &str = "TRELLIS_BENCH_RAW_CHILD";

pub(crate) async fn echo(x: u64) -> Result<u64, trellis::Error> {
    Ok(x)
}

/// B7's streaming function: the integers `0..n`.
async fn numbers(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 0..n {
        stream.send(i).await?;
    }
    Ok(())
}

/// B7's context function: the same over a context's stream (tractor's `streamer`).
async fn numbers_ctx(ctx: Context, n: u64) -> Result<(), trellis::Error> {
    ctx.started(n).await?;
    let stream = ctx.open_stream::<(), u64>()?;
    for i in 0..n {
        stream.send(i).await?;
    }
    Ok(())
}

pub(crate) fn config() -> Config {
    Config::new(
        Functions::new()
            .register(echo)
            .register(numbers)
            .register(numbers_ctx)
            .register(super::actors_large::blobs),
    )
}

/// Runs this process as a child of a benchmark when it was started as one (an actor, or a raw
/// child); returns otherwise.
pub(crate) fn serve_roles() {
    #[cfg(feature = "opentelemetry")]
    super::traced::serve_role();
    super::actors_tls::serve_roles();
    super::actors_large::serve_raw_role();
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
        "stream" => {
            // N frames of FRAME bytes, each a 4-byte length and a body, written through a
            // buffer as any tokio program would.
            let n: u64 = parts.next().unwrap().parse().unwrap();
            let frame: usize = parts.next().unwrap().parse().unwrap();
            let mut out = tokio::io::BufWriter::with_capacity(64 * 1024, stream);
            let mut bytes = vec![0u8; frame];
            bytes[..4].copy_from_slice(&((frame - 4) as u32).to_be_bytes());
            for i in 0..n {
                bytes[frame - 8..].copy_from_slice(&i.to_be_bytes());
                if out.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            let _ = out.flush().await;
            let mut buf = [0u8; 1];
            let _ = out.get_mut().read(&mut buf).await;
        }
        _ => {
            let mut buf = [0u8; 1];
            let _ = stream.read(&mut buf).await;
        }
    }
}

/// Length-prefixed frames read from a socket, each body's last 8 bytes taken as a
/// big-endian integer.
struct Frames<'a> {
    stream: &'a mut UnixStream,
    buf: BytesMut,
}

impl<'a> Frames<'a> {
    fn new(stream: &'a mut UnixStream) -> Self {
        Frames {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// Reads once and appends the whole frames that arrived to `out`.
    async fn read_some(&mut self, out: &mut Vec<u64>) {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(64 * 1024);
        }
        let n = self.stream.read_buf(&mut self.buf).await.unwrap();
        assert!(n > 0, "the raw child closed early");
        while self.buf.len() >= 4 {
            let len = u32::from_be_bytes(self.buf[..4].try_into().unwrap()) as usize;
            if self.buf.len() < 4 + len {
                break;
            }
            let frame = self.buf.split_to(4 + len);
            out.push(u64::from_be_bytes(
                frame[frame.len() - 8..].try_into().unwrap(),
            ));
        }
    }
}

/// A raw child process and its connection.
pub(crate) struct RawChild {
    pub(crate) process: tokio::process::Child,
    pub(crate) stream: UnixStream,
}

async fn spawn_raw(listener: &UnixListener, path: &Path, role: &str) -> RawChild {
    spawn_raw_with(listener, path, RAW_ROLE, role).await
}

/// A raw child started in `role` through the variable `var`, connected to `raw`.
pub(crate) async fn spawn_raw_as(raw: &RawListener, var: &str, role: &str) -> RawChild {
    spawn_raw_with(&raw.listener, &raw.path, var, role).await
}

async fn spawn_raw_with(listener: &UnixListener, path: &Path, var: &str, role: &str) -> RawChild {
    let process = tokio::process::Command::new(std::env::current_exe().unwrap())
        .env(var, role.replace("PATH", &path.display().to_string()))
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the raw child");
    let (stream, _) = listener.accept().await.expect("accept");
    RawChild { process, stream }
}

/// A listener on a fresh socket path, removed when dropped.
pub(crate) struct RawListener {
    listener: UnixListener,
    path: PathBuf,
}

impl RawListener {
    pub(crate) fn bind() -> RawListener {
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
pub(crate) fn call_sizes() -> (usize, usize) {
    let codec = Codec::new();
    let mut start = BytesMut::new();
    codec
        .encode(
            &Message::Start {
                cid: 10_001,
                function: "echo".to_owned(),
                kind: CallKind::Run,
                args: Payload::encode(&(5_000u64,)).unwrap(),
                trace: None,
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

/// The runtime of the actor benchmarks' roots and their anchors: the default root's, a
/// multi-thread runtime, unless `TRELLIS_BENCH_ROOT=current_thread` asks for one thread.
pub(crate) fn root_runtime() -> trellis::Runner {
    if std::env::var("TRELLIS_BENCH_ROOT").as_deref() == Ok("current_thread") {
        return current_thread_root();
    }
    trellis::Runner::multi_thread().handle_ctrl_c(false)
}

/// A root on one thread, as every child actor runs.
fn current_thread_root() -> trellis::Runner {
    trellis::Runner::current_thread().handle_ctrl_c(false)
}

/// Seconds for each of `reps` spawn + call + teardown of an actor with `config` (after one
/// warm-up, which also starts a zygote when `config` asks for one).
fn spawn_times(config: Config, reps: usize) -> Result<Vec<f64>, String> {
    root_runtime()
        .run(trellis_actor::run_root("bench", config, || async move {
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
        .map_err(|e| format!("{e:?}"))
}

/// B5: spawn an actor, one call, tear down, with `exec` and with the zygote; median of 20
/// (at least `runs`).
pub(crate) fn b5(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let reps = runs.max(20);
    let mut trellis_times = spawn_times(config(), reps)?;
    let mut zygote_times = spawn_times(
        config().spawn_backend(trellis_actor::SpawnBackend::Zygote),
        reps,
    )?;
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
    let raw = median(&mut raw_times);
    let mut out = vec![
        Comparison {
            id: "B5",
            case: "spawn+call+teardown".into(),
            trellis,
            anchor: "raw tokio process + unix socket".into(),
            anchor_value: raw,
        },
        Comparison {
            id: "B5",
            case: "spawn+call+teardown (zygote)".into(),
            trellis: median(&mut zygote_times),
            anchor: "raw tokio process + unix socket".into(),
            anchor_value: raw,
        },
    ];
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
    let pct = crate::percentile;
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

/// The size of one streamed item's frame (`Yield` of a `u64` around 50,000).
fn item_frame() -> usize {
    let (mut frame, value) = (BytesMut::new(), Payload::encode(&50_000u64).unwrap());
    let item = Message::Yield { cid: 3, value };
    Codec::new().encode(&item, &mut frame).unwrap();
    frame.len().max(12)
}

const STREAMED: u64 = 100_000;
const SUBSCRIBERS: usize = 16;
/// The subscribers' buffer (and the stream's), both sides.
const FAN_BUFFER: usize = 1024;

/// B7's medians, in seconds per 100,000 items (1 for a case not run).
struct Rounds {
    one_way: f64,
    ctx: f64,
    /// The same, read with `recv_many` (batches of up to [`MANY`]).
    one_way_many: f64,
    ctx_many: f64,
    /// To 16 subscribers.
    fan: f64,
}

impl Rounds {
    /// Every case reported as not run.
    fn not_run() -> Self {
        Rounds {
            one_way: 1.0,
            ctx: 1.0,
            one_way_many: 1.0,
            ctx_many: 1.0,
            fan: 1.0,
        }
    }
}

/// `recv_many`'s limit in B7.
const MANY: usize = 1024;

/// Reads a stream of `u64` to its end, one `recv` at a time or (`many`) with `recv_many`;
/// returns the count.
async fn read_all(stream: &MsgStream<u64, impl Send>, many: bool) -> Result<u64, trellis::Error> {
    let mut count = 0u64;
    if many {
        let mut items = Vec::with_capacity(MANY);
        while stream.recv_many(&mut items, MANY).await? > 0 {
            for i in items.drain(..) {
                assert_eq!(i, count);
                count += 1;
            }
        }
    } else {
        while let Some(i) = stream.recv().await? {
            assert_eq!(i, count);
            count += 1;
        }
    }
    Ok(count)
}

/// B7's streams on a root running on `runner`: median seconds per 100,000 items one way
/// and over a context with `recv`, and unless `recv_only`, with `recv_many` and to 16
/// subscribers.
fn stream_rounds(runner: trellis::Runner, runs: usize, recv_only: bool) -> Result<Rounds, String> {
    runner
        .run(trellis_actor::run_root("bench", config(), || async move {
            open_nursery(|an| async move {
                let portal = an.start_actor("streamer").await?;
                let mut times: [Vec<f64>; 5] = Default::default();
                let do_fan = !recv_only && crate::case_selected("subscribers");
                for round in 0..=runs {
                    for (case, many) in [(0, false), (1, false), (2, true), (3, true)] {
                        let name = match (case % 2, many) {
                            (0, false) => "one-way",
                            (1, false) => "context",
                            _ => "recv_many",
                        };
                        if !crate::case_selected(name) || (many && recv_only) {
                            continue;
                        }
                        let t0 = Instant::now();
                        let count = if case % 2 == 0 {
                            let read = move |stream: MsgStream<u64>| async move {
                                read_all(&stream, many).await
                            };
                            portal.open_stream_from(numbers, (STREAMED,), read).await?
                        } else {
                            let read = move |ctx: PortalContext<()>, _n: u64| async move {
                                read_all(&ctx.open_stream::<u64, ()>()?, many).await
                            };
                            portal.open_context(numbers_ctx, (STREAMED,), read).await?
                        };
                        assert_eq!(count, STREAMED);
                        // The first round is a warm-up.
                        if round > 0 {
                            times[case].push(t0.elapsed().as_secs_f64());
                        }
                    }
                    let t0 = Instant::now();
                    if do_fan {
                        let options = StreamOptions::new()
                            .capacity(FAN_BUFFER)
                            .lossless_subscribers();
                        portal
                            .open_stream_from_with(numbers, (STREAMED,), options, |stream| {
                                fan_out(stream)
                            })
                            .await?;
                        if round > 0 {
                            times[4].push(t0.elapsed().as_secs_f64());
                        }
                    }
                }
                let [a, b, c, d, e] = &mut times;
                // A case not run reports 1 s, as `alternate` reports a side not run.
                let median = |v: &mut Vec<f64>| if v.is_empty() { 1.0 } else { median(v) };
                Ok(Rounds {
                    one_way: median(a),
                    ctx: median(b),
                    one_way_many: median(c),
                    ctx_many: median(d),
                    fan: median(e),
                })
            })
            .await
        }))
        .map_err(|e| format!("{e:?}"))
}

/// B7: a child streams 100,000 `u64` to its parent: seconds per 100,000 items (`ratio < 1`:
/// trellis is faster), as a one-way stream, over a context's stream, and to 16 local
/// subscribers (lossless) — against a raw tokio child writing the same frames over a Unix
/// socket (for the subscribers, fanned out through `tokio::sync::broadcast` under the same
/// lossless rule).
/// The `u64` cases run again on a current-thread root.
pub(crate) fn b7(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let runs = runs.max(5);
    // `TRELLIS_BENCH_PART=multi_thread` or `current_thread` runs one root flavour only (for
    // profiling; the other reports 1 s).
    let rounds = if crate::part_selected("multi_thread") {
        stream_rounds(root_runtime(), runs, false)?
    } else {
        Rounds::not_run()
    };
    // The same on a current-thread root (as every child actor runs): the connection's reader
    // and the stream's consumer then share a thread, where on the multi-thread runtime each
    // batch of items crosses to the thread of the root's body.
    let current = if (crate::case_selected("one-way") || crate::case_selected("context"))
        && crate::part_selected("current_thread")
    {
        stream_rounds(current_thread_root(), runs, true)?
    } else {
        Rounds::not_run()
    };
    let frame = item_frame();
    let (raw, raw_fan) = if !crate::side_selected("anchor") {
        (1.0, 1.0) // as `alternate` reports a side not run
    } else {
        raw_streams(runs, frame)?
    };
    let anchor = format!("raw tokio unix socket, {frame}-byte frames");
    let mut out = vec![
        Comparison {
            id: "B7",
            case: "one-way stream, 100k u64 (s)".into(),
            trellis: rounds.one_way,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "context stream, 100k u64 (s)".into(),
            trellis: rounds.ctx,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "one-way stream, 100k u64, recv_many (s)".into(),
            trellis: rounds.one_way_many,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "context stream, 100k u64, recv_many (s)".into(),
            trellis: rounds.ctx_many,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "one-way stream, 100k u64, current-thread root (s)".into(),
            trellis: current.one_way,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "context stream, 100k u64, current-thread root (s)".into(),
            trellis: current.ctx,
            anchor: anchor.clone(),
            anchor_value: raw,
        },
        Comparison {
            id: "B7",
            case: "16 lossless subscribers, 100k u64 (s)".into(),
            trellis: rounds.fan,
            anchor: format!("{anchor} into tokio broadcast (16 receivers, same rule)"),
            anchor_value: raw_fan,
        },
    ];
    if crate::case_selected("large") {
        out.push(super::actors_large::b7_large(runs)?);
    }
    if python {
        let rate = anchors::tractor(
            "stream",
            &["--n", &STREAMED.to_string(), "--rounds", "3"],
            &["ctx_stream (median)"],
        )?;
        out.push(Comparison {
            id: "B7",
            case: "context stream, 100k u64 (s)".into(),
            trellis: rounds.ctx,
            anchor: "tractor 0.1.0a5 (python)".into(),
            anchor_value: STREAMED as f64 / rate,
        });
    }
    Ok(out)
}

/// Sixteen subscriber tasks each count every item of `stream`.
async fn fan_out(stream: MsgStream<u64>) -> Result<(), trellis::Error> {
    let subs: Vec<_> = (0..SUBSCRIBERS).map(|_| stream.subscribe()).collect();
    let handles = trellis::open_nursery(|n| async move {
        let mut handles = Vec::new();
        for sub in subs {
            handles.push(n.start_soon(async move {
                let mut count = 0u64;
                while sub.recv().await?.is_some() {
                    count += 1;
                }
                Ok::<_, trellis::Error>(count)
            })?);
        }
        Ok::<_, trellis::Error>(handles)
    })
    .await?
    .expect("not cancelled");
    for handle in handles {
        assert_eq!(handle.into_value(), Some(STREAMED));
    }
    Ok(())
}

/// The raw side of the fan-out: the socket's frames into a `tokio::sync::broadcast` of the
/// same buffer, the reader waiting for room as the lossless rule says.
async fn raw_fan_out(stream: &mut UnixStream) {
    let (tx, _) = tokio::sync::broadcast::channel::<u64>(FAN_BUFFER);
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let mut rx = tx.subscribe();
        set.spawn(async move {
            let mut count = 0u64;
            loop {
                match rx.recv().await {
                    Ok(_) => count += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return count,
                    Err(e) => panic!("lossless rule broken: {e}"),
                }
            }
        });
    }
    let (mut sent, mut batch) = (0u64, Vec::new());
    let mut frames = Frames::new(stream);
    while sent < STREAMED {
        frames.read_some(&mut batch).await;
        for i in batch.drain(..) {
            while tx.len() >= FAN_BUFFER {
                tokio::task::yield_now().await;
            }
            tx.send(i).expect("receivers alive");
            sent += 1;
        }
    }
    drop(tx);
    while let Some(count) = set.join_next().await {
        assert_eq!(count.expect("task"), STREAMED);
    }
}

/// The raw side of B7: seconds for the plain stream and for the fan-out.
fn raw_streams(runs: usize, frame: usize) -> Result<(f64, f64), String> {
    root_runtime()
        .run(async move {
            let raw = RawListener::bind();
            let role = format!("stream:PATH:{STREAMED}:{frame}");
            let (mut plain, mut fanned) = (Vec::new(), Vec::new());
            for round in 0..=runs {
                let mut child = spawn_raw(&raw.listener, &raw.path, &role).await;
                let t0 = Instant::now();
                let (mut count, mut batch) = (0u64, Vec::new());
                let mut frames = Frames::new(&mut child.stream);
                while count < STREAMED {
                    frames.read_some(&mut batch).await;
                    for i in batch.drain(..) {
                        assert_eq!(i, count);
                        count += 1;
                    }
                }
                let plain_time = t0.elapsed();
                drop(child.stream);
                child.process.wait().await.unwrap();

                let mut child = spawn_raw(&raw.listener, &raw.path, &role).await;
                let t0 = Instant::now();
                raw_fan_out(&mut child.stream).await;
                let fan_time = t0.elapsed();
                drop(child.stream);
                child.process.wait().await.unwrap();
                if round > 0 {
                    plain.push(plain_time.as_secs_f64());
                    fanned.push(fan_time.as_secs_f64());
                }
            }
            Ok::<_, trellis::Error>((median(&mut plain), median(&mut fanned)))
        })
        .map_err(|e| format!("{e:?}"))
}
