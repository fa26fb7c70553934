//! `stratum-initramfs list` and `inspect` on hostile images: a few kilobytes of zstd that
//! decompress to a gigabyte, names that would forge lines of output, empty and zeroed files.
//!
//! Peak memory is that of the binary, read with `getrusage(RUSAGE_CHILDREN)`: the largest
//! resident set of any child this test program has waited for. Every child here reads a
//! hostile image, so the maximum is the bound under test.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

use nix::sys::resource::{getrusage, UsageWho};
use stratum_initramfs::newc::{Kind, Writer};

const BIN: &str = env!("CARGO_BIN_EXE_stratum-initramfs");

/// One gibibyte: what the bombs decompress to.
const GIB: u64 = 1 << 30;

/// Peak memory allowed to the binary on any of these images.
const MAX_RSS_BYTES: i64 = 100 << 20;

fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

/// A newc header and name, padded, for a member of `size` bytes (written separately).
fn header(name: &str, mode: u32, size: u32) -> Vec<u8> {
    let mut h = b"070701".to_vec();
    let namesize = name.len() as u32 + 1;
    for f in [1, mode, 0, 0, 1, 0, size, 0, 0, 0, 0, namesize, 0] {
        h.extend(format!("{f:08X}").as_bytes());
    }
    h.extend(name.as_bytes());
    h.push(0);
    h.resize(h.len().next_multiple_of(4), 0);
    h
}

/// A zstd frame of `prefix`, `zeros` zero bytes and `suffix`, compressed as it is produced:
/// the zeros are never in memory.
fn zstd_bomb(path: &Path, prefix: &[u8], zeros: u64, suffix: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = zstd::Encoder::new(file, 3).unwrap();
    enc.write_all(prefix).unwrap();
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..zeros / chunk.len() as u64 {
        enc.write_all(&chunk).unwrap();
    }
    enc.write_all(suffix).unwrap();
    enc.finish().unwrap();
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn stderr(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}", stdout_lossy(out));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout_lossy(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn decompression_bombs_take_bounded_memory() {
    let t = tempfile::tempdir().unwrap();
    let size = u32::try_from(GIB).unwrap();

    // A well-formed archive with a 1 GiB file of zeros, then /init.
    let member = t.path().join("member.img");
    let mut tail = header("init", 0o100755, 0);
    tail.extend(header("TRAILER!!!", 0, 0));
    zstd_bomb(&member, &header("big", 0o100644, size), GIB, &tail);
    // A header claiming 4 GiB, followed by 1 GiB of zeros and the end of the data.
    let claim = t.path().join("claim.img");
    zstd_bomb(&claim, &header("huge", 0o100644, u32::MAX), GIB, &[]);
    // Nothing but 1 GiB of zeros.
    let zeros = t.path().join("zeros.img");
    zstd_bomb(&zeros, &[], GIB, &[]);
    for p in [&member, &claim, &zeros] {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len < 100_000, "{}: {len} bytes", p.display());
    }

    // Every run first, so that the peak is checked whatever the outputs.
    let cases = [
        ("list", &member),
        ("inspect", &member),
        ("list", &claim),
        ("inspect", &claim),
        ("list", &zeros),
        ("inspect", &zeros),
    ];
    let runs: Vec<Output> = cases
        .iter()
        .map(|(verb, p)| run(&[verb, p.to_str().unwrap()]))
        .collect();
    let peak = getrusage(UsageWho::RUSAGE_CHILDREN).unwrap().max_rss() * 1024;
    eprintln!(
        "peak resident memory of stratum-initramfs: {} KiB",
        peak / 1024
    );
    assert!(
        peak < MAX_RSS_BYTES,
        "stratum-initramfs used {} MiB",
        peak >> 20
    );

    assert_eq!(
        stdout(&runs[0]),
        "-rw-r--r--    0    0 1073741824 /big\n-rwxr-xr-x    0    0          0 /init\n"
    );
    let text = stdout(&runs[1]);
    assert!(
        text.contains("archive 0: zstd, 2 members (2 files, 0 dirs, 0 symlinks, 0 other), 1073741824 bytes of data")
            && text.contains("init: /init"),
        "{text}"
    );
    for ((verb, p), out) in cases.iter().zip(&runs).skip(2) {
        let e = stderr(out);
        let want = if *p == &claim {
            "\"huge\" truncated"
        } else {
            "no cpio archive"
        };
        assert!(e.contains(want), "{verb} {}: {e}", p.display());
    }
}

#[test]
fn names_are_escaped_in_list() {
    let t = tempfile::tempdir().unwrap();
    let img = t.path().join("names.img");
    let mut w = Writer::new(Vec::new());
    w.append("init", Kind::File, 0o755, 0, (0, 0), b"x")
        .unwrap();
    w.append(
        "x\n-rwxr-xr-x    0    0          1 /sbin/init",
        Kind::File,
        0o644,
        0,
        (0, 0),
        b"",
    )
    .unwrap();
    w.append("bell\x07\x1b[2J", Kind::Symlink, 0o777, 0, (0, 0), b"t\r")
        .unwrap();
    w.finish().unwrap();
    std::fs::write(&img, w.into_inner()).unwrap();
    let img = img.to_str().unwrap();
    let text = stdout(&run(&["list", img]));
    assert_eq!(
        text.lines().collect::<Vec<_>>(),
        [
            "-rwxr-xr-x    0    0          1 /init",
            "-rw-r--r--    0    0          0 /x\\n-rwxr-xr-x    0    0          1 /sbin/init",
            "lrwxrwxrwx    0    0          2 /bell\\x07\\x1b[2J -> t\\r",
        ]
    );
    // JSON carries the names exactly, in JSON's own escapes.
    let out = run(&["list", "--json", img]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v[1]["path"],
        "/x\n-rwxr-xr-x    0    0          1 /sbin/init"
    );
    assert_eq!(v[2]["target"], "t\r");
    assert_eq!(v.as_array().unwrap().len(), 3);
}

#[test]
fn empty_and_zeroed_files_are_errors() {
    let t = tempfile::tempdir().unwrap();
    let empty = t.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let zeroed = t.path().join("zeroed.img");
    std::fs::write(&zeroed, vec![0u8; 1 << 20]).unwrap();
    for verb in ["list", "inspect"] {
        for json in [false, true] {
            let args = |p: &Path| {
                let mut a = vec![verb, p.to_str().unwrap()];
                if json {
                    a.push("--json");
                }
                run(&a)
            };
            let out = args(&empty);
            let e = stderr(&out);
            assert!(e.contains("empty file") && out.stdout.is_empty(), "{e}");
            let out = args(&zeroed);
            let e = stderr(&out);
            assert!(
                e.contains("not an initramfs: all zero bytes") && out.stdout.is_empty(),
                "{e}"
            );
        }
    }
}
