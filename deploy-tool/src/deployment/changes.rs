//! Changes of the deployment set that make no new deployment: rollback, cleanup, pin. Each
//! computes the new boot order from the [`State`] (pure, tested below) and writes it through
//! [`counting::commit`], like every other boot-set change.

use anyhow::{bail, Context, Result};

use crate::bootset::gc;
use crate::counting;
use crate::fsutil;
use crate::state::{staged, State};
use crate::sysroot::Deployment;

/// The boot order after a rollback: the previous deployment first (or the booted one, when
/// another is pending). Returns the order and the new default.
pub fn rollback_order(st: &State) -> Result<(Vec<Deployment>, Deployment)> {
    if st.deployments.len() < 2 {
        bail!(
            "there is no deployment to roll back to (only {})",
            st.deployments.len()
        );
    }
    let mut list = st.deployments.clone();
    let target_index = match &st.booted {
        Some(b) if &list[0] != b => list.iter().position(|d| d == b).unwrap_or(1),
        _ => 1,
    };
    let target = list.remove(target_index);
    list.insert(0, target.clone());
    Ok((list, target))
}

/// Makes the previous deployment the default. No checkout; only the boot set changes.
pub fn rollback(st: &State) -> Result<Deployment> {
    let (list, target) = rollback_order(st)?;
    if st.staged.is_some() {
        eprintln!("Dropping the staged deployment");
        staged::clear(&st.sysroot)?;
    }
    counting::commit::write(st, &list)?;
    Ok(target)
}

/// The boot order without the pending (not yet booted default) and/or rollback deployments;
/// pinned ones stay. Returns the order and the names removed.
pub fn cleanup_order(st: &State, pending: bool, rollback: bool) -> (Vec<Deployment>, Vec<String>) {
    let booted_idx = st
        .booted
        .as_ref()
        .and_then(|b| st.deployments.iter().position(|d| d == b));
    let mut removed = Vec::new();
    let mut list = Vec::new();
    for (i, d) in st.deployments.iter().enumerate() {
        let is_pending = booted_idx.is_some_and(|b| i < b);
        let is_rollback = match booted_idx {
            Some(b) => i > b,
            None => i > 0,
        };
        if !st.is_pinned(d) && ((pending && is_pending) || (rollback && is_rollback)) {
            removed.push(d.name());
        } else {
            list.push(d.clone());
        }
    }
    (list, removed)
}

/// Removes the pending (not yet booted default, or staged) and/or rollback deployments, then
/// collects garbage. A corrupt staged record is discarded by `pending`.
pub fn cleanup(st: &State, pending: bool, rollback: bool) -> Result<Vec<String>> {
    let (list, mut removed) = cleanup_order(st, pending, rollback);
    if pending {
        if let Some(s) = &st.staged {
            removed.push(s.name());
        }
        if st.staged.is_some() || st.staged_problem.is_some() {
            if let Some(p) = &st.staged_problem {
                eprintln!("Discarding the staged-deployment record: {p}");
            }
            staged::clear(&st.sysroot)?;
        }
    } else {
        st.require_readable_staged()?;
    }
    if list.len() == st.deployments.len() {
        // Nothing leaves the boot set: only collect garbage.
        let Some(bv) = st.bootversion else {
            return Ok(removed);
        };
        let mut also: Vec<Deployment> = st.booted.iter().cloned().collect();
        also.extend(staged::read(&st.sysroot)?.map(|s| s.deployment()));
        gc::collect(&st.sysroot, &gc::Keep { live: &list, also }, bv)?;
        gc::prune(&crate::repo::open(&st.sysroot.repo_path())?)?;
    } else {
        counting::commit::write(st, &list)?;
    }
    drop_unused_packages(st, &list)?;
    Ok(removed)
}

/// Drops package-cache entries that no deployment left (the boot set `list`, the booted and
/// the staged one) was made of, and prunes their objects.
fn drop_unused_packages(st: &State, list: &[Deployment]) -> Result<()> {
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let mut used = std::collections::BTreeSet::new();
    let staged = staged::read(&st.sysroot)
        .ok()
        .flatten()
        .map(|s| s.deployment());
    for d in list.iter().chain(st.booted.iter()).chain(staged.iter()) {
        used.extend(crate::layering::recorded(&repo, &d.checksum)?.cache);
    }
    // Local files stay while an origin requests them: a new base needs them again.
    for d in list.iter().chain(st.booted.iter()) {
        if let Ok(o) = st.origin_of(d) {
            for sha in o
                .packages
                .requested_local
                .keys()
                .chain(o.packages.replace_local.keys())
            {
                if let Some(c) =
                    crate::layering::cache::lookup(&repo, &crate::layering::cache::local_ref(sha))?
                {
                    used.insert(c.commit);
                }
            }
        }
    }
    let dropped = crate::layering::cache::drop_unused(&repo, &used)?;
    if dropped > 0 {
        eprintln!("Dropped {dropped} package(s) no deployment uses from the package cache");
        gc::prune(&repo)?;
    }
    Ok(())
}

/// Pins or unpins the deployment at `index` (status order).
pub fn pin(st: &State, index: usize, pinned: bool) -> Result<Deployment> {
    let d = st
        .deployments
        .get(index)
        .with_context(|| {
            format!(
                "no deployment at index {index}; there are {} (see `stratum status`)",
                st.deployments.len()
            )
        })?
        .clone();
    let mut o = st.origin_of(&d)?;
    o.pinned = pinned;
    fsutil::atomic_write(
        &st.sysroot.path.join(d.origin_relpath()),
        o.to_text().as_bytes(),
        0o644,
    )?;
    Ok(d)
}
