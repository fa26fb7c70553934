//! Kernel module resolution from depmod's index files in `/usr/lib/modules/<kver>`.
//!
//! `modules.dep` gives each module's full (transitive) dependency list; we compute the load order
//! ourselves by a depth-first walk, so a dependency is always loaded before its users whatever
//! order depmod listed them in. Names in `modules.builtin` are compiled into the kernel and
//! need nothing (`modules.builtin.modinfo` adds their aliases); `softdep ... pre:` entries of
//! `modules.softdep` are added before their module (best effort, as modprobe does); exact
//! (non-glob) names in `modules.alias` are accepted as requested names, and device modaliases
//! are matched against all of its patterns ([`ModuleDb::match_modalias`]).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::rootfs;
use stratum_prepare_root::fnmatch::{fnmatch, is_pattern};

mod index;
pub use index::{IndexFiles, INDEX_FILES};

/// Errors of module resolution that callers may want to tell apart.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// A requested module is neither a module file, built in, nor an alias.
    #[error(
        "unknown kernel module {name:?}: not in modules.dep, modules.builtin or modules.alias of {dir}"
    )]
    Unknown {
        /// The requested name.
        name: String,
        /// The modules directory searched.
        dir: PathBuf,
    },
    /// `modules.dep` names a dependency that has no entry of its own.
    #[error("modules.dep in {dir}: {module} depends on {dep}, which has no entry")]
    MissingDep {
        /// The module whose dependency is missing.
        module: String,
        /// The dependency path as listed.
        dep: String,
        /// The modules directory.
        dir: PathBuf,
    },
    /// `modules.dep` has a cycle (depmod refuses to write one, so the file is corrupt).
    #[error("dependency cycle in modules.dep: {0}")]
    Cycle(String),
    /// A chain of dependencies longer than [`MAX_DEP_DEPTH`]: no kernel has one, and
    /// following it would exhaust the stack.
    #[error("modules.dep: {module} needs a chain of more than {MAX_DEP_DEPTH} modules")]
    TooDeep {
        /// The module at the start of the chain.
        module: String,
    },
}

/// The longest chain of module dependencies followed (real kernels' are under 20 long).
pub const MAX_DEP_DEPTH: usize = 256;

/// The kernel's module name for a requested name: `-` and `_` are the same to the kernel.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Suffixes of module files, longest first.
const SUFFIXES: &[&str] = &[".ko.zst", ".ko.xz", ".ko.gz", ".ko"];

/// The normalized module name of a module path (`kernel/fs/ext4/ext4.ko.xz` -> `ext4`).
pub fn name_from_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = SUFFIXES
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    normalize(stem)
}

/// The path a module is stored at in the image: compressed modules become plain `.ko`, because
/// prepare-root calls `finit_module` without `MODULE_INIT_COMPRESSED_FILE`.
pub fn uncompressed_path(path: &str) -> String {
    for s in &SUFFIXES[..3] {
        if let Some(base) = path.strip_suffix(s) {
            return format!("{base}.ko");
        }
    }
    path.to_string()
}

/// Read a module file, decompressing `.ko.zst`, `.ko.xz` and `.ko.gz`.
pub fn read_module(path: &Path) -> Result<Vec<u8>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let name = path.to_string_lossy();
    let mut out = Vec::new();
    let res = if name.ends_with(".zst") {
        zstd::stream::read::Decoder::new(file).and_then(|mut d| d.read_to_end(&mut out))
    } else if name.ends_with(".xz") {
        xz2::read::XzDecoder::new(file).read_to_end(&mut out)
    } else if name.ends_with(".gz") {
        flate2::read::GzDecoder::new(file).read_to_end(&mut out)
    } else {
        let mut file = file;
        file.read_to_end(&mut out)
    };
    res.with_context(|| format!("reading {}", path.display()))?;
    Ok(out)
}

/// Kernel versions with a modules directory holding `modules.dep` in `root`, sorted.
pub fn kernel_versions(root: &Path) -> Result<Vec<String>> {
    let mut versions = BTreeSet::new();
    for base in ["usr/lib/modules", "lib/modules"] {
        let base = rootfs::resolve(root, Path::new(base))?;
        for e in std::fs::read_dir(&base).into_iter().flatten().flatten() {
            if e.path().join("modules.dep").is_file() {
                versions.insert(e.file_name().to_string_lossy().into_owned());
            }
        }
    }
    Ok(versions.into_iter().collect())
}

