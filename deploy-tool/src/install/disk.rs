//! Raw GPT disk images built from files, without loop devices or mounts.
//!
//! Each filesystem is made in its own image file (`mkfs.ext4 -d` copies a directory tree,
//! hardlinks included; the ESP is FAT, filled with mtools), the partition table is written
//! by `sfdisk` on the disk file, and the filesystems are copied in at their offsets, keeping
//! the disk sparse.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::progress::Meter;

const MIB: u64 = 1024 * 1024;
/// EFI System Partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// Extended boot loader partition (`/boot`), from the Discoverable Partitions Specification.
pub const XBOOTLDR_TYPE: &str = "BC13C2FF-59E6-4262-A352-B275FD6F7172";
/// A Linux filesystem with no particular role.
pub const LINUX_DATA_TYPE: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// Root partition (x86-64).
pub const ROOT_TYPE: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";

/// One partition of the disk, in order.
#[derive(Debug, Clone)]
pub struct Partition {
    pub name: &'static str,
    pub type_guid: &'static str,
    pub size: u64,
    /// The filesystem image to copy in.
    pub image: PathBuf,
}

/// Parses sizes like `4G`, `512M`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim();
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1024),
        Some((i, 'M' | 'm')) => (&s[..i], MIB),
        Some((i, 'G' | 'g')) => (&s[..i], 1024 * MIB),
        Some((i, 'T' | 't')) => (&s[..i], 1024 * 1024 * MIB),
        _ => (s, 1),
    };
    let n: u64 = num.parse().with_context(|| {
        format!("invalid size {s:?}: use a number with an optional K, M, G or T suffix")
    })?;
    n.checked_mul(mult)
        .with_context(|| format!("size {s} is too large"))
}

/// A fresh random UUID from the kernel.
pub fn random_uuid() -> Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("reading /proc/sys/kernel/random/uuid")?
        .trim()
        .to_string())
}

/// Makes an ext4 image of `size` bytes at `image` holding a copy of `tree`.
pub fn mkfs_ext4(image: &Path, size: u64, label: &str, uuid: &str, tree: &Path) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", image.display()))?;
    cmd::run(
        Command::new("mkfs.ext4")
            .args([
                "-q",
                "-F",
                "-L",
                label,
                "-U",
                uuid,
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(tree)
            .arg(image),
    )
    .with_context(|| format!("making the {label} filesystem from {}", tree.display()))
}

/// Makes a FAT image of `size` bytes at `image` holding a copy of the directory `tree`.
pub fn mkfs_esp(image: &Path, size: u64, volume_id: &str, tree: &Path) -> Result<()> {
    File::create(image)
        .and_then(|f| f.set_len(size))
        .with_context(|| format!("creating {}", image.display()))?;
    cmd::run(
        Command::new("mkfs.vfat")
            .args(["-n", "EFI-SYSTEM", "-i", volume_id])
            .arg(image),
    )?;
    let mut top: Vec<PathBuf> = fs::read_dir(tree)
        .with_context(|| format!("reading {}", tree.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    if top.is_empty() {
        return Ok(());
    }
    top.sort();
    cmd::run(
        Command::new("mcopy")
            .args(["-s", "-o", "-i"])
            .arg(image)
            .args(&top)
            .arg("::/"),
    )
    .with_context(|| format!("copying {} into the ESP", tree.display()))
}

/// Writes a GPT disk image of `size` bytes at `out` with `parts` (1 MiB aligned, in order;
/// the last partition takes what is left when its size is 0), counting the bytes of the
/// filesystem images copied on `meter`. Returns the bytes copied.
pub fn assemble(
    out: &Path,
    size: u64,
    parts: &[Partition],
    partuuids: &[String],
    meter: &Meter,
) -> Result<u64> {
    let used: u64 = parts.iter().map(|p| p.size).sum::<u64>() + 2 * MIB;
    if used > size {
        bail!(
            "disk size {} MiB is too small: the partitions need {} MiB",
            size / MIB,
            used / MIB
        );
    }
    let disk = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    disk.set_len(size)?;
    drop(disk);
    let mut script = String::from("label: gpt\nfirst-lba: 2048\n");
    let mut start = MIB;
    for (p, uuid) in parts.iter().zip(partuuids) {
        script.push_str(&format!(
            "start={}, size={}, type={}, name=\"{}\", uuid={}\n",
            start / 512,
            p.size / 512,
            p.type_guid,
            p.name,
            uuid
        ));
        start += p.size;
    }
    cmd::run_with_input(
        Command::new("sfdisk")
            .args(["--quiet", "--no-reread", "--no-tell-kernel"])
            .arg(out),
        &script,
    )
    .context("writing the partition table")?;
    let mut disk = OpenOptions::new().write(true).open(out)?;
    let mut lens = Vec::new();
    for p in parts {
        let len = fs::metadata(&p.image)
            .with_context(|| format!("reading {}", p.image.display()))?
            .len();
        if len > p.size {
            bail!("{} is larger than its partition", p.image.display());
        }
        lens.push(len);
    }
    meter.set_total(lens.iter().sum());
    let mut offset = MIB;
    for p in parts {
        meter.set_message(p.name);
        copy_sparse(&p.image, &mut disk, offset, meter)
            .with_context(|| format!("copying the {} filesystem into {}", p.name, out.display()))?;
        offset += p.size;
    }
    disk.sync_all()?;
    Ok(lens.iter().sum())
}

/// Copies `src` into `dst` at `offset`, skipping blocks of zeroes so the result stays sparse;
/// counts the bytes read on `meter`.
fn copy_sparse(src: &Path, dst: &mut File, offset: u64, meter: &Meter) -> Result<()> {
    let mut f = File::open(src)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut pos = offset;
    loop {
        let n = read_full(&mut f, &mut buf)?;
        if n == 0 {
            break;
        }
        for (i, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                dst.seek(SeekFrom::Start(pos + (i * 4096) as u64))?;
                dst.write_all(chunk)?;
            }
        }
        pos += n as u64;
        meter.add(n as u64);
    }
    Ok(())
}

fn read_full(f: &mut File, buf: &mut [u8]) -> Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        let r = f.read(&mut buf[n..])?;
        if r == 0 {
            break;
        }
        n += r;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("lots").is_err());
    }
}
