//! Host integration tests of what Stratum trusts in an update: the real `stratum` binary on a
//! temporary sysroot that follows the source repository as remote `src`.
//!
//! - an `upgrade` never goes back in time unless told to (`--allow-downgrade`);
//! - a commit is only accepted under the ref it was built for (`ostree.ref-binding`);
//! - `install --remote` asks for the remote's key or an explicit `--no-sign-verify`;
//! - remote names and URLs are checked before anything is written;
//! - revisions are checked before libostree sees them.

use crate::common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;

/// Commit timestamps (`SOURCE_DATE_EPOCH`) of the builds in these tests.
const T1: &str = "1700000000";
const T2: &str = "1700000100";
const T_OLD: &str = "1600000000";

impl Env {
    /// Composes version `version` of the fake OS onto `refname` with the commit timestamp
    /// `epoch`.
    fn build(&self, version: &str, refname: &str, epoch: &str) -> String {
        let motd = format!("motd v{version}\n");
        let root = self.fake_os_root(version, &["var/lib"], &[("etc/motd", &motd)]);
        self.compose_ref(
            &root,
            refname,
            Some(version),
            &[("SOURCE_DATE_EPOCH", epoch)],
        )
    }

    /// Everything a refused command must leave as it was: deployments, their directories,
    /// the staged record and the remote-tracking ref.
    fn snapshot(&self) -> (Vec<String>, Vec<String>, bool, String) {
        (
            self.checksums(),
            self.deploy_dirs(),
            self.run.join("staged-deployment").exists(),
            self.remote_ref(),
        )
    }
}

