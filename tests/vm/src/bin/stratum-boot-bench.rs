//! Boot-time benchmark (not a test): the native Stratum image against a "real OSTree" peer
//! image whose initramfs is built by Debian's dracut with Debian's own `ostree-prepare-root`
//! module (package `ostree-boot`, `dracut --add ostree`). Both are composed and installed by
//! `stratum` (the on-disk layout is OSTree's) and booted the same way in QEMU (OVMF + GRUB,
//! TCG unless `STRATUM_QEMU_ACCEL=kvm`, `console=ttyS0`, virtio disks with `cache=unsafe` so that
//! guest flushes do not wait for the host's writeback of the freshly copied disk).
//!
//! Measured in the guest, all on CLOCK_MONOTONIC, i.e. from kernel start (firmware and GRUB
//! excluded), by a test-disk scenario at the end of the boot:
//! - switch_root: `UserspaceTimestampMonotonic` of the booted systemd (it starts right after
//!   switch_root, for both kinds of initramfs); for the native image also
//!   `/run/stratum/boot.json` `timings_ms.since_kernel_start_ms` (prepare-root exits into the
//!   switch_root).
//! - multi-user: `ActiveEnterTimestampMonotonic` of `multi-user.target`.
//! - the `systemd-analyze time` split: kernel = `InitRDTimestampMonotonic` (or userspace when
//!   there is no systemd in the initramfs), initrd = userspace − initrd start. These are the
//!   properties `systemd-analyze time` itself reads; the command cannot run to completion
//!   here because the scenario unit is part of the boot transaction, so the boot is not
//!   "finished" while it runs.
//!
//! Each run boots a pristine copy of the disk twice: boot 1 is the first boot, boot 2 the
//! next one, after a power cycle (a new QEMU process on the same disks). Usage:
//! `cargo run --release -p stratum-vmtests --bin stratum-boot-bench -- [--runs N]`
//! (after `make build`; as root).

use std::fs;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use stratum_vmtests::{
    kernel_version, median, remove_tree, run_dracut, secs, Image, Project, Qemu, TestDisk, TEST_REF,
};

const KARGS: &[&str] = &["console=ttyS0"];

const SCENARIO: &str = r#"
measure() {
    local n=$1
    result userspace_us "$(systemctl show -P UserspaceTimestampMonotonic)"
    result initrd_us "$(systemctl show -P InitRDTimestampMonotonic)"
    result multi_user_us "$(systemctl show -P ActiveEnterTimestampMonotonic multi-user.target)"
    result analyze "$(systemd-analyze time 2>&1)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    result root "$(findmnt -no SOURCE /)"
    result cmdline "$(cat /proc/cmdline)"
    [ -e /run/ostree-booted ] && result ostree_booted yes
    [ -e /run/stratum/boot.json ] && cp /run/stratum/boot.json "$out/boot-$n.boot_json"
    journalctl -b -o short-monotonic --no-pager > "$out/boot-$n.journal" 2>&1
}
boot_1() { measure 1; request_reboot; }
boot_2() { measure 2; }
"#;

/// One boot's figures, in ms since kernel start.
#[derive(Debug, Clone, Default)]
struct Sample {
    switch_root: f64,
    initrd_start: Option<f64>,
    multi_user: f64,
    prepare_root_done: Option<f64>,
}

#[derive(Debug, Default)]
struct Series {
    first: Vec<Sample>,
    second: Vec<Sample>,
}

/// The peer: Debian root + dracut + ostree-boot (+ Stratum, for the scenario unit and the
/// same userspace as the native image), dracut initramfs with OSTree's module.
fn build_ostree_image(p: &Project) -> Result<Image> {
    let name = "bench-ostree";
    let t = Instant::now();
    let dir = p.workdir(name)?;
    eprintln!(
        "[{name}] preparing the guest root (Debian bookworm + dracut + ostree-boot + Stratum)"
    );
    let base = p.debian_root_from("vm-bench")?;
    let root = p.guest_root_from(&base, &dir, |_| Ok(()))?;
    ensure!(
        root.join("usr/lib/dracut/modules.d")
            .read_dir()?
            .filter_map(|e| e.ok())
            .any(|e| e.file_name().to_string_lossy().ends_with("ostree")),
        "no ostree dracut module in the root (is ostree-boot installed?)"
    );
    let kver = kernel_version(&root)?;
    eprintln!("[{name}] dracut --no-hostonly --add ostree --kver {kver} (inside the root)");
    let td = Instant::now();
    let initramfs = run_dracut(&root, &kver, "ostree", &dir.join("dracut.log"))?;
    eprintln!(
        "[{name}] dracut built the initramfs in {:.1} s ({} KiB)",
        secs(td),
        fs::metadata(&initramfs)?.len() / 1024
    );
    let repo = dir.join("repo");
    eprintln!("[{name}] stratum compose rootfs --keep-initramfs → {TEST_REF}");
    let commit = p.compose_with(&root, &repo, TEST_REF, "1.0", &["--keep-initramfs"])?;
    remove_tree(&root)?;
    let disk = dir.join("disk.img");
    let stage = dir.join("install");
    eprintln!("[{name}] stratum install to-disk → {}", disk.display());
    let install = p.install_disk(&repo, TEST_REF, &disk, &stage, KARGS, "grub")?;
    eprintln!("[{name}] image ready in {:.0} s: commit {commit}", secs(t));
    Ok(Image {
        dir,
        repo,
        refname: TEST_REF.to_string(),
        commit,
        disk,
        sysroot: stage.join("sysroot"),
        install,
        bootloader: "grub".to_string(),
        firmware: stratum_vmtests::Firmware::SecureBoot,
    })
}

