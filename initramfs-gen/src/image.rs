//! Building Stratum's native initramfs: `/init` is the static `stratum-prepare-root`, which loads
//! the modules listed in `/etc/stratum/modules.load`, mounts the root and switches to it.
//!
//! The output is bit-for-bit reproducible: members sorted by path, uid/gid 0, every mtime set to
//! `source_date_epoch`, sequential inode numbers, no build-host paths or times in any file.
//! Modules are read and decompressed on several threads, but their results are placed by
//! index, and zstd's multi-threaded mode produces the same bytes for any number of workers
//! (≥ 1), so neither changes the output.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::Mode;
use crate::hostonly::{self, HostDevices};
use crate::modules::{self, ModuleDb, Resolved};
use crate::newc::{self, Kind};
use crate::{firmware, modinfo, output, rootfs, sets};

pub use crate::sets::DEFAULT_MODULES;
pub use crate::spec::{BuildOptions, BuildSpec, Include, PREPARE_ROOT_PATH};

/// What [`build`] wrote.
#[derive(Debug, Clone, Serialize)]
pub struct BuildReport {
    /// Module selection mode.
    pub mode: Mode,
    /// Archive members, without the trailer.
    pub members: usize,
    /// Modules in the image, in load order.
    pub modules: Vec<String>,
    /// Modules listed in `/etc/stratum/modules.load` (the rest load by modalias at boot).
    pub load_always: Vec<String>,
    /// Requested modules that are compiled into the kernel.
    pub builtin: Vec<String>,
    /// Names of the mode's set that this kernel does not have.
    pub skipped: Vec<String>,
    /// Modules left out on request (or because they need one that was).
    pub omitted: Vec<String>,
    /// Firmware files included (names relative to `/usr/lib/firmware`).
    pub firmware: Vec<String>,
    /// Firmware declared by included modules but not found in the root.
    pub missing_firmware: Vec<String>,
    /// What `--hostonly` found, in that mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostonly: Option<HostDevices>,
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
    mode: Mode,
    modules: Vec<&'a str>,
    load_always: &'a [String],
    builtin: &'a [String],
    firmware: &'a [String],
    source_date_epoch: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    input_digest: Option<&'a str>,
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

/// Build the image described by `opts` (the `default` mode) and write it atomically to `output`.
pub fn build(opts: &BuildOptions, output: &Path) -> Result<BuildReport> {
    build_spec(&BuildSpec::from(opts.clone()), output)
}

/// The module names a spec asks for.
struct Request {
    /// Names that must exist.
    required: Vec<String>,
    /// Names taken if the kernel has them.
    optional: Vec<String>,
    /// Names for `modules.load` (with their dependencies); `None`: every module.
    always: Option<Vec<String>>,
    /// What `--hostonly` found.
    host: Option<HostDevices>,
}

fn requested(spec: &BuildSpec, db: &ModuleDb) -> Result<Request> {
    let add = spec.add_modules.clone();
    Ok(match spec.mode {
        Mode::Default => {
            let mut required = spec.options.modules.clone();
            required.extend(add);
            // Device drivers load at boot only when a device asks for them by modalias (a
            // virtio-blk machine does not pay for the SCSI stack); the rest always loads.
            let always = required
                .iter()
                .filter(|m| !db.has_device_alias(m))
                .cloned()
                .collect();
            Request {
                required,
                optional: Vec::new(),
                always: Some(always),
                host: None,
            }
        }
        Mode::Generic => {
            let always = sets::GENERIC_ALWAYS
                .iter()
                .map(|s| s.to_string())
                .chain(add.iter().filter(|m| !db.has_device_alias(m)).cloned())
                .collect();
            Request {
                required: add,
                optional: sets::generic_modules()
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                always: Some(always),
                host: None,
            }
        }
        Mode::Hostonly => {
            let host = hostonly::scan(&spec.host).context("--hostonly")?;
            Request {
                required: add,
                optional: hostonly::module_names(db, &host),
                always: None,
                host: Some(host),
            }
        }
    })
}

/// Read (and decompress) the modules on `jobs` threads; results keep the input order, so the
/// image does not depend on scheduling. Returns each module's data and declared firmware.
fn read_modules(dir: &Path, mods: &[Resolved], jobs: usize) -> Result<Vec<(Vec<u8>, Vec<String>)>> {
    let jobs = match jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    }
    .clamp(1, mods.len().max(1));
    let read = |m: &Resolved| -> Result<(Vec<u8>, Vec<String>)> {
        let data = modules::read_module(&dir.join(&m.path))?;
        // A module that is not ELF (test fixtures) simply declares no firmware.
        let fw = modinfo::firmware(&data).unwrap_or_default();
        Ok((data, fw))
    };
    if jobs == 1 {
        return mods.iter().map(read).collect();
    }
    let chunk = mods.len().div_ceil(jobs);
    std::thread::scope(|s| {
        let handles: Vec<_> = mods
            .chunks(chunk)
            .map(|c| s.spawn(move || c.iter().map(read).collect::<Result<Vec<_>>>()))
            .collect();
        let mut out = Vec::with_capacity(mods.len());
        for h in handles {
            let part = h
                .join()
                .map_err(|_| anyhow::anyhow!("a module reader thread panicked"))??;
            out.extend(part);
        }
        Ok(out)
    })
}

