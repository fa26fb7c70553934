//! Resolving paths inside an OS root directory that is not the running system.
//!
//! A Debian root with merged `/usr` has `lib -> usr/lib`, and its absolute symlinks (for example
//! `/lib/modules/<kver>/build -> /usr/src/...`) point into *that* root, never the host's `/`.
//! [`resolve`] follows symlinks component by component as if `root` were `/`.

use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Symlinks followed before giving up, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// Resolve `path` (absolute or relative, both taken from the root) inside `root`, following
/// symlinks with `root` as their `/`. The result need not exist: resolution stops following
/// links at the first missing component and appends the rest unchanged.
pub fn resolve(root: &Path, path: &Path) -> Result<PathBuf> {
    // Components still to walk, in reverse so `pop` yields the next one.
    let mut todo: Vec<std::ffi::OsString> = Vec::new();
    push_components(&mut todo, path);
    let mut cur: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        if c == ".." {
            cur.pop(); // `..` at the root stays at the root, as in the kernel
            continue;
        }
        cur.push(c);
        let host = join(root, &cur);
        let meta = match std::fs::symlink_metadata(&host) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Nothing more to follow: keep the remaining components literally.
                while let Some(rest) = todo.pop() {
                    cur.push(rest);
                }
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("inspecting {}", host.display())),
        };
        if meta.file_type().is_symlink() {
            links += 1;
            if links > MAX_SYMLINKS {
                bail!(
                    "too many levels of symbolic links resolving {} in {}",
                    path.display(),
                    root.display()
                );
            }
            let target = std::fs::read_link(&host)
                .with_context(|| format!("reading symlink {}", host.display()))?;
            cur.pop();
            if target.is_absolute() {
                cur.clear();
            }
            push_components(&mut todo, &target);
        }
    }
    Ok(join(root, &cur))
}

fn push_components(todo: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

fn join(root: &Path, parts: &[std::ffi::OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    p.extend(parts);
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn follows_links_relative_to_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        std::fs::create_dir_all(root.join("usr/lib/modules/6.1")).unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        symlink("/usr/lib", root.join("abslib")).unwrap();
        symlink("../../../../../..", root.join("usr/lib/up")).unwrap();
        let want = root.join("usr/lib/modules/6.1");
        assert_eq!(resolve(root, Path::new("/lib/modules/6.1")).unwrap(), want);
        assert_eq!(
            resolve(root, Path::new("abslib/modules/6.1")).unwrap(),
            want
        );
        // `..` never escapes the root.
        assert_eq!(
            resolve(root, Path::new("/usr/lib/up/usr")).unwrap(),
            root.join("usr")
        );
        // Missing tails are kept as they are.
        assert_eq!(
            resolve(root, Path::new("/lib/missing/x")).unwrap(),
            root.join("usr/lib/missing/x")
        );
    }

    #[test]
    fn symlink_loops_are_an_error() {
        let t = tempfile::tempdir().unwrap();
        symlink("b", t.path().join("a")).unwrap();
        symlink("a", t.path().join("b")).unwrap();
        assert!(resolve(t.path(), Path::new("/a/x")).is_err());
    }
}
