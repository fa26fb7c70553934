//! `make bench`: `stratum deploy` against `ostree admin deploy` of the same commit into
//! equivalent sysroots (both writing their bootloader entries), median of N pairs, plus
//! `stratum rollback` and a no-op `stratum upgrade` beside a deploy.
//!
//! Uses the Debian root cached by the VM tests (images/build-root.sh) and the static
//! prepare-root from `make build`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
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

fn chattr_rm(p: &Path) {
    let _ = Command::new("chattr").arg("-R").arg("-i").arg(p).output();
    let _ = std::fs::remove_dir_all(p);
}

fn main() {
    let root_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let stratum = PathBuf::from(env!("CARGO_BIN_EXE_stratum"));
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let cache = std::env::var("STRATUM_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/stratum", std::env::var("HOME").unwrap()));
    let out = Command::new("bash")
        .arg(root_dir.join("images/build-root.sh"))
        .arg(&stratum)
        .arg(&cache)
        .output()
        .unwrap();
    assert!(out.status.success(), "building the Debian root");
    let debian = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    let prepare_root =
        root_dir.join("target/x86_64-unknown-linux-gnu/release/stratum-prepare-root");
    assert!(prepare_root.is_file(), "run `make build` first");

    let work = tempfile::Builder::new()
        .prefix("stratum-bench-")
        .tempdir_in(root_dir.join("target"))
        .unwrap();
    let w = work.path();
    let repo = w.join("repo");
    run(Command::new(&stratum)
        .args(["compose", "rootfs"])
        .arg(&debian)
        .arg("--repo")
        .arg(&repo)
        .args(["--ref", "bench/os", "--version", "1"])
        .arg("--prepare-root")
        .arg(&prepare_root));
    let csum = String::from_utf8(
        Command::new("ostree")
            .args(["rev-parse", "--repo"])
            .arg(&repo)
            .arg("bench/os")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let csum = csum.trim().to_string();

    let (mut ours, mut theirs, mut rollbacks, mut noops) = (vec![], vec![], vec![], vec![]);
    let mut kargs = vec![];
    for i in 0..runs {
        // Stratum: a sysroot with the commit deployed once, then the measured second deploy.
        let s = w.join(format!("s{i}"));
        run(Command::new(&stratum)
            .args([
                "install",
                "to-filesystem",
                "--ref",
                "bench/os",
                "--karg",
                "rw",
                "--repo",
            ])
            .arg(&repo)
            .arg(&s));
        ours.push(timed(
            Command::new(&stratum)
                .arg("--sysroot")
                .arg(&s)
                .args(["deploy", &csum, "--apply-now"]),
        ));
        kargs.push(timed(
            Command::new(&stratum)
                .arg("--sysroot")
                .arg(&s)
                .args(["kargs", "--append", "x=1"]),
        ));
        rollbacks.push(timed(
            Command::new(&stratum)
                .arg("--sysroot")
                .arg(&s)
                .args(["rollback"]),
        ));
        let t = Instant::now();
        let st = Command::new(&stratum)
            .arg("--sysroot")
            .arg(&s)
            .args(["upgrade", "--apply-now"])
            .output()
            .unwrap();
        noops.push(t.elapsed());
        assert!(st.status.success());
        chattr_rm(&s);

        // OSTree: the same, with `ostree admin`.
        let o = w.join(format!("o{i}"));
        std::fs::create_dir_all(&o).unwrap();
        run(Command::new("ostree").args(["admin", "init-fs"]).arg(&o));
        run(Command::new("ostree")
            .args(["admin", "os-init", "default", "--sysroot"])
            .arg(&o));
        run(Command::new("ostree")
            .args(["pull-local", "--repo"])
            .arg(o.join("ostree/repo"))
            .arg(&repo)
            .arg("bench/os"));
        run(Command::new("ostree")
            .args(["admin", "deploy", "--os=default", "--karg=rw", "--sysroot"])
            .arg(&o)
            .arg(&csum));
        theirs.push(timed(
            Command::new("ostree")
                .args(["admin", "deploy", "--os=default", "--sysroot"])
                .arg(&o)
                .arg(&csum),
        ));
        chattr_rm(&o);
    }
    let (m_ours, m_theirs) = (median(ours), median(theirs));
    println!("deploy (same commit, second deployment, boot entries written), median of {runs}:");
    println!(
        "  stratum deploy        {:>8.1} ms",
        m_ours.as_secs_f64() * 1e3
    );
    println!(
        "  ostree admin deploy   {:>8.1} ms",
        m_theirs.as_secs_f64() * 1e3
    );
    println!(
        "  ratio stratum/ostree  {:>8.2}   (target <= 1.0)",
        m_ours.as_secs_f64() / m_theirs.as_secs_f64()
    );
    println!("boot-set-only operations beside the deploy:");
    let m_kargs = median(kargs);
    println!(
        "  stratum kargs --append x=1 {:>8.1} ms   ratio kargs/deploy {:.3}   (target <= 0.1)",
        m_kargs.as_secs_f64() * 1e3,
        m_kargs.as_secs_f64() / m_ours.as_secs_f64()
    );
    println!(
        "  stratum rollback      {:>8.1} ms",
        median(rollbacks).as_secs_f64() * 1e3
    );
    println!(
        "  stratum upgrade no-op {:>8.1} ms",
        median(noops).as_secs_f64() * 1e3
    );
}
