//! Host integration tests of the boot set against an inconsistent or hostile world: a boot
//! partition that is not there, entries and bootlinks that do not match the disk, two entries
//! for one deployment, a symlink in a deployment's place, a `--stateroot` that is a path,
//! kernel arguments GRUB would cut, corrupt records, a write that fails half-way. The real
//! `stratum` binary runs on a temporary sysroot with a real libostree repository; nothing it
//! refuses may lose a deployment.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A sysroot with v1 installed, then v2 deployed on top: boot set [v2, v1].
fn two_deployments() -> (Env, String, String) {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[]);
    env.install_following_src();
    let v2 = env.compose_fake_os("2", &[], &[]);
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);
    (env, v1, v2)
}

/// Every file below `dir` with its contents (symlinks as their targets), for before/after
/// comparisons.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_symlink() {
                out.push((
                    p.clone(),
                    fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes(),
                ));
            } else if m.is_dir() {
                out.push((p.clone(), Vec::new()));
                stack.push(p);
            } else {
                out.push((p.clone(), fs::read(&p).unwrap()));
            }
        }
    }
    out.sort();
    out
}

fn stratum_failing(env: &Env, args: &[&str], expect: &str) {
    let e = err(env.stratum(args));
    assert!(e.contains(expect), "{args:?}: expected {expect:?} in: {e}");
}

