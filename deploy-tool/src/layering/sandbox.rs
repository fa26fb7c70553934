//! The sandboxes of layering: bubblewrap around everything a package brings.
//!
//! Two kinds, built from the same confinement ([`confined`]):
//! - [`extract`]: a `.deb` unpacked by `dpkg-deb` and `tar`, which see the host's `/usr`
//!   read-only and one writable directory. Whatever an archive holds (`../` names, symlinks
//!   followed by later members), nothing outside that directory can be written.
//! - [`Sandbox`]: maintainer scripts and triggers, over an overlay of the tree being
//!   assembled.
//!
//! The confinement: no network, own PID, IPC, UTS and cgroup namespaces, a clean
//! environment (bubblewrap's own process too, so `/proc/1/environ` shows nothing of the
//! caller's), `/proc/sys` read-only, a `/dev` with only the harmless nodes, and every
//! capability dropped but the few that give files their owners and modes inside the tree
//! ([`KEPT_CAPS`]): no mount, mknod, module loading, ptrace, raw I/O or network
//! administration, so a script cannot undo the confinement.
//!
//! The script sandbox's tree is a hardlink checkout: its files are the repository's objects,
//! and a script that wrote into one in place would corrupt every commit that shares it. So
//! the tree is never the scripts' root. They see an overlay filesystem whose lower layer is
//! the tree (read-only to them) and whose upper layer is a scratch directory: every write,
//! chmod or delete lands in the upper layer as a new file or a whiteout. After each run the
//! upper layer is folded into the tree by renames, which replace links and never write
//! through them.
//!
//! Inside: the tree as `/`, its `/usr/etc` as `/etc`, fresh `/dev`, `/proc`, `/run` and
//! `/tmp`, nothing of the host; services are not started (`policy-rc.d` says no, and no
//! systemd runs there). Before each run the paths bubblewrap mounts on or binds from are
//! checked to be real directories of the tree, reached without a symlink: a script that
//! replaced `/usr/etc` or `/run` with a symlink cannot make the next run's mounts resolve on
//! the host.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::beneath::{self, Kind};

/// Capabilities sandboxed programs keep: what dpkg, tar and maintainer scripts need to give
/// files in the tree their owners, modes, set-id bits and file capabilities, and to run a
/// program as a system user. All of them act only on what the sandbox can see.
const KEPT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_SETUID",
    "CAP_SETGID",
    "CAP_SETFCAP",
];

/// The environment of sandboxed programs, and all of it.
const BASE_ENV: &[(&str, &str)] = &[
    ("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
    ("LC_ALL", "C.UTF-8"),
    ("HOME", "/root"),
    ("DEBIAN_FRONTEND", "noninteractive"),
    ("DEBCONF_NONINTERACTIVE_SEEN", "true"),
    ("INITRD", "No"),
    ("SYSTEMD_OFFLINE", "1"),
];

/// A command with none of the caller's environment: what starts the sandbox (`unshare`,
/// `bwrap`) stays visible inside it as PID 1's `/proc/1/environ`.
fn clean_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear()
        .env("PATH", BASE_ENV[0].1)
        .env("LC_ALL", "C.UTF-8");
    cmd
}

/// bubblewrap's arguments for the confinement every sandbox shares (see the module doc),
/// before its own mounts.
fn confined(env: &[(&str, &str)]) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-pid",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "localhost",
        "--die-with-parent",
        "--new-session",
        "--clearenv",
        "--cap-drop",
        "ALL",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    for c in KEPT_CAPS {
        args.extend(["--cap-add".into(), (*c).into()]);
    }
    for (k, v) in BASE_ENV.iter().chain(env.iter()) {
        args.extend(["--setenv".into(), (*k).into(), (*v).into()]);
    }
    args
}

/// `--proc /proc` with `/proc/sys` read-only, and a `/dev` of null, zero, random and ttys.
fn proc_and_dev() -> Vec<OsString> {
    [
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--ro-bind",
        "/proc/sys",
        "/proc/sys",
    ]
    .iter()
    .map(OsString::from)
    .collect()
}

