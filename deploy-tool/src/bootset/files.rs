//! Boot files in `/boot/ostree`: each deployment's kernel and initramfs, and the
//! `initramfs-etc` overlay archives entries share.
//!
//! Kernel and initramfs live in `/boot/ostree/<stateroot>-<bootcsum>/`, shared by deployments
//! with the same boot checksum, built under a temporary name and renamed into place. Overlays
//! live in `/boot/ostree/initramfs-overlays/<sha256>.img`, as OSTree keeps them, named by
//! their content. Both are removed by the writer once no entry of the new boot set uses them.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::entry;
use crate::fsutil;
use crate::sysroot::{Deployment, Sysroot};

/// The overlays' directory below `/boot/ostree`.
pub const OVERLAYS_DIR: &str = "initramfs-overlays";

/// `d`'s boot-file directory on the host.
pub fn boot_files_dir(sysroot: &Sysroot, d: &Deployment) -> PathBuf {
    sysroot
        .boot()
        .join(entry::boot_dir(d).trim_start_matches('/'))
}

/// Copies `d`'s kernel and initramfs from its checkout into `/boot` (nothing to do when a
/// deployment with the same boot checksum put them there already).
pub fn install(sysroot: &Sysroot, d: &Deployment) -> Result<()> {
    let dest = boot_files_dir(sysroot, d);
    let vmlinuz = entry::vmlinuz_name(&d.kver);
    let initramfs = entry::initramfs_name(&d.kver);
    if dest.join(&vmlinuz).is_file() && dest.join(&initramfs).is_file() {
        return Ok(());
    }
    let src = sysroot
        .deployment_root(d)
        .join("usr/lib/modules")
        .join(&d.kver);
    let parent = dest.parent().context("boot files parent")?;
    fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    let tmp = parent.join(format!(".{}.tmp", d.bootcsum));
    fsutil::remove_any(&tmp)?;
    fs::create_dir(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    fsutil::copy_file_durable(&src.join("vmlinuz"), &tmp.join(&vmlinuz))?;
    fsutil::copy_file_durable(&src.join("initramfs.img"), &tmp.join(&initramfs))?;
    fsutil::fsync_dir(&tmp)?;
    fsutil::remove_any(&dest)?;
    fs::rename(&tmp, &dest)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dest.display()))?;
    fsutil::fsync_dir(parent)
}

/// Writes `data` as `/boot/ostree/initramfs-overlays/<sha256>.img` (temp file + rename) and
/// returns its path relative to `/boot`, as the BLS entry names it.
pub fn write_overlay(sysroot: &Sysroot, data: &[u8]) -> Result<String> {
    let dir = sysroot.boot().join("ostree").join(OVERLAYS_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}.img", hex::encode(Sha256::digest(data)));
    let path = dir.join(&name);
    if !path.is_file() {
        fsutil::atomic_write(&path, data, 0o644)?;
    }
    Ok(format!("/ostree/{OVERLAYS_DIR}/{name}"))
}

/// Removes boot-file directories and overlays that none of `live` uses. No sync: garbage that
/// survives a crash is collected by the next writer.
pub fn remove_unused(sysroot: &Sysroot, live: &[Deployment]) -> Result<()> {
    let dir = sysroot.boot().join("ostree");
    let keep: BTreeSet<PathBuf> = live.iter().map(|d| boot_files_dir(sysroot, d)).collect();
    let used_overlays: BTreeSet<PathBuf> = live
        .iter()
        .flat_map(|d| d.overlay_initrds.iter())
        .map(|p| sysroot.boot().join(p.trim_start_matches('/')))
        .collect();
    let overlays = dir.join(OVERLAYS_DIR);
    for p in read_dir_paths(&overlays)? {
        if !used_overlays.contains(&p) {
            fsutil::remove_any(&p)?;
        }
    }
    for p in read_dir_paths(&dir)? {
        if !keep.contains(&p) && p != overlays {
            fsutil::remove_any(&p)?;
        }
    }
    Ok(())
}

fn read_dir_paths(dir: &Path) -> Result<Vec<PathBuf>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.map(|e| e.path()))
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading {}", dir.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

/// Reads a deployment's `PRETTY_NAME` for its menu title.
pub fn os_pretty_name(deployment_root: &Path) -> String {
    let text = fs::read_to_string(deployment_root.join("usr/lib/os-release"))
        .or_else(|_| fs::read_to_string(deployment_root.join("usr/etc/os-release")))
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".to_string())
}
