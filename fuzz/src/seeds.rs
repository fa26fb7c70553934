//! Seeds made in code, for formats whose real examples are made by Stratum itself (cpio,
//! compressed images) or are small enough to spell out; the committed seeds in
//! `fuzz/seeds/<target>/` and the real files `fuzz/run.sh` collects complete them.

use std::io::Write;
use std::path::{Path, PathBuf};

use stratum_initramfs::newc::{Kind, Writer};

/// The committed seed folder of `target`.
pub fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("seeds")
        .join(target)
}

/// The committed seeds of `target`, sorted by file name.
pub fn committed(target: &str) -> Vec<Vec<u8>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir(target))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    files.iter().filter_map(|p| std::fs::read(p).ok()).collect()
}

/// A newc archive of `members` (name, kind, permissions, data), as Stratum writes one.
fn cpio(members: &[(&str, Kind, u32, &[u8])]) -> Vec<u8> {
    let mut w = Writer::new(Vec::new());
    for (name, kind, perm, data) in members {
        let rdev = if *kind == Kind::Char { (5, 1) } else { (0, 0) };
        w.append(name, *kind, *perm, 1_700_000_000, rdev, data)
            .expect("writing to memory");
    }
    w.finish().expect("writing to memory");
    w.into_inner()
}

/// A small image: a directory, an `/init`, a symlink, a device node, a module and the
/// manifest.
fn image() -> Vec<u8> {
    const MANIFEST: &[u8] = b"{\"kver\":\"6.1.0\"}";
    cpio(&[
        ("/etc", Kind::Dir, 0o755, b""),
        ("/etc/stratum", Kind::Dir, 0o755, b""),
        ("/etc/stratum/initramfs.json", Kind::File, 0o644, MANIFEST),
        ("/init", Kind::File, 0o755, b"\x7fELF"),
        ("/sbin", Kind::Symlink, 0o777, b"usr/sbin"),
        ("/dev/console", Kind::Char, 0o600, b""),
        ("/lib/modules/6.1.0/virtio_blk.ko", Kind::File, 0o644, b"m"),
    ])
}

/// An early-microcode archive, as dracut and initramfs-tools put first.
fn microcode() -> Vec<u8> {
    cpio(&[(
        "kernel/x86/microcode/GenuineIntel.bin",
        Kind::File,
        0o644,
        b"ucode",
    )])
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("compressing in memory")
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("compressing in memory");
    e.finish().expect("compressing in memory")
}

fn xz(data: &[u8]) -> Vec<u8> {
    let mut e = xz2::write::XzEncoder::new(Vec::new(), 6);
    e.write_all(data).expect("compressing in memory");
    e.finish().expect("compressing in memory")
}

/// The seeds made in code for `target`.
pub fn generated(target: &str) -> Vec<Vec<u8>> {
    let image = image();
    match target {
        "cpio" => vec![image, microcode()],
        "archive" => {
            let mut concat = microcode();
            concat.extend_from_slice(&[0; 512]);
            concat.extend(zstd(&image));
            vec![
                image.clone(),
                zstd(&image),
                gzip(&image),
                xz(&image),
                concat,
                zstd(&zstd(&image)),
            ]
        }
        "modules" => vec![
            b"kernel/a.ko: kernel/b.ko.xz kernel/c.ko\nkernel/b.ko.xz: kernel/c.ko\nkernel/c.ko:\n\0\
              kernel/fs/ext4.ko\n\0softdep a pre: c post: b\n\0\
              alias pci:v00001AF4d*sv*sd*bc*sc*i* a\nalias fs-ext4 ext4\n\0\
              ext4.alias=fs-ext4\0virtio_pci.alias=pci:v00001AF4d*\0"
                .to_vec(),
            b"\xff\x01\x04".to_vec(),
        ],
        _ => Vec::new(),
    }
}
