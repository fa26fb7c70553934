//! The generator's configuration: `/etc/stratum/initramfs.toml` and drop-ins, read relative to
//! the OS root being built from, so the admin tool and image builds see the same settings.
//!
//! Order: the main file, then every `*.toml` in `/usr/lib/stratum/initramfs.d`,
//! `/run/stratum/initramfs.d` and `/etc/stratum/initramfs.d`, sorted by file name; a drop-in in
//! a later directory replaces one of the same name in an earlier directory (as systemd does).
//! Later settings win for single values; lists (`add-modules`, `omit-modules`, `include`)
//! accumulate. Command-line options are applied after all files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::rootfs;

/// The main configuration file, relative to the root.
pub const CONFIG_FILE: &str = "/etc/stratum/initramfs.toml";
/// Drop-in directories, lowest priority first.
pub const DROPIN_DIRS: &[&str] = &[
    "/usr/lib/stratum/initramfs.d",
    "/run/stratum/initramfs.d",
    "/etc/stratum/initramfs.d",
];

/// Which kernel modules an image carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The small fixed set for QEMU/virtio guests ([`crate::DEFAULT_MODULES`]).
    #[default]
    Default,
    /// Storage and filesystem drivers for most machines ([`crate::GENERIC_MODULES`]); device
    /// drivers are loaded at boot by modalias.
    Generic,
    /// What this machine uses to reach its root filesystem, read from `/sys`.
    Hostonly,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "default" => Ok(Mode::Default),
            "generic" => Ok(Mode::Generic),
            "hostonly" => Ok(Mode::Hostonly),
            _ => Err(format!(
                "unknown mode {s:?}: expected default, generic or hostonly"
            )),
        }
    }
}

/// One configuration file as written.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ConfigFile {
    /// `mode = "generic"`.
    pub mode: Option<Mode>,
    /// Modules to add (with their dependencies).
    #[serde(default)]
    pub add_modules: Vec<String>,
    /// Modules never to include.
    #[serde(default)]
    pub omit_modules: Vec<String>,
    /// `SRC[:DEST]` files or directories from the root to copy into the image.
    #[serde(default)]
    pub include: Vec<String>,
    /// Copy the firmware modules declare (default true).
    pub firmware: Option<bool>,
    /// zstd level (default 3).
    pub zstd_level: Option<i32>,
    /// zstd worker threads; 0 compresses on the calling thread (default 0).
    pub zstd_threads: Option<u32>,
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Config {
    /// Module selection mode.
    pub mode: Mode,
    /// Modules to add.
    pub add_modules: Vec<String>,
    /// Modules to leave out.
    pub omit_modules: Vec<String>,
    /// `SRC[:DEST]` includes.
    pub include: Vec<String>,
    /// Copy declared firmware.
    pub firmware: bool,
    /// zstd level.
    pub zstd_level: i32,
    /// zstd worker threads.
    pub zstd_threads: u32,
    /// Files read, in order (host paths), for messages and `--json`.
    pub sources: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            mode: Mode::Default,
            add_modules: Vec::new(),
            omit_modules: Vec::new(),
            include: Vec::new(),
            firmware: true,
            zstd_level: 3,
            zstd_threads: 0,
            sources: Vec::new(),
        }
    }
}

impl Config {
    /// Apply one file's settings over these.
    pub fn merge(&mut self, f: ConfigFile) {
        if let Some(m) = f.mode {
            self.mode = m;
        }
        self.add_modules.extend(f.add_modules);
        self.omit_modules.extend(f.omit_modules);
        self.include.extend(f.include);
        if let Some(v) = f.firmware {
            self.firmware = v;
        }
        if let Some(v) = f.zstd_level {
            self.zstd_level = v;
        }
        if let Some(v) = f.zstd_threads {
            self.zstd_threads = v;
        }
    }
}

