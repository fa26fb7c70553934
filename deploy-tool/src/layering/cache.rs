//! The package cache: every `.deb` used on this machine, unpacked once into the sysroot's
//! repository as a commit of its own, on one ref per package and version.
//!
//! A cached package's tree is laid out as in an image, so that it can be checked out over a
//! base checkout as hardlinks: `/etc` is `/usr/etc`; merged-`/usr` paths (`/bin`, `/lib`…) are
//! under `/usr`; what OSTree systems keep in `/var` (`/opt`, `/srv`, `/usr/local`) is under
//! `/var`; dpkg's files for the package (`.list`, `.md5sums`, maintainer scripts…) are in the
//! database's `info/`. The package's status paragraph (its control fields, `Status` and
//! `Conffiles` with their checksums) is commit metadata, appended to the database's `status`
//! when the package is layered.

use std::path::Path;

use anyhow::{Context, Result};
use ostree::{gio, glib};

use super::unpack;
use crate::debian::deb822::{self, Paragraph};
use crate::debian::dpkgdb::PackageId;
use crate::repo::{self, NewCommit};

/// Ref prefix of packages from repositories: `<prefix>/<name>/<version>_<arch>`.
pub const REF_PREFIX: &str = "stratum/pkgcache";
/// Ref prefix of local `.deb` files: `<prefix>/<sha256>`.
pub const LOCAL_REF_PREFIX: &str = "stratum/pkgcache-local";
/// Commit metadata: the package's status paragraph (`s`).
const META_STATUS: &str = "stratum.dpkg.status";
/// Commit metadata: the SHA-256 of the `.deb` (`s`).
const META_SHA256: &str = "stratum.deb.sha256";

/// A package in the cache.
#[derive(Debug, Clone)]
pub struct Cached {
    pub id: PackageId,
    pub commit: String,
    /// The status paragraph, with `Status: install ok unpacked`.
    pub status: Paragraph,
    pub sha256: String,
}

impl Cached {
    /// The name of the package's files in the database's `info/`.
    pub fn info_name(&self) -> String {
        self.id
            .info_name(self.status.get("Multi-Arch") == Some("same"))
    }
}

/// Escapes a Debian version into an OSTree ref component: letters, digits, `.` and `-` stay,
/// everything else is `_XX` (hex).
pub fn escape_ref(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02X}"));
        }
    }
    out
}

/// The ref of a package from a repository.
pub fn ref_of(id: &PackageId) -> String {
    format!(
        "{REF_PREFIX}/{}/{}_{}",
        escape_ref(&id.name),
        escape_ref(&id.version),
        escape_ref(&id.arch)
    )
}

/// The ref of a local `.deb` by its SHA-256.
pub fn local_ref(sha256: &str) -> String {
    format!("{LOCAL_REF_PREFIX}/{sha256}")
}

/// Looks up a cached package by ref.
pub fn lookup(repo: &ostree::Repo, refname: &str) -> Result<Option<Cached>> {
    let Some(commit) = repo.resolve_rev(refname, true)? else {
        return Ok(None);
    };
    let meta = repo::commit_metadata(repo, &commit)?;
    let status: String = meta
        .lookup(META_STATUS)?
        .with_context(|| format!("cached package {refname} has no {META_STATUS}"))?;
    let status = deb822::parse_one(&status)
        .with_context(|| format!("cached package {refname}: status paragraph"))?;
    let sha256: String = meta.lookup(META_SHA256)?.unwrap_or_default();
    Ok(Some(Cached {
        id: PackageId::of(&status)?,
        commit: commit.to_string(),
        status,
        sha256,
    }))
}

/// The SHA-256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String> {
    crate::fsutil::sha256_files(&[path])
}

/// Imports the `.deb` at `deb` under `refname` (unless that ref exists already) and returns
/// it. `scratch` is an empty directory on the repository's filesystem.
pub fn import(repo: &ostree::Repo, deb: &Path, refname: &str, scratch: &Path) -> Result<Cached> {
    if let Some(c) = lookup(repo, refname)? {
        return Ok(c);
    }
    let sha256 = sha256_file(deb)?;
    let unpacked = unpack::unpack(deb, scratch)?;
    let (id, status) = (unpacked.id, unpacked.status);
    let meta = glib::VariantDict::new(None);
    meta.insert(META_STATUS, status.to_text().as_str());
    meta.insert(META_SHA256, sha256.as_str());
    meta.insert("version", id.version.as_str());
    let commit = repo::write_commit(
        repo,
        &unpacked.tree,
        &NewCommit {
            parent: None,
            subject: &format!("{} {}", id.name, id.version),
            metadata: meta.end(),
            // The tree alone names the commit: the same .deb imports to the same commit.
            timestamp: Some(0),
            refname: Some(refname),
            devino: None,
        },
    )
    .with_context(|| format!("importing {id} into the package cache"))?;
    Ok(Cached {
        id,
        commit,
        status,
        sha256,
    })
}

/// Every cached package: (ref, commit).
pub fn list(repo: &ostree::Repo) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for prefix in [REF_PREFIX, LOCAL_REF_PREFIX] {
        let refs = repo
            .list_refs(Some(prefix), gio::Cancellable::NONE)
            .with_context(|| format!("listing {prefix} refs"))?;
        for (r, c) in refs {
            out.push((format!("{prefix}/{r}"), c.to_string()));
        }
    }
    out.sort();
    Ok(out)
}

/// Drops the cache refs whose commits are not in `used`; returns how many. (Pruning the
/// repository then frees their objects.)
pub fn drop_unused(
    repo: &ostree::Repo,
    used: &std::collections::BTreeSet<String>,
) -> Result<usize> {
    let mut n = 0;
    for (r, c) in list(repo)? {
        if !used.contains(&c) {
            repo.set_ref_immediate(None, &r, None, gio::Cancellable::NONE)?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_are_valid_ostree_refs() {
        let id = PackageId {
            name: "libstdc++6".into(),
            version: "1:12.2.0-14+deb12u1~bpo".into(),
            arch: "amd64".into(),
        };
        let r = ref_of(&id);
        assert_eq!(
            r,
            "stratum/pkgcache/libstdc_2B_2B6/1_3A12.2.0-14_2Bdeb12u1_7Ebpo_amd64"
        );
        assert!(ostree::validate_rev(&r).is_ok(), "{r}");
    }
}
