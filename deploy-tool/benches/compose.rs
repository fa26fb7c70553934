//! `make bench`: `stratum compose tree images/vm.toml` against what it replaces done by
//! hand: mmdebstrap of the same package set from the same repositories, then `ostree
//! commit` of the root. The difference is Stratum's own work (the manifest's files, users
//! and scripts, the image layout, the initramfs, the package list). Median of
//! `BENCH_RUNS` (default 3) pairs; both use the same warm package cache, so neither
//! downloads. The table is also saved as target/bench-compose.txt.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn timed(cmd: &mut Command) -> Duration {
    let t = Instant::now();
    run(cmd);
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The package set and `sources.list` lines of images/vm.toml, as the peer needs them.
fn vm_manifest(top: &Path) -> (Vec<String>, Vec<String>) {
    let text = std::fs::read_to_string(top.join("images/vm.toml")).unwrap();
    let v: toml::Table = toml::from_str(&text).unwrap();
    let mut pkgs: Vec<String> = v["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    pkgs.push(v["kernel"].as_str().unwrap().to_string());
    let sources = vec![
        "deb http://deb.debian.org/debian bookworm main".to_string(),
        format!(
            "deb [trusted=yes] file://{} ./",
            top.join("target/deb").display()
        ),
    ];
    (pkgs, sources)
}

/// mmdebstrap and `ostree commit`, with the packages of `cache` put into the root first.
fn by_hand(root: &Path, repo: &Path, cache: &Path, pkgs: &[String], sources: &[String]) {
    let archives = root.join("var/cache/apt/archives");
    std::fs::create_dir_all(archives.join("partial")).unwrap();
    for e in std::fs::read_dir(cache).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "deb") {
            std::fs::hard_link(&p, archives.join(p.file_name().unwrap())).unwrap();
        }
    }
    run(Command::new("mmdebstrap")
        .args(["--mode=root", "--format=directory", "--variant=minbase"])
        .arg(format!("--include={}", pkgs.join(",")))
        .args(["--skip=check/empty", "--skip=download/empty"])
        .arg("--hook-dir=/usr/share/mmdebstrap/hooks/file-mirror-automount")
        .arg("bookworm")
        .arg(root)
        .args(sources));
    // `ostree commit` refuses the device nodes mmdebstrap leaves in /dev.
    run(Command::new("find")
        .arg(root.join("dev"))
        .args(["-mindepth", "1", "-delete"]));
    run(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["commit", "--branch=bench/by-hand"])
        .arg(format!("--tree=dir={}", root.display())));
}

fn main() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap();
    let stratum = PathBuf::from(env!("CARGO_BIN_EXE_stratum"));
    assert!(
        top.join("target/deb/Packages").is_file(),
        "run `make deb` first: images/vm.toml installs Stratum's package"
    );
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let cache = PathBuf::from(
        std::env::var("STRATUM_CACHE")
            .unwrap_or_else(|_| format!("{}/.cache/stratum", std::env::var("HOME").unwrap())),
    )
    .join("debs");
    let work = tempfile::Builder::new()
        .prefix("stratum-bench-compose-")
        .tempdir_in(top.join("target"))
        .unwrap();
    let w = work.path();
    let manifest = top.join("images/vm.toml");
    let compose = |repo: &Path| {
        let mut c = Command::new(&stratum);
        c.args(["compose", "tree"])
            .arg(&manifest)
            .arg("--repo")
            .arg(repo)
            .arg("--cachedir")
            .arg(&cache)
            .arg("--workdir")
            .arg(w)
            .arg("--force-nocache");
        c
    };
    // A first build fills the package cache.
    run(&mut compose(&w.join("warm")));
    let (pkgs, sources) = vm_manifest(&top);

    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..runs {
        let repo = w.join(format!("stratum-{i}"));
        ours.push(timed(&mut compose(&repo)));

        let repo = w.join(format!("hand-{i}"));
        run(Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["init", "--mode=bare"]));
        let root = w.join(format!("hand-root-{i}"));
        let t = Instant::now();
        by_hand(&root, &repo, &cache, &pkgs, &sources);
        theirs.push(t.elapsed());
        let _ = std::fs::remove_dir_all(&root);
        eprintln!(
            "run {}: compose tree {:.1} s, mmdebstrap + ostree commit {:.1} s",
            i + 1,
            ours[i].as_secs_f64(),
            theirs[i].as_secs_f64()
        );
    }
    let (o, t) = (median(ours), median(theirs));
    let table = format!(
        "compose tree images/vm.toml ({} requested packages), median of {runs}:\n\
         stratum compose tree            {:7.1} s\n\
         mmdebstrap + ostree commit      {:7.1} s\n\
         ratio                           {:7.2} (target <= 1.20)\n",
        pkgs.len(),
        o.as_secs_f64(),
        t.as_secs_f64(),
        o.as_secs_f64() / t.as_secs_f64()
    );
    print!("{table}");
    std::fs::write(top.join("target/bench-compose.txt"), table).unwrap();
}
