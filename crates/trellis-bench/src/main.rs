//! `trellis-bench`: side-by-side benchmarks of trellis against its anchors.
//!
//! ```text
//! cargo run --release -p trellis-bench -- B1 B2 B3 B4 B5 B6 B7 B8 B9 B10 B11 B12 [--runs N] [--anchors python]
//! ```
//!
//! Each comparison prints one JSON line:
//! `{"id":"B1","case":"multi_thread","trellis":<s>,"anchor":"tokio JoinSet","anchor_value":<s>,"ratio":<trellis/anchor>}`.
//! Values are medians of `--runs` runs (default 15, at least 5) done alternately in one process,
//! so that both sides see the same machine state. `ratio < 1` means trellis is faster.

mod actors;
mod actors_attack;
mod actors_large;
mod actors_tls;
mod anchors;
mod broadcast;
mod channels;
mod core;
mod dtls;
mod net;
mod remote;
mod supervision;
#[cfg(feature = "opentelemetry")]
mod traced;

use std::process::ExitCode;

/// One measured comparison.
pub(crate) struct Comparison {
    pub(crate) id: &'static str,
    pub(crate) case: String,
    pub(crate) trellis: f64,
    pub(crate) anchor: String,
    pub(crate) anchor_value: f64,
}

impl Comparison {
    /// Prints the JSON line, keys in the documented order.
    fn print(&self) {
        let text = |s: &str| serde_json::Value::from(s).to_string();
        println!(
            "{{\"id\":{},\"case\":{},\"trellis\":{},\"anchor\":{},\"anchor_value\":{},\"ratio\":{}}}",
            text(self.id),
            text(&self.case),
            self.trellis,
            text(&self.anchor),
            self.anchor_value,
            self.trellis / self.anchor_value,
        );
    }
}

/// Runs `a` and `b` alternately `runs` times and returns their median times in seconds.
pub(crate) fn alternate(
    runs: usize,
    mut a: impl FnMut() -> f64,
    mut b: impl FnMut() -> f64,
) -> (f64, f64) {
    let (run_a, run_b) = (side_selected("trellis"), side_selected("anchor"));
    let mut a = move || if run_a { a() } else { 1.0 };
    let mut b = move || if run_b { b() } else { 1.0 };
    let (mut xs, mut ys) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    // One untimed warm-up of each, so allocator and thread pools are in their steady state.
    a();
    b();
    let swap = std::env::var_os("TRELLIS_BENCH_SWAP").is_some();
    for _ in 0..runs {
        if swap {
            ys.push(b());
            xs.push(a());
        } else {
            xs.push(a());
            ys.push(b());
        }
    }
    if std::env::var_os("TRELLIS_BENCH_RUNS").is_some() {
        eprintln!("runs: {xs:.4?} / {ys:.4?}");
    }
    (median(&mut xs), median(&mut ys))
}

/// The median of `values`; with `TRELLIS_BENCH_SAMPLES` set, every value (in the order
/// measured) goes to stderr first, to see a bimodal case for what it is.
pub(crate) fn median(values: &mut [f64]) -> f64 {
    if std::env::var_os("TRELLIS_BENCH_SAMPLES").is_some() {
        eprintln!("samples {values:?}");
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The `p` quantile (0 to 1) of latencies `lat`, nearest rank.
pub(crate) fn percentile(lat: &[f64], p: f64) -> f64 {
    let mut sorted = lat.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

struct Options {
    ids: Vec<String>,
    runs: usize,
    python: bool,
}

/// For profiling one side alone: `TRELLIS_BENCH_CASE=current_thread` keeps one runtime flavour,
/// `TRELLIS_BENCH_ONLY=trellis|anchor` runs only that side (the other reports 1 s);
/// `TRELLIS_BENCH_RUNS=1` prints every run's time to standard error.
pub(crate) fn case_selected(case: &str) -> bool {
    std::env::var("TRELLIS_BENCH_CASE").map_or(true, |c| c == case)
}

/// For profiling one part of a benchmark: `TRELLIS_BENCH_PART=handshake` (B10) runs that part
/// only (the others report 1 s).
pub(crate) fn part_selected(part: &str) -> bool {
    std::env::var("TRELLIS_BENCH_PART").map_or(true, |p| p == part)
}

pub(crate) fn side_selected(side: &str) -> bool {
    std::env::var("TRELLIS_BENCH_ONLY").map_or(true, |s| s == side)
}

/// `measure()` when `side` runs, else 1 s (as `alternate` reports a side not run).
pub(crate) fn if_side_selected(side: &str, measure: impl FnOnce() -> f64) -> f64 {
    if side_selected(side) { measure() } else { 1.0 }
}

fn parse_args() -> Result<Options, String> {
    let mut options = Options {
        ids: Vec::new(),
        runs: 15,
        python: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runs" => {
                let n = args.next().ok_or("--runs needs a number")?;
                options.runs = n.parse().map_err(|_| format!("bad --runs value {n:?}"))?;
                if options.runs < 5 {
                    return Err("--runs must be at least 5".into());
                }
            }
            "--anchors" => match args.next().as_deref() {
                Some("python") => options.python = true,
                other => {
                    return Err(format!(
                        "unknown --anchors value {other:?} (expected python)"
                    ));
                }
            },
            "-h" | "--help" => {
                return Err(
                    "usage: trellis-bench [B1] [B2] [B3] [B4] [B5] [B6] [B7] [B8] [B9] [B10] [B11] [B12] [B13] [--runs N] [--anchors python]"
                        .into(),
                );
            }
            id if id.starts_with('B') => options.ids.push(id.to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if options.ids.is_empty() {
        options.ids = vec!["B1".into(), "B2".into()];
    }
    Ok(options)
}

fn main() -> ExitCode {
    // The actor benchmarks start this executable as their child processes.
    actors::serve_roles();
    let options = match parse_args() {
        Ok(options) => options,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    for id in &options.ids {
        let comparisons = match id.as_str() {
            "B1" => core::b1(options.runs, options.python),
            "B2" => core::b2(options.runs, options.python),
            "B3" => channels::b3(options.runs, options.python),
            "B4" => broadcast::b4(options.runs),
            "B5" => actors::b5(options.runs, options.python),
            "B6" => actors::b6(options.runs, options.python).and_then(|mut out| {
                out.extend(actors_tls::b6(options.runs)?);
                out.extend(actors_attack::b6(options.runs)?);
                #[cfg(feature = "opentelemetry")]
                out.extend(traced::b6(options.runs)?);
                Ok(out)
            }),
            "B7" => actors::b7(options.runs, options.python),
            "B8" => actors::b8(options.python),
            "B9" => net::b9(options.runs, options.python),
            "B10" => dtls::b10(options.runs, options.python),
            "B11" => core::b11(options.runs),
            "B12" => supervision::b12(options.runs),
            "B13" => remote::b13(options.runs),
            other => {
                eprintln!("unknown benchmark {other} (this runner knows B1 to B13)");
                return ExitCode::from(2);
            }
        };
        match comparisons {
            Ok(list) => list.iter().for_each(Comparison::print),
            Err(message) => {
                eprintln!("{id}: {message}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
