//! Host integration tests: the real `stratum` binary against temporary roots, repositories
//! and sysroots, with the real libostree and Debian's `ostree` CLI as the peer.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

fn stratum(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratum"))
        .args(args)
        .output()
        .expect("running stratum")
}

/// A small root filesystem with a (fake) kernel and an initramfs kept as is.
fn fake_root(dir: &Path, kernels: &[&str]) -> PathBuf {
    let r = dir.join("rootfs");
    for d in [
        "etc",
        "var/lib/demo",
        "usr/lib",
        "usr/bin",
        "boot",
        "root",
        "home",
    ] {
        fs::create_dir_all(r.join(d)).unwrap();
    }
    fs::write(
        r.join("usr/lib/os-release"),
        "ID=debian\nPRETTY_NAME=\"Fake OS\"\n",
    )
    .unwrap();
    fs::write(r.join("etc/motd"), "hello\n").unwrap();
    fs::write(r.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    fs::write(r.join("var/lib/demo/state"), "state\n").unwrap();
    for k in kernels {
        fs::create_dir_all(r.join("usr/lib/modules").join(k)).unwrap();
        fs::write(r.join(format!("boot/vmlinuz-{k}")), format!("kernel {k}\n")).unwrap();
        fs::write(
            r.join(format!("boot/initrd.img-{k}")),
            format!("initrd {k}\n"),
        )
        .unwrap();
    }
    r
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The repository `DIR/repo` holding a fake root with one kernel, composed with
/// `--keep-initramfs` as `os/x`.
fn composed_fake_root(dir: &Path) -> PathBuf {
    let root = fake_root(dir, &["6.1.0-9-amd64"]);
    let repo = dir.join("repo");
    ok(compose_kept(&root, &repo, "os/x", &[]));
    repo
}

/// `compose rootfs --keep-initramfs` of `root` into `repo` on `refname`, with `more`
/// options.
fn compose_kept(root: &Path, repo: &Path, refname: &str, more: &[&str]) -> Output {
    let mut args = vec![
        "compose",
        "rootfs",
        "--keep-initramfs",
        "--repo",
        path(repo),
        "--ref",
        refname,
    ];
    args.extend(more);
    args.push(path(root));
    stratum(&args)
}

fn repo_refs(repo: &Path) -> String {
    let out = Command::new("ostree")
        .args(["refs", "--repo"])
        .arg(repo)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn compose_then_install_is_read_by_ostree() {
    let d = tempfile::tempdir().unwrap();
    let root = fake_root(d.path(), &["6.1.0-9-amd64"]);
    let repo = d.path().join("repo");
    let commit = ok(stratum(&[
        "compose",
        "rootfs",
        path(&root),
        "--repo",
        path(&repo),
        "--ref",
        "os/x",
        "--version",
        "7.1",
        "--keep-initramfs",
    ]));
    let commit = commit.trim();
    assert_eq!(commit.len(), 64);
    // The input directory is untouched.
    assert!(root.join("etc/motd").is_file() && root.join("boot/vmlinuz-6.1.0-9-amd64").is_file());
    // Layout rules, as libostree sees the commit.
    let ls = Command::new("ostree")
        .args(["ls", "-R", "--repo"])
        .arg(&repo)
        .arg(commit)
        .output()
        .unwrap();
    let ls = String::from_utf8_lossy(&ls.stdout);
    for want in [
        "/usr/lib/modules/6.1.0-9-amd64/vmlinuz",
        "/usr/lib/modules/6.1.0-9-amd64/initramfs.img",
        "/usr/etc/motd",
        "/home -> var/home",
        "/ostree -> sysroot/ostree",
        "/usr/share/factory/var/lib/demo/state",
    ] {
        assert!(ls.contains(want), "commit lacks {want}:\n{ls}");
    }
    let meta = Command::new("ostree")
        .args(["show", "--repo"])
        .arg(&repo)
        .arg(commit)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&meta.stdout).contains("Version: 7.1"));

    let sysroot = d.path().join("sysroot");
    ok(stratum(&[
        "install",
        "to-filesystem",
        "--repo",
        path(&repo),
        "--ref",
        "os/x",
        "--karg",
        "quiet",
        path(&sysroot),
    ]));
    let dep = sysroot.join(format!("ostree/deploy/default/deploy/{commit}.0"));
    assert_eq!(fs::read_to_string(dep.join("etc/motd")).unwrap(), "hello\n");
    assert_eq!(
        fs::read_link(sysroot.join("boot/loader")).unwrap(),
        Path::new("loader.0")
    );
    let entry =
        fs::read_to_string(sysroot.join("boot/loader/entries/ostree-1-default.conf")).unwrap();
    // ostree= first: a command line GRUB had to cut could never lose it.
    let options = entry
        .lines()
        .find_map(|l| l.strip_prefix("options "))
        .unwrap();
    assert!(
        options.starts_with("ostree=/ostree/boot.0/default/"),
        "{entry}"
    );
    assert!(options.ends_with("/0 quiet"), "{entry}");
    let grub = fs::read_to_string(sysroot.join("boot/loader/grub.cfg")).unwrap();
    assert!(grub.contains("'quiet'"), "{grub}");
    // /etc is a copy, never a hardlink into the repository.
    use std::os::unix::fs::MetadataExt;
    assert_eq!(fs::metadata(dep.join("etc/motd")).unwrap().nlink(), 1);
    // The new stateroot's /var starts as the image's, as a copy too.
    let var_state = sysroot.join("ostree/deploy/default/var/lib/demo/state");
    assert_eq!(fs::read_to_string(&var_state).unwrap(), "state\n");
    assert_eq!(fs::metadata(&var_state).unwrap().nlink(), 1);
    assert!(!sysroot.join("ostree/deploy/default/.var.seed").exists());

    let st = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(&sysroot)
        .output()
        .unwrap();
    let st = String::from_utf8_lossy(&st.stdout);
    assert!(
        st.contains(&format!("default {commit}.0")) && st.contains("Version: 7.1"),
        "ostree admin status:\n{st}"
    );

    let json = ok(stratum(&["--sysroot", path(&sysroot), "status", "--json"]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["deployments"][0]["checksum"], commit);
    assert_eq!(v["deployments"][0]["version"], "7.1");
    assert_eq!(v["deployments"][0]["origin"], "os/x");
}

#[test]
fn compose_errors_leave_the_repo_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let root = fake_root(d.path(), &["6.1.0-9-amd64"]);
    ok(stratum(&[
        "compose",
        "rootfs",
        path(&root),
        "--repo",
        path(&repo),
        "--ref",
        "os/x",
        "--keep-initramfs",
    ]));
    let before = repo_refs(&repo);
    let objects = || walkdir_count(&repo.join("objects"));
    let n = objects();

    let e = err(stratum(&[
        "compose",
        "rootfs",
        path(&root),
        "--repo",
        path(&repo),
        "--ref",
        "os/x",
        "--no-overwrite",
        "--keep-initramfs",
    ]));
    assert!(e.contains("exists") && e.contains("--no-overwrite"), "{e}");

    let file = d.path().join("file");
    fs::write(&file, "x").unwrap();
    let e = err(stratum(&[
        "compose",
        "rootfs",
        path(&file),
        "--repo",
        path(&repo),
        "--ref",
        "os/y",
    ]));
    assert!(e.contains("is not a directory"), "{e}");

    let two = fake_root(&d.path().join("two"), &["6.1.0-9-amd64", "6.2.0-1-amd64"]);
    let e = err(stratum(&[
        "compose",
        "rootfs",
        path(&two),
        "--repo",
        path(&repo),
        "--ref",
        "os/y",
        "--keep-initramfs",
    ]));
    assert!(e.contains("several kernels") && e.contains("--kver"), "{e}");

    let none = fake_root(&d.path().join("none"), &[]);
    let e = err(stratum(&[
        "compose",
        "rootfs",
        path(&none),
        "--repo",
        path(&repo),
        "--ref",
        "os/y",
    ]));
    assert!(e.contains("no kernel found"), "{e}");

    assert_eq!(repo_refs(&repo), before);
    assert_eq!(objects(), n);

    // A missing repository is not created by a failing compose.
    let fresh = d.path().join("fresh");
    err(stratum(&[
        "compose",
        "rootfs",
        path(&none),
        "--repo",
        path(&fresh),
        "--ref",
        "os/y",
    ]));
    assert!(!fresh.exists());
}

fn walkdir_count(dir: &Path) -> usize {
    let mut n = 0;
    for e in fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        n += if e.file_type().unwrap().is_dir() {
            walkdir_count(&e.path())
        } else {
            1
        };
    }
    n
}

