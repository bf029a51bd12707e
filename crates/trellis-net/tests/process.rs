//! Subprocesses, ported from Trio's `test_subprocess.py` (the original named on each test).

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::process::Command;
use trellis_net::{ProcessError, ReceiveStream, RunOptions, SendStream, open_process, run_process};

fn sh(script: &str) -> Command {
    let mut c = Command::new("sh");
    c.arg("-c").arg(script);
    c
}

/// Whether `pid` still exists at all (a zombie counts: it has not been reaped).
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Trio: test_run — input in, output and error captured.
#[test]
fn run_captures_output() {
    trellis::testing::run_test(async {
        let done = run_process(
            Command::new("cat"),
            RunOptions {
                stdin: Some(b"through cat".to_vec()),
                ..RunOptions::default().capture()
            },
        )
        .await
        .unwrap();
        assert!(done.status.success());
        assert_eq!(done.stdout, b"through cat");
        let done = run_process(
            sh("echo out; echo err >&2"),
            RunOptions::default().capture(),
        )
        .await
        .unwrap();
        assert_eq!(
            (done.stdout, done.stderr),
            (b"out\n".to_vec(), b"err\n".to_vec())
        );
    });
}

/// Trio: test_run_check — a failing command is an error carrying its output, unless checking
/// is off.
#[test]
fn run_checks_the_exit_status() {
    trellis::testing::run_test(async {
        let err = run_process(sh("echo why >&2; exit 3"), RunOptions::default().capture())
            .await
            .unwrap_err();
        // The typed error is matched as it is.
        let ProcessError::Failed { completed, .. } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(completed.status.code(), Some(3));
        assert_eq!(completed.stderr, b"why\n");
        let done = run_process(
            sh("exit 3"),
            RunOptions {
                check: false,
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
    });
}

/// Trio: test_run_with_broken_pipe — a process that exits without reading its input is fine.
#[test]
fn run_with_unread_input() {
    trellis::testing::run_test(async {
        let done = run_process(
            Command::new("true"),
            RunOptions {
                stdin: Some(vec![b'x'; 1 << 20]),
                ..RunOptions::default()
            },
        )
        .await
        .unwrap();
        assert!(done.status.success());
    });
}

/// Trio: test_errors — a program that does not exist.
#[test]
fn run_missing_program() {
    trellis::testing::run_test(async {
        let err = run_process(
            Command::new("/nonexistent/trellis-test-program"),
            RunOptions::default(),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }));
    });
}

/// Trio: test_kill_when_context_cancelled — cancelling the caller terminates the process and
/// reaps it before returning.
#[test]
fn cancelled_run_terminates_and_reaps() {
    trellis::testing::run_test(async {
        let pid_file = std::env::temp_dir().join(format!("trellis-run-{}", std::process::id()));
        let script = format!("echo $$ > {}; exec sleep 100", pid_file.display());
        // Cancel once the process has surely started (it wrote its pid).
        let scope = trellis::CancelScope::new();
        let (runner, file) = (scope.clone(), pid_file.clone());
        let outcome = trellis::open_nursery(|n| async move {
            let run = n.start_soon(async move {
                runner
                    .run(async { run_process(sh(&script), RunOptions::default()).await })
                    .await
            })?;
            while std::fs::read_to_string(&file).map_or(true, |s| !s.ends_with('\n')) {
                trellis::sleep(Duration::from_millis(1)).await?;
            }
            scope.cancel();
            Ok::<_, trellis::Error>(run)
        })
        .await
        .unwrap()
        .unwrap()
        .into_value()
        .unwrap();
        assert!(outcome.is_none());
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = std::fs::remove_file(&pid_file);
        assert!(!exists(pid), "process {pid} was not reaped");
    });
}

/// Trio: test_warn_on_cancel_SIGKILL_escalation — a process that ignores SIGTERM is killed
/// after the grace period, and reaped.
#[test]
fn ignored_terminate_escalates_to_kill() {
    trellis::testing::run_test(async {
        // `read` is built in: the shell waits on its standard input (kept open by `p`) with no
        // child of its own that would outlive it.
        let mut p = open_process(sh("trap '' TERM; echo ready; read line")).unwrap();
        let mut stdout = p.stdout.take().unwrap();
        let mut seen = Vec::new();
        while !seen.ends_with(b"ready\n") {
            seen.extend_from_slice(&stdout.receive_some(64).await.unwrap());
        }
        let waited = trellis::move_on_after(Duration::from_millis(10), p.wait()).await;
        assert!(matches!(waited, Ok(None)));
        // Terminated (ignored), then killed after the grace period, and reaped.
        let status = p.wait().await.unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
        assert!(!exists(p.pid()));
    });
}

/// Trio: test_interactive / test_pipes — talk to a running process through its pipes.
#[test]
fn interactive_process() {
    trellis::testing::run_test(async {
        let mut p = open_process(Command::new("cat")).unwrap();
        let (mut stdin, mut stdout) = (p.stdin.take().unwrap(), p.stdout.take().unwrap());
        for word in [&b"hello"[..], b"world"] {
            stdin.send_all(word).await.unwrap();
            let mut got = Vec::new();
            while got.len() < word.len() {
                got.extend_from_slice(&stdout.receive_some(64).await.unwrap());
            }
            assert_eq!(got, word);
        }
        stdin.close().await.unwrap();
        assert!(stdout.receive_some(64).await.unwrap().is_empty());
        assert!(p.wait().await.unwrap().success());
    });
}

/// Trio: test_signals — signals reach the process, and the status says which.
#[test]
fn signals_reach_the_process() {
    trellis::testing::run_test(async {
        let mut p = open_process(sh("exec sleep 100")).unwrap();
        p.terminate().unwrap();
        assert_eq!(
            p.wait().await.unwrap().signal(),
            Some(Signal::SIGTERM as i32)
        );
        // Signalling a reaped process is a no-op, not an error.
        p.kill().unwrap();
    });
}