/// The bootlink of the current generation that points to a deployment of commit `csum`.
fn bootlink_of(env: &Env, csum: &str) -> PathBuf {
    let loader = fs::read_link(env.sysroot.join("boot/loader")).unwrap();
    let bv = loader
        .to_string_lossy()
        .trim_start_matches("loader.")
        .to_string();
    let links = env.sysroot.join(format!("ostree/boot.{bv}/default"));
    fs::read_dir(&links)
        .unwrap()
        .flat_map(|bootcsum| fs::read_dir(bootcsum.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_link(p).unwrap().to_string_lossy().contains(csum))
        .unwrap_or_else(|| panic!("no bootlink to {csum}"))
}

/// Replaces the symlink `link` by one to `target`.
fn relink(link: &Path, target: &Path) {
    fs::remove_file(link).unwrap();
    std::os::unix::fs::symlink(target, link).unwrap();
}

/// Whether the directory `dir` itself carries the immutable flag (`lsattr -d`).
fn immutable(dir: &Path) -> bool {
    let out = Command::new("lsattr").arg("-d").arg(dir).output().unwrap();
    assert!(out.status.success(), "lsattr -d {}", dir.display());
    let flags = String::from_utf8_lossy(&out.stdout);
    flags.split_whitespace().next().unwrap_or("").contains('i')
}

/// `chattr FLAG DIR`.
fn chattr(flag: &str, dir: &Path) {
    let st = Command::new("chattr").arg(flag).arg(dir).status().unwrap();
    assert!(st.success(), "chattr {flag} {}", dir.display());
}

#[test]
fn missing_boot_partition_is_refused_and_loses_nothing() {
    let (env, v1, v2) = two_deployments();
    // The root partition mounted on its own: /boot is an empty directory.
    let boot = env.sysroot.join("boot");
    let hidden = env.dir.path().join("boot-partition");
    fs::rename(&boot, &hidden).unwrap();
    fs::create_dir(&boot).unwrap();
    for args in [
        &["cleanup", "-p"][..],
        &["cleanup", "-r"],
        &["cleanup", "-p", "-r"],
        &["rollback"],
        &["kargs", "--append", "quiet2"],
        &["upgrade", "--apply-now"],
        &["status"],
    ] {
        stratum_failing(&env, args, "no boot set");
    }
    assert_eq!(env.deploy_dirs().len(), 2, "a deployment was removed");
    fs::remove_dir(&boot).unwrap();
    fs::rename(&hidden, &boot).unwrap();
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn boot_set_that_does_not_match_the_disk_is_an_error_not_a_deletion() {
    let (env, v1, v2) = two_deployments();
    let entries = env.sysroot.join("boot/loader/entries");
    let before = snapshot(&env.sysroot.join("boot"));

    // A bootlink that names a deployment which is not there.
    let rollback_link = bootlink_of(&env, &v1);
    let target = fs::read_link(&rollback_link).unwrap();
    let ghost = format!("../../../deploy/default/deploy/{}.0", "e".repeat(64));
    relink(&rollback_link, Path::new(&ghost));
    for args in [
        &["kargs", "--append", "x=1"][..],
        &["cleanup", "-r"],
        &["rollback"],
    ] {
        stratum_failing(&env, args, "does not exist");
    }
    assert_eq!(env.deploy_dirs().len(), 2);
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    relink(&rollback_link, &target);
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);

    // A boot entry deleted by hand: its deployment is still linked and on disk.
    let rollback_entry = entries.join("ostree-1-default.conf");
    let text = fs::read(&rollback_entry).unwrap();
    fs::remove_file(&rollback_entry).unwrap();
    for args in [
        &["kargs", "--append", "x=1"][..],
        &["cleanup", "-p"],
        &["upgrade", "--apply-now"],
    ] {
        stratum_failing(&env, args, "no boot entry");
    }
    assert_eq!(env.deploy_dirs().len(), 2, "a deployment was removed");
    fs::write(&rollback_entry, text).unwrap();
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn two_boot_entries_for_one_deployment_are_refused_before_any_collection() {
    let (env, v1, v2) = two_deployments();
    let before = snapshot(&env.sysroot.join("boot"));
    // The rollback entry's bootlink retargeted to the default deployment: both entries boot
    // v2, and v1 looks unused to the collector.
    let rollback_link = bootlink_of(&env, &v1);
    let target = fs::read_link(&rollback_link).unwrap();
    relink(
        &rollback_link,
        Path::new(&format!("../../../deploy/default/deploy/{v2}.0")),
    );
    for args in [
        &["status"][..],
        &["kargs", "--append", "x"],
        &["cleanup", "-r"],
        &["rollback"],
        &["upgrade", "--apply-now"],
    ] {
        let e = err(env.stratum(args));
        for expect in [
            "both boot deployment",
            "ostree-1-default.conf",
            "ostree-2-default.conf",
            "point each bootlink back",
        ] {
            assert!(e.contains(expect), "{args:?}: expected {expect:?} in: {e}");
        }
    }
    assert_eq!(env.deploy_dirs().len(), 2, "a deployment was removed");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    relink(&rollback_link, &target);
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn a_bootlink_to_another_stateroots_deployment_is_refused_before_any_collection() {
    let (env, v1, v2) = two_deployments();
    // Stateroot `other` holds a deployment of the rollback's commit under the same name.
    let theirs = env
        .sysroot
        .join(format!("ostree/deploy/other/deploy/{v1}.0"));
    fs::create_dir_all(theirs.join("usr")).unwrap();
    fs::create_dir_all(env.sysroot.join("ostree/deploy/other/var")).unwrap();
    let before = snapshot(&env.sysroot.join("boot"));
    // The rollback's bootlink, in `boot.N.M/default/`, retargeted there: read by its last
    // component it would be `default/<v1>.0`, while the kernel would boot `other`'s, which
    // the collector, seeing it outside the boot set, would remove.
    let rollback_link = bootlink_of(&env, &v1);
    let target = fs::read_link(&rollback_link).unwrap();
    let own = format!("../../../deploy/default/deploy/{v1}.0");
    assert_eq!(target, Path::new(&own));
    let hostile = format!("../../../deploy/other/deploy/{v1}.0");
    relink(&rollback_link, Path::new(&hostile));
    for args in [
        &["status"][..],
        &["kargs", "--append", "x"],
        &["cleanup", "-r"],
        &["rollback"],
    ] {
        let e = err(env.stratum(args));
        for expect in [
            "ostree-1-default.conf",
            &format!("points to {hostile}, but it should point to {own}"),
            "ln -sfn",
        ] {
            assert!(e.contains(expect), "{args:?}: expected {expect:?} in: {e}");
        }
    }
    // Any other path ending in the deployment's name is refused the same way.
    for other in [
        format!("/ostree/deploy/default/deploy/{v1}.0"),
        format!("../../../deploy/other/../default/deploy/{v1}.0"),
    ] {
        relink(&rollback_link, Path::new(&other));
        stratum_failing(&env, &["kargs", "--append", "x"], "but it should point to");
    }
    assert!(
        theirs.join("usr").is_dir(),
        "other's deployment was collected"
    );
    assert_eq!(env.deploy_dirs().len(), 2, "a deployment was removed");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    relink(&rollback_link, &target);
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn a_symlink_in_a_deployments_place_is_never_a_deployment() {
    let (env, v1, v2) = two_deployments();
    let (d1, d2) = (env.dep(&v1), env.dep(&v2));
    assert!(immutable(&d2));
    let before = snapshot(&env.sysroot.join("boot"));
    // v1's directory replaced by a symlink to v2's: a rollback would make "v1" the default
    // and a cleanup would then remove v2, the real one.
    let hidden = env.dir.path().join("v1-real");
    chattr("-i", &d1);
    fs::rename(&d1, &hidden).unwrap();
    std::os::unix::fs::symlink(format!("{v2}.0"), &d1).unwrap();
    for args in [
        &["status"][..],
        &["rollback"],
        &["cleanup", "-r"],
        &["kargs", "--append", "x"],
    ] {
        stratum_failing(&env, args, "is a symlink, not a directory");
    }
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    assert!(fs::symlink_metadata(&d1).unwrap().is_symlink());
    assert!(d2.join("usr").is_dir() && immutable(&d2));
    fs::remove_file(&d1).unwrap();
    fs::rename(&hidden, &d1).unwrap();
    chattr("+i", &d1);
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);

    // A symlink outside the boot set is garbage: the collector removes the link, and neither
    // removes nor unlocks (`chattr -i`) what it points to.
    let stray = env
        .sysroot
        .join(format!("ostree/deploy/default/deploy/{}.0", "f".repeat(64)));
    std::os::unix::fs::symlink(format!("{v2}.0"), &stray).unwrap();
    ok(env.stratum(&["kargs", "--append", "x"]));
    assert!(
        fs::symlink_metadata(&stray).is_err(),
        "the stray link stayed"
    );
    assert!(d2.join("usr").is_dir(), "v2 was removed");
    assert!(immutable(&d2), "v2 was unlocked through a symlink");
    assert_eq!(env.checksums(), vec![v2, v1]);
}

#[test]
fn stateroot_is_validated_and_honoured_by_every_verb() {
    let (env, v1, v2) = two_deployments();
    let before = snapshot(&env.sysroot.join("boot"));
    // A name that is a path is refused before any verb runs.
    for args in [
        &["--stateroot", "../../../x", "cleanup", "-r"][..],
        &["cleanup", "-r", "--stateroot", "../x"],
        &["--stateroot", "", "rollback"],
        &["--stateroot", ".hidden", "status"],
    ] {
        stratum_failing(&env, args, "invalid stateroot name");
    }
    // A stateroot without deployments: nothing of `default` may change.
    fn other<'a>(args: &[&'a str]) -> Vec<&'a str> {
        [&["--stateroot", "other"][..], args].concat()
    }
    ok(env.stratum(&other(&["cleanup", "-r"])));
    ok(env.stratum(&other(&["cleanup", "-p"])));
    stratum_failing(&env, &other(&["rollback"]), "in stateroot other");
    stratum_failing(
        &env,
        &other(&["kargs", "--append", "x"]),
        "no deployment in stateroot other",
    );
    stratum_failing(
        &env,
        &other(&["kargs", "--deploy-index", "1", "--append", "x"]),
        "belongs to stateroot default",
    );
    stratum_failing(&env, &other(&["pin", "1"]), "belongs to stateroot default");
    stratum_failing(
        &env,
        &other(&["remote", "list"]),
        "--stateroot means nothing",
    );
    assert_eq!(env.deploy_dirs().len(), 2, "a deployment was removed");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    assert_eq!(env.status()["deployments"][1]["pinned"], false);
    // Its own stateroot: honoured as before.
    ok(env.stratum(&["--stateroot", "default", "cleanup", "-r"]));
    assert_eq!(env.checksums(), vec![v2.clone()]);
    assert_eq!(env.deploy_dirs(), vec![format!("{v2}.0")]);
    assert_ne!(v1, v2);
}

