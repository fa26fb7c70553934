//! Building images from fake roots: layout, module handling, reproducibility, errors.

use super::*;
use crate::testutil::{fake_root, KVER};
use std::path::PathBuf;

fn build_fake(epoch: u64) -> (tempfile::TempDir, PathBuf, BuildReport) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let mut opts = BuildOptions::new(&root, KVER);
    opts.source_date_epoch = epoch;
    let out = t.path().join("initramfs.img");
    let report = build(&opts, &out).unwrap();
    (t, out, report)
}

fn member(out: &Path, path: &str) -> Vec<u8> {
    let raw = zstd::decode_all(std::fs::File::open(out).unwrap()).unwrap();
    let mut r = newc::Reader::new(&raw[..]);
    while let Some((h, data)) = r.next_member().unwrap() {
        if format!("/{}", h.name) == path {
            return data;
        }
    }
    panic!("{path} not in image");
}

#[test]
fn layout() {
    let (_t, out, report) = build_fake(1_700_000_000);
    let entries = crate::list(&out).unwrap();
    let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted, "members are sorted");
    assert_eq!(entries.len(), report.members);
    let md = format!("/usr/lib/modules/{KVER}");
    for p in [
        "/dev",
        "/proc",
        "/sys",
        "/run",
        "/sysroot",
        "/newroot",
        "/etc",
        "/etc/stratum",
        "/usr",
        "/usr/lib",
        md.as_str(),
    ] {
        let e = entries
            .iter()
            .find(|e| e.path == p)
            .unwrap_or_else(|| panic!("{p}"));
        assert_eq!((e.kind, e.mode), (Kind::Dir, 0o755), "{p}");
    }
    // Every member's parent directory comes before it.
    for (i, e) in entries.iter().enumerate() {
        if let Some((parent, _)) = e.path.rsplit_once('/').filter(|(p, _)| !p.is_empty()) {
            let j = paths
                .iter()
                .position(|p| *p == parent)
                .unwrap_or_else(|| panic!("{parent}"));
            assert!(j < i);
        }
        assert_eq!((e.uid, e.gid, e.mtime), (0, 0, 1_700_000_000), "{}", e.path);
    }
    let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap().clone();
    assert_eq!(get("/lib").target.as_deref(), Some("usr/lib"));
    assert_eq!(
        (get("/dev/console").kind, get("/dev/console").rdev),
        (Kind::Char, Some((5, 1)))
    );
    assert_eq!(get("/dev/console").mode, 0o600);
    assert_eq!((get("/init").kind, get("/init").mode), (Kind::File, 0o755));
    assert_eq!(member(&out, "/init"), b"#!fake init\n");

    let load = String::from_utf8(member(&out, "/etc/stratum/modules.load")).unwrap();
    let lines: Vec<&str> = load.lines().collect();
    let names: Vec<String> = lines.iter().map(|l| modules::name_from_path(l)).collect();
    // virtio_pci has a device alias (`pci:…`): it, and the dependency only it needs, load by
    // modalias at boot. Everything else is listed, in the report's (dependency) order.
    let by_alias = ["virtio_pci_modern_dev", "virtio_pci"];
    let listed: Vec<String> = report
        .modules
        .iter()
        .filter(|m| !by_alias.contains(&m.as_str()))
        .cloned()
        .collect();
    assert_eq!(names, listed);
    for m in by_alias {
        assert!(
            report.modules.iter().any(|r| r == m),
            "{m} not in the image"
        );
        assert!(
            paths.iter().any(|p| p.ends_with(&format!("/{m}.ko"))),
            "{m}"
        );
    }
    for l in &lines {
        assert!(l.ends_with(".ko") && get(l).kind == Kind::File, "{l}");
    }
    assert!(load.starts_with(&format!("{md}/kernel/drivers/virtio/virtio_ring.ko\n")));
    // The compressed module is stored decompressed, under a .ko name.
    let blk = format!("{md}/kernel/drivers/block/virtio_blk.ko");
    assert!(load.contains(&format!("{blk}\n")));
    assert_eq!(member(&out, &blk), b"MOD virtio_blk");
    assert!(!paths.iter().any(|p| p.ends_with(".zst")));
    let dep = String::from_utf8(member(&out, &format!("{md}/modules.dep"))).unwrap();
    assert!(dep.contains("kernel/drivers/block/virtio_blk.ko: kernel/drivers/virtio/virtio.ko"));
    assert!(!dep.contains("crc32c-intel.ko:") || load.contains("crc32c-intel.ko"));

    let release = String::from_utf8(member(&out, "/etc/initrd-release")).unwrap();
    assert!(release.contains("ID=stratum-initramfs\n") && release.contains("PRETTY_NAME="));
    let json: serde_json::Value =
        serde_json::from_slice(&member(&out, "/etc/stratum/initramfs.json")).unwrap();
    assert_eq!(json["kver"], KVER);
    assert_eq!(json["source_date_epoch"], 1_700_000_000u64);
    assert_eq!(
        json["modules"].as_array().unwrap().len(),
        report.modules.len()
    );
    assert!(!json.to_string().contains("/tmp"), "no host paths: {json}");
    assert_eq!(report.builtin, vec!["sd_mod", "crc32c_generic"]);
    assert_eq!(
        report.compressed_size,
        std::fs::metadata(&out).unwrap().len()
    );
    let digest = blake3::hash(&std::fs::read(&out).unwrap())
        .to_hex()
        .to_string();
    assert_eq!(report.blake3, digest);
}

