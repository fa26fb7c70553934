//! Building Stratum's native initramfs: `/init` is the static `stratum-prepare-root`, which loads
//! the modules listed in `/etc/stratum/modules.load`, mounts the root and switches to it.
//!
//! An image is written from a [`Plan`] alone ([`build_plan`]); [`build_spec`] resolves the plan
//! first. The output is bit-for-bit reproducible: members sorted by path, uid/gid 0, every
//! mtime set to `source_date_epoch`, sequential inode numbers, no build-host paths or times in
//! any file. Modules are read on several threads but placed by index, and zstd's
//! multi-threaded mode produces the same bytes for any number of workers (≥ 1), so neither
//! changes the output.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::config::Mode;
use crate::hostonly::HostDevices;
use crate::modules;
use crate::newc::{self, Kind};
use crate::plan::{self, Plan, TreeNode};
use crate::{firmware, output};

pub use crate::sets::DEFAULT_MODULES;
pub use crate::spec::{prepare_root_path, BuildOptions, BuildSpec, Include};

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

/// One member of the image before it is written; file data is borrowed from the plan where
/// it can be, so a build does not hold every module twice.
enum Node<'a> {
    Dir,
    File { perm: u32, data: Cow<'a, [u8]> },
    Symlink(String),
    Char(u32, u32),
}

/// The image's members by absolute path; a `BTreeMap` sorts parents before their children.
#[derive(Default)]
struct Tree<'a>(BTreeMap<String, Node<'a>>);

impl<'a> Tree<'a> {
    fn dirs(&mut self, path: &str) {
        let mut cur = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            cur.push('/');
            cur.push_str(part);
            self.0.entry(cur.clone()).or_insert(Node::Dir);
        }
    }

    fn add(&mut self, path: &str, node: Node<'a>) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dirs(parent);
        }
        self.0.insert(path.to_string(), node);
    }

    fn file(&mut self, path: &str, perm: u32, data: impl Into<Cow<'a, [u8]>>) {
        let data = data.into();
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

/// Build the image described by `spec` and write it atomically to `output`.
pub fn build_spec(spec: &BuildSpec, output: &Path) -> Result<BuildReport> {
    build_plan(&plan::resolve(spec)?, output)
}

/// Write the image of `plan` atomically to `output`, reading nothing else.
pub fn build_plan(plan: &Plan, output: &Path) -> Result<BuildReport> {
    let spec = &plan.spec;
    let opts = &spec.options;
    check_static(&plan.init.path, &plan.init.data)?;
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
    tree.file("/init", 0o755, &plan.init.data[..]);
    tree.file("/etc/initrd-release", 0o644, os_release().into_bytes());

    let mut load = String::new();
    let mut names = Vec::new();
    for m in &plan.modules {
        let stored = modules::uncompressed_path(&m.module.path);
        tree.file(&format!("{moddir}/{stored}"), 0o644, &m.data[..]);
        if plan.load_always.contains(&m.module.name) {
            load.push_str(&format!("{moddir}/{stored}\n"));
        }
        names.push(m.module.name.as_str());
    }
    let mut fw_found = Vec::new();
    let mut fw_missing = Vec::new();
    for fw in &plan.firmware {
        match &fw.data {
            Some(data) => {
                let path = format!("{}/{}", firmware::FIRMWARE_DIR, fw.name);
                tree.file(&path, 0o644, &data[..]);
                fw_found.push(fw.name.clone());
            }
            None => fw_missing.push(fw.name.clone()),
        }
    }
    // The index files, for exactly the modules present, with paths as stored (decompressed).
    let lines = |v: Vec<String>| {
        v.into_iter()
            .flat_map(|l| [l, "\n".into()])
            .collect::<String>()
    };
    let resolved = &plan.resolution;
    tree.file(
        &format!("{moddir}/modules.dep"),
        0o644,
        lines(plan.db.dep_lines(resolved)).into_bytes(),
    );
    tree.file(
        &format!("{moddir}/modules.alias"),
        0o644,
        lines(plan.db.alias_lines(resolved)).into_bytes(),
    );
    for name in ["modules.builtin", "modules.softdep"] {
        if let Some(data) = plan.index.get(name) {
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
        load_always: &plan.load_always,
        builtin: &resolved.builtin,
        firmware: &fw_found,
        source_date_epoch: opts.source_date_epoch,
        input_digest: spec.input_digest.as_deref(),
    };
    let mut json = serde_json::to_vec_pretty(&manifest)?;
    json.push(b'\n');
    tree.file("/etc/stratum/initramfs.json", 0o644, json);
    // Includes come last: they replace generated files of the same name.
    for e in plan.includes.iter().flat_map(|i| &i.entries) {
        match &e.node {
            TreeNode::Dir => tree.dirs(&e.path),
            TreeNode::File(data) => tree.file(&e.path, e.mode & 0o7777, &data[..]),
            TreeNode::Symlink(target) => tree.add(&e.path, Node::Symlink(target.clone())),
        }
    }

    let written = output::write_zstd_cpio(output, opts.zstd_level, spec.zstd_threads, |w| {
        tree.write(w, opts.source_date_epoch)
    })?;
    Ok(BuildReport {
        mode: spec.mode,
        members: tree.0.len(),
        modules: names.into_iter().map(str::to_string).collect(),
        load_always: plan.load_always.clone(),
        builtin: resolved.builtin.clone(),
        skipped: resolved.skipped.clone(),
        omitted: resolved.omitted.clone(),
        firmware: fw_found,
        missing_firmware: fw_missing,
        hostonly: plan.host.clone(),
        compressed_size: written.compressed_size,
        uncompressed_size: written.uncompressed_size,
        blake3: written.blake3,
    })
}

#[cfg(test)]
mod tests;
