//! The layout rules that turn a plain root filesystem into an OSTree-style image.
//!
//! Pure filesystem rearrangement on a staging copy of the root, kept apart from the commit
//! machinery so the rules can be tested on small fake roots:
//! - the kernel moves to `/usr/lib/modules/<kver>/vmlinuz` (with `config`, `System.map`);
//!   `/boot` is emptied: boot files live in the image, `/boot` is the machine's;
//! - `/etc` becomes `/usr/etc`, the image's default configuration;
//! - `/var` belongs to the machine, so the image ships none: its contents move to
//!   `/usr/share/factory/var` and a `tmpfiles.d` snippet recreates them at boot when missing;
//! - `/home /root /opt /srv /mnt /usr/local` become symlinks into `/var`, as on OSTree systems;
//! - `/sysroot` exists and `/ostree` points into it; `/dev /proc /sys /run /tmp` are empty.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// Where `/var`'s contents from the image are kept for `tmpfiles.d` to copy from.
pub const FACTORY_VAR: &str = "usr/share/factory/var";
/// The generated `tmpfiles.d` snippet.
pub const TMPFILES_CONF: &str = "usr/lib/tmpfiles.d/stratum-var.conf";
pub use crate::debian::dpkgdb::{DB_DIR as DPKG_DB, VAR_LINK_TARGET as DPKG_DB_LINK};

/// Top-level directories that OSTree systems keep in `/var`, and where they go.
const VAR_LINKS: &[(&str, &str, &str)] = &[
    // (path in the root, directory under /var, symlink target)
    ("home", "home", "var/home"),
    ("root", "roothome", "var/roothome"),
    ("opt", "opt", "var/opt"),
    ("srv", "srv", "var/srv"),
    ("mnt", "mnt", "var/mnt"),
    ("usr/local", "usrlocal", "../var/usrlocal"),
];

/// API filesystems and scratch directories: mounted over at boot, so shipped empty.
const EMPTY_DIRS: &[(&str, u32)] = &[
    ("dev", 0o755),
    ("proc", 0o555),
    ("sys", 0o555),
    ("run", 0o755),
    ("tmp", 0o1777),
    ("boot", 0o755),
    ("sysroot", 0o755),
];

/// A kernel found in a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kernel {
    pub kver: String,
    /// Path of the kernel image relative to the root.
    pub vmlinuz: PathBuf,
    /// A distribution initramfs next to it, if any (relative to the root).
    pub initramfs: Option<PathBuf>,
}

/// Finds the kernels of `root`: `/usr/lib/modules/<kver>/vmlinuz` or `/boot/vmlinuz-<kver>`,
/// each with its modules directory.
pub fn find_kernels(root: &Path) -> Result<Vec<Kernel>> {
    let mut kernels: Vec<Kernel> = Vec::new();
    let modules = root.join("usr/lib/modules");
    if let Ok(rd) = fs::read_dir(&modules) {
        for e in rd {
            let kver = e?.file_name().to_string_lossy().into_owned();
            let rel = PathBuf::from("usr/lib/modules").join(&kver);
            let img = rel.join("vmlinuz");
            let boot_img = PathBuf::from("boot").join(format!("vmlinuz-{kver}"));
            let vmlinuz = if root.join(&img).is_file() {
                img
            } else if root.join(&boot_img).is_file() {
                boot_img
            } else {
                continue;
            };
            let initramfs = [
                rel.join("initramfs.img"),
                PathBuf::from("boot").join(format!("initrd.img-{kver}")),
                PathBuf::from("boot").join(format!("initramfs-{kver}.img")),
            ]
            .into_iter()
            .find(|p| root.join(p).is_file());
            kernels.push(Kernel {
                kver,
                vmlinuz,
                initramfs,
            });
        }
    }
    kernels.sort_by(|a, b| a.kver.cmp(&b.kver));
    Ok(kernels)
}

