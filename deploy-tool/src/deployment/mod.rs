//! Making a new deployment: the one pipeline every path uses (`install`, `deploy`, `upgrade`,
//! `rebase`, `initramfs --enable/--disable`, finalize at shutdown).
//!
//! ```text
//! layered packages (a layered commit on the base) -> checkout -> kernel-argument defaults
//!   (kargs.d) -> /etc merge -> initramfs -> overlays -> stage (record for shutdown) or
//!   write the boot set
//! ```
//!
//! Until the new deployment is in a boot set (or staged), nothing refers to it: one guard
//! removes it on any error on the way, so no half-made deployment is left behind. A crash
//! (no unwinding) leaves it to the next garbage collection instead.

pub mod automatic;
pub mod changes;
pub mod checkout;
pub mod etcmerge;
pub mod finalize;
pub mod initramfs;
pub mod kargsd;
pub mod overlay;
pub mod update;

use std::path::Path;

use anyhow::{Context, Result};

use crate::counting;
use crate::fsutil;
use crate::state::origin::Origin;
use crate::state::staged::{self, Staged};
use crate::state::State;
use crate::sysroot::{Deployment, Sysroot};

/// A step run on the new deployment's root once its `/etc` is merged.
pub type Customize<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// What a new deployment is made of.
pub struct NewDeployment<'a> {
    pub stateroot: &'a str,
    pub commit: &'a str,
    pub origin: Origin,
    /// Kernel arguments to start from [default: the merge deployment's].
    pub kargs: Option<Vec<String>>,
    /// Stage (written into the boot set at shutdown) instead of writing the boot set now.
    pub stage: bool,
    /// Called on the new deployment's root once its `/etc` is merged (e.g. the installer's
    /// `/etc/fstab` lines).
    pub customize: Option<Customize<'a>>,
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
    /// What package layering did (absent when the origin requests no packages).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packages: Option<crate::layering::Report>,
    #[serde(skip)]
    pub new: Option<Deployment>,
}

/// Removes a deployment that nothing refers to yet, unless disarmed.
struct Unreferenced<'a> {
    sysroot: &'a Sysroot,
    dep: Option<Deployment>,
}

impl Unreferenced<'_> {
    fn disarm(&mut self) {
        self.dep = None;
    }
}

impl Drop for Unreferenced<'_> {
    fn drop(&mut self) {
        if let Some(d) = &self.dep {
            tracing::info!("removing the unfinished deployment {}", d.name());
            let _ = fsutil::remove_tree_force(&self.sysroot.deployment_root(d));
            let _ = std::fs::remove_file(self.sysroot.path.join(d.origin_relpath()));
        }
    }
}

