//! Resolving the `ostree=` kernel argument strictly inside `<sysroot>/ostree/deploy`.
//!
//! The argument names a bootlink chain (`/ostree/boot.0 -> boot.0.0`,
//! `boot.0.0/<os>/<bootcsum>/0 -> ../../../deploy/<os>/deploy/<csum>.<serial>`). Symlinks are
//! resolved here by hand, relative to the sysroot, as a `chroot` would: absolute targets start
//! again at the sysroot, `..` stops at the sysroot, and the number of hops is bounded. Nothing
//! is ever looked up on the initramfs's own `/`. The result must be a real directory exactly at
//! `ostree/deploy/<stateroot>/deploy/<csum>.<serial>`.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlink hops allowed while resolving (the kernel's own limit is 40).
pub const MAX_SYMLINK_HOPS: usize = 40;

/// A deployment chosen by `ostree=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The OS name (`ostree/deploy/<stateroot>`).
    pub stateroot: String,
    /// Directory name, `<checksum>.<serial>`.
    pub name: String,
    /// Commit checksum part of the name.
    pub checksum: String,
    /// Deployment serial part of the name.
    pub serial: u32,
    /// `ostree/deploy/<stateroot>/deploy/<name>`, relative to the sysroot.
    pub relpath: PathBuf,
}

/// Why `ostree=` could not be resolved to a deployment. Paths are relative to the sysroot.
#[derive(Debug)]
pub enum ConfineError {
    /// The argument is empty.
    Empty,
    /// A path component does not exist.
    NotFound {
        /// The missing path.
        path: PathBuf,
    },
    /// A component that must be a directory is not one.
    NotADirectory {
        /// The offending path.
        path: PathBuf,
    },
    /// More than [`MAX_SYMLINK_HOPS`] symlinks (probably a loop).
    TooManyLinks {
        /// The path being resolved when the limit hit.
        path: PathBuf,
    },
    /// The chain ends somewhere other than `ostree/deploy/<stateroot>/deploy/<name>`.
    OutsideDeployments {
        /// Where it ended up.
        path: PathBuf,
    },
    /// The deployment directory name is not `<checksum>.<serial>`.
    BadName {
        /// The directory name.
        name: String,
    },
    /// Any other I/O error while inspecting `path`.
    Io {
        /// The path being inspected.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
}

fn show(p: &Path) -> String {
    format!("/{}", p.display())
}

impl fmt::Display for ConfineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfineError::Empty => write!(f, "the ostree= argument is empty"),
            ConfineError::NotFound { path } => write!(f, "{} does not exist", show(path)),
            ConfineError::NotADirectory { path } => {
                write!(f, "{} is not a directory", show(path))
            }
            ConfineError::TooManyLinks { path } => write!(
                f,
                "too many levels of symbolic links (more than {MAX_SYMLINK_HOPS}) at {}",
                show(path)
            ),
            ConfineError::OutsideDeployments { path } => write!(
                f,
                "resolves to {}, which is not a deployment \
                 (expected /ostree/deploy/<stateroot>/deploy/<checksum>.<serial>)",
                show(path)
            ),
            ConfineError::BadName { name } => write!(
                f,
                "deployment directory name {name:?} is not <checksum>.<serial>"
            ),
            ConfineError::Io { path, source } => write!(f, "{}: {source}", show(path)),
        }
    }
}

impl std::error::Error for ConfineError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfineError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Resolves `path` (absolute or not, both taken relative to `sysroot`) to a real path below
/// `sysroot`, following symlinks chroot-style. Returns the path relative to `sysroot`.
pub fn resolve_in_root(sysroot: &Path, path: &Path) -> Result<PathBuf, ConfineError> {
    let mut pending: VecDeque<OsString> = VecDeque::new();
    push_front(&mut pending, path);
    let mut stack: Vec<OsString> = Vec::new();
    let mut hops = 0;
    while let Some(comp) = pending.pop_front() {
        if comp == ".." {
            stack.pop(); // At the sysroot already: stay there, like chroot.
            continue;
        }
        let rel: PathBuf = stack.iter().chain(std::iter::once(&comp)).collect();
        let meta = match std::fs::symlink_metadata(sysroot.join(&rel)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(ConfineError::NotFound { path: rel })
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => {
                let parent: PathBuf = stack.iter().collect();
                return Err(ConfineError::NotADirectory { path: parent });
            }
            Err(source) => return Err(ConfineError::Io { path: rel, source }),
        };
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_SYMLINK_HOPS {
                return Err(ConfineError::TooManyLinks { path: rel });
            }
            let target =
                std::fs::read_link(sysroot.join(&rel)).map_err(|source| ConfineError::Io {
                    path: rel.clone(),
                    source,
                })?;
            if target.is_absolute() {
                stack.clear();
            }
            push_front(&mut pending, &target);
        } else {
            if !pending.is_empty() && !meta.is_dir() {
                return Err(ConfineError::NotADirectory { path: rel });
            }
            stack.push(comp);
        }
    }
    Ok(stack.iter().collect())
}

