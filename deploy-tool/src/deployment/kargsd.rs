//! Kernel arguments an image asks for: `/usr/lib/stratum/kargs.d/*.toml` and bootc's
//! `/usr/lib/bootc/kargs.d/*.toml`, both in bootc's format.
//!
//! ```toml
//! kargs = ["console=ttyS0,115200", "mitigations=auto"]
//! match-architectures = ["x86_64"]   # optional; Rust's names (std::env::consts::ARCH)
//! ```
//!
//! The files of both directories are read merged, in file-name order (bytewise, as bootc sorts
//! them); a file in Stratum's directory replaces bootc's file of the same name, so an image
//! can override one of bootc's files without touching it. Unknown keys are an error. On
//! deploy, the difference between
//! the merge deployment's image defaults and the new image's is applied to the inherited
//! arguments (as bootc does): defaults the new image dropped are removed, defaults it added
//! are appended, and everything else, the admin's own arguments included, is kept.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::kargs::Kargs;

/// Where an image keeps its kernel argument defaults, relative to the deployment root.
pub const KARGS_D: &str = "usr/lib/stratum/kargs.d";

/// bootc's directory of the same files, read too so that an image built for bootc keeps its
/// arguments; [`KARGS_D`] wins a file name both hold.
pub const BOOTC_KARGS_D: &str = "usr/lib/bootc/kargs.d";

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
    let f: KargsFile = toml::from_str(text)
        .map_err(crate::excerpt::error)
        .with_context(|| format!("kargs.d file {name}"))?;
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
    // Name -> path; bootc's first, so that Stratum's file of the same name replaces it.
    let mut files = BTreeMap::new();
    for dir in [BOOTC_KARGS_D, KARGS_D] {
        for (name, path) in crate::fsutil::dir_entries(&root.join(dir))? {
            if name.ends_with(".toml") && path.is_file() {
                files.insert(name, path);
            }
        }
    }
    let mut out = Vec::new();
    for path in files.values() {
        let text =
            fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
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

    fn write(root: &Path, path: &str, text: &str) {
        let p = root.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }

    #[test]
    fn bootc_files_are_merged_by_name_and_stratums_win() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        write(
            r,
            "usr/lib/bootc/kargs.d/10-bootc.toml",
            "kargs = [\"b10\"]",
        );
        write(
            r,
            "usr/lib/stratum/kargs.d/20-stratum.toml",
            "kargs = [\"s20\"]",
        );
        write(
            r,
            "usr/lib/bootc/kargs.d/30-bootc.toml",
            "kargs = [\"b30\"]",
        );
        // The same name in both: Stratum's is read, bootc's is not.
        write(r, "usr/lib/bootc/kargs.d/40-both.toml", "kargs = [\"b40\"]");
        write(
            r,
            "usr/lib/stratum/kargs.d/40-both.toml",
            "kargs = [\"s40\"]",
        );
        write(r, "usr/lib/bootc/kargs.d/README", "ignored");
        assert_eq!(
            read_for_arch(r, "x86_64").unwrap(),
            v(&["b10", "s20", "b30", "s40"])
        );
        // bootc's directory alone is enough.
        fs::remove_dir_all(r.join(KARGS_D)).unwrap();
        assert_eq!(
            read_for_arch(r, "x86_64").unwrap(),
            v(&["b10", "b30", "b40"])
        );
    }

    #[test]
    fn defaults_dropped_from_either_directory_are_removed() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("old"), d.path().join("new"));
        write(
            &old,
            "usr/lib/bootc/kargs.d/10-a.toml",
            "kargs = [\"gone=1\", \"kept=1\"]",
        );
        write(
            &old,
            "usr/lib/stratum/kargs.d/20-b.toml",
            "kargs = [\"moved=1\"]",
        );
        // The new image keeps `kept=1` and moves `moved=1` into bootc's directory.
        write(
            &new,
            "usr/lib/bootc/kargs.d/10-a.toml",
            "kargs = [\"kept=1\", \"moved=1\"]",
        );
        write(
            &new,
            "usr/lib/stratum/kargs.d/30-c.toml",
            "kargs = [\"added=1\"]",
        );
        let kargs = v(&["rw", "gone=1", "kept=1", "moved=1", "admin=1"]);
        assert_eq!(
            inherit(&kargs, Some(&old), &new).unwrap(),
            v(&["rw", "kept=1", "moved=1", "admin=1", "added=1"])
        );
    }
}
