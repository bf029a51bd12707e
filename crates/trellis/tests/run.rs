//! The entry point (`trellis::run`, `Runner`), Ctrl-C handling with real signals, instruments
//! and tracing spans.

use std::io::{BufRead, BufReader};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use trellis::instrument::{Instrument, InstrumentError, TaskId};
use trellis::{CancelScope, Error, Runner, open_nursery, sleep_forever};

#[test]
fn run_returns_main_value_on_both_flavours() {
    for runner in [
        Runner::current_thread(),
        Runner::multi_thread().worker_threads(2),
    ] {
        let v = runner
            .handle_ctrl_c(false)
            .run(async {
                let n = open_nursery(|n| async move {
                    let h = n.start_soon(async { Ok::<_, Error>(20) })?;
                    Ok::<_, Error>(h)
                })
                .await?
                .unwrap();
                Ok::<_, Error>(n.into_value().unwrap() + 22)
            })
            .unwrap();
        assert_eq!(v, 42);
    }
}

#[test]
fn run_returns_group_of_failures() {
    let r = Runner::current_thread().handle_ctrl_c(false).run(async {
        open_nursery(|n| async move {
            n.start_soon(async { Err::<(), _>(Error::msg("broken")) })?;
            Ok::<_, Error>(())
        })
        .await
    });
    assert_eq!(
        r.unwrap_err()
            .as_group()
            .unwrap()
            .leaves()
            .next()
            .unwrap()
            .to_string(),
        "broken"
    );
}

/// The role the Ctrl-C tests play in a child process: a program with a task blocked forever
/// and cleanup that needs to await. `TRELLIS_TEST_ROLE` picks the role.
#[test]
fn ctrl_c_child_role() {
    let Ok(role) = std::env::var("TRELLIS_TEST_ROLE") else {
        return;
    };
    let code = trellis::main(async move {
        open_nursery(|n| async move {
            n.start_soon(async move {
                println!("ready");
                let r = sleep_forever().await;
                if let Err(cancelled) = &r {
                    println!("why: {cancelled}");
                }
                // Cleanup after cancellation: it may await, inside a shield.
                CancelScope::shielded()
                    .run(async {
                        if role == "stuck-cleanup" {
                            println!("cleanup stuck");
                            sleep_forever().await?;
                        }
                        trellis::checkpoint().await
                    })
                    .await?;
                println!("cleanup done");
                r.map(|_| ())
            })?;
            Ok::<_, Error>(())
        })
        .await
    });
    let status = if code == ExitCode::from(130) {
        130
    } else if code == ExitCode::SUCCESS {
        0
    } else {
        1
    };
    std::process::exit(status);
}

struct Child {
    process: std::process::Child,
    stdout: BufReader<std::process::ChildStdout>,
    reaped: Arc<std::sync::atomic::AtomicBool>,
}

fn spawn_child(role: &str) -> Child {
    let mut process = Command::new(std::env::current_exe().unwrap())
        .args([
            "ctrl_c_child_role",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("TRELLIS_TEST_ROLE", role)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(process.stdout.take().unwrap());
    // A watchdog so that a broken child fails the test instead of hanging it.
    // It only fires while the child is still unreaped, so the PID is still the child's.
    let pid = nix::unistd::Pid::from_raw(process.id() as i32);
    let reaped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = reaped.clone();
    std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_secs(60));
        if !watched.load(Ordering::SeqCst) {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        }
    });
    Child {
        process,
        stdout,
        reaped,
    }
}

impl Child {
    fn wait_for_line(&mut self, wanted: &str) {
        let mut line = String::new();
        loop {
            line.clear();
            assert!(
                self.stdout.read_line(&mut line).unwrap() > 0,
                "child exited before {wanted:?}"
            );
            // libtest prints "test <name> ... " without a newline before the child's output.
            if line.trim_end().ends_with(wanted) {
                return;
            }
        }
    }

    fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(self.process.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).unwrap();
    }

    fn finish(mut self) -> (i32, String, String) {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(self.process.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        let status = self.process.wait().unwrap();
        self.reaped.store(true, Ordering::SeqCst);
        (status.code().unwrap_or(-1), rest, stderr)
    }
}

