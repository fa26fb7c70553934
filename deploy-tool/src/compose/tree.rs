//! `stratum compose tree`: an image built from Debian packages by mmdebstrap, as a
//! manifest ([`super::manifest`]) describes it, then committed through the same layout rules
//! and initramfs build as `compose rootfs`.
//!
//! The steps, in order:
//! 1. mmdebstrap installs the package set into a fresh directory. Repository keys are put
//!    into the root's `/etc/apt/trusted.gpg.d` first (the image keeps them, so the machine's
//!    package layering trusts the same repositories), excluded packages are pinned to -1 for
//!    the build, and `--cachedir` feeds and keeps the downloaded `.deb` files.
//! 2. The installed package list and the manifest's digest give the build's input hash.
//!    When it equals the one the ref's commit carries, nothing changed: no commit.
//! 3. Files, sysusers.d, kargs.d, `stratum.toml` defaults and unit presets are written; the
//!    postprocess scripts run in a bubblewrap sandbox whose root is the new root, with no
//!    network and nothing of the host.
//! 4. The initramfs (stratum-initramfs, dracut in the sandbox, or the root's own) and the
//!    commit, with `version`, `stratum.packages`, `stratum.manifest-digest`,
//!    `stratum.inputhash` and the ref binding.
//!
//! With `SOURCE_DATE_EPOCH` set and the same package versions, two builds give the same
//! tree (the commits differ only by their parent): mmdebstrap removes what makes roots
//! differ (logs, caches, the machine id), and the commit keeps no modification times.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ostree::glib;
use ostree::glib::prelude::ToVariant;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::manifest::{self, InitramfsMode, Manifest};
use crate::debian::dpkgdb::PackageId;

pub use crate::debian::dpkgdb::META_PACKAGES;
/// Commit metadata: the manifest's digest (sha256 of everything it says).
pub const META_MANIFEST_DIGEST: &str = "stratum.manifest-digest";
/// Commit metadata: the manifest digest and package list together; equal means unchanged.
pub const META_INPUTHASH: &str = "stratum.inputhash";

/// Where mmdebstrap keeps the hook that makes `file://` repositories visible in the chroot.
const FILE_MIRROR_HOOKS: &str = "/usr/share/mmdebstrap/hooks/file-mirror-automount";
/// Where the manifest's settings land in the image.
const KARGS_FILE: &str = "usr/lib/stratum/kargs.d/50-compose.toml";
const CONFIG_FILE: &str = "usr/lib/stratum/stratum.d/50-compose.toml";
const SYSUSERS_FILE: &str = "usr/lib/sysusers.d/stratum-compose.conf";
const EXCLUDE_PREFERENCES: &str = "etc/apt/preferences.d/stratum-compose-exclude";

/// What to build.
#[derive(Debug, Clone)]
pub struct TreeOptions {
    pub manifest: PathBuf,
    pub repo: PathBuf,
    /// The version, instead of the manifest's template.
    pub version: Option<String>,
    /// Keeps downloaded packages across builds.
    pub cachedir: Option<PathBuf>,
    /// Where the root is built [default: `$TMPDIR`].
    pub workdir: Option<PathBuf>,
    /// Commit even when nothing changed.
    pub force: bool,
    /// The static stratum-prepare-root to use as `/init` [default: the root's own].
    pub prepare_root: Option<PathBuf>,
}

/// What a build did.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TreeResult {
    /// The new commit, or the ref's commit when nothing changed.
    pub commit: String,
    #[serde(rename = "ref")]
    pub refname: String,
    /// False when the inputs equal those of the ref's commit (no new commit).
    pub changed: bool,
    pub version: Option<String>,
    pub kernel: Option<String>,
    pub packages: usize,
    pub manifest_digest: String,
    pub inputhash: String,
}