/// Picks the kernel to boot: the one named by `kver`, or the only one.
pub fn select_kernel(root: &Path, kver: Option<&str>) -> Result<Kernel> {
    let kernels = find_kernels(root)?;
    let names = || {
        kernels
            .iter()
            .map(|k| k.kver.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match kver {
        Some(want) => match kernels.iter().find(|k| k.kver == want) {
            Some(k) => Ok(k.clone()),
            None if kernels.is_empty() => bail!("kernel {want} not found: {} has no kernel (looked for usr/lib/modules/<kver>/vmlinuz and boot/vmlinuz-<kver> with modules)", root.display()),
            None => bail!("kernel {want} not found in {}; kernels present: {}", root.display(), names()),
        },
        None => match kernels.len() {
            0 => bail!(
                "no kernel found in {}: looked for usr/lib/modules/<kver>/vmlinuz and boot/vmlinuz-<kver> (with usr/lib/modules/<kver>); install a kernel package into the root",
                root.display()
            ),
            1 => Ok(kernels[0].clone()),
            _ => bail!("{} has several kernels ({}); choose one with --kver", root.display(), names()),
        },
    }
}

/// Applies the layout rules to the staging root `root` for `kernel`. With `keep_initramfs`
/// the kernel's existing initramfs is kept as `/usr/lib/modules/<kver>/initramfs.img`;
/// otherwise any distribution initramfs is dropped (it knows nothing of deployments).
pub fn apply(root: &Path, kernel: &Kernel, keep_initramfs: bool) -> Result<()> {
    if !root.join("usr").is_dir() {
        bail!(
            "{} has no /usr directory; is it a root filesystem?",
            root.display()
        );
    }
    move_kernel(root, kernel, keep_initramfs)?;
    move_etc(root)?;
    for (path, vardir, target) in VAR_LINKS {
        link_into_var(root, path, vardir, target)?;
    }
    remove_root_kernel_links(root)?;
    move_dpkg_database(root)?;
    factory_var(root)?;
    for (dir, mode) in EMPTY_DIRS {
        empty_dir(root, dir, *mode)?;
    }
    replace_with_symlink(root, "ostree", "sysroot/ostree")?;
    if !root.join("usr/lib/os-release").exists() {
        bail!("{} has no usr/lib/os-release", root.display());
    }
    Ok(())
}

fn move_kernel(root: &Path, k: &Kernel, keep_initramfs: bool) -> Result<()> {
    let moddir = root.join("usr/lib/modules").join(&k.kver);
    rename_if_different(&root.join(&k.vmlinuz), &moddir.join("vmlinuz"))?;
    for (from, to) in [("config", "config"), ("System.map", "System.map")] {
        let src = root.join("boot").join(format!("{from}-{}", k.kver));
        if src.is_file() {
            rename_if_different(&src, &moddir.join(to))?;
        }
    }
    let target = moddir.join("initramfs.img");
    match (&k.initramfs, keep_initramfs) {
        (Some(i), true) => rename_if_different(&root.join(i), &target)?,
        (None, true) => bail!("--keep-initramfs: kernel {} has no initramfs", k.kver),
        (_, false) => {
            if target.exists() {
                fs::remove_file(&target)
                    .with_context(|| format!("removing {}", target.display()))?;
            }
        }
    }
    Ok(())
}

fn move_etc(root: &Path) -> Result<()> {
    let etc = root.join("etc");
    let usr_etc = root.join("usr/etc");
    match (etc.is_dir(), usr_etc.exists()) {
        (true, true) => bail!("{} has both /etc and /usr/etc; remove one", root.display()),
        (true, false) => fs::rename(&etc, &usr_etc).context("moving /etc to /usr/etc")?,
        (false, true) => {}
        (false, false) => bail!("{} has no /etc", root.display()),
    }
    Ok(())
}

fn link_into_var(root: &Path, path: &str, vardir: &str, target: &str) -> Result<()> {
    let p = root.join(path);
    let meta = fs::symlink_metadata(&p).ok();
    let dest = root.join("var").join(vardir);
    if let Some(m) = &meta {
        if m.is_dir() {
            fs::create_dir_all(root.join("var"))?;
            if dest.exists() {
                // Debian ships /var/opt as well as /opt: merge, refusing only real clashes.
                for e in fs::read_dir(&p)? {
                    let e = e?;
                    let to = dest.join(e.file_name());
                    if fs::symlink_metadata(&to).is_ok() {
                        bail!(
                            "cannot move /{path} into /var/{vardir}: {} exists in both",
                            e.file_name().to_string_lossy()
                        );
                    }
                    fs::rename(e.path(), &to)?;
                }
                fs::remove_dir(&p).with_context(|| format!("removing /{path}"))?;
            } else {
                fs::rename(&p, &dest)
                    .with_context(|| format!("moving /{path} to /var/{vardir}"))?;
            }
        } else if m.file_type().is_symlink() {
            fs::remove_file(&p)?;
        }
    } else {
        fs::create_dir_all(&dest)?;
        let mode = if path == "root" { 0o700 } else { 0o755 };
        fs::set_permissions(&dest, fs::Permissions::from_mode(mode))?;
    }
    symlink(target, &p).with_context(|| format!("linking /{path} -> {target}"))
}

fn remove_root_kernel_links(root: &Path) -> Result<()> {
    for name in ["vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"] {
        let p = root.join(name);
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            fs::remove_file(&p)?;
        }
    }
    Ok(())
}

/// Moves dpkg's database from `/var/lib/dpkg` into `/usr` ([`DPKG_DB`]), leaving a symlink:
/// each deployment then carries the database of exactly what it contains.
fn move_dpkg_database(root: &Path) -> Result<()> {
    let var_db = root.join("var/lib/dpkg");
    let Ok(m) = fs::symlink_metadata(&var_db) else {
        return Ok(());
    };
    if !m.is_dir() {
        return Ok(());
    }
    let db = root.join(DPKG_DB);
    if db.exists() {
        bail!(
            "{} has both /var/lib/dpkg and /{DPKG_DB}; remove one",
            root.display()
        );
    }
    fs::create_dir_all(db.parent().context("database parent")?)?;
    fs::rename(&var_db, &db).context("moving the dpkg database into /usr")?;
    symlink(DPKG_DB_LINK, &var_db).context("linking /var/lib/dpkg")
}

/// Makes `/var` of an image that was already laid out the factory `/var` again (after package
/// layering changed it): the old factory copy and snippet are replaced.
pub fn refresh_factory_var(root: &Path) -> Result<()> {
    crate::fsutil::remove_any(&root.join(FACTORY_VAR))?;
    crate::fsutil::remove_any(&root.join(TMPFILES_CONF))?;
    factory_var(root)
}

/// Moves `/var`'s contents to the factory directory and writes the tmpfiles.d snippet that
/// recreates them: `d` for directories, `L` for symlinks, `C` (copy if missing) for files and
/// for whole directories of many files.
fn factory_var(root: &Path) -> Result<()> {
    let var = root.join("var");
    fs::create_dir_all(&var)?;
    let factory = root.join(FACTORY_VAR);
    if factory.exists() {
        bail!(
            "{} exists already; was this root composed before?",
            factory.display()
        );
    }
    fs::create_dir_all(factory.parent().context("factory parent")?)?;
    fs::rename(&var, &factory).context("moving /var to the factory directory")?;
    fs::create_dir(&var)?;
    let mut conf = String::from(
        "# Generated by stratum compose: recreates the image's /var content at boot.\n\
         # /var belongs to the machine and is never replaced by an update.\n",
    );
    tmpfiles_lines(&factory, Path::new("/var"), &mut conf)?;
    let path = root.join(TMPFILES_CONF);
    fs::create_dir_all(path.parent().context("tmpfiles parent")?)?;
    fs::write(&path, conf).with_context(|| format!("writing {}", path.display()))
}

fn tmpfiles_lines(dir: &Path, at: &Path, out: &mut String) -> Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let m = fs::symlink_metadata(e.path())?;
        let target = at.join(e.file_name());
        let t = tmpfiles_escape(&target.to_string_lossy());
        let factory = Path::new("/")
            .join(FACTORY_VAR)
            .join(target.strip_prefix("/var")?);
        if m.file_type().is_symlink() {
            let link = fs::read_link(e.path())?;
            let _ = writeln!(out, "L {t} - - - - {}", link.display());
        } else if m.is_dir() && is_file_bundle(&e.path())? {
            // One recursive copy instead of a line per file: tmpfiles walks every path of
            // every line at each boot, which is what makes a long snippet slow.
            let _ = writeln!(
                out,
                "C {t} - - - - {}",
                tmpfiles_escape(&factory.to_string_lossy())
            );
        } else if m.is_dir() {
            let _ = writeln!(
                out,
                "d {t} {:04o} {} {} - -",
                m.mode() & 0o7777,
                m.uid(),
                m.gid()
            );
            tmpfiles_lines(&e.path(), &target, out)?;
        } else if m.is_file() {
            let _ = writeln!(
                out,
                "C {t} - - - - {}",
                tmpfiles_escape(&factory.to_string_lossy())
            );
        }
    }
    Ok(())
}

