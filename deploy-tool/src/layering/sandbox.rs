//! The sandbox maintainer scripts and triggers run in: bubblewrap over an overlay of the
//! tree being assembled.
//!
//! The tree is a hardlink checkout: its files are the repository's objects, and a script
//! that wrote into one in place would corrupt every commit that shares it. So the tree is
//! never the scripts' root. They see an overlay filesystem whose lower layer is the tree
//! (read-only to them) and whose upper layer is a scratch directory: every write, chmod or
//! delete lands in the upper layer as a new file or a whiteout. After each run the upper
//! layer is folded into the tree by renames, which replace links and never write through
//! them.
//!
//! Inside: the tree as `/`, its `/usr/etc` as `/etc`, fresh `/dev`, `/proc`, `/run` and
//! `/tmp`, no network, its own PID, IPC and UTS namespaces, nothing of the host; services
//! are not started (`policy-rc.d` says no, and no systemd runs there).

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Top-level directories of the upper layer that are mount points, not content.
const MOUNT_POINTS: &[&str] = &["etc", "dev", "proc", "run", "tmp", "sys"];

/// Refuses every service start and stop request of maintainer scripts (invoke-rc.d).
const POLICY_RC_D: &str =
    "#!/bin/sh\n# Services are not started while packages are layered.\nexit 101\n";

/// Programs packages call that must not run in an image being assembled: the kernel's and
/// the initramfs's are Stratum's (it regenerates the initramfs itself).
const NOOP_PROGRAMS: &[&str] = &[
    "usr/sbin/update-initramfs",
    "usr/sbin/update-grub",
    "usr/sbin/grub-install",
];

/// A sandbox over `tree`, with scratch space in `scratch` (same filesystem).
pub struct Sandbox {
    tree: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
    /// Files this sandbox put into the tree, removed again by [`Sandbox::finish`].
    added: Vec<PathBuf>,
}

/// What one run printed.
#[derive(Debug)]
pub struct Output {
    pub text: String,
}

impl Sandbox {
    pub fn new(tree: &Path, scratch: &Path) -> Result<Sandbox> {
        let s = Sandbox {
            tree: tree.to_path_buf(),
            upper: scratch.join("upper"),
            work: scratch.join("work"),
            merged: scratch.join("merged"),
            added: Vec::new(),
        };
        for d in [&s.upper, &s.work, &s.merged] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let mut s = s;
        let policy = tree.join("usr/sbin/policy-rc.d");
        if fs::symlink_metadata(&policy).is_err() {
            fs::create_dir_all(policy.parent().context("parent")?)?;
            fs::write(&policy, POLICY_RC_D)?;
            fs::set_permissions(&policy, fs::Permissions::from_mode(0o755))?;
            s.added.push(policy);
        }
        Ok(s)
    }

