//! Listing plain, compressed and concatenated archives.

use super::*;
use std::io::Write;

fn cpio(names: &[&str]) -> Vec<u8> {
    let mut w = newc::Writer::new(Vec::new());
    for n in names {
        w.append(n, Kind::File, 0o644, 0, (0, 0), n.as_bytes())
            .unwrap();
    }
    w.finish().unwrap();
    w.into_inner()
}

#[test]
fn concatenated_archives() {
    // Early microcode (plain), padded to 512 bytes as initramfs-tools does, then the main
    // archive in each compression, each followed by zero padding.
    let mut img = cpio(&["kernel/x86/microcode/GenuineIntel.bin"]);
    img.resize(512, 0);
    img.extend(zstd::encode_all(&cpio(&["init"])[..], 3).unwrap());
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&cpio(&["gz"])).unwrap();
    img.extend(gz.finish().unwrap());
    img.extend([0u8; 4]);
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&cpio(&["xz"])).unwrap();
    img.extend(xz.finish().unwrap());
    img.extend([0u8; 16]);
    let entries = read_all(&mut &img[..]).unwrap();
    let got: Vec<(&str, usize)> = entries
        .iter()
        .map(|e| (e.path.as_str(), e.archive))
        .collect();
    assert_eq!(
        got,
        vec![
            ("/kernel/x86/microcode/GenuineIntel.bin", 0),
            ("/init", 1),
            ("/gz", 2),
            ("/xz", 3)
        ]
    );
    assert_eq!(entries[1].size, 4);
}

#[test]
fn garbage_is_an_error() {
    let mut img = cpio(&["a"]);
    img.extend(b"BZh91AY&SY");
    let e = format!("{:#}", read_all(&mut &img[..]).unwrap_err());
    assert!(e.contains("bzip2"), "{e}");
    let e = format!("{:#}", read_all(&mut &b"hello world"[..]).unwrap_err());
    assert!(e.contains("unknown data"), "{e}");
    let truncated = &cpio(&["abc"])[..100];
    assert!(read_all(&mut &truncated[..]).is_err());
}

#[test]
fn ls_style_lines() {
    let e = Entry {
        path: "/lib".into(),
        kind: Kind::Symlink,
        mode: 0o777,
        size: 7,
        uid: 0,
        gid: 0,
        mtime: 0,
        target: Some("usr/lib".into()),
        rdev: None,
        archive: 0,
    };
    assert_eq!(
        e.to_string(),
        "lrwxrwxrwx    0    0          7 /lib -> usr/lib"
    );
}

#[test]
fn inspect_concatenated() {
    let mut img = cpio(&["kernel/x86/microcode/AuthenticAMD.bin"]);
    img.resize(512, 0);
    let mut w = newc::Writer::new(Vec::new());
    for (n, d) in [
        ("init", &b"x"[..]),
        ("etc/stratum/initramfs.json", br#"{"generator":"stratum-initramfs","version":"0.1.0","kver":"6.1","mode":"generic","modules":["virtio","virtio_blk"]}"#),
        ("usr/lib/modules/6.1/kernel/virtio.ko", b"k"),
    ] {
        w.append(n, Kind::File, 0o644, 0, (0, 0), d).unwrap();
    }
    w.append("lib", Kind::Symlink, 0o777, 0, (0, 0), b"usr/lib")
        .unwrap();
    w.finish().unwrap();
    img.extend(zstd::encode_all(&w.into_inner()[..], 3).unwrap());
    let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
    xz.write_all(&cpio(&["etc/extra.conf"])).unwrap();
    img.extend(xz.finish().unwrap());
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("i.img");
    std::fs::write(&p, &img).unwrap();
    let s = inspect(&p).unwrap();
    let comp: Vec<_> = s
        .archives
        .iter()
        .map(|a| (a.compression, a.members, a.early_microcode))
        .collect();
    assert_eq!(
        comp,
        [("none", 1, true), ("zstd", 4, false), ("xz", 1, false)]
    );
    assert_eq!((s.members, s.has_init, s.module_files), (6, true, 1));
    assert_eq!(s.kernel_versions, ["6.1"]);
    assert_eq!(s.archives[1].symlinks, 1);
    assert_eq!(s.stratum.as_ref().unwrap()["kver"], "6.1");
    let text = s.to_string();
    assert!(
        text.contains("archive 0: none, 1 members") && text.contains("[early microcode]"),
        "{text}"
    );
    assert!(
        text.contains("kver 6.1, mode generic") && text.contains("modules: virtio virtio_blk"),
        "{text}"
    );
}

#[test]
fn names_print_escaped() {
    assert_eq!(escape("/usr/lib/ok"), "/usr/lib/ok");
    assert_eq!(
        escape("a\nb\tc\rd\\e\x1b[31m\u{9b}f\u{7f}"),
        "a\\nb\\tc\\rd\\\\e\\x1b[31m\\u{9b}f\\x7f"
    );
    let mut w = newc::Writer::new(Vec::new());
    w.append(
        "evil\n-rw-r--r--    0    0          1 /etc/shadow",
        Kind::File,
        0o644,
        0,
        (0, 0),
        b"",
    )
    .unwrap();
    w.append("link", Kind::Symlink, 0o777, 0, (0, 0), b"\x1b]0;title\x07")
        .unwrap();
    w.finish().unwrap();
    let entries = read_all(&mut &w.into_inner()[..]).unwrap();
    let text: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        text,
        [
            "-rw-r--r--    0    0          0 /evil\\n-rw-r--r--    0    0          1 /etc/shadow",
            "lrwxrwxrwx    0    0         10 /link -> \\x1b]0;title\\x07",
        ]
    );
}

