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

use anyhow::{Context, Result};

use super::bootloader::Bootloader;
use super::{bls, durability, entry, esp, files, grubcfg, BootDeployment};
use crate::fsutil;
use crate::sysroot::Sysroot;

/// Options that are not per-deployment.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub grub_timeout_secs: u32,
    /// GRUB script run before the menu: the boot-counting prelude of the deployment on trial
    /// (made by the boot-counting module), empty for none.
    pub prelude: String,
    /// systemd-boot: the tries the new default's entry carries (`+N`), 0 for none.
    pub tries: u32,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            grub_timeout_secs: 1,
            prelude: String::new(),
            tries: 0,
        }
    }
}

/// Writes `deployments` (default first) as the new boot set of `sysroot`. `bootserial` of
/// each deployment is assigned here. Every entry is built and checked before anything is
/// written, so a refused deployment (a hostile kernel version, a command line GRUB would cut)
/// leaves the sysroot untouched. Returns the new bootversion.
///
/// With systemd-boot the generation holds no `grub.cfg`: the ESP gets the entries and boot
/// files ([`esp`]), its new default written after step 4 and before the switch, so the
/// switch only confirms what the firmware already boots; the ESP's old entries go after it.
/// The generation records which ESP generation it made (`esp-generation`).
pub fn write_boot_set(
    sysroot: &Sysroot,
    deployments: &[BootDeployment],
    opts: &WriterOptions,
) -> Result<u8> {
    let boot = sysroot.boot();
    let esp_dir = Bootloader::of(sysroot)?.esp(sysroot)?;
    let new_bv = match sysroot.bootversion()? {
        Some(b) => 1 - b,
        None => 0,
    };
    let deployments = assign_bootserials(deployments);
    let n = deployments.len();
    let mut entries = Vec::new();
    let mut menu = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let dep = &d.deployment;
        let title = format!("{} (ostree:{i})", d.title);
        let e = entry::to_entry(dep, new_bv, &title, n - i)
            .with_context(|| format!("boot entry for {}", dep.id()))?;
        menu.push(grubcfg::MenuEntry {
            title,
            id: format!("stratum-{}", dep.id()),
            linux: entry::linux_path(dep),
            initrds: entry::initrd_paths(dep),
            kargs: entry::command_line(new_bv, dep)?,
        });
        entries.push((super::bls::entry_file_name(n - i, &dep.stateroot), e));
    }
    let esp_set = match &esp_dir {
        Some(esp) => {
            let gen = esp::next_generation(esp)?;
            Some((
                gen,
                esp_boot_set(sysroot, &deployments, &entries, gen, opts.tries)?,
            ))
        }
        None => None,
    };

    // 1. Boot files.
    for d in &deployments {
        files::install(sysroot, &d.deployment)?;
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
    for (name, e) in &entries {
        let path = entries_dir.join(name);
        fs::write(&path, e.to_string()).with_context(|| format!("writing {}", path.display()))?;
    }
    match &esp_set {
        None => {
            let cfg = grubcfg::render(
                &menu,
                &grubcfg::MenuOptions {
                    timeout_secs: opts.grub_timeout_secs,
                    prelude: opts.prelude.clone(),
                },
            )?;
            fs::write(gen.join("grub.cfg"), cfg).context("writing grub.cfg")?;
        }
        Some((esp_gen, _)) => fs::write(gen.join(esp::GENERATION_FILE), format!("{esp_gen}\n"))
            .context("writing the ESP generation")?,
    }
    crate::failpoint("bootloader::after-generation")?;

    // 4. Make the bootlinks and the generation durable (one syncfs per filesystem instead of
    // an fsync per file), and /boot readable by GRUB, which does not replay the journal.
    durability::sync_sysroot_and_boot(&sysroot.path, &boot)?;
    crate::failpoint("bootloader::before-swap")?;

    // 4b. systemd-boot: the new boot files and entries on the ESP; the new default boots from
    // the moment its entry appears.
    let esp_removals = match (&esp_dir, &esp_set) {
        (Some(esp), Some((_, set))) => {
            let steps = esp::plan(esp, set)?;
            let (add, remove) = esp::split_additions(steps);
            esp::apply(esp, &add)?;
            remove
        }
        _ => Vec::new(),
    };

    // 5. The switch, made durable before anyone is told it happened.
    fsutil::replace_symlink(&format!("loader.{new_bv}"), &boot.join("loader"))?;
    durability::sync_and_freeze(&boot)?;
    crate::failpoint("bootloader::after-swap")?;

    // 6. Garbage: the ESP's old entries first (the record no longer names them), then
    // the rest.
    if let Some(esp) = &esp_dir {
        esp::apply(esp, &esp_removals)?;
    }
    fsutil::remove_any(&boot.join(format!("loader.{}", 1 - new_bv)))?;
    let live: Vec<_> = deployments.iter().map(|d| d.deployment.clone()).collect();
    files::remove_unused(sysroot, &live)?;
    remove_unused_bootlinks(sysroot)?;
    Ok(new_bv)
}

