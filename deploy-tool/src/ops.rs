//! Changes of the deployment set: deploy (upgrade, rebase), rollback, cleanup, pin and the
//! shutdown-time finalize of a staged deployment.
//!
//! Every operation takes the sysroot lock, makes the sysroot writable (on a booted system
//! `/sysroot` is mounted read-only; it is remounted read-write in a private mount namespace,
//! as OSTree does, so the rest of the system never sees it writable), and changes the boot set
//! only through the bootloader writer. Deployment directories that no boot set and no staged
//! record refers to (left by a crash, or removed from the boot set) are deleted afterwards,
//! then the repository is pruned.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::bootloader::{self, BootDeployment, WriterOptions};
use crate::deploy::{self, NewDeployment};
use crate::lock::{self, SysrootLock};
use crate::origin::Origin;
use crate::staged::{self, Staged};
use crate::sysroot::{Deployment, Sysroot};
use crate::{etcmerge, fsutil};

/// Where and how to operate.
#[derive(Debug, Clone)]
pub struct Ops {
    pub sysroot: Sysroot,
    /// The stateroot named on the command line, if any.
    pub stateroot: Option<String>,
    /// Fail instead of waiting for the sysroot lock.
    pub no_wait: bool,
}

/// The deployment set as it is now.
#[derive(Debug, Clone)]
pub struct State {
    pub deployments: Vec<Deployment>,
    pub booted: Option<Deployment>,
    pub staged: Option<Staged>,
}

/// What a deploy did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeployOutcome {
    pub deployment: String,
    pub checksum: String,
    pub staged: bool,
    #[serde(rename = "etc-modified")]
    pub etc_modified: usize,
    #[serde(rename = "etc-added")]
    pub etc_added: usize,
    #[serde(rename = "etc-removed")]
    pub etc_removed: usize,
}

impl Ops {
    /// Reads the current state.
    pub fn state(&self) -> Result<State> {
        let deployments = self.sysroot.deployments()?;
        let booted = self.sysroot.booted(&deployments)?;
        let staged = staged::read()?.filter(|s| {
            self.sysroot
                .stateroot_dir(&s.stateroot)
                .join("deploy")
                .join(s.name())
                .is_dir()
        });
        Ok(State {
            deployments,
            booted,
            staged,
        })
    }

    /// The stateroot to act on: the named one, else the booted one, else the default
    /// deployment's, else "default".
    pub fn stateroot(&self, st: &State) -> String {
        self.stateroot
            .clone()
            .or_else(|| st.booted.as_ref().map(|d| d.stateroot.clone()))
            .or_else(|| st.deployments.first().map(|d| d.stateroot.clone()))
            .unwrap_or_else(|| "default".to_string())
    }

    /// The deployment whose `/etc` and kernel arguments a new deployment inherits: the booted
    /// one when it belongs to the stateroot, else the stateroot's default.
    pub fn merge_deployment(&self, st: &State, stateroot: &str) -> Option<Deployment> {
        st.booted
            .clone()
            .filter(|d| d.stateroot == stateroot)
            .or_else(|| {
                st.deployments
                    .iter()
                    .find(|d| d.stateroot == stateroot)
                    .cloned()
            })
    }

    /// The deployment the next change builds on (its commit and origin): the staged one, else
    /// the stateroot's default. Changes stack: `initramfs --enable` after a staged upgrade
    /// keeps the upgrade, and an upgrade after `initramfs --enable` keeps the regeneration.
    pub fn pending_deployment(&self, st: &State, stateroot: &str) -> Option<Deployment> {
        st.staged
            .as_ref()
            .filter(|s| s.stateroot == stateroot)
            .map(Staged::deployment)
            .or_else(|| {
                st.deployments
                    .iter()
                    .find(|d| d.stateroot == stateroot)
                    .cloned()
            })
    }

    /// Locks and makes the sysroot writable for a mutation.
    pub fn begin(&self) -> Result<SysrootLock> {
        make_writable(&self.sysroot)?;
        if !self.sysroot.path.join("ostree/deploy").is_dir() {
            bail!(
                "{} is not a sysroot (no ostree/deploy); use --sysroot",
                self.sysroot.path.display()
            );
        }
        if self.sysroot.bootversion()?.is_none() && self.sysroot.path == Path::new("/") {
            bail!("/boot/loader is missing: is the boot partition mounted at /boot?");
        }
        lock::lock(&self.sysroot, self.no_wait)
    }

    pub fn origin_of(&self, d: &Deployment) -> Result<Origin> {
        let p = self.sysroot.path.join(d.origin_relpath());
        let text =
            fs::read_to_string(&p).with_context(|| format!("reading origin {}", p.display()))?;
        Origin::parse(&text).with_context(|| format!("origin file {}", p.display()))
    }