/// Where `extract` leaves a package: `control/` (its control members) and `tree/` (its
/// files); returns tar's listing of the data archive, one member a line.
pub fn extract(deb: &Path, out: &Path) -> Result<String> {
    for d in ["control", "tree"] {
        fs::create_dir_all(out.join(d)).with_context(|| format!("creating {}", out.display()))?;
    }
    let mut args = confined(&[]);
    args.extend(proc_and_dev());
    // The host's programs, read-only; the merged-/usr links as the host has them.
    args.extend(["--ro-bind".into(), "/usr".into(), "/usr".into()]);
    for top in ["bin", "sbin", "lib", "lib64"] {
        let host = Path::new("/").join(top);
        match fs::read_link(&host) {
            Ok(target) => args.extend(["--symlink".into(), target.into(), host.into()]),
            Err(_) if host.is_dir() => {
                args.extend(["--ro-bind".into(), host.clone().into(), host.into()])
            }
            Err(_) => {}
        }
    }
    args.extend(["--tmpfs".into(), "/tmp".into()]);
    args.extend(["--ro-bind".into(), deb.into(), "/in.deb".into()]);
    args.extend([
        "--bind".into(),
        out.into(),
        "/out".into(),
        "--chdir".into(),
        "/out".into(),
    ]);
    args.extend(["--".into(), "/bin/sh".into(), "-c".into()]);
    // dash has no pipefail: the data archive goes through a file.
    args.push(
        "set -e; dpkg-deb --control /in.deb control; dpkg-deb --fsys-tarfile /in.deb > data.tar; \
         tar -x -v --numeric-owner --same-owner -p -f data.tar -C tree; rm data.tar"
            .into(),
    );
    let out = clean_command("bwrap")
        .args(&args)
        .output()
        .context("running bwrap (bubblewrap) to unpack the package")?;
    if !out.status.success() {
        bail!(
            "unpacking {}: {}",
            deb.display(),
            crate::cmd::tail(&String::from_utf8_lossy(&out.stderr), 20)
        );
    }
    String::from_utf8(out.stdout).context("tar listed a file name that is not UTF-8")
}

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
    /// Files this sandbox put into the tree (relative paths), removed again by
    /// [`Sandbox::finish`].
    added: Vec<String>,
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
            s.added.push("usr/sbin/policy-rc.d".to_string());
        }
        Ok(s)
    }

    /// Runs `argv` in the sandbox with `env`, then folds what it changed into the tree.
    /// A failure is an error carrying the program's output.
    pub fn run(&mut self, what: &str, argv: &[&str], env: &[(&str, &str)]) -> Result<Output> {
        self.check_mounts()?;
        let mut cmd = clean_command("unshare");
        // A private mount namespace: the overlay exists only for this run, and goes away with
        // it even if the process is killed.
        cmd.args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"]);
        // The layers are handed to overlayfs as open directories (`/proc/self/fd/N`), not as
        // paths in the option string, where a `,` or `:` of the sysroot's path would split
        // an option.
        cmd.arg(
            "set -e; l=$1 u=$2 w=$3 m=$4; shift 4; exec 3<\"$l\" 4<\"$u\" 5<\"$w\"; \
             mount -t overlay stratum-layering \
               -o lowerdir=/proc/self/fd/3,upperdir=/proc/self/fd/4,workdir=/proc/self/fd/5,redirect_dir=off,metacopy=off,index=off,xino=off \"$m\"; \
             exec 3<&- 4<&- 5<&-; exec \"$@\"",
        );
        cmd.arg("sh")
            .arg(&self.tree)
            .arg(&self.upper)
            .arg(&self.work)
            .arg(&self.merged);
        cmd.arg("bwrap");
        let m = self.merged.as_os_str();
        let mut args = confined(env);
        args.extend([
            "--bind".into(),
            m.into(),
            "/".into(),
            "--bind".into(),
            join(m, "/usr/etc"),
            "/etc".into(),
        ]);
        args.extend(proc_and_dev());
        args.extend(
            ["--tmpfs", "/run", "--tmpfs", "/tmp", "--chdir", "/"]
                .iter()
                .map(OsString::from),
        );
        for p in NOOP_PROGRAMS {
            if self.kind(p)? == Kind::File {
                args.extend([
                    "--ro-bind".into(),
                    "/usr/bin/true".into(),
                    format!("/{p}").into(),
                ]);
            }
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
        // Stratum goes on working in the tree by path: what it walks must still be there.
        self.check_mounts()
            .with_context(|| format!("after {what}"))?;
        if !out.status.success() {
            bail!(
                "{what} failed ({}):\n{}",
                out.status,
                crate::cmd::tail(&text, 60)
            );
        }
        Ok(Output { text })
    }

    /// What is at `rel` in the tree; a symlink on the way is an error.
    fn kind(&self, rel: &str) -> Result<Kind> {
        let root = beneath::open_root(&self.tree)?;
        beneath::kind_at(std::os::fd::AsFd::as_fd(&root), rel)
    }

    /// Checks what bubblewrap binds from and mounts on: `usr/etc` is a real directory, the
    /// mount points are real directories or missing, and the upper layer is empty (so the
    /// overlay shows the tree as checked). A script's earlier run may have changed any of
    /// them, and bubblewrap resolves these paths before the sandbox exists.
    fn check_mounts(&self) -> Result<()> {
        let refuse = |p: &str, k: Kind| {
            anyhow::anyhow!(
                "/{p} in the tree being assembled is a {k:?}, not a directory: a package \
                 (or its maintainer script) replaced it; nothing was changed"
            )
        };
        match self.kind("usr/etc").with_context(|| "checking /usr/etc")? {
            Kind::Dir => {}
            k => return Err(refuse("usr/etc", k)),
        }
        let db = crate::debian::dpkgdb::DB_DIR;
        let db_dirs = [
            db.to_string(),
            format!("{db}/info"),
            format!("{db}/triggers"),
            format!("{db}/updates"),
        ];
        for d in super::unpack::LAYOUT_DIRS
            .iter()
            .copied()
            .chain(db_dirs.iter().map(String::as_str))
        {
            match self.kind(d).with_context(|| format!("checking /{d}"))? {
                Kind::Dir | Kind::Missing => {}
                k => return Err(refuse(d, k)),
            }
        }
        for m in MOUNT_POINTS {
            match self.kind(m).with_context(|| format!("checking /{m}"))? {
                Kind::Dir | Kind::Missing => {}
                k => return Err(refuse(m, k)),
            }
        }
        if fs::read_dir(&self.upper)?.next().is_some() {
            bail!(
                "the sandbox's upper layer {} is not empty",
                self.upper.display()
            );
        }
        Ok(())
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
        let root = beneath::open_root(&self.tree)?;
        for p in &self.added {
            let (parent, name) = beneath::split(p);
            let dir = beneath::open_dir(std::os::fd::AsFd::as_fd(&root), parent)?
                .with_context(|| format!("/{parent} disappeared"))?;
            rustix::fs::unlinkat(&dir, name, rustix::fs::AtFlags::empty())
                .with_context(|| format!("removing /{p}"))?;
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