/// Ctrl-C cancels the root scope, cleanup runs, and the program exits 130, as a Trio program
/// does on KeyboardInterrupt.
#[test]
fn ctrl_c_cancels_cleans_up_and_exits_130() {
    let mut child = spawn_child("normal");
    child.wait_for_line("ready");
    child.interrupt();
    let (code, stdout, stderr) = child.finish();
    assert_eq!(code, 130, "stderr: {stderr}");
    assert!(stdout.contains("cleanup done"), "stdout: {stdout}");
    assert!(stderr.contains("interrupted"), "stderr: {stderr}");
    // Trio: test_reason_delayed_ki — the tasks learn that Ctrl-C cancelled them.
    assert!(
        stdout.contains("why: cancelled due to interrupt with reason 'Ctrl-C (SIGINT)'"),
        "stdout: {stdout}"
    );
}

/// A second Ctrl-C while cleanup hangs exits at once, still with 130.
#[test]
fn second_ctrl_c_exits_immediately() {
    let mut child = spawn_child("stuck-cleanup");
    child.wait_for_line("ready");
    child.interrupt();
    child.wait_for_line("cleanup stuck");
    child.interrupt();
    let (code, stdout, _) = child.finish();
    assert_eq!(code, 130);
    assert!(!stdout.contains("cleanup done"));
}

#[derive(Default)]
struct Counts {
    spawned: AtomicUsize,
    scheduled: AtomicUsize,
    before: AtomicUsize,
    after: AtomicUsize,
    exited: AtomicUsize,
}

impl Instrument for Counts {
    fn task_spawned(&self, _: TaskId) {
        self.spawned.fetch_add(1, Ordering::SeqCst);
    }
    fn task_scheduled(&self, _: TaskId) {
        self.scheduled.fetch_add(1, Ordering::SeqCst);
    }
    fn before_task_step(&self, _: TaskId) {
        self.before.fetch_add(1, Ordering::SeqCst);
    }
    fn after_task_step(&self, _: TaskId) {
        self.after.fetch_add(1, Ordering::SeqCst);
    }
    fn task_exited(&self, _: TaskId) {
        self.exited.fetch_add(1, Ordering::SeqCst);
    }
}

/// Trio: test_instruments (in spirit) — every nursery task reports its life.
#[test]
fn instruments_hear_every_task() {
    let counts = Arc::new(Counts::default());
    Runner::current_thread()
        .handle_ctrl_c(false)
        .instrument(counts.clone())
        .run(async {
            open_nursery(|n| async move {
                for _ in 0..3 {
                    n.start_soon(async {
                        trellis::checkpoint().await?;
                        // A nested nursery inherits the run's instruments.
                        open_nursery(|inner| async move {
                            inner.start_soon(trellis::checkpoint())?;
                            Ok::<_, Error>(())
                        })
                        .await?;
                        Ok::<_, Error>(())
                    })?;
                }
                Ok::<_, Error>(())
            })
            .await
        })
        .unwrap();
    assert_eq!(counts.spawned.load(Ordering::SeqCst), 6);
    assert_eq!(counts.exited.load(Ordering::SeqCst), 6);
    let (before, after) = (
        counts.before.load(Ordering::SeqCst),
        counts.after.load(Ordering::SeqCst),
    );
    assert_eq!(before, after);
    assert!(
        before >= 12,
        "each task steps at least twice around its checkpoint: {before}"
    );
    assert!(counts.scheduled.load(Ordering::SeqCst) >= 6);
}

/// A nursery inside a cancel scope (a timeout, a shielded scope) still reports to the run's
/// instruments.
#[test]
fn instruments_hear_tasks_inside_cancel_scopes() {
    let counts = Arc::new(Counts::default());
    Runner::current_thread()
        .handle_ctrl_c(false)
        .instrument(counts.clone())
        .run(async {
            trellis::move_on_after(std::time::Duration::from_secs(60), async {
                open_nursery(|n| async move {
                    n.start_soon(trellis::checkpoint())?;
                    Ok::<_, Error>(())
                })
                .await
            })
            .await?;
            CancelScope::shielded()
                .run(open_nursery(|n| async move {
                    n.start_soon(trellis::checkpoint())?;
                    Ok::<_, Error>(())
                }))
                .await?;
            Ok::<_, Error>(())
        })
        .unwrap();
    assert_eq!(counts.spawned.load(Ordering::SeqCst), 2);
    assert_eq!(counts.exited.load(Ordering::SeqCst), 2);
}

