//! Building Stratum's native initramfs: `/init` is the static `stratum-prepare-root`, which loads
//! the modules listed in `/etc/stratum/modules.load`, mounts the root and switches to it.
//!
//! The output is bit-for-bit reproducible: members sorted by path, uid/gid 0, every mtime set to
//! `source_date_epoch`, sequential inode numbers, no build-host paths or times in any file, and a
//! single-threaded zstd frame.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::modules::{self, ModuleDb};
use crate::newc::{self, Kind};
use crate::{output, rootfs};

/// Modules a QEMU guest with a virtio (blk or scsi) disk and an ext4 root needs. Built-in names
/// are skipped: on Debian 12's 6.1 cloud kernel ext4 (with jbd2, mbcache, crc16) and
/// crc32c_generic are built in, while virtio_pci, virtio_blk, virtio_scsi and sd_mod are modules
/// (pulling in virtio, virtio_ring, virtio_pci_{modern,legacy}_dev, scsi_mod, scsi_common).
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ext4",
    "crc32c_generic",
];

/// Where OS images install the init binary, relative to their root.
pub const PREPARE_ROOT_PATH: &str = "usr/lib/stratum/stratum-prepare-root";

/// What to put into an image.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// OS root to take kernel modules (and, by default, the init binary) from.
    pub root: PathBuf,
    /// Kernel version: modules come from `<root>/usr/lib/modules/<kver>` or `<root>/lib/modules/<kver>`.
    pub kver: String,
    /// Host path of the init binary; default `<root>/usr/lib/stratum/stratum-prepare-root`.
    pub init: Option<PathBuf>,
    /// Module names to include with their dependencies.
    pub modules: Vec<String>,
    /// Modification time of every member (`SOURCE_DATE_EPOCH`).
    pub source_date_epoch: u64,
    /// zstd compression level.
    pub zstd_level: i32,
}

impl BuildOptions {
    /// Options with the defaults: [`DEFAULT_MODULES`], init from the root, epoch 0, zstd level 3.
    pub fn new(root: impl Into<PathBuf>, kver: impl Into<String>) -> Self {
        BuildOptions {
            root: root.into(),
            kver: kver.into(),
            init: None,
            modules: DEFAULT_MODULES.iter().map(|s| s.to_string()).collect(),
            source_date_epoch: 0,
            zstd_level: 3,
        }
    }
}

/// What [`build`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Archive members, without the trailer.
    pub members: usize,
    /// Modules in the image, in load order.
    pub modules: Vec<String>,
    /// Requested modules that are compiled into the kernel.
    pub builtin: Vec<String>,
    /// Size of the output file.
    pub compressed_size: u64,
    /// Size of the cpio archive before compression.
    pub uncompressed_size: u64,
    /// BLAKE3 digest (hex) of the output file.
    pub blake3: String,
}

/// One member of the image before it is written.
enum Node {
    Dir,
    File { perm: u32, data: Vec<u8> },
    Symlink(String),
    Char(u32, u32),
}

/// The image's members by absolute path; a `BTreeMap` sorts parents before their children.
#[derive(Default)]
struct Tree(BTreeMap<String, Node>);

impl Tree {
    fn dirs(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            self.0.entry(cur.clone()).or_insert(Node::Dir);
        }
    }

    fn add(&mut self, path: &str, node: Node) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dirs(parent);
        }
        self.0.insert(path.to_string(), node);
    }

    fn file(&mut self, path: &str, perm: u32, data: Vec<u8>) {
        self.add(path, Node::File { perm, data });
    }

    fn write<W: Write>(&self, w: &mut newc::Writer<W>, mtime: u64) -> Result<()> {
        for (path, node) in &self.0 {
            let r = match node {
                Node::Dir => w.append(path, Kind::Dir, 0o755, mtime, (0, 0), &[]),
                Node::File { perm, data } => w.append(path, Kind::File, *perm, mtime, (0, 0), data),
                Node::Symlink(t) => {
                    w.append(path, Kind::Symlink, 0o777, mtime, (0, 0), t.as_bytes())
                }
                Node::Char(ma, mi) => w.append(path, Kind::Char, 0o600, mtime, (*ma, *mi), &[]),
            };
            r.with_context(|| format!("writing {path} to the archive"))?;
        }
        Ok(())
    }
}

/// Contents of `/etc/stratum/initramfs.json`: what the image holds, with nothing that varies
/// between two builds of the same inputs.
#[derive(Serialize)]
struct Manifest<'a> {
    generator: &'static str,
    version: &'static str,
    kver: &'a str,
    modules: Vec<&'a str>,
    builtin: &'a [String],
    source_date_epoch: u64,
}