/// Builds and commits the image `opts.manifest` describes.
pub fn compose_tree(opts: &TreeOptions) -> Result<TreeResult> {
    let start = Instant::now();
    let m = Manifest::load(&opts.manifest)?;
    if let Some(v) = &opts.version {
        super::check_version(v)?;
    }
    let digest = m.digest();
    require_tool("mmdebstrap", "mmdebstrap")?;
    require_tool("bwrap", "bubblewrap")?;

    let repo = crate::repo::open_or_create(&opts.repo, ostree::RepoMode::Bare)?;
    let parent = repo.resolve_rev(&m.refname, true)?.map(|s| s.to_string());

    let work = match &opts.workdir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            BuildDir::new(d)?
        }
        None => BuildDir::new(&std::env::temp_dir())?,
    };
    let root = work.root();

    let packages = install_packages(&m, &root, opts.cachedir.as_deref())?;
    let inputhash = input_hash(&digest, &packages);
    if !opts.force {
        if let Some(p) = &parent {
            let meta = crate::repo::commit_metadata(&repo, p)?;
            if meta.lookup::<String>(META_INPUTHASH)?.as_deref() == Some(inputhash.as_str()) {
                eprintln!(
                    "No apparent changes since {p}: the manifest and the {} packages are the same",
                    packages.len()
                );
                return Ok(TreeResult {
                    commit: p.clone(),
                    refname: m.refname.clone(),
                    changed: false,
                    version: meta.lookup::<String>("version")?,
                    kernel: None,
                    packages: packages.len(),
                    manifest_digest: digest,
                    inputhash,
                });
            }
        }
    }

    customize(&m, &root)?;
    let initramfs = match m.initramfs.mode {
        InitramfsMode::Stratum => super::Initramfs::Build {
            extra_modules: &m.initramfs.modules,
            init: opts.prepare_root.clone(),
        },
        InitramfsMode::Dracut | InitramfsMode::Keep => super::Initramfs::Keep,
    };

    let version = match (&opts.version, &m.version) {
        (Some(v), _) => Some(v.clone()),
        (None, Some(t)) => Some(manifest::expand_version(
            t,
            &build_day()?,
            &history_versions(&repo, parent.as_deref())?,
        )?),
        (None, None) => None,
    };
    let list: Vec<(String, String, String)> = packages
        .iter()
        .map(|p| (p.name.clone(), p.version.clone(), p.arch.clone()))
        .collect();
    let metadata = vec![
        (META_PACKAGES, list.to_variant()),
        (META_MANIFEST_DIGEST, digest.to_variant()),
        (META_INPUTHASH, inputhash.to_variant()),
    ];
    let r = super::build(
        &root,
        &super::Build {
            repo: &opts.repo,
            refname: &m.refname,
            version: version.as_deref(),
            kver: None,
            initramfs,
            metadata,
        },
    )?;
    eprintln!(
        "Committed {} ({}, {} packages) in {:.1} s",
        r.commit,
        version.as_deref().unwrap_or("no version"),
        packages.len(),
        start.elapsed().as_secs_f64()
    );
    Ok(TreeResult {
        commit: r.commit,
        refname: r.refname,
        changed: true,
        version,
        kernel: Some(r.kernel),
        packages: packages.len(),
        manifest_digest: digest,
        inputhash,
    })
}

/// What `compose install` made.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InstallResult {
    pub root: PathBuf,
    pub packages: usize,
    pub manifest_digest: String,
    pub inputhash: String,
}

/// `compose install`: the root `manifest` describes, in `dest` (which must not exist), with
/// its files, settings and scripts applied but not yet laid out for an image: what
/// `compose rootfs` takes. A failed build leaves nothing at `dest`.
pub fn compose_install(
    manifest: &Path,
    dest: &Path,
    cachedir: Option<&Path>,
) -> Result<InstallResult> {
    let m = Manifest::load(manifest)?;
    require_tool("mmdebstrap", "mmdebstrap")?;
    require_tool("bwrap", "bubblewrap")?;
    if dest.symlink_metadata().is_ok() {
        bail!(
            "{} exists: compose install builds a new directory",
            dest.display()
        );
    }
    let parent = match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent)?;
    let work = BuildDir::new(&parent)?;
    let root = work.root();
    let packages = install_packages(&m, &root, cachedir)?;
    customize(&m, &root)?;
    std::fs::rename(&root, dest)
        .with_context(|| format!("moving the root to {}", dest.display()))?;
    let digest = m.digest();
    Ok(InstallResult {
        root: dest.to_path_buf(),
        packages: packages.len(),
        inputhash: input_hash(&digest, &packages),
        manifest_digest: digest,
    })
}

/// A directory the root is built in, removed with everything in it when dropped. A failed
/// mmdebstrap can leave mounts in the root (a `file://` repository bound read-only, `/proc`):
/// they are unmounted first, so the removal never reaches into what they show.
struct BuildDir {
    dir: Option<tempfile::TempDir>,
}