/// Records every event, in order.
#[derive(Default)]
struct Recorder(Mutex<Vec<(&'static str, Option<TaskId>)>>);

impl Recorder {
    fn push(&self, event: &'static str, task: impl Into<Option<TaskId>>) {
        self.0.lock().unwrap().push((event, task.into()));
    }
    fn events(&self) -> Vec<(&'static str, Option<TaskId>)> {
        self.0.lock().unwrap().clone()
    }
}

impl Instrument for Recorder {
    fn before_run(&self) {
        self.push("before_run", None);
    }
    fn after_run(&self) {
        self.push("after_run", None);
    }
    fn task_spawned(&self, task: TaskId) {
        self.push("spawned", task);
    }
    fn task_scheduled(&self, task: TaskId) {
        self.push("schedule", task);
    }
    fn before_task_step(&self, task: TaskId) {
        self.push("before", task);
    }
    fn after_task_step(&self, task: TaskId) {
        self.push("after", task);
    }
    fn task_exited(&self, task: TaskId) {
        self.push("exited", task);
    }
}

/// Trio: test_instruments — instruments can be removed and added as the run goes: one that
/// stays sees exactly what the removed one saw followed by what the added one saw; removing
/// one that is not installed fails; adding twice adds once.
#[test]
fn instruments_added_and_removed_during_the_run() {
    let (r1, r2, r3) = (
        Arc::new(Recorder::default()),
        Arc::new(Recorder::default()),
        Arc::new(Recorder::default()),
    );
    let (r2_in, r3_in) = (
        r2.clone() as Arc<dyn Instrument>,
        r3.clone() as Arc<dyn Instrument>,
    );
    Runner::current_thread()
        .handle_ctrl_c(false)
        .instrument(r1.clone())
        .instrument(r2.clone())
        .run(async move {
            open_nursery(|n| async move {
                n.start_soon(async move {
                    for _ in 0..4 {
                        trellis::checkpoint().await?;
                    }
                    trellis::instrument::remove(&r2_in).unwrap();
                    assert_eq!(
                        trellis::instrument::remove(&r2_in),
                        Err(InstrumentError::NotInstalled)
                    );
                    trellis::instrument::add(r3_in.clone()).unwrap();
                    trellis::instrument::add(r3_in).unwrap();
                    trellis::checkpoint().await?;
                    Ok::<_, Error>(())
                })?;
                Ok::<_, Error>(())
            })
            .await
        })
        .unwrap();
    let (all, before, after) = (r1.events(), r2.events(), r3.events());
    let joined: Vec<_> = before.iter().chain(&after).copied().collect();
    assert_eq!(all, joined);
    // The task ran six steps (five checkpoints), each between its step hooks. Unlike Trio's,
    // a checkpoint's wake-up comes after its step ends (tokio defers a yielding task's wake
    // until the poll returns). r3 was added during the fifth step and saw its end, the last
    // step and the exit, once each.
    let names: Vec<&str> = all.iter().map(|(name, _)| *name).collect();
    let mut expected = vec!["before_run", "spawned", "before", "after"];
    for _ in 0..5 {
        expected.extend(["schedule", "before", "after"]);
    }
    expected.extend(["exited", "after_run"]);
    assert_eq!(names, expected);
    let late: Vec<&str> = after.iter().map(|(name, _)| *name).collect();
    assert_eq!(
        late,
        [
            "after",
            "schedule",
            "before",
            "after",
            "exited",
            "after_run"
        ]
    );
}

/// Trio: test_instruments' io-wait hooks — a worker with nothing to run waits, and the
/// instruments hear it go to sleep and wake, in pairs.
#[test]
fn instruments_hear_io_waits() {
    #[derive(Default)]
    struct Waits {
        events: Mutex<Vec<&'static str>>,
    }
    impl Instrument for Waits {
        fn before_io_wait(&self) {
            self.events.lock().unwrap().push("wait");
        }
        fn after_io_wait(&self) {
            self.events.lock().unwrap().push("woke");
        }
    }
    let waits = Arc::new(Waits::default());
    Runner::current_thread()
        .handle_ctrl_c(false)
        .instrument(waits.clone())
        .run(async {
            // Nothing else to run while it sleeps: the thread waits for the timer.
            trellis::sleep(std::time::Duration::from_millis(5)).await?;
            Ok::<_, Error>(())
        })
        .unwrap();
    let events = waits.events.lock().unwrap().clone();
    assert!(!events.is_empty(), "no wait seen");
    for pair in events.chunks(2) {
        assert_eq!(pair, ["wait", "woke"], "{events:?}");
    }
}

/// An instrument added to a run that started with none hears the tasks started after it;
/// outside a run there is nothing to add it to.
#[test]
fn instrument_added_to_an_uninstrumented_run() {
    let counts = Arc::new(Counts::default());
    let added = counts.clone() as Arc<dyn Instrument>;
    assert_eq!(
        trellis::instrument::add(added.clone()),
        Err(InstrumentError::NoRun)
    );
    Runner::current_thread()
        .handle_ctrl_c(false)
        .run(async move {
            open_nursery(|n| async move {
                n.start_soon(trellis::checkpoint())?;
                Ok::<_, Error>(())
            })
            .await?;
            trellis::instrument::add(added.clone()).unwrap();
            open_nursery(|n| async move {
                n.start_soon(trellis::checkpoint())?;
                n.start_soon(trellis::checkpoint())?;
                Ok::<_, Error>(())
            })
            .await?;
            trellis::instrument::remove(&added).unwrap();
            open_nursery(|n| async move {
                n.start_soon(trellis::checkpoint())?;
                Ok::<_, Error>(())
            })
            .await
        })
        .unwrap();
    assert_eq!(counts.spawned.load(Ordering::SeqCst), 2);
    assert_eq!(counts.exited.load(Ordering::SeqCst), 2);
}

/// Every task gets a `tracing` span whose parent is its nursery's span.
#[test]
fn task_spans_nest_under_nursery_spans() {
    use tracing_subscriber::layer::{Context, SubscriberExt};
    use tracing_subscriber::registry::LookupSpan;

    /// (span name, parent span name) in creation order.
    type SpanLog = Vec<(String, Option<String>)>;
    #[derive(Clone, Default)]
    struct Parents(Arc<Mutex<SpanLog>>);
    impl<S: tracing::Subscriber + for<'a> LookupSpan<'a>> tracing_subscriber::Layer<S> for Parents {
        fn on_new_span(
            &self,
            _attrs: &tracing::span::Attributes<'_>,
            id: &tracing::span::Id,
            ctx: Context<'_, S>,
        ) {
            let span = ctx.span(id).unwrap();
            let parent = span.parent().map(|p| p.name().to_owned());
            self.0
                .lock()
                .unwrap()
                .push((span.name().to_owned(), parent));
        }
    }

    let parents = Parents::default();
    let subscriber = tracing_subscriber::registry().with(parents.clone());
    tracing::subscriber::with_default(subscriber, || {
        Runner::current_thread()
            .handle_ctrl_c(false)
            .run(async {
                open_nursery(|n| async move {
                    n.start_soon(async {
                        open_nursery(|inner| async move {
                            inner.start_soon(async { Ok::<_, Error>(()) })?;
                            Ok::<_, Error>(())
                        })
                        .await
                    })?;
                    Ok::<_, Error>(())
                })
                .await
            })
            .unwrap();
    });
    let spans = parents.0.lock().unwrap().clone();
    let expected: Vec<(String, Option<String>)> = vec![
        ("nursery".into(), None),
        ("task".into(), Some("nursery".into())),
        ("nursery".into(), Some("task".into())),
        ("task".into(), Some("nursery".into())),
    ];
    assert_eq!(spans, expected);
}