/// `install to-disk` without `--workdir` stages in a scratch directory beside the image,
/// whose deployment is immutable; nothing of it stays behind.
#[test]
fn install_to_disk_leaves_only_the_image() {
    let d = tempfile::tempdir().unwrap();
    let repo = composed_fake_root(d.path());
    let images = d.path().join("images");
    fs::create_dir_all(&images).unwrap();
    let image = images.join("disk.img");
    let out = stratum(&to_disk_args(&repo, &image, &["--unsigned-grub"]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(entries(&images), ["disk.img"]);
}

/// By default a GRUB disk boots through the image's shim and signed GRUB: an image without
/// them is refused, naming the packages and the way out, and no disk is written.
#[test]
fn install_to_disk_needs_the_images_signed_chain() {
    let d = tempfile::tempdir().unwrap();
    let repo = composed_fake_root(d.path());
    let images = d.path().join("images");
    fs::create_dir_all(&images).unwrap();
    let image = images.join("disk.img");
    let out = stratum(&to_disk_args(&repo, &image, &[]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    for named in ["shim-signed", "grub-efi-amd64-signed", "--unsigned-grub"] {
        assert!(err.contains(named), "{named} not named: {err}");
    }
    assert!(entries(&images).is_empty(), "{:?}", entries(&images));
}

fn to_disk_args<'a>(repo: &'a Path, image: &'a Path, more: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "install",
        "to-disk",
        "--repo",
        path(repo),
        "--ref",
        "os/x",
        "--image",
        path(image),
        "--size",
        "1G",
    ];
    v.extend_from_slice(more);
    v
}

fn entries(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect()
}

/// Every path under `dir`, relative to it, sorted.
fn listing(dir: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            v.push(p.strip_prefix(dir).unwrap().to_path_buf());
            if p.is_dir() && !p.is_symlink() {
                stack.push(p);
            }
        }
    }
    v.sort();
    v
}

