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

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib};

use crate::debian::deb822::{self, Paragraph};
use crate::debian::dpkgdb::{PackageId, DB_DIR};
use crate::repo::{self, NewCommit};

/// Ref prefix of packages from repositories: `<prefix>/<name>/<version>_<arch>`.
pub const REF_PREFIX: &str = "stratum/pkgcache";
/// Ref prefix of local `.deb` files: `<prefix>/<sha256>`.
pub const LOCAL_REF_PREFIX: &str = "stratum/pkgcache-local";
/// Commit metadata: the package's status paragraph (`s`).
const META_STATUS: &str = "stratum.dpkg.status";
/// Commit metadata: the SHA-256 of the `.deb` (`s`).
const META_SHA256: &str = "stratum.deb.sha256";

/// Top-level directories that merged-`/usr` keeps under `/usr`.
const USR_MERGED: &[&str] = &["bin", "sbin", "lib", "lib32", "lib64", "libx32"];
/// Directories that OSTree systems keep in `/var`, and where (see `compose::layout`).
const IN_VAR: &[(&str, &str)] = &[
    ("opt", "var/opt"),
    ("srv", "var/srv"),
    ("usr/local", "var/usrlocal"),
    ("home", "var/home"),
    ("root", "var/roothome"),
    ("mnt", "var/mnt"),
];

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
    let ctl = scratch.join("control");
    let tree = scratch.join("tree");
    fs::create_dir_all(&tree)?;
    crate::cmd::run(Command::new("dpkg-deb").arg("--control").arg(deb).arg(&ctl))
        .with_context(|| format!("reading the control archive of {}", deb.display()))?;
    let control = fs::read_to_string(ctl.join("control"))
        .with_context(|| format!("{}: no control file", deb.display()))?;
    let mut status = deb822::parse_one(&control)
        .with_context(|| format!("{}: DEBIAN/control", deb.display()))?;
    let id = PackageId::of(&status).with_context(|| format!("{}", deb.display()))?;
    let paths = unpack(deb, &tree)?;
    relocate(&tree, &id)?;
    // dpkg's files for the package.
    let info_name = id.info_name(status.get("Multi-Arch") == Some("same"));
    let info = tree.join(DB_DIR).join("info");
    fs::create_dir_all(&info)?;
    let mut list = String::new();
    for p in &paths {
        list.push_str(p);
        list.push('\n');
    }
    fs::write(info.join(format!("{info_name}.list")), list)?;
    let mut members: Vec<_> = fs::read_dir(&ctl)?.collect::<std::io::Result<_>>()?;
    members.sort_by_key(|e| e.file_name());
    for e in members {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "control" {
            continue;
        }
        fs::copy(e.path(), info.join(format!("{info_name}.{name}")))?;
    }
    // Conffiles with the checksums dpkg compares at configuration and upgrade.
    if let Ok(conffiles) = fs::read_to_string(ctl.join("conffiles")) {
        let mut field = String::new();
        for cf in conffiles.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let Some(rel) = cf.strip_prefix("/etc/") else {
                // `remove-on-upgrade` and other flags only concern upgrades in place.
                continue;
            };
            let file = tree.join("usr/etc").join(rel);
            let sum = md5_file(&file)
                .with_context(|| format!("{id}: conffile {cf} is not in the package"))?;
            field.push_str(&format!("\n {cf} {sum}"));
        }
        if !field.is_empty() {
            status.set("Conffiles", &field, None);
        }
    }
    status.set("Status", "install ok unpacked", Some("Package"));
    let meta = glib::VariantDict::new(None);
    meta.insert(META_STATUS, status.to_text().as_str());
    meta.insert(META_SHA256, sha256.as_str());
    meta.insert("version", id.version.as_str());
    let commit = repo::write_commit(
        repo,
        &tree,
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

/// Unpacks the data archive of `deb` into `tree`; returns its paths as dpkg lists them
/// (`/.` first, no trailing `/`).
fn unpack(deb: &Path, tree: &Path) -> Result<Vec<String>> {
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(deb)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running dpkg-deb")?;
    let out = Command::new("tar")
        .args(["-x", "-v", "--numeric-owner", "--same-owner", "-p", "-C"])
        .arg(tree)
        .stdin(dpkg.stdout.take().context("dpkg-deb stdout")?)
        .output()
        .context("running tar")?;
    let st = dpkg.wait()?;
    if !st.success() || !out.status.success() {
        bail!(
            "unpacking {}: {}",
            deb.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let mut paths = Vec::new();
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let p = l.trim_start_matches('.').trim_end_matches('/');
        paths.push(if p.is_empty() {
            "/.".to_string()
        } else {
            p.to_string()
        });
    }
    Ok(paths)
}

/// Moves the unpacked files to where an image keeps them.
fn relocate(tree: &Path, id: &PackageId) -> Result<()> {
    for top in USR_MERGED {
        move_merge(&tree.join(top), &tree.join("usr").join(top), id)?;
    }
    move_merge(&tree.join("etc"), &tree.join("usr/etc"), id)?;
    for (from, to) in IN_VAR {
        move_merge(&tree.join(from), &tree.join(to), id)?;
    }
    if tree.join("boot").exists() {
        let boot = tree.join("boot");
        if fs::read_dir(&boot)?.next().is_some() {
            bail!(
                "{id} installs files in /boot; on Stratum the kernel and its files come with \
                 the image (layering a kernel is not supported)"
            );
        }
        fs::remove_dir(&boot)?;
    }
    Ok(())
}

/// Moves the directory `from` into `to`, merging with what is there; a file in both is an
/// error.
fn move_merge(from: &Path, to: &Path, id: &PackageId) -> Result<()> {
    let Ok(meta) = fs::symlink_metadata(from) else {
        return Ok(());
    };
    if !meta.is_dir() {
        bail!("{id}: {} is not a directory", from.display());
    }
    if !to.exists() {
        fs::create_dir_all(to.parent().context("parent")?)?;
        fs::rename(from, to)?;
        return Ok(());
    }
    for e in fs::read_dir(from)? {
        let e = e?;
        let dest: PathBuf = to.join(e.file_name());
        if e.file_type()?.is_dir() && dest.is_dir() {
            move_merge(&e.path(), &dest, id)?;
        } else if fs::symlink_metadata(&dest).is_ok() {
            bail!(
                "{id} ships both {} and {}, the same path on a merged-/usr system",
                e.path().display(),
                dest.display()
            );
        } else {
            fs::rename(e.path(), &dest)?;
        }
    }
    fs::remove_dir(from)?;
    Ok(())
}

fn md5_file(path: &Path) -> Result<String> {
    use md5::{Digest as _, Md5};
    let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(Md5::digest(&data)))
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
