//! Host integration tests of the deployment lifecycle: the real `stratum` binary on a
//! temporary sysroot with a real libostree repository, checked against Debian's `ostree`.

use crate::common;

use std::fs;
use std::path::Path;
use std::process::Command;

use common::*;

/// Composes a version of the fake OS with its motd, a versioned `/etc/default.conf` and
/// `extra` files into the source repository.
impl Env {
    fn compose_motd(&self, version: &str, motd: &str, extra: &[(&str, &str)]) -> String {
        let default_conf = format!("default {version}\n");
        let mut files = vec![
            ("etc/motd", motd),
            ("etc/default.conf", default_conf.as_str()),
        ];
        files.extend_from_slice(extra);
        self.compose_fake_os(version, &["var/lib"], &files)
    }
}

/// A sysroot with v1 installed and the source repository added as remote `src`.
fn setup() -> (Env, String) {
    let env = Env::new();
    let v1 = env.compose_motd("1", "motd v1\n", &[]);
    env.install_following_src();
    assert_eq!(env.checksums(), vec![v1.clone()]);
    (env, v1)
}

fn ostree_admin_order(sysroot: &Path) -> Vec<String> {
    let out = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(sysroot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("default "))
        .map(|s| s.split('.').next().unwrap().to_string())
        .collect()
}