impl BuildDir {
    fn new(parent: &Path) -> Result<BuildDir> {
        // Absolute, as the mount table names mount points.
        let parent = parent
            .canonicalize()
            .with_context(|| format!("reading {}", parent.display()))?;
        let dir = tempfile::Builder::new()
            .prefix(".stratum-compose-")
            .tempdir_in(&parent)
            .with_context(|| format!("creating a build directory in {}", parent.display()))?;
        Ok(BuildDir { dir: Some(dir) })
    }

    fn root(&self) -> PathBuf {
        self.dir
            .as_ref()
            .expect("present until dropped")
            .path()
            .join("root")
    }
}

impl Drop for BuildDir {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let mounts = mounts_below(dir.path());
        for m in &mounts {
            let _ = Command::new("umount").arg("--lazy").arg(m).status();
        }
        if !mounts_below(dir.path()).is_empty() {
            // Never remove through a mount: leave the directory for the administrator.
            eprintln!(
                "warning: {} still has mounts; leaving it in place",
                dir.path().display()
            );
            let _ = dir.keep();
        }
    }
}

/// Mount points at or below `dir`, deepest first (`/proc/self/mounts` escapes spaces and
/// other characters as octal; such paths never match, which only leaves them mounted).
fn mounts_below(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    let mut v: Vec<String> = std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| *m == prefix || m.starts_with(&format!("{prefix}/")))
        .map(str::to_string)
        .collect();
    v.sort_by_key(|m| std::cmp::Reverse(m.len()));
    v
}

/// mmdebstrap's part: the packages, installed into `root`.
fn install_packages(m: &Manifest, root: &Path, cachedir: Option<&Path>) -> Result<Vec<PackageId>> {
    prepare_root(m, root, cachedir)?;
    run_mmdebstrap(m, root, cachedir.is_some())?;
    finish_apt(m, root, cachedir)?;
    installed_packages(root)
}

fn require_tool(program: &str, package: &str) -> Result<()> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
        .unwrap_or(false);
    if !found {
        bail!("{program} is not installed: compose tree needs it (apt-get install {package})");
    }
    Ok(())
}

/// What the root holds before mmdebstrap starts: the repositories' keys, the exclusions and
/// the cached packages.
fn prepare_root(m: &Manifest, root: &Path, cachedir: Option<&Path>) -> Result<()> {
    let keys = root.join("etc/apt/trusted.gpg.d");
    std::fs::create_dir_all(&keys)?;
    for (i, r) in m.repositories.iter().enumerate() {
        if let Some(k) = &r.key {
            let bytes = std::fs::read(k).with_context(|| format!("reading {}", k.display()))?;
            // apt reads armored keys only from files named .asc.
            let ext = if bytes.starts_with(b"-----BEGIN PGP") {
                "asc"
            } else {
                "gpg"
            };
            std::fs::write(keys.join(format!("stratum-compose-{i}.{ext}")), bytes)?;
        }
    }
    if !m.exclude_packages.is_empty() {
        let p = root.join(EXCLUDE_PREFERENCES);
        std::fs::create_dir_all(p.parent().expect("has a parent"))?;
        std::fs::write(
            &p,
            format!(
                "Package: {}\nPin: version *\nPin-Priority: -1\n",
                m.exclude_packages.join(" ")
            ),
        )?;
    }
    if let Some(cache) = cachedir {
        std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
        let archives = root.join("var/cache/apt/archives");
        std::fs::create_dir_all(archives.join("partial"))?;
        for (name, path) in crate::fsutil::dir_entries(cache)? {
            if name.ends_with(".deb") && std::fs::hard_link(&path, archives.join(&name)).is_err() {
                std::fs::copy(&path, archives.join(&name))?;
            }
        }
    }
    Ok(())
}

/// The `sources.list` lines of the manifest's repositories.
fn source_lines(m: &Manifest) -> Vec<String> {
    m.repositories
        .iter()
        .map(|r| {
            format!(
                "deb {}{} {} {}",
                if r.trusted { "[trusted=yes] " } else { "" },
                r.url,
                r.suite,
                r.components.join(" ")
            )
        })
        .collect()
}

