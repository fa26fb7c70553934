//! The three-way `/etc` merge.
//!
//! The admin's changes are the difference between the merge deployment's defaults
//! (`usr/etc`) and its live `/etc`: files modified, added or removed. They are replayed onto
//! the new deployment's `/etc`, which starts as a copy of the new image's defaults, so admin
//! edits win and untouched files follow the image. This runs on the new deployment's private
//! copy before it is part of any boot set, so an error leaves nothing half-written behind.

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// What the admin changed, as paths relative to `/etc`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct EtcDiff {
    pub modified: Vec<PathBuf>,
    pub added: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

/// Computes the admin's changes: `defaults` is the old `usr/etc`, `current` the old `/etc`.
pub fn diff(defaults: &Path, current: &Path) -> Result<EtcDiff> {
    let mut d = EtcDiff::default();
    walk(defaults, current, Path::new(""), &mut d)?;
    Ok(d)
}

fn entries(dir: &Path) -> Result<BTreeSet<std::ffi::OsString>> {
    match fs::read_dir(dir) {
        Ok(rd) => rd.map(|e| Ok(e?.file_name())).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeSet::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", dir.display())),
    }
}

fn walk(a_root: &Path, b_root: &Path, rel: &Path, d: &mut EtcDiff) -> Result<()> {
    let a = entries(&a_root.join(rel))?;
    let b = entries(&b_root.join(rel))?;
    for name in a.union(&b) {
        let p = rel.join(name);
        let (ma, mb) = (
            fs::symlink_metadata(a_root.join(&p)).ok(),
            fs::symlink_metadata(b_root.join(&p)).ok(),
        );
        match (ma, mb) {
            (Some(_), None) => d.removed.push(p),
            (None, Some(_)) => d.added.push(p),
            (Some(ma), Some(mb)) => {
                if ma.is_dir() && mb.is_dir() {
                    if meta_differs(&ma, &mb) {
                        d.modified.push(p.clone());
                    }
                    walk(a_root, b_root, &p, d)?;
                } else if !same_entry(&a_root.join(&p), &ma, &b_root.join(&p), &mb)? {
                    d.modified.push(p);
                }
            }
            (None, None) => {}
        }
    }
    Ok(())
}

fn meta_differs(a: &fs::Metadata, b: &fs::Metadata) -> bool {
    a.mode() != b.mode() || a.uid() != b.uid() || a.gid() != b.gid()
}

fn same_entry(pa: &Path, a: &fs::Metadata, pb: &Path, b: &fs::Metadata) -> Result<bool> {
    if a.file_type() != b.file_type() || meta_differs(a, b) {
        return Ok(false);
    }
    if a.file_type().is_symlink() {
        return Ok(fs::read_link(pa)? == fs::read_link(pb)?);
    }
    if a.is_file() {
        if a.len() != b.len() {
            return Ok(false);
        }
        if a.dev() == b.dev() && a.ino() == b.ino() {
            return Ok(true);
        }
        return same_contents(pa, pb);
    }
    // Device nodes, fifos, sockets: compare what metadata says.
    Ok(a.rdev() == b.rdev())
}

