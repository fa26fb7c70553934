//! Loading kernel modules in the initramfs, without udev or modprobe.
//!
//! First the modules the generator listed in [`crate::MODULES_LOAD_LIST`] (already in dependency
//! order and uncompressed: one `finit_module` per line). Then, when running as PID 1, every
//! device on a bus (`/sys/bus/*/devices`) that has a `modalias` and no bound driver is matched
//! against the
//! image's `modules.alias`, and the matching modules present in the image are loaded with their
//! dependencies from the image's `modules.dep`; this repeats while it finds new devices (after
//! `virtio_pci` binds, the virtio devices appear; after a SCSI host, its disks), so a generic
//! image boots on whichever supported controller the machine has.
//!
//! A module that fails to load is a warning, not a fatal error: the root device may not need it,
//! and if it does, the wait for the root device will say so.

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::fnmatch::fnmatch;

/// Passes over the buses: each may reveal devices of the drivers loaded by the previous.
const MAX_PASSES: usize = 4;

/// Outcome of loading modules.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules now loaded (including ones that were already loaded), list first, then by modalias.
    pub loaded: Vec<String>,
    /// The paths among `loaded` that were chosen by device modalias.
    pub by_modalias: Vec<String>,
    /// Device walks done for modalias loading (0 when it did not run).
    pub modalias_passes: usize,
    /// One line per module that failed.
    pub warnings: Vec<String>,
}

/// Something that inserts a module file into the kernel (the kernel itself, or a test double).
pub trait Loader {
    /// Load the module at `path`; already loaded is success.
    fn load(&mut self, path: &str) -> Result<(), String>;
}

/// Loads modules with `finit_module(2)`.
#[derive(Debug, Default)]
pub struct Kernel;

impl Loader for Kernel {
    fn load(&mut self, path: &str) -> Result<(), String> {
        load_one(path)
    }
}

/// The module paths in a list file: one per line, blank lines and `#` comments ignored.
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

fn load_one(path: &str) -> Result<(), String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open module {path}: {e}"))?;
    match finit_module(&file, c"", ModuleInitFlags::empty()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        // The kernel reports unresolved symbols as ENOENT, which reads like a missing file.
        Err(Errno::ENOENT) => Err(format!(
            "cannot load module {path}: unknown symbol (a dependency not loaded before it?)"
        )),
        Err(e) => Err(refusal(path, e, locked_down())),
    }
}

/// Why the kernel refused the module at `path` with `e`, in words an administrator can act
/// on. A kernel that enforces module signatures (locked down under Secure Boot, or
/// `module.sig_enforce=1`) refuses a module without a valid signature by a key it trusts with
/// `EKEYREJECTED`, `EBADMSG` or, locked down, `EPERM`.
pub fn refusal(path: &str, e: Errno, locked_down: bool) -> String {
    match e {
        Errno::EKEYREJECTED
        | Errno::EKEYEXPIRED
        | Errno::EKEYREVOKED
        | Errno::ENOKEY
        | Errno::EBADMSG => format!(
            "kernel refused module {path}: its signature is missing, invalid or by a key the \
             kernel does not trust ({}); the kernel loads only signed modules",
            e.desc()
        ),
        Errno::EPERM if locked_down => format!(
            "kernel refused module {path}: the kernel is locked down (Secure Boot) and loads \
             only modules signed by a key it trusts (Debian's, or one enrolled with mokutil)"
        ),
        e => format!("cannot load module {path}: {}", e.desc()),
    }
}

/// Whether the kernel runs locked down (`/sys/kernel/security/lockdown` names a mode other
/// than `none` in brackets).
fn locked_down() -> bool {
    std::fs::read_to_string("/sys/kernel/security/lockdown")
        .is_ok_and(|s| !s.contains("[none]") && s.contains('['))
}

/// The kernel's name of a module file (`.../virtio-blk.ko` -> `virtio_blk`).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = [".ko.zst", ".ko.xz", ".ko.gz", ".ko"]
        .iter()
        .find_map(|s| file.strip_suffix(s))
        .unwrap_or(file);
    stem.replace('-', "_")
}

/// Where modalias loading looks: sysfs and the image's modules directory.
#[derive(Debug, Clone)]
pub struct Layout {
    /// `/sys/bus`.
    pub sys_bus: PathBuf,
    /// `/sys/module`: a module (or built-in driver with parameters) there needs no loading.
    pub sys_module: PathBuf,
    /// `/usr/lib/modules/<kver>` of the initramfs.
    pub moddir: PathBuf,
}

impl Layout {
    /// The running kernel's layout: `/usr/lib/modules/$(uname -r)`, or the only directory in
    /// `/usr/lib/modules` if the release does not match (a kernel booted with another's image).
    pub fn running() -> Option<Layout> {
        let base = Path::new("/usr/lib/modules");
        let release = nix::sys::utsname::uname()
            .ok()
            .map(|u| base.join(u.release()));
        let moddir = match release {
            Some(d) if d.join("modules.alias").is_file() => d,
            _ => {
                let mut dirs = std::fs::read_dir(base).ok()?.flatten().map(|e| e.path());
                let only = dirs.next()?;
                dirs.next().is_none().then_some(only)?
            }
        };
        Some(Layout {
            sys_bus: "/sys/bus".into(),
            sys_module: "/sys/module".into(),
            moddir,
        })
    }
}

