//! Reading a plan's inputs: modules (on several threads, results in input order) and included
//! trees (sorted by name, symlinks kept as symlinks).

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::{IncludeInput, ModuleInput, TreeEntry, TreeNode};
use crate::modules::{self, Resolved};
use crate::spec::Include;
use crate::{modinfo, rootfs};

/// Read (and decompress) the modules on `jobs` threads (0: one per CPU, at most 8); results
/// keep the input order, so nothing downstream depends on scheduling.
pub(super) fn modules(dir: &Path, mods: &[Resolved], jobs: usize) -> Result<Vec<ModuleInput>> {
    let jobs = match jobs {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get().min(8)),
        n => n,
    }
    .clamp(1, mods.len().max(1));
    let read = |m: &Resolved| -> Result<ModuleInput> {
        let data = modules::read_module(&dir.join(&m.path))?;
        // A module that is not ELF (test fixtures) simply declares no firmware.
        let firmware = modinfo::firmware(&data).unwrap_or_default();
        Ok(ModuleInput {
            module: m.clone(),
            data,
            firmware,
        })
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

/// Read `inc` from the root.
pub(super) fn include(root: &Path, inc: &Include) -> Result<IncludeInput> {
    let source = rootfs::resolve(root, Path::new(&inc.src))?;
    let entries = read_tree(&source, &inc.dest)
        .with_context(|| format!("including {} (from {})", inc.src, source.display()))?;
    Ok(IncludeInput {
        include: inc.clone(),
        source,
        entries,
    })
}

/// The file, directory or symlink at `host` and everything under it, named below `dest`,
/// parents first and siblings sorted by name.
pub(crate) fn read_tree(host: &Path, dest: &str) -> Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    walk(host, dest, &mut out)?;
    Ok(out)
}

fn walk(host: &Path, dest: &str, out: &mut Vec<TreeEntry>) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let meta =
        std::fs::symlink_metadata(host).with_context(|| format!("reading {}", host.display()))?;
    let ft = meta.file_type();
    let mode = meta.permissions().mode();
    let entry = |node| TreeEntry {
        path: dest.to_string(),
        mode,
        node,
    };
    if ft.is_symlink() {
        let target = std::fs::read_link(host)
            .with_context(|| format!("reading symlink {}", host.display()))?;
        out.push(entry(TreeNode::Symlink(
            target.to_string_lossy().into_owned(),
        )));
    } else if ft.is_dir() {
        out.push(entry(TreeNode::Dir));
        let mut entries: Vec<_> = std::fs::read_dir(host)
            .with_context(|| format!("reading directory {}", host.display()))?
            .collect::<std::io::Result<_>>()
            .with_context(|| format!("reading directory {}", host.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name();
            let child = format!("{dest}/{}", name.to_string_lossy());
            walk(&e.path(), &child, out)?;
        }
    } else if ft.is_file() {
        let data = std::fs::read(host).with_context(|| format!("reading {}", host.display()))?;
        out.push(entry(TreeNode::File(data)));
    } else {
        bail!(
            "{} is not a regular file, directory or symlink",
            host.display()
        );
    }
    Ok(())
}