/// Queues the normal and `..` components of `p` in front of what is still to resolve.
fn push_front(pending: &mut VecDeque<OsString>, p: &Path) {
    let comps: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect();
    for c in comps.into_iter().rev() {
        pending.push_front(c);
    }
}

/// Resolves the `ostree=` value inside `sysroot` to a deployment directory.
pub fn resolve_deployment(sysroot: &Path, ostree_arg: &str) -> Result<Deployment, ConfineError> {
    if ostree_arg.trim().is_empty() {
        return Err(ConfineError::Empty);
    }
    let rel = resolve_in_root(sysroot, Path::new(ostree_arg))?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    let [first, second, stateroot, fourth, name] = parts.as_slice() else {
        return Err(ConfineError::OutsideDeployments { path: rel });
    };
    if (*first, *second, *fourth) != ("ostree", "deploy", "deploy")
        || parts.len() != rel.iter().count()
    {
        return Err(ConfineError::OutsideDeployments { path: rel });
    }
    let kind = crate::deployment_dir(&sysroot.join(&rel)).map_err(|source| ConfineError::Io {
        path: rel.clone(),
        source,
    })?;
    if kind != crate::DeploymentDir::Directory {
        return Err(ConfineError::NotADirectory { path: rel });
    }
    let (checksum, serial) = crate::parse_deployment_name(name)
        .map(|(c, s)| (c.to_string(), s))
        .ok_or_else(|| ConfineError::BadName {
            name: name.to_string(),
        })?;
    Ok(Deployment {
        stateroot: stateroot.to_string(),
        name: name.to_string(),
        checksum,
        serial,
        relpath: rel,
    })
}

