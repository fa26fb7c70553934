//! Directory handles over trees that are not trusted: a package's unpacked files, a tree
//! maintainer scripts changed.
//!
//! Every path is resolved with `openat2(2)` and `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`, relative to a handle on the tree's root: a `..`, an absolute path
//! or a symlink anywhere on the way is refused by the kernel, so no name a package chose can
//! lead outside the tree, and no symlink it shipped can stand where a directory is needed.
//! Changes go through a directory handle and one final name (`renameat`, `mkdirat`,
//! `openat` with `O_NOFOLLOW`), never through a path the kernel would walk again.
//!
//! Nothing runs in the tree while these functions walk it (scripts run before or after, in
//! the sandbox), so a check and the change that follows it see the same tree.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags, ResolveFlags};
use rustix::io::Errno;

/// How every path below a root is resolved.
const RESOLVE: ResolveFlags = ResolveFlags::BENEATH
    .union(ResolveFlags::NO_SYMLINKS)
    .union(ResolveFlags::NO_MAGICLINKS);

/// What is at a name, without following it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Missing,
    Dir,
    File,
    Symlink,
    /// A device, FIFO or socket.
    Other,
}

/// Opens `path` (an absolute or relative path the caller trusts) as the root of a tree.
pub fn open_root(path: &Path) -> Result<OwnedFd> {
    rfs::open(
        path,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .with_context(|| format!("opening {}", path.display()))
}

fn explain(e: Errno, rel: &str) -> anyhow::Error {
    match e {
        Errno::LOOP => {
            anyhow::anyhow!("/{rel} leads through a symlink where a directory is needed")
        }
        Errno::XDEV => anyhow::anyhow!("/{rel} leads outside the tree"),
        Errno::NOTDIR => anyhow::anyhow!("/{rel} leads through a file where a directory is needed"),
        e => anyhow::anyhow!("/{rel}: {e}"),
    }
}

/// Opens the directory `rel` below `root`. `Ok(None)` when it does not exist; an error when
/// it, or any directory on the way, is a symlink or not a directory.
pub fn open_dir(root: BorrowedFd<'_>, rel: &str) -> Result<Option<OwnedFd>> {
    let rel = rel.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    match rfs::openat2(
        root,
        rel,
        // No O_NOFOLLOW: with it a final symlink reads as ENOTDIR; RESOLVE_NO_SYMLINKS
        // refuses it as ELOOP, which says what it is.
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    ) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(explain(e, rel)),
    }
}

/// Opens the directory `rel` below `root`, creating what is missing (mode 0755). A symlink or
/// file on the way is an error, never followed.
pub fn create_dir_all(root: BorrowedFd<'_>, rel: &str) -> Result<OwnedFd> {
    let mut cur = rfs::openat(
        root,
        ".",
        OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .context("opening the tree")?;
    let mut walked = String::new();
    for comp in rel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        check_name(comp)?;
        if !walked.is_empty() {
            walked.push('/');
        }
        walked.push_str(comp);
        match rfs::mkdirat(&cur, comp, Mode::from_raw_mode(0o755)) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(explain(e, &walked)),
        }
        cur = open_dir(cur.as_fd(), comp)
            .and_then(|d| d.with_context(|| format!("/{walked} disappeared")))
            .map_err(|e| anyhow::anyhow!("{e}").context(format!("creating /{walked}")))?;
    }
    Ok(cur)
}

/// A name of one directory entry: not empty, no `/`, not `.` or `..`.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        bail!("{name:?} is not a file name");
    }
    Ok(())
}

/// What `name` in `dir` is, without following a symlink.
pub fn kind(dir: BorrowedFd<'_>, name: &str) -> Result<Kind> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(match rfs::FileType::from_raw_mode(st.st_mode) {
            rfs::FileType::Directory => Kind::Dir,
            rfs::FileType::RegularFile => Kind::File,
            rfs::FileType::Symlink => Kind::Symlink,
            _ => Kind::Other,
        }),
        Err(Errno::NOENT) => Ok(Kind::Missing),
        Err(e) => Err(anyhow::anyhow!("{name}: {e}")),
    }
}

/// What is at `rel` below `root`; the directories on the way must be real directories.
pub fn kind_at(root: BorrowedFd<'_>, rel: &str) -> Result<Kind> {
    let (parent, name) = split(rel);
    match open_dir(root, parent)? {
        Some(dir) => kind(dir.as_fd(), name),
        None => Ok(Kind::Missing),
    }
}

/// `(parent, last name)` of a relative path.
pub fn split(rel: &str) -> (&str, &str) {
    let rel = rel.trim_matches('/');
    match rel.rsplit_once('/') {
        Some((p, n)) => (p, n),
        None => ("", rel),
    }
}

