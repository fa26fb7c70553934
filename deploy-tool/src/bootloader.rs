//! The bootloader writer: every change of the boot set becomes a new generation.
//!
//! The protocol, each step durable before the next:
//! 1. boot files in `/boot/ostree/<stateroot>-<bootcsum>/` (shared by deployments with the
//!    same kernel and initramfs; built under a temporary name and renamed);
//! 2. bootlinks `ostree/boot.N.M/<stateroot>/<bootcsum>/<bootserial>`, then `ostree/boot.N`
//!    swapped to them;
//! 3. the new generation `/boot/loader.N` (BLS entries + generated `grub.cfg`), fsynced;
//! 4. `syncfs` of `/boot`, then FIFREEZE/FITHAW when `/boot` is its own filesystem (GRUB
//!    reads the disk without replaying the journal);
//! 5. the atomic switch: `/boot/loader` is renamed to point at `loader.N`;
//! 6. the previous generation and boot files nothing refers to any more are removed.
//!
//! A crash before step 5 leaves the old boot set in place (the new generation is not
//! referenced); after it, the new one is complete.

use std::collections::{BTreeSet, HashMap};
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::bls;
use crate::fsutil;
use crate::grubcfg;
use crate::sysroot::{Deployment, Sysroot};

/// A deployment as the writer needs it.
#[derive(Debug, Clone)]
pub struct BootDeployment {
    pub deployment: Deployment,
    /// The menu title, e.g. `Debian GNU/Linux 12 (bookworm) 1.0`.
    pub title: String,
}

/// Options that are not per-deployment.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub grub_timeout_secs: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            grub_timeout_secs: 1,
        }
    }
}

/// Writes `deployments` (default first) as the new boot set of `sysroot`. `bootserial` of
/// each deployment is assigned here. Returns the new bootversion.
pub fn write_boot_set(
    sysroot: &Sysroot,
    deployments: &[BootDeployment],
    opts: &WriterOptions,
) -> Result<u8> {
    let boot = sysroot.boot();
    let new_bv = match sysroot.bootversion()? {
        Some(b) => 1 - b,
        None => 0,
    };
    let deployments = assign_bootserials(deployments);

    // 1. Boot files.
    for d in &deployments {
        install_boot_files(sysroot, &d.deployment)?;
    }
    crate::failpoint("bootloader::after-boot-files")?;

    // 2. Bootlinks.
    write_bootlinks(sysroot, new_bv, &deployments)?;
    crate::failpoint("bootloader::after-bootlinks")?;

    // 3. The new generation.
    let gen = boot.join(format!("loader.{new_bv}"));
    fsutil::remove_any(&gen)?;
    let entries_dir = gen.join("entries");
    fs::create_dir_all(&entries_dir)
        .with_context(|| format!("creating {}", entries_dir.display()))?;
    let n = deployments.len();
    let mut menu = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let dep = &d.deployment;
        let version = n - i;
        let bootdir = format!("/ostree/{}-{}", dep.stateroot, dep.bootcsum);
        let linux = format!("{bootdir}/vmlinuz-{}", dep.kver);
        let initrd = format!("{bootdir}/initramfs-{}.img", dep.kver);
        let mut kargs = dep.kargs.clone();
        kargs.push(format!(
            "ostree=/ostree/boot.{new_bv}/{}/{}/{}",
            dep.stateroot, dep.bootcsum, dep.bootserial
        ));
        let title = format!("{} (ostree:{i})", d.title);
        let mut e = bls::Entry::default();
        e.set("title", &title);
        e.set("version", version.to_string());
        e.set("options", kargs.join(" "));
        e.set("linux", &linux);
        e.push("initrd", &initrd);
        for o in &dep.overlay_initrds {
            e.push("initrd", o);
        }
        let path = entries_dir.join(bls::entry_file_name(version, &dep.stateroot));
        fs::write(&path, e.to_string()).with_context(|| format!("writing {}", path.display()))?;
        menu.push(grubcfg::MenuEntry {
            title,
            id: format!("stratum-{}-{}", dep.stateroot, dep.name()),
            linux,
            initrds: [vec![initrd], dep.overlay_initrds.clone()].concat(),
            kargs,
        });
    }
    let cfg = grubcfg::render(
        &menu,
        &grubcfg::MenuOptions {
            timeout_secs: opts.grub_timeout_secs,
            // Entry 1 is where a failed trial falls back to; with one entry there is no trial.
            prelude: match deployments.as_slice() {
                [first, _, ..] => crate::bootstate::grub_counting_script(
                    &crate::bootstate::id(&first.deployment),
                    crate::config::MAX_BOOT_TRIES,
                ),
                _ => String::new(),
            },
        },
    );
    fs::write(gen.join("grub.cfg"), cfg).context("writing grub.cfg")?;
    crate::failpoint("bootloader::after-generation")?;

    // 4. Make the bootlinks and the generation durable (one syncfs per filesystem instead of
    // an fsync per file), and /boot readable by GRUB, which does not replay the journal.
    crate::fsfreeze::sync_sysroot_and_boot(&sysroot.path, &boot)?;
    crate::failpoint("bootloader::before-swap")?;

    // 5. The switch, made durable before anyone is told it happened.
    fsutil::replace_symlink(&format!("loader.{new_bv}"), &boot.join("loader"))?;
    crate::fsfreeze::sync_and_freeze(&boot)?;
    crate::failpoint("bootloader::after-swap")?;

    // 6. Garbage.
    fsutil::remove_any(&boot.join(format!("loader.{}", 1 - new_bv)))?;
    remove_unused_boot_files(sysroot, &deployments)?;
    remove_unused_bootlinks(sysroot)?;
    Ok(new_bv)
}

