//! The Python anchors in `../shared/anchors` (Trio), run as child processes.

use std::path::PathBuf;
use std::process::Command;

use crate::{Comparison, median};

/// The anchors folder: `$TRELLIS_ANCHORS_DIR`, or `shared/anchors` beside the checkout.
fn anchors_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TRELLIS_ANCHORS_DIR") {
        return dir.into();
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/anchors")
}

/// The Trio venv's interpreter: `$ANCHORS_VENV/bin/python`, default `target/anchors/trio` under
/// the workspace (where `../shared/anchors/setup.sh` puts it when run from the checkout).
fn python() -> PathBuf {
    let venv = std::env::var_os("ANCHORS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/anchors/trio")
        });
    venv.join("bin/python")
}

/// Runs `trio/<script> <args>` and returns the number under `field` in its JSON line.
pub(crate) fn trio(script: &str, args: &[&str], field: &str) -> Result<f64, String> {
    let python = python();
    if !python.exists() {
        return Err(format!(
            "no Trio venv at {}: run ../shared/anchors/setup.sh from the checkout first",
            python.display()
        ));
    }
    let path = anchors_dir().join("trio").join(script);
    let output = Command::new(&python)
        .arg(&path)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{script} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("{script} printed {line:?}: {e}"))?;
    value[field]
        .as_f64()
        .ok_or_else(|| format!("{script} printed no {field:?}: {line}"))
}

/// Runs a Trio anchor `runs.min(5)` times with `n` tasks and compares its median `field` with
/// trellis's multi-thread median.
pub(crate) fn trio_comparison(
    id: &'static str,
    script: &str,
    n: usize,
    field: &str,
    runs: usize,
    trellis: f64,
) -> Result<Comparison, String> {
    trio_comparison_args(id, script, &[n.to_string()], field, runs, trellis)
}

/// Like [`trio_comparison`], with the script's arguments given in full.
pub(crate) fn trio_comparison_args(
    id: &'static str,
    script: &str,
    args: &[String],
    field: &str,
    runs: usize,
    trellis: f64,
) -> Result<Comparison, String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut values = (0..runs.min(5))
        .map(|_| trio(script, &args, field))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Comparison {
        id,
        case: "multi_thread".into(),
        trellis,
        anchor: "trio 0.35 (python)".into(),
        anchor_value: median(&mut values),
    })
}

/// The tractor venv's interpreter: `$ANCHORS_VENV_TRACTOR/bin/python`, default
/// `target/anchors/tractor` under the workspace (`../shared/anchors/setup.sh tractor`).
fn tractor_python() -> PathBuf {
    std::env::var_os("ANCHORS_VENV_TRACTOR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/anchors/tractor")
        })
        .join("bin/python")
}

/// Runs `tractor/bench.py <which> <args>` and returns the number at `path` in its result.
pub(crate) fn tractor(which: &str, args: &[&str], path: &[&str]) -> Result<f64, String> {
    let python = tractor_python();
    if !python.exists() {
        return Err(format!(
            "no tractor venv at {}: run ../shared/anchors/setup.sh tractor from the checkout first",
            python.display()
        ));
    }
    let dir = anchors_dir().join("tractor");
    let output = Command::new(&python)
        .current_dir(&dir)
        .arg("bench.py")
        .arg(which)
        .args(args)
        .output()
        .map_err(|e| format!("cannot run tractor's bench.py: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "tractor bench.py {which} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("bench.py {which} printed {text:?}: {e}"))?;
    path.iter()
        .fold(&value["result"], |v, key| &v[*key])
        .as_f64()
        .ok_or_else(|| format!("bench.py {which} printed no {path:?}: {text}"))
}