#[test]
fn kernel_arguments_that_would_not_reach_the_kernel_are_refused() {
    let (env, _, v2) = two_deployments();
    let before = snapshot(&env.sysroot.join("boot"));
    let big = format!("big={}", "x".repeat(3000));
    stratum_failing(&env, &["kargs", "--append", &big], "2047");
    let huge = format!("huge={}", "y".repeat(8192));
    stratum_failing(&env, &["kargs", "--append", &huge], "2047");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    // What is accepted puts ostree= first, where a cut could never reach it.
    ok(env.stratum(&["kargs", "--append", "console=ttyS0"]));
    let entry = fs::read_to_string(
        env.sysroot
            .join("boot/loader/entries/ostree-2-default.conf"),
    )
    .unwrap();
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap();
    assert!(options.starts_with("ostree=/ostree/boot."), "{options}");
    assert!(options.ends_with("console=ttyS0"), "{options}");
    assert_eq!(env.checksums()[0], v2);
}

#[test]
fn kernel_version_with_a_newline_is_refused() {
    let env = Env::new();
    env.compose_fake_os("1", &[], &[]);
    env.install_following_src();
    // An image whose kernel directory name would inject a line into the boot entry.
    let root = env.dir.path().join("evil-root");
    let kver = "6.1.0-9-amd64\ninitrd evil.img";
    let moddir = root.join("usr/lib/modules").join(kver);
    for d in [root.join("usr/etc"), moddir.clone()] {
        fs::create_dir_all(d).unwrap();
    }
    fs::write(root.join("usr/lib/os-release"), "ID=fake\n").unwrap();
    fs::write(moddir.join("vmlinuz"), "kernel\n").unwrap();
    fs::write(moddir.join("initramfs.img"), "initrd\n").unwrap();
    // `stratum compose` refuses to build it ...
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratum"))
        .args([
            "compose",
            "rootfs",
            "--keep-initramfs",
            "--ref",
            "os/x",
            "--repo",
        ])
        .arg(&env.src)
        .arg(&root)
        .output()
        .unwrap();
    let e = err(out);
    assert!(e.contains("kernel version"), "{e}");
    // ... and an image made by other means is refused when deployed.
    let out = std::process::Command::new("ostree")
        .arg(format!("--repo={}", env.src.display()))
        .args(["commit", "-b", "os/x", "--tree"])
        .arg(format!("dir={}", root.display()))
        .output()
        .unwrap();
    succeeded(out, "ostree commit");
    let before = snapshot(&env.sysroot.join("boot"));
    stratum_failing(&env, &["upgrade", "--apply-now"], "kernel version");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    assert_eq!(
        env.deploy_dirs().len(),
        1,
        "a half-made deployment was left"
    );
}

