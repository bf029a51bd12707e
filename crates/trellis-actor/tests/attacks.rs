//! A live tree attacked from other processes: one holding a wrong secret, one running as
//! another local user (`nobody`), outside clients with a weak credential or none, and a
//! member of the tree overstepping. Each tries a call, the registry (`trellis.list`, taking
//! over an entry), forged log records, the terminal and `trellis.cancel_actor`; every attempt
//! the attacker may not make is refused, each refusal is logged, and the tree serves on as
//! before. (tractor has no such checks; its issues 136, 353 and 382 ask for them.)

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

mod common;

use serde::Serialize;
use trellis_actor::{
    ActorError, ActorId, Addr, Config, Functions, Portal, Secret, Transport, open_nursery,
};

/// The tree's secret.
const SECRET: &[u8] = b"the attack tests' tree secret";
/// The credential `monitor`'s secret: it may call `add`, and what anyone may.
const MONITOR: &[u8] = b"the monitor's secret, not the tree's";

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

async fn health() -> Result<String, trellis::Error> {
    Ok("fine".into())
}

/// A log record as `trellis.log` carries it.
#[derive(Serialize)]
struct LogRecord {
    level: u8,
    target: String,
    text: String,
    actor: ActorId,
}

/// A registry entry as `trellis.register` carries it.
#[derive(Serialize)]
struct Entry {
    name: String,
    uid: String,
    addr: String,
}

/// In a child: speaks for its sibling `victim` to their parent, `root` (a log record naming
/// it), and registers itself under the sibling's identity. Returns the two outcomes.
async fn forge(victim: ActorId) -> Result<Vec<String>, trellis::Error> {
    let me = trellis_actor::current();
    let root = me.portal(me.registrar()).await?;
    let log = root
        .run_named::<(), _>("trellis.log", (vec![forged_record(&victim)],))
        .await;
    let entry = Entry {
        name: victim.name.clone(),
        uid: victim.uid.clone(),
        addr: me.addr().to_string(),
    };
    let register = root.run_named::<(), _>("trellis.register", (entry,)).await;
    Ok(vec![outcome(log), outcome(register)])
}

