//! The dpkg database of an image: where it lives and what its `status` file says.
//!
//! Every Stratum image keeps the database under `/usr` ([`DB_DIR`]), with `/var/lib/dpkg` a
//! symlink to it, so a deployment carries the database of exactly what it contains and a
//! rollback brings back the matching one. Images composed before that keep it in the factory
//! `/var` ([`LEGACY_DB_DIR`]); it is read from there.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use serde::Serialize;

use super::deb822::{self, Paragraph};
use super::names;

/// dpkg's database in an image (`/var/lib/dpkg` links here).
pub const DB_DIR: &str = "usr/lib/sysimage/dpkg";
/// The target of the `/var/lib/dpkg` symlink.
pub const VAR_LINK_TARGET: &str = "../../usr/lib/sysimage/dpkg";
/// Where images composed before the database moved under `/usr` keep it.
pub const LEGACY_DB_DIR: &str = "usr/share/factory/var/lib/dpkg";

/// A binary package at one version.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PackageId {
    pub name: String,
    pub version: String,
    pub arch: String,
}

impl PackageId {
    /// `name_version_arch`, as in a `.deb` file name (and origin files).
    pub fn nva(&self) -> String {
        format!("{}_{}_{}", self.name, self.version, self.arch)
    }

    /// A package id from its three names, each checked against Debian policy
    /// ([`names`]): every id is safe to build a path or a ref from.
    pub fn new(name: &str, version: &str, arch: &str) -> Result<PackageId> {
        names::package(name)?;
        names::version(version)?;
        names::architecture(arch)?;
        Ok(PackageId {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
        })
    }

    /// Parses [`PackageId::nva`].
    pub fn parse_nva(s: &str) -> Result<PackageId> {
        let mut it = s.splitn(3, '_');
        match (it.next(), it.next(), it.next()) {
            (Some(n), Some(v), Some(a)) => {
                PackageId::new(n, v, a).with_context(|| format!("{s:?} is not NAME_VERSION_ARCH"))
            }
            _ => anyhow::bail!("{s:?} is not NAME_VERSION_ARCH"),
        }
    }

    /// The package's paragraph fields.
    pub fn of(p: &Paragraph) -> Result<PackageId> {
        let f = |k: &str| {
            p.get(k)
                .map(str::trim)
                .with_context(|| format!("package paragraph without {k}"))
        };
        PackageId::new(f("Package")?, f("Version")?, f("Architecture")?)
    }

    /// The name dpkg gives the package's files in `info/`: `name:arch` for `Multi-Arch: same`.
    pub fn info_name(&self, multi_arch_same: bool) -> String {
        if multi_arch_same {
            format!("{}:{}", self.name, self.arch)
        } else {
            self.name.clone()
        }
    }
}

impl std::fmt::Display for PackageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.name, self.version, self.arch)
    }
}

/// The installed packages of a `status` file, by name.
pub fn installed(status: &str) -> Result<BTreeMap<String, PackageId>> {
    let mut out = BTreeMap::new();
    for p in deb822::parse(status).context("parsing the dpkg status file")? {
        if !is_installed(&p) {
            continue;
        }
        let id = PackageId::of(&p)?;
        out.insert(id.name.clone(), id);
    }
    Ok(out)
}

/// Whether a status paragraph is an installed package (`… ok installed`).
pub fn is_installed(p: &Paragraph) -> bool {
    p.get("Status")
        .is_some_and(|s| s.split_whitespace().nth(2) == Some("installed"))
}

/// The `status` file of `commit`, from the database under `/usr` (or the legacy place).
pub fn status_of_commit(repo: &ostree::Repo, commit: &str) -> Result<Option<String>> {
    for dir in [DB_DIR, LEGACY_DB_DIR] {
        if let Some(b) = crate::repo::read_file(repo, commit, &format!("{dir}/status"))? {
            return Ok(Some(
                String::from_utf8(b).context("dpkg status is not UTF-8")?,
            ));
        }
    }
    Ok(None)
}

/// Commit metadata of composed images: the installed packages, `a(sss)` of name, version
/// and architecture, sorted.
pub const META_PACKAGES: &str = "stratum.packages";

