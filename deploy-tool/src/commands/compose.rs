//! `stratum compose`: build images (commits) from root filesystems.

use std::path::PathBuf;

use anyhow::Result;
use clap::Subcommand;

/// Build images (commits) from root filesystems
#[derive(Debug, Subcommand)]
pub enum ComposeCmd {
    /// Commit a root filesystem directory (e.g. from debootstrap) as a bootable image.
    ///
    /// The kernel moves to /usr/lib/modules/KVER/vmlinuz beside a new initramfs whose /init is
    /// stratum-prepare-root (taken from the root's /usr/lib/stratum, so install Stratum into
    /// the root first with `make install DESTDIR=ROOTFS`); /etc becomes /usr/etc; /var's
    /// contents move to /usr/share/factory/var (copied into /var at install, recreated when
    /// missing at boot by tmpfiles.d);
    /// /home /root /opt /srv /mnt /usr/local become symlinks into /var. ROOTFS itself is not
    /// modified. REPO is created when missing; on any error it is left unchanged.
    ///
    /// SOURCE_DATE_EPOCH, when set, is the commit's timestamp (and the initramfs members'
    /// time); otherwise the commit takes the time now. Clients refuse to upgrade to a commit
    /// older than the one they run, so timestamps must grow from build to build.
    Rootfs(ComposeRootfsOpts),
    /// Build an image from Debian packages as a manifest describes it (docs/compose.md).
    ///
    /// mmdebstrap installs the manifest's packages and kernel from its repositories into a
    /// new root; Stratum then adds the manifest's files, users, kernel arguments, settings and
    /// unit presets, runs its postprocess scripts sandboxed in the new root (no network),
    /// builds the initramfs and commits the root as `compose rootfs` does. The commit records
    /// the package list (`stratum.packages`), the manifest's digest and the ref binding.
    ///
    /// When the manifest and the installed package versions are those of the ref's commit,
    /// no commit is made ("No apparent changes"): exit status 0, or 77 with
    /// --unchanged-exit-77. With SOURCE_DATE_EPOCH set, building the same manifest from the
    /// same package versions gives the same tree. Runs as root (mmdebstrap's root mode).
    Tree(ComposeTreeOpts),
    /// Build the root a manifest describes into a new directory, without committing it.
    ///
    /// The first half of `compose tree`: mmdebstrap installs the packages, then the
    /// manifest's files, users, kernel arguments, settings, unit presets and postprocess
    /// scripts are applied. DEST is an ordinary root filesystem, for inspection or for
    /// `compose rootfs` after more changes. It must not exist; a failed build leaves nothing.
    Install(ComposeInstallOpts),
    /// Publish a ref into an archive repository that a static HTTP server can serve, with
    /// static deltas and a summary.
    ///
    /// Copies REF's commit from REPO into the archive repository DEST (created when missing)
    /// and generates static deltas to it from the N commits before it on REF's history and
    /// from the commit DEST's REF pointed to before: clients that run one of those commits
    /// download one delta instead of every changed object. Then REF moves and DEST's summary
    /// (its refs and deltas) is written again. With --gpg-sign, the commit and the summary
    /// are signed: the commit before its deltas are made (a delta carries its target's
    /// signature), the summary last. Serve DEST's directory with any static HTTP server.
    ///
    /// Until REF moves, DEST's clients see the previous release: an error leaves REF and the
    /// summary as they were.
    Publish(ComposePublishOpts),
}

