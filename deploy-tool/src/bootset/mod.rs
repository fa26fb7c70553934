//! The boot set: which deployments the bootloader offers, in which order, and how they are
//! written.
//!
//! - [`entry`] is the codec between a deployment and its BLS entry, bootlink and boot files;
//! - [`bls`], [`grubcfg`] and [`grubenv`] are the on-disk formats, [`sdboot`] systemd-boot's
//!   boot counters in entry file names;
//! - [`bootloader`] is the sysroot's choice of bootloader (GRUB or systemd-boot);
//! - [`efivars`] reads the running firmware's Secure Boot state;
//! - [`efichain`] puts what the firmware starts on the ESP: shim and Debian's signed GRUB or
//!   systemd-boot from the image (Secure Boot), or a GRUB built on the host;
//! - [`esp`] writes a boot set where systemd-boot reads it (FAT, no symlinks), in an order
//!   that keeps a bootable default through a crash;
//! - [`writer`] writes a new generation and swaps it in atomically; [`durability`] makes it
//!   reach the disk in a state GRUB can read; [`files`] holds boot files and overlays;
//! - [`gc`] removes what the new boot set no longer needs.
//!
//! Boot counting is not decided here: the writer takes the counting prelude as input
//! ([`writer::WriterOptions::prelude`]).

pub mod bls;
pub mod bootloader;
pub mod durability;
pub mod efichain;
pub mod efivars;
pub mod entry;
pub mod esp;
pub mod files;
pub mod gc;
pub mod grubcfg;
pub mod grubenv;
pub mod sdboot;
pub mod writer;

use crate::sysroot::{Deployment, Sysroot};

pub use writer::{write_boot_set, WriterOptions};

/// A deployment as the writer needs it.
#[derive(Debug, Clone)]
pub struct BootDeployment {
    pub deployment: Deployment,
    /// The menu title, e.g. `Debian GNU/Linux 12 (bookworm) 1.0`.
    pub title: String,
}

impl BootDeployment {
    /// `d` with its title: the image's `PRETTY_NAME` and the commit's version.
    pub fn new(sysroot: &Sysroot, repo: Option<&ostree::Repo>, d: &Deployment) -> BootDeployment {
        let version = repo
            .and_then(|r| crate::repo::commit_info(r, &d.checksum).ok())
            .and_then(|i| i.version);
        let title = files::os_pretty_name(&sysroot.deployment_root(d))
            + &version.map(|v| format!(" {v}")).unwrap_or_default();
        BootDeployment {
            deployment: d.clone(),
            title,
        }
    }
}