/// The installed packages of `commit` (empty for an image without a dpkg database): from
/// its metadata when the image recorded them there (nothing else of the commit is read),
/// else from the database in its tree.
pub fn packages_of_commit(
    repo: &ostree::Repo,
    commit: &str,
) -> Result<BTreeMap<String, PackageId>> {
    let meta = crate::repo::commit_metadata(repo, commit)?;
    if let Ok(Some(list)) = meta.lookup::<Vec<(String, String, String)>>(META_PACKAGES) {
        return list
            .into_iter()
            .map(|(name, version, arch)| {
                let id = PackageId::new(&name, &version, &arch)
                    .with_context(|| format!("commit {commit}: {META_PACKAGES}"))?;
                Ok((id.name.clone(), id))
            })
            .collect();
    }
    match status_of_commit(repo, commit)? {
        Some(s) => installed(&s).with_context(|| format!("commit {commit}")),
        None => Ok(BTreeMap::new()),
    }
}

/// How two package sets differ, by name.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct PackageDiff {
    pub added: Vec<PackageId>,
    pub removed: Vec<PackageId>,
    /// (from, to), to newer.
    pub upgraded: Vec<(PackageId, PackageId)>,
    /// (from, to), to older.
    pub downgraded: Vec<(PackageId, PackageId)>,
}

impl PackageDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.upgraded.is_empty()
            && self.downgraded.is_empty()
    }
}

/// The difference from `a` to `b`; versions are compared by Debian's rules.
pub fn diff(a: &BTreeMap<String, PackageId>, b: &BTreeMap<String, PackageId>) -> PackageDiff {
    let mut d = PackageDiff::default();
    for (n, old) in a {
        match b.get(n) {
            None => d.removed.push(old.clone()),
            Some(new) if new.version != old.version => {
                if super::version::compare(&new.version, &old.version).is_gt() {
                    d.upgraded.push((old.clone(), new.clone()));
                } else {
                    d.downgraded.push((old.clone(), new.clone()));
                }
            }
            Some(_) => {}
        }
    }
    for (n, new) in b {
        if !a.contains_key(n) {
            d.added.push(new.clone());
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(items: &[(&str, &str)]) -> BTreeMap<String, PackageId> {
        items
            .iter()
            .map(|(n, v)| {
                (
                    n.to_string(),
                    PackageId {
                        name: n.to_string(),
                        version: v.to_string(),
                        arch: "amd64".into(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn installed_skips_removed_and_config_files() {
        let s = "Package: aa\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n\n\
                 Package: bb\nStatus: deinstall ok config-files\nVersion: 2\nArchitecture: all\n\n\
                 Package: cc\nStatus: hold ok installed\nVersion: 3\nArchitecture: amd64\n";
        let i = installed(s).unwrap();
        assert_eq!(i.keys().collect::<Vec<_>>(), ["aa", "cc"]);
        // A name no policy allows is never a path.
        let bad = "Package: ../../x\nStatus: install ok installed\nVersion: 1\nArchitecture: all\n";
        assert!(installed(bad).is_err());
    }

    #[test]
    fn diff_classifies_by_debian_version_order() {
        let a = set(&[
            ("x", "1.0"),
            ("y", "2.0~rc1"),
            ("z", "1:0.1"),
            ("gone", "1"),
        ]);
        let b = set(&[("x", "1.0"), ("y", "2.0"), ("z", "5.0"), ("new", "1")]);
        let d = diff(&a, &b);
        assert_eq!(d.added.len(), 1);
        assert_eq!(d.removed[0].name, "gone");
        assert_eq!(d.upgraded[0].1.name, "y");
        // An epoch outranks everything after it.
        assert_eq!(d.downgraded[0].1.name, "z");
    }

    #[test]
    fn nva_round_trip() {
        let id = PackageId::parse_nva("openssh-server_1:9.2p1-2+deb12u3_amd64").unwrap();
        assert_eq!(id.version, "1:9.2p1-2+deb12u3");
        assert_eq!(PackageId::parse_nva(&id.nva()).unwrap(), id);
        assert!(PackageId::parse_nva("nounderscore").is_err());
    }
}