/// Finishes a systemd-boot boot-set write that a crash cut short (nothing to do with GRUB):
/// - the new default was on the ESP but the record not switched yet: the firmware boots the
///   new boot set, so the record is switched to its generation (complete on `/boot` before
///   the ESP was touched);
/// - the record was switched but the ESP's old entries and boot files are still there: they
///   are removed.
///
/// Run before every change of the sysroot, under its lock.
pub fn reconcile_esp(sysroot: &Sysroot) -> Result<()> {
    let Some(esp_dir) = Bootloader::of(sysroot)?.esp(sysroot)? else {
        return Ok(());
    };
    let Some(bv) = sysroot.bootversion()? else {
        return Ok(());
    };
    let boot = sysroot.boot();
    let generation_of = |bv: u8| -> Option<u64> {
        fs::read_to_string(boot.join(format!("loader.{bv}")).join(esp::GENERATION_FILE))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let mut record = generation_of(bv);
    let on_esp = esp::default_entry(&esp_dir)?
        .as_ref()
        .and_then(esp::generation_of);
    if on_esp.is_some() && on_esp != record && generation_of(1 - bv) == on_esp {
        tracing::info!(
            "completing the boot-set write a crash cut short (generation {bv} to {})",
            1 - bv
        );
        fsutil::replace_symlink(&format!("loader.{}", 1 - bv), &boot.join("loader"))?;
        durability::sync_and_freeze(&boot)?;
        record = on_esp;
    }
    match record {
        Some(gen) => esp::apply(&esp_dir, &esp::leftovers(&esp_dir, gen)?),
        None => Ok(()),
    }
}

/// The ESP's copy of a boot set: `entries` (the generation's, default first) with their
/// boot files under [`esp::FILES`], named for ESP generation `gen`; the default carries
/// `tries`.
fn esp_boot_set(
    sysroot: &Sysroot,
    deployments: &[BootDeployment],
    entries: &[(String, bls::Entry)],
    gen: u64,
    tries: u32,
) -> Result<esp::BootSet> {
    let n = deployments.len();
    let mut set = esp::BootSet::default();
    let mut seen = BTreeSet::new();
    for (i, (d, (_, e))) in deployments.iter().zip(entries).enumerate() {
        let dep = &d.deployment;
        let mut on_esp = |boot_path: &str| -> Result<String> {
            let path = esp::file_path(boot_path)?;
            if seen.insert(path.clone()) {
                set.files.push(esp::BootFile {
                    path: path.clone(),
                    source: sysroot.boot().join(boot_path.trim_start_matches('/')),
                });
            }
            Ok(format!("/{path}"))
        };
        let mut text = bls::Entry::default();
        text.set("title", e.get("title").unwrap_or_default());
        text.set("version", esp::entry_version(gen, i, n));
        text.set("sort-key", esp::SORT_KEY);
        text.set("options", e.get("options").unwrap_or_default());
        text.set("linux", on_esp(&entry::linux_path(dep))?);
        for initrd in entry::initrd_paths(dep) {
            text.push("initrd", on_esp(&initrd)?);
        }
        set.entries.push(esp::Entry {
            name: esp::entry_name(gen, i, if i == 0 { tries } else { 0 }),
            text: text.to_string(),
        });
    }
    Ok(set)
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
        let target = entry::bootlink_target(dep);
        std::os::unix::fs::symlink(&target, parent.join(dep.bootserial.to_string()))
            .with_context(|| format!("creating bootlink in {}", parent.display()))?;
    }
    fs::create_dir_all(&dir)?;
    // Durable with the generation, by the sync before the swap.
    fsutil::replace_symlink(&format!("boot.{bv}.{sub}"), &link)
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