    fn repo(&self) -> Result<ostree::Repo> {
        crate::repo::open(&self.sysroot.repo_path())
    }

    /// Deploys `commit` with `origin`: a new deployment inheriting `/etc` and kernel
    /// arguments from the merge deployment. With `stage`, it is only written into the boot
    /// set at shutdown; otherwise at once.
    pub fn deploy(&self, commit: &str, mut origin: Origin, stage: bool) -> Result<DeployOutcome> {
        // A pin belongs to one deployment (`[libostree-transient]`): new ones start unpinned.
        origin.pinned = false;
        let st = self.state()?;
        let stateroot = self.stateroot(&st);
        let merge = self.merge_deployment(&st, &stateroot);
        let repo = self.repo()?;
        self.sysroot.init(&stateroot)?;
        let kargs = merge.as_ref().map(|m| m.kargs.clone()).unwrap_or_default();
        let mut dep = deploy::create(
            &self.sysroot,
            &repo,
            &NewDeployment {
                stateroot: &stateroot,
                commit,
                origin,
                kargs,
            },
        )?;
        let dep_root = self.sysroot.path.join(dep.relpath());
        // Kernel argument defaults the image added or dropped since the merge deployment's.
        crate::kargsd::apply_to_new(&self.sysroot, merge.as_ref(), &mut dep)?;
        let diff = match &merge {
            Some(m) => self.merge_etc(m, &dep_root).inspect_err(|_| {
                // Nothing refers to the new deployment yet: remove it so no half-merged /etc stays.
                let _ = fsutil::remove_tree_force(&dep_root);
                let _ = fs::remove_file(self.sysroot.path.join(dep.origin_relpath()));
            })?,
            None => etcmerge::EtcDiff::default(),
        };
        crate::failpoint("deploy::after-etc-merge")?;
        // Regenerated initramfs and /etc overlay, as the origin asks (changes the bootcsum).
        crate::initramfs::prepare_new_deployment(&self.sysroot, &mut dep, stage)?;
        let outcome = DeployOutcome {
            deployment: dep.relpath().to_string_lossy().into_owned(),
            checksum: dep.checksum.clone(),
            staged: stage,
            etc_modified: diff.modified.len(),
            etc_added: diff.added.len(),
            etc_removed: diff.removed.len(),
        };
        // Only a complete new deployment replaces the staged one: a failure above keeps it.
        if let Some(old) = &st.staged {
            eprintln!("Replacing the staged deployment {}", old.name());
        }
        if stage {
            staged::write(&Staged {
                stateroot: dep.stateroot.clone(),
                checksum: dep.checksum.clone(),
                serial: dep.serial,
                bootcsum: dep.bootcsum.clone(),
                kver: dep.kver.clone(),
                kargs: dep.kargs.clone(),
                merge: merge.as_ref().map(|m| m.name()),
            })?;
            crate::failpoint("deploy::after-stage")?;
            return Ok(outcome);
        }
        fsutil::set_immutable(&dep_root, true)?;
        if st.staged.is_some() {
            staged::clear()?;
        }
        let mut list = vec![dep];
        list.extend(merge.clone());
        list.extend(self.kept_deployments(&st, merge.as_ref())?);
        self.commit_boot_set(&st, dedup(list))?;
        Ok(outcome)
    }

    /// Replays the admin's `/etc` changes of `merge` onto the new deployment at `new_root`.
    fn merge_etc(&self, merge: &Deployment, new_root: &Path) -> Result<etcmerge::EtcDiff> {
        let m = self.sysroot.path.join(merge.relpath());
        etcmerge::merge(&m.join("usr/etc"), &m.join("etc"), &new_root.join("etc"))
            .with_context(|| format!("merging /etc from deployment {}", merge.name()))
    }

    /// Pinned deployments (and the booted one) are kept when the boot set changes.
    fn kept_deployments(&self, st: &State, merge: Option<&Deployment>) -> Result<Vec<Deployment>> {
        let mut keep = Vec::new();
        for d in &st.deployments {
            if Some(d) == merge {
                continue;
            }
            if st.booted.as_ref() == Some(d) || self.origin_of(d).map(|o| o.pinned).unwrap_or(false)
            {
                keep.push(d.clone());
            }
        }
        Ok(keep)
    }

