//! Running `boot-complete`'s scripts: the health checks, required (all must pass) and wanted
//! (failures only warn), and the hooks run after the verdict; [`scripts`](super::scripts)
//! says which they are and their order. Each runs with a timeout.
//!
//! A script runs in its own process group with stdout and stderr on one pipe. A thread drains
//! the pipe while it runs, keeping only the last [`TAIL`] bytes: a script that writes more
//! than a pipe holds would otherwise block and be reported as timed out. When the script
//! exits, or its time is up, the whole group is killed, so nothing it started outlives it and
//! no leftover process holding the pipe open keeps the runner waiting. Output still open after
//! that (a process that left the group with `setsid`) is waited for only until the timeout.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::scripts::{self, Script, Set};

/// Bytes of a script's output (stdout and stderr together) kept for its report.
const TAIL: usize = 4096;

/// How long to wait for the end of the output after the script's group is killed, when the
/// timeout has already passed.
const GRACE: Duration = Duration::from_secs(1);

/// How one script ran.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ScriptRun {
    /// Its file name.
    pub name: String,
    pub path: PathBuf,
    pub passed: bool,
    /// What went wrong, or the script's last line of output.
    pub detail: String,
    pub millis: u128,
}

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    #[serde(flatten)]
    pub run: ScriptRun,
    pub required: bool,
}

/// Runs the required, then the wanted checks of the OS whose root is `root`.
pub fn run_checks(root: &Path, timeout: Duration) -> Result<Vec<CheckResult>> {
    let mut out = Vec::new();
    for (set, required) in [(Set::Required, true), (Set::Wanted, false)] {
        for s in scripts::find(root, set)? {
            out.push(CheckResult {
                run: run_one(&s, timeout),
                required,
            });
        }
    }
    Ok(out)
}

/// Runs the hooks of `set` ([`Set::Green`] or [`Set::Red`]) of the OS whose root is `root`.
pub fn run_hooks(root: &Path, set: Set, timeout: Duration) -> Result<Vec<ScriptRun>> {
    Ok(scripts::find(root, set)?
        .iter()
        .map(|s| run_one(s, timeout))
        .collect())
}

fn run_one(script: &Script, timeout: Duration) -> ScriptRun {
    let start = Instant::now();
    let (passed, detail) =
        run_script(script, start, timeout).unwrap_or_else(|e| (false, format!("{e:#}")));
    ScriptRun {
        name: script.name.clone(),
        path: script.path.clone(),
        passed,
        detail,
        millis: start.elapsed().as_millis(),
    }
}

/// Runs one script until it exits or its time is up: whether it passed, and the detail to
/// report.
fn run_script(script: &Script, start: Instant, timeout: Duration) -> Result<(bool, String)> {
    let deadline = start + timeout;
    let (read, write) = nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe")?;
    let output = drain(read)?;
    let mut child = {
        let mut cmd = script.command();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::from(
                write.try_clone().context("duplicating the pipe")?,
            ))
            .stderr(Stdio::from(write))
            .process_group(0);
        cmd.spawn()
            .with_context(|| format!("starting {}", script.path.display()))?
        // `cmd` holds the runner's copies of the pipe's write end: dropping it here lets the
        // pipe end when the script's group has closed it.
    };
    // The script leads its own group (`process_group(0)`); ids fit (pid_max is at most 2^22).
    let group = Pid::from_raw(child.id() as i32);
    let timed_out = loop {
        if exited(group) {
            break false;
        }
        if Instant::now() >= deadline {
            break true;
        }
        // Scripts are short programs; a coarse poll keeps this simple and cheap.
        std::thread::sleep(Duration::from_millis(20));
    };
    // The script is not reaped yet, so its id still names its group and cannot have been reused
    // by another process. An error only means that nothing is left to kill.
    let _ = killpg(group, Signal::SIGKILL);
    let status = child.wait().context("waiting for the script")?;
    let last = last_line(&output.wait_closed(deadline.max(Instant::now() + GRACE)));
    if timed_out {
        let mut detail = format!("timed out after {} s", timeout.as_secs());
        if !last.is_empty() {
            detail += &format!("; last output: {last}");
        }
        return Ok((false, detail));
    }
    if status.success() {
        Ok((true, last))
    } else {
        Ok((false, format!("{status}: {last}")))
    }
}