/// The names in `dir`, sorted, without `.` and `..`.
pub fn names(dir: BorrowedFd<'_>) -> Result<Vec<String>> {
    let fd = rfs::openat(dir, ".", OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
        .context("opening a directory")?;
    let mut out = Vec::new();
    for e in rfs::Dir::read_from(&fd).context("reading a directory")? {
        let e = e.context("reading a directory")?;
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        match std::str::from_utf8(name) {
            Ok(n) => out.push(n.to_string()),
            Err(_) => bail!(
                "{:?} is not a UTF-8 file name",
                String::from_utf8_lossy(name)
            ),
        }
    }
    out.sort();
    Ok(out)
}

/// Renames `from` in `from_dir` to `to` in `to_dir`; never replaces what is there.
pub fn rename_new(
    from_dir: BorrowedFd<'_>,
    from: &str,
    to_dir: BorrowedFd<'_>,
    to: &str,
) -> Result<()> {
    rfs::renameat_with(from_dir, from, to_dir, to, RenameFlags::NOREPLACE)
        .with_context(|| format!("moving {from} to {to}"))
}

/// Removes the empty directory `name` in `dir`.
pub fn remove_dir(dir: BorrowedFd<'_>, name: &str) -> Result<()> {
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).with_context(|| format!("removing {name}"))
}

/// Opens the regular file `rel` below `root` for reading; a symlink or anything but a
/// regular file is an error.
pub fn open_file(root: BorrowedFd<'_>, rel: &str) -> Result<File> {
    let rel = rel.trim_start_matches('/');
    let fd = rfs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOCTTY | OFlags::NONBLOCK,
        Mode::empty(),
        RESOLVE,
    )
    .map_err(|e| explain(e, rel))?;
    let st = rfs::fstat(&fd).with_context(|| format!("/{rel}"))?;
    if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
        bail!("/{rel} is not a regular file");
    }
    Ok(File::from(fd))
}

/// Reads the regular file `rel` below `root`, up to `limit` bytes (more is an error).
pub fn read(root: BorrowedFd<'_>, rel: &str, limit: u64) -> Result<Vec<u8>> {
    let mut f = open_file(root, rel)?;
    let mut out = Vec::new();
    (&mut f)
        .take(limit + 1)
        .read_to_end(&mut out)
        .with_context(|| format!("reading /{rel}"))?;
    if out.len() as u64 > limit {
        bail!("/{rel} is larger than {limit} bytes");
    }
    Ok(out)
}

/// Creates the file `name` in `dir` (which must not exist) with `data` and `mode`.
pub fn write_new(dir: BorrowedFd<'_>, name: &str, data: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    check_name(name)?;
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .with_context(|| format!("creating {name}"))?;
    rfs::fchmod(&fd, Mode::from_raw_mode(mode)).with_context(|| format!("chmod {name}"))?;
    File::from(fd)
        .write_all(data)
        .with_context(|| format!("writing {name}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree() -> (tempfile::TempDir, tempfile::TempDir, OwnedFd) {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        fs::create_dir_all(t.path().join("usr/lib")).unwrap();
        symlink(outside.path(), t.path().join("usr/bin")).unwrap();
        symlink("lib", t.path().join("usr/rel")).unwrap();
        fs::write(t.path().join("usr/lib/f"), "x").unwrap();
        let fd = open_root(t.path()).unwrap();
        (t, outside, fd)
    }

    #[test]
    fn symlinks_and_dotdot_are_refused() {
        let (_t, outside, root) = tree();
        let r = root.as_fd();
        assert!(open_dir(r, "usr/lib").unwrap().is_some());
        assert!(open_dir(r, "usr/none").unwrap().is_none());
        let e = open_dir(r, "usr/bin").unwrap_err().to_string();
        assert!(e.contains("symlink"), "{e}");
        // Even a symlink that stays inside the tree is refused.
        assert!(open_dir(r, "usr/rel").is_err());
        assert!(open_dir(r, "usr/../..").is_err());
        assert!(open_file(r, "usr/lib/../../etc/passwd").is_err());
        let e = create_dir_all(r, "usr/bin/info").unwrap_err();
        assert!(format!("{e:#}").contains("symlink"), "{e:#}");
        assert!(fs::read_dir(outside.path()).unwrap().next().is_none());
        assert!(create_dir_all(r, "../x").is_err());
    }

    #[test]
    fn creates_renames_and_reads_below_the_root() {
        let (t, _o, root) = tree();
        let r = root.as_fd();
        let info = create_dir_all(r, "usr/lib/sysimage/dpkg/info").unwrap();
        write_new(info.as_fd(), "p.list", b"/.\n", 0o644).unwrap();
        assert!(write_new(info.as_fd(), "p.list", b"again", 0o644).is_err());
        assert!(write_new(info.as_fd(), "../p", b"x", 0o644).is_err());
        assert_eq!(
            read(r, "usr/lib/sysimage/dpkg/info/p.list", 10).unwrap(),
            b"/.\n"
        );
        assert!(read(r, "usr/lib/sysimage/dpkg/info/p.list", 2).is_err());
        assert_eq!(kind_at(r, "usr/bin").unwrap(), Kind::Symlink);
        assert_eq!(kind_at(r, "usr/lib/f").unwrap(), Kind::File);
        assert_eq!(kind_at(r, "usr/x/y").unwrap(), Kind::Missing);
        let lib = open_dir(r, "usr/lib").unwrap().unwrap();
        let usr = open_dir(r, "usr").unwrap().unwrap();
        rename_new(lib.as_fd(), "f", usr.as_fd(), "g").unwrap();
        assert!(t.path().join("usr/g").is_file());
        assert!(rename_new(usr.as_fd(), "g", usr.as_fd(), "lib").is_err());
        assert_eq!(names(usr.as_fd()).unwrap(), ["bin", "g", "lib", "rel"]);
    }
}
