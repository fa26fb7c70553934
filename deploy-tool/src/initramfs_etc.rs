//! `stratum initramfs-etc`: `/etc` files carried into the initramfs without regenerating it.
//!
//! The tracked files (origin key `[rpmostree] initramfs-etc`, as rpm-ostree) go into a small
//! reproducible, uncompressed newc archive that the boot entry loads as a second `initrd`; the
//! kernel unpacks both, the later one over the first. The archive also holds
//! `/etc/stratum/tracked-etc.list`, which prepare-root copies into `boot.json`.
//!
//! Archives live in `/boot/ostree/initramfs-overlays/<sha256>.img`, as OSTree keeps them, named
//! by their content so entries share them; the bootloader writer removes those no entry uses.
//! A change is a new bootloader generation of the same deployments: no checkout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use stratum_initramfs::newc::{self, Kind};

use crate::fsutil;
use crate::initramfs::{settings_of, Settings};
use crate::ops::Ops;
use crate::origin::Origin;
use crate::sysroot::{Deployment, Sysroot};

/// The overlays' directory below `/boot/ostree`.
pub const OVERLAYS_DIR: &str = "initramfs-overlays";

/// `stratum initramfs-etc` options.
#[derive(Debug, clap::Args)]
pub struct InitramfsEtcOpts {
    /// Carry this /etc file in the initramfs (repeatable)
    #[arg(long, value_name = "PATH")]
    pub track: Vec<String>,
    /// Stop carrying this file (repeatable)
    #[arg(long, value_name = "PATH")]
    pub untrack: Vec<String>,
    /// Stop carrying all files
    #[arg(long)]
    pub untrack_all: bool,
    /// Copy the tracked files' current contents into the initramfs even if the list is unchanged
    #[arg(long)]
    pub force_sync: bool,
}

