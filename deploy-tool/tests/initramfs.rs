//! Host integration tests of `stratum initramfs` and `stratum initramfs-etc`: the real binary
//! on a temporary sysroot with a real libostree repository.
//!
//! The fake OS carries an empty `modules.dep` and a stand-in init binary, so the native
//! generator is driven with `--arg=--generic` (every module of that mode is optional and this
//! kernel has none); the VM test builds from real kernel modules.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sha2::{Digest, Sha256};

use common::*;

const KVER: &str = FAKE_KVER;

impl Env {
    /// (checksum, serial, bootcsum) of each deployment, default first.
    fn deployments(&self) -> Vec<(String, u64, String)> {
        self.status()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["checksum"].as_str().unwrap().to_string(),
                    d["serial"].as_u64().unwrap(),
                    d["bootcsum"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }

    fn cache(&self) -> PathBuf {
        self.sysroot
            .join("ostree/deploy/default/var/cache/stratum/initramfs")
    }

    /// Every path under /boot with its bytes (or symlink target).
    fn boot_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        walk(&self.sysroot.join("boot"), &mut out);
        out
    }

    /// The default entry of the current generation.
    fn default_entry(&self) -> String {
        let dir = self.sysroot.join("boot/loader/entries");
        let mut best = (0u64, String::new());
        for e in fs::read_dir(dir).unwrap() {
            let text = fs::read_to_string(e.unwrap().path()).unwrap();
            let v = text
                .lines()
                .find_map(|l| l.strip_prefix("version "))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if v >= best.0 {
                best = (v, text);
            }
        }
        best.1
    }
}

