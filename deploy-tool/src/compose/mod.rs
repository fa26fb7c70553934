//! `stratum compose rootfs`: turns a root filesystem directory into a bootable commit;
//! [`publish`] makes it servable over HTTP.
//!
//! The input directory is never modified: the layout rules run on a staging copy made of
//! hardlinks (renames and new files in the copy do not touch the original), and everything
//! that can fail is checked before the repository is touched, so an error leaves the
//! repository as it was.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ostree::glib;

pub mod layout;
pub mod manifest;
pub mod publish;
pub mod tree;

/// What to compose.
#[derive(Debug, Clone)]
pub struct ComposeOptions {
    pub rootfs: PathBuf,
    pub repo: PathBuf,
    pub refname: String,
    pub version: Option<String>,
    pub kver: Option<String>,
    pub keep_initramfs: bool,
    pub no_overwrite: bool,
    /// The static `stratum-prepare-root` to use as the initramfs's `/init`; by default the
    /// one the root carries at [`stratum_prepare_root::INSTALLED_PATH`].
    pub prepare_root: Option<PathBuf>,
}

/// The result of a compose.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ComposeResult {
    pub commit: String,
    #[serde(rename = "ref")]
    pub refname: String,
    pub version: Option<String>,
    pub kernel: String,
    pub initramfs_blake3: Option<String>,
}

/// Composes `opts.rootfs` into a commit on `opts.refname`.
pub fn compose_rootfs(opts: &ComposeOptions) -> Result<ComposeResult> {
    let start = Instant::now();
    let meta = std::fs::metadata(&opts.rootfs)
        .with_context(|| format!("reading root filesystem {}", opts.rootfs.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", opts.rootfs.display());
    }
    // The rules a manifest's `ref` and `version` follow.
    manifest::check_ref(&opts.refname).context("--ref")?;
    if let Some(v) = &opts.version {
        check_version(v)?;
    }
    // Refuse early (before any work) when the ref exists and must not be moved.
    if opts.no_overwrite && opts.repo.join("config").exists() {
        let repo = crate::repo::open(&opts.repo)?;
        if crate::repo::has_ref(&repo, &opts.refname)? {
            bail!(
                "ref {} exists in {} and --no-overwrite was given",
                opts.refname,
                opts.repo.display()
            );
        }
    }
    let staging = Staging::new(&opts.rootfs)?;
    eprintln!("Staging {} ({})", opts.rootfs.display(), staging.how);
    let result = build(
        staging.root(),
        &Build {
            repo: &opts.repo,
            refname: &opts.refname,
            version: opts.version.as_deref(),
            kver: opts.kver.as_deref(),
            initramfs: if opts.keep_initramfs {
                Initramfs::Keep
            } else {
                Initramfs::Build {
                    extra_modules: &[],
                    // The root's own, before the staging copy moves anything.
                    init: Some(opts.prepare_root.clone().unwrap_or_else(|| {
                        opts.rootfs
                            .join(stratum_prepare_root::INSTALLED_PATH.trim_start_matches('/'))
                    })),
                }
            },
            metadata: Vec::new(),
        },
    )?;
    eprintln!(
        "Committed {} ({}) in {:.1} s",
        result.commit,
        opts.version.as_deref().unwrap_or("no version"),
        start.elapsed().as_secs_f64()
    );
    Ok(result)
}

/// Checks an image's version (or version template): it becomes part of every boot entry's
/// title, which clients refuse to write with a control character in it.
pub fn check_version(v: &str) -> Result<()> {
    crate::bootset::entry::check_title(v).context("version (shown in boot entry titles)")
}

/// The initramfs an image gets.
pub(crate) enum Initramfs<'a> {
    /// stratum-initramfs's, with these modules besides its defaults and `init` as `/init`
    /// (by default the root's stratum-prepare-root).
    Build {
        extra_modules: &'a [String],
        init: Option<PathBuf>,
    },
    /// The root's own (`/boot/initrd.img-KVER` or beside the kernel).
    Keep,
}

/// How to turn a prepared root into a commit.
pub(crate) struct Build<'a> {
    pub repo: &'a Path,
    pub refname: &'a str,
    pub version: Option<&'a str>,
    pub kver: Option<&'a str>,
    pub initramfs: Initramfs<'a>,
    /// Commit metadata besides `version` and the bindings.
    pub metadata: Vec<(&'static str, glib::Variant)>,
}