/// `ostree ARGS --repo REPO`.
fn ostree(args: &[&str], repo: &Path) -> Output {
    Command::new("ostree")
        .args(args)
        .arg("--repo")
        .arg(repo)
        .output()
        .expect("running ostree")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A sysroot installed from v1 (timestamp T1) of `os/x`, following remote `src`.
fn installed() -> (Env, String) {
    let env = Env::new();
    let v1 = env.build("1", "os/x", T1);
    env.install_following_src();
    assert_eq!(env.checksums(), vec![v1.clone()]);
    (env, v1)
}

/// A mirror that replays an older, validly built commit under the ref (here: the ref is
/// moved back to v1 after v2 was deployed) and an older build published as new are both
/// refused by `upgrade`; `--check` and `--preview` do not call them updates; an explicit
/// `--allow-downgrade` deploys them.
#[test]
fn upgrade_refuses_older_commits_unless_allowed() {
    let (env, v1) = installed();
    let v2 = env.build("2", "os/x", T2);
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);

    // The mirror replays v1.
    succeeded(
        ostree(&["reset", "os/x", &v1], &env.src),
        "ostree reset os/x to v1",
    );
    let before = env.snapshot();

    let out = env.stratum(&["upgrade", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(77),
        "upgrade --check must report no update for an older commit: {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("older"), "{}", stderr(&out));
    let out = env.stratum(&["upgrade", "--check", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["result"], "older", "{json}");
    assert_eq!(json["to"], v1.as_str(), "{json}");
    assert_eq!(json["from"], v2.as_str(), "{json}");

    // No update: --preview answers 77, as --check does (rpm-ostree).
    let out = env.stratum(&["upgrade", "--preview"]);
    assert_eq!(out.status.code(), Some(77), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("Update available") && stderr(&out).contains("older"),
        "upgrade --preview must not offer an older commit as an update: {}",
        stderr(&out)
    );
    assert!(
        out.stdout.is_empty(),
        "--preview listed files of a downgrade"
    );

    let out = env.stratum(&["upgrade", "--apply-now"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "upgrade deployed an older commit: {}",
        stderr(&out)
    );
    let e = stderr(&out);
    assert!(
        e.contains(&v1) && e.contains("older") && e.contains("--allow-downgrade"),
        "the refusal must name the commit, say it is older and how to allow it: {e}"
    );
    // The pull moved the remote-tracking ref (as OSTree's does); nothing else changed.
    let mut expected = before.clone();
    expected.3 = v1.clone();
    assert_eq!(
        env.snapshot(),
        expected,
        "a refused downgrade changed the sysroot"
    );

    // An explicit downgrade is allowed.
    ok(env.stratum(&["upgrade", "--apply-now", "--allow-downgrade"]));
    assert_eq!(env.checksums()[0], v1, "--allow-downgrade deploys v1");

    // An older build published as the newest commit (a new checksum, an old timestamp).
    ok(env.stratum(&["deploy", &v2, "--apply-now"]));
    assert_eq!(env.checksums()[0], v2);
    let old = env.build("0", "os/x", T_OLD);
    let before = env.snapshot();
    let out = env.stratum(&["upgrade", "--apply-now"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains(&old), "{}", stderr(&out));
    let mut expected = before;
    expected.3 = old.clone();
    assert_eq!(
        env.snapshot(),
        expected,
        "a refused downgrade changed the sysroot"
    );
    ok(env.stratum(&["upgrade", "--apply-now", "--allow-downgrade"]));
    assert_eq!(env.checksums()[0], old);

    assert!(
        ok(env.stratum(&["upgrade", "--help"])).contains("--allow-downgrade"),
        "upgrade --help documents --allow-downgrade"
    );
}

/// Composed commits name their ref (`ostree.ref-binding`, as `ostree commit --bind-ref`
/// writes it); a commit built for another ref and served under the followed one is refused
/// with both refs named, and nothing changes; the same commit under its own ref is accepted.
#[test]
fn commit_bound_to_another_ref_is_refused() {
    let (env, v1) = installed();
    let other = env.build("2", "os/other", T2);
    // The mirror serves the os/other commit as os/x.
    succeeded(
        ostree(&["refs", "--force", "--create=os/x", &other], &env.src),
        "ostree refs --create os/x",
    );
    let before = env.snapshot();
    for args in [&["upgrade", "--check"][..], &["upgrade", "--apply-now"][..]] {
        let out = env.stratum(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "stratum {args:?} accepted a commit bound to os/other under os/x: {}",
            stderr(&out)
        );
        let e = stderr(&out);
        assert!(
            e.contains("os/x") && e.contains("os/other") && e.contains("bound"),
            "the refusal must name both refs: {e}"
        );
        assert_eq!(
            env.snapshot(),
            before,
            "stratum {args:?} changed the sysroot"
        );
    }

    // Asking for the commit by checksum goes through the same ref and is refused too.
    let out = env.stratum(&["deploy", &other, "--apply-now"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("os/other"), "{}", stderr(&out));
    assert_eq!(env.snapshot(), before);
    let binding = ostree(
        &["show", "--print-metadata-key=ostree.ref-binding", &other],
        &env.src,
    );
    assert_eq!(
        succeeded(binding, "ostree show").trim(),
        "['os/other']",
        "compose must bind the commit to its ref"
    );
    // Under its own ref the commit is fine.
    ok(env.stratum(&["rebase", "src:os/other", "--apply-now"]));
    assert_eq!(env.checksums(), vec![other, v1]);
}

/// `install --remote` without a key makes no unverified remote silently: it asks for
/// `--remote-gpg-import` or an explicit `--no-sign-verify`, before writing anything.
#[test]
fn install_with_a_remote_needs_a_key_or_no_sign_verify() {
    let env = Env::new();
    env.build("1", "os/x", T1);
    let url = format!("src=file://{}", env.src.display());
    let out = env.install_to_filesystem(["--ref", "os/x", "--remote", &url]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "install --remote without a key succeeded: {}",
        stderr(&out)
    );
    let e = stderr(&out);
    assert!(
        e.contains("--remote-gpg-import") && e.contains("--no-sign-verify"),
        "the error must say what to do: {e}"
    );
    assert!(!env.sysroot.exists(), "a refused install wrote the sysroot");

    // Both at once is a contradiction; --no-sign-verify alone has no remote to apply to.
    let key = env.dir.path().join("key.asc");
    std::fs::write(&key, "").unwrap();
    let out = env.install_to_filesystem([
        "--ref",
        "os/x",
        "--remote",
        &url,
        "--no-sign-verify",
        "--remote-gpg-import",
        key.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = env.install_to_filesystem(["--ref", "os/x", "--no-sign-verify"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(!env.sysroot.exists());

    let out = env.install_to_filesystem(["--ref", "os/x", "--remote", &url, "--no-sign-verify"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let remotes: serde_json::Value =
        serde_json::from_str(&ok(env.stratum(&["remote", "list", "--json"]))).unwrap();
    assert_eq!(remotes[0]["sign-verify"], false, "{remotes}");
    assert!(
        ok(env.stratum(&["install", "to-filesystem", "--help"])).contains("--no-sign-verify"),
        "install --help documents --no-sign-verify"
    );
}

/// Remote names and URLs are checked: only file://, http:// and https:// URLs with a path or
/// host, and names that are plain words; `remote add` and `install --remote` refuse anything
/// else with a clear error and change nothing.
#[test]
fn remote_names_and_urls_are_validated() {
    let (env, _) = installed();
    let list = || ok(env.stratum(&["remote", "list"]));
    let before = list();
    let bad_urls = [
        "not-a-url",
        "",
        "ftp://example.com/repo",
        "http://",
        "https:///repo",
        "http://exa mple.com/repo",
        "http://example.com:port/repo",
        "http://example.com:99999/repo",
        "http://user:secret@example.com/repo",
        "file://relative/path",
        "file://",
        "file:///",
        "file:///srv/re\npo",
        "mirrorlist=https://example.com/list",
    ];
    for url in bad_urls {
        let out = env.stratum(&["remote", "add", "--no-sign-verify", "r", url]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "remote add accepted the URL {url:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("URL"),
            "{url:?}: the error must be about the URL: {}",
            stderr(&out)
        );
    }
    for name in [".hidden", "a b", "a/b", "a:b", "rémote", "", "-x"] {
        let out = env.stratum(&[
            "remote",
            "add",
            "--no-sign-verify",
            "--",
            name,
            "https://example.com/repo",
        ]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "remote add accepted the name {name:?}: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("remote name"),
            "{name:?}: the error must be about the name: {}",
            stderr(&out)
        );
    }
    assert_eq!(list(), before, "a refused remote was added");

    for (name, url) in [
        ("a", "file:///srv/repo"),
        ("b.1_x-y", "http://example.com/repo"),
        ("c", "https://updates.example.com:8443/ostree/repo/"),
        ("d", "http://[::1]:8080/repo"),
        ("e", "http://192.0.2.1"),
    ] {
        ok(env.stratum(&["remote", "add", "--no-sign-verify", name, url]));
    }
    assert_eq!(list().lines().count(), 6, "{}", list());

    // The same rules for install, checked before anything is written.
    let fresh = Env::new();
    fresh.build("1", "os/x", T1);
    for remote in ["u=not-a-url", ".u=file:///srv/repo", "u=ftp://x/y"] {
        let out =
            fresh.install_to_filesystem(["--ref", "os/x", "--remote", remote, "--no-sign-verify"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "install --remote {remote} succeeded: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains("URL") || stderr(&out).contains("remote name"),
            "{remote}: {}",
            stderr(&out)
        );
        assert!(
            !fresh.sysroot.exists(),
            "a refused install wrote the sysroot"
        );
    }
}

/// Revisions that are neither a full checksum, a ref nor a unique prefix of a local commit
/// are refused with a clear message (exit 1, not an abort inside libostree) and change
/// nothing; a unique prefix of a commit known locally (here: fetched as metadata by
/// `upgrade --check`) is deployed.
#[test]
fn revisions_are_validated_before_libostree() {
    let (env, _v1) = installed();
    let v2 = env.build("2", "os/x", T2);
    let before = env.snapshot();
    let missing = "0".repeat(64);
    for (rev, says) in [
        ("zz", "zz"),
        ("deadbeef", "deadbeef"),
        ("../x", "../x"),
        ("src:", "src:"),
        ("DEADBEEF", "DEADBEEF"),
        (&v2[..12], &v2[..12]),
        (&missing, &missing),
    ] {
        let out = env.stratum(&["deploy", rev, "--apply-now"]);
        assert_eq!(
            out.status.code(),
            Some(1),
            "deploy {rev:?} did not fail cleanly: {}",
            stderr(&out)
        );
        assert!(
            stderr(&out).contains(says) && !stderr(&out).contains("OSTree:ERROR"),
            "deploy {rev:?}: {}",
            stderr(&out)
        );
        assert_eq!(env.snapshot(), before, "deploy {rev:?} changed the sysroot");
    }
    let out = env.stratum(&["rebase", "src:../x", "--apply-now"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("../x"), "{}", stderr(&out));
    assert_eq!(env.snapshot(), before);

    // Once the commit is known locally, a unique prefix of it resolves.
    assert_eq!(env.stratum(&["upgrade", "--check"]).status.code(), Some(0));
    ok(env.stratum(&["deploy", &v2[..12], "--apply-now"]));
    assert_eq!(env.checksums()[0], v2);
}