fn walk(p: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
    let m = fs::symlink_metadata(p).unwrap();
    if m.is_symlink() {
        out.insert(
            p.to_path_buf(),
            fs::read_link(p)
                .unwrap()
                .as_os_str()
                .as_encoded_bytes()
                .to_vec(),
        );
    } else if m.is_dir() {
        out.insert(p.to_path_buf(), b"<dir>".to_vec());
        for e in fs::read_dir(p).unwrap() {
            walk(&e.unwrap().path(), out);
        }
    } else {
        out.insert(p.to_path_buf(), fs::read(p).unwrap());
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A sysroot with the fake OS v1 installed.
fn setup() -> (Env, String) {
    let env = Env::new();
    let root = env.dir.path().join("root");
    for d in ["etc", "usr/lib/stratum", "usr/bin", "boot", "var/lib"] {
        fs::create_dir_all(root.join(d)).unwrap();
    }
    let moddir = root.join("usr/lib/modules").join(KVER);
    fs::create_dir_all(&moddir).unwrap();
    fs::write(moddir.join("modules.dep"), "").unwrap();
    fs::write(
        root.join("usr/lib/os-release"),
        "ID=fake\nPRETTY_NAME=\"Fake OS\"\n",
    )
    .unwrap();
    fs::write(
        root.join("usr/lib/stratum/stratum-prepare-root"),
        "fake init\n",
    )
    .unwrap();
    fs::write(root.join("etc/motd"), "hello\n").unwrap();
    fs::write(root.join(format!("boot/vmlinuz-{KVER}")), "kernel\n").unwrap();
    fs::write(root.join(format!("boot/initrd.img-{KVER}")), "initrd 1\n").unwrap();
    let v1 = env.compose_root(&root, None);
    ok(env.install_to_filesystem(["--karg", "root=UUID=1234", "--ref", "os/x"]));
    (env, v1)
}

/// A second commit in the sysroot's repository: the same OS with another `/usr/bin/version`
/// (kernel, modules and init unchanged), so deploying it is a new deployment whose native
/// initramfs inputs are those of v1.
fn second_commit(env: &Env) -> String {
    let root = env.dir.path().join("root");
    fs::write(root.join("usr/bin/version"), "2\n").unwrap();
    let v2 = env.compose_root(&root, None);
    pull_into_sysroot(env, &v2);
    v2
}

/// Copies commit `rev` of the source repository into the sysroot's (again, after a prune).
fn pull_into_sysroot(env: &Env, rev: &str) {
    let out = Command::new("ostree")
        .arg("pull-local")
        .arg(format!(
            "--repo={}",
            env.sysroot.join("ostree/repo").display()
        ))
        .arg(&env.src)
        .arg(rev)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn digest_line(err: &str, what: &str) -> Option<String> {
    err.lines()
        .find_map(|l| l.strip_prefix(&format!("initramfs: {what} ")))
        .map(|r| r.split_whitespace().next().unwrap().to_string())
}

fn sha256_boot(vmlinuz: &Path, initramfs: &Path) -> String {
    let mut h = Sha256::new();
    h.update(fs::read(vmlinuz).unwrap());
    h.update(fs::read(initramfs).unwrap());
    hex::encode(h.finalize())
}

#[test]
fn enable_regenerates_caches_and_disable_restores() {
    let (env, v1) = setup();
    let original_bootcsum = env.deployments()[0].2.clone();
    assert!(ok(env.stratum(&["initramfs"])).contains("regeneration: disabled"));
    // A bad native argument changes nothing.
    let out = env.stratum(&["initramfs", "--enable", "--arg=--frobnicate"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--frobnicate"), "{}", stderr(&out));
    assert_eq!(env.deployments().len(), 1);

    // --enable: a new deployment of the same commit with a regenerated initramfs.
    let out = env.stratum(&["initramfs", "--enable", "--arg=--generic"]);
    let err = stderr(&out);
    ok(out);
    let digest = digest_line(&err, "regenerated").unwrap_or_else(|| panic!("{err}"));
    let deps = env.deployments();
    assert_eq!(deps.len(), 2, "{deps:?}");
    assert_eq!((deps[0].0.as_str(), deps[0].1), (v1.as_str(), 1));
    let new = env.dep_serial(&v1, 1);
    let img = new.join(format!("usr/lib/modules/{KVER}/initramfs.img"));
    let cached = env.cache().join(format!("{digest}.img"));
    assert_eq!(fs::read(&img).unwrap(), fs::read(&cached).unwrap());
    // The checkout's hardlink into the repository was replaced, not written through.
    assert_eq!(fs::metadata(&img).unwrap().nlink(), 1);
    let old_img = env
        .dep_serial(&v1, 0)
        .join(format!("usr/lib/modules/{KVER}/initramfs.img"));
    assert_eq!(fs::read(&old_img).unwrap(), b"initrd 1\n");
    // The manifest inside records the input digest (prepare-root copies it into boot.json).
    let summary = stratum_initramfs::inspect(&img).unwrap();
    assert_eq!(summary.stratum.unwrap()["input_digest"], digest.as_str());
    // The bootcsum covers the regenerated image, and /boot holds that image.
    let bootcsum = &deps[0].2;
    assert_ne!(bootcsum, &original_bootcsum);
    assert_eq!(
        bootcsum,
        &sha256_boot(&new.join(format!("usr/lib/modules/{KVER}/vmlinuz")), &img)
    );
    let boot_img = env.sysroot.join(format!(
        "boot/ostree/default-{bootcsum}/initramfs-{KVER}.img"
    ));
    assert_eq!(fs::read(&boot_img).unwrap(), fs::read(&img).unwrap());
    let origin = fs::read_to_string(
        env.sysroot
            .join(format!("ostree/deploy/default/deploy/{v1}.1.origin")),
    )
    .unwrap();
    assert!(origin.contains("regenerate-initramfs=true"), "{origin}");
    assert!(origin.contains("initramfs-args=--generic;"), "{origin}");
    let state: serde_json::Value =
        serde_json::from_str(&ok(env.stratum(&["initramfs", "--json"]))).unwrap();
    assert_eq!(state["regenerate"], true);
    assert_eq!(state["generator"], "native");
    // Same settings again: nothing to do.
    let out = env.stratum(&["initramfs", "--enable", "--arg=--generic"]);
    assert!(stderr(&out).contains("nothing to do"), "{}", stderr(&out));
    assert_eq!(env.deployments().len(), 2);

    // The next deployment with unchanged inputs (another commit, same kernel, modules and
    // init) is served from the cache: same file, same inode, same mtime.
    let v2 = second_commit(&env);
    let before = fs::metadata(&cached).unwrap();
    let out = env.stratum(&["deploy", &v2]);
    let err = stderr(&out);
    ok(out);
    assert_eq!(
        digest_line(&err, "cache hit"),
        Some(digest.clone()),
        "{err}"
    );
    assert!(digest_line(&err, "regenerated").is_none(), "{err}");
    let after = fs::metadata(&cached).unwrap();
    assert_eq!(
        (before.ino(), before.mtime(), before.mtime_nsec()),
        (after.ino(), after.mtime(), after.mtime_nsec())
    );
    assert_eq!(env.deployments()[0].2, *bootcsum, "same boot files");

    // A configuration change in /etc is an input: it rebuilds.
    let d = env.deployments();
    let cur = env.dep_serial(&d[0].0, d[0].1);
    fs::create_dir_all(cur.join("etc/stratum")).unwrap();
    fs::write(cur.join("etc/stratum/initramfs.toml"), "firmware = false\n").unwrap();
    let out = env.stratum(&["deploy", &v1]);
    let err = stderr(&out);
    ok(out);
    let d2 = digest_line(&err, "regenerated").unwrap_or_else(|| panic!("{err}"));
    assert_ne!(d2, digest);

    // --disable: the image's own initramfs again, never regenerated.
    let out = env.stratum(&["initramfs", "--disable"]);
    let err = stderr(&out);
    ok(out);
    assert!(!err.contains("initramfs: "), "{err}");
    let d = env.deployments();
    assert_eq!(d[0].2, original_bootcsum);
    let img = env
        .dep_serial(&d[0].0, d[0].1)
        .join(format!("usr/lib/modules/{KVER}/initramfs.img"));
    assert_eq!(fs::read(&img).unwrap(), b"initrd 1\n");
    pull_into_sysroot(&env, &v2);
    let out = env.stratum(&["deploy", &v2]);
    assert!(!stderr(&out).contains("initramfs: "), "{}", stderr(&out));
    ok(out);
    let out = env.stratum(&["initramfs", "--disable"]);
    assert!(!out.status.success(), "disabling twice must fail");
    // OSTree still reads the sysroot.
    let st = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(&env.sysroot)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}

#[test]
fn initramfs_etc_tracks_files_as_an_extra_initrd() {
    let (env, v1) = setup();
    let dep = env.dep_serial(&v1, 0);
    fs::write(dep.join("etc/stratum-test.conf"), "secret=1\n").unwrap();
    fs::create_dir_all(dep.join("etc/somedir")).unwrap();
    std::os::unix::fs::symlink("motd", dep.join("etc/motd-link")).unwrap();
    let fifo = dep.join("etc/fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());

    // Bad paths: an error, and /boot byte-identical.
    let snap = env.boot_snapshot();
    for bad in [
        "/etc/missing.conf",
        "/etc/../usr/lib/os-release",
        "/usr/lib/os-release",
        "etc/stratum-test.conf",
        "/etc",
        "/etc/somedir",
        "/etc/motd-link",
        "/etc/fifo",
    ] {
        let out = env.stratum(&["initramfs-etc", "--track", bad]);
        assert!(!out.status.success(), "{bad} was accepted");
        assert!(!stderr(&out).is_empty());
        assert!(env.boot_snapshot() == snap, "{bad}: /boot changed");
    }
    // A good and a bad path together: nothing changes either.
    let out = env.stratum(&[
        "initramfs-etc",
        "--track",
        "/etc/stratum-test.conf",
        "--track",
        "/etc/missing.conf",
    ]);
    assert!(!out.status.success());
    assert!(env.boot_snapshot() == snap);

    // Tracking: same deployment, new boot generation with a second initrd.
    let deps_before = env.deployments();
    let out = env.stratum(&["initramfs-etc", "--track", "/etc/./stratum-test.conf"]);
    ok(out);
    assert_eq!(env.deployments(), deps_before, "no new deployment");
    let entry = env.default_entry();
    let initrds: Vec<&str> = entry
        .lines()
        .filter_map(|l| l.strip_prefix("initrd "))
        .collect();
    assert_eq!(initrds.len(), 2, "{entry}");
    assert!(
        initrds[1].starts_with("/ostree/initramfs-overlays/"),
        "{entry}"
    );
    let grub = fs::read_to_string(env.sysroot.join("boot/loader/grub.cfg")).unwrap();
    assert!(
        grub.contains(&format!("initrd '{}' '{}'", initrds[0], initrds[1])),
        "{grub}"
    );
    let overlay = env.sysroot.join("boot").join(&initrds[1][1..]);
    let data = fs::read(&overlay).unwrap();
    let name = overlay.file_stem().unwrap().to_string_lossy().into_owned();
    assert_eq!(name, hex::encode(Sha256::digest(&data)), "named by content");
    let members = stratum_initramfs::list(&overlay).unwrap();
    let paths: Vec<&str> = members.iter().map(|m| m.path.as_str()).collect();
    assert!(paths.contains(&"/etc/stratum-test.conf"), "{paths:?}");
    assert!(
        paths.contains(&"/etc/stratum/tracked-etc.list"),
        "{paths:?}"
    );
    assert!(ok(env.stratum(&["initramfs-etc"])).contains("/etc/stratum-test.conf"));
    let origin = fs::read_to_string(
        env.sysroot
            .join(format!("ostree/deploy/default/deploy/{v1}.0.origin")),
    )
    .unwrap();
    assert!(
        origin.contains("initramfs-etc=/etc/stratum-test.conf;"),
        "{origin}"
    );
    // Unchanged list: no new generation; --force-sync picks up new contents.
    let snap = env.boot_snapshot();
    let out = env.stratum(&["initramfs-etc", "--track", "/etc/stratum-test.conf"]);
    ok(out);
    assert!(env.boot_snapshot() == snap);
    fs::write(dep.join("etc/stratum-test.conf"), "secret=2\n").unwrap();
    ok(env.stratum(&["initramfs-etc", "--force-sync"]));
    let entry = env.default_entry();
    assert!(
        !entry.contains(&initrds[1].to_string()),
        "new contents, new overlay"
    );
    assert!(!overlay.exists(), "the unused overlay was removed");

    // A new deployment carries the tracked files along.
    let v2 = second_commit(&env);
    ok(env.stratum(&["deploy", &v2]));
    let entry = env.default_entry();
    let n = entry.lines().filter(|l| l.starts_with("initrd ")).count();
    assert_eq!(n, 2, "{entry}");

    // Untracking: back to one initrd; overlays still used by the rollback entry stay.
    ok(env.stratum(&["initramfs-etc", "--untrack-all"]));
    let entry = env.default_entry();
    assert_eq!(
        entry.lines().filter(|l| l.starts_with("initrd ")).count(),
        1
    );
    let left: Vec<_> = fs::read_dir(env.sysroot.join("boot/ostree/initramfs-overlays"))
        .unwrap()
        .collect();
    assert_eq!(left.len(), 1, "the rollback entry's overlay is kept");
    let st = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(&env.sysroot)
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