#[test]
fn empty_zero_and_hollow_inputs_are_errors() {
    let err = |img: &[u8]| format!("{:#}", read_all(&mut &img[..]).unwrap_err());
    assert_eq!(err(b""), "empty file");
    assert_eq!(err(&[0u8; 10000]), "not an initramfs: all zero bytes");
    let zeros = zstd::encode_all(&[0u8; 10000][..], 3).unwrap();
    assert!(err(&zeros).contains("no cpio archive"), "{}", err(&zeros));
    // An archive with only its trailer is an (empty) archive.
    assert_eq!(read_all(&mut &cpio(&[])[..]).unwrap(), []);
}

#[test]
fn what_is_kept_is_bounded() {
    let big_manifest = vec![b' '; MAX_MANIFEST as usize + 1];
    let mut w = newc::Writer::new(Vec::new());
    w.append(MANIFEST, Kind::File, 0o644, 0, (0, 0), &big_manifest)
        .unwrap();
    w.finish().unwrap();
    let e = format!("{:#}", read_all(&mut &w.into_inner()[..]).unwrap_err());
    assert!(
        e.contains("initramfs.json") && e.contains("4194305 bytes"),
        "{e}"
    );

    let mut w = newc::Writer::new(Vec::new());
    let target = vec![b'x'; MAX_TARGET as usize + 1];
    w.append("l", Kind::Symlink, 0o777, 0, (0, 0), &target)
        .unwrap();
    w.finish().unwrap();
    let e = format!("{:#}", read_all(&mut &w.into_inner()[..]).unwrap_err());
    assert!(e.contains("target of l"), "{e}");

    let mut w = newc::Writer::new(Vec::new());
    for i in 0..=summary::MAX_KERNEL_VERSIONS {
        let dir = format!("usr/lib/modules/6.{i}/kernel");
        w.append(&dir, Kind::Dir, 0o755, 0, (0, 0), &[]).unwrap();
    }
    w.finish().unwrap();
    let t = tempfile::tempdir().unwrap();
    let p = t.path().join("i.img");
    std::fs::write(&p, w.into_inner()).unwrap();
    let e = format!("{:#}", inspect(&p).unwrap_err());
    assert!(e.contains("more than 64 kernel versions"), "{e}");
}

#[test]
fn a_walk_stops_when_asked() {
    let img = cpio(&["a", "b", "c"]);
    let mut seen = Vec::new();
    walk(&mut &img[..], &mut |e| {
        seen.push(e.path.clone());
        Ok(if seen.len() == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        })
    })
    .unwrap();
    assert_eq!(seen, ["/a", "/b"]);
}