/// Add `inc` from the root to the tree, recursing into directories.
fn add_include(tree: &mut Tree, root: &Path, inc: &Include) -> Result<()> {
    let src = rootfs::resolve(root, Path::new(&inc.src))?;
    add_path(tree, &src, &inc.dest)
        .with_context(|| format!("including {} (from {})", inc.src, src.display()))
}

fn add_path(tree: &mut Tree, host: &Path, dest: &str) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::symlink_metadata(host).with_context(|| format!("reading {}", host.display()))?;
    let ft = meta.file_type();
    if ft.is_symlink() {
        let target = std::fs::read_link(host)
            .with_context(|| format!("reading symlink {}", host.display()))?;
        tree.add(dest, Node::Symlink(target.to_string_lossy().into_owned()));
    } else if ft.is_dir() {
        tree.dirs(dest);
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("reading directory {}", host.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", host.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            add_path(
                tree,
                &e.path(),
                &format!("{dest}/{}", name.to_string_lossy()),
            )?;
        }
    } else if ft.is_file() {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        tree.file(dest, meta.permissions().mode() & 0o7777, data);
    } else {
        bail!(
            "{} is not a regular file, directory or symlink",
            host.display()
        );
    }
    Ok(())
}

/// Build the image described by `spec` and write it atomically to `output`.
pub fn build_spec(spec: &BuildSpec, output: &Path) -> Result<BuildReport> {
    let opts = &spec.options;
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
    let Request {
        required,
        optional,
        always,
        host,
    } = requested(spec, &db)?;
    // A module the admin adds wins over one the configuration omits.
    let omit: Vec<&String> = spec
        .omit_modules
        .iter()
        .filter(|o| {
            !spec
                .add_modules
                .iter()
                .any(|a| modules::normalize(a) == modules::normalize(o))
        })
        .collect();
    let resolved = db.resolve_with(&required, &optional, &omit)?;
    // Which modules /etc/stratum/modules.load names: all, or (generic) the always-loaded ones
    // with their dependencies; the rest are loaded by modalias at boot.
    let load_always: Vec<String> = match &always {
        None => resolved.modules.iter().map(|m| m.name.clone()).collect(),
        Some(names) => {
            let a = db.resolve_with(&[] as &[&str], names, &omit)?;
            resolved
                .modules
                .iter()
                .filter(|m| a.modules.iter().any(|x| x.name == m.name))
                .map(|m| m.name.clone())
                .collect()
        }
    };

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
    let mut names = Vec::new();
    let mut wanted_fw = std::collections::BTreeSet::new();
    let contents = read_modules(&dir, &resolved.modules, spec.jobs)?;
    for (m, (data, fw)) in resolved.modules.iter().zip(contents) {
        let stored = modules::uncompressed_path(&m.path);
        tree.file(&format!("{moddir}/{stored}"), 0o644, data);
        if load_always.contains(&m.name) {
            load.push_str(&format!("{moddir}/{stored}\n"));
        }
        names.push(m.name.as_str());
        wanted_fw.extend(fw);
    }
    let mut fw_found = Vec::new();
    let mut fw_missing = Vec::new();
    if spec.firmware {
        for name in wanted_fw {
            match firmware::find(&opts.root, kver, &name)? {
                Some((_, data)) => {
                    tree.file(&format!("{}/{name}", firmware::FIRMWARE_DIR), 0o644, data);
                    fw_found.push(name);
                }
                None => fw_missing.push(name),
            }
        }
    }
    // The index files, for exactly the modules present, with paths as stored (decompressed).
    let lines = |v: Vec<String>| {
        v.into_iter()
            .flat_map(|l| [l, "\n".into()])
            .collect::<String>()
    };
    tree.file(
        &format!("{moddir}/modules.dep"),
        0o644,
        lines(db.dep_lines(&resolved)).into_bytes(),
    );
    tree.file(
        &format!("{moddir}/modules.alias"),
        0o644,
        lines(db.alias_lines(&resolved)).into_bytes(),
    );
    for name in ["modules.builtin", "modules.softdep"] {
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
        mode: spec.mode,
        modules: names.clone(),
        load_always: &load_always,
        builtin: &resolved.builtin,
        firmware: &fw_found,
        source_date_epoch: opts.source_date_epoch,
        input_digest: spec.input_digest.as_deref(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    tree.file("/etc/stratum/initramfs.json", 0o644, json);
    for inc in &spec.includes {
        add_include(&mut tree, &opts.root, inc)?;
    }

    let written = output::write_zstd_cpio(output, opts.zstd_level, spec.zstd_threads, |w| {
        tree.write(w, opts.source_date_epoch)
    })?;
    Ok(BuildReport {
        mode: spec.mode,
        members: tree.0.len(),
        modules: names.into_iter().map(str::to_string).collect(),
        load_always,
        builtin: resolved.builtin,
        skipped: resolved.skipped,
        omitted: resolved.omitted,
        firmware: fw_found,
        missing_firmware: fw_missing,
        hostonly: host,
        compressed_size: written.compressed_size,
        uncompressed_size: written.uncompressed_size,
        blake3: written.blake3,
    })
}

#[cfg(test)]
mod tests;