/// A key file that does not import is refused before anything is written: the target
/// directory is left as it was (no half-made sysroot holding a copy of the image). So is a
/// missing ref.
#[test]
fn install_with_a_bad_key_file_leaves_the_target_unchanged() {
    let d = tempfile::tempdir().unwrap();
    let repo = composed_fake_root(d.path());
    let target = d.path().join("target");
    fs::create_dir_all(target.join("boot")).unwrap();
    fs::write(target.join("keep"), "the admin's\n").unwrap();
    let before = listing(&target);
    let bad = d.path().join("bad-key.asc");
    fs::write(&bad, "not a key\n").unwrap();
    let remote = format!("updates=file://{}", repo.display());
    // `install to-filesystem --repo REPO ARGS TARGET`, which must fail; its stderr.
    let refused = |args: &[&str]| {
        let mut all = vec!["install", "to-filesystem", "--repo", path(&repo)];
        all.extend(args);
        all.push(path(&target));
        err(stratum(&all))
    };
    let e = refused(&[
        "--ref",
        "os/x",
        "--remote",
        &remote,
        "--remote-gpg-import",
        path(&bad),
    ]);
    assert_eq!(listing(&target), before, "the target changed: {e}");
    assert!(
        e.contains("bad-key.asc") && e.contains("--remote-gpg-import"),
        "{e}"
    );
    assert_eq!(
        fs::read_to_string(target.join("keep")).unwrap(),
        "the admin's\n"
    );

    // So is a ref the repository does not have.
    let e = refused(&["--ref", "os/none"]);
    assert_eq!(listing(&target), before, "the target changed: {e}");
    assert!(e.contains("os/none"), "{e}");
}

/// `compose rootfs --version/--ref` follow the manifest's rules: what no client can show in a
/// boot entry is refused before anything is written.
#[test]
fn compose_rootfs_refuses_versions_clients_refuse() {
    let d = tempfile::tempdir().unwrap();
    let root = fake_root(d.path(), &["6.1.0-9-amd64"]);
    let repo = d.path().join("repo");
    for (refname, version, says) in [
        ("os/x", "1\n2", "control character"),
        ("os/x", "1\u{1b}[2J", "control character"),
        ("os/x\ny", "1", "not a ref name"),
    ] {
        let e = err(compose_kept(&root, &repo, refname, &["--version", version]));
        assert!(e.contains(says), "{version:?}: {e}");
        assert!(!repo.exists(), "{version:?}: the repository was created");
    }
}
