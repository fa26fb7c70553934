//! A build's plan: every input an image is made from, resolved and read once.
//!
//! [`resolve`] reads what the image will hold (the init binary, depmod's index files, the
//! resolved modules, decompressed, the firmware they declare, the included trees) and finds
//! what decides the image without being copied into it (the kernel, the configuration files).
//! [`crate::image::build_plan`] writes an image from a plan and nothing else, and
//! [`Plan::input_digest`] hashes the same plan, so an image cached under a digest is always
//! the image of the inputs that digest names.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::config::{self, Mode};
use crate::hostonly::{self, HostDevices};
use crate::modules::{self, IndexFiles, ModuleDb, Resolution, Resolved};
use crate::spec::{prepare_root_path, BuildSpec, Include};
use crate::{firmware, rootfs, sets};

mod digest;
mod read;

pub(crate) use read::read_tree;

/// Everything a build of [`Plan::spec`] reads, resolved and (for what goes into the image) read.
#[derive(Debug)]
pub struct Plan {
    /// The spec the plan was resolved from; [`crate::image::build_plan`] takes the epoch, zstd
    /// settings and the manifest's `input_digest` from here.
    pub spec: BuildSpec,
    /// The kernel's modules directory in the root.
    pub modules_dir: PathBuf,
    /// The kernel image (`<modules dir>/vmlinuz`, else `/boot/vmlinuz-<kver>`), if present.
    /// Not copied into the image, but hashed: a new kernel makes a new image.
    pub vmlinuz: Option<PathBuf>,
    /// The configuration files of the root, in the order they apply ([`config::files`]).
    pub config_files: Vec<PathBuf>,
    /// The init binary: the spec's, or the root's `stratum-prepare-root`.
    pub init: FileInput,
    /// depmod's index files ([`modules::INDEX_FILES`]).
    pub index: IndexFiles,
    /// The module database parsed from [`Plan::index`].
    pub db: ModuleDb,
    /// The modules in load order, and the names found built in, skipped or omitted.
    pub resolution: Resolution,
    /// The modules `/etc/stratum/modules.load` names (the rest load by modalias at boot).
    pub load_always: Vec<String>,
    /// What `--hostonly` found, in that mode.
    pub host: Option<HostDevices>,
    /// The modules' contents, in [`Plan::resolution`] order.
    pub modules: Vec<ModuleInput>,
    /// The firmware the modules declare, sorted by name; empty when the spec leaves it out.
    pub firmware: Vec<FirmwareInput>,
    /// The spec's includes, read from the root.
    pub includes: Vec<IncludeInput>,
}

/// A file read from the host.
#[derive(Debug, Clone)]
pub struct FileInput {
    /// Where it was read.
    pub path: PathBuf,
    /// Its contents.
    pub data: Vec<u8>,
}

/// One resolved module, read.
#[derive(Debug, Clone)]
pub struct ModuleInput {
    /// Its name and path relative to the modules directory (maybe compressed).
    pub module: Resolved,
    /// Its decompressed contents, as stored in the image.
    pub data: Vec<u8>,
    /// The firmware its `.modinfo` declares.
    pub firmware: Vec<String>,
}

/// One firmware file a module declares.
#[derive(Debug, Clone)]
pub struct FirmwareInput {
    /// Its name relative to the firmware directory.
    pub name: String,
    /// Its decompressed contents; `None` when the root does not have it.
    pub data: Option<Vec<u8>>,
}

/// One `--include`, read.
#[derive(Debug, Clone)]
pub struct IncludeInput {
    /// What the spec asked for.
    pub include: Include,
    /// The source on the host, resolved inside the root.
    pub source: PathBuf,
    /// The tree under it, parents first, with paths in the image.
    pub entries: Vec<TreeEntry>,
}

/// One file, directory or symlink of an included tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeEntry {
    /// Absolute path in the image.
    pub path: String,
    /// `st_mode` of the source (type and permission bits).
    pub mode: u32,
    /// What it is.
    pub node: TreeNode,
}

/// The kind and contents of a [`TreeEntry`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TreeNode {
    /// A directory (its entries follow it).
    Dir,
    /// A regular file and its contents.
    File(Vec<u8>),
    /// A symbolic link and its target.
    Symlink(String),
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

/// The init binary the spec names, or the root's.
fn read_init(spec: &BuildSpec) -> Result<FileInput> {
    let opts = &spec.options;
    let path = match &opts.init {
        Some(p) => p.clone(),
        None => rootfs::resolve(&opts.root, prepare_root_path())?,
    };
    let data = std::fs::read(&path).with_context(|| {
        format!(
            "reading the init binary {}: install Stratum into the root with `make install DESTDIR={}` or pass --init",
            path.display(),
            opts.root.display()
        )
    })?;
    Ok(FileInput { path, data })
}

/// The kernel image of `kver`: OSTree and Fedora keep it next to the modules, Debian in `/boot`.
fn find_kernel(root: &Path, kver: &str, modules_dir: &Path) -> Result<Option<PathBuf>> {
    let candidates = [
        modules_dir.join("vmlinuz"),
        rootfs::resolve(root, Path::new(&format!("boot/vmlinuz-{kver}")))?,
    ];
    Ok(candidates.into_iter().find(|p| p.is_file()))
}

/// Resolve and read everything a build of `spec` is made from.
pub fn resolve(spec: &BuildSpec) -> Result<Plan> {
    let opts = &spec.options;
    let init = read_init(spec)?;
    let modules_dir = modules::find_modules_dir(&opts.root, &opts.kver)?;
    let vmlinuz = find_kernel(&opts.root, &opts.kver, &modules_dir)?;
    let config_files = config::files(&opts.root)?;
    let index = IndexFiles::read(&modules_dir)?;
    let db = ModuleDb::from_index(&index)?;
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
    let resolution = db.resolve_with(&required, &optional, &omit)?;
    // Which modules /etc/stratum/modules.load names: all, or the always-loaded ones with their
    // dependencies; the rest are loaded by modalias at boot.
    let load_always: Vec<String> = match &always {
        None => resolution.modules.iter().map(|m| m.name.clone()).collect(),
        Some(names) => {
            let a = db.resolve_with(&[] as &[&str], names, &omit)?;
            resolution
                .modules
                .iter()
                .filter(|m| a.modules.iter().any(|x| x.name == m.name))
                .map(|m| m.name.clone())
                .collect()
        }
    };
    let modules = read::modules(&modules_dir, &resolution.modules, spec.jobs)?;
    let mut firmware = Vec::new();
    if spec.firmware {
        let names: BTreeSet<&String> = modules.iter().flat_map(|m| &m.firmware).collect();
        for name in names {
            firmware.push(FirmwareInput {
                name: name.clone(),
                data: firmware::find(&opts.root, &opts.kver, name)?.map(|(_, d)| d),
            });
        }
    }
    let includes = spec
        .includes
        .iter()
        .map(|inc| read::include(&opts.root, inc))
        .collect::<Result<_>>()?;
    Ok(Plan {
        spec: spec.clone(),
        modules_dir,
        vmlinuz,
        config_files,
        init,
        index,
        db,
        resolution,
        load_always,
        host,
        modules,
        firmware,
        includes,
    })
}

#[cfg(test)]
mod tests;
