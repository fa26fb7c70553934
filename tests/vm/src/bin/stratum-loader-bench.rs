//! Bootloader benchmark (not a test): firmware start → kernel start with systemd-boot and with
//! GRUB, on two disks installed from the same commit (same kernel, initramfs and kernel
//! arguments; only `--bootloader` differs), booted alike (OVMF, TCG unless
//! `STRATUM_QEMU_ACCEL=kvm`).
//!
//! Measured on the host: from QEMU's start to the kernel's first console line (`Linux
//! version`, printed at once thanks to `earlycon`). That span holds the firmware, the
//! bootloader (GRUB: its menu timeout of 1 s as installed, reading `/boot` on ext4;
//! systemd-boot: no menu, reading the ESP) and loading the kernel and initramfs. The
//! firmware's part is the same for both: the difference is the bootloader's. Runs alternate
//! which disk boots first. Usage:
//! `cargo run --release -p stratum-vmtests --bin stratum-loader-bench -- [--runs N]` (after
//! `make build deb`; as root).

use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use stratum_vmtests::{median, secs, Project, Qemu, TestDisk, TEST_REF};

const KARGS: &[&str] = &["console=ttyS0", "earlycon=uart8250,io,0x3f8,115200"];
/// The kernel's first line.
const KERNEL_START: &str = "Linux version ";

/// Boots a pristine copy of `disk` once (the guest powers off at the end of the boot);
/// returns firmware start → kernel start in ms.
fn boot(p: &Project, disk: &std::path::Path, label: &str, run: usize) -> Result<f64> {
    let name = format!("loader-bench-{label}-run{run}");
    let dir = p.workdir(&name)?;
    let copy = dir.join("disk.img");
    stratum_vmtests::run(
        std::process::Command::new("cp")
            .arg("--sparse=always")
            .arg(disk)
            .arg(&copy),
    )?;
    let test = TestDisk::create(&dir, "boot_1() { :; }\n", &[])?;
    // Both loaders without Secure Boot: this compares the loaders, not the verification.
    let mut q = Qemu::new(dir.join("console.log"));
    q.boot = stratum_vmtests::Boot::Uefi(stratum_vmtests::Firmware::Plain);
    q.disks = vec![copy, test.image.clone()];
    q.no_reboot = true;
    q.stamp = Some(KERNEL_START.to_string());
    let out = q.run()?;
    ensure!(
        !out.timed_out,
        "{name}: the VM did not finish (console: {})",
        q.console.display()
    );
    let r = test.results(&dir.join("results"))?;
    ensure!(
        r.boots() == 1,
        "{name}: the boot did not reach the scenario (console: {})",
        q.console.display()
    );
    let at = out
        .stamp
        .with_context(|| format!("{name}: no {KERNEL_START:?} on the console"))?;
    Ok(at.as_secs_f64() * 1000.0)
}

fn main() -> Result<()> {
    let mut runs = 3usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs N")?.parse()?,
            "-h" | "--help" => {
                println!("usage: stratum-loader-bench [--runs N]");
                return Ok(());
            }
            _ => bail!("unknown argument {a:?} (usage: stratum-loader-bench [--runs N])"),
        }
    }
    ensure!(runs >= 1, "--runs must be at least 1");
    let p = Project::locate()?;
    let t = Instant::now();
    let grub = p.build_image_with("loader-bench", "1.0", |_| Ok(()), KARGS)?;
    // The same commit from the same repository, installed for systemd-boot.
    let sd_dir = p.workdir("loader-bench-sdboot")?;
    let sd_disk = sd_dir.join("disk.img");
    p.install_disk(
        &grub.repo,
        TEST_REF,
        &sd_disk,
        &sd_dir.join("install"),
        KARGS,
        "systemd-boot",
    )?;
    let (mut g, mut s) = (Vec::new(), Vec::new());
    for run in 1..=runs {
        let order = if run % 2 == 1 {
            ["grub", "systemd-boot"]
        } else {
            ["systemd-boot", "grub"]
        };
        for label in order {
            let (disk, into) = if label == "grub" {
                (&grub.disk, &mut g)
            } else {
                (&sd_disk, &mut s)
            };
            let ms = boot(&p, disk, label, run)?;
            eprintln!("[{label} run {run}] firmware start → kernel start: {ms:.0} ms");
            into.push(ms);
        }
    }
    let accel = std::env::var("STRATUM_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
    let (gm, sm) = (median(g), median(s));
    println!(
        "\nBootloader benchmark: QEMU q35 -accel {accel}, OVMF, one commit installed twice, \
         median of {runs} boot(s)"
    );
    println!("| bootloader | firmware start → kernel start | × GRUB |");
    println!("|---|---|---|");
    println!("| GRUB 2.06 (menu timeout 1 s) | {gm:.0} ms | 1.00 |");
    println!(
        "| systemd-boot 252 (no menu) | {sm:.0} ms | {:.2} |",
        sm / gm
    );
    eprintln!("\ndone in {:.0} s", secs(t));
    Ok(())
}
