//! Building images from fake roots: layout, module handling, reproducibility, errors.

use super::*;
use crate::testutil::{fake_root, KVER};

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
    assert_eq!(names, report.modules);
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
    std::fs::remove_file(root.join(PREPARE_ROOT_PATH)).unwrap();
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