/// Other QEMU machines on the host (started before ours): they share the CPUs under TCG and
/// skew every figure, so the benchmark says so.
fn foreign_qemus() -> Vec<u32> {
    let mut pids = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmd = fs::read(e.path().join("cmdline")).unwrap_or_default();
        if cmd
            .split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"qemu-system-x86_64"))
        {
            pids.push(pid);
        }
    }
    pids
}

/// Boots a pristine copy of `img` (two boots) and reads the figures back.
fn boot(
    p: &Project,
    img: &Image,
    label: &str,
    run: usize,
    native: bool,
) -> Result<(Sample, Sample)> {
    let name = format!("bench-{label}-run{run}");
    let others = foreign_qemus();
    if !others.is_empty() {
        eprintln!("[{name}] WARNING: other QEMU processes are running ({others:?}): figures will be skewed");
    }
    let dir = p.workdir(&name)?;
    let disk = img.copy_disk(&dir.join("disk.img"))?;
    let test = TestDisk::create(&dir, SCENARIO, &[])?;
    // Boot 1 ends with the guest's reboot, which ends QEMU (-no-reboot); boot 2 is a new QEMU
    // process on the same disks, like a power cycle. A reset inside one TCG process is not a
    // fair second boot: after it the guest's clock and the initramfs unpacking run several
    // times slower (a 22 MiB initramfs took 16 s instead of 1.3 s to unpack).
    let mut q = Qemu::new(dir.join("console.log"));
    q.disks = vec![disk, test.image.clone()];
    q.no_reboot = true;
    let first = q.run()?;
    q.console = dir.join("console-2.log");
    let second = q.run()?;
    let out = stratum_vmtests::QemuOutcome {
        console: first.console + &second.console,
        timed_out: first.timed_out || second.timed_out,
        elapsed: first.elapsed + second.elapsed,
        cut: None,
        stamp: first.stamp,
    };
    let keep = || {
        let log = p.artifacts.join(format!("{name}.console.log"));
        let _ = fs::write(&log, &out.console);
        log
    };
    if out.timed_out {
        bail!(
            "{name}: the VM did not finish within its timeout (console: {})",
            keep().display()
        );
    }
    let r = test.results(&dir.join("results"))?;
    if r.boots() != 2 {
        bail!(
            "{name}: the scenario ran {} times, expected 2 (console: {})",
            r.boots(),
            keep().display()
        );
    }
    eprintln!(
        "[{name}] two boots in {:.0} s; results in {}",
        out.elapsed.as_secs_f64(),
        r.dir.display()
    );
    let sample = |n: u32| -> Result<Sample> {
        let us = |k: &str| -> Result<f64> {
            let v = r.get(n, k);
            let v: u64 = v.parse().with_context(|| format!("boot {n} {k}: {v:?}"))?;
            Ok(v as f64 / 1000.0)
        };
        let failed = r.get(n, "failed_units");
        if !failed.is_empty() {
            eprintln!(
                "[{name}] boot {n}: failed units: {}",
                failed.replace('\n', "; ")
            );
        }
        ensure!(
            r.get(n, "ostree_booted") == "yes",
            "{name} boot {n}: /run/ostree-booted missing"
        );
        ensure!(
            r.get(n, "root")
                .contains(&format!("/ostree/deploy/default/deploy/{}.0", img.commit)),
            "{name} boot {n}: / is {:?}, not the deployment",
            r.get(n, "root")
        );
        let initrd = us("initrd_us")?;
        let prepare_root_done = if native {
            let bj: serde_json::Value =
                serde_json::from_str(&r.get(n, "boot_json")).context("boot.json")?;
            bj["timings_ms"]["since_kernel_start_ms"].as_f64()
        } else {
            None
        };
        Ok(Sample {
            switch_root: us("userspace_us")?,
            initrd_start: (initrd > 0.0).then_some(initrd),
            multi_user: us("multi_user_us")?,
            prepare_root_done,
        })
    };
    Ok((sample(1)?, sample(2)?))
}