#[test]
fn status_of_a_directory_that_is_not_a_sysroot_fails() {
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratum"))
        .arg("--sysroot")
        .arg(d.path())
        .arg("status")
        .output()
        .unwrap();
    let e = err(out);
    assert!(e.contains("not a sysroot"), "{e}");
}

#[test]
fn deploying_what_boots_next_changes_nothing() {
    let (env, v1, v2) = two_deployments();
    let before = snapshot(&env.sysroot.join("boot"));
    for args in [
        &["deploy", v2.as_str(), "--apply-now", "--unchanged-exit-77"][..],
        &["rebase", "src:os/x", "--apply-now", "--unchanged-exit-77"],
    ] {
        let out = env.stratum(args);
        assert_eq!(out.status.code(), Some(77), "{args:?}: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("already deployed"));
    }
    // Without the flag it is still no new deployment, and it succeeds.
    ok(env.stratum(&["deploy", &v2, "--apply-now"]));
    assert_eq!(
        env.checksums(),
        vec![v2.clone(), v1.clone()],
        "the rollback was dropped"
    );
    assert_eq!(env.deploy_dirs().len(), 2);
    assert_eq!(snapshot(&env.sysroot.join("boot")), before);
    // The rollback's commit is another matter: that is a new deployment.
    ok(env.stratum(&["deploy", &v1, "--apply-now"]));
    assert_eq!(env.checksums(), vec![v1.clone(), v2.clone()]);
}

#[test]
fn corrupt_staged_record_is_reported_and_cleanup_p_clears_it() {
    let (env, _, v2) = two_deployments();
    fs::create_dir_all(&env.run).unwrap();
    let record = env.run.join("staged-deployment");
    fs::write(&record, "{ not json").unwrap();
    stratum_failing(&env, &["upgrade", "--apply-now"], "cleanup -p");
    stratum_failing(&env, &["rollback"], "cleanup -p");
    let st = env.status();
    assert!(
        st["staged-problem"]
            .as_str()
            .is_some_and(|p| p.contains("corrupt")),
        "{st}"
    );
    ok(env.stratum(&["cleanup", "-p"]));
    assert!(!record.exists(), "the record is still there");
    assert!(env.status()["staged-problem"].is_null());
    assert_eq!(env.checksums()[0], v2);
    ok(env.stratum(&["rollback"]));
}

#[test]
fn failed_boot_set_write_leaves_no_trial_armed() {
    let env = Env::new();
    env.compose_fake_os("1", &[], &[]);
    env.install_following_src();
    env.compose_fake_os("2", &[], &[]);
    let grubenv = env.sysroot.join("boot/grubenv");
    let before = fs::read_to_string(&grubenv).unwrap();
    // The write fails after the trial was armed and before the swap (as ENOSPC would).
    for point in [
        "bootloader::after-boot-files",
        "bootloader::after-generation",
        "bootloader::before-swap",
    ] {
        let out = env.stratum_failpoint(&["upgrade", "--apply-now"], point, "return");
        assert!(!out.status.success(), "{point}: the failpoint did not fire");
        assert_eq!(
            fs::read_to_string(&grubenv).unwrap(),
            before,
            "{point}: grubenv changed"
        );
        let st = env.status();
        assert!(st["trial"].is_null(), "{point}: {st}");
        assert_eq!(
            env.deploy_dirs().len(),
            1,
            "{point}: unfinished deployment left"
        );
    }
    // After the swap the trial belongs to the new default and stays.
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert!(env.status()["trial"]["trial"].is_string());
}

#[test]
fn install_over_an_existing_sysroot_is_refused() {
    let (env, v1, v2) = two_deployments();
    let before = snapshot(&env.sysroot.join("boot"));
    let e = err(env.install_to_filesystem(["--ref", "os/x"]));
    assert!(e.contains("already holds deployments"), "{e}");
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    assert_eq!(env.checksums(), vec![v2, v1]);
}
