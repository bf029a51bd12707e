//! The `trellis` binary against a real tree of actor processes: `tree` draws it, `call` calls
//! into it, and every error is one line with exit status 2.

use std::process::Output;

use trellis_actor::{Config, Etcd, Functions, Secret, Transport, open_nursery, wait_for_actor};

#[path = "../../trellis-actor/tests/common/etcd_server.rs"]
mod etcd_server;

/// The tree's secret in these tests; the CLI finds it beside a Unix registrar's socket, and is
/// given [`secret_file`] for a TCP one.
const SECRET: &[u8] = b"the cli tests' secret";

/// A file holding `secret`, readable by its owner only, in a directory of this test's own.
fn secret_file(name: &str, secret: &[u8]) -> String {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = std::env::temp_dir().join(format!("trellis-cli-secret-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, secret).unwrap();
    path.display().to_string()
}

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

#[derive(Debug, thiserror::Error)]
#[error("out of stock: {0}")]
struct OutOfStock(String);

async fn fails(item: String) -> Result<(), trellis::Error> {
    Err(trellis::Error::new(OutOfStock(item)))
}

/// In `mid`: starts a `leaf` actor below itself and holds until cancelled.
async fn hold_with_child() -> Result<(), trellis::Error> {
    open_nursery(|an| async move {
        an.start_actor("leaf").await?;
        trellis::sleep_forever().await?;
        Ok(())
    })
    .await
}

/// Where a TLS tree's certificates are, for its children.
const TLS_DIR: &str = "TRELLIS_CLI_TEST_TLS_DIR";

/// `config` over TLS with the certificates in `dir` (`ca.pem`, `cert.pem`, `key.pem`).
fn with_tls(config: Config, dir: &std::path::Path) -> Config {
    let tls = trellis_actor::TreeTls::from_dir(dir).unwrap();
    config.tls(tls).child_env(TLS_DIR, dir)
}

/// The etcd a tree keeps its names in, for its children.
const ETCD: &str = "TRELLIS_CLI_TEST_ETCD";
const ETCD_PREFIX: &str = "/trellis-cli-test";

fn config() -> Config {
    let mut config = plain_config();
    if let Ok(endpoint) = std::env::var(ETCD) {
        config = config.etcd(Etcd::new([endpoint]).prefix(ETCD_PREFIX));
    }
    match std::env::var_os(TLS_DIR) {
        Some(dir) => with_tls(config, std::path::Path::new(&dir)),
        None => config,
    }
}

fn plain_config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fails)
            .register(hold_with_child),
    )
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
    .secret(Secret::new(SECRET).unwrap())
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// Runs the `trellis` binary with `args`, on a thread (the tree keeps serving meanwhile); the
/// task says it waits on the command (for `trellis dump`).
async fn trellis_cli(args: &[&str]) -> Result<Output, trellis::Error> {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let command = trellis::threads::run_sync(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(&args)
            .env_remove("TRELLIS_REGISTRAR")
            .env_remove("TRELLIS_SECRET")
            .env_remove("TRELLIS_SECRET_FILE")
            .env_remove("TRELLIS_TLS_DIR")
            .env_remove("TRELLIS_ETCD")
            .env_remove("TRELLIS_ETCD_PREFIX")
            .output()
            .map_err(trellis::Error::new)
    });
    trellis::dump::waiting_on(|| "the trellis command".into(), command).await?
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A tree `root → {calc, mid → leaf}`; runs `check` with the registrar's address, then tears
/// the tree down.
fn with_tree<F, Fut>(transport: Transport, check: F)
where
    F: FnOnce(String, [u32; 3]) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), trellis::Error>> + Send,
{
    with_tree_configured(config().transport(transport), check);
}

