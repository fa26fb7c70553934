//! The sysroot: OSTree's on-disk layout, and the deployments it holds.
//!
//! The bootloader entries of the current generation (`/boot/loader/entries`) are the source
//! of truth for which deployments exist and in which order, as in OSTree: an entry's
//! `ostree=` argument names a bootlink, and the bootlink names the deployment directory.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use stratum_prepare_root::cmdline::Cmdline;

use crate::bls;

/// A sysroot directory (`/sysroot` on a booted system, or a staging directory).
#[derive(Debug, Clone)]
pub struct Sysroot {
    pub path: PathBuf,
}

/// A deployment listed in the current boot set.
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
    pub fn new(path: impl Into<PathBuf>) -> Sysroot {
        Sysroot { path: path.into() }
    }

    pub fn repo_path(&self) -> PathBuf {
        self.path.join("ostree/repo")
    }

    pub fn boot(&self) -> PathBuf {
        self.path.join("boot")
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

    /// The deployments of the current boot set, default first.
    pub fn deployments(&self) -> Result<Vec<Deployment>> {
        let Some(_) = self.bootversion()? else {
            return Ok(Vec::new());
        };
        let dir = self.boot().join("loader/entries");
        let mut entries = Vec::new();
        for e in fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let path = e?.path();
            if path.extension().is_some_and(|x| x == "conf") {
                let text = fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?;
                let entry = bls::Entry::parse(&text)
                    .with_context(|| format!("parsing {}", path.display()))?;
                entries.push((path, entry));
            }
        }
        entries.sort_by_key(|(_, e)| std::cmp::Reverse(e.sort_version()));
        entries
            .iter()
            .map(|(path, e)| {
                self.deployment_of_entry(e)
                    .with_context(|| format!("boot entry {}", path.display()))
            })
            .collect()
    }

    fn deployment_of_entry(&self, e: &bls::Entry) -> Result<Deployment> {
        let options = e.get("options").context("entry has no options line")?;
        let cmdline = Cmdline::parse(options);
        let ostree = cmdline
            .get("ostree")
            .context("entry has no ostree= argument")?;
        let link = parse_bootlink(ostree)?;
        let target = fs::read_link(self.path.join(ostree.trim_start_matches('/')))
            .with_context(|| format!("reading bootlink {ostree}"))?;
        let name = target
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("bootlink {ostree} points to {}", target.display()))?;
        let (checksum, serial) = parse_deploy_name(name)?;
        let kver = e
            .get("linux")
            .and_then(|l| l.rsplit('/').next())
            .and_then(|f| f.strip_prefix("vmlinuz-"))
            .context("entry's linux line does not name vmlinuz-<kver>")?
            .to_string();
        let kargs = cmdline
            .iter()
            .filter(|p| p.key != "ostree")
            .map(|p| p.to_string())
            .collect();
        Ok(Deployment {
            stateroot: link.stateroot,
            checksum,
            serial,
            bootcsum: link.bootcsum,
            bootserial: link.bootserial,
            kver,
            kargs,
            overlay_initrds: e.all("initrd").skip(1).map(str::to_string).collect(),
        })
    }

    /// The deployment the running system booted, found by comparing `/`'s device and inode
    /// with each deployment directory (robust against renamed bootlinks).
    pub fn booted(&self, deployments: &[Deployment]) -> Result<Option<Deployment>> {
        let root = match fs::metadata("/") {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if !Path::new(stratum_prepare_root::OSTREE_BOOTED).exists() {
            return Ok(None);
        }
        for d in deployments {
            if let Ok(m) = fs::metadata(self.path.join(d.relpath())) {
                if m.dev() == root.dev() && m.ino() == root.ino() {
                    return Ok(Some(d.clone()));
                }
            }
        }
        Ok(None)
    }
}

/// The parts of an `ostree=/ostree/boot.N/<stateroot>/<bootcsum>/<bootserial>` argument.
#[derive(Debug, PartialEq, Eq)]
pub struct Bootlink {
    pub bootversion: u8,
    pub stateroot: String,
    pub bootcsum: String,
    pub bootserial: u32,
}

/// Parses an `ostree=` value in the exact form OSTree accepts.
pub fn parse_bootlink(arg: &str) -> Result<Bootlink> {
    let parts: Vec<&str> = arg.split('/').collect();
    let bad = || {
        anyhow::anyhow!("ostree={arg} is not of the form /ostree/boot.N/STATEROOT/BOOTCSUM/SERIAL")
    };
    if parts.len() != 6 || !parts[0].is_empty() || parts[1] != "ostree" {
        return Err(bad());
    }
    let bootversion = match parts[2] {
        "boot.0" => 0,
        "boot.1" => 1,
        _ => return Err(bad()),
    };
    Ok(Bootlink {
        bootversion,
        stateroot: parts[3].to_string(),
        bootcsum: parts[4].to_string(),
        bootserial: parts[5].parse().map_err(|_| bad())?,
    })
}

/// Splits a deployment directory name `<sha256>.<serial>`.
pub fn parse_deploy_name(name: &str) -> Result<(String, u32)> {
    let (csum, serial) = name
        .rsplit_once('.')
        .with_context(|| format!("{name} is not <checksum>.<serial>"))?;
    if csum.len() != 64 || !csum.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("{name}: {csum} is not a SHA-256 checksum");
    }
    let serial = serial
        .parse()
        .with_context(|| format!("{name}: bad serial {serial}"))?;
    Ok((csum.to_string(), serial))
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
    fn bootlinks_parse_strictly() {
        let b = parse_bootlink("/ostree/boot.1/default/abc/0").unwrap();
        assert_eq!(
            b,
            Bootlink {
                bootversion: 1,
                stateroot: "default".into(),
                bootcsum: "abc".into(),
                bootserial: 0
            }
        );
        for bad in [
            "/ostree/boot.2/x/y/0",
            "ostree/boot.0/x/y/0",
            "/ostree/boot.0/x/y",
            "/ostree/boot.0/x/y/z",
            "/etc/passwd",
        ] {
            assert!(parse_bootlink(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn deploy_names() {
        let c = "a".repeat(64);
        assert_eq!(
            parse_deploy_name(&format!("{c}.3")).unwrap(),
            (c.clone(), 3)
        );
        assert!(parse_deploy_name("abc.0").is_err());
        assert!(parse_deploy_name(&c).is_err());
    }

    #[test]
    fn stateroot_names() {
        assert!(validate_stateroot("default").is_ok());
        assert!(validate_stateroot("../x").is_err());
        assert!(validate_stateroot("").is_err());
    }
}