/// Numbers deployments that share a bootcsum 0, 1, … in boot order, as OSTree does.
fn assign_bootserials(deployments: &[BootDeployment]) -> Vec<BootDeployment> {
    let mut seen: HashMap<(String, String), u32> = HashMap::new();
    deployments
        .iter()
        .map(|d| {
            let key = (
                d.deployment.stateroot.clone(),
                d.deployment.bootcsum.clone(),
            );
            let n = seen.entry(key).or_insert(0);
            let mut d = d.clone();
            d.deployment.bootserial = *n;
            *n += 1;
            d
        })
        .collect()
}

fn boot_files_dir(sysroot: &Sysroot, d: &Deployment) -> PathBuf {
    sysroot
        .boot()
        .join("ostree")
        .join(format!("{}-{}", d.stateroot, d.bootcsum))
}

fn install_boot_files(sysroot: &Sysroot, d: &Deployment) -> Result<()> {
    let dest = boot_files_dir(sysroot, d);
    let vmlinuz = format!("vmlinuz-{}", d.kver);
    let initramfs = format!("initramfs-{}.img", d.kver);
    if dest.join(&vmlinuz).is_file() && dest.join(&initramfs).is_file() {
        return Ok(());
    }
    let src = sysroot
        .path
        .join(d.relpath())
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

fn write_bootlinks(sysroot: &Sysroot, bv: u8, deployments: &[BootDeployment]) -> Result<()> {
    let ostree_dir = sysroot.path.join("ostree");
    let link = ostree_dir.join(format!("boot.{bv}"));
    let sub = match fs::read_link(&link) {
        Ok(t) if t.to_str() == Some(&format!("boot.{bv}.0")) => 1,
        _ => 0,
    };
    let dir = ostree_dir.join(format!("boot.{bv}.{sub}"));
    fsutil::remove_any(&dir)?;
    for d in deployments {
        let dep = &d.deployment;
        let parent = dir.join(&dep.stateroot).join(&dep.bootcsum);
        fs::create_dir_all(&parent).with_context(|| format!("creating {}", parent.display()))?;
        let target = format!("../../../deploy/{}/deploy/{}", dep.stateroot, dep.name());
        std::os::unix::fs::symlink(&target, parent.join(dep.bootserial.to_string()))
            .with_context(|| format!("creating bootlink in {}", parent.display()))?;
    }
    fs::create_dir_all(&dir)?;
    // Durable with the generation, by the sync before the swap.
    fsutil::replace_symlink(&format!("boot.{bv}.{sub}"), &link)
}

fn remove_unused_boot_files(sysroot: &Sysroot, deployments: &[BootDeployment]) -> Result<()> {
    let keep: BTreeSet<PathBuf> = deployments
        .iter()
        .map(|d| boot_files_dir(sysroot, &d.deployment))
        .collect();
    let dir = sysroot.boot().join("ostree");
    // `initramfs-etc` overlays are shared by entries and collected on their own.
    crate::initramfs_etc::remove_unused_overlays(
        sysroot,
        deployments.iter().map(|d| &d.deployment),
    )?;
    for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if !keep.contains(&p) && !p.ends_with(crate::initramfs_etc::OVERLAYS_DIR) {
            fsutil::remove_any(&p)?;
        }
    }
    // No sync: garbage that survives a crash is collected by the next writer.
    Ok(())
}

/// Removes `ostree/boot.N.M` directories that no `ostree/boot.N` link points to.
fn remove_unused_bootlinks(sysroot: &Sysroot) -> Result<()> {
    let ostree_dir = sysroot.path.join("ostree");
    let live: BTreeSet<String> = [0, 1]
        .iter()
        .filter_map(|bv| fs::read_link(ostree_dir.join(format!("boot.{bv}"))).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    for e in fs::read_dir(&ostree_dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("boot.") && name.matches('.').count() == 2 && !live.contains(&name) {
            fsutil::remove_any(&e.path())?;
        }
    }
    Ok(())
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