/// Lists `ostree/deploy/*/deploy/*` directories below `sysroot` as `<stateroot>/<name>`, sorted;
/// used in failure reports. Errors are treated as "nothing there".
pub fn list_deployments(sysroot: &Path) -> Vec<String> {
    let dirs = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        v.sort();
        v
    };
    let base = sysroot.join("ostree/deploy");
    let mut out = Vec::new();
    for os in dirs(&base) {
        for d in dirs(&base.join(&os).join("deploy")) {
            out.push(format!("{os}/{d}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    const CSUM: &str = "5f2b3c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

    /// A sysroot laid out like `ostree admin deploy` leaves it.
    fn sysroot() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        std::fs::create_dir_all(r.join(format!("ostree/deploy/fedora/deploy/{CSUM}.0/usr")))
            .unwrap();
        std::fs::create_dir_all(r.join("ostree/deploy/fedora/var")).unwrap();
        std::fs::create_dir_all(r.join("ostree/boot.0.0/fedora/bcsum")).unwrap();
        symlink("boot.0.0", r.join("ostree/boot.0")).unwrap();
        let target = format!("../../../deploy/fedora/deploy/{CSUM}.0");
        symlink(target, r.join("ostree/boot.0.0/fedora/bcsum/0")).unwrap();
        d
    }

    fn link(root: &Path, name: &str, target: &str) {
        symlink(target, root.join("ostree/boot.0.0/fedora/bcsum").join(name)).unwrap();
    }

    #[test]
    fn valid_chain() {
        let d = sysroot();
        let dep = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/0").unwrap();
        assert_eq!(dep.stateroot, "fedora");
        assert_eq!(dep.name, format!("{CSUM}.0"));
        assert_eq!(dep.checksum, CSUM);
        assert_eq!(dep.serial, 0);
        assert_eq!(
            dep.relpath,
            PathBuf::from(format!("ostree/deploy/fedora/deploy/{CSUM}.0"))
        );
        // The deployment directory itself, and a trailing slash, are fine too.
        let direct = format!("/ostree/deploy/fedora/deploy/{CSUM}.0/");
        assert_eq!(resolve_deployment(d.path(), &direct).unwrap(), dep);
    }

    #[test]
    fn absolute_link_stays_in_sysroot() {
        let d = sysroot();
        link(
            d.path(),
            "1",
            &format!("/ostree/deploy/fedora/deploy/{CSUM}.0"),
        );
        let dep = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/1").unwrap();
        assert_eq!(dep.serial, 0);
        // An absolute link to the host's /etc lands on <sysroot>/etc, which does not exist.
        link(d.path(), "2", "/etc");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/2").unwrap_err();
        assert!(
            matches!(e, ConfineError::NotFound { ref path } if path == Path::new("etc")),
            "{e}"
        );
    }

    #[test]
    fn dotdot_cannot_escape() {
        let d = sysroot();
        let outside = d.path().parent().unwrap();
        let depth = d.path().components().count();
        let up = "../".repeat(depth + 5);
        link(
            d.path(),
            "3",
            &format!("{up}ostree/deploy/fedora/deploy/{CSUM}.0"),
        );
        // Clamped at the sysroot: lands on the real deployment, not on the host.
        assert!(resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/3").is_ok());
        link(d.path(), "4", &format!("{up}{}", outside.display()));
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/4").unwrap_err();
        assert!(matches!(e, ConfineError::NotFound { .. }), "{e}");
        link(d.path(), "5", "../../../../..");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/5").unwrap_err();
        assert!(
            matches!(e, ConfineError::OutsideDeployments { ref path } if path == Path::new(""))
        );
        assert!(e.to_string().contains("resolves to /,"), "{e}");
    }

    #[test]
    fn loops() {
        let d = sysroot();
        link(d.path(), "a", "b");
        link(d.path(), "b", "a");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/a").unwrap_err();
        assert!(matches!(e, ConfineError::TooManyLinks { .. }), "{e}");
        link(d.path(), "self", "/ostree/boot.0/fedora/bcsum/self");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/self").unwrap_err();
        assert!(matches!(e, ConfineError::TooManyLinks { .. }), "{e}");
    }

    #[test]
    fn missing_target() {
        let d = sysroot();
        link(
            d.path(),
            "7",
            &format!("../../../deploy/fedora/deploy/{CSUM}.7"),
        );
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/7").unwrap_err();
        assert!(matches!(e, ConfineError::NotFound { .. }), "{e}");
        assert!(
            e.to_string().contains(&format!("{CSUM}.7 does not exist")),
            "{e}"
        );
        let e = resolve_deployment(d.path(), "/ostree/boot.9/fedora/bcsum/0").unwrap_err();
        assert!(matches!(e, ConfineError::NotFound { .. }), "{e}");
        assert!(matches!(
            resolve_deployment(d.path(), " "),
            Err(ConfineError::Empty)
        ));
    }

    #[test]
    fn file_not_dir() {
        let d = sysroot();
        let f = d
            .path()
            .join(format!("ostree/deploy/fedora/deploy/{CSUM}.1"));
        std::fs::write(f, "x").unwrap();
        link(
            d.path(),
            "f",
            &format!("../../../deploy/fedora/deploy/{CSUM}.1"),
        );
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/f").unwrap_err();
        assert!(matches!(e, ConfineError::NotADirectory { .. }), "{e}");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/f/usr").unwrap_err();
        assert!(matches!(e, ConfineError::NotADirectory { .. }), "{e}");
    }

    #[test]
    fn wrong_place_or_name() {
        let d = sysroot();
        link(d.path(), "var", "../../../deploy/fedora/var");
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/var").unwrap_err();
        assert!(matches!(e, ConfineError::OutsideDeployments { .. }), "{e}");
        link(
            d.path(),
            "usr",
            &format!("../../../deploy/fedora/deploy/{CSUM}.0/usr"),
        );
        let e = resolve_deployment(d.path(), "/ostree/boot.0/fedora/bcsum/usr").unwrap_err();
        assert!(matches!(e, ConfineError::OutsideDeployments { .. }), "{e}");
        std::fs::create_dir(d.path().join("ostree/deploy/fedora/deploy/notacsum")).unwrap();
        let e = resolve_deployment(d.path(), "/ostree/deploy/fedora/deploy/notacsum").unwrap_err();
        assert!(matches!(e, ConfineError::BadName { .. }), "{e}");
    }

    #[test]
    fn lists_deployments() {
        let d = sysroot();
        assert_eq!(list_deployments(d.path()), vec![format!("fedora/{CSUM}.0")]);
        assert!(list_deployments(&d.path().join("nope")).is_empty());
    }
}
