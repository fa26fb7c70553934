//! The image's kernel is the image's: layered packages and their maintainer scripts may not
//! add, change or remove a kernel or an initramfs.
//!
//! The new deployment's boot entry boots `usr/lib/modules/<kver>/vmlinuz` and the initramfs
//! beside it (or one Stratum regenerates). A package that ships one, or a `postinst` that
//! replaces one, would change what boots behind the administrator's back; only the
//! kernel-override verb may do that. The tree being assembled is a hardlink checkout and
//! every change a script makes arrives by rename, so a file's identity (device, inode, size,
//! mode) says whether it is still the image's, without reading it.

use std::collections::BTreeMap;
use std::os::fd::AsFd;
use std::path::Path;

use anyhow::{bail, Context, Result};
use rustix::fs::AtFlags;

use crate::beneath;

/// The boot files of a tree, by path, with their identity.
#[derive(Debug, PartialEq, Eq)]
pub struct BootFiles(BTreeMap<String, (u64, u64, u64, u32)>);

/// Whether a file name in `usr/lib/modules/<kver>/` or `boot/` is a kernel, an initramfs or
/// a devicetree.
fn is_boot_file(name: &str) -> bool {
    [
        "vmlinuz",
        "vmlinux",
        "initramfs",
        "initrd",
        "devicetree",
        "dtb",
    ]
    .iter()
    .any(|p| name.starts_with(p))
}

impl BootFiles {
    /// The boot files of the tree at `root`.
    pub fn of(root: &Path) -> Result<BootFiles> {
        let fd = beneath::open_root(root)?;
        let mut out = BTreeMap::new();
        let mut dirs = vec!["boot".to_string()];
        if let Some(m) = beneath::open_dir(fd.as_fd(), "usr/lib/modules")? {
            dirs.extend(
                beneath::names(m.as_fd())?
                    .into_iter()
                    .map(|k| format!("usr/lib/modules/{k}")),
            );
        }
        for d in dirs {
            let Some(dir) = beneath::open_dir(fd.as_fd(), &d).with_context(|| format!("/{d}"))?
            else {
                continue;
            };
            for name in beneath::names(dir.as_fd())?
                .into_iter()
                .filter(|n| is_boot_file(n))
            {
                let st = rustix::fs::statat(&dir, name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                    .with_context(|| format!("/{d}/{name}"))?;
                out.insert(
                    format!("{d}/{name}"),
                    (st.st_dev, st.st_ino, st.st_size as u64, st.st_mode),
                );
            }
        }
        Ok(BootFiles(out))
    }

    /// Refuses the tree at `root` when its boot files are not these; `who` names what ran.
    pub fn check(&self, root: &Path, who: &str) -> Result<()> {
        let now = BootFiles::of(root)?;
        if now == *self {
            return Ok(());
        }
        let changed: Vec<String> = self
            .0
            .keys()
            .chain(now.0.keys())
            .filter(|k| self.0.get(*k) != now.0.get(*k))
            .map(|k| format!("/{k}"))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        bail!(
            "{who} changed the image's kernel or initramfs ({}); refused: on Stratum they come \
             with the image, and only `stratum override` may replace the kernel. Nothing was \
             changed",
            changed.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_replaced_or_added_kernel_is_seen() {
        let t = tempfile::tempdir().unwrap();
        let k = t.path().join("usr/lib/modules/6.1.0-1-amd64");
        fs::create_dir_all(&k).unwrap();
        fs::write(k.join("vmlinuz"), "kernel").unwrap();
        fs::write(k.join("initramfs.img"), "initramfs").unwrap();
        fs::write(k.join("modules.dep"), "").unwrap();
        let before = BootFiles::of(t.path()).unwrap();
        assert_eq!(before.0.len(), 2);
        // Other files of the kernel's directory may change (depmod).
        fs::write(k.join("modules.dep"), "x").unwrap();
        before.check(t.path(), "test").unwrap();
        // A replacement arrives by rename: a new inode.
        fs::write(k.join("new"), "evil").unwrap();
        fs::rename(k.join("new"), k.join("vmlinuz")).unwrap();
        let e = before.check(t.path(), "the postinst of x").unwrap_err();
        assert!(e.to_string().contains("vmlinuz"), "{e}");
        let before = BootFiles::of(t.path()).unwrap();
        fs::create_dir_all(t.path().join("usr/lib/modules/9.9/")).unwrap();
        fs::write(t.path().join("usr/lib/modules/9.9/vmlinuz"), "k").unwrap();
        assert!(before.check(t.path(), "x").is_err());
    }
}
