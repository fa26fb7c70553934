//! Host integration test of GPG signature verification on a remote: the real `stratum` binary
//! on a temporary sysroot whose remote requires signatures. Unsigned and wrongly signed
//! commits are refused with a clear error and nothing deployed; a correctly signed one is
//! deployed.

use crate::common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::gpg::Gpg;
use common::*;

impl Env {
    /// Composes a version of the fake OS into the source repository (ref `os/x`).
    fn compose(&self, version: &str) -> String {
        let motd = format!("motd v{version}\n");
        self.compose_fake_os(version, &["var/lib"], &[("etc/motd", &motd)])
    }
}

/// The stdout of a command (`stratum` or `gpg`) that must have succeeded.
fn ok(out: Output) -> String {
    succeeded(out, "command")
}

/// `upgrade --apply-now` must fail with a signature error and leave the sysroot at v1 only.
fn assert_refused(env: &Env, v1: &str, v2: &str, case: &str) -> String {
    let out = env.stratum(&["upgrade", "--apply-now"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        !out.status.success(),
        "{case}: upgrade to {v2} succeeded but the remote requires a valid signature\n\
         stdout: {}\nstderr: {err}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lower = err.to_lowercase();
    assert!(
        lower.contains("gpg") || lower.contains("signature") || lower.contains("signed"),
        "{case}: upgrade failed, but the error does not say it is about the signature: {err}"
    );
    assert_eq!(
        env.checksums(),
        vec![v1.to_string()],
        "{case}: a refused commit must not appear in the deployments"
    );
    assert_eq!(
        env.deploy_dirs(),
        vec![format!("{v1}.0")],
        "{case}: a refused commit must leave no deployment directory"
    );
    assert!(
        !env.run.join("staged-deployment").exists(),
        "{case}: a refused commit must not be staged"
    );
    assert_eq!(
        env.remote_ref(),
        v1,
        "{case}: the remote-tracking ref src:os/x moved to an unverified commit"
    );
    err
}

/// A test environment: a GnuPG home with the trusted key `right` and the untrusted key
/// `wrong`, the public part of `right` exported to `pubkey`, and the source repository URL.
struct Keys {
    gpg: Gpg,
    right: String,
    wrong: String,
    pubkey: PathBuf,
}

fn new_env() -> (Env, Keys, String) {
    let gpg = Gpg::new();
    let right = gpg.gen_key("Stratum Test", "t@example.com");
    let wrong = gpg.gen_key("Wrong Signer", "wrong@example.com");
    assert_ne!(right, wrong);
    let env = Env::new();
    let pubkey = env.dir.path().join("right.asc");
    gpg.export(&right, &pubkey);
    let url = format!("file://{}", env.src.display());
    (
        env,
        Keys {
            gpg,
            right,
            wrong,
            pubkey,
        },
        url,
    )
}

/// `stratum install to-filesystem` of the source repository's `os/x`, following remote `src`
/// (with `gpg_import` as its keys, else `--no-sign-verify`).
fn install(env: &Env, url: &str, gpg_import: Option<&Path>) -> Output {
    let mut args: Vec<&OsStr> = ["--ref", "os/x", "--remote"].map(OsStr::new).to_vec();
    let remote = format!("src={url}");
    args.push(OsStr::new(&remote));
    match gpg_import {
        Some(k) => args.extend([OsStr::new("--remote-gpg-import"), k.as_os_str()]),
        None => args.push(OsStr::new("--no-sign-verify")),
    }
    env.install_to_filesystem(args)
}

fn remotes(env: &Env) -> serde_json::Value {
    serde_json::from_str(&ok(env.stratum(&["remote", "list", "--json"]))).unwrap()
}

/// The refusal itself. The remote is made with `stratum remote add` (verification on by
/// default), but its key is imported with Debian's `ostree remote gpg-import`, because
/// Stratum's own import (`--gpg-import`, `--remote-gpg-import`) fails on every key file; see
/// `keys_imported_by_stratum_are_trusted`, which covers that path.
#[test]
fn remote_requiring_signatures_refuses_unsigned_and_wrongly_signed_commits() {
    let (env, keys, url) = new_env();
    let v1 = env.compose("1");
    keys.gpg.sign(&env.src, &v1, &keys.right);
    ok(install(&env, &url, None));
    assert_eq!(env.checksums(), vec![v1.clone()], "install deployed v1");
    ok(env.stratum(&["remote", "delete", "src"]));
    ok(env.stratum(&["remote", "add", "src", &url]));
    assert_eq!(
        remotes(&env),
        serde_json::json!([{"name": "src", "url": url, "sign-verify": true, "sign-verify-summary": false}]),
        "`remote add` without --no-sign-verify must verify signatures"
    );
    let out = Command::new("ostree")
        .args(["remote", "gpg-import", "--repo"])
        .arg(env.sysroot.join("ostree/repo"))
        .arg("src")
        .arg("-k")
        .arg(&keys.pubkey)
        .output()
        .unwrap();
    ok(out);

    // Nothing new yet: the signed v1 passes verification.
    let out = env.stratum(&["upgrade", "--apply-now"]);
    assert!(
        out.status.success(),
        "upgrade with the signed v1 current failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.checksums(), vec![v1.clone()]);

    // (1) v2 unsigned.
    let v2 = env.compose("2");
    let err = assert_refused(&env, &v1, &v2, "unsigned v2");
    eprintln!("stratum's error for the unsigned commit:\n{err}");

    // (2) v2 signed by a key the remote does not trust.
    keys.gpg.sign(&env.src, &v2, &keys.wrong);
    let err = assert_refused(&env, &v1, &v2, "v2 signed by the wrong key");
    eprintln!("stratum's error for the wrongly signed commit:\n{err}");

    // (3) v2 signed by the right key only.
    keys.gpg.unsign(&env.src, &v2, &keys.wrong);
    keys.gpg.sign(&env.src, &v2, &keys.right);
    let out = env.stratum(&["upgrade", "--apply-now"]);
    assert!(
        out.status.success(),
        "upgrade to v2 signed with the trusted key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        env.checksums(),
        vec![v2.clone(), v1.clone()],
        "the correctly signed v2 must be the new default, v1 the rollback"
    );
    assert_eq!(
        env.status()["deployments"][0]["default"],
        true,
        "v2 is the default deployment"
    );
    assert_eq!(env.remote_ref(), v2, "src:os/x follows the signed v2");
    assert_eq!(env.deploy_dirs().len(), 2, "{:?}", env.deploy_dirs());
}

/// Keys imported by Stratum itself: `install --remote-gpg-import` and `remote add
/// --gpg-import` make remotes that accept commits signed by that key, and `rebase` checks
/// signatures like `upgrade`.
#[test]
fn keys_imported_by_stratum_are_trusted() {
    let (env, keys, url) = new_env();
    let v1 = env.compose("1");
    keys.gpg.sign(&env.src, &v1, &keys.right);
    let out = install(&env, &url, Some(&keys.pubkey));
    assert!(
        out.status.success(),
        "install --remote-gpg-import of an armored public key ({}) failed: {}",
        keys.pubkey.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.checksums(), vec![v1.clone()], "install deployed v1");
    assert_eq!(
        remotes(&env),
        serde_json::json!([{"name": "src", "url": url, "sign-verify": true, "sign-verify-summary": false}]),
        "install with --remote-gpg-import must make a remote that verifies signatures"
    );
    let v2 = env.compose("2");
    let err = assert_refused(&env, &v1, &v2, "unsigned v2 (key from install)");
    eprintln!("stratum's error for the unsigned commit:\n{err}");
    keys.gpg.sign(&env.src, &v2, &keys.right);
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);

    // A remote that verifies but trusts no key refuses even a signed commit on rebase.
    let v3 = env.compose("3");
    keys.gpg.sign(&env.src, &v3, &keys.right);
    ok(env.stratum(&["remote", "add", "signed", &url]));
    let out = env.stratum(&["rebase", "signed:os/x", "--apply-now"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "rebase onto a verifying remote that trusts no key succeeded"
    );
    assert!(
        err.to_lowercase().contains("gpg") || err.to_lowercase().contains("signature"),
        "rebase failed, but the error does not say it is about the signature: {err}"
    );
    assert_eq!(
        env.checksums(),
        vec![v2.clone(), v1.clone()],
        "a refused rebase deployed something"
    );
    assert_eq!(env.deploy_dirs().len(), 2, "{:?}", env.deploy_dirs());

    ok(env.stratum(&["remote", "delete", "signed"]));
    let out = env.stratum(&[
        "remote",
        "add",
        "signed",
        &url,
        "--gpg-import",
        keys.pubkey.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "remote add --gpg-import of an armored public key failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env.stratum(&["rebase", "signed:os/x", "--apply-now"]);
    assert!(
        out.status.success(),
        "rebase onto the signed v3 with its key imported failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let st = env.status();
    assert_eq!(st["deployments"][0]["checksum"], v3.as_str(), "{st}");
    assert_eq!(
        st["deployments"][0]["default"], true,
        "v3 is the default: {st}"
    );
    assert_eq!(
        st["deployments"][0]["origin"], "signed:os/x",
        "the new deployment follows signed:os/x: {st}"
    );
}
