//! Host integration tests of the boot set against an inconsistent or hostile world: a boot
//! partition that is not there, entries and bootlinks that do not match the disk, kernel
//! arguments GRUB would cut, corrupt records, a write that fails half-way. The real `stratum`
//! binary runs on a temporary sysroot with a real libostree repository; nothing it refuses
//! may lose a deployment.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

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
    let loader = fs::read_link(env.sysroot.join("boot/loader")).unwrap();
    let bv = loader
        .to_string_lossy()
        .trim_start_matches("loader.")
        .to_string();
    let links = env.sysroot.join(format!("ostree/boot.{bv}/default"));
    let rollback_link = fs::read_dir(&links)
        .unwrap()
        .flat_map(|csum| fs::read_dir(csum.unwrap().path()).unwrap())
        .map(|e| e.unwrap().path())
        .find(|p| fs::read_link(p).unwrap().to_string_lossy().contains(&v1))
        .expect("v1's bootlink");
    let target = fs::read_link(&rollback_link).unwrap();
    let ghost = format!("../../../deploy/default/deploy/{}.0", "e".repeat(64));
    fs::remove_file(&rollback_link).unwrap();
    std::os::unix::fs::symlink(&ghost, &rollback_link).unwrap();
    for args in [
        &["kargs", "--append", "x=1"][..],
        &["cleanup", "-r"],
        &["rollback"],
    ] {
        stratum_failing(&env, args, "does not exist");
    }
    assert_eq!(env.deploy_dirs().len(), 2);
    assert_eq!(snapshot(&env.sysroot.join("boot")), before, "/boot changed");
    fs::remove_file(&rollback_link).unwrap();
    std::os::unix::fs::symlink(&target, &rollback_link).unwrap();
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
