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
    /// Version string stored in the commit metadata (`version`)
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
            if o.json {
                super::print_json(&r)?;
            } else {
                println!("{}", r.commit);
            }
            Ok(0)
        }
    }
}
