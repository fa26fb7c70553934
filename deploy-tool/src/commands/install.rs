//! `stratum install`: layer packages (`install PKG…`, see [`super::packages`]), or write a
//! new sysroot from an image (`install to-disk|to-filesystem`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::builder::TypedValueParser as _;
use clap::Subcommand;

use super::Globals;
use crate::bootset::bootloader::Bootloader;
use crate::install::{FollowRemote, RemoteTrust};

/// `install`: packages, or a subcommand that installs an image.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct InstallArgs {
    #[command(subcommand)]
    pub target: Option<InstallCmd>,
    #[command(flatten)]
    pub packages: super::packages::InstallPackagesOpts,
}

/// Install an image onto a new disk or directory
#[derive(Debug, Subcommand)]
pub enum InstallCmd {
    /// Write a bootable GPT disk image (UEFI): ESP with the bootloader, ext4 /boot, ext4 root.
    ///
    /// With GRUB (the default), the ESP holds the image's shim and Debian's signed GRUB at
    /// the removable-media path EFI/BOOT/BOOTX64.EFI, so the disk boots with Secure Boot on
    /// or off; with systemd-boot, the image's systemd-boot.
    ///
    /// Built from files, without loop devices or mounts, so it works unprivileged too. The
    /// root partition holds the sysroot (/ostree/repo with the commit, the stateroot and one
    /// deployment); the deployment's /etc/fstab mounts /boot and /boot/efi. Writing straight
    /// to a block device is not supported: write an image and copy it with
    /// `dd if=IMAGE of=DEVICE bs=4M conv=sparse`.
    ToDisk(ToDiskOpts),
    /// Write a sysroot into an existing directory (its boot/ holds the boot set).
    ///
    /// With --bootloader systemd-boot, the EFI system partition must be mounted at
    /// DIR/boot/efi: the entries, the boot files and systemd-boot itself go there.
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
    /// Make the installed system follow REF from this remote (origin NAME:REF), e.g.
    /// --remote updates=https://example.com/repo
    #[arg(long, value_name = "NAME=URL")]
    pub remote: Option<String>,
    /// GPG public keys that sign the remote's commits: its commits must carry a valid
    /// signature by one of them (the file is checked before anything is written). --remote
    /// needs this or --no-sign-verify
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub remote_gpg_import: Option<PathBuf>,
    /// Accept unsigned commits from the --remote (no signature verification)
    #[arg(long, requires = "remote", conflicts_with = "remote_gpg_import")]
    pub no_sign_verify: bool,
    /// Also require a valid signature, by the --remote-gpg-import keys, on the remote's
    /// summary (its refs and static deltas)
    #[arg(long, requires = "remote_gpg_import")]
    pub remote_sign_verify_summary: bool,
    /// The bootloader that boots the system: grub (GRUB reads /boot, counts tries in
    /// /boot/grubenv) or systemd-boot (reads entries and boot files from the EFI system
    /// partition, counts tries in the entry file names). Recorded in the sysroot; every
    /// later boot-set write uses it. See docs/bootloaders.md
    #[arg(long, value_name = "NAME", default_value = "grub",
          value_parser = clap::builder::PossibleValuesParser::new(["grub", "systemd-boot"])
              .map(|s| s.parse::<Bootloader>().expect("a possible value")))]
    pub bootloader: Bootloader,
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
    /// With GRUB: build GRUB's EFI binary on this host with grub-mkimage (unsigned; boots
    /// only with Secure Boot off) instead of using shim and Debian's signed GRUB from the
    /// image (packages shim-signed and grub-efi-amd64-signed), which boot with Secure Boot on
    /// or off. See docs/secure-boot.md
    #[arg(long)]
    pub unsigned_grub: bool,
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

pub fn run(g: &Globals, c: &InstallCmd) -> Result<i32> {
    match c {
        InstallCmd::ToDisk(o) => {
            let size = crate::install::disk::parse_size(&o.size)?;
            if o.unsigned_grub && o.source.bootloader != Bootloader::Grub {
                bail!("--unsigned-grub builds GRUB: it goes with --bootloader grub only");
            }
            let opts = crate::install::InstallOptions {
                unsigned_grub: o.unsigned_grub,
                ..install_options(g, &o.source)?
            };
            let r = crate::install::to_disk(&o.image, size, &opts, o.workdir.as_deref())?;
            eprintln!(
                "Wrote {} ({} MiB) with deployment {}",
                o.image.display(),
                size >> 20,
                r.deployment
            );
            print(o.source.json, &r, &r.commit)
        }
        InstallCmd::ToFilesystem(o) => {
            let r = crate::install::to_filesystem(&o.dir, &install_options(g, &o.source)?, "")?;
            print(o.source.json, &r, &r.deployment)
        }
    }
}

