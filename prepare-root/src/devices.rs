//! Finding the root device without udev: enumerate `/sys/class/block`, probe each device's
//! superblock and each disk's GPT, and poll until `root=` matches or the timeout passes.
//! The kernel's devtmpfs creates `/dev/<name>` for every block device, so the kernel name is
//! all we need to open it.

use crate::probe::{probe_filesystem, read_gpt, DeviceIds, GptPartition, RootSpec};
use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How often the device list is re-read while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(25);
/// Devices are re-probed at least this often even if no new one appeared (media may settle).
const RESCAN_INTERVAL: Duration = Duration::from_millis(500);

/// Where to look: `/sys/class/block` and `/dev` normally; temp dirs in tests.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The `class/block` directory of sysfs.
    pub sys_block: PathBuf,
    /// The devtmpfs directory.
    pub dev: PathBuf,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            sys_block: "/sys/class/block".into(),
            dev: "/dev".into(),
        }
    }
}

fn read_trimmed(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Kernel names of the block devices, sorted.
fn names(layout: &Layout) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(&layout.sys_block)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    v.sort();
    v
}

/// Probes one device node's filesystem; unreadable devices simply have none.
pub fn probe_node(node: &Path) -> Option<crate::probe::FsInfo> {
    File::open(node)
        .ok()
        .and_then(|mut f| probe_filesystem(&mut f).ok().flatten())
}

/// Scans all block devices once: filesystem, and for GPT partitions their PARTUUID/PARTLABEL.
pub fn scan(layout: &Layout) -> Vec<DeviceIds> {
    struct Entry {
        name: String,
        number: Option<u32>,
        parent: Option<String>,
    }
    let mut entries = Vec::new();
    for name in names(layout) {
        let link = layout.sys_block.join(&name);
        // Empty loop devices and drives without media report size 0: nothing to find there.
        if read_trimmed(&link.join("size")).is_some_and(|s| s == "0") {
            continue;
        }
        let number = read_trimmed(&link.join("partition")).and_then(|n| n.parse().ok());
        // A partition's sysfs directory sits inside its disk's directory.
        let parent = number.and_then(|_| {
            let real = std::fs::canonicalize(&link).ok()?;
            Some(real.parent()?.file_name()?.to_str()?.to_string())
        });
        entries.push(Entry {
            name,
            number,
            parent,
        });
    }
    let mut tables: HashMap<String, Vec<GptPartition>> = HashMap::new();
    for disk in entries.iter().filter_map(|e| e.parent.clone()) {
        if tables.contains_key(&disk) {
            continue;
        }
        let table = File::open(layout.dev.join(&disk))
            .ok()
            .and_then(|mut f| read_gpt(&mut f).ok().flatten())
            .unwrap_or_default();
        tables.insert(disk, table);
    }
    entries
        .into_iter()
        .map(|e| {
            let devnode = layout.dev.join(&e.name);
            let part = e
                .parent
                .as_ref()
                .and_then(|d| tables.get(d))
                .and_then(|t| t.iter().find(|p| Some(p.number) == e.number));
            DeviceIds {
                fs: probe_node(&devnode),
                partuuid: part.map(|p| p.partuuid.clone()),
                partlabel: part.map(|p| p.partlabel.clone()),
                name: e.name,
                devnode,
            }
        })
        .collect()
}

/// The result of waiting for the root device.
#[derive(Debug)]
pub enum WaitResult {
    /// Found; `others` counts further devices that matched too (ambiguous `root=`).
    Found {
        /// The device to mount.
        device: DeviceIds,
        /// How many more devices matched.
        others: usize,
    },
    /// Timed out; the devices seen in the last scan, for the failure report.
    TimedOut(Vec<DeviceIds>),
}