/// The kernel version to build for when none was named: the only one in `root`.
pub fn only_kernel_version(root: &Path) -> Result<String> {
    let v = kernel_versions(root)?;
    match v.as_slice() {
        [one] => Ok(one.clone()),
        [] => anyhow::bail!(
            "no kernel in {}: no usr/lib/modules/<kver>/modules.dep (install a kernel and run depmod)",
            root.display()
        ),
        _ => anyhow::bail!(
            "{} has several kernels; choose one with --kver: {}",
            root.display(),
            v.join(", ")
        ),
    }
}

/// Find the modules directory of `kver` inside `root`: `usr/lib/modules/<kver>`, then
/// `lib/modules/<kver>`, each resolved with `root` as `/`.
pub fn find_modules_dir(root: &Path, kver: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    for base in ["usr/lib/modules", "lib/modules"] {
        let base = rootfs::resolve(root, Path::new(base))?;
        let dir = base.join(kver);
        if dir.is_dir() {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
    }
    let versions = kernel_versions(root)?;
    let present = if versions.is_empty() {
        "none".to_string()
    } else {
        versions.join(", ")
    };
    anyhow::bail!(
        "no kernel modules for {kver} in {}: tried {}; kernel versions present: {present}",
        root.display(),
        tried.join(" and ")
    )
}

/// One module file with its dependencies, as listed in `modules.dep`.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    deps: Vec<String>,
}

/// A module chosen for the image.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Resolved {
    /// Normalized module name.
    pub name: String,
    /// Path relative to the modules directory, as in `modules.dep` (maybe compressed).
    pub path: String,
}

/// The outcome of [`ModuleDb::resolve`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Resolution {
    /// Modules to load, dependencies first.
    pub modules: Vec<Resolved>,
    /// Requested names that are compiled into the kernel.
    pub builtin: Vec<String>,
    /// Optional names (of a mode's set) this kernel does not have.
    pub skipped: Vec<String>,
    /// Modules left out on request, and modules dropped because they need one of those.
    pub omitted: Vec<String>,
}

/// depmod's index of one kernel's modules.
#[derive(Debug)]
pub struct ModuleDb {
    dir: PathBuf,
    modules: BTreeMap<String, Entry>,
    builtin: BTreeSet<String>,
    softdep_pre: BTreeMap<String, Vec<String>>,
    aliases: BTreeMap<String, Vec<String>>,
    /// Every `alias PATTERN MODULE` line, in file order, then the built-in modules' aliases.
    patterns: Vec<(String, String)>,
}

