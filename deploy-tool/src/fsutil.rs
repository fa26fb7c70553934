//! Small filesystem primitives shared by every writer of the sysroot and `/boot`.
//!
//! Everything that changes the boot set goes through these helpers so that each step is
//! durable before the next one starts: data is fsynced before it is renamed into place, and the
//! directory holding the rename is fsynced after it. [`dir_entries`] lists a drop-in
//! directory that may be absent.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{symlink, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `contents` to `path` atomically: a temporary file in the same directory is written,
/// fsynced and renamed over `path`; then the directory is fsynced.
pub fn atomic_write(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = parent_of(path)?;
    let name = file_name(path)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        f.write_all(contents)
            .with_context(|| format!("writing {}", tmp.display()))?;
        f.sync_all()
            .with_context(|| format!("fsync {}", tmp.display()))?;
    }
    fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    fsync_dir(dir)
}

/// Points the symlink `link` at `target` atomically (a new link is renamed over the old one)
/// and durably (the directory is fsynced).
pub fn atomic_symlink(target: &str, link: &Path) -> Result<()> {
    replace_symlink(target, link)?;
    fsync_dir(parent_of(link)?)
}

/// Points the symlink `link` at `target` atomically, without syncing: for writers that sync
/// the whole filesystem next (`syncfs`, as the boot-set writer does).
pub fn replace_symlink(target: &str, link: &Path) -> Result<()> {
    let dir = parent_of(link)?;
    let tmp = dir.join(format!(".{}.tmp", file_name(link)?));
    let _ = fs::remove_file(&tmp);
    symlink(target, &tmp).with_context(|| format!("creating symlink {}", tmp.display()))?;
    fs::rename(&tmp, link)
        .with_context(|| format!("renaming {} to {}", tmp.display(), link.display()))
}

/// fsyncs a directory so that renames and new entries in it are durable.
pub fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync directory {}", dir.display()))
}

/// Copies a regular file and fsyncs the copy. The copy is written under a temporary name and
/// renamed, so a crash never leaves a truncated file under the final name.
pub fn copy_file_durable(src: &Path, dst: &Path) -> Result<()> {
    let dir = parent_of(dst)?;
    let tmp = dir.join(format!(".{}.tmp", file_name(dst)?));
    fs::copy(src, &tmp)
        .with_context(|| format!("copying {} to {}", src.display(), tmp.display()))?;
    File::open(&tmp)
        .and_then(|f| f.sync_all())
        .with_context(|| format!("fsync {}", tmp.display()))?;
    fs::rename(&tmp, dst)
        .with_context(|| format!("renaming {} to {}", tmp.display(), dst.display()))?;
    Ok(())
}

/// Removes `path` whatever it is (file, symlink or directory tree); a missing path is fine.
pub fn remove_any(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("stat {}", path.display())),
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
        }
        Ok(_) => fs::remove_file(path).with_context(|| format!("removing {}", path.display())),
    }
}

