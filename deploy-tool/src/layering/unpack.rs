//! A `.deb` turned into a tree laid out as in an image: the trust boundary of layering.
//!
//! A package is hostile until its tree is in the repository. So:
//! - its archives are unpacked by `dpkg-deb` and `tar` inside a sandbox that can write to one
//!   scratch directory and nothing else ([`sandbox::extract`]);
//! - its names (`Package`, `Version`, `Architecture`, every control member, every file name
//!   tar lists) are checked against Debian policy before a path is built from them
//!   ([`names`]);
//! - its tree is walked and moved with directory handles that never follow a symlink
//!   ([`beneath`]): a package that ships a symlink where the image layout needs a directory
//!   (`/usr/bin`, `/etc`, the dpkg database…) is refused, naming the path;
//! - it may not ship files in `/boot` or in the dpkg database, which are the image's.
//!
//! The layout (see `compose::layout`): `/etc` is `/usr/etc`; merged-`/usr` paths (`/bin`,
//! `/lib`…) are under `/usr`; what OSTree systems keep in `/var` (`/opt`, `/srv`,
//! `/usr/local`) is under `/var`; dpkg's files for the package (`.list`, `.md5sums`,
//! maintainer scripts…) are in the database's `info/`.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sandbox;
use crate::beneath::{self, Kind};
use crate::debian::deb822::{self, Paragraph};
use crate::debian::dpkgdb::{PackageId, DB_DIR};
use crate::debian::names;

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
/// Directories of the image a package's tree is merged into: each must be a real directory
/// in the package too (a symlink there would redirect the merge).
pub const LAYOUT_DIRS: &[&str] = &[
    "usr",
    "usr/bin",
    "usr/sbin",
    "usr/lib",
    "usr/lib/modules",
    "usr/lib/sysimage",
    "usr/etc",
    "usr/share",
    "var",
    "var/lib",
];
/// Places a package may not ship anything: the dpkg database is written by dpkg and Stratum.
const FORBIDDEN: &[&str] = &[DB_DIR, "var/lib/dpkg"];
/// Largest control member read into memory.
const MAX_MEMBER: u64 = 64 << 20;

/// A package unpacked and laid out, ready to commit.
pub struct Unpacked {
    pub id: PackageId,
    /// The status paragraph, with `Status: install ok unpacked` and checksummed `Conffiles`.
    pub status: Paragraph,
    pub tree: PathBuf,
}

/// Unpacks `deb` below `scratch` (an empty directory) and lays it out as in an image.
pub fn unpack(deb: &Path, scratch: &Path) -> Result<Unpacked> {
    let out = scratch.join("unpack");
    let listing = sandbox::extract(deb, &out)?;
    let what = deb.display();
    let ctl = beneath::open_root(&out.join("control"))?;
    let ctl = ctl.as_fd();
    let control = beneath::read(ctl, "control", MAX_MEMBER)
        .with_context(|| format!("{what}: the control file"))?;
    let control = String::from_utf8(control)
        .with_context(|| format!("{what}: the control file is not UTF-8"))?;
    let mut status =
        deb822::parse_one(&control).with_context(|| format!("{what}: DEBIAN/control"))?;
    let id = PackageId::of(&status).with_context(|| format!("{what}: DEBIAN/control"))?;
    let members = control_members(ctl).with_context(|| format!("{id}: its control archive"))?;
    let paths = listed_paths(&listing).with_context(|| format!("{id}: its data archive"))?;
    let tree_path = out.join("tree");
    let tree = beneath::open_root(&tree_path)?;
    let tree = tree.as_fd();
    relocate(tree).with_context(|| format!("refusing {id}"))?;
    let info_name = id.info_name(status.get("Multi-Arch") == Some("same"));
    write_info(tree, ctl, &members, &info_name, &paths)
        .with_context(|| format!("{id}: dpkg's files for it"))?;
    if let Some(field) = conffiles(tree, ctl).with_context(|| format!("{id}: its conffiles"))? {
        status.set("Conffiles", &field, None);
    }
    status.set("Status", "install ok unpacked", Some("Package"));
    Ok(Unpacked {
        id,
        status,
        tree: tree_path,
    })
}

