//! Kernel arguments an image asks for: `/usr/lib/stratum/kargs.d/*.toml`, in bootc's format.
//!
//! ```toml
//! kargs = ["console=ttyS0,115200", "mitigations=auto"]
//! match-architectures = ["x86_64"]   # optional; Rust's names (std::env::consts::ARCH)
//! ```
//!
//! Files are read in name order; unknown keys are an error. On deploy, the difference between
//! the merge deployment's image defaults and the new image's is applied to the inherited
//! arguments (as bootc does): defaults the new image dropped are removed, defaults it added
//! are appended, and everything else, the admin's own arguments included, is kept.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::kargs::Kargs;

/// Where an image keeps its kernel argument defaults, relative to the deployment root.
pub const KARGS_D: &str = "usr/lib/stratum/kargs.d";

/// One `kargs.d` file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct KargsFile {
    kargs: Vec<String>,
    #[serde(default)]
    match_architectures: Option<Vec<String>>,
}

/// Parses one file's text; `name` is used in errors. Returns its arguments for `arch`.
pub fn parse_file(name: &str, text: &str, arch: &str) -> Result<Vec<String>> {
    let f: KargsFile = toml::from_str(text).with_context(|| format!("kargs.d file {name}"))?;
    if let Some(archs) = &f.match_architectures {
        if !archs.iter().any(|a| a == arch) {
            return Ok(Vec::new());
        }
    }
    let mut out = Vec::new();
    for a in &f.kargs {
        for p in Kargs::parse(a)
            .and_then(|k| {
                if k.is_empty() {
                    bail!("empty kernel argument");
                }
                Ok(k)
            })
            .with_context(|| format!("kargs.d file {name}: argument {a:?}"))?
            .to_list()
        {
            crate::kargs::check_settable(&p).with_context(|| format!("kargs.d file {name}"))?;
            out.push(p);
        }
    }
    Ok(out)
}

/// The defaults of the image checked out at `root`, for this machine's architecture.
pub fn read(root: &Path) -> Result<Vec<String>> {
    read_for_arch(root, std::env::consts::ARCH)
}

/// The defaults of the image at `root` for `arch`.
pub fn read_for_arch(root: &Path, arch: &str) -> Result<Vec<String>> {
    let dir = root.join(KARGS_D);
    let rd = match fs::read_dir(&dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    let mut names = Vec::new();
    for e in rd {
        let e = e.with_context(|| format!("reading {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".toml") && e.path().is_file() {
            names.push(name);
        }
    }
    names.sort();
    let mut out = Vec::new();
    for name in names {
        let path = dir.join(&name);
        let text =
            fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        out.extend(parse_file(&path.display().to_string(), &text, arch)?);
    }
    Ok(out)
}

/// Applies the change of image defaults from `old` to `new` to the inherited `kargs`:
/// arguments in `old` but not `new` are removed (every copy), arguments in `new` but not
/// `old` are appended unless already present. All three lists hold canonical arguments
/// (as [`Kargs::to_list`] writes them).
pub fn apply_diff(kargs: &[String], old: &[String], new: &[String]) -> Vec<String> {
    let removed: Vec<&String> = old.iter().filter(|a| !new.contains(a)).collect();
    let mut out: Vec<String> = kargs
        .iter()
        .filter(|a| !removed.contains(a))
        .cloned()
        .collect();
    for a in new.iter().filter(|a| !old.contains(a)) {
        if !out.contains(a) {
            out.push(a.clone());
        }
    }
    out
}

/// The arguments of a new deployment at `new_root` that inherits `kargs` from the deployment
/// at `old_root` (`None` for a first deployment: every default is new).
pub fn inherit(kargs: &[String], old_root: Option<&Path>, new_root: &Path) -> Result<Vec<String>> {
    let old = match old_root {
        Some(r) => read(r).context("the current image's kernel argument defaults")?,
        None => Vec::new(),
    };
    let new = read(new_root).context("the new image's kernel argument defaults")?;
    Ok(apply_diff(kargs, &old, &new))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn parses_bootc_format() {
        let t = "kargs = [\"console=ttyS0,115200\", \"foo=\\\"a b\\\"\"]\n\
                 match-architectures = [\"x86_64\", \"aarch64\"]\n";
        assert_eq!(
            parse_file("10.toml", t, "x86_64").unwrap(),
            v(&["console=ttyS0,115200", "\"foo=a b\""])
        );
        assert!(parse_file("10.toml", t, "s390x").unwrap().is_empty());
        assert_eq!(
            parse_file("a.toml", "kargs = [\"a b\"]", "x").unwrap(),
            v(&["a", "b"])
        );
    }

    #[test]
    fn malformed_files_name_the_file() {
        for bad in [
            "kargs = [\"x\"]\nunknown = 1\n",
            "kargs = \"x\"",
            "match-architectures = [\"x86_64\"]",
            "kargs = [\"\"]",
            "kargs = [\"a\\nb\"]",
            "kargs = [\"ostree=/x\"]",
            "kargs = ['k=C:\\dir']",
            "kargs = ['k=voilà']",
            "not toml",
        ] {
            let e = parse_file("/x/50-bad.toml", bad, "x86_64").unwrap_err();
            assert!(format!("{e:#}").contains("50-bad.toml"), "{bad}: {e:#}");
        }
    }

    #[test]
    fn files_are_read_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(KARGS_D);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("20-b.toml"), "kargs = [\"b\"]").unwrap();
        fs::write(dir.join("10-a.toml"), "kargs = [\"a\"]").unwrap();
        fs::write(dir.join("README"), "ignored").unwrap();
        assert_eq!(read_for_arch(d.path(), "x86_64").unwrap(), v(&["a", "b"]));
        assert!(read_for_arch(&d.path().join("none"), "x86_64")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn diff_keeps_admin_arguments() {
        let kargs = v(&["root=UUID=1", "rw", "old.default=1", "admin=1", "keep=1"]);
        let old = v(&["old.default=1", "keep=1"]);
        let new = v(&["keep=1", "new.default=1", "admin=1"]);
        assert_eq!(
            apply_diff(&kargs, &old, &new),
            v(&["root=UUID=1", "rw", "admin=1", "keep=1", "new.default=1"])
        );
        // A first deployment gets every default.
        assert_eq!(apply_diff(&v(&["rw"]), &[], &v(&["a"])), v(&["rw", "a"]));
        // An admin's deletion of a default that did not change is respected.
        assert_eq!(apply_diff(&v(&["rw"]), &old, &old), v(&["rw"]));
    }
}