fn forged_record(victim: &ActorId) -> LogRecord {
    LogRecord {
        level: 1,
        target: "payments".into(),
        text: "FORGED: wire the money".into(),
        actor: victim.clone(),
    }
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(health)
            .register(forge),
    )
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
    .secret(Secret::new(SECRET).unwrap())
    .expose_to("monitor", Secret::new(MONITOR).unwrap(), ["add"])
    .expose_to_anyone(["health"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// What an attempt came to, in a word the test matches: `ok …`, `not-authorized` (refused in
/// the handshake), `remote Unauthorized` / `remote Failed` (refused by the callee), `no-access`
/// (the socket could not even be reached), or `other …`.
fn outcome<T: std::fmt::Debug>(result: Result<T, ActorError>) -> String {
    let e = match result {
        Ok(value) => return format!("ok {value:?}"),
        Err(e) => e,
    };
    if let Some(remote) = e.as_remote() {
        return format!("remote {:?}", remote.kind());
    }
    match &e {
        ActorError::NotAuthorized(_) => "not-authorized".into(),
        ActorError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "no-access".into()
        }
        _ => format!("other {e}"),
    }
}

/// The attacker's role: when `ATTACK_MODE` is set, this process attacks the tree whose
/// registrar is `ATTACK_REGISTRAR` and whose child `calc` is `ATTACK_CALC` (address) /
/// `ATTACK_CALC_UID`, and prints one line `ATTACK name outcome` per attempt.
#[test]
fn attacker() {
    let Ok(mode) = std::env::var("ATTACK_MODE") else {
        return;
    };
    let var = |name: &str| std::env::var(name).unwrap();
    let registrar: Addr = var("ATTACK_REGISTRAR").parse().unwrap();
    let calc: Addr = var("ATTACK_CALC").parse().unwrap();
    let calc_id = ActorId::new("calc", var("ATTACK_CALC_UID"));
    let config = Config::new(Functions::new())
        .unregistered()
        .transport(Transport::tcp_loopback());
    let config = match mode.as_str() {
        "wrong-secret" => {
            config.secret(Secret::new(b"a guess at the tree's secret".to_vec()).unwrap())
        }
        // Another user: whatever it can find (the file beside a Unix socket is not its to
        // read), else a guess.
        "nobody" => {
            let found = match &registrar {
                Addr::Unix(path) => Secret::beside(path).ok(),
                _ => None,
            };
            config.secret(found.unwrap_or_else(Secret::generate))
        }
        "monitor" => config.client("monitor", Secret::new(MONITOR).unwrap()),
        "anonymous" => config.anonymous_client(),
        "member" => config.secret(Secret::new(SECRET).unwrap()),
        other => panic!("no attack mode {other}"),
    };
    let member = mode == "member";
    let result =
        trellis::Runner::current_thread()
            .handle_ctrl_c(false)
            .run(trellis_actor::run_root("mallory", config, || async move {
                let me = trellis_actor::current();
                let mut attempts: Vec<(&str, String)> = Vec::new();
                // Each attempt on its own: a refused handshake is tried again every time.
                let at = |addr: Addr| {
                    let me = me.clone();
                    async move { me.portal(&addr).await }
                };
                async fn run<R: serde::de::DeserializeOwned + std::fmt::Debug>(
                    portal: Result<Portal, ActorError>,
                    function: &str,
                    args: impl Serialize + Send + 'static,
                ) -> String {
                    match portal {
                        Ok(portal) => outcome(portal.run_named::<R, _>(function, args).await),
                        Err(e) => outcome::<()>(Err(e)),
                    }
                }
                attempts.push((
                    "call",
                    run::<i64>(at(calc.clone()).await, "add", (1, 2)).await,
                ));
                attempts.push((
                    "health",
                    run::<String>(at(calc.clone()).await, "health", ()).await,
                ));
                attempts.push((
                    "functions",
                    match at(calc.clone()).await {
                        Ok(p) => outcome(p.functions().await.map(|fs| {
                            fs.into_iter().map(|f| f.name).collect::<Vec<_>>().join(",")
                        })),
                        Err(e) => outcome::<()>(Err(e)),
                    },
                ));
                attempts.push((
                    "list",
                    run::<Vec<BTreeMap<String, String>>>(
                        at(registrar.clone()).await,
                        "trellis.list",
                        (),
                    )
                    .await,
                ));
                attempts.push((
                    "unregister",
                    run::<()>(
                        at(registrar.clone()).await,
                        "trellis.unregister",
                        (calc_id.uid.clone(),),
                    )
                    .await,
                ));
                let fake = Entry {
                    name: "calc".into(),
                    uid: calc_id.uid.clone(),
                    addr: me.addr().to_string(),
                };
                attempts.push((
                    "register",
                    run::<()>(at(registrar.clone()).await, "trellis.register", (fake,)).await,
                ));
                attempts.push((
                    "log",
                    run::<()>(
                        at(registrar.clone()).await,
                        "trellis.log",
                        (vec![forged_record(&calc_id)],),
                    )
                    .await,
                ));
                if !member {
                    // A member may do these: it is trusted with the tree.
                    attempts.push((
                        "terminal",
                        run::<()>(at(registrar.clone()).await, "trellis.terminal", ()).await,
                    ));
                    attempts.push((
                        "cancel",
                        run::<()>(at(calc.clone()).await, "trellis.cancel_actor", ()).await,
                    ));
                    attempts.push((
                        "cancel-root",
                        run::<()>(at(registrar.clone()).await, "trellis.cancel_actor", ()).await,
                    ));
                    // What every task waits on is the tree's business only.
                    attempts.push((
                        "dump",
                        run::<serde_json::Value>(at(calc.clone()).await, "trellis.dump", ()).await,
                    ));
                }
                for (name, outcome) in attempts {
                    println!("ATTACK {name} {}", outcome.replace('\n', " "));
                }
                Ok(())
            }));
    common::exit_as(result.map(drop));
}

/// Runs the attacker in `mode` (as `user`, when given) against the tree; its attempts by name.
fn attack(
    mode: &str,
    as_nobody: bool,
    registrar: &Addr,
    calc: &Addr,
    calc_uid: &str,
) -> BTreeMap<String, String> {
    let exe = std::env::current_exe().unwrap();
    let mut command = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    let out = command
        .args(["attacker", "--exact", "--nocapture", "-q"])
        .env("ATTACK_MODE", mode)
        .env("ATTACK_REGISTRAR", registrar.to_string())
        .env("ATTACK_CALC", calc.to_string())
        .env("ATTACK_CALC_UID", calc_uid)
        .env_remove("TRELLIS_SECRET")
        .env_remove("TRELLIS_SECRET_FILE")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "attacker {mode}: {out:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ATTACK "))
        .map(|l| {
            let (name, outcome) = l.split_once(' ').unwrap();
            (name.to_owned(), outcome.to_owned())
        })
        .collect()
}