fn run_mmdebstrap(m: &Manifest, root: &Path, cached: bool) -> Result<()> {
    let mut cmd = Command::new("mmdebstrap");
    cmd.args(["--mode=root", "--format=directory"])
        .arg(format!("--variant={}", m.variant.as_str()))
        .arg(format!("--include={}", m.install_set().join(",")))
        .arg("--aptopt=Acquire::Languages \"none\"")
        // The keys and the preferences put there by prepare_root.
        .arg("--skip=check/empty");
    if cached {
        cmd.args(["--skip=download/empty", "--skip=cleanup/apt/cache"]);
    }
    if m.repositories.iter().any(|r| r.url.starts_with("file:")) {
        cmd.arg(format!("--hook-dir={FILE_MIRROR_HOOKS}"));
    }
    cmd.arg(&m.suite).arg(root);
    cmd.args(source_lines(m));
    eprintln!(
        "Installing {} packages with mmdebstrap ({} {})",
        m.install_set().len(),
        m.suite,
        m.variant.as_str()
    );
    let status = cmd
        .stdin(std::process::Stdio::null())
        .status()
        .context("running mmdebstrap")?;
    if !status.success() {
        bail!(
            "mmdebstrap failed ({status}); its messages above say why (a missing package, an \
             unreachable or unsigned repository, an excluded package something depends on)"
        );
    }
    Ok(())
}

/// Moves the downloaded packages to the cache and removes what only the build needed.
fn finish_apt(m: &Manifest, root: &Path, cachedir: Option<&Path>) -> Result<()> {
    let archives = root.join("var/cache/apt/archives");
    if let Some(cache) = cachedir {
        for (name, path) in crate::fsutil::dir_entries(&archives)? {
            if name.ends_with(".deb") {
                let dest = cache.join(&name);
                if !dest.exists() {
                    // Whole or not at all: another build may be reading the cache.
                    let tmp = cache.join(format!(".{name}.{}", std::process::id()));
                    std::fs::copy(&path, &tmp)?;
                    std::fs::rename(&tmp, &dest)?;
                }
                std::fs::remove_file(&path)?;
            }
        }
        let _ = std::fs::remove_dir_all(archives.join("partial"));
        // mmdebstrap's cleanup of the apt cache was skipped: what it would have removed.
        for f in ["pkgcache.bin", "srcpkgcache.bin"] {
            let _ = std::fs::remove_file(root.join("var/cache/apt").join(f));
        }
    }
    let prefs = root.join(EXCLUDE_PREFERENCES);
    if prefs.exists() {
        std::fs::remove_file(prefs)?;
    }
    forget_local_repositories(m, root)?;
    let installed = installed_packages(root)?;
    for p in &m.exclude_packages {
        if installed.iter().any(|i| &i.name == p) {
            bail!(
                "package {p} is excluded by the manifest but was installed anyway (it is \
                 Essential in the {} variant)",
                m.variant.as_str()
            );
        }
    }
    Ok(())
}

