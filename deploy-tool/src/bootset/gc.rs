//! Garbage after a boot-set change: deployment directories nothing refers to, and repository
//! objects no deployment needs.
//!
//! Only directories outside the boot set, the booted deployment and the staged one are
//! removed: those a crash left behind (an interrupted checkout, a deployment made but never
//! written into a boot set) and those the new boot set dropped. The caller has checked that
//! the boot set it read matches the deployments on disk (the state reader), so a
//! mismatch is never a reason to delete here. Only a real directory is removed as a
//! deployment ([`fsutil::remove_tree_force`]): a symlink in a deployment's place is garbage
//! removed as a link, and what it points to is neither unlocked nor removed.

use std::fs;

use anyhow::{Context, Result};

use crate::fsutil;
use crate::sysroot::{Deployment, Sysroot};

/// What survives a collection.
#[derive(Debug, Clone, Default)]
pub struct Keep<'a> {
    /// The boot set just written (its commits are protected by refs).
    pub live: &'a [Deployment],
    /// Deployments outside the boot set that must stay: the booted one, the staged one.
    pub also: Vec<Deployment>,
}

/// Deletes deployment directories outside `keep`, updates the repository refs that protect
/// deployed commits, and prunes the repository when something may be freed.
pub fn collect(sysroot: &Sysroot, keep: &Keep, bootversion: u8) -> Result<()> {
    let kept: Vec<String> = keep
        .live
        .iter()
        .chain(keep.also.iter())
        .map(|d| format!("{}/{}", d.stateroot, d.name()))
        .collect();
    let deploy_root = sysroot.path.join("ostree/deploy");
    let mut removed_any = false;
    for sr in
        fs::read_dir(&deploy_root).with_context(|| format!("reading {}", deploy_root.display()))?
    {
        let sr = sr.with_context(|| format!("reading {}", deploy_root.display()))?;
        let dir = sr.path().join("deploy");
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e.file_name().to_string_lossy().into_owned();
            let base = name.trim_end_matches(".origin");
            let id = format!(
                "{}/{}",
                sr.file_name().to_string_lossy(),
                base.trim_start_matches('.').trim_end_matches(".partial")
            );
            if kept.contains(&id) && !name.ends_with(".partial") {
                continue;
            }
            tracing::info!("removing {name}");
            fsutil::remove_tree_force(&e.path())?;
            removed_any = true;
        }
        // No sync: a removal a crash undoes is garbage the next collection finds again.
    }
    crate::failpoint("ops::after-gc")?;
    let repo = crate::repo::open(&sysroot.repo_path())?;
    let mut protect: Vec<String> = keep.live.iter().map(|d| d.checksum.clone()).collect();
    protect.extend(keep.also.iter().map(|d| d.checksum.clone()));
    // A layered deployment is made again from its base (a new base keeps requests, but
    // `initramfs --enable` or a changed request rebuilds on the same one): keep the bases.
    let bases: Vec<String> = protect
        .iter()
        .filter_map(|c| crate::repo::base_commit(&repo, c).ok())
        .filter(|b| !protect.contains(b))
        .collect();
    protect.extend(bases);
    protect.dedup();
    let released = crate::repo::set_deployment_refs(&repo, bootversion, &protect)?;
    // Pruning walks every reachable object; skip it when no commit lost its protection
    // and nothing was removed (rollback, kernel arguments), as nothing can be freed.
    if !released && !removed_any {
        return Ok(());
    }
    prune(&repo)
}

/// Prunes the repository, saying what it freed.
pub fn prune(repo: &ostree::Repo) -> Result<()> {
    let (total, pruned, freed) = crate::repo::prune(repo)?;
    if pruned > 0 {
        eprintln!(
            "Pruned {pruned} of {total} objects, freed {} KiB",
            freed / 1024
        );
    }
    Ok(())
}