/// The control archive's members but `control`, checked: names as dpkg allows them, regular
/// files only.
fn control_members(ctl: BorrowedFd<'_>) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for name in beneath::names(ctl)? {
        names::control_member(&name)?;
        if beneath::kind(ctl, &name)? != Kind::File {
            bail!("the control member {name:?} is not a regular file");
        }
        if name != "control" {
            out.push(name);
        }
    }
    Ok(out)
}

/// tar's listing as dpkg's `.list` paths (`/.` first, no trailing `/`). GNU tar escapes
/// control characters and `\` in what it lists: such a name is refused.
fn listed_paths(listing: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for l in listing.lines() {
        if l.contains('\\') {
            bail!("the file name {l:?} holds a control character or a backslash");
        }
        let p = l.trim_start_matches('.').trim_end_matches('/');
        out.push(if p.is_empty() {
            "/.".to_string()
        } else {
            p.to_string()
        });
    }
    Ok(out)
}

/// Moves the unpacked files to where an image keeps them, and refuses what a package may not
/// ship.
fn relocate(tree: BorrowedFd<'_>) -> Result<()> {
    for top in USR_MERGED {
        let usr = format!("usr/{top}");
        // `/lib -> usr/lib` is the image's own layout, which a package may repeat.
        if beneath::kind(tree, top)? == Kind::Symlink
            && rustix::fs::readlinkat(tree, *top, Vec::new())
                .is_ok_and(|t| t.as_bytes() == usr.as_bytes())
        {
            rustix::fs::unlinkat(tree, *top, rustix::fs::AtFlags::empty())
                .with_context(|| format!("removing /{top}"))?;
            continue;
        }
        move_merge(tree, top, &usr)?;
    }
    move_merge(tree, "etc", "usr/etc")?;
    for (from, to) in IN_VAR {
        move_merge(tree, from, to)?;
    }
    if let Some(boot) = beneath::open_dir(tree, "boot")? {
        if !beneath::names(boot.as_fd())?.is_empty() {
            bail!(
                "it installs files in /boot; on Stratum the kernel and its files come with \
                 the image (only `stratum override` may replace the kernel)"
            );
        }
        beneath::remove_dir(tree, "boot")?;
    }
    for d in LAYOUT_DIRS {
        match beneath::kind_at(tree, d)? {
            Kind::Dir | Kind::Missing => {}
            k => bail!("it ships /{d} as a {k:?}, where the image has a directory"),
        }
    }
    for f in FORBIDDEN {
        if beneath::kind_at(tree, f)? != Kind::Missing {
            bail!("it ships files in /{f}, dpkg's database, which only dpkg writes");
        }
    }
    Ok(())
}

/// Moves the directory `from` of the tree to `to`, merging with what is there; a file in both
/// is an error, and so is a symlink standing where either needs a directory.
fn move_merge(tree: BorrowedFd<'_>, from: &str, to: &str) -> Result<()> {
    let Some(src) = beneath::open_dir(tree, from)? else {
        return Ok(());
    };
    let (fparent, fname) = beneath::split(from);
    let fparent = beneath::open_dir(tree, fparent)?.context("the parent disappeared")?;
    match beneath::open_dir(tree, to)? {
        None => {
            let (tparent, tname) = beneath::split(to);
            let tparent = beneath::create_dir_all(tree, tparent)?;
            beneath::rename_new(fparent.as_fd(), fname, tparent.as_fd(), tname)
        }
        Some(dst) => {
            merge(src.as_fd(), dst.as_fd(), from, to)?;
            beneath::remove_dir(fparent.as_fd(), fname)
        }
    }
}

