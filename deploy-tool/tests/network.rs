//! Host integration tests of fetches from a broken or hostile HTTP server (the test's own,
//! on 127.0.0.1): whatever the server does, `stratum upgrade` ends in bounded time with an
//! error naming the remote, and never holds the sysroot lock while it waits on the network.
//! - a server that sends the headers of `summary` and then nothing, or a commit object one
//!   byte at a time: libostree's pull fails after `[network] low-speed-time`, and meanwhile
//!   another command takes the sysroot lock;
//! - the static-delta fetcher follows at most 50 redirects and is held to the same limits;
//!   when it gives up, the upgrade goes on with an object pull.
//!
//! The limits are made short through the deployment's `stratum.toml`, so that each test takes
//! seconds.

use crate::common;

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::http::{Misbehaviour, Server};
use common::*;

/// A process that is killed on drop unless it ended (`None`).
struct Running(Option<u32>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// `[network]` limits short enough for tests: under 100 bytes/s for 2 s fails.
const SHORT_LIMITS: &str = "[network]\nlow-speed-limit = 100\nlow-speed-time = 2\n";

/// How long a failing upgrade may take in these tests: the 2 s window, with room for a slow
/// machine; far below the minutes a stalled server held an upgrade before.
const BOUND: Duration = Duration::from_secs(20);

/// A sysroot that follows `pub:os/x` from a published repository served over HTTP, v1
/// deployed and v2 published (an update waits), with short network limits.
struct World {
    env: Env,
    server: Server,
    published: PathBuf,
    v1: String,
    v2: String,
}

impl World {
    fn new() -> World {
        let env = Env::new();
        let published = env.dir.path().join("www/repo");
        let v1 = env.compose_fake_os("1", &[], &[("usr/lib/fake/data", "one\n")]);
        env.publish(&published, &[]);
        let server = Server::start(&published);
        env.install_following_http(&server.url());
        let dir = env.dep(&v1).join("etc/stratum");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stratum.toml"), SHORT_LIMITS).unwrap();
        let v2 = env.compose_fake_os("2", &[], &[("usr/lib/fake/data", "two\n")]);
        env.publish(&published, &[]);
        World {
            env,
            server,
            published,
            v1,
            v2,
        }
    }

    /// `stratum upgrade --apply-now`, run while `during` runs; its output and how long it
    /// took. Fails the test when it has not ended within [`BOUND`] (it is killed then).
    fn upgrade(&self, during: impl FnOnce()) -> (Output, Duration) {
        let child = Command::new(env!("CARGO_BIN_EXE_stratum"))
            .arg("--sysroot")
            .arg(&self.env.sysroot)
            .args(["upgrade", "--apply-now"])
            .env("STRATUM_RUN_DIR", &self.env.run)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        // Killed if the test fails before it ends, so no upgrade outlives the test.
        let mut running = Running(Some(child.id()));
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || tx.send(child.wait_with_output().unwrap()));
        during();
        let out = rx
            .recv_timeout(BOUND.saturating_sub(started.elapsed()))
            .unwrap_or_else(|_| panic!("stratum upgrade did not end within {BOUND:?}"));
        running.0 = None;
        (out, started.elapsed())
    }

    /// Checks that `out` is a failed upgrade whose error names the remote and its URL and
    /// says the server stalls, and that nothing was deployed.
    fn assert_stalled(&self, out: Output, took: Duration, what: &str) {
        let url = self.server.url();
        let e = err(out);
        eprintln!("stratum upgrade against a server that {what}: failed after {took:?}:\n{e}");
        assert!(
            e.contains(&format!("remote pub ({url})")) && e.contains("the server stalls"),
            "the error does not name the remote, its URL and the stall: {e}"
        );
        assert!(
            e.contains("low-speed-time"),
            "the error does not say what to tune: {e}"
        );
        assert_eq!(self.env.checksums()[0], self.v1, "{e}");
    }
}