fn same_contents(a: &Path, b: &Path) -> Result<bool> {
    let (mut fa, mut fb) = (fs::File::open(a)?, fs::File::open(b)?);
    let (mut ba, mut bb) = (vec![0u8; 65536], vec![0u8; 65536]);
    loop {
        let n = fa.read(&mut ba)?;
        let m = fb.read(&mut bb[..n.max(1)])?;
        if n == 0 {
            return Ok(m == 0);
        }
        // Read exactly n bytes from b for a fair comparison.
        let mut m = m;
        while m < n {
            let k = fb.read(&mut bb[m..n])?;
            if k == 0 {
                return Ok(false);
            }
            m += k;
        }
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

/// Replays `diff`, taken from `current` (the old `/etc`), onto `target` (the new `/etc`).
pub fn apply(diff: &EtcDiff, current: &Path, target: &Path) -> Result<()> {
    for rel in &diff.removed {
        crate::fsutil::remove_any(&target.join(rel))?;
    }
    // Parents come before children in the walk order, so directories are in place before
    // their contents are copied in.
    for rel in diff.modified.iter().chain(&diff.added) {
        let src = current.join(rel);
        let dst = target.join(rel);
        check_parents(target, rel)?;
        let sm = fs::symlink_metadata(&src)
            .with_context(|| format!("reading /etc/{}", rel.display()))?;
        if let Ok(dm) = fs::symlink_metadata(&dst) {
            if dm.is_dir() && !sm.is_dir() {
                bail!(
                    "/etc/{}: the admin's version is a {} but the new image has a directory there; \
                     move the admin's file away (or make it a directory) and retry",
                    rel.display(),
                    kind(&sm)
                );
            }
            if sm.is_dir() && !dm.is_dir() {
                bail!(
                    "/etc/{}: the admin's version is a directory but the new image has a {} there; \
                     resolve the clash in /etc and retry",
                    rel.display(),
                    kind(&dm)
                );
            }
        }
        if sm.is_dir() {
            if !dst.exists() {
                copy_entry(&src, &dst)?;
            } else {
                copy_meta(&sm, &dst)?;
                if diff.added.contains(rel) {
                    overlay(&src, &dst, rel)?;
                }
            }
        } else {
            crate::fsutil::remove_any(&dst)?;
            copy_entry(&src, &dst)?;
        }
    }
    Ok(())
}

/// Copies an added directory's contents over the same directory in the new image: the
/// admin's entries win, the image's other entries stay.
fn overlay(src: &Path, dst: &Path, rel: &Path) -> Result<()> {
    for e in fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let sm = fs::symlink_metadata(&s)?;
        match fs::symlink_metadata(&d) {
            Ok(dm) if dm.is_dir() && sm.is_dir() => {
                copy_meta(&sm, &d)?;
                overlay(&s, &d, &rel.join(e.file_name()))?;
            }
            Ok(dm) if dm.is_dir() != sm.is_dir() => bail!(
                "/etc/{}: the admin's {} clashes with a {} in the new image; resolve it in /etc and retry",
                rel.join(e.file_name()).display(),
                kind(&sm),
                kind(&dm)
            ),
            _ => {
                crate::fsutil::remove_any(&d)?;
                copy_entry(&s, &d)?;
            }
        }
    }
    Ok(())
}

/// A path whose parent is a non-directory in the new `/etc` cannot be merged.
fn check_parents(target: &Path, rel: &Path) -> Result<()> {
    let mut p = PathBuf::new();
    for c in rel.parent().into_iter().flat_map(|p| p.components()) {
        p.push(c);
        if let Ok(m) = fs::symlink_metadata(target.join(&p)) {
            if !m.is_dir() {
                bail!(
                    "/etc/{}: the new image has a {} at /etc/{} where the admin's configuration has a directory; \
                     resolve the clash in /etc and retry",
                    rel.display(),
                    kind(&m),
                    p.display()
                );
            }
        }
    }
    Ok(())
}

fn kind(m: &fs::Metadata) -> &'static str {
    if m.is_dir() {
        "directory"
    } else if m.file_type().is_symlink() {
        "symlink"
    } else {
        "file"
    }
}

fn copy_entry(src: &Path, dst: &Path) -> Result<()> {
    crate::cmd::run(
        std::process::Command::new("cp")
            .args(["-a", "--no-dereference", "--reflink=auto", "--"])
            .arg(src)
            .arg(dst),
    )
    .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
}

fn copy_meta(m: &fs::Metadata, dst: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(dst, fs::Permissions::from_mode(m.mode() & 0o7777))?;
    nix::unistd::chown(dst, Some(m.uid().into()), Some(m.gid().into()))
        .with_context(|| format!("chown {}", dst.display()))?;
    Ok(())
}

