//! Making `/boot` durable for GRUB: `syncfs`, then a FIFREEZE/FITHAW cycle.
//!
//! GRUB reads ext4 without replaying its journal, so metadata that sits only in the journal
//! is invisible to it. Freezing a filesystem forces a checkpoint: everything is written to
//! its final place. Only done when `/boot` is its own mount (freezing the root filesystem of
//! a test's temporary sysroot would stall the whole machine).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

// FIFREEZE = _IOWR('X', 119, int), FITHAW = _IOWR('X', 120, int) from <linux/fs.h>.
nix::ioctl_readwrite!(fifreeze, b'X', 119, nix::libc::c_int);
nix::ioctl_readwrite!(fithaw, b'X', 120, nix::libc::c_int);

/// syncs the filesystem holding `path`.
pub fn syncfs(path: &Path) -> Result<()> {
    let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    nix::unistd::syncfs(f.as_raw_fd()).with_context(|| format!("syncfs {}", path.display()))
}

/// syncs the filesystem holding `dir`; freezes and thaws it when `dir` is a mount point.
pub fn sync_and_freeze(dir: &Path) -> Result<()> {
    let f = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    nix::unistd::syncfs(f.as_raw_fd()).with_context(|| format!("syncfs {}", dir.display()))?;
    if !is_mount_point(dir)? {
        return Ok(());
    }
    let mut arg: nix::libc::c_int = 0;
    // SAFETY: the ioctls take an int argument that we own; the fd is open for the call.
    #[allow(unsafe_code)]
    let frozen = unsafe { fifreeze(f.as_raw_fd(), &mut arg) };
    match frozen {
        Ok(_) => {
            #[allow(unsafe_code)]
            // SAFETY: as above.
            unsafe { fithaw(f.as_raw_fd(), &mut arg) }
                .with_context(|| format!("FITHAW {}", dir.display()))?;
        }
        // Not supported by this filesystem, or no privilege: syncfs is all we can do.
        Err(
            nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOTTY | nix::errno::Errno::EPERM,
        ) => {}
        Err(e) => return Err(e).with_context(|| format!("FIFREEZE {}", dir.display())),
    }
    Ok(())
}

/// Makes everything written so far on the filesystems of `sysroot` and `boot` durable: one
/// `syncfs` per filesystem (the sysroot's only when it is not also `/boot`'s), then
/// [`sync_and_freeze`] of `boot`. Writers of the boot set create their files without
/// per-file fsyncs and call this before each switch: one journal commit instead of one per
/// file.
pub fn sync_sysroot_and_boot(sysroot: &Path, boot: &Path) -> Result<()> {
    let dev = |p: &Path| {
        std::fs::metadata(p)
            .map(|m| m.dev())
            .with_context(|| format!("stat {}", p.display()))
    };
    if dev(sysroot)? != dev(boot)? {
        syncfs(sysroot)?;
    }
    sync_and_freeze(boot)
}

fn is_mount_point(dir: &Path) -> Result<bool> {
    let m = std::fs::metadata(dir)?;
    let parent = std::fs::metadata(dir.join(".."))?;
    Ok(m.dev() != parent.dev())
}