fn content_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl ModuleDb {
    /// Load `modules.dep` (required), and `modules.builtin`, `modules.softdep`, `modules.alias`,
    /// `modules.builtin.modinfo` (each optional) from a modules directory.
    pub fn load(dir: &Path) -> Result<Self> {
        Self::from_index(&IndexFiles::read(dir)?)
    }

    /// The database of index files already read (see [`IndexFiles`]).
    pub fn from_index(index: &IndexFiles) -> Result<Self> {
        let dir = index.dir();
        if index.get("modules.dep").is_none() {
            anyhow::bail!(
                "reading {}: no such file (if the kernel was installed without running depmod, run `depmod -b <root> <kver>`)",
                dir.join("modules.dep").display()
            );
        }
        let mut db = Self::parse(
            dir,
            index.text("modules.dep")?,
            index.text("modules.builtin")?,
            index.text("modules.softdep")?,
            index.text("modules.alias")?,
        );
        if let Some(data) = index.get("modules.builtin.modinfo") {
            db.add_builtin_modinfo(data);
        }
        Ok(db)
    }

    /// Add the names and aliases of built-in modules from `modules.builtin.modinfo`
    /// (NUL-separated `module.key=value` records), so modaliases of devices whose driver is
    /// built in resolve to a built-in name instead of nothing.
    pub fn add_builtin_modinfo(&mut self, data: &[u8]) {
        for rec in data.split(|b| *b == 0) {
            let Ok(rec) = std::str::from_utf8(rec) else {
                continue;
            };
            let Some((key, value)) = rec.split_once('=') else {
                continue;
            };
            let Some((module, field)) = key.split_once('.') else {
                continue;
            };
            let module = normalize(module);
            if field == "alias" {
                self.patterns.push((value.to_string(), module.clone()));
            }
            self.builtin.insert(module);
        }
    }

    /// Build the index from the files' contents (`dir` is only used in messages and paths).
    pub fn parse(dir: &Path, dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut modules = BTreeMap::new();
        for line in content_lines(dep) {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            // The name comes from the trimmed path too, or `a.ko :` would be module "a.ko ".
            let path = path.trim();
            let entry = Entry {
                path: path.to_string(),
                deps: deps.split_whitespace().map(str::to_string).collect(),
            };
            // depmod writes one entry per name; if not, the first (highest priority) wins.
            modules.entry(name_from_path(path)).or_insert(entry);
        }
        let builtin = content_lines(builtin).map(name_from_path).collect();
        let mut softdep_pre: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for line in content_lines(softdep) {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            let mut pre = false;
            for w in words {
                match w {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => softdep_pre
                        .entry(normalize(module))
                        .or_default()
                        .push(normalize(name)),
                    _ => {}
                }
            }
        }
        let mut aliases: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut patterns = Vec::new();
        for line in content_lines(alias) {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if !is_pattern(pat) {
                    aliases
                        .entry(normalize(pat))
                        .or_default()
                        .push(normalize(module));
                }
                patterns.push((pat.to_string(), normalize(module)));
            }
        }
        ModuleDb {
            dir: dir.to_path_buf(),
            modules,
            builtin,
            softdep_pre,
            aliases,
            patterns,
        }
    }

    /// Whether `name` is a module file in this index.
    pub fn has_module(&self, name: &str) -> bool {
        self.modules.contains_key(&normalize(name))
    }

    /// Modules (files or built-in) whose `modules.alias` pattern matches a device's modalias,
    /// sorted and without duplicates.
    pub fn match_modalias(&self, modalias: &str) -> Vec<String> {
        let set: BTreeSet<&String> = self
            .patterns
            .iter()
            .filter(|(pat, _)| fnmatch(pat, modalias))
            .map(|(_, m)| m)
            .collect();
        set.into_iter().cloned().collect()
    }

    /// Whether a device can ask for `name`: it has a bus alias (`pci:…`, `virtio:…`, `scsi:…`,
    /// `usb:…`, `cpu:…`), which prepare-root matches against device modaliases at boot.
    /// Filesystems (`fs-ext4`), crypto (`crypto-…`) and plain name aliases do not count.
    pub fn has_device_alias(&self, name: &str) -> bool {
        let name = normalize(name);
        self.patterns
            .iter()
            .any(|(pat, m)| *m == name && pat.contains(':'))
    }

    /// `modules.alias` lines of the resolved modules only, in the original order: the image's
    /// alias index, small enough for prepare-root to match every device against quickly.
    pub fn alias_lines(&self, r: &Resolution) -> Vec<String> {
        let names: BTreeSet<&str> = r.modules.iter().map(|m| m.name.as_str()).collect();
        self.patterns
            .iter()
            .filter(|(_, m)| names.contains(m.as_str()))
            .map(|(p, m)| format!("alias {p} {m}"))
            .collect()
    }

    /// The modules directory this index was read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `name` is compiled into the kernel.
    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    /// Module files that provide `name`: itself, or the modules an exact alias names.
    fn lookup(&self, name: &str) -> Option<Vec<String>> {
        if self.modules.contains_key(name) {
            return Some(vec![name.to_string()]);
        }
        if self.builtin.contains(name) {
            return Some(Vec::new());
        }
        let targets = self.aliases.get(name)?;
        Some(
            targets
                .iter()
                .filter(|t| self.modules.contains_key(*t))
                .cloned()
                .collect(),
        )
    }

    /// Resolve requested names into a load order with all dependencies (dependencies first).
    /// Every name must exist.
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<Resolution> {
        self.resolve_with(names, &[] as &[&str], &[] as &[&str])
    }

    /// Resolve `required` names (unknown ones are an error) and `optional` ones (unknown ones
    /// are listed in [`Resolution::skipped`]), never including a module named in `omit`: a
    /// module that needs an omitted one is dropped too and listed in [`Resolution::omitted`].
    pub fn resolve_with<A: AsRef<str>, B: AsRef<str>, C: AsRef<str>>(
        &self,
        required: &[A],
        optional: &[B],
        omit: &[C],
    ) -> Result<Resolution> {
        let mut walk = Walk {
            omit: omit.iter().map(|n| normalize(n.as_ref())).collect(),
            ..Walk::default()
        };
        let mut builtin = Vec::new();
        let mut skipped = Vec::new();
        let names = required
            .iter()
            .map(|n| (n.as_ref(), true))
            .chain(optional.iter().map(|n| (n.as_ref(), false)));
        for (name, needed) in names {
            let name = normalize(name);
            if !self.modules.contains_key(&name) && self.builtin.contains(&name) {
                if !builtin.contains(&name) {
                    builtin.push(name);
                }
                continue;
            }
            let Some(found) = self.lookup(&name) else {
                if needed {
                    return Err(ResolveError::Unknown {
                        name,
                        dir: self.dir.clone(),
                    }
                    .into());
                }
                skipped.push(name);
                continue;
            };
            for m in found {
                self.visit(&m, &mut walk)?;
            }
        }
        let modules = walk
            .order
            .into_iter()
            .filter_map(|name| {
                let path = self.modules.get(&name)?.path.clone();
                Some(Resolved { name, path })
            })
            .collect();
        Ok(Resolution {
            modules,
            builtin,
            skipped,
            omitted: walk.omitted.into_iter().collect(),
        })
    }

    /// `modules.dep` lines for the resolved modules, with paths as stored in the image
    /// (compressed suffixes dropped).
    pub fn dep_lines(&self, r: &Resolution) -> Vec<String> {
        r.modules
            .iter()
            .filter_map(|m| self.modules.get(&m.name))
            .map(|e| {
                let mut line = format!("{}:", uncompressed_path(&e.path));
                for d in &e.deps {
                    line.push(' ');
                    line.push_str(&uncompressed_path(d));
                }
                line
            })
            .collect()
    }

    /// Add `name` after its dependencies; `false` if it is (or needs) an omitted module.
    fn visit(&self, name: &str, walk: &mut Walk) -> Result<bool, ResolveError> {
        if walk.done.contains(name) {
            return Ok(true);
        }
        if walk.omit.contains(name) {
            walk.omitted.insert(name.to_string());
            return Ok(false);
        }
        if walk.dropped.contains(name) {
            return Ok(false);
        }
        if walk.chain.iter().any(|c| c == name) {
            return Err(ResolveError::Cycle(format!(
                "{} -> {name}",
                walk.chain.join(" -> ")
            )));
        }
        let Some(entry) = self.modules.get(name) else {
            return Ok(false); // only reached for names `lookup` vouched for
        };
        if walk.chain.len() >= MAX_DEP_DEPTH {
            return Err(ResolveError::TooDeep {
                module: walk.chain.first().cloned().unwrap_or_default(),
            });
        }
        walk.chain.push(name.to_string());
        // Soft pre-dependencies: best effort, unknown names and cycles are skipped.
        for soft in self.softdep_pre.get(name).into_iter().flatten() {
            for m in self.lookup(soft).unwrap_or_default() {
                if !walk.chain.contains(&m) {
                    self.visit(&m, walk)?; // an omitted soft dependency is simply left out
                }
            }
        }
        // modprobe inserts the listed dependencies last-to-first; follow the same tie-break.
        for dep in entry.deps.iter().rev() {
            let dep_name = name_from_path(dep);
            if !self.modules.contains_key(&dep_name) {
                return Err(ResolveError::MissingDep {
                    module: name.to_string(),
                    dep: dep.clone(),
                    dir: self.dir.clone(),
                });
            }
            if !self.visit(&dep_name, walk)? {
                walk.chain.pop();
                walk.dropped.insert(name.to_string());
                walk.omitted
                    .insert(format!("{name} (needs omitted {dep_name})"));
                return Ok(false);
            }
        }
        walk.chain.pop();
        walk.done.insert(name.to_string());
        walk.order.push(name.to_string());
        Ok(true)
    }
}

#[derive(Default)]
struct Walk {
    done: BTreeSet<String>,
    chain: Vec<String>,
    order: Vec<String>,
    omit: BTreeSet<String>,
    omitted: BTreeSet<String>,
    dropped: BTreeSet<String>,
}

#[cfg(test)]
mod tests;