/// Applies the layout rules to `root` (modified in place), builds its initramfs and commits
/// it: the part `compose rootfs` and `compose tree` share.
pub(crate) fn build(root: &Path, b: &Build) -> Result<ComposeResult> {
    let epoch = source_date_epoch()?;
    let kernel = layout::select_kernel(root, b.kver)?;
    // It becomes a file name in /boot and a line of every boot entry.
    crate::bootset::entry::validate_kver(&kernel.kver)?;
    let keep = matches!(b.initramfs, Initramfs::Keep);
    layout::apply(root, &kernel, keep)?;

    let mut initramfs_blake3 = None;
    if let Initramfs::Build {
        extra_modules,
        init,
    } = &b.initramfs
    {
        let out = root
            .join("usr/lib/modules")
            .join(&kernel.kver)
            .join("initramfs.img");
        let mut modules: Vec<String> = stratum_initramfs::DEFAULT_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect();
        modules.extend(extra_modules.iter().cloned());
        let bopts = stratum_initramfs::BuildOptions {
            root: root.to_path_buf(),
            kver: kernel.kver.clone(),
            init: Some(init.clone().unwrap_or_else(|| {
                root.join(stratum_prepare_root::INSTALLED_PATH.trim_start_matches('/'))
            })),
            modules,
            source_date_epoch: epoch.unwrap_or(0),
            zstd_level: 3,
        };
        let report = stratum_initramfs::build(&bopts, &out)
            .with_context(|| format!("building the initramfs for kernel {}", kernel.kver))?;
        eprintln!(
            "Built initramfs for {}: {} modules, {} KiB",
            kernel.kver,
            report.modules.len(),
            report.compressed_size / 1024
        );
        initramfs_blake3 = Some(report.blake3);
    }

    let repo = crate::repo::open_or_create(b.repo, ostree::RepoMode::Bare)?;
    let subject = match b.version {
        Some(v) => format!("{} {v}", b.refname),
        None => b.refname.to_string(),
    };
    eprintln!("Committing to {} ref {}", b.repo.display(), b.refname);
    let commit = crate::repo::commit_dir(
        &repo,
        root,
        &crate::repo::CommitSpec {
            refname: b.refname,
            version: b.version,
            subject: &subject,
            timestamp: epoch,
            metadata: &b.metadata,
        },
    )?;
    Ok(ComposeResult {
        commit,
        refname: b.refname.to_string(),
        version: b.version.map(str::to_string),
        kernel: kernel.kver,
        initramfs_blake3,
    })
}

/// `SOURCE_DATE_EPOCH` (reproducible-builds.org): the commit's timestamp and the
/// initramfs members' modification time (0 when unset; the commit then takes the time now).
pub(crate) fn source_date_epoch() -> Result<Option<u64>> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .parse()
            .map(Some)
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        Err(_) => Ok(None),
    }
}

/// A staging copy of a root filesystem, removed on drop.
struct Staging {
    // Kept for its Drop, which removes the staging tree.
    _dir: tempfile::TempDir,
    root: PathBuf,
    how: &'static str,
}

impl Staging {
    /// Copies `rootfs` as hardlinks next to it (same filesystem), or as a full copy in the
    /// temporary directory when hardlinks are impossible.
    fn new(rootfs: &Path) -> Result<Staging> {
        let parent = rootfs
            .canonicalize()?
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("/"));
        if let Ok(dir) = tempfile::Builder::new()
            .prefix(".stratum-compose-")
            .tempdir_in(&parent)
        {
            let linked = crate::cmd::run(
                std::process::Command::new("cp")
                    .args(["-a", "--link", "--"])
                    .arg(rootfs)
                    .arg(dir.path().join("root")),
            );
            if linked.is_ok() {
                let root = dir.path().join("root");
                return Ok(Staging {
                    _dir: dir,
                    root,
                    how: "hardlinked copy",
                });
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("stratum-compose-")
            .tempdir()?;
        let root = dir.path().join("root");
        crate::fsutil::copy_tree(rootfs, &root)?;
        Ok(Staging {
            _dir: dir,
            root,
            how: "full copy",
        })
    }

    fn root(&self) -> &Path {
        &self.root
    }
}
