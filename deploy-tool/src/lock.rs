//! The sysroot lock (one mutating command at a time), and making the sysroot writable.
//!
//! It is the same file and the same `flock` OSTree takes (`/ostree/lock`), so Stratum and
//! `ostree admin` exclude each other too. The lock is released when the process exits, even
//! by a crash.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::sysroot::Sysroot;

/// A held sysroot lock.
#[derive(Debug)]
pub struct SysrootLock {
    _lock: Flock<File>,
}

/// Takes the sysroot lock. When another process holds it, waits (saying so once) unless
/// `no_wait`, in which case it fails at once.
pub fn lock(sysroot: &Sysroot, no_wait: bool) -> Result<SysrootLock> {
    let path = sysroot.path.join("ostree/lock");
    let file = open(&path)?;
    let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => return Ok(SysrootLock { _lock: l }),
        Err((f, nix::errno::Errno::EWOULDBLOCK)) => f,
        Err((_, e)) => return Err(e).with_context(|| format!("locking {}", path.display())),
    };
    if no_wait {
        bail!("the sysroot is locked by another stratum or ostree command ({}); retry later or run without --no-wait to wait", path.display());
    }
    let _ = writeln!(
        std::io::stderr(),
        "Waiting for the sysroot lock (another stratum or ostree command is running)..."
    );
    let l = Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .with_context(|| format!("locking {}", path.display()))?;
    Ok(SysrootLock { _lock: l })
}

/// On a booted system `/sysroot` is mounted read-only. Remount it read-write in a private
/// mount namespace of this process, as OSTree does, so the change is invisible to the rest
/// of the system and ends with the process.
pub fn make_writable(sysroot: &Sysroot) -> Result<()> {
    use nix::mount::{mount, MsFlags};
    if sysroot.path != Path::new("/") {
        return Ok(());
    }
    let probe = Path::new("/sysroot");
    if !probe.is_dir() || nix::unistd::access(probe, nix::unistd::AccessFlags::W_OK).is_ok() {
        return Ok(());
    }
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .context("creating a private mount namespace")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_SLAVE,
        None::<&str>,
    )
    .context("making mounts private")?;
    mount(
        Some(probe),
        probe,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND,
        None::<&str>,
    )
    .context("remounting /sysroot read-write")?;
    Ok(())
}

fn open(path: &Path) -> Result<File> {
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_locker_fails_with_no_wait() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ostree")).unwrap();
        let s = Sysroot::new(d.path());
        let held = lock(&s, true).unwrap();
        let err = lock(&s, true).unwrap_err().to_string();
        assert!(err.contains("locked"), "{err}");
        drop(held);
        lock(&s, true).unwrap();
    }
}
