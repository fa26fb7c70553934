//! The one reader of a sysroot's state: the boot set and its deployments, the booted
//! deployment, the staged record, origins. `status` and every mutation read it here.
//!
//! The boot entries of the current generation (`/boot/loader/entries`) are the source of
//! truth for which deployments exist and in which order, as in OSTree. Because everything
//! not in the boot set is garbage to the collector, a boot set that does not match the disk
//! is an error here, never a reason to delete:
//! - deployments on disk but no boot set (`/boot/loader` missing: typically the boot
//!   partition is not mounted where the sysroot expects it);
//! - an entry whose bootlink names a deployment that does not exist;
//! - an entry whose deployment is not a real directory (a symlink in its place would let
//!   one deployment stand for another, see [`DeploymentDir`]);
//! - two entries that boot the same deployment (a bootlink was pointed at another
//!   deployment: the one it named would look unused and be collected);
//! - a bootlink of the current generation that no entry uses (an entry was deleted).
//!
//! A corrupt staged record does not block reading: it is reported, mutations refuse to run
//! past it, and `cleanup -p` discards it.

pub mod origin;
pub mod staged;

use std::collections::BTreeSet;
use std::fs;

use anyhow::{bail, Context, Result};

use crate::bootset::{bls, entry};
use crate::lock::{self, SysrootLock};
use crate::sysroot::{Deployment, DeploymentDir, Sysroot};
use origin::Origin;
use staged::Staged;

/// The deployment set as it is now.
#[derive(Debug, Clone)]
pub struct State {
    pub sysroot: Sysroot,
    /// The current boot generation, `None` before the first deployment.
    pub bootversion: Option<u8>,
    /// The boot set, default first.
    pub deployments: Vec<Deployment>,
    pub booted: Option<Deployment>,
    /// The staged deployment, when its record is valid and its directory exists.
    pub staged: Option<Staged>,
    /// Why the staged record could not be read, when it is corrupt.
    pub staged_problem: Option<String>,
}

impl State {
    /// Reads the state of `sysroot`, checking that the boot set matches the disk.
    pub fn read(sysroot: &Sysroot) -> Result<State> {
        sysroot.ensure_is_sysroot()?;
        let bootversion = sysroot.bootversion()?;
        let deployments = match bootversion {
            Some(bv) => read_boot_set(sysroot, bv)?,
            None => {
                let on_disk = sysroot.deployment_dirs()?;
                if !on_disk.is_empty() {
                    bail!(
                        "{} holds {} deployment(s) but there is no boot set ({} is missing): is \
                         the boot partition mounted at {}? Nothing was changed; mount it (or \
                         give the right --sysroot) and try again",
                        sysroot.path.join("ostree/deploy").display(),
                        on_disk.len(),
                        sysroot.boot().join("loader").display(),
                        sysroot.boot().display()
                    );
                }
                Vec::new()
            }
        };
        let booted = sysroot.booted(&deployments)?;
        let (staged, staged_problem) = match staged::read(sysroot) {
            Ok(Some(s)) => match sysroot.deployment_dir(&s.deployment())? {
                DeploymentDir::Directory => (Some(s), None),
                _ => (None, None),
            },
            Ok(None) => (None, None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        Ok(State {
            sysroot: sysroot.clone(),
            bootversion,
            deployments,
            booted,
            staged,
            staged_problem,
        })
    }

    /// Fails when the staged record is corrupt: a change now could lose what it described.
    pub fn require_readable_staged(&self) -> Result<()> {
        if let Some(p) = &self.staged_problem {
            bail!("{p}; run `stratum cleanup -p` to discard the staged deployment");
        }
        Ok(())
    }

    /// The deployment at `index` of the boot set (default first, as `stratum status` lists
    /// it), which must belong to `stateroot` when one is named.
    pub fn deployment_at(&self, index: usize, stateroot: Option<&str>) -> Result<&Deployment> {
        let d = self.deployments.get(index).with_context(|| {
            format!(
                "no deployment at index {index}; there are {} (see `stratum status`)",
                self.deployments.len()
            )
        })?;
        if !d.in_stateroot(stateroot) {
            bail!(
                "the deployment at index {index} belongs to stateroot {}, not to the one given \
                 with --stateroot ({}); give the index of one of its deployments (see `stratum \
                 status`) or leave --stateroot out",
                d.stateroot,
                stateroot.unwrap_or_default()
            );
        }
        Ok(d)
    }

    /// The default deployment of the boot set.
    pub fn default_deployment(&self) -> Option<&Deployment> {
        self.deployments.first()
    }

    /// The origin of `d`.
    pub fn origin_of(&self, d: &Deployment) -> Result<Origin> {
        let p = self.sysroot.path.join(d.origin_relpath());
        let text =
            fs::read_to_string(&p).with_context(|| format!("reading origin {}", p.display()))?;
        Origin::parse(&text).with_context(|| format!("origin file {}", p.display()))
    }

    /// Whether `d` is pinned (kept through cleanups and new deployments).
    pub fn is_pinned(&self, d: &Deployment) -> bool {
        self.origin_of(d).map(|o| o.pinned).unwrap_or(false)
    }

    /// The deployment whose `/etc` and kernel arguments a new deployment of `stateroot`
    /// inherits: the booted one when it belongs to the stateroot, else the stateroot's default.
    pub fn merge_deployment(&self, stateroot: &str) -> Option<Deployment> {
        self.booted
            .clone()
            .filter(|d| d.stateroot == stateroot)
            .or_else(|| {
                self.deployments
                    .iter()
                    .find(|d| d.stateroot == stateroot)
                    .cloned()
            })
    }

    /// The deployment the next change builds on (its commit and origin): the staged one, else
    /// the stateroot's default. Changes stack: `initramfs --enable` after a staged upgrade
    /// keeps the upgrade, and an upgrade after `initramfs --enable` keeps the regeneration.
    pub fn pending_deployment(&self, stateroot: &str) -> Option<Deployment> {
        self.staged
            .as_ref()
            .filter(|s| s.stateroot == stateroot)
            .map(Staged::deployment)
            .or_else(|| {
                self.deployments
                    .iter()
                    .find(|d| d.stateroot == stateroot)
                    .cloned()
            })
    }

    /// Deployments that stay whatever the new boot set holds: the booted and the staged one.
    pub fn protected(&self) -> Vec<Deployment> {
        let mut v: Vec<Deployment> = self.booted.iter().cloned().collect();
        v.extend(self.staged.as_ref().map(Staged::deployment));
        v
    }
}

/// The deployments of generation `bv`, default first, checked against the bootlinks and the
/// deployment directories.
fn read_boot_set(sysroot: &Sysroot, bv: u8) -> Result<Vec<Deployment>> {
    let dir = sysroot.boot().join("loader/entries");
    let mut entries = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|x| x == "conf") {
            let text =
                fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
            let entry =
                bls::Entry::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
            entries.push((path, entry));
        }
    }
    entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.sort_version()));
    let mut out: Vec<Deployment> = Vec::new();
    for (path, e) in &entries {
        let d = entry::from_entry(sysroot, e)
            .with_context(|| format!("boot entry {}", path.display()))?;
        check_deployment_dir(sysroot, path, &d)?;
        // `out[j]` came from `entries[j]`: every entry is pushed or refused.
        if let Some(j) = out.iter().position(|o| o.same_dir(&d)) {
            bail!(
                "boot entries {} and {} both boot deployment {}/{} (through the bootlinks {} \
                 and {}): a bootlink was pointed at another deployment, and the deployment it \
                 named would be removed as unused. Nothing was changed; point each bootlink back \
                 at its own deployment (../../../deploy/<stateroot>/deploy/<checksum>.<serial>, \
                 as `ostree admin status` expects) or repair the boot entries",
                entries[j].0.display(),
                path.display(),
                d.stateroot,
                d.name(),
                entry::bootlink_arg(bv, &out[j]),
                entry::bootlink_arg(bv, &d)
            );
        }
        out.push(d);
    }
    let linked: BTreeSet<String> = out.iter().map(|d| entry::bootlink_arg(bv, d)).collect();
    for arg in bootlinks(sysroot, bv)? {
        if !linked.contains(&arg) {
            bail!(
                "the bootlink {arg} has no boot entry in {}: an entry was removed by hand, so the \
                 boot set does not match the deployments. Nothing was changed; restore the entry \
                 (or reinstall the boot set) before changing deployments",
                dir.display()
            );
        }
    }
    Ok(out)
}