#[test]
fn reproducible() {
    let (_a, out_a, ra) = build_fake(0);
    let (_b, out_b, _) = build_fake(0);
    let (_c, out_c, _) = build_fake(1);
    let (a, b, c) = (
        std::fs::read(out_a).unwrap(),
        std::fs::read(out_b).unwrap(),
        std::fs::read(out_c).unwrap(),
    );
    assert!(a == b, "two builds of the same root differ");
    assert!(a != c, "source_date_epoch has no effect");
    assert_eq!(ra.compressed_size, a.len() as u64);
}

#[test]
fn errors_name_the_problem() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let out = t.path().join("x.img");
    let mut opts = BuildOptions::new(&root, "5.0.0-missing");
    let e = format!("{:#}", build(&opts, &out).unwrap_err());
    assert!(e.contains("5.0.0-missing") && e.contains(KVER), "{e}");
    opts.kver = KVER.into();
    opts.modules.push("nope".into());
    let e = format!("{:#}", build(&opts, &out).unwrap_err());
    assert!(e.contains("\"nope\""), "{e}");
    opts.modules.pop();
    std::fs::remove_file(root.join(prepare_root_path())).unwrap();
    let e = format!("{:#}", build(&opts, &out).unwrap_err());
    assert!(
        e.contains("stratum-prepare-root") && e.contains("make install DESTDIR="),
        "{e}"
    );
    assert!(!out.exists());
    // A dynamically linked init would not run without libc in the image.
    let mut elf = vec![0u8; 64 + 56];
    elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
    elf[0x20] = 64; // e_phoff
    elf[0x36] = 56; // e_phentsize
    elf[0x38] = 1; // e_phnum
    elf[64] = 3; // PT_INTERP
    let init = t.path().join("dyn-init");
    std::fs::write(&init, &elf).unwrap();
    opts.init = Some(init.clone());
    let e = format!("{:#}", build(&opts, &out).unwrap_err());
    assert!(e.contains("dynamically linked"), "{e}");
    elf[64] = 1; // PT_LOAD only: static
    std::fs::write(&init, &elf).unwrap();
    build(&opts, &out).unwrap();
    // No temporary files are left behind.
    let left: Vec<_> = std::fs::read_dir(t.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(left.len(), 3, "{left:?}");
}

fn spec_fake(t: &Path) -> BuildSpec {
    let root = t.join("root");
    if !root.exists() {
        fake_root(&root);
    }
    let mut opts = BuildOptions::new(&root, KVER);
    opts.source_date_epoch = 7;
    BuildSpec::from(opts)
}

#[test]
fn reproducible_with_threads() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = spec_fake(t.path());
    let mut outs = Vec::new();
    for (jobs, zt) in [(1, 1), (4, 2), (3, 4), (2, 2)] {
        spec.jobs = jobs;
        spec.zstd_threads = zt;
        let out = t.path().join(format!("{jobs}-{zt}.img"));
        build_spec(&spec, &out).unwrap();
        outs.push(std::fs::read(out).unwrap());
    }
    assert!(
        outs.iter().all(|o| *o == outs[0]),
        "output depends on thread counts"
    );
    spec.zstd_threads = 0;
    let single = t.path().join("single.img");
    build_spec(&spec, &single).unwrap();
    let raw = |b: &[u8]| zstd::decode_all(b).unwrap();
    assert_eq!(raw(&std::fs::read(single).unwrap()), raw(&outs[0]));
}