    /// Writes `list` as the boot set, then removes what nothing refers to and prunes.
    pub fn commit_boot_set(&self, st: &State, list: Vec<Deployment>) -> Result<()> {
        let repo = self.repo()?;
        let boot: Vec<BootDeployment> = list
            .iter()
            .map(|d| {
                let root = self.sysroot.path.join(d.relpath());
                let version = crate::repo::commit_info(&repo, &d.checksum)
                    .ok()
                    .and_then(|i| i.version);
                let title = bootloader::os_pretty_name(&root)
                    + &version.map(|v| format!(" {v}")).unwrap_or_default();
                BootDeployment {
                    deployment: d.clone(),
                    title,
                }
            })
            .collect();
        // Arm (or end) the boot-counting trial before the swap: the grubenv names the
        // deployment on trial, and only a menu whose entry 0 is that deployment counts it.
        if let Some(new_default) = list.first() {
            let config_root = crate::bootstate::config_root(
                &self.sysroot,
                st.deployments.first().or(Some(new_default)),
            );
            let config = crate::config::Config::load(&config_root)?;
            crate::bootstate::prepare_for_boot_set(
                &self.sysroot,
                new_default,
                st.deployments.first(),
                config.boot_tries,
                list.len() >= 2,
            )?;
        }
        let bv = bootloader::write_boot_set(&self.sysroot, &boot, &WriterOptions::default())?;
        for sr in list
            .iter()
            .map(|d| d.stateroot.as_str())
            .collect::<std::collections::BTreeSet<_>>()
        {
            let _ = staged::clear_failure(&self.sysroot.stateroot_dir(sr));
        }
        crate::failpoint("ops::after-boot-set")?;
        self.garbage_collect(st, &list, bv)
    }

    /// Deletes deployment directories outside the boot set (except the booted and the staged
    /// one), updates the repository refs that protect deployed commits, and prunes.
    pub fn garbage_collect(&self, st: &State, live: &[Deployment], bootversion: u8) -> Result<()> {
        let deploy_root = self.sysroot.path.join("ostree/deploy");
        let mut keep: Vec<String> = live
            .iter()
            .map(|d| format!("{}/{}", d.stateroot, d.name()))
            .collect();
        keep.extend(
            st.booted
                .iter()
                .map(|d| format!("{}/{}", d.stateroot, d.name())),
        );
        let staged = staged::read()?;
        keep.extend(
            staged
                .iter()
                .map(|s| format!("{}/{}", s.stateroot, s.name())),
        );
        let mut removed_any = false;
        for sr in fs::read_dir(&deploy_root)
            .with_context(|| format!("reading {}", deploy_root.display()))?
        {
            let sr = sr?;
            let dir = sr.path().join("deploy");
            let Ok(rd) = fs::read_dir(&dir) else { continue };
            for e in rd {
                let e = e?;
                let name = e.file_name().to_string_lossy().into_owned();
                let base = name.trim_end_matches(".origin");
                let id = format!(
                    "{}/{}",
                    sr.file_name().to_string_lossy(),
                    base.trim_start_matches('.').trim_end_matches(".partial")
                );
                if keep.contains(&id) && !name.ends_with(".partial") {
                    continue;
                }
                tracing::info!("removing {name}");
                fsutil::remove_tree_force(&e.path())?;
                removed_any = true;
            }
            // No sync: a removal a crash undoes is garbage the next collection finds again.
        }
        crate::failpoint("ops::after-gc")?;
        let repo = self.repo()?;
        let mut protect: Vec<String> = live.iter().map(|d| d.checksum.clone()).collect();
        protect.extend(staged.iter().map(|s| s.checksum.clone()));
        let released = crate::repo::set_deployment_refs(&repo, bootversion, &protect)?;
        // Pruning walks every reachable object; skip it when no commit lost its protection
        // and nothing was removed (rollback, kernel arguments), as nothing can be freed.
        if !released && !removed_any {
            return Ok(());
        }
        self.prune(&repo)
    }

    /// Prunes the repository, saying what it freed.
    pub fn prune(&self, repo: &ostree::Repo) -> Result<()> {
        let (total, pruned, freed) = crate::repo::prune(repo)?;
        if pruned > 0 {
            eprintln!(
                "Pruned {pruned} of {total} objects, freed {} KiB",
                freed / 1024
            );
        }
        Ok(())
    }

    /// Makes the previous deployment the default (or the booted one, when another is
    /// pending). No checkout; only the boot set changes.
    pub fn rollback(&self) -> Result<Deployment> {
        let st = self.state()?;
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
        if st.staged.is_some() {
            eprintln!("Dropping the staged deployment");
            staged::clear()?;
        }
        self.commit_boot_set(&st, list)?;
        Ok(target)
    }

