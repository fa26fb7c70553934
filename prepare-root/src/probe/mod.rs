//! Identifying block devices without udev or libblkid: filesystem superblocks (ext2/3/4, xfs,
//! btrfs, vfat), GPT partition tables, and the `root=` forms that name a device by them.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

mod gpt;
pub use gpt::{read_gpt, GptPartition};

/// What a filesystem superblock says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsInfo {
    /// Kernel filesystem type name (`ext4`, `xfs`, `btrfs`, `vfat`, …).
    pub fstype: String,
    /// Filesystem UUID in its usual text form (lowercase; `XXXX-XXXX` for vfat).
    pub uuid: Option<String>,
    /// Volume label, if set.
    pub label: Option<String>,
}

/// Reads up to `len` bytes at `off`; a short read (small device) yields a shorter buffer.
pub(crate) fn read_at(r: &mut (impl Read + Seek), off: u64, len: usize) -> io::Result<Vec<u8>> {
    r.seek(SeekFrom::Start(off))?;
    let mut buf = Vec::with_capacity(len);
    r.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// A 16-byte UUID stored in network order (ext4, xfs, btrfs), as text; `None` when all zero.
fn uuid_text(b: &[u8]) -> Option<String> {
    if b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        h[0..4].concat(),
        h[4..6].concat(),
        h[6..8].concat(),
        h[8..10].concat(),
        h[10..16].concat()
    ))
}

/// A NUL/space padded label; `None` when empty.
fn label_text(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|&x| x == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// ext2/3/4: superblock at 1024, magic 0xEF53 at 0x38. The type follows blkid's rule: any
/// feature ext3 does not know makes it ext4; a journal without those makes it ext3.
fn probe_ext(sb: &[u8]) -> Option<FsInfo> {
    if sb.len() < 0x88 || le16(sb, 0x38) != 0xEF53 {
        return None;
    }
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    let ext3_incompat = 0x2 | 0x4 | 0x10; // filetype, recover, meta_bg
    let ext3_ro_compat = 0x1 | 0x2 | 0x4; // sparse_super, large_file, btree_dir
    let fstype = if incompat & !ext3_incompat != 0 || ro_compat & !ext3_ro_compat != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Some(FsInfo {
        fstype: fstype.into(),
        uuid: uuid_text(&sb[0x68..0x78]),
        label: label_text(&sb[0x78..0x88]),
    })
}

fn probe_xfs(b: &[u8]) -> Option<FsInfo> {
    if b.len() < 120 || &b[0..4] != b"XFSB" {
        return None;
    }
    Some(FsInfo {
        fstype: "xfs".into(),
        uuid: uuid_text(&b[32..48]),
        label: label_text(&b[108..120]),
    })
}

fn probe_btrfs(sb: &[u8]) -> Option<FsInfo> {
    if sb.len() < 0x12b + 256 || &sb[0x40..0x48] != b"_BHRfS_M" {
        return None;
    }
    Some(FsInfo {
        fstype: "btrfs".into(),
        uuid: uuid_text(&sb[0x20..0x30]),
        label: label_text(&sb[0x12b..0x12b + 256]),
    })
}

/// FAT boot sector: the type string sits at 0x52 (FAT32) or 0x36 (FAT12/16), and the serial
/// and label follow the extended BPB at different offsets.
fn probe_vfat(b: &[u8]) -> Option<FsInfo> {
    if b.len() < 512 || !matches!(b[0], 0xEB | 0xE9) || b[510..512] != [0x55, 0xAA] {
        return None;
    }
    if !matches!(le16(b, 0x0B), 512 | 1024 | 2048 | 4096) {
        return None;
    }
    let (serial_off, label_off) = if &b[0x52..0x57] == b"FAT32" {
        (0x43, 0x47)
    } else if &b[0x36..0x39] == b"FAT" {
        (0x27, 0x2B)
    } else {
        return None;
    };
    let serial = le32(b, serial_off);
    let label = label_text(&b[label_off..label_off + 11]).filter(|l| l != "NO NAME");
    Some(FsInfo {
        fstype: "vfat".into(),
        uuid: (serial != 0).then(|| format!("{:04X}-{:04X}", serial >> 16, serial & 0xffff)),
        label,
    })
}

/// Identifies the filesystem on a device or image; `Ok(None)` if no known superblock.
pub fn probe_filesystem(r: &mut (impl Read + Seek)) -> io::Result<Option<FsInfo>> {
    let head = read_at(r, 0, 4096)?;
    if let Some(fs) = probe_xfs(&head) {
        return Ok(Some(fs));
    }
    if head.len() >= 2048 {
        if let Some(fs) = probe_ext(&head[1024..2048]) {
            return Ok(Some(fs));
        }
    }
    let btrfs = read_at(r, 0x10000, 4096)?;
    if let Some(fs) = probe_btrfs(&btrfs) {
        return Ok(Some(fs));
    }
    Ok(probe_vfat(&head))
}

/// Everything known about one block device, used to match `root=` and for failure reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceIds {
    /// Kernel name (`vda3`).
    pub name: String,
    /// Device node (`/dev/vda3`).
    pub devnode: PathBuf,
    /// Probed filesystem, if any.
    pub fs: Option<FsInfo>,
    /// GPT unique partition GUID, if this is a GPT partition.
    pub partuuid: Option<String>,
    /// GPT partition name, if this is a GPT partition.
    pub partlabel: Option<String>,
}