/// Local repositories serve the build only: their lines leave the image's `sources.list`,
/// and the empty directories mmdebstrap mounted them on go.
fn forget_local_repositories(m: &Manifest, root: &Path) -> Result<()> {
    let local: Vec<&str> = m
        .repositories
        .iter()
        .filter_map(|r| r.url.strip_prefix("file://"))
        .collect();
    if local.is_empty() {
        return Ok(());
    }
    let list = root.join("etc/apt/sources.list");
    if let Ok(text) = std::fs::read_to_string(&list) {
        let kept: String = text
            .lines()
            .filter(|l| !l.split_whitespace().any(|w| w.starts_with("file://")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&list, kept)?;
    }
    for dir in local {
        let mut p = root.join(dir.trim_start_matches('/'));
        // Only empty directories: remove_dir fails on anything else, which ends the walk.
        while p != root && std::fs::remove_dir(&p).is_ok() {
            match p.parent() {
                Some(up) => p = up.to_path_buf(),
                None => break,
            }
        }
    }
    Ok(())
}

/// The root's installed packages, sorted by name and architecture.
fn installed_packages(root: &Path) -> Result<Vec<PackageId>> {
    let status = root.join("var/lib/dpkg/status");
    let text = std::fs::read_to_string(&status)
        .with_context(|| format!("reading {}", status.display()))?;
    let mut v: Vec<PackageId> = crate::debian::dpkgdb::installed(&text)?
        .into_values()
        .collect();
    v.sort_by(|a, b| (&a.name, &a.arch).cmp(&(&b.name, &b.arch)));
    Ok(v)
}

/// The manifest's digest and the package list, with the version of Stratum that turns them
/// into an image.
fn input_hash(digest: &str, packages: &[PackageId]) -> String {
    let mut h = Sha256::new();
    h.update(format!("stratum {}\n", env!("CARGO_PKG_VERSION")));
    h.update(format!("manifest {digest}\n"));
    for p in packages {
        h.update(format!("{} {} {}\n", p.name, p.version, p.arch));
    }
    manifest::hex(&h.finalize())
}

/// Writes the manifest's files and settings into the root, runs its scripts and, in
/// dracut mode, dracut.
fn customize(m: &Manifest, root: &Path) -> Result<()> {
    for f in &m.files {
        let dest = root.join(f.path.trim_start_matches('/'));
        let parent = dest.parent().expect("an absolute file path has a parent");
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
        if dest.symlink_metadata().is_ok_and(|md| md.is_dir()) {
            bail!("manifest file {}: the root has a directory there", f.path);
        }
        crate::fsutil::atomic_write(&dest, &f.content, f.mode)
            .with_context(|| format!("writing {}", f.path))?;
    }
    if !m.users.is_empty() || !m.groups.is_empty() {
        write_file(root, SYSUSERS_FILE, &sysusers(m))?;
        let out = Command::new("systemd-sysusers")
            .arg(format!("--root={}", root.display()))
            .arg(root.join(SYSUSERS_FILE))
            .output()
            .context("running systemd-sysusers")?;
        if !out.status.success() {
            bail!(
                "creating the manifest's users and groups: {}",
                crate::cmd::tail(&String::from_utf8_lossy(&out.stderr), 40)
            );
        }
    }
    if !m.kargs.is_empty() {
        let text = toml::to_string(&KargsFile { kargs: &m.kargs })?;
        write_file(root, KARGS_FILE, &text)?;
    }
    if !m.config.is_empty() {
        write_file(root, CONFIG_FILE, &toml::to_string(&m.config)?)?;
    }
    for (verb, units) in [("enable", &m.units_enable), ("mask", &m.units_mask)] {
        if units.is_empty() {
            continue;
        }
        let out = Command::new("systemctl")
            .arg(format!("--root={}", root.display()))
            .arg(verb)
            .args(units)
            .output()
            .context("running systemctl")?;
        if !out.status.success() {
            bail!(
                "systemctl {verb} {}: {}",
                units.join(" "),
                crate::cmd::tail(&String::from_utf8_lossy(&out.stderr), 40)
            );
        }
    }
    for (i, s) in m.postprocess.iter().enumerate() {
        eprintln!("Running postprocess script {} ({})", i + 1, s.origin);
        let out = sandboxed(root, &["/bin/sh", "-e", "-c", &s.script, "postprocess"])?;
        if !out.status.success() {
            bail!(
                "postprocess script {} ({}) failed ({}):\n{}",
                i + 1,
                s.origin,
                out.status,
                crate::cmd::tail(&combined(&out), 40)
            );
        }
    }
    if m.initramfs.mode == InitramfsMode::Dracut {
        run_dracut(m, root)?;
    }
    Ok(())
}

#[derive(Serialize)]
struct KargsFile<'a> {
    kargs: &'a [String],
}

fn write_file(root: &Path, rel: &str, text: &str) -> Result<()> {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("has a parent"))?;
    crate::fsutil::atomic_write(&p, text.as_bytes(), 0o644)
        .with_context(|| format!("writing /{rel}"))
}

/// The `sysusers.d` lines of the manifest's groups and users.
fn sysusers(m: &Manifest) -> String {
    let mut s = String::from("# From the compose manifest.\n");
    for g in &m.groups {
        let id = g.gid.map_or("-".to_string(), |x| x.to_string());
        s.push_str(&format!("g {} {id}\n", g.name));
    }
    for u in &m.users {
        let id = u.uid.map_or("-".to_string(), |x| x.to_string());
        let quote = |v: &Option<String>| match v {
            Some(x) => format!("\"{}\"", x.replace('"', "")),
            None => "-".to_string(),
        };
        s.push_str(&format!(
            "u {} {id} {} {} {}\n",
            u.name,
            quote(&u.gecos),
            quote(&u.home),
            quote(&u.shell)
        ));
        for g in &u.groups {
            s.push_str(&format!("m {} {g}\n", u.name));
        }
    }
    s
}