/// Whether the script has exited, without reaping it (`WNOWAIT`), so that its process id and
/// with it its process group id stay reserved until the group is killed.
fn exited(pid: Pid) -> bool {
    let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
    // An error other than EINTR (none is expected for our own child) ends the wait; the
    // `wait` that follows reports it.
    !matches!(
        waitid(Id::Pid(pid), flags),
        Ok(WaitStatus::StillAlive) | Err(Errno::EINTR)
    )
}

/// The end of a script's output, filled by the draining thread.
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Every writer has closed the pipe (or reading it failed).
    closed: bool,
}

/// A script's output as a thread drains it.
struct Output(Arc<(Mutex<Tail>, Condvar)>);

fn lock(m: &Mutex<Tail>) -> MutexGuard<'_, Tail> {
    // The draining thread cannot panic while holding the lock; a poisoned tail is still valid.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Starts a thread that reads `pipe` to its end, keeping the last [`TAIL`] bytes.
fn drain(pipe: OwnedFd) -> Result<Output> {
    let shared = Arc::new((Mutex::new(Tail::default()), Condvar::new()));
    let theirs = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("health-output".into())
        .spawn(move || {
            let (tail, done) = &*theirs;
            let mut pipe = std::fs::File::from(pipe);
            let mut buf = [0u8; 8192];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        let mut t = lock(tail);
                        t.bytes.extend_from_slice(&buf[..n]);
                        let excess = t.bytes.len().saturating_sub(TAIL);
                        t.bytes.drain(..excess);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            lock(tail).closed = true;
            done.notify_all();
        })
        .context("starting a thread to read the script's output")?;
    Ok(Output(shared))
}

