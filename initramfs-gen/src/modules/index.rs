//! depmod's index files of one kernel, read once: the module database is parsed from these
//! bytes and the same bytes go into the image and the input digest, so the three agree.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The index files a build reads, in the order they are hashed.
pub const INDEX_FILES: [&str; 5] = [
    "modules.dep",
    "modules.alias",
    "modules.softdep",
    "modules.builtin",
    "modules.builtin.modinfo",
];

/// The contents of [`INDEX_FILES`] in one modules directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexFiles {
    dir: PathBuf,
    /// Contents by position in [`INDEX_FILES`]; `None`: the file does not exist.
    files: Vec<Option<Vec<u8>>>,
}

impl IndexFiles {
    /// Read the index files of the modules directory `dir` (a missing one is `None`).
    pub fn read(dir: &Path) -> Result<Self> {
        let files = INDEX_FILES
            .iter()
            .map(|name| {
                let p = dir.join(name);
                match std::fs::read(&p) {
                    Ok(data) => Ok(Some(data)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                    Err(e) => Err(e).with_context(|| format!("reading {}", p.display())),
                }
            })
            .collect::<Result<_>>()?;
        Ok(IndexFiles {
            dir: dir.to_path_buf(),
            files,
        })
    }

    /// The modules directory the files were read from.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The contents of `name` (one of [`INDEX_FILES`]), `None` when it does not exist.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let i = INDEX_FILES.iter().position(|n| *n == name)?;
        self.files.get(i)?.as_deref()
    }

    /// Every index file by name, in [`INDEX_FILES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<&[u8]>)> {
        INDEX_FILES
            .iter()
            .zip(&self.files)
            .map(|(n, d)| (*n, d.as_deref()))
    }

    /// The text of `name`, empty when it does not exist.
    pub(crate) fn text(&self, name: &str) -> Result<&str> {
        std::str::from_utf8(self.get(name).unwrap_or_default())
            .with_context(|| format!("{} is not UTF-8", self.dir.join(name).display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_files_are_none() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("modules.dep"), "a.ko:\n").unwrap();
        std::fs::write(t.path().join("modules.alias"), b"\xff").unwrap();
        let idx = IndexFiles::read(t.path()).unwrap();
        assert_eq!(idx.get("modules.dep"), Some(&b"a.ko:\n"[..]));
        assert_eq!(idx.get("modules.builtin"), None);
        assert_eq!(idx.get("not-an-index"), None);
        assert_eq!(idx.text("modules.softdep").unwrap(), "");
        assert!(idx.text("modules.alias").is_err());
        let names: Vec<_> = idx.iter().map(|(n, d)| (n, d.is_some())).collect();
        assert_eq!(names[..2], [("modules.dep", true), ("modules.alias", true)]);
        assert_eq!(names.len(), INDEX_FILES.len());
    }
}