fn merge(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, from: &str, to: &str) -> Result<()> {
    for name in beneath::names(src)? {
        match (beneath::kind(src, &name)?, beneath::kind(dst, &name)?) {
            (Kind::Dir, Kind::Dir) => {
                let s = beneath::open_dir(src, &name)?.context("disappeared")?;
                let d = beneath::open_dir(dst, &name)?.context("disappeared")?;
                merge(
                    s.as_fd(),
                    d.as_fd(),
                    &format!("{from}/{name}"),
                    &format!("{to}/{name}"),
                )?;
                beneath::remove_dir(src, &name)?;
            }
            (_, Kind::Missing) => beneath::rename_new(src, &name, dst, &name)?,
            (Kind::Dir, Kind::Symlink) | (Kind::Symlink, Kind::Dir) => bail!(
                "it ships /{from}/{name} and /{to}/{name}, the same path on a merged-/usr \
                 system, one a directory and one a symlink"
            ),
            _ => bail!(
                "it ships both /{from}/{name} and /{to}/{name}, the same path on a merged-/usr \
                 system"
            ),
        }
    }
    Ok(())
}

/// Writes dpkg's files for the package into the database's `info/`: the `.list` and the
/// control members, with their modes (scripts stay executable).
fn write_info(
    tree: BorrowedFd<'_>,
    ctl: BorrowedFd<'_>,
    members: &[String],
    info_name: &str,
    paths: &[String],
) -> Result<()> {
    let info = beneath::create_dir_all(tree, &format!("{DB_DIR}/info"))?;
    let mut list = String::new();
    for p in paths {
        list.push_str(p);
        list.push('\n');
    }
    beneath::write_new(
        info.as_fd(),
        &format!("{info_name}.list"),
        list.as_bytes(),
        0o644,
    )?;
    for m in members {
        let f = beneath::open_file(ctl, m)?;
        let mode = f.metadata()?.permissions().mode() & 0o755;
        let mut data = Vec::new();
        f.take(MAX_MEMBER + 1)
            .read_to_end(&mut data)
            .with_context(|| format!("reading the control member {m}"))?;
        if data.len() as u64 > MAX_MEMBER {
            bail!("the control member {m} is larger than {MAX_MEMBER} bytes");
        }
        beneath::write_new(
            info.as_fd(),
            &format!("{info_name}.{m}"),
            &data,
            mode | 0o644,
        )?;
    }
    Ok(())
}