    /// Runs `argv` in the sandbox with `env`, then folds what it changed into the tree.
    /// A failure is an error carrying the program's output.
    pub fn run(&mut self, what: &str, argv: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        let mut cmd = Command::new("unshare");
        // A private mount namespace: the overlay exists only for this run, and goes away with
        // it even if the process is killed.
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"]);
        cmd.arg(
            "set -e; l=$1 u=$2 w=$3 m=$4; shift 4; \
             mount -t overlay stratum-layering \
               -o \"lowerdir=$l,upperdir=$u,workdir=$w,redirect_dir=off,metacopy=off,index=off,xino=off\" \"$m\"; \
             exec \"$@\"",
        );
        cmd.arg("sh")
            .arg(&self.tree)
            .arg(&self.upper)
            .arg(&self.work)
            .arg(&self.merged);
        cmd.arg("bwrap");
        let m = self.merged.as_os_str();
        let mut args: Vec<OsString> = vec![
            "--bind".into(),
            m.into(),
            "/".into(),
            "--bind".into(),
            join(m, "/usr/etc"),
            "/etc".into(),
            "--dev".into(),
            "/dev".into(),
            "--proc".into(),
            "/proc".into(),
            "--tmpfs".into(),
            "/run".into(),
            "--tmpfs".into(),
            "/tmp".into(),
            "--unshare-net".into(),
            "--unshare-ipc".into(),
            "--unshare-pid".into(),
            "--unshare-uts".into(),
            "--hostname".into(),
            "localhost".into(),
            "--die-with-parent".into(),
            "--new-session".into(),
            "--clearenv".into(),
            "--chdir".into(),
            "/".into(),
        ];
        for p in NOOP_PROGRAMS {
            if self.tree.join(p).exists() {
                args.extend([
                    "--ro-bind".into(),
                    "/usr/bin/true".into(),
                    format!("/{p}").into(),
                ]);
            }
        }
        let base_env = [
            ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            ("LC_ALL", "C.UTF-8"),
            ("HOME", "/root"),
            ("DEBIAN_FRONTEND", "noninteractive"),
            ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
            ("INITRD", "No"),
            ("SYSTEMD_OFFLINE", "1"),
        ];
        for (k, v) in base_env.iter().chain(env.iter()) {
            args.extend(["--setenv".into(), (*k).into(), (*v).into()]);
        }
        args.push("--".into());
        args.extend(argv.iter().map(OsString::from));
        cmd.args(&args);
        let out = cmd
            .output()
            .with_context(|| format!("running the sandbox for {what} (needs unshare and bwrap)"))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // What a failed script changed is folded too: the whole tree is thrown away then.
        self.fold()
            .context("applying the sandbox's changes to the tree")?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}",
                out.status,
                crate::cmd::tail(&text, 60)
            );
        }
        Ok(Output { text })
    }

    /// Moves the upper layer's changes into the tree and empties it.
    fn fold(&self) -> Result<()> {
        for e in fs::read_dir(&self.upper)? {
            let e = e?;
            let name = e.file_name();
            if MOUNT_POINTS.iter().any(|m| name.as_bytes() == m.as_bytes()) {
                // The mount points bubblewrap made; what was written through /etc is in
                // upper/usr/etc.
                if e.file_type()?.is_dir() {
                    fs::remove_dir_all(e.path())?;
                } else {
                    fs::remove_file(e.path())?;
                }
                continue;
            }
            fold_entry(&e.path(), &self.tree.join(&name))?;
        }
        // The work directory can hold leftovers the kernel made (`work/work`).
        let _ = fs::remove_dir_all(&self.work);
        fs::create_dir_all(&self.work)?;
        Ok(())
    }

    /// Removes what the sandbox put into the tree for its own use.
    pub fn finish(self) -> Result<()> {
        for p in &self.added {
            fs::remove_file(p).with_context(|| format!("removing {}", p.display()))?;
        }
        Ok(())
    }
}

fn join(base: &std::ffi::OsStr, rest: &str) -> OsString {
    let mut s = base.to_os_string();
    s.push(rest);
    s
}

/// Applies one upper-layer entry `up` to the tree path `to`.
fn fold_entry(up: &Path, to: &Path) -> Result<()> {
    let m = fs::symlink_metadata(up)?;
    let ft = m.file_type();
    if ft.is_char_device() && m.rdev() == 0 {
        // A whiteout: deleted in the sandbox.
        crate::fsutil::remove_any(to)?;
        fs::remove_file(up)?;
        return Ok(());
    }
    if ft.is_dir() {
        let opaque = is_opaque(up)?;
        let existing = fs::symlink_metadata(to).ok();
        match existing {
            Some(t) if t.is_dir() && !opaque => {
                // Same directory: its metadata may have changed; its entries are merged.
                fs::set_permissions(to, fs::Permissions::from_mode(m.mode() & 0o7777))?;
                nix::unistd::chown(
                    to,
                    Some(nix::unistd::Uid::from_raw(m.uid())),
                    Some(nix::unistd::Gid::from_raw(m.gid())),
                )?;
                for e in fs::read_dir(up)? {
                    let e = e?;
                    fold_entry(&e.path(), &to.join(e.file_name()))?;
                }
                fs::remove_dir(up)?;
            }
            _ => {
                // New, replaced, or emptied and refilled (opaque): the upper directory is the
                // whole truth, minus whiteouts (which have nothing below them to hide).
                crate::fsutil::remove_any(to)?;
                drop_whiteouts(up)?;
                fs::rename(up, to)
                    .with_context(|| format!("moving {} to {}", up.display(), to.display()))?;
            }
        }
        return Ok(());
    }
    if fs::symlink_metadata(to).is_ok_and(|t| t.is_dir()) {
        crate::fsutil::remove_any(to)?;
    }
    // A rename replaces the tree's link to a repository object; it never writes to it.
    fs::rename(up, to).with_context(|| format!("moving {} to {}", up.display(), to.display()))
}

fn drop_whiteouts(dir: &Path) -> Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let m = fs::symlink_metadata(e.path())?;
        if m.file_type().is_char_device() && m.rdev() == 0 {
            fs::remove_file(e.path())?;
        } else if m.is_dir() {
            drop_whiteouts(&e.path())?;
        }
    }
    Ok(())
}

fn is_opaque(dir: &Path) -> Result<bool> {
    let v = xattr::get(dir, "trusted.overlay.opaque")
        .with_context(|| format!("reading the attributes of {}", dir.display()))?;
    Ok(v.as_deref() == Some(b"y"))
}