/// Directories holding at least this many files, and only files, are copied as a whole.
const BUNDLE_MIN_FILES: usize = 16;

/// Whether `dir` is a bundle of files (such as `/var/lib/dpkg/info`): only regular files, at
/// least [`BUNDLE_MIN_FILES`]. tmpfiles.d's `C` copies such a directory when it is missing or
/// empty, which no early boot service makes it.
fn is_file_bundle(dir: &Path) -> Result<bool> {
    let mut files = 0;
    for e in fs::read_dir(dir)? {
        if !e?.file_type()?.is_file() {
            return Ok(false);
        }
        files += 1;
    }
    Ok(files >= BUNDLE_MIN_FILES)
}

fn tmpfiles_escape(path: &str) -> String {
    path.replace('\\', "\\\\").replace(' ', "\\x20")
}

fn empty_dir(root: &Path, dir: &str, mode: u32) -> Result<()> {
    let p = root.join(dir);
    if fs::symlink_metadata(&p).is_ok() {
        crate::fsutil::remove_any(&p)?;
    }
    fs::create_dir(&p).with_context(|| format!("creating {}", p.display()))?;
    fs::set_permissions(&p, fs::Permissions::from_mode(mode))?;
    Ok(())
}

fn replace_with_symlink(root: &Path, path: &str, target: &str) -> Result<()> {
    let p = root.join(path);
    crate::fsutil::remove_any(&p)?;
    symlink(target, &p).with_context(|| format!("linking /{path} -> {target}"))
}