/// The `root=` kernel argument.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum RootSpec {
    /// `root=/dev/vda3`
    Path(PathBuf),
    /// `root=UUID=…` (compared case-insensitively)
    Uuid(String),
    /// `root=LABEL=…`
    Label(String),
    /// `root=PARTUUID=…` (compared case-insensitively)
    PartUuid(String),
    /// `root=PARTLABEL=…`
    PartLabel(String),
}

/// Undoes udev's `\xNN` escaping in `/dev/disk/by-label/` names. Works on bytes: the text
/// after `\x` comes from the kernel command line and need not be two ASCII characters.
fn unescape_udev(s: &str) -> String {
    let hex = |c: u8| char::from(c).to_digit(16);
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let [b'\\', b'x', hi, lo, ..] = b[i..] {
            if let (Some(hi), Some(lo)) = (hex(hi), hex(lo)) {
                out.push((hi * 16 + lo) as u8);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

impl RootSpec {
    /// Parses a `root=` value. `/dev/disk/by-*/X` links are understood too, since there is no
    /// udev in Stratum's initramfs to create them.
    pub fn parse(s: &str) -> RootSpec {
        let prefixed = |p: &str| {
            s.get(..p.len())
                .filter(|h| h.eq_ignore_ascii_case(p))
                .map(|_| s[p.len()..].to_string())
        };
        let by = |p: &str| s.strip_prefix(p).map(unescape_udev);
        if let Some(v) = prefixed("UUID=").or_else(|| by("/dev/disk/by-uuid/")) {
            RootSpec::Uuid(v)
        } else if let Some(v) = prefixed("LABEL=").or_else(|| by("/dev/disk/by-label/")) {
            RootSpec::Label(v)
        } else if let Some(v) = prefixed("PARTUUID=").or_else(|| by("/dev/disk/by-partuuid/")) {
            RootSpec::PartUuid(v)
        } else if let Some(v) = prefixed("PARTLABEL=").or_else(|| by("/dev/disk/by-partlabel/")) {
            RootSpec::PartLabel(v)
        } else {
            RootSpec::Path(PathBuf::from(s))
        }
    }

    /// Whether `dev` is the device this spec names.
    pub fn matches(&self, dev: &DeviceIds) -> bool {
        let fs = dev.fs.as_ref();
        match self {
            RootSpec::Path(p) => {
                p == &dev.devnode
                    || p.strip_prefix("/dev")
                        .is_ok_and(|r| r == Path::new(&dev.name))
            }
            RootSpec::Uuid(u) => fs
                .and_then(|f| f.uuid.as_deref())
                .is_some_and(|x| x.eq_ignore_ascii_case(u)),
            RootSpec::Label(l) => fs.and_then(|f| f.label.as_deref()) == Some(l.as_str()),
            RootSpec::PartUuid(u) => dev
                .partuuid
                .as_deref()
                .is_some_and(|x| x.eq_ignore_ascii_case(u)),
            RootSpec::PartLabel(l) => dev.partlabel.as_deref() == Some(l.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::File;
    use std::process::Command;

    /// Runs one of the real image tools; a missing tool is a test failure that says so.
    fn run(tool: &str, args: &[&str], stdin: Option<&str>) {
        use std::io::Write;
        let mut cmd = Command::new(tool);
        cmd.args(args).env("PATH", "/usr/sbin:/sbin:/usr/bin:/bin");
        if stdin.is_some() {
            cmd.stdin(std::process::Stdio::piped());
        }
        let mut child = cmd
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {tool} (is it installed?): {e}"));
        if let Some(text) = stdin {
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
        }
        let st = child.wait().unwrap();
        assert!(st.success(), "{tool} {args:?} failed: {st}");
    }

    fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
        let p = dir.join(name);
        File::create(&p).unwrap().set_len(mib << 20).unwrap();
        p
    }

    fn probe_file(p: &Path) -> Option<FsInfo> {
        probe_filesystem(&mut File::open(p).unwrap()).unwrap()
    }

    #[test]
    fn ext4_ext2_real_images() {
        let d = tempfile::tempdir().unwrap();
        let uuid = "1B4E28BA-2FA1-11D2-883F-0016D3CCA427";
        let p = image(d.path(), "ext4.img", 8);
        run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-U",
                uuid,
                "-L",
                "stratum-root",
                p.to_str().unwrap(),
            ],
            None,
        );
        let fs = probe_file(&p).unwrap();
        assert_eq!(fs.fstype, "ext4");
        assert_eq!(fs.uuid.as_deref(), Some(uuid.to_lowercase().as_str()));
        assert_eq!(fs.label.as_deref(), Some("stratum-root"));

        let p = image(d.path(), "ext2.img", 8);
        run(
            "mkfs.ext4",
            &["-q", "-F", "-t", "ext2", p.to_str().unwrap()],
            None,
        );
        let fs = probe_file(&p).unwrap();
        assert_eq!(fs.fstype, "ext2");
        assert!(fs.uuid.is_some());
        assert_eq!(fs.label, None);
    }

    #[test]
    fn vfat_real_images() {
        let d = tempfile::tempdir().unwrap();
        for (bits, mib) in [("16", 16), ("32", 40)] {
            let p = image(d.path(), &format!("fat{bits}.img"), mib);
            let args = [
                "-F",
                bits,
                "-i",
                "1234abcd",
                "-n",
                "EFI-SYS",
                p.to_str().unwrap(),
            ];
            run("mkfs.vfat", &args, None);
            let fs = probe_file(&p).unwrap();
            assert_eq!(fs.fstype, "vfat");
            assert_eq!(fs.uuid.as_deref(), Some("1234-ABCD"), "FAT{bits}");
            assert_eq!(fs.label.as_deref(), Some("EFI-SYS"), "FAT{bits}");
        }
    }

    #[test]
    fn gpt_real_image_and_partition_fs() {
        let d = tempfile::tempdir().unwrap();
        let p = image(d.path(), "disk.img", 24);
        let script = "label: gpt\n\
            start=2048, size=4096, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"EFI System\", uuid=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
            start=8192, size=16384, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=root, uuid=6A8B1C3E-0D2F-4B5A-9C7E-112233445566\n";
        run("sfdisk", &["-q", p.to_str().unwrap()], Some(script));
        let parts = read_gpt(&mut File::open(&p).unwrap()).unwrap().unwrap();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].number, 1);
        assert_eq!(parts[0].partlabel, "EFI System");
        assert_eq!(parts[0].partuuid, "0fc63daf-8483-4772-8e79-3d69d8477de4");
        assert_eq!(parts[0].type_guid, "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
        assert_eq!((parts[0].first_lba, parts[0].last_lba), (2048, 6143));
        assert_eq!(parts[1].number, 2);
        assert_eq!(parts[1].partlabel, "root");
        assert_eq!(parts[1].partuuid, "6a8b1c3e-0d2f-4b5a-9c7e-112233445566");
        assert_eq!((parts[1].first_lba, parts[1].last_lba), (8192, 24575));
        // The disk itself carries no filesystem.
        assert_eq!(probe_file(&p), None);
    }

    #[test]
    fn synthetic_xfs_btrfs() {
        let mut x = vec![0u8; 4096];
        x[0..4].copy_from_slice(b"XFSB");
        x[32..48].copy_from_slice(&[0x11; 16]);
        x[108..112].copy_from_slice(b"data");
        let fs = probe_filesystem(&mut std::io::Cursor::new(x))
            .unwrap()
            .unwrap();
        assert_eq!(fs.fstype, "xfs");
        assert_eq!(
            fs.uuid.as_deref(),
            Some("11111111-1111-1111-1111-111111111111")
        );
        assert_eq!(fs.label.as_deref(), Some("data"));

        let mut b = vec![0u8; 0x10000 + 4096];
        let sb = 0x10000;
        b[sb + 0x40..sb + 0x48].copy_from_slice(b"_BHRfS_M");
        b[sb + 0x20..sb + 0x30].copy_from_slice(&[0xab; 16]);
        b[sb + 0x12b..sb + 0x12b + 4].copy_from_slice(b"pool");
        let fs = probe_filesystem(&mut std::io::Cursor::new(b))
            .unwrap()
            .unwrap();
        assert_eq!(fs.fstype, "btrfs");
        assert_eq!(
            fs.uuid.as_deref(),
            Some("abababab-abab-abab-abab-abababababab")
        );
        assert_eq!(fs.label.as_deref(), Some("pool"));

        assert_eq!(
            probe_filesystem(&mut std::io::Cursor::new(vec![0u8; 100])).unwrap(),
            None
        );
    }

    #[test]
    fn root_spec_parse_and_match() {
        use RootSpec::*;
        assert_eq!(RootSpec::parse("/dev/vda3"), Path("/dev/vda3".into()));
        assert_eq!(RootSpec::parse("UUID=AbC"), Uuid("AbC".into()));
        assert_eq!(RootSpec::parse("uuid=x"), Uuid("x".into()));
        assert_eq!(RootSpec::parse("LABEL=a=b"), Label("a=b".into()));
        assert_eq!(RootSpec::parse("PARTUUID=p"), PartUuid("p".into()));
        assert_eq!(RootSpec::parse("PARTLABEL=root"), PartLabel("root".into()));
        assert_eq!(
            RootSpec::parse("/dev/disk/by-label/my\\x20root"),
            Label("my root".into())
        );
        assert_eq!(
            RootSpec::parse("/dev/disk/by-partuuid/q"),
            PartUuid("q".into())
        );
        // Not escapes: kept as written. `\x2` followed by a multi-byte character made
        // prepare-root panic (slicing inside the character; found by the `cmdline` fuzz target).
        for kept in ["my\\x2\u{e9}root", "\\x+f", "\\x\u{e9}", "a\\x4"] {
            let by = format!("/dev/disk/by-label/{kept}");
            assert_eq!(RootSpec::parse(&by), Label(kept.into()), "{by}");
        }
        assert_eq!(
            RootSpec::parse("/dev/disk/by-label/\\x41\\x2f\\x\u{e9}"),
            Label("A/\\x\u{e9}".into())
        );

        let dev = DeviceIds {
            name: "vda3".into(),
            devnode: "/dev/vda3".into(),
            fs: Some(FsInfo {
                fstype: "ext4".into(),
                uuid: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
                label: Some("root".into()),
            }),
            partuuid: Some("6a8b1c3e-0d2f-4b5a-9c7e-112233445566".into()),
            partlabel: Some("Root".into()),
        };
        assert!(RootSpec::parse("/dev/vda3").matches(&dev));
        assert!(!RootSpec::parse("/dev/vda").matches(&dev));
        assert!(RootSpec::parse("UUID=1B4E28BA-2FA1-11D2-883F-0016D3CCA427").matches(&dev));
        assert!(RootSpec::parse("LABEL=root").matches(&dev));
        assert!(!RootSpec::parse("LABEL=Root").matches(&dev));
        assert!(RootSpec::parse("PARTUUID=6A8B1C3E-0D2F-4B5A-9C7E-112233445566").matches(&dev));
        assert!(RootSpec::parse("PARTLABEL=Root").matches(&dev));
        assert!(!RootSpec::parse("PARTLABEL=root").matches(&dev));
    }
}
