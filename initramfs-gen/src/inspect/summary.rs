//! The summary `stratum-initramfs inspect` prints, counted as the members stream past: per
//! archive counts, kernel versions, module files and Stratum's manifest.

use std::collections::BTreeSet;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{escape, walk, Entry};
use crate::newc::Kind;

/// One of the concatenated archives of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    /// Position, counting from 0.
    pub index: usize,
    /// `none`, `zstd`, `gzip` or `xz`.
    pub compression: &'static str,
    /// Members, without the trailer.
    pub members: usize,
    /// Regular files.
    pub files: usize,
    /// Directories.
    pub dirs: usize,
    /// Symbolic links.
    pub symlinks: usize,
    /// Device nodes, fifos, sockets.
    pub other: usize,
    /// Bytes of file data.
    pub file_bytes: u64,
    /// Whether it is an early-microcode archive (only `kernel/x86/microcode/...` files).
    pub early_microcode: bool,
}

/// What `stratum-initramfs inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Size of the file.
    pub size: u64,
    /// The archives, in order.
    pub archives: Vec<ArchiveSummary>,
    /// Members in all archives.
    pub members: usize,
    /// Whether some archive has `/init`.
    pub has_init: bool,
    /// Kernel versions with a modules directory (`/usr/lib/modules/<kver>` or `/lib/modules/...`).
    pub kernel_versions: Vec<String>,
    /// Kernel module files (`*.ko*`).
    pub module_files: usize,
    /// `/etc/stratum/initramfs.json`, when the image is Stratum's.
    pub stratum: Option<serde_json::Value>,
}

/// Kernel versions `inspect` reports at most: a real image has one or a few, and each is kept.
pub const MAX_KERNEL_VERSIONS: usize = 64;

impl ArchiveSummary {
    fn new(index: usize) -> Self {
        ArchiveSummary {
            index,
            compression: "none",
            members: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            other: 0,
            file_bytes: 0,
            early_microcode: true,
        }
    }
}

/// Summarise the initramfs at `path`, counting members as they stream past.
pub fn inspect(path: &Path) -> Result<Summary> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    summarize(&mut BufReader::new(file), size)
        .with_context(|| format!("reading {}", path.display()))
}

/// Summarise the initramfs read from `r`, whose size is `size` bytes (what [`inspect`] does
/// with a file; also the entry point of the fuzz driver).
pub fn summarize(r: &mut dyn BufRead, size: u64) -> Result<Summary> {
    let mut archives: Vec<ArchiveSummary> = Vec::new();
    let mut kvers = BTreeSet::new();
    let (mut members, mut module_files, mut has_init) = (0, 0, false);
    let mut count = |e: &Entry| -> Result<ControlFlow<()>> {
        while archives.len() <= e.archive {
            archives.push(ArchiveSummary::new(archives.len()));
        }
        let a = &mut archives[e.archive];
        a.members += 1;
        members += 1;
        has_init |= e.path == "/init";
        match e.kind {
            Kind::File => {
                a.files += 1;
                a.file_bytes += e.size;
                a.early_microcode &= e.path.starts_with("/kernel/x86/microcode/");
            }
            Kind::Dir => a.dirs += 1,
            Kind::Symlink => a.symlinks += 1,
            _ => a.other += 1,
        }
        for base in ["/usr/lib/modules/", "/lib/modules/"] {
            if let Some((kver, _)) = e.path.strip_prefix(base).and_then(|r| r.split_once('/')) {
                if !kvers.contains(kver) {
                    if kvers.len() == MAX_KERNEL_VERSIONS {
                        bail!("modules of more than {MAX_KERNEL_VERSIONS} kernel versions");
                    }
                    kvers.insert(kver.to_string());
                }
            }
        }
        let name = e.path.rsplit('/').next().unwrap_or_default();
        if e.kind == Kind::File
            && [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            module_files += 1;
        }
        Ok(ControlFlow::Continue(()))
    };
    let walked = walk(r, &mut count)?;
    // Archives without members (only a trailer) have not been seen yet.
    while archives.len() < walked.compression.len() {
        archives.push(ArchiveSummary::new(archives.len()));
    }
    for (a, compression) in archives.iter_mut().zip(&walked.compression) {
        a.compression = compression;
        a.early_microcode &= a.files > 0;
    }
    let stratum = walked
        .manifest
        .as_deref()
        .and_then(|d| serde_json::from_slice(d).ok());
    Ok(Summary {
        size,
        members,
        has_init,
        archives,
        kernel_versions: kvers.into_iter().collect(),
        module_files,
        stratum,
    })
}

impl fmt::Display for Summary {
    /// The human summary `inspect` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "size: {} bytes, {} archive(s), {} members",
            self.size,
            self.archives.len(),
            self.members
        )?;
        for a in &self.archives {
            write!(
                f,
                "archive {}: {}, {} members ({} files, {} dirs, {} symlinks, {} other), {} bytes of data",
                a.index, a.compression, a.members, a.files, a.dirs, a.symlinks, a.other, a.file_bytes
            )?;
            if a.early_microcode {
                write!(f, " [early microcode]")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "init: {}", if self.has_init { "/init" } else { "none" })?;
        if !self.kernel_versions.is_empty() {
            writeln!(
                f,
                "kernel modules: {} files for {}",
                self.module_files,
                escape(&self.kernel_versions.join(", "))
            )?;
        }
        if let Some(m) = &self.stratum {
            let field =
                |k: &str| escape(m.get(k).and_then(|v| v.as_str()).unwrap_or("?")).into_owned();
            writeln!(
                f,
                "generator: {} {}, kver {}, mode {}",
                field("generator"),
                field("version"),
                field("kver"),
                field("mode")
            )?;
            let list = |k: &str| -> String {
                m.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        let words: Vec<_> = a.iter().filter_map(|x| x.as_str()).collect();
                        escape(&words.join(" ")).into_owned()
                    })
                    .unwrap_or_default()
            };
            writeln!(f, "modules: {}", list("modules"))?;
            let fw = list("firmware");
            if !fw.is_empty() {
                writeln!(f, "firmware: {fw}")?;
            }
        }
        Ok(())
    }
}
