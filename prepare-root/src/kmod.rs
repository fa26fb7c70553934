//! Loading the kernel modules the initramfs generator listed in [`crate::MODULES_LOAD_LIST`].
//!
//! The list is already in dependency order and the modules are uncompressed, so this is just
//! `finit_module` per line. A module that fails to load is a warning, not a fatal error: the
//! root device may not need it, and if it does, the wait for the root device will say so.

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};
use std::path::Path;

/// Outcome of loading the module list.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LoadReport {
    /// Modules now loaded (including ones that were already loaded).
    pub loaded: Vec<String>,
    /// One line per module that failed.
    pub warnings: Vec<String>,
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
        Err(e) => Err(format!("cannot load module {path}: {}", e.desc())),
    }
}

/// Loads every module in `list` (missing list = nothing to load).
pub fn load_modules(list: &Path) -> LoadReport {
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
        match load_one(&path) {
            Ok(()) => report.loaded.push(path),
            Err(w) => report.warnings.push(w),
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing_and_missing_file() {
        let l = parse_list("/lib/modules/a.ko\n\n # comment\n  /lib/modules/b.ko  \n");
        assert_eq!(l, vec!["/lib/modules/a.ko", "/lib/modules/b.ko"]);
        let d = tempfile::tempdir().unwrap();
        assert_eq!(load_modules(&d.path().join("none")), LoadReport::default());
        let list = d.path().join("modules.load");
        std::fs::write(&list, format!("{}/missing.ko\n", d.path().display())).unwrap();
        let r = load_modules(&list);
        assert!(r.loaded.is_empty());
        assert_eq!(r.warnings.len(), 1);
        assert!(r.warnings[0].contains("missing.ko"), "{:?}", r.warnings);
    }
}
