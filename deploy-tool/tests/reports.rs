//! Host integration tests of what commands report to scripts: every `--json` parsed with its
//! key names, `status --format`, the rpm-ostree and bootc spellings (`update`, `switch`,
//! `upgrade --preview` exiting 77), and global options refused where they mean nothing.

use crate::common;

use std::fs;

use common::*;
use serde_json::Value;

/// A sysroot with v1 installed (following the source repository) and the fake OS's
/// `/etc/crypttab`.
fn setup() -> (Env, String) {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[("etc/crypttab", "root UUID=1 none\n")]);
    env.install_following_src();
    (env, v1)
}

fn json(out: std::process::Output) -> Value {
    let text = ok(out);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn upgrade_preview_and_check_exit_77_without_an_update_and_update_is_upgrade() {
    let (env, v1) = setup();
    for verb in ["upgrade", "update"] {
        for flag in ["--preview", "--check"] {
            let out = env.stratum(&[verb, flag]);
            assert_eq!(
                out.status.code(),
                Some(77),
                "{verb} {flag}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let v2 = env.compose_fake_os("2", &[], &[]);
    let out = env.stratum(&["update", "--preview"]);
    assert_eq!(out.status.code(), Some(0), "an update is available");
    ok(env.stratum(&["update", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn switch_is_rebase() {
    let (env, _) = setup();
    let other = env.compose_ref(&env.fake_os_root("b", &[], &[]), "os/b", Some("b"), &[]);
    ok(env.stratum(&["switch", "src:os/b", "--apply-now"]));
    let st = env.status();
    assert_eq!(st["deployments"][0]["checksum"], other.as_str());
    assert_eq!(st["deployments"][0]["origin"], "src:os/b");
}

#[test]
fn status_formats() {
    let (env, v1) = setup();
    let j = json(env.stratum(&["status", "--format", "json"]));
    assert_eq!(j, env.status(), "--format json is --json");
    let yaml = ok(env.stratum(&["status", "--format", "yaml"]));
    let y: Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(y["deployments"][0]["checksum"], v1.as_str());
    assert_eq!(
        y["deployments"][0]["kernel-arguments"],
        j["deployments"][0]["kernel-arguments"]
    );
    let human = ok(env.stratum(&["status", "--format", "human"]));
    assert!(
        human.starts_with("AutomaticUpdates: disabled\n\nDeployments:") && human.contains(&v1),
        "{human}"
    );
    assert_eq!(
        ok(env.stratum(&["status", "--format", "humanreadable"])),
        human
    );
    let e = err(env.stratum(&["status", "--json", "--format", "yaml"]));
    assert!(e.contains("cannot be used with"), "{e}");
}

#[test]
fn rollback_pin_cleanup_and_initramfs_etc_print_json() {
    let (env, v1) = setup();
    let v2 = env.compose_fake_os("2", &[], &[("etc/crypttab", "root UUID=1 none\n")]);
    ok(env.stratum(&["upgrade", "--apply-now"]));

    let p = json(env.stratum(&["pin", "1", "--json"]));
    assert_eq!(p["stateroot"], "default");
    assert_eq!(p["deployment"], format!("{v1}.0"));
    assert_eq!(p["pinned"], true);
    let p = json(env.stratum(&["pin", "1", "--unpin", "--json"]));
    assert_eq!(p["pinned"], false);

    let r = json(env.stratum(&["rollback", "--json"]));
    assert_eq!(r["stateroot"], "default");
    assert_eq!(r["checksum"], v1.as_str());
    assert_eq!(r["serial"], 0);
    assert_eq!(r["deployment"], format!("{v1}.0"));
    assert_eq!(env.checksums(), vec![v1.clone(), v2.clone()]);

    let c = json(env.stratum(&["cleanup", "-r", "--json"]));
    assert_eq!(c["removed"], serde_json::json!([format!("{v2}.0")]));
    let c = json(env.stratum(&["cleanup", "-r", "--json"]));
    assert_eq!(
        c["removed"],
        serde_json::json!([]),
        "nothing left to remove"
    );

    let l = json(env.stratum(&["initramfs-etc", "--json"]));
    assert_eq!(l["deployment"], format!("{v1}.0"));
    assert_eq!(l["tracked"], serde_json::json!([]));
    assert_eq!(l["changed"], false);
    let t = json(env.stratum(&["initramfs-etc", "--track", "/etc/crypttab", "--json"]));
    assert_eq!(t["tracked"], serde_json::json!(["/etc/crypttab"]));
    assert_eq!(t["changed"], true);
    let overlays = t["overlays"].as_array().unwrap();
    assert!(!overlays.is_empty(), "{t}");
    let again = json(env.stratum(&["initramfs-etc", "--track", "/etc/crypttab", "--json"]));
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["tracked"], t["tracked"]);
    let l = json(env.stratum(&["initramfs-etc", "--json"]));
    assert_eq!(l["tracked"], t["tracked"]);
    assert!(fs::metadata(env.sysroot.join("boot/loader")).is_ok());
}

#[test]
fn global_options_are_refused_where_they_mean_nothing() {
    let env = Env::new();
    let root = env.fake_os_root("1", &[], &[]);
    // `Env::stratum` passes --sysroot: compose writes a repository, never a sysroot.
    let e = err(env.stratum(&[
        "compose",
        "rootfs",
        "--repo",
        "r",
        "--ref",
        "x",
        root.to_str().unwrap(),
    ]));
    assert!(
        e.contains("--sysroot means nothing to `stratum compose rootfs`"),
        "{e}"
    );
    let help = ok(env.stratum(&["compose", "rootfs", "--help"]));
    assert!(
        !help.contains("--sysroot") && !help.contains("--no-wait"),
        "{help}"
    );
    let help = ok(env.stratum(&["status", "--help"]));
    assert!(
        help.contains("Global options") && help.contains("--sysroot"),
        "{help}"
    );
}