/// Runs `argv` with the new root as `/`: fresh `/dev`, `/proc`, `/run` and `/tmp`, no
/// network, its own PID, IPC and UTS namespaces, a clean environment.
fn sandboxed(root: &Path, argv: &[&str]) -> Result<std::process::Output> {
    Command::new("bwrap")
        .arg("--bind")
        .arg(root)
        .arg("/")
        .args([
            "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/run", "--tmpfs", "/tmp",
        ])
        .args([
            "--unshare-net",
            "--unshare-ipc",
            "--unshare-pid",
            "--unshare-uts",
        ])
        .args([
            "--hostname",
            "localhost",
            "--die-with-parent",
            "--new-session",
        ])
        .args(["--clearenv", "--chdir", "/"])
        .args(["--setenv", "PATH", "/usr/sbin:/usr/bin:/sbin:/bin"])
        .args(["--setenv", "LC_ALL", "C.UTF-8", "--setenv", "HOME", "/root"])
        .args(["--setenv", "DEBIAN_FRONTEND", "noninteractive"])
        .args(
            std::env::var("SOURCE_DATE_EPOCH")
                .ok()
                .map(|v| ["--setenv".to_string(), "SOURCE_DATE_EPOCH".to_string(), v])
                .into_iter()
                .flatten(),
        )
        .args(argv)
        .stdin(std::process::Stdio::null())
        .output()
        .context("running bwrap (bubblewrap)")
}

fn combined(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// dracut with Stratum's module, in the sandbox, for the root's one kernel.
fn run_dracut(m: &Manifest, root: &Path) -> Result<()> {
    let kernel = super::layout::select_kernel(root, None)?;
    let out_path = format!("/boot/initrd.img-{}", kernel.kver);
    let mut argv = vec![
        "dracut",
        "--no-hostonly",
        "--force",
        "--reproducible",
        "--add",
        "stratum",
    ];
    argv.extend(m.initramfs.dracut_args.iter().map(String::as_str));
    argv.extend([out_path.as_str(), kernel.kver.as_str()]);
    eprintln!("Building the initramfs with dracut for {}", kernel.kver);
    let out = sandboxed(root, &argv)?;
    if !out.status.success() {
        bail!(
            "dracut failed ({}):\n{}",
            out.status,
            crate::cmd::tail(&combined(&out), 40)
        );
    }
    Ok(())
}

/// The build's day, `YYYYMMDD` in UTC: `SOURCE_DATE_EPOCH`'s, or today.
fn build_day() -> Result<String> {
    let secs = match super::source_date_epoch()? {
        Some(s) => s as i64,
        None => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs() as i64,
    };
    let dt = glib::DateTime::from_unix_utc(secs)?;
    Ok(dt.format("%Y%m%d")?.to_string())
}

/// The versions of the commits on the ref's history, newest first (as far as the
/// repository has them, at most 100).
fn history_versions(repo: &ostree::Repo, head: Option<&str>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut next = head.map(str::to_string);
    while let Some(c) = next.take() {
        if out.len() >= 100 {
            break;
        }
        let Ok(info) = crate::repo::commit_info(repo, &c) else {
            break;
        };
        if let Some(v) = info.version.clone() {
            out.push(v);
        }
        next = info.parent.clone();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sysusers_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("m.toml");
        std::fs::write(
            &p,
            "ref = \"r\"\nkernel = \"k1\"\n[[groups]]\nname = \"ops\"\ngid = 990\n\
             [[users]]\nname = \"app\"\nhome = \"/var/lib/app\"\ngroups = [\"ops\"]\n",
        )
        .unwrap();
        let m = Manifest::load(&p).unwrap();
        assert_eq!(
            sysusers(&m),
            "# From the compose manifest.\ng ops 990\nu app - - \"/var/lib/app\" -\nm app ops\n"
        );
    }

    #[test]
    fn input_hash_follows_packages() {
        let p = |v: &str| PackageId {
            name: "a".into(),
            version: v.into(),
            arch: "amd64".into(),
        };
        assert_eq!(input_hash("d", &[p("1")]), input_hash("d", &[p("1")]));
        assert_ne!(input_hash("d", &[p("1")]), input_hash("d", &[p("2")]));
        assert_ne!(input_hash("d", &[p("1")]), input_hash("e", &[p("1")]));
    }
}