/// The SHA-256 (hex) of the files' contents, one after the other.
pub fn sha256_files(paths: &[&Path]) -> Result<String> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    for path in paths {
        let mut f = fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        loop {
            let n = f
                .read(&mut buf)
                .with_context(|| format!("reading {}", path.display()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    Ok(hex::encode(h.finalize()))
}

/// Copies a directory tree preserving modes, ownership, timestamps, symlinks and xattrs
/// (`cp -a`). Used where the copy must not share inodes with its source, e.g. a deployment's
/// writable `/etc`, whose files would otherwise be hardlinks into the repository.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    crate::cmd::run(
        std::process::Command::new("cp")
            .arg("-a")
            .arg("--reflink=auto")
            .arg("--")
            .arg(src)
            .arg(dst),
    )
    .with_context(|| format!("copying {} to {}", src.display(), dst.display()))
}

// FS_IOC_GETFLAGS / FS_IOC_SETFLAGS from <linux/fs.h>, and FS_IMMUTABLE_FL.
nix::ioctl_read!(fs_ioc_getflags, b'f', 1, nix::libc::c_long);
nix::ioctl_write_ptr!(fs_ioc_setflags, b'f', 2, nix::libc::c_long);
const FS_IMMUTABLE_FL: nix::libc::c_long = 0x10;

/// Sets or clears the immutable flag of a directory, as OSTree does on deployment roots so
/// that nothing (not even root, by accident) adds or removes entries at the top of a
/// deployment. Filesystems without the flag (tmpfs) are left alone.
///
/// The directory is opened without following a symlink (`O_NOFOLLOW`): a symlink left in a
/// deployment's place must never pass the change on to whatever it points to.
pub fn set_immutable(path: &Path, immutable: bool) -> Result<()> {
    use std::os::fd::AsRawFd;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECTORY | nix::libc::O_NOFOLLOW)
        .open(path)
        .with_context(|| {
            format!(
                "opening {} as a directory (a symlink is not followed)",
                path.display()
            )
        })?;
    let mut flags: nix::libc::c_long = 0;
    // SAFETY: both ioctls take a pointer to a long that lives across the call; fd is open.
    #[allow(unsafe_code)]
    let got = unsafe { fs_ioc_getflags(f.as_raw_fd(), &mut flags) };
    match got {
        Ok(_) => {}
        Err(
            nix::errno::Errno::ENOTTY | nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL,
        ) => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("reading flags of {}", path.display())),
    }
    let new = if immutable {
        flags | FS_IMMUTABLE_FL
    } else {
        flags & !FS_IMMUTABLE_FL
    };
    if new != flags {
        #[allow(unsafe_code)]
        // SAFETY: as above.
        unsafe { fs_ioc_setflags(f.as_raw_fd(), &new) }
            .with_context(|| format!("setting flags of {}", path.display()))?;
    }
    Ok(())
}

/// Removes a deployment-like tree whose root may be immutable. Only a real directory is
/// unlocked and removed as a tree (the rule of [`stratum_prepare_root::DeploymentDir`]); a
/// symlink in its place is removed as a link, and what it points to is left as it is.
pub fn remove_tree_force(path: &Path) -> Result<()> {
    let kind = stratum_prepare_root::deployment_dir(path)
        .with_context(|| format!("stat {}", path.display()))?;
    if kind == stratum_prepare_root::DeploymentDir::Directory {
        set_immutable(path, false)?;
    }
    remove_any(path)
}

/// The names and paths of the entries of `dir`, unsorted; none when it does not exist (a
/// directory of drop-ins an image or an administrator need not create).
pub fn dir_entries(dir: &Path) -> Result<Vec<(String, PathBuf)>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut out = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        out.push((e.file_name().to_string_lossy().into_owned(), e.path()));
    }
    Ok(out)
}

fn parent_of(path: &Path) -> Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .or(Some(Path::new(".")))
        .with_context(|| format!("{} has no parent directory", path.display()))
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .with_context(|| format!("{} has no file name", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        atomic_write(&p, b"one", 0o644).unwrap();
        atomic_write(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("f")]);
    }

    #[test]
    fn remove_tree_force_removes_a_symlink_not_its_target() {
        let d = tempfile::tempdir().unwrap();
        let real = d.path().join("real");
        fs::create_dir(&real).unwrap();
        fs::write(real.join("f"), "x").unwrap();
        let link = d.path().join("link");
        symlink("real", &link).unwrap();
        remove_tree_force(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert_eq!(fs::read(real.join("f")).unwrap(), b"x");
        symlink("real", &link).unwrap();
        let e = set_immutable(&link, false).unwrap_err();
        assert!(format!("{e:#}").contains("not followed"), "{e:#}");
        remove_tree_force(&real).unwrap();
        assert!(fs::symlink_metadata(&real).is_err());
    }

    #[test]
    fn atomic_symlink_swaps() {
        let d = tempfile::tempdir().unwrap();
        let l = d.path().join("loader");
        atomic_symlink("loader.0", &l).unwrap();
        atomic_symlink("loader.1", &l).unwrap();
        assert_eq!(fs::read_link(&l).unwrap(), Path::new("loader.1"));
    }
}
