//! Scaffolding shared by the host integration tests: a temporary sysroot with a source
//! repository, the real `stratum` binary run against it, and a fake OS composed into it.
//!
//! Each test file compiles this module on its own and uses only part of it.
#![allow(dead_code)]

pub mod debian;
pub mod gpg;
pub mod http;

use std::ffi::OsStr;
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The kernel version of the fake OS.
pub const FAKE_KVER: &str = "6.1.0-9-amd64";

/// A temporary directory holding the source repository, the sysroot and the run directory.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub src: PathBuf,
    pub sysroot: PathBuf,
    pub run: PathBuf,
}

impl Drop for Env {
    fn drop(&mut self) {
        // Deployment roots are immutable; let the temporary directory go.
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(self.dir.path())
            .output();
    }
}

impl Env {
    /// A fresh temporary directory; nothing composed or installed yet.
    pub fn new() -> Env {
        Env::in_dir(tempfile::tempdir().unwrap())
    }

    /// A fresh temporary directory whose name starts with `prefix` (a path with characters
    /// that mount options or key files give a meaning).
    pub fn with_prefix(prefix: &str) -> Env {
        Env::in_dir(tempfile::Builder::new().prefix(prefix).tempdir().unwrap())
    }

    fn in_dir(dir: tempfile::TempDir) -> Env {
        Env {
            src: dir.path().join("src-repo"),
            sysroot: dir.path().join("sysroot"),
            run: dir.path().join("run"),
            dir,
        }
    }

    pub fn stratum(&self, args: &[&str]) -> Output {
        self.stratum_env(args, &[])
    }

    pub fn stratum_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.run_on_sysroot(Path::new(env!("CARGO_BIN_EXE_stratum")), args, env)
    }

    /// `stratum ARGS` built with failpoints, run with `FAILPOINTS=POINT=ACTION`: `return`
    /// makes that step fail with an error.
    pub fn stratum_failpoint(&self, args: &[&str], point: &str, action: &str) -> Output {
        let spec = format!("{point}={action}");
        self.run_on_sysroot(&stratum_failpoints(), args, &[("FAILPOINTS", &spec)])
    }

    /// `stratum ARGS` crashed at `point` (`FAILPOINTS=POINT=panic`: a release build aborts on
    /// panic, so no cleanup runs, as after a power cut); fails the test unless it died there.
    pub fn crash_at(&self, args: &[&str], point: &str) {
        let out = self.stratum_failpoint(args, point, "panic");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.signal() == Some(nix::libc::SIGABRT)
                && stderr.contains(&format!("failpoint {point} panic")),
            "stratum {args:?} did not abort at the failpoint {point} ({}): {stderr}",
            out.status
        );
    }

    fn run_on_sysroot(&self, bin: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = Command::new(bin);
        c.arg("--sysroot")
            .arg(&self.sysroot)
            .args(args)
            .env("STRATUM_RUN_DIR", &self.run);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("running stratum")
    }

    /// `stratum compose rootfs --keep-initramfs` of `root` into the source repository
    /// (ref `os/x`), with `--version` when given; the new commit.
    pub fn compose_root(&self, root: &Path, version: Option<&str>) -> String {
        self.compose_ref(root, "os/x", version, &[])
    }

    /// `stratum compose rootfs --keep-initramfs` of `root` into the source repository on
    /// `refname`, with `--version` when given and the environment `env`; the new commit.
    pub fn compose_ref(
        &self,
        root: &Path,
        refname: &str,
        version: Option<&str>,
        env: &[(&str, &str)],
    ) -> String {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stratum"));
        c.args(["compose", "rootfs", "--keep-initramfs", "--ref", refname]);
        if let Some(version) = version {
            c.args(["--version", version]);
        }
        c.envs(env.iter().copied());
        let out = c.arg("--repo").arg(&self.src).arg(root).output().unwrap();
        ok(out).trim().to_string()
    }

    /// What the sysroot repository's remote-tracking ref `src:os/x` points to.
    pub fn remote_ref(&self) -> String {
        let out = Command::new("ostree")
            .args(["rev-parse", "--repo"])
            .arg(self.sysroot.join("ostree/repo"))
            .arg("src:os/x")
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Composes a version of the fake OS (kernel + initramfs kept as given) into the source
    /// repository: the base tree, the extra directories `dirs`, then `files` (parents made).
    pub fn compose_fake_os(&self, version: &str, dirs: &[&str], files: &[(&str, &str)]) -> String {
        let root = self.fake_os_root(version, dirs, files);
        self.compose_root(&root, Some(version))
    }

    /// Writes the root filesystem of a version of the fake OS (see [`Env::compose_fake_os`])
    /// into the temporary directory; returns its path.
    pub fn fake_os_root(&self, version: &str, dirs: &[&str], files: &[(&str, &str)]) -> PathBuf {
        let root = self.dir.path().join(format!("root-{version}"));
        let modules = format!("usr/lib/modules/{FAKE_KVER}");
        for d in ["etc", &modules, "usr/bin", "boot"].iter().chain(dirs) {
            fs::create_dir_all(root.join(d)).unwrap();
        }
        fs::write(
            root.join("usr/lib/os-release"),
            "ID=fake\nPRETTY_NAME=\"Fake OS\"\n",
        )
        .unwrap();
        fs::write(root.join("usr/bin/version"), version).unwrap();
        fs::write(root.join(format!("boot/vmlinuz-{FAKE_KVER}")), "kernel\n").unwrap();
        fs::write(
            root.join(format!("boot/initrd.img-{FAKE_KVER}")),
            format!("initrd {version}\n"),
        )
        .unwrap();
        for (p, c) in files {
            fs::create_dir_all(root.join(p).parent().unwrap()).unwrap();
            fs::write(root.join(p), c).unwrap();
        }
        root
    }

    /// `stratum install to-filesystem ARGS --repo SRC SYSROOT`, unchecked.
    pub fn install_to_filesystem<S: AsRef<OsStr>>(
        &self,
        args: impl IntoIterator<Item = S>,
    ) -> Output {
        Command::new(env!("CARGO_BIN_EXE_stratum"))
            .args(["install", "to-filesystem"])
            .args(args)
            .arg("--repo")
            .arg(&self.src)
            .arg(&self.sysroot)
            .output()
            .unwrap()
    }

    /// Installs the source repository's `os/x` with kargs `root=UUID=1234 quiet`, following
    /// it as remote `src` (unsigned commits accepted).
    pub fn install_following_src(&self) {
        let url = format!("src=file://{}", self.src.display());
        ok(self.install_to_filesystem([
            "--karg",
            "root=UUID=1234",
            "--karg",
            "quiet",
            "--ref",
            "os/x",
            "--remote",
            &url,
            "--no-sign-verify",
        ]));
    }

    /// Installs the source repository's `os/x` with karg `root=UUID=1234`, following it as
    /// remote `pub` at `url` (an HTTP server of a published repository; unsigned commits
    /// accepted).
    pub fn install_following_http(&self, url: &str) {
        ok(self.install_to_filesystem([
            "--karg",
            "root=UUID=1234",
            "--ref",
            "os/x",
            "--remote",
            &format!("pub={url}"),
            "--no-sign-verify",
        ]));
    }

    /// `stratum compose publish --ref os/x ARGS` of the source repository to `to`
    /// (unsigned).
    pub fn publish(&self, to: &Path, args: &[&str]) {
        ok(Command::new(env!("CARGO_BIN_EXE_stratum"))
            .args(["compose", "publish", "--ref", "os/x"])
            .args(args)
            .arg("--repo")
            .arg(&self.src)
            .arg("--to")
            .arg(to)
            .output()
            .unwrap());
    }

    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&ok(self.stratum(&["status", "--json"]))).unwrap()
    }

    pub fn checksums(&self) -> Vec<String> {
        self.status()["deployments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["checksum"].as_str().unwrap().to_string())
            .collect()
    }

    /// The deployment directory of `csum` with serial 0.
    pub fn dep(&self, csum: &str) -> PathBuf {
        self.dep_serial(csum, 0)
    }

    pub fn dep_serial(&self, csum: &str, serial: u64) -> PathBuf {
        self.sysroot
            .join(format!("ostree/deploy/default/deploy/{csum}.{serial}"))
    }

    /// The deployment directories' names, sorted.
    pub fn deploy_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.sysroot.join("ostree/deploy/default/deploy"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.ends_with(".origin"))
            .collect();
        v.sort();
        v
    }
}