fn print(json: bool, r: &crate::install::InstallResult, plain: &str) -> Result<i32> {
    if json {
        super::print_json(r)?;
    } else {
        println!("{plain}");
    }
    Ok(0)
}

fn install_options(g: &Globals, s: &InstallSource) -> Result<crate::install::InstallOptions> {
    // Kept in the text the kernel receives (`"k=a b"` for `k="a b"`), as `stratum kargs` does.
    let kargs = s
        .kargs
        .iter()
        .map(|k| {
            crate::kargs::check_settable(k)
                .map(|p| p.to_string())
                .with_context(|| format!("--karg {k:?}"))
        })
        .collect::<Result<Vec<_>>>()?;
    // `--stateroot` was validated when it was parsed.
    let stateroot = g.stateroot.clone().unwrap_or_else(|| "default".to_string());
    let remote = match &s.remote {
        Some(r) => {
            let (name, url) = r
                .split_once('=')
                .with_context(|| format!("--remote {r}: expected NAME=URL"))?;
            // Checked here, before anything is written, as well as when the remote is added.
            crate::remote::validate_name(name).with_context(|| format!("--remote {r}"))?;
            crate::remote::validate_url(url).with_context(|| format!("--remote {r}"))?;
            let trust = match (&s.remote_gpg_import, s.no_sign_verify) {
                (Some(keys), _) => RemoteTrust::GpgKeys(keys.clone()),
                (None, true) => RemoteTrust::Unverified,
                (None, false) => bail!(
                    "--remote {r}: give the public keys that sign the remote's commits with \
                     --remote-gpg-import FILE, or accept unsigned commits explicitly with \
                     --no-sign-verify"
                ),
            };
            Some(FollowRemote {
                name: name.to_string(),
                url: url.to_string(),
                trust,
                verify_summary: s.remote_sign_verify_summary,
            })
        }
        None => None,
    };
    Ok(crate::install::InstallOptions {
        repo: s.repo.clone(),
        refname: s.refname.clone(),
        stateroot,
        kargs,
        remote,
        bootloader: s.bootloader,
        unsigned_grub: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_kargs_are_refused() {
        let g = Globals {
            sysroot: None,
            stateroot: None,
            no_wait: false,
        };
        for bad in [
            "a\nb",
            "",
            "ostree=/x",
            r"k=C:\dir",
            "k=voilà",
            r#"k="a "b" c""#,
        ] {
            let s = InstallSource {
                repo: "r".into(),
                refname: "x".into(),
                kargs: vec![bad.into()],
                bootloader: Bootloader::Grub,
                json: false,
                remote: None,
                remote_gpg_import: None,
                no_sign_verify: false,
                remote_sign_verify_summary: false,
            };
            assert!(install_options(&g, &s).is_err(), "{bad:?}");
        }
        // Stored as the kernel receives it.
        let s = InstallSource {
            repo: "r".into(),
            refname: "x".into(),
            kargs: vec![r#"q="a b""#.into(), "rw".into()],
            bootloader: Bootloader::Grub,
            json: false,
            remote: None,
            remote_gpg_import: None,
            no_sign_verify: false,
            remote_sign_verify_summary: false,
        };
        assert_eq!(
            install_options(&g, &s).unwrap().kargs,
            vec![r#""q=a b""#.to_string(), "rw".to_string()]
        );
    }

    #[test]
    fn a_remote_needs_keys_or_no_sign_verify() {
        let g = Globals {
            sysroot: None,
            stateroot: None,
            no_wait: false,
        };
        let source = |keys: Option<&str>, no_sign_verify| InstallSource {
            repo: "r".into(),
            refname: "x".into(),
            kargs: vec![],
            bootloader: Bootloader::Grub,
            json: false,
            remote: Some("u=https://example.com/repo".into()),
            remote_gpg_import: keys.map(Into::into),
            no_sign_verify,
            remote_sign_verify_summary: false,
        };
        let e = install_options(&g, &source(None, false)).unwrap_err();
        assert!(format!("{e}").contains("--no-sign-verify"), "{e}");
        let trust = |s| install_options(&g, &s).unwrap().remote.unwrap().trust;
        assert!(matches!(trust(source(None, true)), RemoteTrust::Unverified));
        assert!(matches!(
            trust(source(Some("k.asc"), false)),
            RemoteTrust::GpgKeys(k) if k == std::path::Path::new("k.asc")
        ));
    }
}