/// The image's index: alias patterns and each module's path and dependencies.
#[derive(Debug, Default)]
pub struct ModIndex {
    patterns: Vec<(String, String)>,
    /// Module name -> (path relative to the modules directory, dependency paths).
    deps: BTreeMap<String, (String, Vec<String>)>,
}

impl ModIndex {
    /// Parse `modules.alias` and `modules.dep` text.
    pub fn parse(alias: &str, dep: &str) -> ModIndex {
        let patterns = alias
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                match (w.next(), w.next(), w.next()) {
                    (Some("alias"), Some(p), Some(m)) => Some((p.to_string(), m.replace('-', "_"))),
                    _ => None,
                }
            })
            .collect();
        let deps = dep
            .lines()
            .filter_map(|l| {
                let (path, deps) = l.split_once(':')?;
                let path = path.trim().to_string();
                let deps = deps.split_whitespace().map(str::to_string).collect();
                Some((module_name(&path), (path, deps)))
            })
            .collect();
        ModIndex { patterns, deps }
    }

    /// Read the index of a modules directory; `None` if the image has no alias index.
    pub fn load(moddir: &Path) -> Option<ModIndex> {
        let alias = std::fs::read_to_string(moddir.join("modules.alias")).ok()?;
        let dep = std::fs::read_to_string(moddir.join("modules.dep")).unwrap_or_default();
        Some(ModIndex::parse(&alias, &dep))
    }

    /// Module names whose alias pattern matches `modalias`, in index order.
    pub fn matches(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (p, m) in &self.patterns {
            if !out.contains(&m.as_str()) && fnmatch(p, modalias) {
                out.push(m);
            }
        }
        out
    }
}

/// The `modalias` of every device on a bus (`/sys/bus/*/devices/*`, the lists udev's
/// coldplug walks) that has no driver bound, sorted. Only device directories are visited, not
/// the whole `/sys/devices` tree with its attribute groups: under emulation that walk costs
/// tens of milliseconds per pass.
pub fn unbound_modaliases(sys_bus: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Ok(buses) = std::fs::read_dir(sys_bus) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            let dir = dev.path();
            // Most devices have no modalias: one failed open, nothing more.
            let Ok(alias) = std::fs::read_to_string(dir.join("modalias")) else {
                continue;
            };
            let alias = alias.trim();
            if alias.is_empty() || std::fs::symlink_metadata(dir.join("driver")).is_ok() {
                continue;
            }
            out.insert(alias.to_string());
        }
    }
    out
}

/// Load, for every unbound device, the image's modules matching its modalias, with their
/// dependencies; repeat while new modules were loaded. Adds to `report`.
pub fn load_by_modalias(layout: &Layout, loader: &mut dyn Loader, report: &mut LoadReport) {
    let Some(index) = ModIndex::load(&layout.moddir) else {
        return;
    };
    let mut done: BTreeSet<String> = report.loaded.iter().map(|p| module_name(p)).collect();
    let mut failed: BTreeSet<String> = BTreeSet::new();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for _ in 0..MAX_PASSES {
        report.modalias_passes += 1;
        let aliases = unbound_modaliases(&layout.sys_bus);
        let mut progress = false;
        for alias in aliases.difference(&seen) {
            for name in index.matches(alias) {
                if done.contains(name) || failed.contains(name) {
                    continue;
                }
                let Some((path, deps)) = index.deps.get(name) else {
                    continue; // matched, but not in this image
                };
                // depmod lists dependencies so that loading them last to first works.
                let mut ok = true;
                for dep in deps.iter().rev().chain(std::iter::once(path)) {
                    let dname = module_name(dep);
                    if done.contains(&dname) {
                        continue;
                    }
                    if layout.sys_module.join(&dname).exists() {
                        done.insert(dname);
                        continue;
                    }
                    let full = layout.moddir.join(dep).to_string_lossy().into_owned();
                    match loader.load(&full) {
                        Ok(()) => {
                            done.insert(dname);
                            report.loaded.push(full.clone());
                            report.by_modalias.push(full);
                            progress = true;
                        }
                        Err(w) => {
                            report.warnings.push(w);
                            ok = false;
                            break;
                        }
                    }
                }
                if !ok {
                    failed.insert(name.to_string());
                }
            }
        }
        seen.extend(aliases);
        if !progress {
            break;
        }
    }
}

/// Loads every module in the list file `list` (missing list = nothing to load) and then, as
/// PID 1 only (never when run by hand or by tests on a live system), the modules that the
/// devices present ask for by modalias.
pub fn load_modules(list: &Path) -> LoadReport {
    let mut kernel = Kernel;
    let mut report = load_list(list, &mut kernel);
    if std::process::id() == 1 {
        if let Some(layout) = Layout::running() {
            load_by_modalias(&layout, &mut kernel, &mut report);
        }
    }
    report
}

/// Loads every module in the list file `list` with `loader`.
pub fn load_list(list: &Path, loader: &mut dyn Loader) -> LoadReport {
    let mut report = LoadReport::default();
    let text = match std::fs::read_to_string(list) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return report,
        Err(e) => {
            report
                .warnings
                .push(format!("cannot read {}: {e}", list.display()));
            return report;
        }
    };
    for path in parse_list(&text) {
        match loader.load(&path) {
            Ok(()) => report.loaded.push(path),
            Err(w) => report.warnings.push(w),
        }
    }
    report
}

#[cfg(test)]
mod tests;
