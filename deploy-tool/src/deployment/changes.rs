//! Changes of the deployment set that make no new deployment: rollback, cleanup, pin. Each
//! computes the new boot order from the [`State`] (pure, tested below) and writes it through
//! [`counting::commit`], like every other boot-set change.
//!
//! Each takes the stateroot named with `--stateroot` (`None`: all of them) and touches only
//! that stateroot's deployments, as `rpm-ostree --os` does; the others keep their place.

use anyhow::{bail, Result};

use crate::bootset::gc;
use crate::counting;
use crate::fsutil;
use crate::state::{staged, State};
use crate::sysroot::Deployment;

/// The deployments of the boot set that belong to `stateroot` (all when `None`), in order.
fn of_stateroot<'a>(st: &'a State, stateroot: Option<&str>) -> Vec<&'a Deployment> {
    st.deployments
        .iter()
        .filter(|d| d.in_stateroot(stateroot))
        .collect()
}

/// The boot order after a rollback of `stateroot` (all when `None`): its previous deployment
/// first (or the booted one, when another is pending). Returns the order and the new default.
pub fn rollback_order(
    st: &State,
    stateroot: Option<&str>,
) -> Result<(Vec<Deployment>, Deployment)> {
    let ours = of_stateroot(st, stateroot);
    if ours.len() < 2 {
        bail!(
            "there is no deployment to roll back to (only {}{})",
            ours.len(),
            stateroot
                .map(|s| format!(" in stateroot {s}"))
                .unwrap_or_default()
        );
    }
    let target_index = match &st.booted {
        Some(b) if ours[0] != b => ours.iter().position(|d| *d == b).unwrap_or(1),
        _ => 1,
    };
    let target = ours[target_index].clone();
    let mut list: Vec<Deployment> = st
        .deployments
        .iter()
        .filter(|d| **d != target)
        .cloned()
        .collect();
    list.insert(0, target.clone());
    Ok((list, target))
}

/// Makes the previous deployment of `stateroot` the default. No checkout; only the boot set
/// changes.
pub fn rollback(st: &State, stateroot: Option<&str>) -> Result<Deployment> {
    let (list, target) = rollback_order(st, stateroot)?;
    if st.staged.is_some() {
        eprintln!("Dropping the staged deployment");
        staged::clear(&st.sysroot)?;
    }
    counting::commit::write(st, &list)?;
    Ok(target)
}

/// The boot order without the pending (not yet booted default) and/or rollback deployments
/// of `stateroot` (all when `None`); pinned ones and other stateroots' stay. Returns the order
/// and the names removed.
pub fn cleanup_order(
    st: &State,
    pending: bool,
    rollback: bool,
    stateroot: Option<&str>,
) -> (Vec<Deployment>, Vec<String>) {
    let ours = of_stateroot(st, stateroot);
    let booted_idx = st
        .booted
        .as_ref()
        .and_then(|b| ours.iter().position(|d| *d == b));
    let mut gone = Vec::new();
    for (i, d) in ours.iter().enumerate() {
        let is_pending = booted_idx.is_some_and(|b| i < b);
        let is_rollback = match booted_idx {
            Some(b) => i > b,
            None => i > 0,
        };
        if !st.is_pinned(d) && ((pending && is_pending) || (rollback && is_rollback)) {
            gone.push(*d);
        }
    }
    let list = st
        .deployments
        .iter()
        .filter(|d| !gone.contains(d))
        .cloned()
        .collect();
    (list, gone.iter().map(|d| d.name()).collect())
}

/// Removes the pending (not yet booted default, or staged) and/or rollback deployments of
/// `stateroot` (all when `None`), then collects garbage. A corrupt staged record is discarded
/// by `pending`, whatever its stateroot (it cannot be read).
pub fn cleanup(
    st: &State,
    pending: bool,
    rollback: bool,
    stateroot: Option<&str>,
) -> Result<Vec<String>> {
    let (list, mut removed) = cleanup_order(st, pending, rollback, stateroot);
    if pending {
        let staged = st
            .staged
            .as_ref()
            .filter(|s| stateroot.is_none_or(|sr| s.stateroot == sr));
        if let Some(s) = staged {
            removed.push(s.name());
        }
        if staged.is_some() || st.staged_problem.is_some() {
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

/// Pins or unpins the deployment at `index` (status order), which must belong to `stateroot`
/// when one is named.
pub fn pin(st: &State, index: usize, pinned: bool, stateroot: Option<&str>) -> Result<Deployment> {
    let d = st.deployment_at(index, stateroot)?.clone();
    let mut o = st.origin_of(&d)?;
    o.pinned = pinned;
    fsutil::atomic_write(
        &st.sysroot.path.join(d.origin_relpath()),
        o.to_text().as_bytes(),
        0o644,
    )?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sysroot::Sysroot;

    fn dep(stateroot: &str, c: char) -> Deployment {
        Deployment {
            stateroot: stateroot.into(),
            checksum: c.to_string().repeat(64),
            serial: 0,
            bootcsum: "b".repeat(64),
            bootserial: 0,
            kver: "6.1.0-9-amd64".into(),
            kargs: Vec::new(),
            overlay_initrds: Vec::new(),
        }
    }

    /// Boot set [a: 1, b: 2, a: 3, b: 4], nothing booted, nothing pinned.
    fn state(dir: &std::path::Path) -> State {
        State {
            sysroot: Sysroot::new(dir),
            bootversion: Some(0),
            deployments: vec![dep("a", '1'), dep("b", '2'), dep("a", '3'), dep("b", '4')],
            booted: None,
            staged: None,
            staged_problem: None,
        }
    }

    fn checksums(list: &[Deployment]) -> String {
        list.iter().map(|d| &d.checksum[..1]).collect()
    }

    #[test]
    fn rollback_stays_in_the_stateroot() {
        let d = tempfile::tempdir().unwrap();
        let st = state(d.path());
        assert_eq!(checksums(&rollback_order(&st, None).unwrap().0), "2134");
        assert_eq!(
            checksums(&rollback_order(&st, Some("a")).unwrap().0),
            "3124"
        );
        assert_eq!(
            checksums(&rollback_order(&st, Some("b")).unwrap().0),
            "4123"
        );
        let e = rollback_order(&st, Some("c")).unwrap_err();
        assert!(e.to_string().contains("in stateroot c"), "{e}");
    }

    #[test]
    fn cleanup_stays_in_the_stateroot() {
        let d = tempfile::tempdir().unwrap();
        let mut st = state(d.path());
        let (list, removed) = cleanup_order(&st, false, true, None);
        assert_eq!((checksums(&list).as_str(), removed.len()), ("1", 3));
        let (list, removed) = cleanup_order(&st, false, true, Some("b"));
        assert_eq!(checksums(&list), "123");
        assert_eq!(removed, vec![dep("b", '4').name()]);
        let (list, removed) = cleanup_order(&st, true, true, Some("c"));
        assert_eq!((checksums(&list).as_str(), removed.len()), ("1234", 0));
        // Booted in another stateroot: the named one's first deployment is its default.
        st.booted = Some(dep("b", '2'));
        let (list, _) = cleanup_order(&st, true, true, Some("a"));
        assert_eq!(checksums(&list), "124");
        let (list, _) = cleanup_order(&st, true, false, Some("b"));
        assert_eq!(checksums(&list), "1234");
    }
}
