//! Running an OS root's own dracut to build an image for it, the other way to make Stratum's
//! initramfs (with Stratum's `stratum` dracut module).
//!
//! dracut runs chrooted into the root, in a private mount namespace (`unshare --mount
//! --propagation private`), so nothing it mounts is seen outside and everything is gone when
//! it exits, even if it fails. Inside: `/dev` (bound recursively), `/proc`, `/sys`, and
//! tmpfs scratch space on `/tmp`, `/var` (with `var/tmp`) and `/run`, so no dracut scratch file
//! lands in the root. The output's directory is bound at [`OUT_DIR`] and every host file to
//! include at `IN_DIR/<n>`, so dracut writes and reads host paths that the chroot cannot see.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Where the output's directory is bound inside the root.
pub const OUT_DIR: &str = "/run/stratum-dracut/out";
/// Where included host files are bound inside the root (as `0`, `1`, …).
pub const IN_DIR: &str = "/run/stratum-dracut/in";
/// Lines of dracut's output quoted in an error.
const TAIL_LINES: usize = 20;

/// Directories of the root that the runner mounts over; host paths below them are hidden.
const MOUNTED: &[&str] = &["dev", "proc", "sys", "tmp", "var", "run"];

/// The mounts, then dracut. Arguments: root, output directory, number of includes, the
/// include sources, then the command to run in the chroot.
const SCRIPT: &str = r#"
exec 2>&1
r=$1 out=$2 n=$3; shift 3
mount --rbind /dev "$r/dev"
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount -t tmpfs tmpfs "$r/tmp"
mount -t tmpfs tmpfs "$r/var"
mkdir "$r/var/tmp"
mount -t tmpfs tmpfs "$r/run"
mkdir -p "$r/run/stratum-dracut/out" "$r/run/stratum-dracut/in"
mount --bind "$out" "$r/run/stratum-dracut/out"
i=0
while [ "$i" -lt "$n" ]; do
    if [ -d "$1" ]; then
        mkdir "$r/run/stratum-dracut/in/$i"
    else
        : > "$r/run/stratum-dracut/in/$i"
    fi
    mount --bind "$1" "$r/run/stratum-dracut/in/$i"
    shift
    i=$((i + 1))
done
exec chroot "$r" "$@"
"#;

/// One dracut run: `dracut --no-hostonly --add MODULE… --kver KVER --force --tmpdir /tmp
/// [--include SRC DEST]… [ARGS…] OUTPUT` inside `root`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DracutRun {
    /// The OS root holding dracut, its modules and the kernel's modules.
    pub root: PathBuf,
    /// Kernel version to build for.
    pub kver: String,
    /// Where the image goes, on the host (its directory must exist).
    pub output: PathBuf,
    /// dracut modules to add (`--add`).
    pub add_modules: Vec<String>,
    /// Host files or directories to include, each with its path in the image.
    pub includes: Vec<(PathBuf, String)>,
    /// More dracut arguments, before the output name.
    pub args: Vec<String>,
    /// Where to write dracut's output (stdout and stderr, interleaved).
    pub log: Option<PathBuf>,
    /// Fail unless dracut reported including every one of `add_modules` (dracut only warns
    /// about some modules it cannot install). Off for arguments such as `--quiet` that
    /// silence the report.
    pub check_included: bool,
}

impl DracutRun {
    /// A run for `root`/`kver` writing `output`, adding nothing, checking what it adds.
    pub fn new(
        root: impl Into<PathBuf>,
        kver: impl Into<String>,
        output: impl Into<PathBuf>,
    ) -> Self {
        DracutRun {
            root: root.into(),
            kver: kver.into(),
            output: output.into(),
            add_modules: Vec::new(),
            includes: Vec::new(),
            args: Vec::new(),
            log: None,
            check_included: true,
        }
    }

    /// The command run inside the root, with the output and includes at their bound paths.
    fn dracut_command(&self, out_name: &str) -> Vec<String> {
        let mut cmd: Vec<String> = ["dracut", "--no-hostonly"].map(String::from).to_vec();
        for m in &self.add_modules {
            cmd.extend(["--add".into(), m.clone()]);
        }
        cmd.extend(["--kver".into(), self.kver.clone()]);
        cmd.extend(["--force", "--tmpdir", "/tmp"].map(String::from));
        for (i, (_, dest)) in self.includes.iter().enumerate() {
            cmd.extend(["--include".into(), format!("{IN_DIR}/{i}"), dest.clone()]);
        }
        cmd.extend(self.args.iter().cloned());
        cmd.push(format!("{OUT_DIR}/{out_name}"));
        cmd
    }
}

/// `path` made absolute and free of symlinks, for binding; it must exist.
fn canonical(path: &Path, what: &str) -> Result<PathBuf> {
    std::fs::canonicalize(path).with_context(|| format!("{what} {}", path.display()))
}

/// Refuse a host path that a mount of the run would hide.
fn check_visible(root: &Path, path: &Path, what: &str) -> Result<()> {
    for d in MOUNTED {
        if path.starts_with(root.join(d)) {
            bail!(
                "{what} {} is under the root's /{d}, which dracut runs with something else mounted on",
                path.display()
            );
        }
    }
    Ok(())
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The dracut modules of `wanted` that dracut's output does not report including
/// (`dracut: *** Including module: NAME ***`).
fn not_included<'a>(output: &str, wanted: &'a [String]) -> Vec<&'a str> {
    let included: Vec<&str> = output
        .lines()
        .filter_map(|l| l.split_once("Including module: "))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .collect();
    wanted
        .iter()
        .map(String::as_str)
        .filter(|m| !included.contains(m))
        .collect()
}

/// Run dracut as `r` says; returns its output (stdout and stderr, interleaved).
pub fn run(r: &DracutRun) -> Result<String> {
    let root = canonical(&r.root, "OS root")?;
    let out_name = r
        .output
        .file_name()
        .with_context(|| format!("output {} has no file name", r.output.display()))?
        .to_string_lossy()
        .into_owned();
    let out_dir = match r.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let out_dir = canonical(out_dir, "output directory")?;
    check_visible(&root, &out_dir, "output directory")?;
    let mut sources = Vec::new();
    for (src, _) in &r.includes {
        let src = canonical(src, "file to include")?;
        check_visible(&root, &src, "file to include")?;
        sources.push(src);
    }
    let mut cmd = Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "--", "sh", "-ec"])
        .args([SCRIPT, "sh"])
        .arg(&root)
        .arg(&out_dir)
        .arg(sources.len().to_string())
        .args(&sources)
        .args(r.dracut_command(&out_name).into_iter().map(OsString::from))
        .stdin(Stdio::null());
    let out = cmd
        .output()
        .context("running dracut with unshare and chroot (util-linux)")?;
    let mut raw = out.stdout;
    raw.extend_from_slice(&out.stderr);
    if let Some(log) = &r.log {
        std::fs::write(log, &raw).with_context(|| format!("writing {}", log.display()))?;
    }
    let text = String::from_utf8_lossy(&raw).into_owned();
    let see = r
        .log
        .as_ref()
        .map(|l| format!(" (see {})", l.display()))
        .unwrap_or_default();
    if !out.status.success() {
        bail!(
            "dracut in {} failed ({}){see}:\n{}",
            root.display(),
            out.status,
            tail(&text, TAIL_LINES)
        );
    }
    if r.check_included {
        let missing = not_included(&text, &r.add_modules);
        if !missing.is_empty() {
            bail!(
                "dracut did not include the dracut module(s) {}{see}",
                missing.join(", ")
            );
        }
    }
    Ok(text)
}

#[cfg(test)]
mod tests;
