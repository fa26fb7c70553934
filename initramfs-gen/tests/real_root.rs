//! Building an image from a real Debian root with a real kernel (the VM tests' cached root, or
//! `STRATUM_TEST_ROOTFS`); skipped with a note when none is available.

use std::path::{Path, PathBuf};
use std::time::Instant;

use stratum_initramfs::{build, list, BuildOptions};

fn real_root() -> Option<(PathBuf, String)> {
    let roots: Vec<PathBuf> = match std::env::var_os("STRATUM_TEST_ROOTFS") {
        Some(r) => vec![r.into()],
        None => std::fs::read_dir("/root/.cache/stratum")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with("rootfs-") && !n.ends_with(".tmp") && p.is_dir()
            })
            .collect(),
    };
    for root in roots {
        let Ok(base) = stratum_initramfs::rootfs::resolve(&root, Path::new("/lib/modules")) else {
            continue;
        };
        for e in std::fs::read_dir(base).into_iter().flatten().flatten() {
            if e.path().join("modules.dep").is_file() {
                return Some((root, e.file_name().to_string_lossy().into_owned()));
            }
        }
    }
    None
}

#[test]
fn real_debian_root() {
    let Some((root, kver)) = real_root() else {
        eprintln!("note: no Debian root with modules.dep (set STRATUM_TEST_ROOTFS); skipping");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let mut opts = BuildOptions::new(&root, &kver);
    if !root.join("usr/lib/stratum/stratum-prepare-root").exists() {
        let init = t.path().join("init");
        std::fs::write(&init, b"stand-in for stratum-prepare-root").unwrap();
        opts.init = Some(init);
    }
    let out = t.path().join("initramfs.img");
    let start = Instant::now();
    let report = build(&opts, &out).unwrap();
    eprintln!(
        "{kver}: {} members, modules {:?}, builtin {:?}, {} bytes ({} uncompressed) in {:?}",
        report.members,
        report.modules,
        report.builtin,
        report.compressed_size,
        report.uncompressed_size,
        start.elapsed()
    );
    assert!(report.modules.iter().any(|m| m == "virtio_blk"));
    let pos = |m: &str| report.modules.iter().position(|x| x == m);
    assert!(pos("virtio_ring") < pos("virtio_blk") && pos("virtio").is_some());
    if let (Some(e), Some(j)) = (pos("ext4"), pos("jbd2")) {
        assert!(j < e);
    }
    let entries = list(&out).unwrap();
    let kos: Vec<_> = entries.iter().filter(|e| e.path.ends_with(".ko")).collect();
    assert_eq!(kos.len(), report.modules.len());
    assert!(kos.iter().all(|e| e.size > 1000));
    // Reproducible on real data too.
    let again = t.path().join("again.img");
    build(&opts, &again).unwrap();
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&again).unwrap());
}

#[test]
fn real_debian_root_generic_with_threads() {
    let Some((root, kver)) = real_root() else {
        eprintln!("note: no Debian root with modules.dep (set STRATUM_TEST_ROOTFS); skipping");
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let init = t.path().join("init");
    std::fs::write(&init, b"stand-in for stratum-prepare-root").unwrap();
    let mut opts = BuildOptions::new(&root, &kver);
    opts.init = Some(init);
    opts.source_date_epoch = 1_700_000_000;
    let mut spec = stratum_initramfs::BuildSpec::from(opts);
    spec.mode = stratum_initramfs::Mode::Generic;
    let mut images = Vec::new();
    for (jobs, zt) in [(1, 1), (2, 2), (4, 3)] {
        spec.jobs = jobs;
        spec.zstd_threads = zt;
        let out = t.path().join(format!("g{jobs}.img"));
        let start = Instant::now();
        let r = stratum_initramfs::build_spec(&spec, &out).unwrap();
        eprintln!(
            "generic jobs={jobs} zstd-threads={zt}: {} modules ({} always), {} bytes in {:?}",
            r.modules.len(),
            r.load_always.len(),
            r.compressed_size,
            start.elapsed()
        );
        assert!(r.modules.iter().any(|m| m == "btrfs") && r.load_always.iter().any(|m| m == "xfs"));
        assert!(!r.load_always.iter().any(|m| m == "virtio_blk"));
        images.push(std::fs::read(&out).unwrap());
        let s = stratum_initramfs::inspect(&out).unwrap();
        assert_eq!(s.archives.len(), 1);
        assert_eq!(s.module_files, r.modules.len());
        assert_eq!(s.stratum.unwrap()["mode"], "generic");
    }
    assert!(
        images.iter().all(|i| *i == images[0]),
        "thread counts change the bytes"
    );
}
