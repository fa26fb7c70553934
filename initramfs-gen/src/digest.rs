//! Digests of a build's inputs, the keys of cached images.
//!
//! An [`InputHasher`] feeds named fields into BLAKE3, each name and value prefixed with its
//! length, so no two different sequences of fields hash alike (`("ab", "c")` is not
//! `("a", "bc")`). A file that may be absent is hashed as [`MISSING`], so creating it changes
//! the digest. [`crate::plan::Plan::input_digest`] uses it for native builds; other generators
//! (dracut) hash their own inputs with it.

use std::path::Path;

use anyhow::{Context, Result};

use crate::plan::TreeNode;

/// The value hashed for a file that does not exist.
pub const MISSING: &[u8] = b"<missing>";

/// Length-prefixed named fields fed into BLAKE3.
#[derive(Debug, Clone, Default)]
pub struct InputHasher(blake3::Hasher);

impl InputHasher {
    /// An empty hasher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Hash one field.
    pub fn field(&mut self, name: &str, data: &[u8]) {
        for part in [name.as_bytes(), data] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    /// Hash a value that may be absent ([`MISSING`] then).
    pub fn optional(&mut self, name: &str, data: Option<&[u8]>) {
        self.field(name, data.unwrap_or(MISSING));
    }

    /// Hash the contents of a file that must exist.
    pub fn file(&mut self, name: &str, path: &Path) -> Result<()> {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.field(name, &data);
        Ok(())
    }

    /// Hash the contents of a file, or [`MISSING`] when it does not exist.
    pub fn optional_file(&mut self, name: &str, path: &Path) -> Result<()> {
        match std::fs::read(path) {
            Ok(data) => self.field(name, &data),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.field(name, MISSING),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        }
        Ok(())
    }

    /// Hash a file, directory or symlink and everything under it: names, modes, symlink
    /// targets and contents, with paths below `name`.
    pub fn tree(&mut self, name: &str, path: &Path) -> Result<()> {
        for e in crate::plan::read_tree(path, name)? {
            self.tree_entry(&e.path, e.mode, &e.node);
        }
        Ok(())
    }

    /// Hash one entry of a tree.
    pub(crate) fn tree_entry(&mut self, name: &str, mode: u32, node: &TreeNode) {
        self.field(&format!("{name}:mode"), mode.to_string().as_bytes());
        match node {
            TreeNode::Dir => {}
            TreeNode::File(data) => self.field(name, data),
            TreeNode::Symlink(target) => self.field(name, target.as_bytes()),
        }
    }

    /// The digest in hex.
    pub fn finish(&self) -> String {
        self.0.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(fields: &[(&str, &[u8])]) -> String {
        let mut h = InputHasher::new();
        for (n, d) in fields {
            h.field(n, d);
        }
        h.finish()
    }

    #[test]
    fn fields_do_not_run_together() {
        assert_ne!(digest(&[("ab", b"c")]), digest(&[("a", b"bc")]));
        assert_ne!(digest(&[("a", b""), ("b", b"")]), digest(&[("ab", b"")]));
        assert_eq!(digest(&[("a", b"x")]), digest(&[("a", b"x")]));
        assert_eq!(digest(&[("a", b"x")]).len(), 64);
    }

    #[test]
    fn missing_files_and_trees() {
        let t = tempfile::tempdir().unwrap();
        let of = |f: &dyn Fn(&mut InputHasher) -> Result<()>| {
            let mut h = InputHasher::new();
            f(&mut h).unwrap();
            h.finish()
        };
        let conf = t.path().join("conf");
        let absent = of(&|h| h.optional_file("c", &conf));
        let marker = of(&|h| {
            h.optional("c", None);
            Ok(())
        });
        assert_eq!(absent, marker);
        std::fs::write(&conf, "").unwrap();
        assert_ne!(absent, of(&|h| h.optional_file("c", &conf)));
        assert!(of(&|h| h.file("c", &conf)) == of(&|h| h.optional_file("c", &conf)));

        let d = t.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("sub/a"), "A").unwrap();
        let t0 = of(&|h| h.tree("d", &d));
        std::os::unix::fs::symlink("sub/a", d.join("link")).unwrap();
        let t1 = of(&|h| h.tree("d", &d));
        assert_ne!(t0, t1, "a new symlink");
        std::fs::write(d.join("sub/a"), "B").unwrap();
        assert_ne!(t1, of(&|h| h.tree("d", &d)), "contents");
        assert!(InputHasher::new()
            .tree("x", &t.path().join("nothing"))
            .is_err());
    }
}
