//! The sysroot: OSTree's on-disk layout, and the deployment type every part shares.
//!
//! A [`Sysroot`] is a directory (the physical root `/sysroot` on a booted system, seen through
//! `/`, or a test's temporary directory) together with the run-time paths that describe the
//! running system (`/run/stratum`, `/run/ostree-booted`, `/proc/cmdline`). Carrying them here
//! lets the same code serve a booted machine and a test sysroot without global overrides.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What a deployment's path holds: only a real directory is a deployment (the boot
/// contract's rule, shared with prepare-root).
pub use stratum_prepare_root::DeploymentDir;

/// A sysroot directory and the run-time state of the system that uses it.
#[derive(Debug, Clone)]
pub struct Sysroot {
    pub path: PathBuf,
    /// Stratum's run-time directory (`/run/stratum`): the staged-deployment record.
    pub run_dir: PathBuf,
    /// The marker a booted OSTree-style system carries (`/run/ostree-booted`).
    pub booted_marker: PathBuf,
    /// The running kernel's command line (`/proc/cmdline`).
    pub proc_cmdline: PathBuf,
}

/// A deployment: a checkout of a commit in a stateroot, and how the boot set boots it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub stateroot: String,
    pub checksum: String,
    pub serial: u32,
    pub bootcsum: String,
    /// Position among deployments sharing `bootcsum` (the last part of the bootlink).
    pub bootserial: u32,
    pub kver: String,
    /// Kernel arguments, without `ostree=` (the writer adds it).
    pub kargs: Vec<String>,
    /// Extra initrds after the deployment's own (`initramfs-etc` overlays), paths relative to
    /// `/boot` as in the BLS entry, e.g. `/ostree/initramfs-overlays/<sha256>.img`.
    pub overlay_initrds: Vec<String>,
}

impl Deployment {
    /// `<checksum>.<serial>`, the deployment directory's name.
    pub fn name(&self) -> String {
        format!("{}.{}", self.checksum, self.serial)
    }

    /// `<stateroot>-<checksum>.<serial>`: how GRUB, boot counting and `status` name it.
    pub fn id(&self) -> String {
        format!("{}-{}", self.stateroot, self.name())
    }

    /// Whether `self` and `other` are the same deployment directory (kernel arguments and
    /// boot files aside).
    pub fn same_dir(&self, other: &Deployment) -> bool {
        self.stateroot == other.stateroot && self.name() == other.name()
    }

    /// Whether `self` belongs to `stateroot`; every deployment does when none is named.
    pub fn in_stateroot(&self, stateroot: Option<&str>) -> bool {
        stateroot.is_none_or(|s| self.stateroot == s)
    }

    /// The deployment directory relative to the sysroot.
    pub fn relpath(&self) -> PathBuf {
        PathBuf::from(format!(
            "ostree/deploy/{}/deploy/{}",
            self.stateroot,
            self.name()
        ))
    }

    /// The origin file relative to the sysroot.
    pub fn origin_relpath(&self) -> PathBuf {
        PathBuf::from(format!(
            "ostree/deploy/{}/deploy/{}.origin",
            self.stateroot,
            self.name()
        ))
    }
}

impl Sysroot {
    /// The sysroot at `path`, with the run-time paths of the running system.
    pub fn new(path: impl Into<PathBuf>) -> Sysroot {
        Sysroot {
            path: path.into(),
            run_dir: PathBuf::from("/run/stratum"),
            booted_marker: PathBuf::from(stratum_prepare_root::OSTREE_BOOTED),
            proc_cmdline: PathBuf::from("/proc/cmdline"),
        }
    }

    /// Whether this is the running system's own sysroot (`/` on a booted machine).
    pub fn is_booted_system(&self) -> bool {
        self.path == Path::new("/") && self.booted_marker.exists()
    }

    pub fn repo_path(&self) -> PathBuf {
        self.path.join("ostree/repo")
    }

    pub fn boot(&self) -> PathBuf {
        self.path.join("boot")
    }

    /// The root of deployment `d`.
    pub fn deployment_root(&self, d: &Deployment) -> PathBuf {
        self.path.join(d.relpath())
    }

    /// What is at `d`'s directory, without following a symlink there: only
    /// [`DeploymentDir::Directory`] is a deployment.
    pub fn deployment_dir(&self, d: &Deployment) -> Result<DeploymentDir> {
        let p = self.deployment_root(d);
        stratum_prepare_root::deployment_dir(&p).with_context(|| format!("stat {}", p.display()))
    }

    /// The stateroot's directory `ostree/deploy/<stateroot>`.
    pub fn stateroot_dir(&self, stateroot: &str) -> PathBuf {
        self.path.join("ostree/deploy").join(stateroot)
    }

    /// Creates the directories of an empty sysroot and its stateroot (idempotent).
    pub fn init(&self, stateroot: &str) -> Result<()> {
        validate_stateroot(stateroot)?;
        for d in ["boot", "ostree/deploy"] {
            fs::create_dir_all(self.path.join(d))
                .with_context(|| format!("creating {}", self.path.join(d).display()))?;
        }
        let sr = self.stateroot_dir(stateroot);
        for d in ["deploy", "var"] {
            fs::create_dir_all(sr.join(d))
                .with_context(|| format!("creating {}", sr.join(d).display()))?;
        }
        Ok(())
    }

