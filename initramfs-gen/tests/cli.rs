//! The `stratum-initramfs` binary end to end on a fake root: both command forms, the JSON
//! report, reproducibility, GNU cpio reading the decompressed image, `list`, and errors.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_stratum-initramfs");
const KVER: &str = "6.1.0-cli";

fn fake_root(root: &Path) {
    let dir = root.join("lib/modules").join(KVER);
    std::fs::create_dir_all(dir.join("kernel")).unwrap();
    std::fs::write(
        dir.join("modules.dep"),
        "kernel/virtio_blk.ko.gz: kernel/virtio.ko\nkernel/virtio.ko:\n",
    )
    .unwrap();
    let builtin: String = [
        "virtio_pci",
        "virtio_scsi",
        "sd_mod",
        "ext4",
        "crc32c_generic",
    ]
    .iter()
    .map(|m| format!("kernel/{m}.ko\n"))
    .collect();
    std::fs::write(dir.join("modules.builtin"), builtin).unwrap();
    std::fs::write(dir.join("kernel/virtio.ko"), b"virtio").unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(b"virtio_blk").unwrap();
    std::fs::write(dir.join("kernel/virtio_blk.ko.gz"), gz.finish().unwrap()).unwrap();
    let init = root.join("usr/lib/stratum/stratum-prepare-root");
    std::fs::create_dir_all(init.parent().unwrap()).unwrap();
    std::fs::write(init, b"init").unwrap();
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("SOURCE_DATE_EPOCH", "1234")
        .output()
        .unwrap()
}

#[test]
fn build_and_list() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let (r, a, b) = (
        root.to_str().unwrap(),
        t.path().join("a.img"),
        t.path().join("b.img"),
    );
    let out = run(&[
        "--root",
        r,
        "--kver",
        KVER,
        "-o",
        a.to_str().unwrap(),
        "--json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("2 modules") && stderr.lines().count() == 1,
        "{stderr}"
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["modules"],
        serde_json::json!(["virtio", "virtio_blk"])
    );
    assert_eq!(
        report["compressed_size"],
        std::fs::metadata(&a).unwrap().len()
    );

    let out = run(&[
        "build",
        "--root",
        r,
        "--kver",
        KVER,
        "--output",
        b.to_str().unwrap(),
    ]);
    assert!(out.status.success() && out.stdout.is_empty());
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    // GNU cpio reads the decompressed image as the kernel would.
    let raw = zstd::decode_all(std::fs::File::open(&a).unwrap()).unwrap();
    let mut cpio = Command::new("/usr/bin/cpio")
        .args(["-t", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    cpio.stdin.take().unwrap().write_all(&raw).unwrap();
    let names = String::from_utf8(cpio.wait_with_output().unwrap().stdout).unwrap();
    let modules = format!("usr/lib/modules/{KVER}/kernel/virtio_blk.ko");
    for n in [
        "init",
        "dev/console",
        "lib",
        "etc/stratum/modules.load",
        modules.as_str(),
    ] {
        assert!(names.lines().any(|l| l == n), "{n} missing from:\n{names}");
    }

    let out = run(&["list", a.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("crw-------    0    0       5, 1 /dev/console"),
        "{text}"
    );
    assert!(
        text.contains("lrwxrwxrwx    0    0          7 /lib -> usr/lib"),
        "{text}"
    );
    assert!(
        text.contains(&format!("-rw-r--r--    0    0         10 /{modules}")),
        "{text}"
    );
    let out = run(&["list", "--json", a.to_str().unwrap()]);
    let entries: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(entries.iter().all(|e| e["mtime"] == 1234 && e["uid"] == 0));
    assert_eq!(entries.len(), report["members"].as_u64().unwrap() as usize);
}

#[test]
fn errors_are_reported() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    std::fs::remove_file(root.join("usr/lib/stratum/stratum-prepare-root")).unwrap();
    let img = t.path().join("x.img");
    let out = run(&[
        "--root",
        root.to_str().unwrap(),
        "--kver",
        KVER,
        "-o",
        img.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("make install DESTDIR="),
        "{stderr}"
    );
    let out = run(&["--root", root.to_str().unwrap(), "--kver", KVER]);
    assert_eq!(out.status.code(), Some(2), "missing -o is a usage error");
}

#[test]
fn config_inspect_and_kernel_errors() {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("root");
    fake_root(&root);
    let r = root.to_str().unwrap();
    let img = t.path().join("c.img");
    let cfg = root.join("etc/stratum/initramfs.d");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::write(
        cfg.join("10-x.toml"),
        "omit-modules = [\"virtio_blk\"]\nzstd-level = 5\n",
    )
    .unwrap();
    // No --kver: the only kernel is used; the config omits virtio_blk, the command line adds it back.
    let out = run(&[
        "--root",
        r,
        "-o",
        img.to_str().unwrap(),
        "--json",
        "--add-module",
        "virtio_blk",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["modules"],
        serde_json::json!(["virtio", "virtio_blk"])
    );
    let out = run(&["--root", r, "-o", img.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["modules"], serde_json::json!([]), "{report}");
    let out = run(&["inspect", img.to_str().unwrap()]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("archive 0: zstd") && text.contains(&format!("kver {KVER}, mode default")),
        "{text}"
    );
    let out = run(&["inspect", "--json", img.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["archives"][0]["compression"], "zstd");

    std::fs::write(
        cfg.join("20-bad.toml"),
        "mode = \"generic\"\nzstd-lvl = 1\n",
    )
    .unwrap();
    let out = run(&["--root", r, "-o", img.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && e.contains("20-bad.toml") && e.contains("line 2"),
        "{e}"
    );
    std::fs::remove_file(cfg.join("20-bad.toml")).unwrap();
    std::fs::create_dir_all(root.join("lib/modules/7.0-other")).unwrap();
    std::fs::write(root.join("lib/modules/7.0-other/modules.dep"), "").unwrap();
    let out = run(&["--root", r, "-o", img.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("--kver") && e.contains(KVER) && e.contains("7.0-other"),
        "{e}"
    );
    let out = run(&["--root", r, "--kver", "9.9", "-o", img.to_str().unwrap()]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("kernel versions present: 6.1.0-cli, 7.0-other"),
        "{e}"
    );
}
