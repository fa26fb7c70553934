//! What a build is asked for: [`BuildOptions`] (root, kernel, init, epoch, compression) and
//! [`BuildSpec`] (those plus mode, module overrides, includes and firmware), from the admin's
//! configuration ([`BuildSpec::from_config`]) and then the command line
//! ([`crate::options::SpecArgs`]).

use std::path::PathBuf;

use anyhow::Result;

use crate::config::{Config, Mode};
use crate::hostonly::HostSource;
use crate::sets::DEFAULT_MODULES;

/// Where OS images install the init binary, relative to their root: the boot contract's
/// [`stratum_prepare_root::INSTALLED_PATH`].
pub fn prepare_root_path() -> &'static std::path::Path {
    std::path::Path::new(stratum_prepare_root::INSTALLED_PATH.trim_start_matches('/'))
}

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

/// A file or directory of the root to copy into the image (`--include SRC[:DEST]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Include {
    /// Path inside the root.
    pub src: String,
    /// Absolute path in the image (default: the same as `src`).
    pub dest: String,
}

impl std::str::FromStr for Include {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (src, dest) = s.split_once(':').unwrap_or((s, s));
        if src.is_empty() || dest.is_empty() {
            return Err(format!("include {s:?}: expected SRC[:DEST]"));
        }
        let dest = format!("/{}", dest.trim_matches('/'));
        if dest == "/" || dest.split('/').any(|c| c == "..") {
            return Err(format!(
                "include {s:?}: the destination must name a path below /"
            ));
        }
        Ok(Include {
            src: src.to_string(),
            dest,
        })
    }
}

/// Everything that decides an image: [`BuildOptions`] plus mode, module overrides, includes,
/// firmware and threading. [`BuildSpec::from_config`] starts from the admin's configuration.
#[derive(Debug, Clone)]
pub struct BuildSpec {
    /// Root, kernel, init, epoch, zstd level; `options.modules` is the `default` mode's set.
    pub options: BuildOptions,
    /// Module selection mode.
    pub mode: Mode,
    /// Modules to add (must exist).
    pub add_modules: Vec<String>,
    /// Modules never to include.
    pub omit_modules: Vec<String>,
    /// Files and directories to copy from the root (applied last: they win over generated files).
    pub includes: Vec<Include>,
    /// Copy the firmware that included modules declare.
    pub firmware: bool,
    /// zstd worker threads (0: compress on the calling thread).
    pub zstd_threads: u32,
    /// Threads reading and decompressing modules (0: one per CPU, at most 8).
    pub jobs: usize,
    /// Where `--hostonly` reads the machine's devices from.
    pub host: HostSource,
    /// Digest of the build's inputs (computed by `stratum initramfs`), recorded in the manifest
    /// so `boot.json` says which regenerated image booted.
    pub input_digest: Option<String>,
}

impl From<BuildOptions> for BuildSpec {
    fn from(options: BuildOptions) -> Self {
        BuildSpec {
            options,
            mode: Mode::Default,
            add_modules: Vec::new(),
            omit_modules: Vec::new(),
            includes: Vec::new(),
            firmware: true,
            zstd_threads: 0,
            jobs: 0,
            host: HostSource::default(),
            input_digest: None,
        }
    }
}

impl BuildSpec {
    /// A spec for `root`/`kver` with the settings of `cfg` (see [`crate::config::load`]).
    pub fn from_config(
        root: impl Into<PathBuf>,
        kver: impl Into<String>,
        cfg: &Config,
    ) -> Result<Self> {
        let mut opts = BuildOptions::new(root, kver);
        opts.zstd_level = cfg.zstd_level;
        let mut spec = BuildSpec::from(opts);
        spec.mode = cfg.mode;
        spec.add_modules = cfg.add_modules.clone();
        spec.omit_modules = cfg.omit_modules.clone();
        spec.includes = cfg
            .include
            .iter()
            .map(|s| s.parse().map_err(anyhow::Error::msg))
            .collect::<Result<_>>()?;
        spec.firmware = cfg.firmware;
        spec.zstd_threads = cfg.zstd_threads;
        Ok(spec)
    }
}
