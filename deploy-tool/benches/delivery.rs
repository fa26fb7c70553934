//! `make bench` (update delivery): the bytes an update costs over HTTP when one package
//! changed, on the Debian image of images/vm.toml.
//!
//! v1 is the image; v2 is v1 with the `stratum` package's program rebuilt (the crash tests'
//! build of the same sources, with failpoints compiled in: a new build of the same program,
//! as a package update brings). Both are published with `stratum compose publish --deltas 1`
//! and served by a static HTTP server on 127.0.0.1 that counts what it sends. A machine
//! running v1 updates to v2:
//! - **stratum**: `stratum upgrade --download-only`, which fetches the static delta itself;
//! - **libostree, objects**: `ostree pull --disable-static-deltas` (a remote without deltas);
//! - **libostree, delta**: `ostree pull`, libostree's own use of the same delta;
//! - **floor**: the changed files themselves, each compressed with `xz -9` (the compression
//!   of libostree's delta parts): what no scheme can go below without a smarter diff.
//!
//! Target: stratum ≤ 1.5 × the floor. The table is also written to
//! target/bench-delivery.txt.

#[path = "../tests/common/mod.rs"]
mod common;

use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use common::http::{total, Server};
use common::{ok, Env};

const TARGET: f64 = 1.5;
/// The file of the package that changes.
const CHANGED: &str = "usr/bin/stratum";

fn main() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let new_build = top.join("target/release/examples/stratum-failpoints");
    assert!(
        new_build.is_file(),
        "{} is missing: run `make build-failpoints`",
        new_build.display()
    );
    let env = Env::new();
    let work = env.dir.path().to_path_buf();

    eprintln!("delivery bench: composing v1 (the Debian image) and v2 (one package rebuilt)");
    let root1 = work.join("root1");
    let root2 = work.join("root2");
    for r in [&root1, &root2] {
        ok(Command::new("cp")
            .args(["-a", "--link"])
            .arg(common::debian::debian_root())
            .arg(r)
            .output()
            .unwrap());
    }
    // A stand-in initramfs (these systems are never booted), the same in both versions.
    let kver = fs::read_dir(root1.join("usr/lib/modules"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    for r in [&root1, &root2] {
        let initrd = r
            .join("boot")
            .join(format!("initrd.img-{}", kver.to_string_lossy()));
        let _ = fs::remove_file(&initrd);
        fs::write(initrd, "initrd\n").unwrap();
    }
    // The copies share inodes with the cache: replace the file, never write into it.
    fs::remove_file(root2.join(CHANGED)).unwrap();
    fs::copy(&new_build, root2.join(CHANGED)).unwrap();
    let v1 = env.compose_root(&root1, Some("1"));
    let published = work.join("published");
    publish(&env, &published);
    let server = Server::start(&published);
    let url = server.url();

    // The machine: v1 installed from the server.
    env.install_following_http(&url);
    let v2 = env.compose_root(&root2, Some("2"));
    publish(&env, &published);

    let changed = changed_files(&env.src, &v1, &v2);
    let floor: u64 = changed.iter().map(|p| xz_size(&root2.join(p))).sum();

    eprintln!("delivery bench: stratum upgrade --download-only");
    server.take_log();
    ok(env.stratum(&["upgrade", "--download-only"]));
    let log = server.take_log();
    assert!(
        log.iter().any(|r| r.path.starts_with("/deltas/")),
        "stratum fetched no delta"
    );
    let stratum = total(&log);

    eprintln!("delivery bench: ostree pull, objects and delta");
    let objects = ostree_pull(&work.join("objects"), &env.src, &v1, &url, &server, true);
    let libostree = ostree_pull(&work.join("delta"), &env.src, &v1, &url, &server, false);

    let ratio = stratum as f64 / floor as f64;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "update v1 -> v2, one package changed ({} files: {})",
        changed.len(),
        changed.join(", ")
    );
    let _ = writeln!(t, "{:<34} {:>12} {:>9}", "", "bytes", "x floor");
    for (name, b) in [
        ("floor (changed files, xz -9)", floor),
        ("stratum (static delta)", stratum),
        ("libostree pull, static delta", libostree),
        ("libostree pull, objects", objects),
    ] {
        let _ = writeln!(t, "{name:<34} {b:>12} {:>9.2}", b as f64 / floor as f64);
    }
    let _ = writeln!(
        t,
        "stratum / floor = {ratio:.2} (target <= {TARGET}): {}",
        if ratio <= TARGET { "met" } else { "NOT met" }
    );
    print!("{t}");
    let _ = fs::write(top.join("target/bench-delivery.txt"), &t);
}

/// `stratum compose publish --deltas 1` of `os/x` into `to`.
fn publish(env: &Env, to: &Path) {
    env.publish(to, &["--deltas", "1"]);
}

/// The files added or modified from `from` to `to` (`ostree diff`), relative paths.
fn changed_files(repo: &Path, from: &str, to: &str) -> Vec<String> {
    common::ostree(repo, &["diff", from, to])
        .lines()
        .filter_map(|l| l.strip_prefix("M    ").or_else(|| l.strip_prefix("A    ")))
        .map(|p| p.trim_start_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn xz_size(path: &Path) -> u64 {
    if !path.is_file() {
        return 0;
    }
    let out = Command::new("xz")
        .args(["-9", "-c", "-T1"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "xz {}", path.display());
    out.stdout.len() as u64
}

/// The bytes `ostree pull` of `os/x` from the server costs a repository holding `v1`.
fn ostree_pull(
    repo: &Path,
    src: &Path,
    v1: &str,
    url: &str,
    server: &Server,
    objects_only: bool,
) -> u64 {
    let ostree = |args: &[&str]| common::ostree(repo, args);
    ostree(&["init", "--mode=bare-user"]);
    ostree(&["pull-local", src.to_str().unwrap(), v1]);
    ostree(&["remote", "add", "--no-gpg-verify", "pub", url]);
    server.take_log();
    if objects_only {
        ostree(&["pull", "--disable-static-deltas", "pub", "os/x"]);
    } else {
        ostree(&["pull", "pub", "os/x"]);
    }
    total(&server.take_log())
}