impl Output {
    /// The kept output once the pipe is closed, or what there is at `until`. A thread still
    /// reading then is left to finish on its own when the last writer goes away.
    fn wait_closed(&self, until: Instant) -> Vec<u8> {
        let (tail, done) = &*self.0;
        let mut t = lock(tail);
        while !t.closed {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            t = done
                .wait_timeout(t, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        t.bytes.clone()
    }
}

/// The last non-empty line of `output`.
fn last_line(output: &[u8]) -> String {
    String::from_utf8_lossy(output)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn required_and_wanted_checks_with_timeout() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("etc/stratum/health.d");
        script(&base.join("required.d"), "10-ok", "echo fine");
        script(
            &base.join("required.d"),
            "20-bad",
            "echo disk full >&2; exit 3",
        );
        script(&base.join("wanted.d"), "slow", "sleep 5");
        std::fs::write(base.join("required.d/README"), "not executable").unwrap();
        let r = run_checks(d.path(), Duration::from_millis(300)).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].run.passed && r[0].required && r[0].run.detail == "fine");
        assert!(
            !r[1].run.passed && r[1].run.detail.contains("disk full"),
            "{:?}",
            r[1]
        );
        assert!(!r[2].run.passed && !r[2].required && r[2].run.detail.contains("timed out"));
    }

    /// Whether process `pid` has exited (or is not a `sleep` any more: its id was reused).
    fn gone(pid: &str) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        !cmdline.starts_with(b"sleep")
    }

    #[test]
    fn output_larger_than_a_pipe_is_drained() {
        let d = tempfile::tempdir().unwrap();
        let req = d.path().join("etc/stratum/health.d/required.d");
        // About 230 KB, several times what a pipe holds.
        script(&req, "10-chatty", "seq 40000\necho all good");
        script(
            &req,
            "20-chatty-bad",
            "seq 40000\necho disk full >&2\nexit 3",
        );
        let r = run_checks(d.path(), Duration::from_secs(10)).unwrap();
        assert!(
            r[0].run.passed && r[0].run.detail == "all good",
            "{:?}",
            r[0]
        );
        assert!(
            !r[1].run.passed && r[1].run.detail == "exit status: 3: disk full",
            "{:?}",
            r[1]
        );
    }

    #[test]
    fn leftover_processes_are_killed() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("etc/stratum/health.d");
        let pids = d.path().display();
        // Exits at once, leaving a process that holds the output pipe open.
        script(
            &base.join("required.d"),
            "10-leaves-one",
            &format!("sleep 20 &\necho $! > {pids}/a\necho started"),
        );
        // Times out with a child of its own.
        script(
            &base.join("wanted.d"),
            "20-slow-family",
            &format!("sleep 20 &\necho $! > {pids}/b\necho waiting\nsleep 20"),
        );
        let timeout = Duration::from_secs(5);
        let r = run_checks(d.path(), timeout).unwrap();
        assert!(
            r[0].run.passed && r[0].run.detail == "started",
            "{:?}",
            r[0]
        );
        assert!(r[0].run.millis < timeout.as_millis(), "{:?}", r[0]);
        assert_eq!(r[1].run.detail, "timed out after 5 s; last output: waiting");
        // The output pipe reached its end, so every process holding it has exited.
        for f in ["a", "b"] {
            let pid = std::fs::read_to_string(d.path().join(f)).unwrap();
            assert!(gone(&pid), "{f}: {pid} still runs");
        }
    }

    #[test]
    fn a_process_outside_the_group_delays_only_until_the_timeout() {
        let d = tempfile::tempdir().unwrap();
        let pidfile = d.path().join("escaped");
        script(
            &d.path().join("etc/stratum/health.d/required.d"),
            "10-escapes",
            // setsid(1) does not fork in a background job (not a group leader): `$!` is it.
            &format!(
                "setsid sleep 20 &\necho $! > {}\necho started",
                pidfile.display()
            ),
        );
        let r = run_checks(d.path(), Duration::from_secs(1)).unwrap();
        let pid = std::fs::read_to_string(&pidfile).unwrap();
        let _ = nix::sys::signal::kill(Pid::from_raw(pid.trim().parse().unwrap()), Signal::SIGKILL);
        assert!(
            r[0].run.passed && r[0].run.detail == "started",
            "{:?}",
            r[0]
        );
        // The timeout, the grace for the output, and room for a loaded machine; not 20 s.
        assert!(r[0].run.millis < 10_000, "{:?}", r[0]);
    }

    #[test]
    fn greenboot_checks_run_with_bash_beside_stratums() {
        let d = tempfile::tempdir().unwrap();
        let gb = d.path().join("usr/lib/greenboot/check");
        std::fs::create_dir_all(gb.join("required.d")).unwrap();
        // Not executable, and bash's syntax: greenboot runs its scripts with bash.
        std::fs::write(
            gb.join("required.d/20-gb.sh"),
            "[[ -n bash ]] && echo from bash",
        )
        .unwrap();
        script(
            &d.path().join("usr/lib/stratum/health.d/required.d"),
            "10-vendor",
            "echo vendor",
        );
        std::fs::create_dir_all(gb.join("wanted.d")).unwrap();
        std::fs::write(gb.join("wanted.d/30-fails.sh"), "exit 2").unwrap();
        let r = run_checks(d.path(), Duration::from_secs(10)).unwrap();
        let names: Vec<_> = r.iter().map(|c| c.run.name.as_str()).collect();
        assert_eq!(names, ["10-vendor", "20-gb.sh", "30-fails.sh"]);
        assert!(r[0].required && r[0].run.passed && r[0].run.detail == "vendor");
        assert!(r[1].required && r[1].run.passed && r[1].run.detail == "from bash");
        assert!(!r[2].required && !r[2].run.passed, "{:?}", r[2]);
        assert_eq!(r[1].run.path, gb.join("required.d/20-gb.sh"));
    }
}
