//! Benchmark (not a test): time a native `--generic` build on the cached Debian root against
//! (a) the floor, streaming the same file set through `cpio -o -H newc | zstd -3`, and (b)
//! dracut for the same kernel, when it is installed. Median of `BENCH_RUNS` (default 5) runs;
//! prints the ratios.
//!
//! `cargo bench -p stratum-initramfs --bench generic` (root from `STRATUM_TEST_ROOTFS` or
//! `~/.cache/stratum/rootfs-*`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stratum_initramfs::{build_spec, BuildOptions, BuildSpec, Mode};

fn real_root() -> Option<(PathBuf, String)> {
    let roots: Vec<PathBuf> = match std::env::var_os("STRATUM_TEST_ROOTFS") {
        Some(r) => vec![r.into()],
        None => std::fs::read_dir("/root/.cache/stratum")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let n = p.file_name().unwrap_or_default().to_string_lossy();
                n.starts_with("rootfs-") && !n.ends_with(".tmp") && p.is_dir()
            })
            .collect(),
    };
    roots.into_iter().find_map(|root| {
        let v = stratum_initramfs::modules::kernel_versions(&root).ok()?;
        Some((root, v.into_iter().next()?))
    })
}

fn median(mut f: impl FnMut() -> Duration, runs: usize) -> Duration {
    let mut t: Vec<Duration> = (0..runs).map(|_| f()).collect();
    t.sort();
    t[runs / 2]
}

fn sh(cmd: &str) -> Duration {
    let start = Instant::now();
    let st = Command::new("sh")
        .args(["-c", cmd])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("running sh");
    assert!(st.success(), "failed: {cmd}");
    start.elapsed()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a list
    }
    let Some((root, kver)) = real_root() else {
        eprintln!("no cached Debian root (set STRATUM_TEST_ROOTFS); nothing to measure");
        return;
    };
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let t = tempfile::tempdir().expect("tempdir");
    let dir = t.path();
    let init = dir.join("init");
    std::fs::write(&init, vec![0u8; 2 << 20]).expect("init stand-in");
    let mut opts = BuildOptions::new(&root, &kver);
    opts.init = Some(init);
    let mut spec = BuildSpec::from(opts);
    spec.mode = Mode::Generic;
    let out = dir.join("native.img");
    let mut report = None;
    let native = median(
        || {
            let s = Instant::now();
            report = Some(build_spec(&spec, &out).expect("native build"));
            s.elapsed()
        },
        runs,
    );
    let report = report.expect("a run");
    println!(
        "root {} kver {kver}: generic image {} modules, {} bytes ({} uncompressed)",
        root.display(),
        report.modules.len(),
        report.compressed_size,
        report.uncompressed_size
    );

    // The floor: the same file set, already on disk, through cpio and zstd.
    let stage = dir.join("stage");
    std::fs::create_dir(&stage).expect("stage");
    let raw = dir.join("native.cpio");
    sh(&format!(
        "zstd -dq -o {raw} {out} && cd {stage} && cpio -idm --quiet < {raw}",
        raw = raw.display(),
        out = out.display(),
        stage = stage.display()
    ));
    let floor_out = dir.join("floor.img");
    let floor_cmd = format!(
        "cd {} && find . | LC_ALL=C sort | cpio -o -H newc --quiet | zstd -3 -q -f -o {}",
        stage.display(),
        floor_out.display()
    );
    let floor = median(|| sh(&floor_cmd), runs);
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    println!(
        "native --generic : {:>8.1} ms  {} bytes",
        ms(native),
        report.compressed_size
    );
    println!(
        "cpio | zstd -3   : {:>8.1} ms  {} bytes  (native / floor = {:.2})",
        ms(floor),
        size(&floor_out),
        ms(native) / ms(floor)
    );

    // dracut runs the host's dracut modules; --kmoddir takes the kernel modules from the root
    // (--sysroot would need dracut installed inside the root, which the Debian root lacks).
    let have_dracut = std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join("dracut").is_file()));
    if !have_dracut {
        println!("dracut            : not installed (apt-get install dracut-core), skipped");
        return;
    }
    let dracut_out = dir.join("dracut.img");
    let kmoddir = root.join("usr/lib/modules").join(&kver);
    let dracut_cmd = format!(
        "dracut --force --quiet --no-hostonly --kver {kver} --kmoddir {} --compress 'zstd -3' {}",
        kmoddir.display(),
        dracut_out.display()
    );
    let dracut = median(|| sh(&dracut_cmd), runs);
    println!(
        "dracut --no-hostonly: {:>8.1} ms  {} bytes  (dracut / native = {:.1})",
        ms(dracut),
        size(&dracut_out),
        ms(dracut) / ms(native)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
