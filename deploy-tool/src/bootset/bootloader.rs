//! Which bootloader reads the boot set: chosen at install time, recorded in the sysroot.
//!
//! The choice belongs to the disk, not to an image, so it lives in the sysroot's repository
//! config, beside OSTree's own `sysroot.bootloader` key:
//!
//! ```ini
//! [stratum]
//! bootloader=systemd-boot
//!
//! [sysroot]
//! bootloader=none
//! ```
//!
//! `sysroot.bootloader=none` keeps OSTree's own tools (`ostree admin deploy`) from writing a
//! GRUB configuration on a systemd-boot disk. No `[stratum]` key means GRUB: disks installed
//! before the choice existed keep booting as they did.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{bail, Context, Result};
use ostree::glib;

use crate::sysroot::Sysroot;

const GROUP: &str = "stratum";
const KEY: &str = "bootloader";

/// Where the EFI system partition is mounted, relative to the sysroot.
pub const ESP_MOUNT: &str = "boot/efi";

/// The bootloader of a sysroot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Bootloader {
    /// GRUB reads `/boot/loader/grub.cfg` (generated from the BLS entries) and counts tries
    /// in `/boot/grubenv`.
    #[default]
    Grub,
    /// systemd-boot reads entries and boot files from the ESP and counts tries in the entry
    /// file names.
    SystemdBoot,
}

impl Bootloader {
    pub fn as_str(self) -> &'static str {
        match self {
            Bootloader::Grub => "grub",
            Bootloader::SystemdBoot => "systemd-boot",
        }
    }

    /// The bootloader recorded in `sysroot`'s repository config (GRUB when none is).
    pub fn of(sysroot: &Sysroot) -> Result<Bootloader> {
        let path = config_path(sysroot);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Bootloader::Grub);
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let kf = glib::KeyFile::new();
        kf.load_from_data(&text, glib::KeyFileFlags::NONE)
            .with_context(|| format!("parsing {}", path.display()))?;
        match kf.string(GROUP, KEY) {
            Ok(v) => v
                .parse()
                .with_context(|| format!("{}: [{GROUP}] {KEY}", path.display())),
            Err(_) => Ok(Bootloader::Grub),
        }
    }

    /// Records `self` as `repo`'s bootloader (see the module documentation).
    pub fn record(self, repo: &ostree::Repo) -> Result<()> {
        let kf = repo.copy_config();
        kf.set_string(GROUP, KEY, self.as_str());
        match self {
            Bootloader::Grub => {
                let _ = kf.remove_key("sysroot", KEY);
            }
            Bootloader::SystemdBoot => kf.set_string("sysroot", KEY, "none"),
        }
        repo.write_config(&kf)
            .context("recording the bootloader in the repository config")
    }

    /// Where `self` reads entries and boot files: the ESP for systemd-boot, checked to be
    /// mounted on a booted system (`None` for GRUB, which reads `/boot`).
    pub fn esp(self, sysroot: &Sysroot) -> Result<Option<PathBuf>> {
        if self == Bootloader::Grub {
            return Ok(None);
        }
        mounted_esp(sysroot)
            .context("this system boots with systemd-boot, whose entries live on the ESP")
            .map(Some)
    }
}

/// The sysroot's EFI system partition ([`ESP_MOUNT`]), checked to exist and, on a booted
/// system, to be mounted.
pub fn mounted_esp(sysroot: &Sysroot) -> Result<PathBuf> {
    let esp = sysroot.path.join(ESP_MOUNT);
    if !esp.is_dir() {
        bail!(
            "{} is missing: the EFI system partition is mounted there",
            esp.display()
        );
    }
    if sysroot.is_booted_system() && !is_mount_point(&esp)? {
        bail!(
            "the EFI system partition is not mounted at {} (mount it, e.g. `mount /boot/efi`, \
             and try again)",
            esp.display()
        );
    }
    Ok(esp)
}

impl fmt::Display for Bootloader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Bootloader {
    type Err = anyhow::Error;

    fn from_str(s: &str) -> Result<Bootloader> {
        match s {
            "grub" | "grub2" => Ok(Bootloader::Grub),
            "systemd-boot" => Ok(Bootloader::SystemdBoot),
            _ => bail!("unknown bootloader {s:?}: expected grub or systemd-boot"),
        }
    }
}

fn config_path(sysroot: &Sysroot) -> PathBuf {
    sysroot.repo_path().join("config")
}

/// Whether `dir` is a mount point (another device than its parent, or the root).
fn is_mount_point(dir: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let here = std::fs::metadata(dir).with_context(|| format!("reading {}", dir.display()))?;
    let parent = std::fs::metadata(dir.join(".."))
        .with_context(|| format!("reading {}/..", dir.display()))?;
    Ok(here.dev() != parent.dev() || here.ino() == parent.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for b in [Bootloader::Grub, Bootloader::SystemdBoot] {
            assert_eq!(b.as_str().parse::<Bootloader>().unwrap(), b);
        }
        assert!("lilo".parse::<Bootloader>().is_err());
    }

    #[test]
    fn recorded_in_the_repository_config() {
        let dir = tempfile::tempdir().unwrap();
        let sysroot = Sysroot::new(dir.path());
        sysroot.init("default").unwrap();
        let repo =
            crate::repo::open_or_create(&sysroot.repo_path(), ostree::RepoMode::Bare).unwrap();
        assert_eq!(Bootloader::of(&sysroot).unwrap(), Bootloader::Grub);
        Bootloader::SystemdBoot.record(&repo).unwrap();
        assert_eq!(Bootloader::of(&sysroot).unwrap(), Bootloader::SystemdBoot);
        let config = std::fs::read_to_string(config_path(&sysroot)).unwrap();
        assert!(config.contains("[sysroot]\nbootloader=none"), "{config}");
        // A value this version does not know is an error, not a silent GRUB.
        std::fs::write(
            config_path(&sysroot),
            config.replace("systemd-boot", "lilo"),
        )
        .unwrap();
        assert!(Bootloader::of(&sysroot).is_err());
    }
}
