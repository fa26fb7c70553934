//! Which scripts `boot-complete` runs, and in what order: the health checks, and the hooks
//! run after the verdict. They come from two families of directories, Stratum's and
//! greenboot's, so that checks written for greenboot work unchanged:
//!
//! | set | Stratum's | greenboot's |
//! |---|---|---|
//! | required checks | `stratum/health.d/required.d` | `greenboot/check/required.d` |
//! | wanted checks | `stratum/health.d/wanted.d` | `greenboot/check/wanted.d` |
//! | after success | `stratum/health.d/green.d` | `greenboot/green.d` |
//! | after a failure | `stratum/health.d/red.d` | `greenboot/red.d` |
//!
//! each under `/usr/lib` (the image's) and `/etc` (the administrator's). Within a family an
//! entry in `/etc` replaces the `/usr/lib` entry of the same name, as systemd's unit
//! directories do; a symlink to `/dev/null` (anything that is not a runnable file) there
//! disables it. Stratum's entries run when they are executable regular files; greenboot's when
//! their names end in `.sh`, with `bash`, whatever their mode, as greenboot runs them.
//!
//! A set's scripts of both families run merged in one order, by file name compared bytewise
//! (greenboot sorts with `LC_ALL=C`, which is the same); a name found in both families runs
//! twice, Stratum's first. Unlike greenboot, which runs its `/usr/lib` directory and then its
//! `/etc` one, every name has one place in the order, whichever directory holds it.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

/// A set of scripts `boot-complete` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Set {
    /// Checks that must pass.
    Required,
    /// Checks whose failures only warn.
    Wanted,
    /// Hooks run when every required check passed.
    Green,
    /// Hooks run when a required check failed, before the failure's action.
    Red,
}

/// The layers of a family, the image's first: a later layer's entry replaces an earlier one's.
const LAYERS: [&str; 2] = ["usr/lib", "etc"];

/// Who defined a directory layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    Stratum,
    Greenboot,
}

impl Family {
    /// The directory of `set`, relative to a layer.
    fn dir(self, set: Set) -> &'static str {
        match (self, set) {
            (Family::Stratum, Set::Required) => "stratum/health.d/required.d",
            (Family::Stratum, Set::Wanted) => "stratum/health.d/wanted.d",
            (Family::Stratum, Set::Green) => "stratum/health.d/green.d",
            (Family::Stratum, Set::Red) => "stratum/health.d/red.d",
            (Family::Greenboot, Set::Required) => "greenboot/check/required.d",
            (Family::Greenboot, Set::Wanted) => "greenboot/check/wanted.d",
            (Family::Greenboot, Set::Green) => "greenboot/green.d",
            (Family::Greenboot, Set::Red) => "greenboot/red.d",
        }
    }

    /// Whether a directory entry named `name` belongs to the family's set at all (and so can
    /// replace a vendor entry).
    fn takes(self, name: &str) -> bool {
        match self {
            Family::Stratum => true,
            // greenboot looks only for `*.sh`; a README next to them is not a script.
            Family::Greenboot => name.ends_with(".sh"),
        }
    }
}

/// One script to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// Its file name, which places it in the order.
    pub name: String,
    pub path: PathBuf,
    /// Run with `bash` (greenboot's scripts need not be executable).
    pub bash: bool,
}

impl Script {
    /// The command that starts it.
    pub fn command(&self) -> Command {
        if self.bash {
            let mut c = Command::new("bash");
            c.arg(&self.path);
            c
        } else {
            Command::new(&self.path)
        }
    }
}

/// The scripts of `set` in the OS whose root is `root`, in the order they run.
pub fn find(root: &Path, set: Set) -> Result<Vec<Script>> {
    let mut all = family_scripts(root, Family::Stratum, set)?;
    all.extend(family_scripts(root, Family::Greenboot, set)?);
    // A stable sort: of two scripts with one name, Stratum's stays first.
    all.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(all)
}

