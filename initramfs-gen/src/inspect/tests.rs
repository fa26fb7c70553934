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