/// Polls until a device matches `spec` or `timeout` passes.
pub fn wait_for_root(spec: &RootSpec, timeout: Duration, layout: &Layout) -> WaitResult {
    let start = Instant::now();
    let mut last_names = Vec::new();
    let mut last_scan: Option<Instant> = None;
    let mut seen = Vec::new();
    loop {
        if let RootSpec::Path(p) = spec {
            if p.exists() {
                let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                let device = DeviceIds {
                    name: name.unwrap_or_default(),
                    devnode: p.clone(),
                    fs: probe_node(p),
                    ..Default::default()
                };
                return WaitResult::Found { device, others: 0 };
            }
        }
        let now = names(layout);
        let stale = !matches!(last_scan, Some(t) if t.elapsed() < RESCAN_INTERVAL);
        if now != last_names || stale {
            seen = scan(layout);
            last_names = now;
            last_scan = Some(Instant::now());
            let mut hits = seen.iter().filter(|d| spec.matches(d));
            if let Some(device) = hits.next() {
                let others = hits.count();
                return WaitResult::Found {
                    device: device.clone(),
                    others,
                };
            }
        }
        if start.elapsed() >= timeout {
            // One last full scan so the report shows the final state.
            if matches!(spec, RootSpec::Path(_)) {
                seen = scan(layout);
            }
            return WaitResult::TimedOut(seen);
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// One line per device for the failure report.
pub fn describe(d: &DeviceIds) -> String {
    let mut s = d.devnode.display().to_string();
    match &d.fs {
        Some(fs) => {
            s += &format!(" {}", fs.fstype);
            if let Some(u) = &fs.uuid {
                s += &format!(" UUID={u}");
            }
            if let Some(l) = &fs.label {
                s += &format!(" LABEL={l:?}");
            }
        }
        None => s += " (no filesystem)",
    }
    if let Some(u) = &d.partuuid {
        s += &format!(" PARTUUID={u}");
    }
    if let Some(l) = &d.partlabel {
        s += &format!(" PARTLABEL={l:?}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use std::process::{Command, Stdio};

    fn tool(cmd: &mut Command) {
        let st = cmd
            .env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin")
            .stdout(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cmd:?} (is it installed?): {e}"));
        assert!(st.success(), "{cmd:?}: {st}");
    }

    /// A fake sysfs + devtmpfs: disk `vda` (GPT, two partitions) whose `vda2` node is a real
    /// ext4 image, plus an empty `loop0`.
    fn fake() -> (tempfile::TempDir, Layout) {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        let layout = Layout {
            sys_block: r.join("sys/class/block"),
            dev: r.join("dev"),
        };
        std::fs::create_dir_all(&layout.sys_block).unwrap();
        std::fs::create_dir_all(&layout.dev).unwrap();
        let disk = layout.dev.join("vda");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let mut sf = Command::new("sfdisk");
        sf.arg("-q").arg(&disk).stdin(Stdio::piped());
        let mut child = sf
            .stdout(Stdio::null())
            .spawn()
            .expect("sfdisk is not installed");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: gpt\nsize=2048, name=esp, uuid=11111111-2222-3333-4444-555555555555\nname=root, uuid=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let root = layout.dev.join("vda2");
        std::fs::File::create(&root)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        tool(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "sysroot"])
                .arg(&root),
        );
        std::fs::File::create(layout.dev.join("vda1")).unwrap();
        for (dev, sub, part, size) in [
            ("vda", "pci/vda", None, "32768"),
            ("vda1", "pci/vda/vda1", Some("1"), "2048"),
            ("vda2", "pci/vda/vda2", Some("2"), "16384"),
            ("loop0", "virtual/loop0", None, "0"),
        ] {
            let dir = r.join("sys/devices").join(sub);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("size"), size).unwrap();
            if let Some(n) = part {
                std::fs::write(dir.join("partition"), n).unwrap();
            }
            symlink(&dir, layout.sys_block.join(dev)).unwrap();
        }
        (d, layout)
    }

    #[test]
    fn scan_fake_sysfs() {
        let (_d, layout) = fake();
        let devs = scan(&layout);
        let names: Vec<&str> = devs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, vec!["vda", "vda1", "vda2"]);
        assert_eq!(devs[1].partlabel.as_deref(), Some("esp"));
        assert_eq!(
            devs[2].partuuid.as_deref(),
            Some("aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
        );
        assert_eq!(
            devs[2].fs.as_ref().unwrap().label.as_deref(),
            Some("sysroot")
        );
        assert!(devs[0].partuuid.is_none() && devs[0].fs.is_none());
        assert!(
            describe(&devs[2]).contains("ext4 UUID="),
            "{}",
            describe(&devs[2])
        );
    }

    #[test]
    fn wait_finds_or_times_out() {
        let (_d, layout) = fake();
        let t = Duration::from_millis(100);
        for spec in [
            "LABEL=sysroot",
            "PARTLABEL=root",
            "PARTUUID=AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE",
        ] {
            match wait_for_root(&RootSpec::parse(spec), t, &layout) {
                WaitResult::Found { device, others } => {
                    assert_eq!((device.name.as_str(), others), ("vda2", 0), "{spec}")
                }
                WaitResult::TimedOut(_) => panic!("{spec} not found"),
            }
        }
        let node = layout.dev.join("vda2");
        match wait_for_root(&RootSpec::Path(node.clone()), t, &layout) {
            WaitResult::Found { device, .. } => assert_eq!(device.devnode, node),
            WaitResult::TimedOut(_) => panic!("path not found"),
        }
        let start = Instant::now();
        match wait_for_root(&RootSpec::parse("LABEL=nope"), t, &layout) {
            WaitResult::TimedOut(seen) => assert_eq!(seen.len(), 3),
            WaitResult::Found { .. } => panic!("found a missing device"),
        }
        assert!(start.elapsed() >= t);
    }
}
