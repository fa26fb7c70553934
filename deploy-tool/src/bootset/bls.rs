//! Boot Loader Specification type #1 entries (`/boot/loader/entries/*.conf`).
//!
//! This is the only code that knows the entry format. Entries are written the way OSTree
//! writes them (`ostree-<version>-<stateroot>.conf`, `version` = position counted from the
//! end, so the default entry has the highest version), which keeps `ostree admin status`
//! able to read a sysroot written by Stratum.

use std::fmt::Write as _;

use anyhow::{bail, Result};

/// One boot entry. Keys are kept in file order; unknown keys survive a parse/serialize cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    pairs: Vec<(String, String)>,
}

impl Entry {
    /// Parses an entry. Blank lines and `#` comments are skipped; a key without a value is an
    /// error because it is certainly not what the writer meant.
    pub fn parse(text: &str) -> Result<Entry> {
        let mut pairs = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((k, v)) = line.split_once(|c: char| c.is_ascii_whitespace()) else {
                let line = crate::excerpt::line(line);
                bail!("line {}: key {line:?} has no value", n + 1);
            };
            pairs.push((k.to_string(), v.trim().to_string()));
        }
        Ok(Entry { pairs })
    }

    /// The value of `key` (the last one when repeated, except for `initrd` see [`Entry::all`]).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a key that may repeat (`initrd`).
    pub fn all<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.pairs
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`, replacing every earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.retain(|(k, _)| k != key);
        self.pairs.push((key.to_string(), value.into()));
    }

    /// Adds a value for a repeatable key.
    pub fn push(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.to_string(), value.into()));
    }

    /// The entry's `version` as a number, used to sort entries (highest first).
    pub fn sort_version(&self) -> u64 {
        self.get("version")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl std::fmt::Display for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut s = String::new();
        for (k, v) in &self.pairs {
            let _ = writeln!(s, "{k} {v}");
        }
        f.write_str(&s)
    }
}

/// The file name OSTree uses for the entry at `version` in `stateroot`.
pub fn entry_file_name(version: usize, stateroot: &str) -> String {
    format!("ostree-{version}-{stateroot}.conf")
}

#[cfg(test)]
mod tests {
    use super::*;

    const OSTREE_ENTRY: &str = "title Test OS 2.0 (ostree:0)\nversion 2\noptions root=UUID=abc rw ostree=/ostree/boot.0/default/ff/0\nlinux /ostree/default-ff/vmlinuz-6.1\ninitrd /ostree/default-ff/initramfs-6.1.img\n";

    #[test]
    fn parses_what_ostree_writes() {
        let e = Entry::parse(OSTREE_ENTRY).unwrap();
        assert_eq!(e.get("title"), Some("Test OS 2.0 (ostree:0)"));
        assert_eq!(e.sort_version(), 2);
        assert_eq!(
            e.get("options"),
            Some("root=UUID=abc rw ostree=/ostree/boot.0/default/ff/0")
        );
        assert_eq!(e.to_string(), OSTREE_ENTRY);
    }

    #[test]
    fn repeated_initrd_and_comments() {
        let e = Entry::parse("# c\n\ninitrd /a\ninitrd   /b\n").unwrap();
        assert_eq!(e.all("initrd").collect::<Vec<_>>(), vec!["/a", "/b"]);
    }

    #[test]
    fn key_without_value_is_an_error() {
        assert!(Entry::parse("title x\nlinux\n").is_err());
    }

    #[test]
    fn file_name_matches_ostree() {
        assert_eq!(entry_file_name(2, "default"), "ostree-2-default.conf");
    }
}
