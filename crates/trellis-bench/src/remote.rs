//! B13: a child on another host through ssh. Two network namespaces made here (joined by a
//! veth pair), a real `sshd` in one, and this runner re-run in the other as the root: the
//! spawn, one call and teardown of a child through `Placement::ssh`, against the same through
//! a local spawn (B5's work) and against `ssh host true` alone, alternated run by run. Needs
//! root, iproute2 and OpenSSH's server (which `.ci/run` installs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use trellis_actor::{Placement, Transport, open_nursery};

use crate::actors::{config, echo, root_runtime};
use crate::{Comparison, median};

#[path = "../../trellis-actor/tests/common/sshd.rs"]
mod sshd;

/// Set in the root's run (inside its namespace): the directory of the run's keys.
const INNER: &str = "TRELLIS_BENCH_B13_DIR";
const ROOT_ADDR: &str = "10.78.0.1";
const HOST_ADDR: &str = "10.78.0.2";

/// The two namespaces and their link; removed when dropped.
struct Namespaces([String; 2]);

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

impl Namespaces {
    fn new() -> Result<Namespaces, String> {
        let tag = std::process::id() % 100_000;
        let names = Namespaces([format!("tb{tag}a"), format!("tb{tag}b")]);
        let [a, b] = &names.0;
        for ns in [a, b] {
            ip(&["netns", "add", ns])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
        }
        let (va, vb) = (format!("tb{tag}va"), format!("tb{tag}vb"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb])?;
        for (ns, veth, addr) in [(a, &va, ROOT_ADDR), (b, &vb, HOST_ADDR)] {
            ip(&["link", "set", veth, "netns", ns])?;
            ip(&["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", veth])?;
            ip(&["-n", ns, "link", "set", veth, "up"])?;
        }
        Ok(names)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// B13: the set-up here; the measuring in the root's run, re-executed in its namespace.
pub(crate) fn b13(runs: usize) -> Result<Vec<Comparison>, String> {
    if let Some(dir) = std::env::var_os(INNER) {
        return measure(runs, Path::new(&dir));
    }
    let is_root = nix::unistd::geteuid().is_root();
    if !is_root || !sshd::have_sshd() || Command::new("ip").arg("-V").output().is_err() {
        return Err("B13 needs root, iproute2 and OpenSSH's sshd".into());
    }
    let dir = std::env::temp_dir().join(format!("trellis-b13-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let outcome = (|| {
        sshd::keys(&dir, &[HOST_ADDR]);
        let net = Namespaces::new()?;
        let _sshd = sshd::Sshd::start(&net.0[1], HOST_ADDR, &dir);
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let out = Command::new("ip")
            .args(["netns", "exec", &net.0[0]])
            .arg(exe)
            .args(["B13", "--runs", &runs.to_string()])
            .env(INNER, &dir)
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(format!(
                "the root's run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        // Its comparisons, as it printed them.
        print!("{}", String::from_utf8_lossy(&out.stdout));
        Ok(Vec::new())
    })();
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

/// The root's run: each repetition spawns, calls and tears down a child over ssh and one
/// locally, and runs `ssh host true`, in turn.
fn measure(runs: usize, dir: &Path) -> Result<Vec<Comparison>, String> {
    let reps = runs.max(20);
    let dir: PathBuf = dir.to_owned();
    let transport = Transport::Tcp {
        bind: ROOT_ADDR.parse().unwrap(),
    };
    let (mut remote, mut local, mut bare) = root_runtime()
        .run(trellis_actor::run_root(
            "bench",
            config().transport(transport),
            || async move {
                let placement = Placement::ssh(sshd::host(HOST_ADDR, &dir));
                let ssh_args = sshd::ssh_args(HOST_ADDR, &dir);
                let (mut remote, mut local, mut bare) = (Vec::new(), Vec::new(), Vec::new());
                for i in 0..=reps as u64 {
                    for (times, placement) in
                        [(&mut remote, &placement), (&mut local, &Placement::local())]
                    {
                        let t0 = Instant::now();
                        open_nursery(|an| async move {
                            let portal = an.start_actor_on("w", placement).await?;
                            assert_eq!(portal.run(echo, (i,)).await?, i);
                            Ok(())
                        })
                        .await?;
                        if i > 0 {
                            times.push(t0.elapsed().as_secs_f64());
                        }
                    }
                    let t0 = Instant::now();
                    let status = tokio::process::Command::new("ssh")
                        .args(&ssh_args)
                        .arg("true")
                        .status()
                        .await
                        .map_err(trellis::Error::new)?;
                    assert!(status.success(), "ssh host true: {status}");
                    if i > 0 {
                        bare.push(t0.elapsed().as_secs_f64());
                    }
                }
                Ok::<_, trellis::Error>((remote, local, bare))
            },
        ))
        .map_err(|e| format!("{e:?}"))?;
    let (remote, local, bare) = (median(&mut remote), median(&mut local), median(&mut bare));
    Ok(vec![
        Comparison {
            id: "B13",
            case: "spawn+call+teardown over ssh".into(),
            trellis: remote,
            anchor: "the same, spawned locally (B5)".into(),
            anchor_value: local,
        },
        Comparison {
            id: "B13",
            case: "launcher cost: over ssh minus local".into(),
            trellis: remote - local,
            anchor: "ssh host true".into(),
            anchor_value: bare,
        },
    ])
}