/// One family's runnable scripts of `set`, the `/etc` layer masking `/usr/lib`.
fn family_scripts(root: &Path, family: Family, set: Set) -> Result<Vec<Script>> {
    let mut by_name = BTreeMap::new();
    for layer in LAYERS {
        let dir = root.join(layer).join(family.dir(set));
        for (name, path) in crate::fsutil::dir_entries(&dir)? {
            if family.takes(&name) {
                by_name.insert(name, path);
            }
        }
    }
    let mut out = Vec::new();
    for (name, path) in by_name {
        let m = std::fs::metadata(&path).with_context(|| format!("reading {}", path.display()))?;
        // `/dev/null` is no regular file: a link to it masks the name.
        let runnable = m.is_file()
            && match family {
                Family::Stratum => m.permissions().mode() & 0o111 != 0,
                Family::Greenboot => true,
            };
        if runnable {
            out.push(Script {
                name,
                path,
                bash: family == Family::Greenboot,
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(root: &Path, path: &str, mode: u32) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    fn to_dev_null(root: &Path, path: &str) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink("/dev/null", p).unwrap();
    }

    /// The paths `find` returns, relative to `root`, with `bash ` before greenboot's.
    fn found(root: &Path, set: Set) -> Vec<String> {
        find(root, set)
            .unwrap()
            .iter()
            .map(|s| {
                let rel = s.path.strip_prefix(root).unwrap().display().to_string();
                if s.bash {
                    format!("bash {rel}")
                } else {
                    rel
                }
            })
            .collect()
    }

    #[test]
    fn every_directory_is_read_merged_in_name_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        file(r, "etc/stratum/health.d/required.d/30-etc", 0o755);
        file(r, "usr/lib/stratum/health.d/required.d/10-vendor", 0o755);
        file(r, "etc/greenboot/check/required.d/40-gb-etc.sh", 0o644);
        file(
            r,
            "usr/lib/greenboot/check/required.d/20-gb-vendor.sh",
            0o644,
        );
        // A name in both families runs in both, Stratum's first.
        file(r, "usr/lib/greenboot/check/required.d/50-both.sh", 0o644);
        file(r, "etc/stratum/health.d/required.d/50-both.sh", 0o755);
        assert_eq!(
            found(r, Set::Required),
            [
                "usr/lib/stratum/health.d/required.d/10-vendor",
                "bash usr/lib/greenboot/check/required.d/20-gb-vendor.sh",
                "etc/stratum/health.d/required.d/30-etc",
                "bash etc/greenboot/check/required.d/40-gb-etc.sh",
                "etc/stratum/health.d/required.d/50-both.sh",
                "bash usr/lib/greenboot/check/required.d/50-both.sh",
            ]
        );
        assert!(found(r, Set::Wanted).is_empty());
    }

    #[test]
    fn each_set_has_its_directories() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for (set, stratum, greenboot) in [
            (
                Set::Wanted,
                "stratum/health.d/wanted.d",
                "greenboot/check/wanted.d",
            ),
            (Set::Green, "stratum/health.d/green.d", "greenboot/green.d"),
            (Set::Red, "stratum/health.d/red.d", "greenboot/red.d"),
        ] {
            file(r, &format!("usr/lib/{stratum}/1"), 0o755);
            file(r, &format!("etc/{stratum}/2"), 0o755);
            file(r, &format!("usr/lib/{greenboot}/3.sh"), 0o644);
            file(r, &format!("etc/{greenboot}/4.sh"), 0o644);
            assert_eq!(
                found(r, set),
                [
                    format!("usr/lib/{stratum}/1"),
                    format!("etc/{stratum}/2"),
                    format!("bash usr/lib/{greenboot}/3.sh"),
                    format!("bash etc/{greenboot}/4.sh"),
                ],
                "{set:?}"
            );
        }
    }

    #[test]
    fn etc_masks_usr_lib_within_a_family() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for f in ["10-replaced", "20-disabled", "30-kept"] {
            file(r, &format!("usr/lib/stratum/health.d/wanted.d/{f}"), 0o755);
            file(
                r,
                &format!("usr/lib/greenboot/check/wanted.d/{f}.sh"),
                0o644,
            );
        }
        file(r, "etc/stratum/health.d/wanted.d/10-replaced", 0o755);
        file(r, "etc/greenboot/check/wanted.d/10-replaced.sh", 0o644);
        to_dev_null(r, "etc/stratum/health.d/wanted.d/20-disabled");
        to_dev_null(r, "etc/greenboot/check/wanted.d/20-disabled.sh");
        assert_eq!(
            found(r, Set::Wanted),
            [
                "etc/stratum/health.d/wanted.d/10-replaced",
                "bash etc/greenboot/check/wanted.d/10-replaced.sh",
                "usr/lib/stratum/health.d/wanted.d/30-kept",
                "bash usr/lib/greenboot/check/wanted.d/30-kept.sh",
            ]
        );
    }

    #[test]
    fn only_runnable_entries_count() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        // Stratum's must be executable; greenboot's must end in `.sh`, whatever their mode.
        file(r, "etc/stratum/health.d/red.d/README", 0o644);
        file(r, "etc/stratum/health.d/red.d/run", 0o700);
        file(r, "etc/greenboot/red.d/README", 0o755);
        file(r, "etc/greenboot/red.d/notify.sh", 0o600);
        std::fs::create_dir_all(r.join("etc/greenboot/red.d/dir.sh")).unwrap();
        assert_eq!(
            found(r, Set::Red),
            [
                "bash etc/greenboot/red.d/notify.sh",
                "etc/stratum/health.d/red.d/run"
            ]
        );
    }
}