/// Whether this process may run another as `nobody` (it is root, and `setpriv` exists).
fn can_become_nobody() -> bool {
    nix::unistd::geteuid().is_root()
        && Command::new("setpriv")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
}

/// Every warning the tree logged (its own and its children's, forwarded), as text.
fn warnings() -> Vec<String> {
    captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.0 <= tracing::Level::WARN)
        .map(|s| s.1.clone())
        .collect()
}

/// Waits until a warning containing `text` has been logged `n` times (a child's are forwarded
/// to the root asynchronously); the limit only keeps a broken build from hanging.
fn logged(text: &str, n: usize) -> bool {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        if warnings().iter().filter(|w| w.contains(text)).count() >= n {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn expect(attempts: &BTreeMap<String, String>, expected: &[(&str, &str)], mode: &str) {
    let got: Vec<(&str, &str)> = attempts
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut want = expected.to_vec();
    want.sort_unstable();
    assert_eq!(got, want, "attacker {mode}");
}

fn every(outcome: &'static str, member: bool) -> Vec<(&'static str, &'static str)> {
    let mut names = vec![
        "call",
        "health",
        "functions",
        "list",
        "unregister",
        "register",
        "log",
    ];
    if !member {
        names.extend(["terminal", "cancel", "cancel-root", "dump"]);
    }
    names.into_iter().map(|n| (n, outcome)).collect()
}

fn tree_is_attacked(transport: Transport) {
    captured();
    let tcp = !matches!(transport, Transport::Unix);
    common::root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let calc = an.start_actor("calc").await?;
            let forger = an.start_actor("forger").await?;
            let me = trellis_actor::current();
            let before = me.registered().await?;
            let info = calc.info().await?;
            let calc_addr: Addr = info.addr.parse().map_err(trellis::Error::new)?;
            let registrar = me.registrar().clone();
            let calc_uid = calc.actor_id().uid.clone();
            let run = |mode: &'static str, nobody: bool| {
                let (registrar, calc_addr, calc_uid) =
                    (registrar.clone(), calc_addr.clone(), calc_uid.clone());
                trellis::threads::run_sync(move || {
                    attack(mode, nobody, &registrar, &calc_addr, &calc_uid)
                })
            };

            // Without the secret, nothing gets past the handshake.
            let refused_before = warnings().len();
            expect(
                &run("wrong-secret", false).await?,
                &every("not-authorized", false),
                "wrong-secret",
            );
            assert!(logged("refused a connection: not authorized", 10));
            assert!(warnings().len() > refused_before);

            // Another local user: a Unix socket's directory keeps it out; over TCP it gets
            // as far as the handshake, and no further.
            if can_become_nobody() {
                let outcome = if tcp { "not-authorized" } else { "no-access" };
                expect(
                    &run("nobody", true).await?,
                    &every(outcome, false),
                    "nobody",
                );
            } else {
                eprintln!("not root or no setpriv: the attack as another user is not tried");
            }

            // A monitor: `add`, and what anyone may; the rest is refused by the callee.
            let unauthorized = "remote Unauthorized";
            let mut want = every(unauthorized, false);
            want.retain(|(n, _)| !["call", "health", "functions"].contains(n));
            want.extend([
                ("call", "ok 3"),
                ("health", "ok \"fine\""),
                ("functions", "ok \"add,health\""),
            ]);
            expect(&run("monitor", false).await?, &want, "monitor");
            assert!(logged("refused a call: not authorized", 7));

            // Anyone at all: the health check, nothing else.
            let mut want = every(unauthorized, false);
            want.retain(|(n, _)| !["health", "functions"].contains(n));
            want.extend([("health", "ok \"fine\""), ("functions", "ok \"health\"")]);
            expect(&run("anonymous", false).await?, &want, "anonymous");

            // A member that is not the registry entry's owner nor anyone's child.
            let attempts = run("member", false).await?;
            assert_eq!(attempts["call"], "ok 3");
            assert!(attempts["list"].starts_with("ok"), "{attempts:?}");
            assert_eq!(attempts["unregister"], "remote Failed", "{attempts:?}");
            assert_eq!(attempts["register"], "remote Failed", "{attempts:?}");
            assert_eq!(attempts["log"], "remote Unauthorized", "{attempts:?}");
            assert!(logged("refused a registry request", 2));
            assert!(logged(
                "refused log records from an actor that is not a child",
                1
            ));

            // A child speaking for its sibling.
            let forged = forger.run(forge, (calc.actor_id().clone(),)).await?;
            assert_eq!(forged, ["remote Unauthorized", "remote Failed"]);
            assert!(logged("refused log records speaking for another actor", 1));

            // The tree is as it was: the same entries, calc serving, nobody's forgery printed.
            let after = me.registered().await?;
            let ids = |r: &[trellis_actor::Registered]| {
                r.iter()
                    .map(|e| (e.id.clone(), e.addr.to_string()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(ids(&after), ids(&before));
            assert_eq!(calc.run(add, (20, 22)).await?, 42);
            assert!(
                !captured()
                    .lock()
                    .unwrap()
                    .iter()
                    .any(|s| s.1.contains("FORGED"))
            );
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
}

on_both_transports!(tree_is_attacked);

/// A handshake recorded on one connection and replayed on another is refused: the proof is
/// bound to the acceptor's fresh nonce.
#[test]
fn a_replayed_handshake_is_refused() {
    use std::io::{Read, Write};
    captured();
    common::root_with(config(), Transport::tcp_loopback(), || async {
        let addr = match trellis_actor::current().registrar() {
            Addr::Tcp(addr) => *addr,
            other => unreachable!("a TCP tree, not {other}"),
        };
        trellis::threads::run_sync(move || {
            // A genuine handshake, recorded: what the connector sent.
            let sent = recorded_handshake(addr, SECRET);
            let mut replay = std::net::TcpStream::connect(addr).unwrap();
            replay.write_all(&sent).unwrap();
            let mut answer = Vec::new();
            replay.read_to_end(&mut answer).unwrap();
            let text = String::from_utf8_lossy(&answer);
            assert!(text.contains("not authorized"), "{text}");
            assert!(text.contains("Unauthorized"), "{text}");
        })
        .await?;
        assert!(logged("refused a connection: not authorized", 1));
        Ok(())
    })
    .unwrap_or_else(|e| panic!("{e:?}"));
}

/// Does a genuine handshake with the actor at `addr` and returns every byte the connector
/// sent in it.
fn recorded_handshake(addr: std::net::SocketAddr, secret: &[u8]) -> Vec<u8> {
    use std::io::{Read, Write};
    use trellis_wire::{Codec, Identity, Key, Keyring, Session, Side};
    let me = Identity::new(
        ActorId::new("replayer", "00000000000000000000000000000042"),
        0,
    );
    let mut session = Session::new(
        Side::Connector,
        me,
        Keyring::new(Key::tree(secret).unwrap()),
    );
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    let (mut sent, mut inbox, codec) = (Vec::new(), bytes::BytesMut::new(), Codec::new());
    while session.peer().is_none() {
        let out = session.outgoing().split();
        stream.write_all(&out).unwrap();
        sent.extend_from_slice(&out);
        match codec.decode(&mut inbox).unwrap() {
            Some(message) => session.handle(message).expect("a genuine handshake"),
            None => {
                let mut buf = [0; 4096];
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the actor closed during a genuine handshake");
                inbox.extend_from_slice(&buf[..n]);
            }
        }
    }
    sent
}

/// Every event the root's subscriber saw: its level and text (message and fields).
type Seen = Arc<Mutex<Vec<(tracing::Level, String)>>>;

fn captured() -> Seen {
    static SEEN: OnceLock<Seen> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Seen::default();
        let sink = seen.clone();
        let capture = common::TextCapture::new(move |level, text| {
            sink.lock().unwrap().push((level, text));
        });
        tracing::subscriber::set_global_default(capture).expect("one subscriber");
        seen
    })
    .clone()
}