#[derive(Debug, clap::Args)]
pub struct ComposeRootfsOpts {
    /// The root filesystem directory
    pub rootfs: PathBuf,
    /// The ostree repository to commit to (created as a bare repository when missing)
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to commit on, e.g. debian/12/x86_64/stable
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// Version string stored in the commit metadata (`version`); one line, as boot entry
    /// titles show it
    #[arg(long)]
    pub version: Option<String>,
    /// The kernel to use when the root has several
    #[arg(long)]
    pub kver: Option<String>,
    /// Keep the root's own initramfs (only for one that runs stratum-prepare-root, e.g. built
    /// by dracut with Stratum's module) instead of building one
    #[arg(long)]
    pub keep_initramfs: bool,
    /// Fail if REF exists already
    #[arg(long)]
    pub no_overwrite: bool,
    /// The static stratum-prepare-root to use as /init [default: the root's own]
    #[arg(long, value_name = "PATH")]
    pub prepare_root: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ComposeTreeOpts {
    /// The manifest (TOML)
    pub manifest: PathBuf,
    /// The ostree repository to commit to (created as a bare repository when missing)
    #[arg(long)]
    pub repo: PathBuf,
    /// The version, instead of the manifest's `version` template
    #[arg(long)]
    pub version: Option<String>,
    /// Keep downloaded packages in DIR and reuse them in later builds
    #[arg(long, value_name = "DIR")]
    pub cachedir: Option<PathBuf>,
    /// Build the root under DIR [default: $TMPDIR]; it is removed afterwards
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
    /// Commit even when nothing changed
    #[arg(long)]
    pub force_nocache: bool,
    /// Exit with status 77 when nothing changed (no commit made)
    #[arg(long)]
    pub unchanged_exit_77: bool,
    /// The static stratum-prepare-root to use as /init [default: the root's own]
    #[arg(long, value_name = "PATH")]
    pub prepare_root: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ComposeInstallOpts {
    /// The manifest (TOML)
    pub manifest: PathBuf,
    /// The directory to build the root in (must not exist)
    pub dest: PathBuf,
    /// Keep downloaded packages in DIR and reuse them in later builds
    #[arg(long, value_name = "DIR")]
    pub cachedir: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ComposePublishOpts {
    /// The repository `compose rootfs` committed to
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to publish
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// The archive repository to publish into (created when missing): the directory to serve
    #[arg(long, value_name = "DEST")]
    pub to: PathBuf,
    /// Generate static deltas from this many of the commit's nearest ancestors, and from the
    /// commit DEST's REF held before (0: no deltas)
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub deltas: u32,
    /// Also generate a delta from scratch (one download for a first pull of the whole
    /// commit)
    #[arg(long)]
    pub delta_from_scratch: bool,
    /// Sign the commit and the summary with this GPG key: a key id or fingerprint
    /// (repeatable)
    #[arg(long, value_name = "KEYID")]
    pub gpg_sign: Vec<String>,
    /// GnuPG home directory holding the signing keys [default: GnuPG's]
    #[arg(long, value_name = "DIR", requires = "gpg_sign")]
    pub gpg_homedir: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(c: &ComposeCmd) -> Result<i32> {
    match c {
        ComposeCmd::Rootfs(o) => {
            let r = crate::compose::compose_rootfs(&crate::compose::ComposeOptions {
                rootfs: o.rootfs.clone(),
                repo: o.repo.clone(),
                refname: o.refname.clone(),
                version: o.version.clone(),
                kver: o.kver.clone(),
                keep_initramfs: o.keep_initramfs,
                no_overwrite: o.no_overwrite,
                prepare_root: o.prepare_root.clone(),
            })?;
            print_result(&r, &r.commit, o.json)
        }
        ComposeCmd::Tree(o) => {
            let r = crate::compose::tree::compose_tree(&crate::compose::tree::TreeOptions {
                manifest: o.manifest.clone(),
                repo: o.repo.clone(),
                version: o.version.clone(),
                cachedir: o.cachedir.clone(),
                workdir: o.workdir.clone(),
                force: o.force_nocache,
                prepare_root: o.prepare_root.clone(),
            })?;
            print_result(&r, &r.commit, o.json)?;
            Ok(if !r.changed && o.unchanged_exit_77 {
                super::EXIT_UNCHANGED
            } else {
                0
            })
        }
        ComposeCmd::Install(o) => {
            let r =
                crate::compose::tree::compose_install(&o.manifest, &o.dest, o.cachedir.as_deref())?;
            if o.json {
                super::print_json(&r)?;
            } else {
                println!("{}", r.root.display());
            }
            Ok(0)
        }
        ComposeCmd::Publish(o) => {
            let r = crate::compose::publish::publish(&crate::compose::publish::PublishOptions {
                repo: o.repo.clone(),
                to: o.to.clone(),
                refname: o.refname.clone(),
                deltas: o.deltas,
                delta_from_scratch: o.delta_from_scratch,
                gpg: (!o.gpg_sign.is_empty()).then(|| crate::compose::publish::GpgSigner {
                    key_ids: o.gpg_sign.clone(),
                    homedir: o.gpg_homedir.clone(),
                }),
            })?;
            print_result(&r, &r.commit, o.json)
        }
    }
}

/// Prints `result` as JSON, or only the commit.
fn print_result(result: &impl serde::Serialize, commit: &str, json: bool) -> Result<i32> {
    if json {
        super::print_json(result)?;
    } else {
        println!("{commit}");
    }
    Ok(0)
}