/// A server that sends the headers of `summary`, then nothing: the upgrade fails after the
/// configured 2 s, naming the remote; while it waits, `kargs` takes the sysroot lock (with
/// `--no-wait`: it would fail if the lock were held).
#[test]
fn a_stalled_summary_fails_the_upgrade_without_holding_the_lock() {
    let w = World::new();
    w.server.misbehave(|p| p == "/summary", Misbehaviour::Stall);
    let (out, took) = w.upgrade(|| {
        assert!(
            w.server.wait_for_request(|p| p == "/summary", BOUND),
            "the upgrade never asked for the summary"
        );
        let k = w
            .env
            .stratum(&["--no-wait", "kargs", "--append", "while.stalled=1"]);
        let stderr = String::from_utf8_lossy(&k.stderr).to_string();
        assert!(
            k.status.success(),
            "kargs could not take the sysroot lock while the upgrade waited on the network: \
             {stderr}"
        );
    });
    w.assert_stalled(out, took, "stalls after the headers of summary");
    assert!(took < BOUND, "{took:?}");
    let kargs = ok(w.env.stratum(&["kargs"]));
    assert!(kargs.contains("while.stalled=1"), "{kargs}");

    // The server behaves again: the same upgrade goes through, onto the kargs changed
    // meanwhile (the state is read again under the lock).
    w.server.behave();
    let (out, _) = w.upgrade(|| ());
    ok_stderr(out);
    assert_eq!(w.env.checksums()[0], w.v2);
    let kargs = ok(w.env.stratum(&["kargs"]));
    assert!(kargs.contains("while.stalled=1"), "{kargs}");
}

/// A server that trickles a commit object (a byte every 200 ms: something always arrives,
/// far under 100 bytes/s): the upgrade fails after the configured 2 s.
#[test]
fn a_trickling_object_fails_the_upgrade() {
    let w = World::new();
    w.server.misbehave(
        |p| p.ends_with(".commit"),
        Misbehaviour::Trickle(Duration::from_millis(200)),
    );
    let (out, took) = w.upgrade(|| ());
    w.assert_stalled(out, took, "trickles a commit object");
    assert!(
        w.server.wait_for_request(|p| p.ends_with(".commit"), BOUND),
        "the upgrade never asked for a commit"
    );
}

/// The static-delta fetcher gives up on a redirect loop after 50 redirects and on a
/// trickling delta after the configured limits; each time the upgrade says so and goes on
/// with an object pull.
#[test]
fn the_delta_fetcher_caps_redirects_and_is_held_to_the_limits() {
    let w = World::new();
    let deltas = |p: &str| p.starts_with("/deltas/");
    w.server.misbehave(deltas, Misbehaviour::RedirectLoop(200));
    let (out, took) = w.upgrade(|| ());
    let stderr = ok_stderr(out);
    assert!(
        stderr.contains("could not be used, pulling objects instead")
            && stderr.contains("redirect"),
        "the redirect loop was not reported: {stderr}"
    );
    let followed = w.server.redirects();
    eprintln!("redirect loop on the delta: {followed} redirects served, upgrade took {took:?}");
    assert!(
        followed <= 51,
        "the delta fetcher followed {followed} redirects (at most 50 are allowed)"
    );
    assert_eq!(w.env.checksums()[0], w.v2);

    // v3's delta trickles: the fetcher gives up after 2 s (as libostree would) instead of
    // fetching it at 5 bytes/s.
    w.server.behave();
    let v3 = w
        .env
        .compose_fake_os("3", &[], &[("usr/lib/fake/data", "three\n")]);
    w.env.publish(&w.published, &[]);
    w.server
        .misbehave(deltas, Misbehaviour::Trickle(Duration::from_millis(200)));
    let (out, took) = w.upgrade(|| ());
    let stderr = ok_stderr(out);
    eprintln!("trickling delta: the upgrade took {took:?}");
    assert!(
        stderr.contains("could not be used, pulling objects instead"),
        "the trickling delta was not given up: {stderr}"
    );
    assert_eq!(w.env.checksums()[0], v3);
}
