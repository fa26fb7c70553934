//! Kernel module resolution from depmod's index files in `/usr/lib/modules/<kver>`.
//!
//! `modules.dep` gives each module's full (transitive) dependency list; we compute the load order
//! ourselves by a depth-first walk, so a dependency is always loaded before its users whatever
//! order depmod listed them in. Names in `modules.builtin` are compiled into the kernel and
//! need nothing; `softdep ... pre:` entries of `modules.softdep` are added before their module
//! (best effort, as modprobe does); exact (non-glob) names in `modules.alias` are accepted too.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::rootfs;

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
}

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

/// Find the modules directory of `kver` inside `root`: `usr/lib/modules/<kver>`, then
/// `lib/modules/<kver>`, each resolved with `root` as `/`.
pub fn find_modules_dir(root: &Path, kver: &str) -> Result<PathBuf> {
    let mut tried = Vec::new();
    let mut versions = BTreeSet::new();
    for base in ["usr/lib/modules", "lib/modules"] {
        let base = rootfs::resolve(root, Path::new(base))?;
        let dir = base.join(kver);
        if dir.is_dir() {
            return Ok(dir);
        }
        tried.push(dir.display().to_string());
        if let Ok(rd) = std::fs::read_dir(&base) {
            versions.extend(
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned()),
            );
        }
    }
    let present = if versions.is_empty() {
        "none".to_string()
    } else {
        versions.into_iter().collect::<Vec<_>>().join(", ")
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
}

/// depmod's index of one kernel's modules.
#[derive(Debug)]
pub struct ModuleDb {
    dir: PathBuf,
    modules: BTreeMap<String, Entry>,
    builtin: BTreeSet<String>,
    softdep_pre: BTreeMap<String, Vec<String>>,
    aliases: BTreeMap<String, Vec<String>>,
}

fn read_optional(path: &Path) -> Result<String> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn content_lines(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
}

impl ModuleDb {
    /// Load `modules.dep` (required), and `modules.builtin`, `modules.softdep`, `modules.alias`
    /// (each optional) from a modules directory.
    pub fn load(dir: &Path) -> Result<Self> {
        let dep_path = dir.join("modules.dep");
        let dep = std::fs::read_to_string(&dep_path).with_context(|| {
            format!(
                "reading {} (if the kernel was installed without running depmod, run `depmod -b <root> <kver>`)",
                dep_path.display()
            )
        })?;
        let builtin = read_optional(&dir.join("modules.builtin"))?;
        let softdep = read_optional(&dir.join("modules.softdep"))?;
        let alias = read_optional(&dir.join("modules.alias"))?;
        Ok(Self::parse(dir, &dep, &builtin, &softdep, &alias))
    }

    /// Build the index from the files' contents (`dir` is only used in messages and paths).
    pub fn parse(dir: &Path, dep: &str, builtin: &str, softdep: &str, alias: &str) -> Self {
        let mut modules = BTreeMap::new();
        for line in content_lines(dep) {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let entry = Entry {
                path: path.trim().to_string(),
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
        for line in content_lines(alias) {
            let mut words = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(module)) =
                (words.next(), words.next(), words.next())
            {
                if !pat.contains(['*', '?', '[']) {
                    aliases
                        .entry(normalize(pat))
                        .or_default()
                        .push(normalize(module));
                }
            }
        }
        ModuleDb {
            dir: dir.to_path_buf(),
            modules,
            builtin,
            softdep_pre,
            aliases,
        }
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
    pub fn resolve<S: AsRef<str>>(&self, names: &[S]) -> Result<Resolution> {
        let mut walk = Walk::default();
        let mut builtin = Vec::new();
        for name in names {
            let name = normalize(name.as_ref());
            if !self.modules.contains_key(&name) && self.builtin.contains(&name) {
                builtin.push(name);
                continue;
            }
            let found = self.lookup(&name).ok_or_else(|| ResolveError::Unknown {
                name: name.clone(),
                dir: self.dir.clone(),
            })?;
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
        Ok(Resolution { modules, builtin })
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

    fn visit(&self, name: &str, walk: &mut Walk) -> Result<(), ResolveError> {
        if walk.done.contains(name) {
            return Ok(());
        }
        if walk.chain.iter().any(|c| c == name) {
            return Err(ResolveError::Cycle(format!(
                "{} -> {name}",
                walk.chain.join(" -> ")
            )));
        }
        let Some(entry) = self.modules.get(name) else {
            return Ok(()); // only reached for names `lookup` vouched for
        };
        walk.chain.push(name.to_string());
        // Soft pre-dependencies: best effort, unknown names and cycles are skipped.
        for soft in self.softdep_pre.get(name).into_iter().flatten() {
            for m in self.lookup(soft).unwrap_or_default() {
                if !walk.chain.contains(&m) {
                    self.visit(&m, walk)?;
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
            self.visit(&dep_name, walk)?;
        }
        walk.chain.pop();
        walk.done.insert(name.to_string());
        walk.order.push(name.to_string());
        Ok(())
    }
}

#[derive(Default)]
struct Walk {
    done: BTreeSet<String>,
    chain: Vec<String>,
    order: Vec<String>,
}

#[cfg(test)]
mod tests;