/// Merges: the admin's changes between `old_defaults` and `old_etc` are applied to `new_etc`.
/// A symlink at any of the three (or at their parent, `usr`) is refused: following one would
/// copy the machine's configuration somewhere else, or read someone else's as defaults.
pub fn merge(old_defaults: &Path, old_etc: &Path, new_etc: &Path) -> Result<EtcDiff> {
    for dir in [old_defaults, old_etc, new_etc] {
        for p in [Some(dir), dir.parent()].into_iter().flatten() {
            let m = fs::symlink_metadata(p).with_context(|| format!("reading {}", p.display()))?;
            if !m.is_dir() {
                bail!(
                    "{} is not a directory (a symlink or a file): the /etc merge refuses it; \
                     nothing was changed",
                    p.display()
                );
            }
        }
    }
    let d = diff(old_defaults, old_etc)?;
    apply(&d, old_etc, new_etc)?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path, files: &[(&str, &str)]) {
        fs::create_dir_all(root).unwrap();
        for (p, c) in files {
            let path = root.join(p);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, c).unwrap();
        }
    }

    #[test]
    fn admin_changes_win_and_defaults_follow_the_image() {
        let d = tempfile::tempdir().unwrap();
        let (old_usr, old_etc, new_etc) =
            (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        tree(
            &old_usr,
            &[
                ("motd", "v1"),
                ("keep", "same"),
                ("gone", "x"),
                ("upd", "v1"),
            ],
        );
        tree(
            &old_etc,
            &[
                ("motd", "admin"),
                ("keep", "same"),
                ("upd", "v1"),
                ("new.d/x.conf", "added"),
            ],
        );
        tree(
            &new_etc,
            &[
                ("motd", "v2"),
                ("keep", "same"),
                ("gone", "x"),
                ("upd", "v2"),
                ("new.d/image.conf", "img"),
            ],
        );
        let diff = merge(&old_usr, &old_etc, &new_etc).unwrap();
        assert_eq!(diff.modified, vec![PathBuf::from("motd")]);
        assert_eq!(diff.removed, vec![PathBuf::from("gone")]);
        assert_eq!(diff.added, vec![PathBuf::from("new.d")]);
        assert_eq!(fs::read_to_string(new_etc.join("motd")).unwrap(), "admin");
        assert_eq!(
            fs::read_to_string(new_etc.join("upd")).unwrap(),
            "v2",
            "untouched default follows the image"
        );
        assert_eq!(
            fs::read_to_string(new_etc.join("new.d/x.conf")).unwrap(),
            "added"
        );
        assert_eq!(
            fs::read_to_string(new_etc.join("new.d/image.conf")).unwrap(),
            "img"
        );
        assert!(!new_etc.join("gone").exists());
    }

    #[test]
    fn symlinks_and_modes_count_as_changes() {
        let d = tempfile::tempdir().unwrap();
        let (a, b) = (d.path().join("a"), d.path().join("b"));
        tree(&a, &[("f", "x")]);
        tree(&b, &[("f", "x")]);
        std::os::unix::fs::symlink("one", a.join("l")).unwrap();
        std::os::unix::fs::symlink("two", b.join("l")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(b.join("f"), fs::Permissions::from_mode(0o600)).unwrap();
        let diff = diff(&a, &b).unwrap();
        assert_eq!(diff.modified, vec![PathBuf::from("f"), PathBuf::from("l")]);
    }

    #[test]
    fn file_versus_directory_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        let (a, b, c) = (d.path().join("a"), d.path().join("b"), d.path().join("c"));
        tree(&a, &[("x", "v1")]);
        tree(&b, &[("x", "admin")]);
        tree(&c, &[("x/inner", "v2 made it a directory")]);
        let err = merge(&a, &b, &c).unwrap_err().to_string();
        assert!(err.contains("/etc/x") && err.contains("directory"), "{err}");
        let (a, b, c) = (
            d.path().join("a2"),
            d.path().join("b2"),
            d.path().join("c2"),
        );
        tree(&a, &[]);
        tree(&b, &[("dir/conf", "admin")]);
        tree(&c, &[("dir", "a file in v2")]);
        let err = merge(&a, &b, &c).unwrap_err().to_string();
        assert!(err.contains("/etc/dir"), "{err}");
    }
}
