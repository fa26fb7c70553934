//! `/run/stratum/boot.json`: the record of what prepare-root decided, read by the admin tool
//! (`stratum status`) and by tests. Every field has a default so older and newer writers and
//! readers stay compatible.

use serde::{Deserialize, Serialize};
use std::io;
use std::path::Path;

pub use crate::BOOT_JSON;

/// `mode` when prepare-root ran as PID 1 of Stratum's own initramfs.
pub const MODE_INITRAMFS: &str = "initramfs";

/// One mount prepare-root set up.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MountRecord {
    /// Mount point, as seen from the booted system.
    pub target: String,
    /// Device or source path, as seen from the initramfs.
    pub source: String,
    /// Filesystem type and flags, e.g. `bind,ro`.
    pub options: String,
}

/// Step durations in milliseconds, measured with `CLOCK_MONOTONIC` from prepare-root's start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Timings {
    /// Loading kernel modules.
    pub modules: u64,
    /// Waiting for the root device.
    pub wait_root: u64,
    /// Mounting the root and setting up the deployment.
    pub mount: u64,
    /// Everything, up to just before `switch_root`.
    pub total: u64,
    /// `CLOCK_BOOTTIME` at the end: time since the kernel started.
    pub since_kernel_start_ms: u64,
}

/// What is known about the initramfs that booted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct InitramfsInfo {
    /// `VERSION_ID` from `/etc/initrd-release`.
    pub version_id: Option<String>,
    /// `/etc/stratum/initramfs.json` copied as-is.
    pub info: Option<serde_json::Value>,
}

/// The content of [`BOOT_JSON`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BootInfo {
    /// How prepare-root ran ([`MODE_INITRAMFS`]).
    pub mode: String,
    /// `ostree/deploy/<stateroot>/deploy/<checksum>.<serial>`, relative to the sysroot.
    pub deployment: String,
    /// The deployment's stateroot (OS name).
    pub stateroot: String,
    /// The deployment's commit checksum.
    pub checksum: String,
    /// The deployment serial.
    pub serial: u32,
    /// The `ostree=` kernel argument.
    pub ostree_arg: String,
    /// The device node mounted as the physical root (`/dev/vda3`).
    pub root_device: String,
    /// The `root=` kernel argument.
    pub root_spec: String,
    /// The physical root's filesystem type.
    pub fstype: String,
    /// Mounts set up, in order.
    pub mounts: Vec<MountRecord>,
    /// Kernel modules loaded (paths from the module list).
    pub modules_loaded: Vec<String>,
    /// How long each step took.
    pub timings_ms: Timings,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
    /// The initramfs, if it describes itself.
    pub initramfs: Option<InitramfsInfo>,
    /// `/etc` files carried by an overlay initramfs.
    pub tracked_etc_files: Vec<String>,
}

impl BootInfo {
    /// Records what was booted; shared by the PID 1 and the systemd-initrd paths.
    pub fn record_deployment(
        &mut self,
        mode: &str,
        dep: &crate::confine::Deployment,
        ostree_arg: String,
        root_device: String,
        root_spec: String,
        fstype: String,
    ) {
        self.mode = mode.into();
        self.deployment = dep.relpath.display().to_string();
        self.stateroot = dep.stateroot.clone();
        self.checksum = dep.checksum.clone();
        self.serial = dep.serial;
        self.ostree_arg = ostree_arg;
        self.root_device = root_device;
        self.root_spec = root_spec;
        self.fstype = fstype;
    }

    /// Reads a `boot.json` (normally [`BOOT_JSON`]).
    pub fn load(path: &Path) -> io::Result<BootInfo> {
        let data = std::fs::read(path)?;
        serde_json::from_slice(&data).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Writes it as pretty JSON, creating the parent directory (a tmpfs: no fsync needed).
    pub fn write(&self, path: &Path) -> io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut data = serde_json::to_vec_pretty(self).map_err(io::Error::other)?;
        data.push(b'\n');
        std::fs::write(path, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let info = BootInfo {
            mode: MODE_INITRAMFS.into(),
            deployment: "ostree/deploy/os/deploy/abc.0".into(),
            stateroot: "os".into(),
            checksum: "abc".into(),
            serial: 0,
            ostree_arg: "/ostree/boot.1/os/x/0".into(),
            root_device: "/dev/vda3".into(),
            root_spec: "LABEL=root".into(),
            fstype: "ext4".into(),
            mounts: vec![MountRecord {
                target: "/usr".into(),
                source: "/newroot/usr".into(),
                options: "bind,ro".into(),
            }],
            modules_loaded: vec!["/lib/modules/6.1/virtio_blk.ko".into()],
            timings_ms: Timings {
                modules: 1,
                wait_root: 2,
                mount: 3,
                total: 7,
                since_kernel_start_ms: 900,
            },
            warnings: vec!["w".into()],
            initramfs: Some(InitramfsInfo {
                version_id: Some("42".into()),
                info: Some(serde_json::json!({"generator": "stratum-initramfs", "n": 3})),
            }),
            tracked_etc_files: vec!["/etc/crypttab".into()],
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("run/stratum/boot.json");
        info.write(&p).unwrap();
        assert_eq!(BootInfo::load(&p).unwrap(), info);
        // Unknown fields are ignored and missing ones default, for compatibility.
        let old: BootInfo = serde_json::from_str(r#"{"mode":"initramfs","new":1}"#).unwrap();
        assert_eq!(old.mode, "initramfs");
        assert!(old.mounts.is_empty());
    }
}