/// Refuse a dynamically linked ELF `/init`: the image has no libc or loader, so the kernel
/// would panic with "No working init found" instead of running it.
fn check_static(init: &Path, data: &[u8]) -> Result<()> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[5] != 1 {
        return Ok(()); // not little-endian ELF: nothing we can check
    }
    let u16_at = |o: usize| {
        data.get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
    };
    let u32_at = |o: usize| {
        data.get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let (phoff, entsize, num) = if data[4] == 2 {
        let off = data
            .get(0x20..0x28)
            .map(|b| b.iter().rev().fold(0u64, |a, x| a << 8 | u64::from(*x)));
        (off.map(|o| o as usize), u16_at(0x36), u16_at(0x38))
    } else {
        (u32_at(0x1c).map(|o| o as usize), u16_at(0x2a), u16_at(0x2c))
    };
    let (Some(phoff), Some(entsize), Some(num)) = (phoff, entsize, num) else {
        return Ok(());
    };
    for i in 0..num {
        if u32_at(phoff.saturating_add(i * entsize)) == Some(3) {
            bail!(
                "init binary {} is dynamically linked (it has an ELF interpreter); the initramfs \
                 has no libc, so build stratum-prepare-root statically",
                init.display()
            );
        }
    }
    Ok(())
}

fn os_release() -> String {
    let v = env!("CARGO_PKG_VERSION");
    format!(
        "NAME=\"Stratum initramfs\"\nID=stratum-initramfs\nVERSION_ID={v}\nPRETTY_NAME=\"Stratum initramfs {v}\"\n"
    )
}

/// Build the image described by `opts` and write it atomically to `output`.
pub fn build(opts: &BuildOptions, output: &Path) -> Result<BuildReport> {
    let init_path = match &opts.init {
        Some(p) => p.clone(),
        None => rootfs::resolve(&opts.root, Path::new(PREPARE_ROOT_PATH))?,
    };
    let init = std::fs::read(&init_path).with_context(|| {
        format!(
            "reading the init binary {}: install Stratum into the root with `make install DESTDIR={}` or pass --init",
            init_path.display(),
            opts.root.display()
        )
    })?;
    check_static(&init_path, &init)?;

    let dir = modules::find_modules_dir(&opts.root, &opts.kver)?;
    let db = ModuleDb::load(&dir)?;
    let resolved = db.resolve(&opts.modules)?;

    let kver = &opts.kver;
    let moddir = format!("/usr/lib/modules/{kver}");
    let mut tree = Tree::default();
    for d in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/sysroot",
        "/newroot",
        "/etc/stratum",
        &moddir,
    ] {
        tree.dirs(d);
    }
    tree.add("/lib", Node::Symlink("usr/lib".into()));
    tree.add("/dev/console", Node::Char(5, 1));
    tree.file("/init", 0o755, init);
    tree.file("/etc/initrd-release", 0o644, os_release().into_bytes());

    let mut load = String::new();
    let mut dep = String::new();
    let mut names = Vec::new();
    for m in &resolved.modules {
        let stored = modules::uncompressed_path(&m.path);
        let data = modules::read_module(&dir.join(&m.path))?;
        tree.file(&format!("{moddir}/{stored}"), 0o644, data);
        load.push_str(&format!("{moddir}/{stored}\n"));
        names.push(m.name.as_str());
    }
    // A modules.dep for exactly the modules present, with the paths as stored (decompressed).
    for line in db.dep_lines(&resolved) {
        dep.push_str(&line);
        dep.push('\n');
    }
    tree.file(&format!("{moddir}/modules.dep"), 0o644, dep.into_bytes());
    for name in ["modules.builtin", "modules.alias", "modules.softdep"] {
        let p = dir.join(name);
        if p.is_file() {
            let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
            tree.file(&format!("{moddir}/{name}"), 0o644, data);
        }
    }
    tree.file("/etc/stratum/modules.load", 0o644, load.into_bytes());
    let manifest = Manifest {
        generator: env!("CARGO_PKG_NAME"),
        version: env!("CARGO_PKG_VERSION"),
        kver,
        modules: names.clone(),
        builtin: &resolved.builtin,
        source_date_epoch: opts.source_date_epoch,
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    tree.file("/etc/stratum/initramfs.json", 0o644, json);

    let written = output::write_zstd_cpio(output, opts.zstd_level, |w| {
        tree.write(w, opts.source_date_epoch)
    })?;
    Ok(BuildReport {
        members: tree.0.len(),
        modules: names.into_iter().map(str::to_string).collect(),
        builtin: resolved.builtin,
        compressed_size: written.compressed_size,
        uncompressed_size: written.uncompressed_size,
        blake3: written.blake3,
    })
}

#[cfg(test)]
mod tests;
