//! `switch_root`, as busybox does it: free the initramfs (it is RAM), move the new root onto
//! `/`, chroot into it and exec the real init.

use crate::error::BootError;
use nix::sys::statfs::{statfs, FsType, TMPFS_MAGIC};
use nix::unistd::{chdir, chroot, execv};
use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// `RAMFS_MAGIC` from `<linux/magic.h>` (the initramfs is ramfs or tmpfs).
const RAMFS_MAGIC: FsType = FsType(0x8584_58f6);

/// Whether `/` is an initramfs: ramfs/tmpfs with an `/init`. Deleting `/` anywhere else would
/// destroy a real system, so [`switch_root`] refuses.
pub fn is_initramfs_root() -> bool {
    let fs_ok = statfs("/").is_ok_and(|s| {
        let t = s.filesystem_type();
        t == RAMFS_MAGIC || t == TMPFS_MAGIC
    });
    fs_ok && Path::new("/init").exists()
}

/// Deletes the contents of `dir` recursively, never leaving device `dev` (so mount points
/// such as `/newroot`, `/proc` or a bind of the root device are not entered) and never
/// touching `skip`. Returns how many entries could not be removed.
pub fn remove_tree_same_dev(dir: &Path, dev: u64, skip: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 1;
    };
    let mut failed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        if path == skip {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            failed += 1;
            continue;
        };
        if meta.dev() != dev {
            continue; // A mount point: not ours to free.
        }
        if meta.is_dir() {
            let before = failed;
            failed += remove_tree_same_dev(&path, dev, skip);
            if failed == before && std::fs::remove_dir(&path).is_err() {
                failed += 1;
            }
        } else if std::fs::remove_file(&path).is_err() {
            failed += 1;
        }
    }
    failed
}

/// Frees the initramfs, makes `newroot` the root and execs init (the first of `inits` that
/// can be executed), with `args` after argv[0]. Only returns on failure.
pub fn switch_root(
    newroot: &Path,
    inits: &[String],
    args: &[OsString],
) -> Result<Infallible, BootError> {
    if !is_initramfs_root() {
        return Err(BootError::Refused(
            "not switching root: / is not an initramfs (ramfs/tmpfs with /init)".into(),
        ));
    }
    let root_dev = std::fs::symlink_metadata("/")
        .map_err(|e| BootError::io("stat", "/", e))?
        .dev();
    let left = remove_tree_same_dev(Path::new("/"), root_dev, newroot);
    if left > 0 {
        eprintln!("stratum-prepare-root: warning: {left} initramfs entries could not be freed");
    }
    chdir(newroot).map_err(|e| BootError::sys("chdir", newroot, e))?;
    nix::mount::mount(
        Some("."),
        "/",
        None::<&str>,
        nix::mount::MsFlags::MS_MOVE,
        None::<&str>,
    )
    .map_err(|e| BootError::sys("move of the new root onto /", newroot, e))?;
    chroot(".").map_err(|e| BootError::sys("chroot", newroot, e))?;
    chdir("/").map_err(|e| BootError::sys("chdir", "/", e))?;

    let mut tried = Vec::new();
    for init in inits {
        let Ok(path) = CString::new(init.as_bytes()) else {
            continue;
        };
        let mut argv = vec![path.clone()];
        argv.extend(args.iter().filter_map(|a| CString::new(a.as_bytes()).ok()));
        // execv only returns on failure.
        let err = match execv(&path, &argv) {
            Err(e) => e,
            Ok(never) => match never {},
        };
        tried.push(format!("{init}: {}", err.desc()));
    }
    Err(BootError::NoInit { tried })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_tree_but_skips_newroot() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path().join("root");
        std::fs::create_dir_all(r.join("etc/stratum")).unwrap();
        std::fs::create_dir_all(r.join("newroot/usr")).unwrap();
        std::fs::write(r.join("init"), "x").unwrap();
        std::fs::write(r.join("etc/stratum/modules.load"), "").unwrap();
        std::fs::write(r.join("newroot/usr/keep"), "").unwrap();
        std::os::unix::fs::symlink("/etc", r.join("link")).unwrap();
        let dev = std::fs::metadata(&r).unwrap().dev();
        assert_eq!(remove_tree_same_dev(&r, dev, &r.join("newroot")), 0);
        let left: Vec<_> = std::fs::read_dir(&r)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, vec![OsString::from("newroot")]);
        assert!(r.join("newroot/usr/keep").exists());
        // A different device id is treated as a mount point and left alone.
        std::fs::write(r.join("other"), "").unwrap();
        assert_eq!(
            remove_tree_same_dev(&r, dev + 1, Path::new("/nonexistent")),
            0
        );
        assert!(r.join("other").exists());
    }

    #[test]
    fn refuses_outside_initramfs() {
        // The test runner's / is not an initramfs with /init (or if it is, skip).
        if !is_initramfs_root() {
            let e = switch_root(Path::new("/nonexistent"), &[], &[]).unwrap_err();
            assert!(matches!(e, BootError::Refused(_)));
        }
    }
}