fn rename_if_different(from: &Path, to: &Path) -> Result<()> {
    if from != to {
        fs::rename(from, to)
            .with_context(|| format!("moving {} to {}", from.display(), to.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStringExt;

    fn fake_root() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        for dir in [
            "usr/lib/modules/6.1.0-1-amd64/kernel",
            "etc",
            "var/lib/dpkg",
            "var/lib/apt/mirrors",
            "var/cache",
            "var/opt",
            "opt/vendor",
            "boot",
            "root",
            "home",
            "dev",
            "usr/local/bin",
            "proc",
        ] {
            fs::create_dir_all(r.join(dir)).unwrap();
        }
        fs::write(r.join("usr/lib/os-release"), "ID=debian\n").unwrap();
        fs::write(r.join("boot/vmlinuz-6.1.0-1-amd64"), "kernel").unwrap();
        fs::write(r.join("boot/initrd.img-6.1.0-1-amd64"), "initrd").unwrap();
        fs::write(r.join("boot/config-6.1.0-1-amd64"), "config").unwrap();
        fs::write(r.join("etc/motd"), "hello").unwrap();
        fs::write(r.join("var/lib/dpkg/status"), "pkgs").unwrap();
        fs::create_dir_all(r.join("var/lib/dpkg/info")).unwrap();
        for i in 0..BUNDLE_MIN_FILES {
            fs::write(
                r.join(format!("var/lib/apt/mirrors/p{i}.list")),
                format!("{i}"),
            )
            .unwrap();
            fs::write(
                r.join(format!("var/lib/dpkg/info/p{i}.list")),
                format!("{i}"),
            )
            .unwrap();
        }
        fs::write(r.join("root/.bashrc"), "rc").unwrap();
        fs::write(r.join("dev/null-ish"), "").unwrap();
        symlink("/run", r.join("var/run")).unwrap();
        symlink("boot/vmlinuz-6.1.0-1-amd64", r.join("vmlinuz")).unwrap();
        d
    }

    #[test]
    fn finds_and_selects_kernels() {
        let d = fake_root();
        let k = select_kernel(d.path(), None).unwrap();
        assert_eq!(k.kver, "6.1.0-1-amd64");
        assert_eq!(k.vmlinuz, Path::new("boot/vmlinuz-6.1.0-1-amd64"));
        assert_eq!(
            k.initramfs,
            Some(PathBuf::from("boot/initrd.img-6.1.0-1-amd64"))
        );
        let err = select_kernel(d.path(), Some("5.10"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("kernels present: 6.1.0-1-amd64"), "{err}");
        fs::create_dir_all(d.path().join("usr/lib/modules/6.2.0/")).unwrap();
        fs::write(d.path().join("usr/lib/modules/6.2.0/vmlinuz"), "k2").unwrap();
        let err = select_kernel(d.path(), None).unwrap_err().to_string();
        assert!(err.contains("--kver"), "{err}");
        assert_eq!(
            select_kernel(d.path(), Some("6.2.0")).unwrap().kver,
            "6.2.0"
        );
    }

    #[test]
    fn no_kernel_is_a_clear_error() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("usr")).unwrap();
        let err = select_kernel(d.path(), None).unwrap_err().to_string();
        assert!(err.contains("no kernel found"), "{err}");
    }

    #[test]
    fn applies_ostree_layout() {
        let d = fake_root();
        let r = d.path();
        let k = select_kernel(r, None).unwrap();
        apply(r, &k, false).unwrap();
        let m = r.join("usr/lib/modules/6.1.0-1-amd64");
        assert_eq!(fs::read_to_string(m.join("vmlinuz")).unwrap(), "kernel");
        assert_eq!(fs::read_to_string(m.join("config")).unwrap(), "config");
        assert!(
            !m.join("initramfs.img").exists(),
            "distribution initramfs must be dropped"
        );
        assert_eq!(fs::read_dir(r.join("boot")).unwrap().count(), 0);
        assert!(!r.join("etc").exists());
        assert_eq!(fs::read_to_string(r.join("usr/etc/motd")).unwrap(), "hello");
        assert_eq!(fs::read_dir(r.join("var")).unwrap().count(), 0);
        assert_eq!(
            fs::read_link(r.join("home")).unwrap(),
            Path::new("var/home")
        );
        assert_eq!(
            fs::read_link(r.join("root")).unwrap(),
            Path::new("var/roothome")
        );
        assert_eq!(
            fs::read_link(r.join("usr/local")).unwrap(),
            Path::new("../var/usrlocal")
        );
        assert_eq!(
            fs::read_link(r.join("ostree")).unwrap(),
            Path::new("sysroot/ostree")
        );
        assert!(r.join("sysroot").is_dir());
        assert!(fs::symlink_metadata(r.join("vmlinuz")).is_err());
        assert_eq!(fs::read_dir(r.join("dev")).unwrap().count(), 0);
        let conf = fs::read_to_string(r.join(TMPFILES_CONF)).unwrap();
        // dpkg's database is in /usr, /var/lib/dpkg points to it.
        assert!(
            conf.contains("L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg\n"),
            "{conf}"
        );
        assert_eq!(
            fs::read_to_string(r.join(DPKG_DB).join("status")).unwrap(),
            "pkgs"
        );
        assert!(r.join(DPKG_DB).join("info/p0.list").is_file());
        // A directory of many files is one recursive copy.
        assert!(
            conf.contains(
                "C /var/lib/apt/mirrors - - - - /usr/share/factory/var/lib/apt/mirrors\n"
            ),
            "{conf}"
        );
        assert!(!conf.contains("/mirrors/p"), "{conf}");
        assert!(conf.contains("d /var/roothome 0755 "), "{conf}");
        assert!(conf.contains("C /var/roothome/.bashrc"), "{conf}");
        assert!(conf.contains("L /var/run - - - - /run"), "{conf}");
        assert!(conf.contains("d /var/usrlocal/bin"), "{conf}");
        assert!(conf.contains("d /var/opt/vendor"), "{conf}");
    }

    /// The snippet, run by the real systemd-tmpfiles on an empty /var, recreates the image's
    /// /var exactly; run again, it changes nothing the admin did.
    #[test]
    fn systemd_tmpfiles_recreates_var_from_the_snippet() {
        let d = fake_root();
        let r = d.path();
        let k = select_kernel(r, None).unwrap();
        apply(r, &k, false).unwrap();
        // tmpfiles resolves the uid/gid columns and C sources inside --root.
        fs::create_dir_all(r.join("etc")).unwrap();
        fs::write(r.join("etc/passwd"), "root:x:0:0::/root:/bin/sh\n").unwrap();
        fs::write(r.join("etc/group"), "root:x:0:\n").unwrap();
        let tmpfiles = || {
            let out = std::process::Command::new("systemd-tmpfiles")
                .arg("--create")
                .arg(format!("--root={}", r.display()))
                .arg(r.join(TMPFILES_CONF))
                .output()
                .expect("running systemd-tmpfiles");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        tmpfiles();
        let listing = |dir: &Path| -> Vec<(PathBuf, Vec<u8>)> {
            let mut v = Vec::new();
            let mut stack = vec![dir.to_path_buf()];
            while let Some(d) = stack.pop() {
                for e in fs::read_dir(&d).unwrap() {
                    let p = e.unwrap().path();
                    let m = fs::symlink_metadata(&p).unwrap();
                    let rel = p.strip_prefix(dir).unwrap().to_path_buf();
                    if m.is_dir() {
                        stack.push(p);
                        v.push((rel, Vec::new()));
                    } else if m.file_type().is_symlink() {
                        v.push((rel, fs::read_link(&p).unwrap().into_os_string().into_vec()));
                    } else {
                        v.push((rel, fs::read(&p).unwrap()));
                    }
                }
            }
            v.sort();
            v
        };
        assert_eq!(listing(&r.join("var")), listing(&r.join(FACTORY_VAR)));
        fs::write(r.join("var/lib/dpkg/info/p0.list"), "edited").unwrap();
        tmpfiles();
        assert_eq!(
            fs::read_to_string(r.join("var/lib/dpkg/info/p0.list")).unwrap(),
            "edited"
        );
    }

    #[test]
    fn keep_initramfs_moves_it_beside_the_kernel() {
        let d = fake_root();
        let k = select_kernel(d.path(), None).unwrap();
        apply(d.path(), &k, true).unwrap();
        let p = d.path().join("usr/lib/modules/6.1.0-1-amd64/initramfs.img");
        assert_eq!(fs::read_to_string(p).unwrap(), "initrd");
    }

    #[test]
    fn etc_and_usr_etc_together_are_refused() {
        let d = fake_root();
        fs::create_dir_all(d.path().join("usr/etc")).unwrap();
        let k = select_kernel(d.path(), None).unwrap();
        let err = apply(d.path(), &k, false).unwrap_err().to_string();
        assert!(err.contains("both /etc and /usr/etc"), "{err}");
    }
}
