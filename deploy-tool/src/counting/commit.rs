//! Writing a new boot set on a live sysroot: the trial armed for its default, the writer, the
//! garbage collection. Every boot-set change (deploy, finalize, rollback, cleanup, kargs,
//! `initramfs-etc`, a fallback) goes through [`write`].
//!
//! The trial is armed *before* the swap: the grubenv names the deployment on trial, and only a
//! menu whose entry 0 is that deployment counts it, so an old menu never counts a trial meant
//! for the new one. When the write then fails before the swap (no space on `/boot`, an entry
//! refused), the grubenv is put back as it was: no trial stays armed for a default that was
//! never written.

use anyhow::Result;

use super::{grub_counting_script, prepare_for_boot_set};
use crate::bootset::bootloader::Bootloader;
use crate::bootset::{self, gc, grubenv, BootDeployment, WriterOptions};
use crate::config::{Config, MAX_BOOT_TRIES};
use crate::state::{staged, State};
use crate::sysroot::Deployment;

/// Writes `list` (default first) as the new boot set of `st`'s sysroot, then removes what
/// nothing refers to any more. Returns the new bootversion.
pub fn write(st: &State, list: &[Deployment]) -> Result<u8> {
    let sysroot = &st.sysroot;
    let repo = crate::repo::open(&sysroot.repo_path()).ok();
    let boot: Vec<BootDeployment> = list
        .iter()
        .map(|d| BootDeployment::new(sysroot, repo.as_ref(), d))
        .collect();
    let mut undo = None;
    let mut prelude = String::new();
    let mut tries = 0;
    if let Some(new_default) = list.first() {
        let config_root =
            super::config_root(sysroot, st.default_deployment().or(Some(new_default)));
        let config = Config::load(&config_root)?;
        undo = prepare_for_boot_set(
            sysroot,
            new_default,
            st.default_deployment(),
            config.boot_tries,
            list.len() >= 2,
        )?;
        // Entry 1 is where a failed trial falls back to; with one entry there is no trial.
        if list.len() >= 2 {
            prelude = grub_counting_script(&new_default.id(), MAX_BOOT_TRIES);
        }
        if let Some(esp) = Bootloader::of(sysroot)?.esp(sysroot)? {
            tries = super::esp_tries(
                sysroot,
                &esp,
                new_default,
                st.default_deployment(),
                config.boot_tries,
            )?;
        }
    }
    let opts = WriterOptions {
        prelude,
        tries,
        ..WriterOptions::default()
    };
    let bv = match bootset::write_boot_set(sysroot, &boot, &opts) {
        Ok(bv) => bv,
        Err(e) => {
            // Swapped or not? Only an unswapped failure takes the arming back.
            if let (Some(before), Ok(now)) = (undo, sysroot.bootversion()) {
                if now == st.bootversion {
                    let path = super::grubenv_path(sysroot);
                    if let Err(u) = grubenv::store(&path, &before) {
                        tracing::warn!("could not restore {}: {u:#}", path.display());
                    }
                }
            }
            return Err(e);
        }
    };
    for sr in list
        .iter()
        .map(|d| d.stateroot.as_str())
        .collect::<std::collections::BTreeSet<_>>()
    {
        let _ = staged::clear_failure(&sysroot.stateroot_dir(sr));
    }
    crate::failpoint("ops::after-boot-set")?;
    // The staged record is read again: the change may just have dropped it.
    let mut also: Vec<Deployment> = st.booted.iter().cloned().collect();
    also.extend(staged::read(sysroot).ok().flatten().map(|s| s.deployment()));
    gc::collect(sysroot, &gc::Keep { live: list, also }, bv)?;
    Ok(bv)
}
