//! Module resolution on a fake modules tree, and on a real Debian root when one is cached.

use super::*;
use crate::testutil::{fake_root, KVER};

fn names(r: &Resolution) -> Vec<&str> {
    r.modules.iter().map(|m| m.name.as_str()).collect()
}

fn pos(r: &Resolution, name: &str) -> usize {
    names(r)
        .iter()
        .position(|n| *n == name)
        .unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn names_and_paths() {
    assert_eq!(
        name_from_path("kernel/arch/x86/crypto/crc32c-intel.ko.xz"),
        "crc32c_intel"
    );
    assert_eq!(name_from_path("ext4.ko"), "ext4");
    assert_eq!(uncompressed_path("kernel/a/b.ko.zst"), "kernel/a/b.ko");
    assert_eq!(uncompressed_path("kernel/a/b.ko"), "kernel/a/b.ko");
}

#[test]
fn dependency_order_builtin_softdep_alias() {
    let t = tempfile::tempdir().unwrap();
    fake_root(t.path());
    // Found through the `lib -> usr/lib` symlink of the fake root, not the host's /lib.
    let dir = find_modules_dir(t.path(), KVER).unwrap();
    let db = ModuleDb::load(&dir).unwrap();
    let r = db
        .resolve(&[
            "virtio-pci",
            "virtio_blk",
            "virtio_scsi",
            "sd_mod",
            "ext4",
            "crc32c_generic",
        ])
        .unwrap();
    assert_eq!(r.builtin, vec!["sd_mod", "crc32c_generic"]);
    assert_eq!(
        names(&r),
        vec![
            "virtio_ring",
            "virtio",
            "virtio_pci_modern_dev",
            "virtio_pci",
            "virtio_blk",
            "virtio_scsi",
            "crc32c_intel", // softdep pre: crc32c, through its alias
            "jbd2",
            "mbcache",
            "crc16",
            "ext4",
        ]
    );
    for dep in ["jbd2", "mbcache", "crc16", "crc32c_intel"] {
        assert!(pos(&r, dep) < pos(&r, "ext4"));
    }
    assert!(pos(&r, "virtio_ring") < pos(&r, "virtio"));
    assert_eq!(r.modules[4].path, "kernel/drivers/block/virtio_blk.ko.zst");
    let data = read_module(&dir.join(&r.modules[4].path)).unwrap();
    assert_eq!(data, b"MOD virtio_blk");
    assert_eq!(r.modules[5].path, "kernel/drivers/scsi/virtio_scsi.ko.xz");
    assert_eq!(
        read_module(&dir.join(&r.modules[5].path)).unwrap(),
        b"MOD virtio_scsi"
    );
}

#[test]
fn unknown_and_missing() {
    let t = tempfile::tempdir().unwrap();
    fake_root(t.path());
    let db = ModuleDb::load(&find_modules_dir(t.path(), KVER).unwrap()).unwrap();
    let err = db.resolve(&["ext4", "no_such_module"]).unwrap_err();
    assert!(matches!(
        err.downcast_ref::<ResolveError>(),
        Some(ResolveError::Unknown { name, .. }) if name == "no_such_module"
    ));
    let err = format!("{:#}", find_modules_dir(t.path(), "9.9.9").unwrap_err());
    assert!(err.contains("usr/lib/modules/9.9.9"), "{err}");
    assert!(err.contains("kernel versions present: 6.1.0-test"), "{err}");
}

#[test]
fn broken_index_is_reported() {
    let dir = Path::new("/nowhere");
    let db = ModuleDb::parse(dir, "a.ko: b.ko\n", "", "", "");
    let err = db.resolve(&["a"]).unwrap_err();
    assert!(matches!(
        err.downcast_ref(),
        Some(ResolveError::MissingDep { .. })
    ));
    let db = ModuleDb::parse(dir, "a.ko: b.ko\nb.ko: a.ko\n", "", "", "");
    let err = db.resolve(&["a"]).unwrap_err();
    assert!(matches!(err.downcast_ref(), Some(ResolveError::Cycle(_))));
}

/// A space before the colon made the module's name "x.ko.xz " while its path was trimmed,
/// so two entries with one path were both resolved and written (found by the `modules`
/// fuzz target).
#[test]
fn names_come_from_trimmed_paths() {
    let db = ModuleDb::parse(
        Path::new("/nowhere"),
        "k/x.ko.xz :\nk/x.ko.xz:\n",
        "",
        "",
        "",
    );
    assert!(db.has_module("x"));
    let r = db.resolve(&["x"]).unwrap();
    assert_eq!(db.dep_lines(&r), vec!["k/x.ko:"]);
    assert!(db.resolve(&["x.ko.xz "]).is_err());
}

/// A hostile modules.dep whose chain of dependencies is 100000 modules long overflowed the
/// stack (found by the `modules` fuzz target); it is an error now, and a chain of the
/// longest length followed still resolves.
#[test]
fn deep_dependency_chain_is_an_error() {
    let chain = |n: usize| {
        let mut dep: String = (0..n)
            .map(|i| format!("m{i}.ko: m{}.ko\n", i + 1))
            .collect();
        dep.push_str(&format!("m{n}.ko:\n"));
        ModuleDb::parse(Path::new("/nowhere"), &dep, "", "", "")
    };
    let err = chain(100_000).resolve(&["m0"]).unwrap_err();
    assert!(
        matches!(err.downcast_ref(), Some(ResolveError::TooDeep { module }) if module == "m0"),
        "{err:#}"
    );
    let r = chain(MAX_DEP_DEPTH - 1).resolve(&["m0"]).unwrap();
    assert_eq!(r.modules.len(), MAX_DEP_DEPTH);
    assert_eq!(r.modules[0].name, format!("m{}", MAX_DEP_DEPTH - 1));
}

/// A Debian root with a real kernel, built by the VM tests' rootfs script, if cached.
pub(crate) fn real_root() -> Option<(PathBuf, String)> {
    let roots: Vec<PathBuf> = match std::env::var_os("STRATUM_TEST_ROOTFS") {
        Some(r) => vec![r.into()],
        None => std::fs::read_dir("/root/.cache/stratum")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("rootfs-") && !n.ends_with(".tmp") && p.is_dir()
            })
            .collect(),
    };
    for root in roots {
        let Ok(rd) =
            std::fs::read_dir(crate::rootfs::resolve(&root, Path::new("/lib/modules")).unwrap())
        else {
            continue;
        };
        for e in rd.flatten() {
            if e.path().join("modules.dep").is_file() {
                return Some((root, e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    None
}

#[test]
fn real_debian_kernel() {
    let Some((root, kver)) = real_root() else {
        eprintln!(
            "note: no cached Debian root with modules.dep under /root/.cache/stratum; skipping"
        );
        return;
    };
    let db = ModuleDb::load(&find_modules_dir(&root, &kver).unwrap()).unwrap();
    let r = db.resolve(crate::image::DEFAULT_MODULES).unwrap();
    eprintln!("{kver}: load {:?}, builtin {:?}", names(&r), r.builtin);
    assert!(pos(&r, "virtio_ring") < pos(&r, "virtio_blk"));
    assert!(pos(&r, "virtio") < pos(&r, "virtio_blk"));
    if db.is_builtin("ext4") {
        assert!(r.builtin.contains(&"ext4".to_string()));
    } else {
        for dep in ["jbd2", "mbcache", "crc16"] {
            if !db.is_builtin(dep) {
                assert!(pos(&r, dep) < pos(&r, "ext4"));
            }
        }
    }
    for m in &r.modules {
        assert!(dir_has(&db, &m.path), "{} missing", m.path);
    }
}

fn dir_has(db: &ModuleDb, rel: &str) -> bool {
    db.dir().join(rel).is_file()
}

#[test]
fn generic_set_on_real_debian_kernel() {
    let Some((root, kver)) = real_root() else {
        eprintln!(
            "note: no cached Debian root with modules.dep under /root/.cache/stratum; skipping"
        );
        return;
    };
    let db = ModuleDb::load(&find_modules_dir(&root, &kver).unwrap()).unwrap();
    let r = db
        .resolve_with(
            &[] as &[&str],
            &crate::sets::generic_modules(),
            &[] as &[&str],
        )
        .unwrap();
    eprintln!(
        "{kver}: generic: {} modules {:?}; builtin {:?}; skipped {:?}",
        r.modules.len(),
        names(&r),
        r.builtin,
        r.skipped
    );
    // Debian's cloud kernel has no AHCI or USB host drivers: those are skipped, not errors.
    for m in crate::sets::generic_modules() {
        let m = normalize(m);
        let taken = names(&r).contains(&m.as_str()) || r.builtin.contains(&m);
        assert_eq!(taken, !r.skipped.contains(&m), "{m}");
        assert_eq!(taken, db.has_module(&m) || db.is_builtin(&m), "{m}");
    }
    for m in [
        "virtio_pci",
        "virtio_blk",
        "virtio_scsi",
        "sd_mod",
        "xfs",
        "btrfs",
        "vfat",
        "dm_mod",
    ] {
        assert!(names(&r).contains(&m), "{m}");
    }
    assert!(pos(&r, "libcrc32c") < pos(&r, "xfs") && pos(&r, "fat") < pos(&r, "vfat"));
    assert!(pos(&r, "scsi_mod") < pos(&r, "sd_mod"));
    // Real modaliases resolve through the glob patterns of the real modules.alias.
    let virtio_disk = "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00";
    assert_eq!(db.match_modalias(virtio_disk), ["virtio_pci"]);
    assert!(db
        .match_modalias("virtio:d00000002v00001AF4")
        .contains(&"virtio_blk".to_string()));
    assert!(db
        .match_modalias("scsi:t-0x00")
        .contains(&"sd_mod".to_string()));
    assert!(
        db.match_modalias("pci:v00008086d00002922sv0sd0bc01sc06i01")
            .is_empty()
            || db.has_module("ahci")
    );
    // Aliases of built-in modules come from modules.builtin.modinfo.
    assert_eq!(db.match_modalias("fs-ext4"), ["ext4"]);
    assert!(db.is_builtin("ext4"));
}
