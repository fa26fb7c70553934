//! The staged deployment: created by `upgrade`/`deploy`, written into the boot set only at
//! shutdown by `stratum finalize-staged` (run by `stratum-finalize-staged.service`), so that
//! `/etc` edits made after the command are carried into the new deployment.
//!
//! The record lives in `/run` (it must not survive a reboot: a staged deployment that was
//! never finalized is garbage); a failed finalize is recorded in the stateroot's `/var`,
//! which the next boot's `status` reads.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::sysroot::{Deployment, Sysroot};

/// The staged deployment record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Staged {
    pub stateroot: String,
    pub checksum: String,
    pub serial: u32,
    pub bootcsum: String,
    pub kver: String,
    pub kargs: Vec<String>,
    /// The deployment whose `/etc` is merged at finalize time (`<csum>.<serial>`).
    pub merge: Option<String>,
}

impl Staged {
    pub fn name(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }

    /// The deployment this record describes (not in a boot set yet: no overlay initrds).
    pub fn deployment(&self) -> Deployment {
        Deployment {
            stateroot: self.stateroot.clone(),
            checksum: self.checksum.clone(),
            serial: self.serial,
            bootcsum: self.bootcsum.clone(),
            bootserial: 0,
            kver: self.kver.clone(),
            kargs: self.kargs.clone(),
            overlay_initrds: Vec::new(),
        }
    }
}

/// The record's path, in the run-time directory of `sysroot`'s system.
pub fn record_path(sysroot: &Sysroot) -> PathBuf {
    sysroot.run_dir.join("staged-deployment")
}

/// Reads the staged record, if any. A record that does not parse is an error naming the file.
pub fn read(sysroot: &Sysroot) -> Result<Option<Staged>> {
    let p = record_path(sysroot);
    match fs::read_to_string(&p) {
        Ok(t) => {
            let s: Staged = serde_json::from_str(&t).with_context(|| {
                format!("the staged-deployment record {} is corrupt", p.display())
            })?;
            crate::sysroot::validate_stateroot(&s.stateroot)
                .and_then(|_| crate::sysroot::parse_deploy_name(&s.name()).map(|_| ()))
                .with_context(|| {
                    format!("the staged-deployment record {} is corrupt", p.display())
                })?;
            Ok(Some(s))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
    }
}

/// Writes the staged record (atomically).
pub fn write(sysroot: &Sysroot, s: &Staged) -> Result<()> {
    let p = record_path(sysroot);
    fs::create_dir_all(&sysroot.run_dir)
        .with_context(|| format!("creating {}", sysroot.run_dir.display()))?;
    crate::fsutil::atomic_write(&p, serde_json::to_string_pretty(s)?.as_bytes(), 0o644)
}

/// Removes the staged record.
pub fn clear(sysroot: &Sysroot) -> Result<()> {
    crate::fsutil::remove_any(&record_path(sysroot))
}

/// A failed finalize, as recorded for the next boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct FinalizeFailure {
    pub deployment: String,
    pub error: String,
}

fn failure_path(stateroot_dir: &Path) -> PathBuf {
    stateroot_dir.join("var/lib/stratum/finalize-failure.json")
}

/// Records that finalizing failed.
pub fn record_failure(stateroot_dir: &Path, f: &FinalizeFailure) -> Result<()> {
    let p = failure_path(stateroot_dir);
    fs::create_dir_all(p.parent().context("failure path parent")?)?;
    crate::fsutil::atomic_write(&p, serde_json::to_string_pretty(f)?.as_bytes(), 0o644)
}

/// The last recorded finalize failure, if any.
pub fn read_failure(stateroot_dir: &Path) -> Option<FinalizeFailure> {
    fs::read_to_string(failure_path(stateroot_dir))
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
}

/// Forgets a recorded failure (a later successful change supersedes it).
pub fn clear_failure(stateroot_dir: &Path) -> Result<()> {
    crate::fsutil::remove_any(&failure_path(stateroot_dir))
}
