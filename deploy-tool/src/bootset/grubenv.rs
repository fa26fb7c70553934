//! GRUB's environment block (`grubenv`): the only state GRUB can write at boot.
//!
//! The format is GRUB's: the signature line `# GRUB Environment Block`, `name=value` lines
//! (backslash escapes `\\` and newlines), padded with `#` to exactly 1024 bytes. GRUB's
//! `save_env` rewrites the file's existing blocks in place, so the file must keep its size and
//! must not be sparse; Stratum always writes it whole (temporary file + rename), which keeps
//! both properties and is crash-safe.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Size of the block GRUB reads and writes.
pub const SIZE: usize = 1024;
const SIGNATURE: &str = "# GRUB Environment Block\n";

/// The variables of an environment block, in name order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GrubEnv {
    vars: BTreeMap<String, String>,
}

/// Why a block could not be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("the file is {0} bytes, a GRUB environment block is {SIZE}")]
    Size(usize),
    #[error("the GRUB environment block signature is missing")]
    Signature,
    #[error("line {0} is not name=value")]
    Line(usize),
}

impl GrubEnv {
    /// Parses a block strictly: anything GRUB itself would reject is an error.
    pub fn parse(data: &[u8]) -> std::result::Result<GrubEnv, ParseError> {
        if data.len() != SIZE {
            return Err(ParseError::Size(data.len()));
        }
        let Some(body) = data.strip_prefix(SIGNATURE.as_bytes()) else {
            return Err(ParseError::Signature);
        };
        let mut vars = BTreeMap::new();
        let text = String::from_utf8_lossy(body);
        let mut lines = text.split('\n').enumerate().peekable();
        while let Some((n, line)) = lines.next() {
            if line.starts_with('#') || line.is_empty() {
                // Padding (and comments); the padding runs to the end of the block.
                continue;
            }
            // A line ending in an odd number of backslashes continues on the next one.
            let mut raw = line.to_string();
            while (raw.len() - raw.trim_end_matches('\\').len()) % 2 == 1 {
                match lines.next() {
                    Some((_, next)) => {
                        raw.push('\n');
                        raw.push_str(next);
                    }
                    None => break,
                }
            }
            let (k, v) = raw.split_once('=').ok_or(ParseError::Line(n + 2))?;
            if k.is_empty() {
                return Err(ParseError::Line(n + 2));
            }
            vars.insert(k.to_string(), unescape(v));
        }
        Ok(GrubEnv { vars })
    }

    /// Serializes to exactly [`SIZE`] bytes; fails when the variables do not fit.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut out = String::from(SIGNATURE);
        for (k, v) in &self.vars {
            out.push_str(k);
            out.push('=');
            out.push_str(&escape(v));
            out.push('\n');
        }
        if out.len() > SIZE {
            bail!("the GRUB environment does not fit in {SIZE} bytes");
        }
        let mut b = out.into_bytes();
        b.resize(SIZE, b'#');
        Ok(b)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.vars.get(k).map(String::as_str)
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.vars.insert(k.to_string(), v.into());
    }

    pub fn unset(&mut self, k: &str) {
        self.vars.remove(k);
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\\n")
}

fn unescape(v: &str) -> String {
    let mut out = String::new();
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The state of the file on disk.
#[derive(Debug)]
pub enum Loaded {
    Missing,
    /// Unreadable as a GRUB block: GRUB ignores it; Stratum rewrites it.
    Corrupt(ParseError),
    Valid(GrubEnv),
}

/// Reads `path`.
pub fn load(path: &Path) -> Result<Loaded> {
    match std::fs::read(path) {
        Ok(d) => Ok(match GrubEnv::parse(&d) {
            Ok(e) => Loaded::Valid(e),
            Err(e) => Loaded::Corrupt(e),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Loaded::Missing),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Writes `env` to `path` whole and durably.
pub fn store(path: &Path, env: &GrubEnv) -> Result<()> {
    crate::fsutil::atomic_write(path, &env.to_bytes()?, 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_is_exactly_one_block() {
        let mut e = GrubEnv::default();
        e.set("boot_counter", "3");
        e.set("boot_success", "0");
        e.set("odd", "a\\b\nc");
        let b = e.to_bytes().unwrap();
        assert_eq!(b.len(), SIZE);
        assert!(b.starts_with(b"# GRUB Environment Block\nboot_counter=3\nboot_success=0\n"));
        assert_eq!(GrubEnv::parse(&b).unwrap(), e);
    }

    #[test]
    fn reads_what_grub_editenv_writes() {
        // `grub-editenv FILE create; grub-editenv FILE set boot_counter=2`
        let mut b = b"# GRUB Environment Block\nboot_counter=2\n".to_vec();
        b.resize(SIZE, b'#');
        assert_eq!(GrubEnv::parse(&b).unwrap().get("boot_counter"), Some("2"));
    }

    #[test]
    fn interoperates_with_grub_editenv() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("grubenv");
        let editenv = |args: &[&str]| {
            let out = std::process::Command::new("grub-editenv")
                .arg(&f)
                .args(args)
                .output()
                .expect("grub-editenv (grub-common)");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        editenv(&["create"]);
        editenv(&["set", "boot_counter=2", "boot_success=0"]);
        let Loaded::Valid(mut e) = load(&f).unwrap() else {
            panic!("grub-editenv's file did not parse")
        };
        assert_eq!(e.get("boot_counter"), Some("2"));
        e.set("stratum_trial", "default-abc.0");
        e.unset("boot_success");
        store(&f, &e).unwrap();
        let listed = editenv(&["list"]);
        assert_eq!(listed, "boot_counter=2\nstratum_trial=default-abc.0\n");
    }

    #[test]
    fn garbage_is_rejected() {
        assert_eq!(GrubEnv::parse(b"short"), Err(ParseError::Size(5)));
        assert_eq!(GrubEnv::parse(&[0xffu8; SIZE]), Err(ParseError::Signature));
        let mut b = b"# GRUB Environment Block\nno equals sign\n".to_vec();
        b.resize(SIZE, b'#');
        assert_eq!(GrubEnv::parse(&b), Err(ParseError::Line(2)));
    }

    #[test]
    fn too_much_does_not_fit() {
        let mut e = GrubEnv::default();
        e.set("x", "y".repeat(SIZE));
        assert!(e.to_bytes().is_err());
    }
}
