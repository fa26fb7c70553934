//! Progress as people and scripts see it: the real `stratum install to-filesystem --json`
//! (a pull and a checkout) with stderr on a pseudo-terminal draws live bars there, and with
//! stderr on a pipe writes one plain line per phase; stdout carries only the JSON either way.

use crate::common;

use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;

/// `stratum install to-filesystem --json` of the source repository's `os/x` into `sysroot`.
fn install_json(env: &Env, sysroot: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_stratum"));
    c.args([
        "install",
        "to-filesystem",
        "--json",
        "--ref",
        "os/x",
        "--repo",
    ])
    .arg(&env.src)
    .arg(sysroot)
    .stdin(Stdio::null());
    c
}

/// Runs `cmd` with stderr on a new pseudo-terminal (100 columns) and stdout on a pipe; its
/// output, with `stderr` holding what the terminal received.
fn on_terminal(mut cmd: Command) -> Output {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 100,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    let child = cmd
        .env("TERM", "xterm")
        .stdout(Stdio::piped())
        .stderr(Stdio::from(pty.slave))
        .spawn()
        .unwrap();
    // The command holds our copy of the terminal's slave side: closed, the master reads EIO
    // once the child has exited.
    drop(cmd);
    let mut master = File::from(pty.master);
    let reader = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                // EIO: no slave left open.
                Err(_) => break,
            }
        }
        seen
    });
    let mut out = child.wait_with_output().unwrap();
    out.stderr = reader.join().unwrap();
    out
}

/// The JSON on stdout of a successful install: it parses, and names the commit installed.
fn check_json(out: &Output, commit: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {stdout:?}"));
    assert_eq!(v["commit"], commit, "{stdout}");
}

#[test]
fn progress_is_drawn_on_a_terminal_and_plain_lines_otherwise() {
    let env = Env::new();
    let commit = env.compose_fake_os("1", &[], &[]);
    let src = env.src.canonicalize().unwrap();
    let pull_line = format!("Copying os/x from {}: ", src.display());
    let checkout_line = format!("Checking out {commit}: done in ");

    // Not a terminal: exactly one plain line per phase, nothing drawn.
    let out = install_json(&env, &env.dir.path().join("plain"))
        .output()
        .unwrap();
    let stderr = ok_stderr(out.clone());
    check_json(&out, &commit);
    assert!(
        !stderr.contains('\r') && !stderr.contains('\x1b'),
        "terminal control in plain output: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    for want in [&pull_line, &checkout_line] {
        let n = lines
            .iter()
            .filter(|l| l.starts_with(want.as_str()))
            .count();
        assert_eq!(n, 1, "{want:?} lines: {stderr}");
    }
    let pulled = lines.iter().find(|l| l.starts_with(&pull_line)).unwrap();
    // A local pull imports: libostree's count of the objects imported.
    assert!(
        pulled.contains(" objects imported") && pulled.ends_with(" s"),
        "{pulled}"
    );
    assert!(
        !stderr.contains("ETA"),
        "a bar's text in plain output: {stderr}"
    );

    // A terminal: live bars (escape sequences, a rate) on stderr, then the same summary
    // lines; stdout still carries nothing but the JSON.
    let out = on_terminal(install_json(&env, &env.dir.path().join("tty")));
    let seen = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stratum failed: {seen}");
    check_json(&out, &commit);
    assert!(seen.contains("\x1b["), "no bar drawn: {seen:?}");
    // The pull's bar: objects, their rate, the time left.
    assert!(
        seen.contains(" objects, ") && seen.contains("/s, ETA "),
        "{seen:?}"
    );
    for want in [&pull_line, &checkout_line] {
        assert!(seen.contains(want.as_str()), "{want:?} missing: {seen:?}");
    }
}