/// Makes a new deployment of `nd.commit` on `st`'s sysroot: inheriting `/etc` and kernel
/// arguments from the stateroot's merge deployment, then staged or written as the new
/// default (the merge deployment becomes the rollback; pinned and booted ones stay).
pub fn deploy(st: &State, nd: NewDeployment) -> Result<DeployOutcome> {
    let sysroot = &st.sysroot;
    let mut origin = nd.origin;
    // A pin belongs to one deployment (`[libostree-transient]`): new ones start unpinned.
    origin.pinned = false;
    let merge = st.merge_deployment(nd.stateroot);
    let repo = crate::repo::open(&sysroot.repo_path())?;
    sysroot.init(nd.stateroot)?;
    // The origin's package requests, replayed on the base image of the commit given (which
    // is itself layered when a deployment is made again, e.g. by `initramfs --enable`).
    let base = crate::repo::base_commit(&repo, nd.commit)?;
    let packages = if origin.packages.is_empty() {
        None
    } else {
        let ctx = crate::layering::Layering {
            sysroot,
            repo: &repo,
            stateroot: nd.stateroot,
            config_root: merge.as_ref().map(|m| sysroot.deployment_root(m)),
        };
        Some(crate::layering::layer(&ctx, &base, &origin.packages)?)
    };
    let commit = packages
        .as_ref()
        .and_then(|p| p.commit.clone())
        .unwrap_or(base);
    let kargs = match nd.kargs {
        Some(k) => k,
        None => merge.as_ref().map(|m| m.kargs.clone()).unwrap_or_default(),
    };
    let mut dep = checkout::create(
        sysroot,
        &repo,
        &checkout::Checkout {
            stateroot: nd.stateroot,
            commit: &commit,
            origin: &origin,
            kargs,
        },
    )?;
    let mut guard = Unreferenced {
        sysroot,
        dep: Some(dep.clone()),
    };
    let root = sysroot.deployment_root(&dep);
    // Kernel argument defaults the image added or dropped since the merge deployment's.
    dep.kargs = kargsd::inherit(
        &dep.kargs,
        merge
            .as_ref()
            .map(|m| sysroot.deployment_root(m))
            .as_deref(),
        &root,
    )?;
    let diff = match &merge {
        Some(m) => {
            let mm = sysroot.deployment_root(m);
            etcmerge::merge(&mm.join("usr/etc"), &mm.join("etc"), &root.join("etc"))
                .with_context(|| format!("merging /etc from deployment {}", m.name()))?
        }
        None => etcmerge::EtcDiff::default(),
    };
    if let Some(f) = nd.customize {
        f(&root)?;
    }
    crate::failpoint("deploy::after-etc-merge")?;
    // The initramfs the origin asks for (changes the bootcsum), then the /etc overlay; a
    // staged deployment gets its overlay at finalize, from the /etc it has then.
    let mut settings = initramfs::settings_of(sysroot, &dep)?;
    if let Some(p) = packages.as_ref().filter(|p| !p.initramfs_inputs.is_empty()) {
        if !settings.regenerate {
            eprintln!(
                "Regenerating the initramfs: layered {} bring kernel modules or firmware",
                p.initramfs_inputs.join(", ")
            );
            settings.regenerate = true;
        }
    }
    if settings.regenerate {
        initramfs::regenerate(sysroot, &mut dep, &settings)?;
    }
    if !nd.stage {
        overlay::attach(sysroot, &mut dep)?;
    }
    let outcome = DeployOutcome {
        deployment: dep.relpath().to_string_lossy().into_owned(),
        checksum: dep.checksum.clone(),
        staged: nd.stage,
        etc_modified: diff.modified.len(),
        etc_added: diff.added.len(),
        etc_removed: diff.removed.len(),
        packages,
        new: Some(dep.clone()),
    };
    // Only a complete new deployment replaces the staged one: a failure above keeps it.
    if let Some(old) = &st.staged {
        eprintln!("Replacing the staged deployment {}", old.name());
    }
    if nd.stage {
        staged::write(
            sysroot,
            &Staged {
                stateroot: dep.stateroot.clone(),
                checksum: dep.checksum.clone(),
                serial: dep.serial,
                bootcsum: dep.bootcsum.clone(),
                kver: dep.kver.clone(),
                kargs: dep.kargs.clone(),
                merge: merge.as_ref().map(|m| m.name()),
            },
        )?;
        guard.disarm();
        crate::failpoint("deploy::after-stage")?;
        return Ok(outcome);
    }
    fsutil::set_immutable(&root, true)?;
    if st.staged.is_some() {
        staged::clear(sysroot)?;
    }
    let list = new_boot_order(st, dep, merge.as_ref());
    write_referencing(st, &list, &mut guard)?;
    Ok(outcome)
}

/// Writes `list` as the boot set; once it is swapped in, the new deployment is referenced and
/// the guard stands down (even if a later step, such as garbage collection, fails).
fn write_referencing(st: &State, list: &[Deployment], guard: &mut Unreferenced) -> Result<()> {
    let r = counting::commit::write(st, list);
    if r.is_ok() || st.sysroot.bootversion().ok().flatten() != st.bootversion {
        guard.disarm();
    }
    r.map(|_| ())
}

/// The boot set with `new` as the default: then the merge deployment (the rollback), then
/// the booted and pinned ones; everything else leaves it.
fn new_boot_order(st: &State, new: Deployment, merge: Option<&Deployment>) -> Vec<Deployment> {
    let mut list = vec![new];
    list.extend(merge.cloned());
    for d in &st.deployments {
        if st.booted.as_ref() == Some(d) || st.is_pinned(d) {
            list.push(d.clone());
        }
    }
    dedup(list)
}

fn dedup(list: Vec<Deployment>) -> Vec<Deployment> {
    let mut out: Vec<Deployment> = Vec::new();
    for d in list {
        if !out.iter().any(|o| o.same_dir(&d)) {
            out.push(d);
        }
    }
    out
}