    /// Removes the pending (not yet booted default, or staged) and/or rollback deployments.
    pub fn cleanup(&self, pending: bool, rollback: bool) -> Result<Vec<String>> {
        let st = self.state()?;
        let booted_idx = st
            .booted
            .as_ref()
            .and_then(|b| st.deployments.iter().position(|d| d == b));
        let mut removed = Vec::new();
        let mut list = Vec::new();
        for (i, d) in st.deployments.iter().enumerate() {
            let pinned = self.origin_of(d).map(|o| o.pinned).unwrap_or(false);
            let is_pending = match booted_idx {
                Some(b) => i < b,
                None => false,
            };
            let is_rollback = match booted_idx {
                Some(b) => i > b,
                None => i > 0,
            };
            if !pinned && ((pending && is_pending) || (rollback && is_rollback)) {
                removed.push(d.name());
            } else {
                list.push(d.clone());
            }
        }
        if pending {
            if let Some(s) = &st.staged {
                removed.push(s.name());
                staged::clear()?;
            }
        }
        if list.len() == st.deployments.len() {
            // Nothing leaves the boot set: only collect garbage.
            let bv = self.sysroot.bootversion()?.unwrap_or(0);
            self.garbage_collect(&st, &list, bv)?;
            self.prune(&self.repo()?)?;
        } else {
            self.commit_boot_set(&st, list)?;
        }
        Ok(removed)
    }

    /// Pins or unpins the deployment at `index` (status order).
    pub fn pin(&self, index: usize, pinned: bool) -> Result<Deployment> {
        let st = self.state()?;
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
        let mut o = self.origin_of(&d)?;
        o.pinned = pinned;
        fsutil::atomic_write(
            &self.sysroot.path.join(d.origin_relpath()),
            o.to_text().as_bytes(),
            0o644,
        )?;
        Ok(d)
    }

    /// Writes the staged deployment into the boot set, merging `/etc` again so edits made
    /// since staging are kept. Run at shutdown.
    pub fn finalize_staged(&self) -> Result<Option<String>> {
        let st = self.state()?;
        let Some(s) = st.staged.clone() else {
            return Ok(None);
        };
        let srdir = self.sysroot.stateroot_dir(&s.stateroot);
        let r = self.finalize_inner(&st, &s);
        if let Err(e) = &r {
            let _ = staged::record_failure(
                &srdir,
                &staged::FinalizeFailure {
                    deployment: s.name(),
                    error: format!("{e:#}"),
                },
            );
        }
        r.map(Some)
    }

    fn finalize_inner(&self, st: &State, s: &Staged) -> Result<String> {
        let mut dep = s.deployment();
        let root = self.sysroot.path.join(dep.relpath());
        let merge = s.merge.as_ref().and_then(|name| {
            st.deployments
                .iter()
                .find(|d| &d.name() == name && d.stateroot == s.stateroot)
                .cloned()
        });
        if let Some(m) = &merge {
            // Start again from the image's defaults, then replay the admin's current changes.
            let etc = root.join("etc");
            let fresh = root.join("etc.stratum-new");
            fsutil::remove_any(&fresh)?;
            fsutil::copy_tree(&root.join("usr/etc"), &fresh)?;
            let mm = self.sysroot.path.join(m.relpath());
            let diff = etcmerge::diff(&mm.join("usr/etc"), &mm.join("etc"))?;
            etcmerge::apply(&diff, &mm.join("etc"), &fresh)?;
            fsutil::remove_any(&etc)?;
            fs::rename(&fresh, &etc).context("putting the merged /etc in place")?;
        }
        crate::failpoint("finalize::after-etc-merge")?;
        // The /etc overlay is built from the /etc just merged.
        crate::initramfs_etc::attach(&self.sysroot, &mut dep)?;
        fsutil::set_immutable(&root, true)?;
        let mut list = vec![dep];
        list.extend(merge.clone());
        list.extend(self.kept_deployments(st, merge.as_ref())?);
        staged::clear()?;
        self.commit_boot_set(st, dedup(list))?;
        Ok(s.name())
    }
}

fn dedup(list: Vec<Deployment>) -> Vec<Deployment> {
    let mut out: Vec<Deployment> = Vec::new();
    for d in list {
        if !out
            .iter()
            .any(|o| o.stateroot == d.stateroot && o.name() == d.name())
        {
            out.push(d);
        }
    }
    out
}

/// On a booted system `/sysroot` is mounted read-only. Remount it read-write in a private
/// mount namespace of this process, so the change is invisible to the rest of the system and
/// ends with the process.
fn make_writable(sysroot: &Sysroot) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    if sysroot.path != Path::new("/") {
        return Ok(());
    }
    let probe = Path::new("/sysroot");
    if !probe.is_dir() || nix::unistd::access(probe, nix::unistd::AccessFlags::W_OK).is_ok() {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making mounts private")?;
    mount(
        Some(probe),
        probe,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("remounting /sysroot read-write")?;
    Ok(())
}