fn med(s: &[Sample], f: impl Fn(&Sample) -> Option<f64>) -> Option<f64> {
    let v: Vec<f64> = s.iter().filter_map(f).collect();
    (!v.is_empty()).then(|| median(v))
}

fn fmt_ms(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.2} s", v / 1000.0))
}

fn table(title: &str, native: &[Sample], ostree: &[Sample]) {
    println!(
        "\n{title} (median of {} boot(s) each; ms since kernel start, CLOCK_MONOTONIC)",
        native.len()
    );
    println!(
        "{:<44} {:>10} {:>10} {:>7} {:>8}",
        "", "native", "ostree", "ratio", "target"
    );
    let row = |what: &str, f: &dyn Fn(&Sample) -> Option<f64>, target: Option<f64>| {
        let (a, b) = (med(native, f), med(ostree, f));
        let ratio = match (a, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.3}", a / b),
            _ => "-".into(),
        };
        let verdict = match (a, b, target) {
            (Some(a), Some(b), Some(t)) => {
                format!("≤{t} {}", if a / b <= t { "ok" } else { "MISS" })
            }
            _ => String::new(),
        };
        println!(
            "{what:<44} {:>10} {:>10} {:>7} {:>8}",
            fmt_ms(a),
            fmt_ms(b),
            ratio,
            verdict
        );
    };
    row(
        "kernel start → switch_root (userspace start)",
        &|s| Some(s.switch_root),
        Some(0.2),
    );
    row(
        "  of which systemd in the initramfs",
        &|s| s.initrd_start.map(|i| s.switch_root - i),
        None,
    );
    row(
        "  native: prepare-root done (boot.json)",
        &|s| s.prepare_root_done,
        None,
    );
    row(
        "kernel start → multi-user.target",
        &|s| Some(s.multi_user),
        Some(0.5),
    );
    row(
        "  of which after switch_root",
        &|s| Some(s.multi_user - s.switch_root),
        None,
    );
}

fn main() -> Result<()> {
    let mut runs = 1usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "-h" | "--help" => {
                println!("usage: stratum-boot-bench [--runs N]");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?} (usage: stratum-boot-bench [--runs N])"),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    let p = Project::locate()?;
    ensure!(
        p.stratum().exists(),
        "{} is missing: run `make build` first",
        p.stratum().display()
    );
    let t = Instant::now();
    let native = p.build_image_with("bench-native", "1.0", |_| Ok(()), KARGS)?;
    let ostree = build_ostree_image(&p)?;
    let (mut n, mut o) = (Series::default(), Series::default());
    for run in 1..=runs {
        // Alternate which image boots first, so drift on a shared host hits both alike.
        let order: [(&str, bool); 2] = if run % 2 == 1 {
            [("native", true), ("ostree", false)]
        } else {
            [("ostree", false), ("native", true)]
        };
        for (label, is_native) in order {
            let img = if is_native { &native } else { &ostree };
            let (a, b) = boot(&p, img, label, run, is_native)?;
            eprintln!("[{label} run {run}] boot 1: switch_root {:.0} ms, multi-user {:.0} ms; boot 2: {:.0} / {:.0} ms",
                a.switch_root, a.multi_user, b.switch_root, b.multi_user);
            let s = if is_native { &mut n } else { &mut o };
            s.first.push(a);
            s.second.push(b);
        }
    }
    let accel = std::env::var("STRATUM_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    println!(
        "\nStratum boot benchmark: QEMU q35 -accel {accel} -smp 2 -m 1024, virtio cache=unsafe, OVMF + GRUB, {}",
        KARGS.join(" ")
    );
    println!("native: stratum-initramfs (/init = stratum-prepare-root); ostree: dracut + Debian ostree-boot (ostree-prepare-root.service)");
    table("First boot of a pristine disk", &n.first, &o.first);
    table(
        "Second boot (the same disk after a power cycle)",
        &n.second,
        &o.second,
    );
    eprintln!("\ndone in {:.0} s", secs(t));
    Ok(())
}
