//! The command line: one enum of verbs, one options struct per verb; doc comments are the help.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};

use crate::sysroot::Sysroot;

/// Image-based OS updates: compose images, install them, deploy, roll back.
///
/// Stratum keeps several deployments of versioned OS images side by side and switches between
/// them atomically. `/usr` is the image (read-only), `/etc` is merged configuration, `/var` is
/// the machine's own data and never rolled back.
///
/// Exit status: 0 success, 1 failure (the message says what failed and what to do),
/// 2 invalid command line.
#[derive(Debug, Parser)]
#[command(name = "stratum", version, max_term_width = 100)]
pub struct Cli {
    /// The sysroot to operate on: a directory holding ostree/ and boot/ [default: /]
    #[arg(long, global = true, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// The stateroot (OS name) to operate on [default: the booted one, or "default"]
    #[arg(long, global = true, value_name = "NAME")]
    pub stateroot: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the deployments in boot order (default first)
    Status(StatusOpts),
    /// Build images (commits) from root filesystems
    #[command(subcommand)]
    Compose(ComposeCmd),
    /// Install an image onto a new disk or directory
    #[command(subcommand)]
    Install(InstallCmd),
}

#[derive(Debug, clap::Args)]
pub struct StatusOpts {
    /// Print JSON (rpm-ostree's key names where the concept is shared)
    #[arg(long)]
    pub json: bool,
    /// Only the booted deployment
    #[arg(long, short = 'b')]
    pub booted: bool,
    /// Also show kernel arguments and boot checksums
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum ComposeCmd {
    /// Commit a root filesystem directory (e.g. from debootstrap) as a bootable image.
    ///
    /// The kernel moves to /usr/lib/modules/KVER/vmlinuz beside a new initramfs whose /init is
    /// stratum-prepare-root (taken from the root's /usr/lib/stratum, so install Stratum into
    /// the root first with `make install DESTDIR=ROOTFS`); /etc becomes /usr/etc; /var's
    /// contents move to /usr/share/factory/var and are recreated at boot by tmpfiles.d;
    /// /home /root /opt /srv /mnt /usr/local become symlinks into /var. ROOTFS itself is not
    /// modified. REPO is created when missing; on any error it is left unchanged.
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

#[derive(Debug, Subcommand)]
pub enum InstallCmd {
    /// Write a bootable GPT disk image (UEFI): ESP with GRUB, ext4 /boot, ext4 root.
    ///
    /// Built from files, without loop devices or mounts, so it works unprivileged too. The
    /// root partition holds the sysroot (/ostree/repo with the commit, the stateroot and one
    /// deployment); the deployment's /etc/fstab mounts /boot and /boot/efi. Writing straight
    /// to a block device is not supported: write an image and copy it with
    /// `dd if=IMAGE of=DEVICE bs=4M conv=sparse`.
    ToDisk(ToDiskOpts),
    /// Write a sysroot into an existing directory (its boot/ holds the boot set)
    ToFilesystem(ToFilesystemOpts),
}

#[derive(Debug, clap::Args)]
pub struct InstallSource {
    /// The ostree repository holding the image
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to install
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// Extra kernel argument (repeatable), e.g. --karg console=ttyS0
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ToDiskOpts {
    #[command(flatten)]
    pub source: InstallSource,
    /// The disk image file to write (replaced when complete)
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Size of the image, e.g. 4G
    #[arg(long, default_value = "4G")]
    pub size: String,
    /// Keep the staged sysroot in DIR (for inspection, e.g. `ostree admin status --sysroot DIR/sysroot`)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ToFilesystemOpts {
    #[command(flatten)]
    pub source: InstallSource,
    /// The directory to write the sysroot into
    pub dir: PathBuf,
}

/// Parses `args` and runs the command.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<()> {
    let cli = Cli::parse_from(args);
    match &cli.command {
        Command::Status(o) => status(&cli, o),
        Command::Compose(ComposeCmd::Rootfs(o)) => {
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
            print_result(o.json, &r, &r.commit)
        }
        Command::Install(InstallCmd::ToDisk(o)) => {
            let size = crate::disk::parse_size(&o.size)?;
            let r = crate::install::to_disk(
                &o.image,
                size,
                &install_options(&cli, &o.source)?,
                o.workdir.as_deref(),
            )?;
            eprintln!(
                "Wrote {} ({} MiB) with deployment {}",
                o.image.display(),
                size >> 20,
                r.deployment
            );
            print_result(o.source.json, &r, &r.commit)
        }
        Command::Install(InstallCmd::ToFilesystem(o)) => {
            let r = crate::install::to_filesystem(&o.dir, &install_options(&cli, &o.source)?, "")?;
            print_result(o.source.json, &r, &r.deployment)
        }
    }
}

fn install_options(cli: &Cli, s: &InstallSource) -> Result<crate::install::InstallOptions> {
    for k in &s.kargs {
        if k.is_empty() || k.contains(['\n', '\0']) {
            bail!("invalid kernel argument {k:?}: empty, or contains a newline or NUL");
        }
        if k.starts_with("ostree=") {
            bail!("--karg {k}: ostree= is written by stratum itself");
        }
    }
    let stateroot = cli
        .stateroot
        .clone()
        .unwrap_or_else(|| "default".to_string());
    crate::sysroot::validate_stateroot(&stateroot)?;
    Ok(crate::install::InstallOptions {
        repo: s.repo.clone(),
        refname: s.refname.clone(),
        stateroot,
        kargs: s.kargs.clone(),
    })
}

fn print_result<T: serde::Serialize>(json: bool, value: &T, plain: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{plain}");
    }
    Ok(())
}

/// The sysroot to use when `--sysroot` is not given: `/`. On a booted system `/ostree` is a
/// symlink into the physical root (`/sysroot/ostree`) and `/boot` is the boot partition, so
/// `/` sees the whole sysroot, as OSTree's default sysroot does.
fn default_sysroot(cli: &Cli) -> Sysroot {
    Sysroot::new(cli.sysroot.clone().unwrap_or_else(|| "/".into()))
}

fn status(cli: &Cli, o: &StatusOpts) -> Result<()> {
    let sysroot = default_sysroot(cli);
    let mut st = crate::status::read(&sysroot)?;
    if let Some(sr) = &cli.stateroot {
        st.deployments.retain(|d| &d.osname == sr);
    }
    if o.booted {
        st.deployments.retain(|d| d.booted);
    }
    if o.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", crate::status::render(&st, o.verbose));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_install_to_disk() {
        let cli = Cli::try_parse_from([
            "stratum",
            "install",
            "to-disk",
            "--repo",
            "r",
            "--ref",
            "x",
            "--image",
            "d.img",
            "--karg",
            "console=ttyS0",
        ])
        .unwrap();
        let Command::Install(InstallCmd::ToDisk(o)) = cli.command else {
            panic!()
        };
        assert_eq!(o.source.kargs, vec!["console=ttyS0"]);
        assert_eq!(o.size, "4G");
    }

    #[test]
    fn bad_kargs_are_refused() {
        let cli = Cli::try_parse_from([
            "stratum",
            "install",
            "to-filesystem",
            "--repo",
            "r",
            "--ref",
            "x",
            "d",
        ])
        .unwrap();
        for bad in ["a\nb", "", "ostree=/x"] {
            let s = InstallSource {
                repo: "r".into(),
                refname: "x".into(),
                kargs: vec![bad.into()],
                json: false,
            };
            assert!(install_options(&cli, &s).is_err(), "{bad:?}");
        }
    }
}