/// Normalizes `path` (absolute, `.` and `..` resolved lexically) and requires it below `/etc`.
pub fn normalize(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        bail!("{path}: give an absolute path below /etc");
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(p) => parts.push(p.to_str().context("path is not UTF-8")?),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    if parts.len() < 2 || parts[0] != "etc" {
        bail!("{path}: only files below /etc can be tracked");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Checks that `/etc/…` `path` is a readable regular file in deployment `root` (not through a
/// symlink leading out of `/etc`) and returns its permissions and contents.
fn read_tracked(root: &Path, path: &str) -> Result<(u32, Vec<u8>)> {
    let host = root.join(path.trim_start_matches('/'));
    let etc = root
        .join("etc")
        .canonicalize()
        .with_context(|| format!("{}: no /etc", root.display()))?;
    let parent = host
        .parent()
        .context("path has no parent")?
        .canonicalize()
        .with_context(|| format!("{path}: no such file"))?;
    if !parent.starts_with(&etc) {
        bail!("{path}: leads out of /etc through a symlink");
    }
    let m = fs::symlink_metadata(&host).with_context(|| format!("{path}: no such file"))?;
    if !m.file_type().is_file() {
        bail!("{path}: not a regular file (directories, symlinks and special files cannot be tracked)");
    }
    let data = fs::read(&host).with_context(|| format!("{path}: cannot read it"))?;
    Ok((m.permissions().mode() & 0o7777, data))
}

/// The overlay archive for `files` of deployment `root`: bit-for-bit the same for the same
/// contents (sorted, mtime 0, uid/gid 0).
pub fn build_cpio(root: &Path, files: &[String]) -> Result<Vec<u8>> {
    let mut members: BTreeMap<String, Option<(u32, Vec<u8>)>> = BTreeMap::new();
    let add_parents = |members: &mut BTreeMap<_, _>, p: &str| {
        let mut cur = String::new();
        let parts: Vec<&str> = p.trim_start_matches('/').split('/').collect();
        for part in &parts[..parts.len() - 1] {
            cur.push('/');
            cur.push_str(part);
            members.entry(cur.clone()).or_insert(None);
        }
    };
    let mut list = String::new();
    for f in files {
        let entry = read_tracked(root, f)?;
        add_parents(&mut members, f);
        members.insert(f.clone(), Some(entry));
        list.push_str(f);
        list.push('\n');
    }
    let list_path = stratum_prepare_root::TRACKED_ETC_LIST;
    add_parents(&mut members, list_path);
    members.insert(list_path.to_string(), Some((0o644, list.into_bytes())));
    let mut w = newc::Writer::new(Vec::new());
    for (path, m) in &members {
        match m {
            None => w.append(path, Kind::Dir, 0o755, 0, (0, 0), &[]),
            Some((perm, data)) => w.append(path, Kind::File, *perm, 0, (0, 0), data),
        }
        .with_context(|| format!("adding {path} to the overlay"))?;
    }
    w.finish().context("finishing the overlay archive")?;
    Ok(w.into_inner())
}

/// Writes `data` as `/boot/ostree/initramfs-overlays/<sha256>.img` (temp file + rename) and
/// returns its path relative to `/boot`, as the BLS entry names it.
pub fn write_overlay(sysroot: &Sysroot, data: &[u8]) -> Result<String> {
    let dir = sysroot.boot().join("ostree").join(OVERLAYS_DIR);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = format!("{}.img", hex::encode(Sha256::digest(data)));
    let path = dir.join(&name);
    if !path.is_file() {
        fsutil::atomic_write(&path, data, 0o644)?;
    }
    Ok(format!("/ostree/{OVERLAYS_DIR}/{name}"))
}

/// Sets `dep.overlay_initrds` from its origin's tracked files, read from its own `/etc`.
pub fn attach(sysroot: &Sysroot, dep: &mut Deployment) -> Result<()> {
    let s = settings_of(sysroot, dep)?;
    dep.overlay_initrds = if s.etc.is_empty() {
        Vec::new()
    } else {
        let root = sysroot.path.join(dep.relpath());
        vec![write_overlay(sysroot, &build_cpio(&root, &s.etc)?)?]
    };
    Ok(())
}

/// Removes overlay files that none of `deployments` uses (run by the bootloader writer after
/// the switch to the new generation).
pub fn remove_unused_overlays<'a>(
    sysroot: &Sysroot,
    deployments: impl Iterator<Item = &'a Deployment>,
) -> Result<()> {
    let dir = sysroot.boot().join("ostree").join(OVERLAYS_DIR);
    let used: BTreeSet<PathBuf> = deployments
        .flat_map(|d| d.overlay_initrds.iter())
        .map(|p| sysroot.boot().join(p.trim_start_matches('/')))
        .collect();
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let p = e?.path();
        if !used.contains(&p) {
            fsutil::remove_any(&p)?;
        }
    }
    fsutil::fsync_dir(&dir)
}

/// Runs `stratum initramfs-etc`.
pub fn run(ops: &Ops, o: &InitramfsEtcOpts) -> Result<()> {
    let changing = !o.track.is_empty() || !o.untrack.is_empty() || o.untrack_all || o.force_sync;
    let _lock = if changing { Some(ops.begin()?) } else { None };
    let st = ops.state()?;
    let stateroot = ops.stateroot(&st);
    let target = st
        .deployments
        .iter()
        .find(|d| d.stateroot == stateroot)
        .cloned()
        .with_context(|| format!("no deployment in stateroot {stateroot}"))?;
    // The files come from the running system's /etc (the merge deployment's).
    let merge = ops
        .merge_deployment(&st, &stateroot)
        .unwrap_or_else(|| target.clone());
    let origin = ops.origin_of(&target)?;
    let cur = Settings::from_origin(&origin)?;
    if !changing {
        for f in &cur.etc {
            println!("{f}");
        }
        if cur.etc.is_empty() {
            eprintln!("No /etc files are tracked.");
        }
        return Ok(());
    }
    let mut new = cur.clone();
    if o.untrack_all {
        new.etc.clear();
    }
    for p in &o.untrack {
        let p = normalize(p)?;
        if !new.etc.contains(&p) {
            eprintln!("{p} is not tracked");
        }
        new.etc.retain(|x| x != &p);
    }
    for p in &o.track {
        let p = normalize(p)?;
        if !new.etc.contains(&p) {
            new.etc.push(p);
        }
    }
    new.etc.sort();
    if new == cur && !o.force_sync {
        eprintln!("No changes.");
        return Ok(());
    }
    // Everything is checked (and the archive built) before anything is written.
    let merge_root = ops.sysroot.path.join(merge.relpath());
    let cpio = if new.etc.is_empty() {
        None
    } else {
        Some(build_cpio(&merge_root, &new.etc)?)
    };
    let overlays = match &cpio {
        Some(data) => vec![write_overlay(&ops.sysroot, data)?],
        None => Vec::new(),
    };
    let list: Vec<Deployment> = st
        .deployments
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if d == target {
                d.overlay_initrds = overlays.clone();
            }
            d
        })
        .collect();
    let new_origin = new.apply(&origin)?;
    write_origin(&ops.sysroot, &target, &new_origin)?;
    // A staged deployment follows too (its overlay is made at finalize time).
    if let Some(s) = st.staged.as_ref().filter(|s| s.stateroot == stateroot) {
        let p = ops
            .sysroot
            .stateroot_dir(&s.stateroot)
            .join(format!("deploy/{}.origin", s.name()));
        if let Ok(text) = fs::read_to_string(&p) {
            let so = Origin::parse(&text)?;
            let mut ss = Settings::from_origin(&so)?;
            ss.etc = new.etc.clone();
            fsutil::atomic_write(&p, ss.apply(&so)?.to_text().as_bytes(), 0o644)?;
        }
    }
    ops.commit_boot_set(&st, list)?;
    if new.etc.is_empty() {
        eprintln!("No /etc files are tracked any more; reboot to use the change.");
    } else {
        eprintln!(
            "Tracking {} /etc file(s) in {}; reboot to use them.",
            new.etc.len(),
            overlays.join(" ")
        );
    }
    Ok(())
}