    /// Fails unless the directory looks like a sysroot (it has `ostree/deploy`).
    pub fn ensure_is_sysroot(&self) -> Result<()> {
        if !self.path.join("ostree/deploy").is_dir() {
            bail!(
                "{} is not a sysroot (it has no ostree/deploy); give the right one with --sysroot",
                self.path.display()
            );
        }
        Ok(())
    }

    /// The current boot generation (`/boot/loader -> loader.N`), or `None` before the first
    /// deployment.
    pub fn bootversion(&self) -> Result<Option<u8>> {
        let link = self.boot().join("loader");
        match fs::read_link(&link) {
            Ok(t) => match t.to_str() {
                Some("loader.0") => Ok(Some(0)),
                Some("loader.1") => Ok(Some(1)),
                _ => bail!(
                    "{} points to {}, expected loader.0 or loader.1",
                    link.display(),
                    t.display()
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", link.display())),
        }
    }

    /// The deployment directories on disk, as `(stateroot, name)`, whether or not a boot set
    /// refers to them. Interrupted checkouts (`.<name>.partial`) are not included, nor is
    /// anything that is not a real directory (see [`DeploymentDir`]).
    pub fn deployment_dirs(&self) -> Result<Vec<(String, String)>> {
        let base = self.path.join("ostree/deploy");
        let mut out = Vec::new();
        let rd = match fs::read_dir(&base) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e).with_context(|| format!("reading {}", base.display())),
        };
        for sr in rd {
            let sr = sr.with_context(|| format!("reading {}", base.display()))?;
            let Ok(stateroot) = sr.file_name().into_string() else {
                continue;
            };
            let Ok(entries) = fs::read_dir(sr.path().join("deploy")) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(name) = e.file_name().into_string() else {
                    continue;
                };
                if parse_deploy_name(&name).is_err() {
                    continue;
                }
                let kind = stratum_prepare_root::deployment_dir(&e.path())
                    .with_context(|| format!("stat {}", e.path().display()))?;
                if kind == DeploymentDir::Directory {
                    out.push((stateroot.clone(), name));
                }
            }
        }
        out.sort();
        Ok(out)
    }

    /// The deployment the running system booted, found by comparing `/`'s device and inode
    /// with each deployment directory (robust against renamed bootlinks).
    pub fn booted(&self, deployments: &[Deployment]) -> Result<Option<Deployment>> {
        if !self.booted_marker.exists() {
            return Ok(None);
        }
        let root = match fs::metadata("/") {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        for d in deployments {
            if let Ok(m) = fs::metadata(self.deployment_root(d)) {
                if m.dev() == root.dev() && m.ino() == root.ino() {
                    return Ok(Some(d.clone()));
                }
            }
        }
        Ok(None)
    }
}

/// Splits a deployment directory name `<sha256>.<serial>`, by the boot contract's rule.
pub fn parse_deploy_name(name: &str) -> Result<(String, u32)> {
    match stratum_prepare_root::parse_deployment_name(name) {
        Some((csum, serial)) => Ok((csum.to_string(), serial)),
        None => bail!("{name:?} is not a deployment name (<sha256 in lowercase hex>.<serial>)"),
    }
}

/// Stateroot names become path components and BLS file names: keep them simple.
pub fn validate_stateroot(name: &str) -> Result<()> {
    if name.is_empty()
        || name.starts_with('.')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        bail!("invalid stateroot name {name:?}: use letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deploy_names() {
        let c = "a".repeat(64);
        assert_eq!(
            parse_deploy_name(&format!("{c}.3")).unwrap(),
            (c.clone(), 3)
        );
        assert!(parse_deploy_name("abc.0").is_err());
        assert!(parse_deploy_name(&c).is_err());
        assert!(parse_deploy_name(&format!("{c}.+1")).is_err());
    }

    #[test]
    fn stateroot_names() {
        assert!(validate_stateroot("default").is_ok());
        assert!(validate_stateroot("../x").is_err());
        assert!(validate_stateroot("").is_err());
    }

    #[test]
    fn deployment_dirs_skip_partial_checkouts_and_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let s = Sysroot::new(d.path());
        s.init("os").unwrap();
        let c = "b".repeat(64);
        let dep = s.stateroot_dir("os").join("deploy");
        fs::create_dir(dep.join(format!("{c}.0"))).unwrap();
        fs::create_dir(dep.join(format!(".{c}.1.partial"))).unwrap();
        fs::write(dep.join(format!("{c}.0.origin")), "").unwrap();
        // A symlink in a deployment's place is not one, even to a real deployment.
        std::os::unix::fs::symlink(format!("{c}.0"), dep.join(format!("{c}.2"))).unwrap();
        assert_eq!(
            s.deployment_dirs().unwrap(),
            vec![("os".to_string(), format!("{c}.0"))]
        );
    }
}
