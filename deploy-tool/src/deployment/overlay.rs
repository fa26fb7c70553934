//! `/etc` files carried into the initramfs without regenerating it (`stratum initramfs-etc`).
//!
//! The tracked files (origin key `[rpmostree] initramfs-etc`, as rpm-ostree) go into a small
//! reproducible, uncompressed newc archive that the boot entry loads as a second `initrd`; the
//! kernel unpacks both, the later one over the first. The archive also holds
//! `/etc/stratum/tracked-etc.list`, which prepare-root copies into `boot.json`.
//!
//! Archives live in `/boot/ostree/initramfs-overlays/<sha256>.img`, as OSTree keeps them, named
//! by their content so entries share them; the bootloader writer removes those no entry uses.
//! A change is a new bootloader generation of the same deployments: no checkout.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use anyhow::{bail, Context, Result};
use stratum_initramfs::newc::{self, Kind};

use super::initramfs::{settings_of, Settings};
use crate::bootset::files::write_overlay;
use crate::fsutil;
use crate::state::State;
use crate::sysroot::{Deployment, Sysroot};

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

/// Sets the tracked `/etc` files of `target` (the stateroot's default) to `files`: a new boot
/// set whose entry for `target` carries the overlay built from `from`'s `/etc` (the running
/// system's), the origin updated, and the staged deployment's origin too (its overlay is made
/// at finalize). Everything is checked and the archive built before anything is written.
/// Returns the overlay paths of the entry.
pub fn retrack(
    st: &State,
    target: &Deployment,
    from: &Deployment,
    files: &[String],
) -> Result<Vec<String>> {
    let sysroot = &st.sysroot;
    let origin = st.origin_of(target)?;
    let mut settings = Settings::from_origin(&origin)?;
    let cpio = if files.is_empty() {
        None
    } else {
        Some(build_cpio(&sysroot.deployment_root(from), files)?)
    };
    let overlays = match &cpio {
        Some(data) => vec![write_overlay(sysroot, data)?],
        None => Vec::new(),
    };
    let list: Vec<Deployment> = st
        .deployments
        .iter()
        .map(|d| {
            let mut d = d.clone();
            if d == *target {
                d.overlay_initrds = overlays.clone();
            }
            d
        })
        .collect();
    settings.etc = files.to_vec();
    let p = sysroot.path.join(target.origin_relpath());
    fsutil::atomic_write(&p, settings.apply(&origin)?.to_text().as_bytes(), 0o644)?;
    if let Some(s) = st
        .staged
        .as_ref()
        .filter(|s| s.stateroot == target.stateroot)
    {
        let sd = s.deployment();
        if let Ok(so) = st.origin_of(&sd) {
            let mut ss = Settings::from_origin(&so)?;
            ss.etc = files.to_vec();
            fsutil::atomic_write(
                &sysroot.path.join(sd.origin_relpath()),
                ss.apply(&so)?.to_text().as_bytes(),
                0o644,
            )?;
        }
    }
    crate::counting::commit::write(st, &list)?;
    Ok(overlays)
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