#[test]
fn omit_add_and_include() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = spec_fake(t.path());
    let root = spec.options.root.clone();
    std::fs::create_dir_all(root.join("etc/keys/sub")).unwrap();
    std::fs::write(root.join("etc/keys/sub/a.pem"), b"A").unwrap();
    std::os::unix::fs::symlink("sub/a.pem", root.join("etc/keys/link")).unwrap();
    std::fs::write(root.join("etc/hostname"), b"box\n").unwrap();
    spec.includes = vec![
        "/etc/keys".parse().unwrap(),
        "etc/hostname:/etc/stratum/host".parse().unwrap(),
    ];
    spec.omit_modules = vec![
        "virtio_ring".into(),
        "virtio_scsi".into(),
        "crc32c-intel".into(),
    ];
    spec.add_modules = vec!["virtio_scsi".into()]; // added wins over omitted
    let out = t.path().join("x.img");
    let r = build_spec(&spec, &out).unwrap();
    // Everything over virtio needs virtio_ring: gone, and said so.
    assert_eq!(r.modules, ["jbd2", "mbcache", "crc16", "ext4"]);
    assert!(
        r.omitted.contains(&"virtio_ring".to_string()),
        "{:?}",
        r.omitted
    );
    assert!(
        r.omitted
            .iter()
            .any(|o| o.starts_with("virtio_blk (needs omitted virtio")),
        "{:?}",
        r.omitted
    );
    let e = crate::list(&out).unwrap();
    let get = |p: &str| {
        e.iter()
            .find(|x| x.path == p)
            .unwrap_or_else(|| panic!("{p}"))
    };
    assert_eq!(get("/etc/keys/sub/a.pem").size, 1);
    assert_eq!(get("/etc/keys/link").target.as_deref(), Some("sub/a.pem"));
    assert_eq!(member(&out, "/etc/stratum/host"), b"box\n");
    spec.includes = vec!["/etc/nothing".parse().unwrap()];
    let err = format!("{:#}", build_spec(&spec, &out).unwrap_err());
    assert!(err.contains("/etc/nothing"), "{err}");
    assert!("x:/".parse::<Include>().is_err() && "a:/../b".parse::<Include>().is_err());
    spec.includes.clear();
    spec.add_modules = vec!["no_such_mod".into()];
    let err = format!("{:#}", build_spec(&spec, &out).unwrap_err());
    assert!(
        err.contains("unknown kernel module \"no_such_mod\""),
        "{err}"
    );
}

#[test]
fn generic_loads_filesystems_always_drivers_by_alias() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = spec_fake(t.path());
    spec.mode = Mode::Generic;
    let out = t.path().join("g.img");
    let r = build_spec(&spec, &out).unwrap();
    assert!(
        r.modules.contains(&"virtio_pci".to_string()),
        "{:?}",
        r.modules
    );
    assert!(r.skipped.contains(&"nvme".to_string()));
    // ext4 and its dependencies are loaded unconditionally; virtio by modalias.
    assert!(
        r.load_always.contains(&"ext4".to_string()) && r.load_always.contains(&"jbd2".to_string())
    );
    assert!(
        !r.load_always.contains(&"virtio_pci".to_string()),
        "{:?}",
        r.load_always
    );
    let alias = String::from_utf8(member(
        &out,
        &format!("/usr/lib/modules/{KVER}/modules.alias"),
    ))
    .unwrap();
    assert_eq!(
        alias,
        "alias crc32c crc32c_intel\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n"
    );
}

#[test]
fn firmware_from_modinfo() {
    let t = tempfile::tempdir().unwrap();
    let spec0 = spec_fake(t.path());
    let root = spec0.options.root.clone();
    let dir = root.join("usr/lib/modules").join(KVER);
    let Some(ko) = crate::modinfo::tests::fake_module(
        t.path(),
        "acme",
        &[
            "firmware=acme/a.bin",
            "firmware=acme/b.bin",
            "firmware=acme/missing.bin",
        ],
    ) else {
        eprintln!("note: gcc not installed; skipping");
        return;
    };
    std::fs::write(
        dir.join("kernel/acme.ko.zst"),
        zstd::encode_all(&ko[..], 3).unwrap(),
    )
    .unwrap();
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap() + "kernel/acme.ko.zst:\n";
    std::fs::write(dir.join("modules.dep"), dep).unwrap();
    let fw = root.join("usr/lib/firmware/acme");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("a.bin"), b"AAA").unwrap();
    std::fs::write(
        fw.join("b.bin.zst"),
        zstd::encode_all(&b"BBB"[..], 3).unwrap(),
    )
    .unwrap();
    let mut spec = spec0.clone();
    spec.add_modules = vec!["acme".into()];
    let out = t.path().join("fw.img");
    let r = build_spec(&spec, &out).unwrap();
    assert_eq!(r.firmware, ["acme/a.bin", "acme/b.bin"]);
    assert_eq!(r.missing_firmware, ["acme/missing.bin"]);
    assert_eq!(member(&out, "/usr/lib/firmware/acme/b.bin"), b"BBB");
    assert_eq!(
        member(&out, &format!("/usr/lib/modules/{KVER}/kernel/acme.ko")),
        ko
    );
    spec.firmware = false;
    assert!(build_spec(&spec, &out).unwrap().firmware.is_empty());
}