/// Parse one file's text; errors name `path` and (through the TOML error) line and column.
pub fn parse_file(path: &Path, text: &str) -> Result<ConfigFile> {
    toml::from_str(text).with_context(|| format!("invalid configuration in {}", path.display()))
}

/// The configuration files of `root`, in the order they apply.
pub fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let main = rootfs::resolve(root, Path::new(CONFIG_FILE))?;
    if main.exists() {
        out.push(main);
    }
    let mut dropins: BTreeMap<std::ffi::OsString, PathBuf> = BTreeMap::new();
    for dir in DROPIN_DIRS {
        let dir = rootfs::resolve(root, Path::new(dir))?;
        let rd = match std::fs::read_dir(&dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
        };
        for e in rd {
            let e = e.with_context(|| format!("reading {}", dir.display()))?;
            let name = e.file_name();
            if Path::new(&name).extension().is_some_and(|x| x == "toml") {
                dropins.insert(name, e.path());
            }
        }
    }
    out.extend(dropins.into_values());
    Ok(out)
}

/// Load and merge the configuration of the OS root `root` (`/` for the running system).
pub fn load(root: &Path) -> Result<Config> {
    let mut cfg = Config::default();
    for path in files(root)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        cfg.merge(parse_file(&path, &text)?);
        cfg.sources.push(path);
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn main_file_then_dropins_by_name() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        assert_eq!(load(r).unwrap(), Config::default());
        write(
            r,
            "etc/stratum/initramfs.toml",
            "mode = \"generic\"\nadd-modules = [\"a\"]\nzstd-level = 9\n",
        );
        write(
            r,
            "usr/lib/stratum/initramfs.d/20-vendor.toml",
            "add-modules = [\"b\"]\nzstd-threads = 2\n",
        );
        write(
            r,
            "usr/lib/stratum/initramfs.d/50-over.toml",
            "add-modules = [\"hidden\"]\n",
        );
        write(
            r,
            "etc/stratum/initramfs.d/50-over.toml",
            "omit-modules = [\"c\"]\nfirmware = false\n",
        );
        write(
            r,
            "etc/stratum/initramfs.d/90-admin.toml",
            "mode = \"hostonly\"\ninclude = [\"/etc/x:/y\"]\n",
        );
        write(r, "etc/stratum/initramfs.d/README", "not toml");
        let c = load(r).unwrap();
        assert_eq!(c.mode, Mode::Hostonly);
        assert_eq!(c.add_modules, ["a", "b"]);
        assert_eq!(c.omit_modules, ["c"]);
        assert_eq!(c.include, ["/etc/x:/y"]);
        assert_eq!((c.zstd_level, c.zstd_threads, c.firmware), (9, 2, false));
        let names: Vec<_> = c
            .sources
            .iter()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "initramfs.toml",
                "20-vendor.toml",
                "50-over.toml",
                "90-admin.toml"
            ]
        );
    }

    #[test]
    fn errors_name_file_and_line() {
        let t = tempfile::tempdir().unwrap();
        write(
            t.path(),
            "etc/stratum/initramfs.d/10-bad.toml",
            "mode = \"generic\"\nadd-module = [\"x\"]\n",
        );
        let e = format!("{:#}", load(t.path()).unwrap_err());
        assert!(
            e.contains("10-bad.toml") && e.contains("line 2") && e.contains("add-module"),
            "{e}"
        );
        write(
            t.path(),
            "etc/stratum/initramfs.d/10-bad.toml",
            "\n\nmode = generic\n",
        );
        let e = format!("{:#}", load(t.path()).unwrap_err());
        assert!(e.contains("10-bad.toml") && e.contains("line 3"), "{e}");
        write(
            t.path(),
            "etc/stratum/initramfs.d/10-bad.toml",
            "mode = \"everything\"\n",
        );
        let e = format!("{:#}", load(t.path()).unwrap_err());
        assert!(e.contains("everything"), "{e}");
    }
}
