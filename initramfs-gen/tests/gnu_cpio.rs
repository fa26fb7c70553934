//! Interoperability of the newc writer and reader with GNU cpio (`/usr/bin/cpio`), the
//! reference implementation of the format besides the kernel itself.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

use stratum_initramfs::newc::{Kind, Reader, Writer};

const CPIO: &str = "/usr/bin/cpio";

fn have_cpio() -> bool {
    let ok = Path::new(CPIO).exists();
    if !ok {
        eprintln!("note: {CPIO} not installed; skipping");
    }
    ok
}

fn cpio(args: &[&str], dir: &Path, input: &[u8]) -> (String, Vec<u8>) {
    let mut child = Command::new(CPIO)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "cpio {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.stdout,
    )
}

/// Files whose sizes cover every padding case, plus the empty file.
const FILES: &[(&str, usize)] = &[
    ("etc/empty", 0),
    ("etc/one", 1),
    ("etc/two", 2),
    ("etc/three", 3),
    ("etc/four", 4),
    ("etc/five", 5),
    ("usr/lib/big", 70_001),
];

fn content(i: usize, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i * 31 + j * 7) as u8).collect()
}

#[test]
fn gnu_cpio_reads_what_we_write() {
    if !have_cpio() {
        return;
    }
    let mut w = Writer::new(Vec::new());
    for d in ["dev", "etc", "usr", "usr/lib"] {
        w.append(&format!("/{d}"), Kind::Dir, 0o755, 1000, (0, 0), &[])
            .unwrap();
    }
    w.append("/dev/console", Kind::Char, 0o600, 1000, (5, 1), &[])
        .unwrap();
    for (i, (name, len)) in FILES.iter().enumerate() {
        w.append(name, Kind::File, 0o640, 1000, (0, 0), &content(i, *len))
            .unwrap();
    }
    w.append("/lib", Kind::Symlink, 0o777, 1000, (0, 0), b"usr/lib")
        .unwrap();
    w.finish().unwrap();
    let archive = w.into_inner();

    let t = tempfile::tempdir().unwrap();
    let (names, _) = cpio(&["-t", "--quiet"], t.path(), &archive);
    let mut want = vec!["dev", "etc", "usr", "usr/lib", "dev/console"];
    want.extend(FILES.iter().map(|f| f.0));
    want.push("lib");
    assert_eq!(names.lines().collect::<Vec<_>>(), want);
    let (verbose, _) = cpio(&["-itv", "--quiet"], t.path(), &archive);
    let console = verbose
        .lines()
        .find(|l| l.ends_with(" dev/console"))
        .unwrap();
    assert!(
        console.starts_with("crw-------") && console.contains("5,") && console.contains(" 1 "),
        "{console}"
    );
    assert!(verbose
        .lines()
        .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("lib -> usr/lib")));

    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    // Device nodes need CAP_MKNOD, so extract everything but /dev/console.
    let mut w = Writer::new(Vec::new());
    let mut r = Reader::new(&archive[..]);
    while let Some((h, data)) = r.next_member().unwrap() {
        if h.kind() != Some(Kind::Char) {
            w.append(
                &h.name,
                h.kind().unwrap(),
                h.mode,
                u64::from(h.mtime),
                h.rdev,
                &data,
            )
            .unwrap();
        }
    }
    w.finish().unwrap();
    cpio(
        &["-idm", "--no-absolute-filenames", "--quiet"],
        &x,
        &w.into_inner(),
    );
    for (i, (name, len)) in FILES.iter().enumerate() {
        let p = x.join(name);
        assert_eq!(std::fs::read(&p).unwrap(), content(i, *len), "{name}");
        let meta = std::fs::metadata(&p).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
        assert_eq!(std::os::unix::fs::MetadataExt::mtime(&meta), 1000);
    }
    assert_eq!(
        std::fs::read_link(x.join("lib")).unwrap(),
        Path::new("usr/lib")
    );
}

#[test]
fn we_read_what_gnu_cpio_writes() {
    if !have_cpio() {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    for (i, (name, len)) in FILES.iter().enumerate() {
        let p = src.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content(i, *len)).unwrap();
    }
    std::os::unix::fs::symlink("usr/lib", src.join("lib")).unwrap();
    let mut list: Vec<String> = FILES.iter().map(|f| f.0.to_string()).collect();
    list.extend(["etc", "usr", "usr/lib", "lib"].map(String::from));
    let (_, archive) = cpio(
        &["-o", "-H", "newc", "--quiet"],
        &src,
        (list.join("\n") + "\n").as_bytes(),
    );

    let mut r = Reader::new(&archive[..]);
    let mut seen = 0;
    while let Some((h, data)) = r.next_member().unwrap() {
        seen += 1;
        if let Some(i) = FILES.iter().position(|f| f.0 == h.name) {
            assert_eq!(h.kind(), Some(Kind::File));
            assert_eq!(data, content(i, FILES[i].1), "{}", h.name);
        } else if h.name == "lib" {
            assert_eq!(
                (h.kind(), data.as_slice()),
                (Some(Kind::Symlink), &b"usr/lib"[..])
            );
        } else {
            assert_eq!(h.kind(), Some(Kind::Dir), "{}", h.name);
        }
    }
    assert_eq!(seen, list.len());
    // The listing API reads it too, also gzip-compressed behind a plain archive.
    let img = t.path().join("img");
    let mut bytes = archive.clone();
    let mut gz = system_gzip(&archive);
    bytes.append(&mut gz);
    std::fs::write(&img, &bytes).unwrap();
    let entries = stratum_initramfs::list(&img).unwrap();
    assert_eq!(entries.len(), 2 * list.len());
    assert_eq!(entries.last().unwrap().archive, 1);
}

/// gzip through the system tool, so this test does not depend on our own compressor choice.
fn system_gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-nc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}
