//! The mounts prepare-root makes: the API filesystems of the initramfs, the physical root at
//! `/sysroot`, and the deployment assembled at `/newroot` (read-only `/usr`, writable `/etc`,
//! `/var` from the stateroot, `/sysroot` read-only) before `switch_root`.

use crate::bootinfo::MountRecord;
use crate::confine::Deployment;
use crate::error::BootError;
use crate::{NEWROOT, SYSROOT};
use nix::errno::Errno;
use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};

const NONE: Option<&str> = None;

/// Splits `rootflags=` like mount(8): generic flags become `MsFlags`, the rest is fs data.
/// (The kernel would hand everything to the filesystem, which rejects e.g. `noatime`.)
pub fn parse_flags(opts: &str) -> (MsFlags, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "defaults" | "rw" => {}
            "ro" => flags |= MsFlags::MS_RDONLY,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "nodiratime" => flags |= MsFlags::MS_NODIRATIME,
            "relatime" => flags |= MsFlags::MS_RELATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "lazytime" => flags |= MsFlags::MS_LAZYTIME,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "sync" => flags |= MsFlags::MS_SYNCHRONOUS,
            "dirsync" => flags |= MsFlags::MS_DIRSYNC,
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Creates a directory and its parents.
fn mkdir(p: &Path) -> Result<(), BootError> {
    std::fs::create_dir_all(p).map_err(|e| BootError::io("mkdir", p, e))
}

/// Filesystem types the kernel can mount from a block device (`/proc/filesystems` without
/// `nodev`), tried in turn when the superblock was not recognised.
pub fn block_fstypes() -> Vec<String> {
    std::fs::read_to_string("/proc/filesystems")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with("nodev"))
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// Performs the mounts and remembers them for `boot.json`.
#[derive(Debug, Default)]
pub struct Mounter {
    /// Mounts done so far.
    pub records: Vec<MountRecord>,
}

impl Mounter {
    fn record(&mut self, target: &str, source: impl Into<String>, options: impl Into<String>) {
        self.records.push(MountRecord {
            target: target.to_string(),
            source: source.into(),
            options: options.into(),
        });
    }

    /// Mounts /proc, /sys, /dev (devtmpfs) and /run (tmpfs, 0755); already mounted is fine.
    pub fn mount_api_filesystems(&mut self) -> Result<(), BootError> {
        let common = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let table: [(&str, &str, MsFlags, Option<&str>); 4] = [
            ("proc", "/proc", common | MsFlags::MS_NOEXEC, None),
            ("sysfs", "/sys", common | MsFlags::MS_NOEXEC, None),
            ("devtmpfs", "/dev", MsFlags::MS_NOSUID, Some("mode=0755")),
            ("tmpfs", "/run", common, Some("mode=0755")),
        ];
        for (fstype, target, flags, data) in table {
            mkdir(Path::new(target))?;
            match mount(Some(fstype), target, Some(fstype), flags, data) {
                Ok(()) | Err(Errno::EBUSY) => {}
                Err(e) => return Err(BootError::sys(format!("mount {fstype}"), target, e)),
            }
        }
        // Without systemd the initramfs mounts are private already; make sure, since MS_MOVE
        // refuses to move mounts below a shared parent.
        let _ = mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE);
        Ok(())
    }

    /// Mounts `device` at `/sysroot`, trying each type in `fstypes` until one works.
    pub fn mount_root(
        &mut self,
        device: &Path,
        fstypes: &[String],
        rootflags: Option<&str>,
        read_only: bool,
    ) -> Result<String, BootError> {
        mkdir(Path::new(SYSROOT))?;
        let (mut flags, data) = parse_flags(rootflags.unwrap_or(""));
        if read_only {
            flags |= MsFlags::MS_RDONLY;
        } else {
            flags.remove(MsFlags::MS_RDONLY);
        }
        let data = (!data.is_empty()).then_some(data.as_str());
        let mut last = None;
        for fstype in fstypes {
            match mount(Some(device), SYSROOT, Some(fstype.as_str()), flags, data) {
                Ok(()) => {
                    let mode = if read_only { "ro" } else { "" };
                    let opts = [fstype.as_str(), rootflags.unwrap_or(""), mode];
                    let opts: Vec<&str> = opts.into_iter().filter(|s| !s.is_empty()).collect();
                    self.record(SYSROOT, device.display().to_string(), opts.join(","));
                    return Ok(fstype.clone());
                }
                Err(e) => last = Some((fstype.clone(), e)),
            }
        }
        match last {
            Some((fstype, e)) if fstypes.len() == 1 => Err(BootError::sys(
                format!("mount -t {fstype} {}", device.display()),
                SYSROOT,
                e,
            )),
            _ => Err(BootError::UnknownFilesystem {
                device: device.to_path_buf(),
                tried: fstypes.to_vec(),
            }),
        }
    }

    fn bind(&mut self, src: &Path, dst: &Path, shown: &str) -> Result<(), BootError> {
        mount(Some(src), dst, NONE, MsFlags::MS_BIND, NONE)
            .map_err(|e| BootError::sys(format!("bind mount of {}", src.display()), dst, e))?;
        self.record(shown, src.display().to_string(), "bind");
        Ok(())
    }

    /// Makes the mount at `target` read-only (per mount point: the filesystem stays writable
    /// through other mounts, e.g. /var) and notes it on the record for `shown`.
    fn remount_ro(&mut self, target: &Path, shown: &str) -> Result<(), BootError> {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        mount(NONE, target, NONE, flags, NONE)
            .map_err(|e| BootError::sys("read-only remount", target, e))?;
        if let Some(r) = self.records.iter_mut().rev().find(|r| r.target == shown) {
            if !r.options.split(',').any(|o| o == "ro") {
                r.options.push_str(",ro");
            }
        }
        Ok(())
    }

    /// Assembles the deployment at `/newroot` and moves `/sysroot` and the API filesystems
    /// into it. Afterwards `/newroot` is ready for `switch_root`.
    pub fn setup_deployment(
        &mut self,
        dep: &Deployment,
        sysroot_rw: bool,
    ) -> Result<(), BootError> {
        let sysroot = Path::new(SYSROOT);
        let newroot = Path::new(NEWROOT);
        let nr = |p: &str| -> PathBuf { newroot.join(p) };
        mkdir(newroot)?;
        self.bind(&sysroot.join(&dep.relpath), newroot, "/")?;

        // /usr is the image: read-only. The bind onto itself gives the remount its own mount.
        let usr = nr("usr");
        if !usr.is_dir() {
            return Err(BootError::Refused(format!(
                "deployment {} has no /usr directory",
                dep.relpath.display()
            )));
        }
        mount(Some(&usr), &usr, NONE, MsFlags::MS_BIND, NONE)
            .map_err(|e| BootError::sys("bind mount of /usr", &usr, e))?;
        self.record("/usr", usr.display().to_string(), "bind");
        self.remount_ro(&usr, "/usr")?;

        // /etc stays writable: it is part of the deployment. /var is the stateroot's, shared
        // by all its deployments and never rolled back.
        let var = sysroot
            .join("ostree/deploy")
            .join(&dep.stateroot)
            .join("var");
        if !var.is_dir() {
            mkdir(&var)?;
        }
        self.bind(&var, &nr("var"), "/var")?;

        // The physical root, visible as /sysroot in the booted system; read-only by default so
        // only the admin tool (which remounts it) changes deployments.
        let target = nr("sysroot");
        mount(Some(sysroot), &target, NONE, MsFlags::MS_MOVE, NONE)
            .map_err(|e| BootError::sys("move of /sysroot", &target, e))?;
        if !sysroot_rw {
            self.remount_ro(&target, SYSROOT)?;
        }

        for api in ["/proc", "/sys", "/dev", "/run"] {
            let target = nr(&api[1..]);
            mount(Some(api), &target, NONE, MsFlags::MS_MOVE, NONE)
                .map_err(|e| BootError::sys(format!("move of {api}"), &target, e))?;
            self.record(api, api, "move");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootflags_split() {
        let (f, d) = parse_flags("noatime,data=ordered,ro,,errors=remount-ro,defaults");
        assert_eq!(f, MsFlags::MS_NOATIME | MsFlags::MS_RDONLY);
        assert_eq!(d, "data=ordered,errors=remount-ro");
        assert_eq!(parse_flags(""), (MsFlags::empty(), String::new()));
    }
}