/// The `Conffiles` field: each conffile under `/etc` with the MD5 dpkg compares at
/// configuration and upgrade. `None` without conffiles.
fn conffiles(tree: BorrowedFd<'_>, ctl: BorrowedFd<'_>) -> Result<Option<String>> {
    use md5::{Digest as _, Md5};
    if beneath::kind(ctl, "conffiles")? == Kind::Missing {
        return Ok(None);
    }
    let text = String::from_utf8(beneath::read(ctl, "conffiles", MAX_MEMBER)?)
        .context("conffiles is not UTF-8")?;
    let mut field = String::new();
    for cf in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some(rel) = cf.strip_prefix("/etc/") else {
            // `remove-on-upgrade` and other flags only concern upgrades in place.
            continue;
        };
        if cf.chars().any(char::is_control) || rel.split('/').any(|c| c == "..") {
            bail!("the conffile {cf:?} is not a plain path under /etc");
        }
        let data = beneath::read(tree, &format!("usr/etc/{rel}"), u64::MAX - 1)
            .with_context(|| format!("conffile {cf} is not a file of the package"))?;
        field.push_str(&format!("\n {cf} {}", hex::encode(Md5::digest(&data))));
    }
    Ok((!field.is_empty()).then_some(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn relocated(build: impl Fn(&Path)) -> (tempfile::TempDir, tempfile::TempDir, Result<()>) {
        let outside = tempfile::tempdir().unwrap();
        let t = tempfile::tempdir().unwrap();
        build(t.path());
        let fd = beneath::open_root(t.path()).unwrap();
        let r = relocate(fd.as_fd());
        (t, outside, r)
    }

    #[test]
    fn lays_out_a_package_as_an_image() {
        let (t, _o, r) = relocated(|p| {
            fs::create_dir_all(p.join("bin")).unwrap();
            fs::write(p.join("bin/tool"), "x").unwrap();
            fs::create_dir_all(p.join("usr/bin")).unwrap();
            fs::write(p.join("usr/bin/other"), "y").unwrap();
            fs::create_dir_all(p.join("etc/x")).unwrap();
            fs::write(p.join("etc/x/conf"), "z").unwrap();
            fs::create_dir_all(p.join("opt/app")).unwrap();
            fs::create_dir_all(p.join("boot")).unwrap();
            symlink("usr/lib", p.join("lib")).unwrap();
        });
        r.unwrap();
        let p = t.path();
        assert!(p.join("usr/bin/tool").is_file());
        assert!(p.join("usr/bin/other").is_file());
        assert!(p.join("usr/etc/x/conf").is_file());
        assert!(p.join("var/opt/app").is_dir());
        for gone in ["bin", "etc", "opt", "boot", "lib"] {
            assert!(fs::symlink_metadata(p.join(gone)).is_err(), "{gone}");
        }
    }

    #[test]
    fn symlinks_where_the_layout_needs_directories_are_refused() {
        type Build = Box<dyn Fn(&Path, &Path)>;
        let cases: Vec<(&str, Build)> = vec![
            (
                "usr/bin",
                Box::new(|p, o| {
                    fs::create_dir_all(p.join("bin")).unwrap();
                    fs::write(p.join("bin/evil"), "x").unwrap();
                    fs::create_dir_all(p.join("usr")).unwrap();
                    symlink(o, p.join("usr/bin")).unwrap();
                }),
            ),
            (
                "etc",
                Box::new(|p, o| {
                    fs::create_dir_all(p.join("usr/etc")).unwrap();
                    fs::write(p.join("usr/etc/evil"), "x").unwrap();
                    symlink(o, p.join("etc")).unwrap();
                }),
            ),
            (
                "usr/etc",
                Box::new(|p, o| {
                    fs::create_dir_all(p.join("etc")).unwrap();
                    fs::write(p.join("etc/evil"), "x").unwrap();
                    fs::create_dir_all(p.join("usr")).unwrap();
                    symlink(o, p.join("usr/etc")).unwrap();
                }),
            ),
            (
                "usr/lib/sysimage",
                Box::new(|p, o| {
                    fs::create_dir_all(p.join("usr/lib")).unwrap();
                    symlink(o, p.join("usr/lib/sysimage")).unwrap();
                }),
            ),
            (
                "bin",
                Box::new(|p, o| {
                    symlink(o, p.join("bin")).unwrap();
                }),
            ),
        ];
        for (name, build) in cases {
            let outside = tempfile::tempdir().unwrap();
            let (_t, _o, r) = relocated(|p| build(p, outside.path()));
            let e = format!("{:#}", r.expect_err(name));
            assert!(
                e.contains("symlink") || e.contains("Symlink"),
                "{name}: {e}"
            );
            assert!(
                fs::read_dir(outside.path()).unwrap().next().is_none(),
                "{name}: wrote outside"
            );
        }
    }

    #[test]
    fn the_database_and_boot_are_not_a_package_s() {
        let (_t, _o, r) = relocated(|p| {
            fs::create_dir_all(p.join("var/lib/dpkg/info")).unwrap();
        });
        assert!(format!("{:#}", r.unwrap_err()).contains("dpkg's database"));
        let (_t, _o, r) = relocated(|p| {
            fs::create_dir_all(p.join("boot")).unwrap();
            fs::write(p.join("boot/vmlinuz-9"), "k").unwrap();
        });
        assert!(format!("{:#}", r.unwrap_err()).contains("/boot"));
    }

    #[test]
    fn listed_names_with_escapes_are_refused() {
        assert_eq!(
            listed_paths("./\n./usr/\n./usr/a\n").unwrap(),
            ["/.", "/usr", "/usr/a"]
        );
        assert!(listed_paths("./usr/a\\nb\n").is_err());
    }
}
