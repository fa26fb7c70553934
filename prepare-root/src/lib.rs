//! `stratum-prepare-root`: the program that runs in the initramfs and turns a physical root
//! device into the booted Stratum (OSTree-compatible) deployment.
//!
//! This file is the **boot contract**: the kernel argument names, marker files and paths that
//! the admin tool (`deploy-tool`) and the initramfs generator write to. Keep these names stable.
//!
//! The pure, unit-tested parts are [`cmdline`], [`probe`], [`confine`], [`bootinfo`] and
//! [`params`]; the rest ([`boot`], [`devices`], [`kmod`], [`mounts`], [`switchroot`],
//! [`fatal`]) talk to the kernel and only make sense as PID 1 of an initramfs; [`initrd`] is
//! the systemd-initrd mode, run as a service of a dracut-built initramfs.

#![deny(unsafe_code)]

pub mod bootinfo;
pub mod cmdline;
pub mod confine;
pub mod fnmatch;
pub mod mountinfo;
pub mod params;
pub mod probe;

pub mod boot;
pub mod devices;
pub mod error;
pub mod fatal;
pub mod initrd;
pub mod kmod;
pub mod mounts;
pub mod switchroot;

/// Kernel argument naming the deployment to boot (`ostree=/ostree/boot.N/<os>/<bootcsum>/<serial>`).
pub const KARG_OSTREE: &str = "ostree";
/// Marker file that many tools test for to detect an OSTree-style booted system.
pub const OSTREE_BOOTED: &str = "/run/ostree-booted";
/// What prepare-root decided, as JSON ([`bootinfo::BootInfo`]).
pub const BOOT_JSON: &str = "/run/stratum/boot.json";
/// Kernel modules to load, one absolute path per line, in dependency order (inside the initramfs).
pub const MODULES_LOAD_LIST: &str = "/etc/stratum/modules.load";
/// Free-form JSON object describing the initramfs, copied into `boot.json` (inside the initramfs).
pub const INITRAMFS_INFO: &str = "/etc/stratum/initramfs.json";
/// `/etc` files carried by an `initramfs-etc` overlay, one per line (inside the initramfs).
pub const TRACKED_ETC_LIST: &str = "/etc/stratum/tracked-etc.list";
/// Where images carry the static binary.
pub const INSTALLED_PATH: &str = "/usr/lib/stratum/stratum-prepare-root";
/// Default for `stratum.root-timeout=`: how long to wait for the root device.
pub const DEFAULT_ROOT_TIMEOUT_SECS: u64 = 30;
/// Default for `stratum.reboot-delay=`: how long the failure report stays on screen.
pub const DEFAULT_REBOOT_DELAY_SECS: u64 = 10;

/// `stratum.debug`: print every step with its timing on the console.
pub const KARG_DEBUG: &str = "stratum.debug";
/// `stratum.root-timeout=SECONDS`: bound on the wait for the root device.
pub const KARG_ROOT_TIMEOUT: &str = "stratum.root-timeout";
/// `stratum.reboot-delay=SECONDS`: delay before rebooting after a fatal error (0 = at once).
pub const KARG_REBOOT_DELAY: &str = "stratum.reboot-delay";
/// `stratum.emergency=reboot|halt`: what to do after a fatal error (default `reboot`).
pub const KARG_EMERGENCY: &str = "stratum.emergency";
/// `stratum.sysroot-rw`: leave `/sysroot` writable in the booted system.
pub const KARG_SYSROOT_RW: &str = "stratum.sysroot-rw";

/// Splits a deployment directory name, `<checksum>.<serial>`: the checksum is a SHA-256 in
/// lowercase hex (64 characters, as OSTree writes commit checksums) and the serial a decimal
/// number without sign. This is the one rule both the boot path and the admin tool apply, so a
/// name one accepts the other accepts too.
pub fn parse_deployment_name(name: &str) -> Option<(&str, u32)> {
    let (csum, serial) = name.rsplit_once('.')?;
    let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
    if csum.len() != 64 || !csum.bytes().all(lower_hex) {
        return None;
    }
    if serial.is_empty() || !serial.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((csum, serial.parse().ok()?))
}

/// What a deployment's path (`ostree/deploy/<stateroot>/deploy/<checksum>.<serial>`) holds.
///
/// A deployment is a real directory. A symlink in its place is never one, wherever it points:
/// it would let one deployment stand for another (so that removing the "other" removes the
/// real one) or for a directory outside `ostree/deploy`. This is the one rule the boot path
/// and the admin tool apply when they read, boot, unlock or delete a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeploymentDir {
    /// A real directory: a deployment.
    Directory,
    /// Nothing is there.
    Missing,
    /// A symlink, which is not followed.
    Symlink,
    /// A file or a special file.
    NotADirectory,
}

/// Looks at `path` without following a symlink there, by the rule of [`DeploymentDir`].
pub fn deployment_dir(path: &std::path::Path) -> std::io::Result<DeploymentDir> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Ok(DeploymentDir::Symlink),
        Ok(m) if m.is_dir() => Ok(DeploymentDir::Directory),
        Ok(_) => Ok(DeploymentDir::NotADirectory),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DeploymentDir::Missing),
        Err(e) => Err(e),
    }
}

/// Where the physical root filesystem is mounted inside the initramfs.
pub const SYSROOT: &str = "/sysroot";
/// Where the deployment is assembled before `switch_root`.
pub const NEWROOT: &str = "/newroot";
/// Init programs tried, in order, when `init=` is not given.
pub const DEFAULT_INITS: &[&str] = &[
    "/sbin/init",
    "/lib/systemd/systemd",
    "/usr/lib/systemd/systemd",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deployment_names() {
        let c = "a".repeat(64);
        assert_eq!(
            parse_deployment_name(&format!("{c}.3")),
            Some((c.as_str(), 3))
        );
        for bad in [
            "abc.0".to_string(),
            c.clone(),
            format!("{}.0", "A".repeat(64)),
            format!("{c}.+1"),
            format!("{c}."),
            format!("{c}.x"),
            format!("{c}.99999999999"),
            format!("{}.0", "g".repeat(64)),
        ] {
            assert_eq!(parse_deployment_name(&bad), None, "{bad}");
        }
    }

    #[test]
    fn deployment_dirs_are_real_directories() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink("real", d.path().join("link")).unwrap();
        std::fs::write(d.path().join("file"), "").unwrap();
        let kind = |n: &str| deployment_dir(&d.path().join(n)).unwrap();
        assert_eq!(kind("real"), DeploymentDir::Directory);
        assert_eq!(kind("link"), DeploymentDir::Symlink);
        assert_eq!(kind("file"), DeploymentDir::NotADirectory);
        assert_eq!(kind("none"), DeploymentDir::Missing);
    }
}