/// The `stratum` built with the `failpoints` feature (the `stratum-failpoints` example, which
/// `make build-failpoints` builds beside the binary under test): the only build that honours
/// `FAILPOINTS`.
pub fn stratum_failpoints() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_stratum"))
        .parent()
        .unwrap()
        .join("examples/stratum-failpoints");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `make build-failpoints` (cargo build --release -p stratum \
         --features failpoints --example stratum-failpoints)",
        bin.display()
    );
    bin
}

/// The stdout of a command that must have succeeded; `what` names it in the failure.
/// `ostree ARGS --repo=REPO`, which must succeed; its stdout.
pub fn ostree(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("ostree")
        .args(args)
        .arg(format!("--repo={}", repo.display()))
        .output()
        .unwrap();
    succeeded(out, &format!("ostree {args:?}"))
}

pub fn succeeded(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The stdout of a `stratum` run that must have succeeded.
pub fn ok(out: Output) -> String {
    succeeded(out, "stratum")
}

/// The stderr of a `stratum` run that must have failed.
pub fn err(out: Output) -> String {
    assert!(!out.status.success(), "stratum succeeded unexpectedly");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The stderr (progress and messages) of a `stratum` run that must have succeeded.
pub fn ok_stderr(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "stratum failed: {stderr}");
    stderr
}

/// `cp -a FROM TO`, replacing `to` (immutable deployment roots made writable first).
pub fn cp(from: &Path, to: &Path) {
    let _ = Command::new("chattr").arg("-R").arg("-i").arg(to).output();
    let _ = fs::remove_dir_all(to);
    assert!(Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .unwrap()
        .success());
}