/// [`with_tree`] with the root configured by `config`.
fn with_tree_configured<F, Fut>(config: Config, check: F)
where
    F: FnOnce(String, [u32; 3]) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), trellis::Error>> + Send,
{
    trellis::Runner::multi_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root("root", config, || async move {
            open_nursery(|an| async move {
                let calc = an.start_actor("calc").await?;
                let mid = an.start_actor("mid").await?;
                trellis::open_nursery(|n| async move {
                    let held = mid.clone();
                    n.start_soon(
                        async move { held.run_named::<(), _>("hold_with_child", ()).await },
                    )?;
                    let leaf = wait_for_actor("leaf").await?;
                    let registrar = trellis_actor::current().registrar().to_string();
                    check(registrar, [calc.pid(), mid.pid(), leaf.pid()]).await?;
                    n.cancel();
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                an.cancel();
                Ok(())
            })
            .await
        }))
        .unwrap_or_else(|e| panic!("{e:?}"));
}

fn tree_is_drawn(transport: Transport) {
    let tcp = !matches!(transport, Transport::Unix);
    with_tree(transport, move |registrar, [calc, mid, leaf]| async move {
        let mut args = vec![
            "tree".to_owned(),
            "--registrar".to_owned(),
            registrar.clone(),
        ];
        if tcp {
            // Nothing lies beside a TCP address: the secret is given.
            args.extend(["--secret-file".to_owned(), secret_file("tree", SECRET)]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = trellis_cli(&args).await?;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        let shape: Vec<(String, String)> = stdout
            .lines()
            .skip(1)
            .map(|l| {
                let head = &l[..l.find('#').expect("an actor id")];
                let (branch, name) = head.rsplit_once(' ').unwrap_or(("", head));
                (branch.to_owned(), name.to_owned())
            })
            .collect();
        let expected: Vec<(String, String)> = [
            ("", "root"),
            ("├──", "calc"),
            ("└──", "mid"),
            ("    └──", "leaf"),
        ]
        .iter()
        .map(|(b, n)| ((*b).to_owned(), (*n).to_owned()))
        .collect();
        assert_eq!(shape, expected, "{stdout}");
        assert!(stdout.starts_with(&format!("registrar {registrar}: 4 actors\n")));
        for (name, pid) in [("calc", calc), ("mid", mid), ("leaf", leaf)] {
            let line = stdout
                .lines()
                .find(|l| l.contains(&format!("{name}#")))
                .unwrap();
            assert!(line.contains(&format!("pid {pid} ")), "{line}");
            assert!(line.contains(" up "), "{line}");
        }
        // `mid` serves `hold_with_child` and waits on nothing; the root waits on that call.
        let mid = stdout.lines().find(|l| l.contains("mid#")).unwrap();
        assert!(mid.contains("calls 1 in / 0 out"), "{mid}");
        let root = stdout.lines().find(|l| l.contains("root#")).unwrap();
        assert!(root.contains("calls 0 in / 1 out"), "{root}");
        Ok(())
    });
}

/// `trellis tree --json` prints one snapshot a script can parse; `--watch` draws the tree
/// again and again, in place, until Ctrl-C or SIGTERM (exit 130).
fn tree_as_json_and_watched(transport: Transport) {
    with_tree(transport, move |registrar, [calc, mid, leaf]| async move {
        let out = trellis_cli(&["tree", "--json", "--registrar", &registrar]).await?;
        assert!(out.status.success(), "{out:?}");
        let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(snapshot["registrar"], registrar.as_str());
        let actors = snapshot["actors"].as_array().unwrap();
        let mut names: Vec<&str> = actors.iter().map(|a| a["name"].as_str().unwrap()).collect();
        names.sort_unstable();
        assert_eq!(names, ["calc", "leaf", "mid", "root"]);
        for (name, pid) in [("calc", calc), ("mid", mid), ("leaf", leaf)] {
            let actor = actors.iter().find(|a| a["name"] == name).unwrap();
            assert_eq!(actor["info"]["pid"], pid, "{actor}");
            assert!(actor["uid"].is_string() && actor["addr"].is_string());
        }
        let mid = actors.iter().find(|a| a["name"] == "mid").unwrap();
        assert_eq!(mid["info"]["serving"], 1);

        let registrar = registrar.clone();
        trellis::threads::run_sync(move || {
            // Two frames drawn, each after clearing the screen.
            let (mut watching, seen) = watch_until(&registrar, "0.1", |seen| {
                seen.matches("\x1b[2J").count() >= 2
            });
            assert!(seen.contains("mid#"), "{seen}");
            signal(&watching, nix::sys::signal::Signal::SIGINT);
            let status = watching.wait().unwrap();
            assert_eq!(status.code(), Some(130));

            // SIGTERM while it sleeps between frames (30 s here) ends it as Ctrl-C does; it
            // used to be swallowed there, with no root running to hear it.
            let (mut watching, _) =
                watch_until(&registrar, "30", |seen| seen.contains("Ctrl-C to stop"));
            signal(&watching, nix::sys::signal::Signal::SIGTERM);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let status = loop {
                if let Some(status) = watching.try_wait().unwrap() {
                    break status;
                }
                if std::time::Instant::now() > deadline {
                    let _ = watching.kill();
                    panic!("`tree --watch` ignored SIGTERM");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            };
            assert_eq!(status.code(), Some(130));
        })
        .await?;
        Ok(())
    });
}

/// `trellis tree --watch SECS` against `registrar`, read until `enough` says so of what it
/// drew; the process and what it drew.
fn watch_until(
    registrar: &str,
    secs: &str,
    enough: impl Fn(&str) -> bool,
) -> (std::process::Child, String) {
    use std::io::Read;
    let mut watching = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["tree", "--watch", secs, "--registrar", registrar])
        .env_remove("TRELLIS_REGISTRAR")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = watching.stdout.take().unwrap();
    let (mut seen, mut buf) = (String::new(), [0u8; 4096]);
    while !enough(&seen) {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "it stopped drawing: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Kept open with the child, so that its next frame does not meet a closed pipe.
    watching.stdout = Some(stdout);
    (watching, seen)
}

fn signal(child: &std::process::Child, signal: nix::sys::signal::Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), signal).unwrap();
}

/// Every task of `scope` (a dump's scope as JSON), depth first: (name, waiting_on).
fn json_tasks(scope: &serde_json::Value, out: &mut Vec<(String, Option<String>)>) {
    for task in scope["tasks"].as_array().into_iter().flatten() {
        out.push((
            task["name"].as_str().unwrap().to_owned(),
            task["waiting_on"].as_str().map(str::to_owned),
        ));
        for child in task["children"].as_array().into_iter().flatten() {
            json_tasks(child, out);
        }
    }
    for child in scope["children"].as_array().into_iter().flatten() {
        json_tasks(child, out);
    }
}

/// `trellis dump` draws every actor's tasks as one tree, and `--json` gives the same to a
/// script: `mid` serves `hold_with_child`, asleep in it; the root's task waits on that call.
/// Nothing in the tree will wake by itself (the root waits on the command): it is stalled.
fn dump_is_drawn_and_parsed_as_json(transport: Transport) {
    with_tree(transport, move |registrar, _| async move {
        let out = trellis_cli(&["dump", "--registrar", &registrar]).await?;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.starts_with(&format!("registrar {registrar}: 4 actors\nactor root#")),
            "{stdout}"
        );
        let at = |needle: &str| {
            stdout
                .find(needle)
                .unwrap_or_else(|| panic!("{needle:?} in\n{stdout}"))
        };
        assert!(at("\n    actor mid#") < at("task serving `hold_with_child` for actor root#"));
        assert!(at("\n    actor mid#") < at("\n        actor leaf#"));
        assert!(
            stdout.contains("waiting on call `hold_with_child` in actor mid#"),
            "{stdout}"
        );
        assert!(
            stdout.ends_with(&format!("{}\n", trellis_actor::STALLED)),
            "{stdout}"
        );

        let out = trellis_cli(&["dump", "--json", "--registrar", &registrar]).await?;
        assert!(out.status.success(), "{out:?}");
        let snapshot: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let actors = snapshot["actors"].as_array().unwrap();
        assert_eq!(actors.len(), 4, "{snapshot:#}");
        let mid = actors.iter().find(|a| a["name"] == "mid").unwrap();
        assert_eq!(mid["dump"]["id"]["name"], "mid");
        let mut tasks = Vec::new();
        json_tasks(&mid["dump"]["root"], &mut tasks);
        let serving = tasks
            .iter()
            .find(|(name, _)| name.starts_with("serving `hold_with_child` for actor root#"))
            .unwrap_or_else(|| panic!("{tasks:?}"));
        assert_eq!(serving.1.as_deref(), Some("sleep_forever"), "{tasks:?}");
        assert_eq!(snapshot["deadlocks"], serde_json::json!([]), "{snapshot:#}");
        assert_eq!(snapshot["stalled"], true, "{snapshot:#}");
        Ok(())
    });
}

mod unix {
    #[test]
    fn dump_is_drawn_and_parsed_as_json() {
        super::dump_is_drawn_and_parsed_as_json(trellis_actor::Transport::Unix);
    }

    #[test]
    fn tree_as_json_and_watched() {
        super::tree_as_json_and_watched(trellis_actor::Transport::Unix);
    }

    #[test]
    fn tree_is_drawn() {
        super::tree_is_drawn(trellis_actor::Transport::Unix);
    }
}

mod tcp {
    #[test]
    fn tree_is_drawn() {
        super::tree_is_drawn(trellis_actor::Transport::tcp_loopback());
    }
}

#[test]
fn call_prints_the_result_as_json_and_errors_as_one_line() {
    with_tree(Transport::Unix, |registrar, _| async move {
        let r = ["--registrar", registrar.as_str()];
        let out = trellis_cli(&[&["call"][..], &r, &["calc", "add", "[40, 2]"]].concat()).await?;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout), "42\n");

        // The describing function every actor serves, by name.
        let out = trellis_cli(&[&["call"][..], &r, &["leaf", "trellis.info"]].concat()).await?;
        let info: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
        assert_eq!(info["id"]["name"], "leaf");

        // What an actor serves, by the names it registered them under.
        let out = trellis_cli(&[&["call"][..], &r, &["calc", "--list"]].concat()).await?;
        assert!(out.status.success(), "{out:?}");
        let listed = text(&out.stdout);
        assert!(listed.lines().any(|l| l == "run     add"), "{listed}");
        assert!(
            listed.lines().any(|l| l == "context trellis.terminal"),
            "{listed}"
        );

        // A remote failure: its error, exit 1.
        let out =
            trellis_cli(&[&["call"][..], &r, &["calc", "fails", r#"["bolts"]"#]].concat()).await?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(text(&out.stderr).contains("out of stock: bolts"), "{out:?}");

        // Refusals and usage errors: one line, exit 2.
        for (args, says) in [
            (vec!["calc", "nosuch", "[]"], "no function named `nosuch`"),
            (vec!["calc", "add", r#"["x"]"#], "bad arguments"),
            (vec!["nobody", "add", "[]"], "no actor named `nobody`"),
            (vec!["calc", "add", "{"], "not JSON"),
        ] {
            let out = trellis_cli(&[&["call"][..], &r, &args].concat()).await?;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
        Ok(())
    });
}

#[test]
fn no_registrar_is_one_line_and_status_2() {
    let dir = std::env::temp_dir().join(format!("trellis-cli-test-{}", std::process::id()));
    let missing = format!("unix:{}", dir.join("none.sock").display());
    for args in [
        vec!["tree", "--registrar", missing.as_str()],
        vec!["call", "--registrar", missing.as_str(), "a", "f"],
        vec!["tree"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(&args)
            .env_remove("TRELLIS_REGISTRAR")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("trellis: "), "{stderr}");
    }
}

/// The registrar comes from `TRELLIS_REGISTRAR` when no `--registrar` is given.
#[test]
fn the_registrar_comes_from_the_environment() {
    let missing = std::env::temp_dir().join(format!("trellis-cli-env-{}.sock", std::process::id()));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("tree")
        .env("TRELLIS_REGISTRAR", format!("unix:{}", missing.display()))
        .env("TRELLIS_SECRET", "a secret long enough to be one")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

/// `--version`, and arguments that are not UTF-8 are a usage error, not a crash.
#[test]
fn version_and_non_utf8_arguments() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("trellis "), "{out:?}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["call", "--registrar", "unix:/nowhere"])
        .arg(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(vec![0xff]))
        .arg("f")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(!text(&out.stderr).contains("panicked"), "{out:?}");
}

#[test]
fn every_command_has_help() {
    for args in [&["--help"][..], &["tree", "--help"], &["call", "--help"]] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(text(&out.stdout).contains("Usage"), "{args:?}");
    }
}

/// A TCP tree is closed to the command unless it proves the tree's secret: no secret, a wrong
/// one, or one in a file others may read is one line and status 2, and the tree is unaffected.
#[test]
fn a_tree_over_tcp_refuses_a_command_without_its_secret() {
    with_tree(Transport::tcp_loopback(), |registrar, _| async move {
        let wrong = secret_file("wrong", b"not the tree's secret at all");
        let open = secret_file("open", SECRET);
        std::fs::set_permissions(&open, std::os::unix::fs::PermissionsExt::from_mode(0o644))
            .map_err(trellis::Error::new)?;
        for (extra, says) in [
            (vec![], "no secret for the tree"),
            (vec!["--secret-file", wrong.as_str()], "not authorized"),
            (
                vec!["--secret-file", open.as_str()],
                "accessible to other users",
            ),
        ] {
            let args = [&["tree", "--registrar", registrar.as_str()][..], &extra].concat();
            let out = trellis_cli(&args).await?;
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
            assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
            assert!(stderr.contains(says), "{args:?}: {stderr}");
        }
        // The tree still answers the command that holds its secret.
        let good = secret_file("good", SECRET);
        let out = trellis_cli(
            &["call", "--registrar", &registrar, "--secret-file", &good]
                .iter()
                .copied()
                .chain(["calc", "add", "[1, 2]"])
                .collect::<Vec<_>>(),
        )
        .await?;
        assert_eq!(text(&out.stdout), "3\n", "{out:?}");
        Ok(())
    });
}

/// A tree over TLS: the command draws it given a certificate the tree's CA issued
/// (`--tls-dir`), and without one it is one line and status 2.
#[test]
fn a_tree_over_tls_needs_a_certificate() {
    let dir = std::env::temp_dir().join(format!("trellis-cli-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    trellis_actor::dev::DevCa::new("cli test tree")
        .issue(&["127.0.0.1"])
        .write_to(&dir)
        .unwrap();
    let config = with_tls(plain_config(), &dir).transport(Transport::tcp_loopback());
    let tls_dir = dir.display().to_string();
    with_tree_configured(config, move |registrar, _| async move {
        let secret = secret_file("tls", SECRET);
        let args = ["tree", "--registrar", &registrar, "--secret-file", &secret];
        let out = trellis_cli(&args).await?;
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_eq!(text(&out.stderr).lines().count(), 1, "{out:?}");
        let out = trellis_cli(&[&args[..], &["--tls-dir", &tls_dir]].concat()).await?;
        assert!(out.status.success(), "{out:?}");
        assert!(
            text(&out.stdout).starts_with(&format!("registrar {registrar}: 4 actors")),
            "{out:?}"
        );
        Ok(())
    });
    let _ = std::fs::remove_dir_all(&dir);
}

/// A tree that keeps its names in etcd: `tree` and `call` read them there.
#[test]
fn tree_and_call_read_the_names_in_etcd() {
    if !etcd_server::have_etcd() {
        return;
    }
    let server = etcd_server::EtcdServer::start("cli");
    let endpoint = server.endpoint();
    let config = plain_config()
        .etcd(Etcd::new([endpoint.clone()]).prefix(ETCD_PREFIX))
        .child_env(ETCD, &endpoint);
    with_tree_configured(config, move |_, [calc, _, _]| async move {
        let secret = secret_file("etcd", SECRET);
        let from_etcd = [
            "--etcd",
            &endpoint,
            "--etcd-prefix",
            ETCD_PREFIX,
            "--secret-file",
            &secret,
        ];
        let tree: Vec<&str> = ["tree"].iter().chain(&from_etcd).copied().collect();
        let out = trellis_cli(&tree).await?;
        let stdout = text(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(
            stdout.starts_with(&format!("etcd {endpoint} {ETCD_PREFIX}: 4 actors\n")),
            "{stdout}"
        );
        let line = stdout.lines().find(|l| l.contains("calc#")).unwrap();
        assert!(line.contains(&format!("pid {calc} ")), "{line}");
        let call: Vec<&str> = ["call"]
            .iter()
            .chain(&from_etcd)
            .chain(&["calc", "add", "[40, 2]"])
            .copied()
            .collect();
        let out = trellis_cli(&call).await?;
        assert!(out.status.success(), "{out:?}");
        assert_eq!(text(&out.stdout).trim(), "42");
        Ok(())
    });
    // With etcd gone, the command says so in one line.
    drop(server);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_trellis"))
        .args(["tree", "--etcd", "http://127.0.0.1:1", "--secret-file"])
        .arg(secret_file("etcd-gone", SECRET))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("cannot reach etcd at http://127.0.0.1:1"),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}
