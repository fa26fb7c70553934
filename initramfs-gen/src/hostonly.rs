//! `--hostonly`: the modules this machine needs to reach its root filesystem, read from sysfs.
//!
//! Starting at the block device backing `/` (from `/proc/self/mountinfo`), the walk follows
//! device-mapper and md `slaves/` down to the real disks, and for each disk climbs its sysfs
//! device path up to `/sys/devices`, collecting every `modalias` (to match against
//! `modules.alias`) and every bound driver's `driver/module` link. The root filesystem type is
//! added by name. The sysfs root and mountinfo file are injectable, so tests use fake trees.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::modules::ModuleDb;

/// Where to read the machine's state from.
#[derive(Debug, Clone)]
pub struct HostSource {
    /// The sysfs mount (`/sys`).
    pub sysfs: PathBuf,
    /// The mount table (`/proc/self/mountinfo`).
    pub mountinfo: PathBuf,
    /// The path whose filesystem is the root to reach (`/`, or `--hostonly-root`).
    pub root_path: PathBuf,
}

impl Default for HostSource {
    fn default() -> Self {
        HostSource {
            sysfs: "/sys".into(),
            mountinfo: "/proc/self/mountinfo".into(),
            root_path: "/".into(),
        }
    }
}

/// What the walk found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct HostDevices {
    /// Filesystem type of the root mount.
    pub fstype: String,
    /// Block devices visited (sysfs names), the mounted one first.
    pub devices: Vec<String>,
    /// Device modaliases on the way to the root device, sorted.
    pub modaliases: BTreeSet<String>,
    /// Modules bound to those devices or implied by dm/md, sorted.
    pub drivers: BTreeSet<String>,
}

/// One line of mountinfo: mount point, `MAJ:MIN`, filesystem type, source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Where it is mounted (octal escapes decoded).
    pub mount_point: String,
    /// Device number of the filesystem.
    pub dev: (u32, u32),
    /// Filesystem type.
    pub fstype: String,
    /// Mount source (`/dev/vda3`).
    pub source: String,
}

/// Parse `/proc/self/mountinfo` (proc(5)); malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let (ma, mi) = pre.get(2)?.split_once(':')?;
            Some(MountEntry {
                mount_point: stratum_prepare_root::mountinfo::unescape(pre.get(4)?),
                dev: (ma.parse().ok()?, mi.parse().ok()?),
                fstype: post.next()?.to_string(),
                source: stratum_prepare_root::mountinfo::unescape(post.next()?),
            })
        })
        .collect()
}

/// The mount holding `path`: the longest mount point that is a prefix of it (the last one
/// wins when several are stacked on one point).
pub fn mount_for<'a>(mounts: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    mounts
        .iter()
        .filter(|m| path.starts_with(&m.mount_point))
        .max_by_key(|m| Path::new(&m.mount_point).components().count())
        .and_then(|best| {
            mounts
                .iter()
                .rev()
                .find(|m| m.mount_point == best.mount_point)
        })
}

fn read_trimmed(p: &Path) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

fn link_name(p: &Path) -> Option<String> {
    let target = std::fs::read_link(p).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// Find the root's block device and walk sysfs from it.
pub fn scan(src: &HostSource) -> Result<HostDevices> {
    let text = std::fs::read_to_string(&src.mountinfo)
        .with_context(|| format!("reading {}", src.mountinfo.display()))?;
    let mounts = parse_mountinfo(&text);
    let m = mount_for(&mounts, &src.root_path).with_context(|| {
        format!(
            "no mount holds {} in {}",
            src.root_path.display(),
            src.mountinfo.display()
        )
    })?;
    let sysfs = std::fs::canonicalize(&src.sysfs)
        .with_context(|| format!("opening sysfs at {}", src.sysfs.display()))?;
    let by_num = sysfs.join(format!("dev/block/{}:{}", m.dev.0, m.dev.1));
    let by_name = m
        .source
        .strip_prefix("/dev/")
        .map(|n| sysfs.join("class/block").join(n.replace('/', "!")));
    let start = if m.dev.0 != 0 && by_num.exists() {
        by_num
    } else if let Some(p) = by_name.filter(|p| p.exists()) {
        p
    } else {
        bail!(
            "--hostonly: {} is on {} ({}, device {}:{}), which is not a block device in {}; \
             build with --generic, or name the root with --hostonly-root",
            src.root_path.display(),
            m.source,
            m.fstype,
            m.dev.0,
            m.dev.1,
            sysfs.display()
        );
    };
    let mut host = HostDevices {
        fstype: m.fstype.clone(),
        ..HostDevices::default()
    };
    walk(&sysfs, &start, &mut host, 0)?;
    Ok(host)
}

fn walk(sysfs: &Path, dev: &Path, host: &mut HostDevices, depth: usize) -> Result<()> {
    if depth > 16 {
        bail!(
            "block device stack deeper than 16 levels at {}",
            dev.display()
        );
    }
    let canon =
        std::fs::canonicalize(dev).with_context(|| format!("resolving {}", dev.display()))?;
    let name = canon
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if host.devices.contains(&name) {
        return Ok(());
    }
    host.devices.push(name.clone());
    // A partition's own directory has no slaves; its disk (the parent) may.
    let disk = if canon.join("partition").exists() {
        canon.parent().unwrap_or(&canon).to_path_buf()
    } else {
        canon.clone()
    };
    if disk.join("dm").is_dir() {
        host.drivers.insert("dm_mod".into());
        let uuid = read_trimmed(&disk.join("dm/uuid")).unwrap_or_default();
        // cryptsetup names its mappings `CRYPT-<type>-...`; veritysetup's type is VERITY.
        if uuid.starts_with("CRYPT-VERITY") {
            host.drivers.insert("dm_verity".into());
        } else if uuid.starts_with("CRYPT-") {
            host.drivers.insert("dm_crypt".into());
        }
    }
    if let Some(level) = read_trimmed(&disk.join("md/level")) {
        host.drivers.insert("md_mod".into());
        host.drivers.insert(level); // raid1, raid456, ... are module names
    }
    let mut slaves: Vec<PathBuf> = std::fs::read_dir(disk.join("slaves"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    slaves.sort();
    for s in slaves {
        walk(sysfs, &s, host, depth + 1)?;
    }
    let devices = sysfs.join("devices");
    for dir in canon
        .ancestors()
        .take_while(|d| d.starts_with(&devices) && *d != devices)
    {
        if let Some(alias) = read_trimmed(&dir.join("modalias")) {
            host.modaliases.insert(alias);
        }
        if let Some(module) = link_name(&dir.join("driver/module")) {
            host.drivers.insert(module);
        }
    }
    Ok(())
}

/// The module names `host` asks for: bound drivers, modalias matches, and the filesystem.
pub fn module_names(db: &ModuleDb, host: &HostDevices) -> Vec<String> {
    let mut names: BTreeSet<String> = host.drivers.iter().cloned().collect();
    for alias in &host.modaliases {
        names.extend(db.match_modalias(alias));
    }
    if !host.fstype.is_empty() {
        names.insert(host.fstype.clone());
    }
    names.into_iter().collect()
}

#[cfg(test)]
mod tests;