/// Fails unless the deployment that boot entry `path` boots is a real directory.
fn check_deployment_dir(sysroot: &Sysroot, path: &std::path::Path, d: &Deployment) -> Result<()> {
    let what = match sysroot.deployment_dir(d)? {
        DeploymentDir::Directory => return Ok(()),
        DeploymentDir::Missing => "which does not exist: the boot set does not match the \
                                   deployments on disk. Nothing was changed; restore the \
                                   deployment or repair the boot entries"
            .to_string(),
        kind => format!(
            "but {} is {}, not a directory: a deployment is a real directory, never a link \
             to one. Nothing was changed; put the deployment's own directory back in its \
             place (or remove what is there and repair the boot entries)",
            sysroot.deployment_root(d).display(),
            if kind == DeploymentDir::Symlink {
                "a symlink"
            } else {
                "a file"
            }
        ),
    };
    bail!(
        "boot entry {} boots deployment {}/{}, {what}",
        path.display(),
        d.stateroot,
        d.name()
    )
}

/// The `ostree=` values of the bootlinks of generation `bv` (`ostree/boot.N/*/*/*`).
fn bootlinks(sysroot: &Sysroot, bv: u8) -> Result<Vec<String>> {
    let base = sysroot.path.join(format!("ostree/boot.{bv}"));
    let mut out = Vec::new();
    let list = |p: &std::path::Path| -> Result<Vec<String>> {
        match fs::read_dir(p) {
            Ok(rd) => Ok(rd
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
        }
    };
    for sr in list(&base)? {
        for csum in list(&base.join(&sr))? {
            for serial in list(&base.join(&sr).join(&csum))? {
                out.push(format!("/ostree/boot.{bv}/{sr}/{csum}/{serial}"));
            }
        }
    }
    Ok(out)
}

/// Where and how a command operates: the sysroot, the stateroot asked for, and how to wait
/// for the lock.
#[derive(Debug, Clone)]
pub struct Session {
    pub sysroot: Sysroot,
    /// The stateroot named on the command line, if any.
    pub stateroot: Option<String>,
    /// Fail instead of waiting for the sysroot lock.
    pub no_wait: bool,
}

impl Session {
    /// Locks and makes the sysroot writable for a mutation.
    pub fn begin(&self) -> Result<SysrootLock> {
        lock::make_writable(&self.sysroot)?;
        self.sysroot.ensure_is_sysroot()?;
        let lock = lock::lock(&self.sysroot, self.no_wait)?;
        crate::bootset::writer::reconcile_esp(&self.sysroot)?;
        Ok(lock)
    }

    /// Reads the state, refusing a corrupt staged record (see
    /// [`State::require_readable_staged`]).
    pub fn state(&self) -> Result<State> {
        let st = State::read(&self.sysroot)?;
        st.require_readable_staged()?;
        Ok(st)
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
}