fn write_origin(sysroot: &Sysroot, d: &Deployment, o: &Origin) -> Result<()> {
    let p = sysroot.path.join(d.origin_relpath());
    fsutil::atomic_write(&p, o.to_text().as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_confined_to_etc() {
        assert_eq!(normalize("/etc/x.conf").unwrap(), "/etc/x.conf");
        assert_eq!(normalize("/etc/a/../b/./c").unwrap(), "/etc/b/c");
        assert_eq!(normalize("/usr/../etc/x").unwrap(), "/etc/x");
        for bad in ["/etc/../usr/x", "etc/x", "/etc", "/etc/..", "/var/x", "/"] {
            assert!(normalize(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn overlay_is_reproducible_and_lists_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc/sub")).unwrap();
        fs::write(root.join("etc/a.conf"), "a\n").unwrap();
        fs::write(root.join("etc/sub/b.conf"), "b\n").unwrap();
        fs::set_permissions(
            root.join("etc/sub/b.conf"),
            fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let files = vec!["/etc/a.conf".to_string(), "/etc/sub/b.conf".to_string()];
        let one = build_cpio(root, &files).unwrap();
        let two = build_cpio(root, &files).unwrap();
        assert_eq!(one, two);
        let mut r = newc::Reader::new(&one[..]);
        let mut seen = BTreeMap::new();
        while let Some((h, data)) = r.next_member().unwrap() {
            seen.insert(h.name.clone(), (h.mode & 0o7777, data));
        }
        assert_eq!(seen["etc/sub/b.conf"], (0o600, b"b\n".to_vec()));
        assert_eq!(
            seen["etc/stratum/tracked-etc.list"].1,
            b"/etc/a.conf\n/etc/sub/b.conf\n".to_vec()
        );
        assert!(seen.contains_key("etc/sub"));
    }

    #[test]
    fn bad_files_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        fs::create_dir_all(root.join("etc/dir")).unwrap();
        fs::create_dir_all(root.join("usr")).unwrap();
        fs::write(root.join("usr/secret"), "x").unwrap();
        std::os::unix::fs::symlink("../usr", root.join("etc/out")).unwrap();
        std::os::unix::fs::symlink("dir", root.join("etc/link")).unwrap();
        for bad in ["/etc/missing", "/etc/dir", "/etc/out/secret", "/etc/link"] {
            assert!(build_cpio(root, &[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
