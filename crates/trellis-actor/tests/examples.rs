//! The examples with a fixed command line, run as a user runs them (cargo builds them before
//! the tests).

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("the test executable");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile.join("examples").join(name);
    if !path.exists() {
        // `cargo test --test examples` alone does not build examples; `cargo test` does.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "trellis-actor", "--example", name])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building example {name} failed");
    }
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// The flagship demo: every act tells its story, the failure arrives as its real type, the
/// crashed relay is restarted and its stream resumed, the supervisor that gives up shows every
/// cause, and every process is reaped.
#[test]
fn market_demo_tells_its_story_and_leaves_nothing() {
    let output = Command::new(example("market"))
        // As many developers keep it: the remote backtrace is in the tree, folded.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run the market example");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "watch-acme (pid",
        "watch-globex (pid",
        "watch-initech (pid",
        "act 1 done: 4 processes reaped, 0 left",
        "watch-initech#",
        "call cancelled",
        "failed with BadTick: implausible quote",
        "it is a BadTick again on this side",
        "act 2 done: 4 processes torn down and reaped, 0 left",
        "died unexpectedly: exit status: 3",
        "and restarted relay-acme as pid",
        "none lost or repeated; 1 restart",
        "supervisor `market` gave up: 3 restarts within 5s (at most 2 allowed) (3 errors)",
        "act 4 done: 4 processes reaped, 0 left",
        "Remote backtrace:",
        "market::watch::",
        "frames hidden (runtime and std; RUST_BACKTRACE=full shows them)",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The runtime's frames are folded away.
    assert!(!text.contains("tokio::runtime"), "{text}");
}