#[test]
fn upgrade_merges_etc_keeps_var_and_rolls_back() {
    let (env, v1) = setup();
    // The admin edits /etc and writes /var in v1.
    let d1 = env.dep(&v1);
    fs::write(d1.join("etc/motd"), "admin motd\n").unwrap();
    fs::write(d1.join("etc/admin.conf"), "mine\n").unwrap();
    let var = env.sysroot.join("ostree/deploy/default/var/lib-keep");
    fs::write(&var, "data\n").unwrap();

    // No update yet.
    let out = env.stratum(&["upgrade", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(77),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let v2 = env.compose_motd("2", "motd v2\n", &[("etc/new-in-v2.conf", "v2 default\n")]);
    let out = env.stratum(&["upgrade", "--check"]);
    assert_eq!(out.status.code(), Some(0));
    let preview = ok(env.stratum(&["upgrade", "--preview"]));
    assert!(preview.contains("M /usr/bin/version"), "{preview}");
    assert_eq!(
        env.checksums(),
        vec![v1.clone()],
        "--check/--preview must not deploy"
    );

    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);
    assert_eq!(
        ostree_admin_order(&env.sysroot),
        vec![v2.clone(), v1.clone()]
    );
    let d2 = env.dep(&v2);
    assert_eq!(
        fs::read_to_string(d2.join("etc/motd")).unwrap(),
        "admin motd\n",
        "admin edit wins"
    );
    assert_eq!(
        fs::read_to_string(d2.join("etc/admin.conf")).unwrap(),
        "mine\n"
    );
    assert_eq!(
        fs::read_to_string(d2.join("etc/new-in-v2.conf")).unwrap(),
        "v2 default\n"
    );
    assert_eq!(
        fs::read_to_string(d2.join("etc/default.conf")).unwrap(),
        "default 2\n",
        "untouched default follows the image"
    );
    assert_eq!(
        fs::read_to_string(&var).unwrap(),
        "data\n",
        "/var untouched"
    );
    let st = env.status();
    assert_eq!(
        st["deployments"][0]["kernel-arguments"],
        serde_json::json!(["root=UUID=1234", "quiet"]),
        "kargs carried over"
    );
    assert_eq!(st["deployments"][1]["rollback"], true);

    // Upgrading again with nothing new makes no deployment and writes no boot set.
    let loader = fs::read_link(env.sysroot.join("boot/loader")).unwrap();
    let out = env.stratum(&["upgrade", "--unchanged-exit-77", "--apply-now"]);
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(
        fs::read_link(env.sysroot.join("boot/loader")).unwrap(),
        loader
    );

    // Rollback: only the boot set changes.
    let dirs = env.deploy_dirs();
    ok(env.stratum(&["rollback"]));
    assert_eq!(env.checksums(), vec![v1.clone(), v2.clone()]);
    assert_eq!(
        ostree_admin_order(&env.sysroot),
        vec![v1.clone(), v2.clone()]
    );
    assert_eq!(env.deploy_dirs(), dirs, "rollback makes no checkout");

    ok(env.stratum(&["cleanup", "-r"]));
    assert_eq!(env.checksums(), vec![v1.clone()]);
    assert_eq!(env.deploy_dirs(), vec![format!("{v1}.0")]);
    let boot_dirs = fs::read_dir(env.sysroot.join("boot/ostree"))
        .unwrap()
        .count();
    assert_eq!(
        boot_dirs, 1,
        "boot files of removed deployments are removed"
    );
}

#[test]
fn pinned_deployments_survive_cleanup_and_pruning_removes_unreferenced_commits() {
    let (env, v1) = setup();
    let v2 = env.compose_motd("2", "motd v2\n", &[]);
    ok(env.stratum(&["upgrade", "--apply-now"]));
    ok(env.stratum(&["pin", "1"]));
    assert_eq!(env.status()["deployments"][1]["pinned"], true);
    ok(env.stratum(&["cleanup", "-r"]));
    assert_eq!(
        env.checksums(),
        vec![v2.clone(), v1.clone()],
        "pinned v1 kept"
    );
    ok(env.stratum(&["pin", "1", "--unpin"]));
    ok(env.stratum(&["cleanup", "-r"]));
    assert_eq!(env.checksums(), vec![v2.clone()]);
    // v1 is on no ref and no deployment any more: its commit object is pruned.
    let out = Command::new("ostree")
        .args(["show", "--repo"])
        .arg(env.sysroot.join("ostree/repo"))
        .arg(&v1)
        .output()
        .unwrap();
    assert!(!out.status.success(), "v1 should have been pruned");
    let e = env.stratum(&["pin", "5"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no deployment at index 5"));
}

#[test]
fn staged_deployment_is_finalized_with_later_etc_edits() {
    let (env, v1) = setup();
    let v2 = env.compose_motd("2", "motd v2\n", &[]);
    ok(env.stratum(&["upgrade", "--stage"]));
    let st = env.status();
    assert_eq!(st["deployments"][0]["staged"], true);
    assert_eq!(st["deployments"][0]["checksum"], v2.as_str());
    assert_eq!(
        env.checksums()[1..].to_vec(),
        vec![v1.clone()],
        "boot set unchanged until finalize"
    );
    // An edit made after staging must reach the new deployment.
    fs::write(env.dep(&v1).join("etc/late.conf"), "late edit\n").unwrap();
    ok(env.stratum(&["finalize-staged"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);
    assert_eq!(
        fs::read_to_string(env.dep(&v2).join("etc/late.conf")).unwrap(),
        "late edit\n"
    );
    assert!(!env.run.join("staged-deployment").exists());
}

#[test]
fn etc_clash_is_an_error_and_leaves_nothing_behind() {
    let (env, v1) = setup();
    fs::write(env.dep(&v1).join("etc/clash"), "admin file\n").unwrap();
    env.compose_motd(
        "2",
        "motd v2\n",
        &[("etc/clash/inner.conf", "now a directory\n")],
    );
    let out = env.stratum(&["upgrade", "--apply-now"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("/etc/clash"), "{err}");
    assert_eq!(env.checksums(), vec![v1.clone()]);
    assert_eq!(
        env.deploy_dirs(),
        vec![format!("{v1}.0")],
        "no half-built deployment"
    );
}

#[test]
fn second_mutation_waits_or_fails_with_no_wait() {
    let (env, _) = setup();
    let lock = env.sysroot.join("ostree/lock");
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "30"])
        .spawn()
        .unwrap();
    // Wait until the holder has the lock (flock -n fails while it is held).
    while Command::new("flock")
        .arg("-n")
        .arg(&lock)
        .arg("true")
        .status()
        .unwrap()
        .success()
    {
        std::thread::yield_now();
    }
    let out = env.stratum(&["--no-wait", "cleanup", "-r"]);
    holder.kill().unwrap();
    let _ = holder.wait();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("locked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Crash (abort) at every commit step of deploy, rollback, cleanup, staging and finalizing:
/// afterwards the sysroot reads consistently, the default is the old or the new deployment,
/// and the next command leaves no half-built deployment.
#[test]
fn crash_at_every_failpoint_leaves_a_consistent_sysroot() {
    let points = [
        "deploy::after-checkout",
        "deploy::after-rename",
        "deploy::after-etc-merge",
        "bootloader::after-boot-files",
        "bootloader::after-bootlinks",
        "bootloader::after-generation",
        "bootloader::before-swap",
        "bootloader::after-swap",
        "ops::after-boot-set",
        "ops::after-gc",
    ];
    let (env, v1) = setup();
    let v2 = env.compose_motd("2", "motd v2\n", &[]);
    let pristine = env.dir.path().join("pristine");
    cp(&env.sysroot, &pristine);
    for point in points {
        restore(&pristine, &env.sysroot);
        env.crash_at(&["upgrade", "--apply-now"], point);
        let order = env.checksums();
        assert!(
            order == vec![v1.clone()] || order == vec![v2.clone(), v1.clone()],
            "{point}: boot set {order:?}"
        );
        for c in &order {
            assert!(
                env.dep(c).join("usr/bin/version").is_file(),
                "{point}: listed deployment {c} is not complete"
            );
        }
        // The next command cleans up whatever the crash left.
        ok(env.stratum(&["upgrade", "--apply-now"]));
        assert_eq!(
            env.checksums(),
            vec![v2.clone(), v1.clone()],
            "{point}: retry"
        );
        let dirs = env.deploy_dirs();
        assert_eq!(
            dirs.len(),
            2,
            "{point}: leftover deployment directories {dirs:?}"
        );
        assert_eq!(
            ostree_admin_order(&env.sysroot),
            vec![v2.clone(), v1.clone()],
            "{point}"
        );
    }
    // Rollback and cleanup crash at the boot-set steps too.
    for (cmd, point) in [
        ("rollback", "bootloader::before-swap"),
        ("rollback", "bootloader::after-swap"),
        ("cleanup", "bootloader::after-generation"),
    ] {
        restore(&pristine, &env.sysroot);
        ok(env.stratum(&["upgrade", "--apply-now"]));
        let args: &[&str] = if cmd == "cleanup" {
            &["cleanup", "-r"]
        } else {
            &["rollback"]
        };
        env.crash_at(args, point);
        let order = env.checksums();
        assert!(
            !order.is_empty() && order.iter().all(|c| env.dep(c).is_dir()),
            "{cmd} {point}: {order:?}"
        );
    }
    // Staging and finalizing: a crash leaves the boot set as it was, and finalizing again
    // brings the staged deployment in.
    for (args, point) in [
        (&["upgrade", "--stage"][..], "deploy::after-stage"),
        (&["finalize-staged"][..], "finalize::after-etc-merge"),
    ] {
        restore(&pristine, &env.sysroot);
        // A fresh run directory, as after a boot: no staged deployment yet.
        let _ = fs::remove_dir_all(&env.run);
        if args == ["finalize-staged"] {
            ok(env.stratum(&["upgrade", "--stage"]));
        }
        env.crash_at(args, point);
        let st = env.status();
        let booting: Vec<_> = st["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["staged"] != true)
            .map(|d| d["checksum"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(booting, vec![v1.clone()], "{point}: boot set");
        ok(env.stratum(&["finalize-staged"]));
        assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()], "{point}");
        assert_eq!(env.deploy_dirs().len(), 2, "{point}: leftovers");
    }
}

/// A build without the `failpoints` feature, as installed on machines, ignores `FAILPOINTS`.
#[test]
fn the_installed_build_ignores_failpoints() {
    let (env, v1) = setup();
    let v2 = env.compose_motd("2", "motd v2\n", &[]);
    let out = env.stratum_env(
        &["upgrade", "--apply-now"],
        &[("FAILPOINTS", "bootloader::before-swap=panic")],
    );
    ok(out);
    assert_eq!(env.checksums(), vec![v2, v1]);
}

fn restore(pristine: &Path, sysroot: &Path) {
    let _ = Command::new("chattr")
        .arg("-R")
        .arg("-i")
        .arg(sysroot)
        .output();
    cp(pristine, sysroot);
}

#[test]
fn deploy_by_version_rebase_and_immutable_roots() {
    let (env, v1) = setup();
    let v2 = env.compose_motd("2", "motd v2\n", &[]);
    let _v3 = env.compose_motd("3", "motd v3\n", &[]);
    // Version 2 is on the ref's history, behind the newest commit.
    ok(env.stratum(&["deploy", "--version", "2", "--apply-now"]));
    assert_eq!(env.checksums()[0], v2);
    let e = env.stratum(&["deploy", "--version", "9", "--apply-now"]);
    assert!(String::from_utf8_lossy(&e.stderr).contains("no commit with version 9"));
    // The deployment root is immutable, as OSTree makes it.
    let lsattr = Command::new("lsattr")
        .arg("-d")
        .arg(env.dep(&v2))
        .output()
        .unwrap();
    let flags = String::from_utf8_lossy(&lsattr.stdout);
    assert!(
        flags.split_whitespace().next().unwrap_or("").contains('i'),
        "not immutable: {flags}"
    );
    // Rebase to another ref of the same remote: the origin follows it from now on. (The
    // commit is built for os/y: one built for os/x is refused under os/y, see trust.rs.)
    let other = env.fake_os_root("y", &["var/lib"], &[("etc/motd", "motd y\n")]);
    let y = env.compose_ref(&other, "os/y", Some("y"), &[]);
    ok(env.stratum(&["rebase", "src:os/y", "--apply-now"]));
    assert_eq!(env.status()["deployments"][0]["origin"], "src:os/y");
    assert_eq!(env.checksums()[0], y);
    assert_ne!(y, v1);
}

#[test]
fn failed_finalize_is_reported_and_leaves_the_boot_set() {
    let (env, v1) = setup();
    env.compose_motd("2", "motd v2\n", &[]);
    ok(env.stratum(&["upgrade", "--stage"]));
    let out = env.stratum_failpoint(&["finalize-staged"], "finalize::after-etc-merge", "return");
    assert!(
        err(out).contains("failpoint finalize::after-etc-merge triggered"),
        "not the failpoint's error"
    );
    assert_eq!(env.checksums().last(), Some(&v1));
    let text = ok(env.stratum(&["status"]));
    assert!(
        text.contains("finalizing the staged deployment") && text.contains("failed"),
        "{text}"
    );
    assert!(!env.status()["finalize-failure"].is_null());
}

/// Changes stack on what boots next: `initramfs --enable` after a staged upgrade keeps the
/// upgrade, `--disable` undoes a staged `--enable`, an upgrade keeps the regeneration, and a
/// pin stays with its deployment.
#[test]
fn changes_stack_on_the_pending_deployment() {
    let env = Env::new();
    let dep_file = format!("usr/lib/modules/{FAKE_KVER}/modules.dep");
    let regen: [(&str, &str); 2] = [
        (&dep_file, ""),
        ("usr/lib/stratum/stratum-prepare-root", "fake init\n"),
    ];
    let v1 = env.compose_motd("1", "motd v1\n", &regen);
    env.install_following_src();
    let v2 = env.compose_motd("2", "motd v2\n", &regen);
    ok(env.stratum(&["upgrade", "--stage"]));
    // A failing change keeps the staged deployment (the fake kernel has no virtio modules).
    assert!(!env
        .stratum(&["initramfs", "--enable", "--stage"])
        .status
        .success());
    assert_eq!(env.status()["deployments"][0]["checksum"], v2.as_str());
    ok(env.stratum(&["initramfs", "--enable", "--arg=--generic", "--stage"]));
    let st = env.status();
    assert_eq!(st["deployments"][0]["staged"], true);
    assert_eq!(
        st["deployments"][0]["checksum"],
        v2.as_str(),
        "the staged upgrade was dropped"
    );
    let state = |env: &Env| -> serde_json::Value {
        serde_json::from_str(&ok(env.stratum(&["initramfs", "--json"]))).unwrap()
    };
    let s = state(&env);
    assert_eq!(
        (&s["regenerate"], &s["staged"]),
        (&true.into(), &true.into())
    );
    assert!(s["deployment"].as_str().unwrap().starts_with(&v2));

    // Changing one's mind before the reboot.
    ok(env.stratum(&["initramfs", "--disable", "--stage"]));
    assert_eq!(state(&env)["regenerate"], false);
    assert_eq!(env.status()["deployments"][0]["checksum"], v2.as_str());

    // Enabled and finalized, then pinned: the upgrade keeps the regeneration, not the pin.
    ok(env.stratum(&["initramfs", "--enable", "--arg=--generic", "--stage"]));
    ok(env.stratum(&["finalize-staged"]));
    assert_eq!(env.checksums()[0], v2);
    ok(env.stratum(&["pin", "0"]));
    let v3 = env.compose_motd("3", "motd v3\n", &regen);
    let out = env.stratum(&["upgrade"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    ok(out);
    // Same kernel and modules as v2: the regenerated image comes from the cache.
    assert!(err.contains("initramfs: cache hit"), "{err}");
    let st = env.status();
    let d = &st["deployments"][0];
    assert_eq!(d["checksum"], v3.as_str());
    let origin = fs::read_to_string(env.sysroot.join(format!(
        "ostree/deploy/default/deploy/{v3}.{}.origin",
        d["serial"]
    )))
    .unwrap();
    assert!(origin.contains("regenerate-initramfs=true"), "{origin}");
    assert!(
        !origin.contains("pinned"),
        "the pin was inherited:\n{origin}"
    );
    assert!(env.checksums().contains(&v1) || env.checksums().contains(&v2));
}
