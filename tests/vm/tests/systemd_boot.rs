//! VM scenarios of a disk installed with `--bootloader systemd-boot`, on Debian 13 (trixie)
//! with Secure Boot enforced (OVMF with the Microsoft keys, TCG): the firmware starts shim,
//! shim Debian's signed systemd-boot 257, which boots the entry that sorts first, counts
//! tries in entry file names, and has shim verify the kernel.
//!
//! The images use `boot-tries = 2` and quick reboots (`panic=3`, `stratum.reboot-delay=2`),
//! as the GRUB fallback scenarios do.

use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{check, trial, Image, Project, QemuOutcome, Results};

const TRIES: usize = 2;
const KARGS: &[&str] = &["console=ttyS0", "panic=3", "stratum.reboot-delay=2"];

static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();

fn project() -> Project {
    Project::locate()
        .expect("locating the project")
        .on("vm-trixie")
}

/// The v1 image on systemd-boot, built once; each scenario composes its next versions into
/// a repository of its own (`name`).
fn image(name: &str) -> Result<Image> {
    IMAGE
        .get_or_init(|| {
            project()
                .build_trial_image("systemd-boot", "sdboot", TRIES, KARGS)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building the test image: {e}"))?
        .fork(&project(), name)
}

/// Boots `img`'s disk with `scenario`; the repository travels on the test disk.
fn boot(img: &Image, name: &str, scenario: &str) -> Result<(QemuOutcome, Results)> {
    let (out, test, dir) = img.boot_with_repo(&project(), name, &format!("{HELPERS}{scenario}"))?;
    let results = test.results(&dir.join("results"))?;
    Ok((out, results))
}

/// `entries`: the ESP's entry files; `count_path`: the entry systemd-boot counted this boot
/// (its `LoaderBootCountPath` EFI variable, UTF-16 after 4 bytes of attributes).
const HELPERS: &str = r#"
entries() { ls /boot/efi/loader/entries | tr '\n' ' '; }
count_path() {
    f=/sys/firmware/efi/efivars/LoaderBootCountPath-4a67b082-0a4c-41cf-b6c7-440b29bb8c4f
    # efivarfs may report a size of 0: read the file as a stream.
    if [ -e "$f" ]; then cat "$f" | tail -c +5 | tr -d '\0'; else echo none; fi
}
"#;

/// Kernels started during the run (each boot, failed ones included, prints this once).
fn kernel_boots(console: &str) -> usize {
    console.matches("Linux version ").count()
}

/// First boot, a counted and blessed upgrade, a rollback, kernel arguments, then the two
/// kinds of failed update: v3's initramfs cannot boot (the kernel panics), v4's required
/// health check fails (boot-complete reboots). Each time systemd-boot spends the tries and
/// boots the previous entry by itself.
const LIFECYCLE: &str = r#"
boot_1() {
    result booted "$(booted)"
    result entries "$(entries)"
    result count_path "$(count_path)"
    stratum status -v > "$out/boot-1.status_text"
    # v2 by version: the ref's head is v4.
    stratum deploy --version 2.0 --apply-now; result rc $?
    request_reboot
}
boot_2() {
    result booted "$(booted)"
    result count_path "$(count_path)"
    stratum boot-complete --status --json > "$out/boot-2.trial"
    result entries "$(entries)"
    stratum rollback; result rc $?
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    result entries "$(entries)"
    stratum kargs --append stratumtest=sdboot; result rc $?
    request_reboot
}
boot_4() {
    result booted "$(booted)"
    result cmdline "$(cat /proc/cmdline)"
    stratum deploy --version 3.0 --apply-now; result rc $?
    request_reboot
}
boot_5() {
    result booted "$(booted)"
    result entries "$(entries)"
    stratum status > "$out/boot-5.status_text"
    stratum status --json > "$out/boot-5.status"
    stratum upgrade --apply-now; result upgrade_rc $?
    request_reboot
}
boot_6() {
    result booted "$(booted)"
    result entries "$(entries)"
    stratum status > "$out/boot-6.status_text"
    stratum status --json > "$out/boot-6.status"
}
"#;

/// Fails unless boot `n` reports the fallback from `failed` to `running` and the ESP holds
/// the boot set written after it: a new generation, nothing on trial.
fn expect_fallback(r: &Results, n: u32, failed: &str, running: &str) -> Result<()> {
    r.expect_fallback(n, failed, running, TRIES)?;
    let entries = r.get(n, "entries");
    ensure!(
        !entries.contains('+') && entries.split(' ').count() == 2,
        "boot {n}: the ESP after the fallback: {entries}"
    );
    Ok(())
}

/// systemd-boot's whole life on a Secure Boot machine (shim → Debian's signed systemd-boot,
/// Debian 13): upgrade and bless, rollback, kargs, and two failed updates that fall back by
/// systemd-boot's own counting. Boots: one per step and per try.
fn lifecycle() -> Result<()> {
    let p = project();
    let img = image("sdboot-lifecycle")?;
    let v1 = img.commit.clone();
    let v2 = img.compose_update(&p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
    let (v3, v4) = img.compose_failing_updates(&p, "3.0", "4.0")?;
    let (out, r) = boot(&img, "sdboot-lifecycle-run", LIFECYCLE)?;
    check("sdboot-lifecycle", &out, || {
        ensure!(
            r.boots() == 6,
            "expected 6 scenario boots, got {}",
            r.boots()
        );
        // First boot: one entry, not counted.
        r.expect(1, "booted", &v1)?;
        r.expect(1, "entries", "stratum-1-0.conf")?;
        r.expect(1, "count_path", "none")?;
        let text = r.get(1, "status_text");
        ensure!(
            text.contains("Bootloader: systemd-boot"),
            "status -v does not name the bootloader:\n{text}"
        );
        r.expect_success(1, "rc", "log", "deploy --version 2.0")?;
        // v2 on trial: systemd-boot counted the try in the file name, boot-complete blessed
        // it by renaming the file without the counter.
        r.expect(2, "booted", &v2)?;
        ensure!(
            r.get(2, "count_path").ends_with("stratum-2-0+1-1.conf"),
            "systemd-boot did not count v2's first try: LoaderBootCountPath {:?}",
            r.get(2, "count_path")
        );
        let trial: serde_json::Value =
            serde_json::from_str(&r.get(2, "trial")).context("trial json")?;
        ensure!(
            trial["blessed"] == true,
            "v2 not blessed after its checks: {trial}"
        );
        r.expect(2, "entries", "stratum-2-0.conf stratum-2-1.conf")?;
        r.expect_success(2, "rc", "log", "rollback")?;
        // The rollback: v1 is the default of a new generation, not counted (blessed before).
        r.expect(3, "booted", &v1)?;
        r.expect(3, "entries", "stratum-3-0.conf stratum-3-1.conf")?;
        r.expect_success(3, "rc", "log", "kargs --append")?;
        r.expect(4, "booted", &v1)?;
        ensure!(
            r.get(4, "cmdline")
                .split(' ')
                .any(|a| a == "stratumtest=sdboot"),
            "the appended argument is not on the kernel command line: {}",
            r.get(4, "cmdline")
        );
        r.expect_success(4, "rc", "log", "deploy --version 3.0")?;
        // v3 panicked TRIES times; systemd-boot then booted the previous entry, v1.
        expect_fallback(&r, 5, &v3, &v1)?;
        r.expect_success(5, "upgrade_rc", "log", "upgrade to v4")?;
        // v4 failed its required check TRIES times (each a reboot); v1 again.
        expect_fallback(&r, 6, &v4, &v1)?;
        let kernels = kernel_boots(&out.console);
        ensure!(
            kernels == 6 + 2 * TRIES,
            "{kernels} kernels started, expected the 6 scenario boots and {TRIES} each of v3 \
             and v4"
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![trial(
        "systemd_boot::upgrade_bless_rollback_kargs_and_two_fallbacks",
        lifecycle,
    )];
    libtest_mimic::run(&args, trials).exit();
}
