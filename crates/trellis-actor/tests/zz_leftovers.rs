//! Runs after the other test binaries of this crate (cargo runs them one at a time, in name
//! order): no actor process may still run, and no socket directory of a process that is gone
//! may remain.

use std::path::PathBuf;

/// Whether `pid` runs (zombies do not).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(") ")
                .and_then(|(_, rest)| rest.chars().next()),
            Some('Z' | 'X')
        )
    })
}

#[test]
fn no_actor_process_is_left() {
    let me = std::process::id();
    let mut left = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me || !runs(pid) {
            continue;
        }
        // Another user's processes are unreadable: they are not ours.
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var.starts_with(b"TRELLIS_ACTOR_UID="))
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            left.push((pid, String::from_utf8_lossy(&cmdline).replace('\0', " ")));
        }
    }
    assert!(left.is_empty(), "actor processes still running: {left:?}");
}

#[test]
fn no_stale_socket_directory_is_left() {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|p| p.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let stale: Vec<_> = std::fs::read_dir(&base)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let pid = name
                .strip_prefix("trellis-")?
                .split_once('-')?
                .0
                .parse()
                .ok()?;
            (!runs(pid)).then_some(name)
        })
        .collect();
    assert!(
        stale.is_empty(),
        "socket directories of dead actors in {base:?}: {stale:?}"
    );
}
