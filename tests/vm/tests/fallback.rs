//! VM scenarios of boot counting and automatic fallback (GRUB 2.06 on OVMF, TCG).
//!
//! The images use `boot-tries = 2` and quick reboots (`panic=3`, `stratum.reboot-delay=2`) to
//! keep the number of boots small; the logic is the same for any count.

use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{check, trial, Image, Project, QemuOutcome, TestDisk};

const TRIES: usize = 2;
const KARGS: &[&str] = &["console=ttyS0", "panic=3", "stratum.reboot-delay=2"];

fn project() -> Project {
    Project::locate().expect("locating the project")
}

static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();

/// A v1 image configured for two tries, built once; each scenario composes its v2 into a
/// repository of its own (`name`).
fn image(name: &str) -> Result<Image> {
    IMAGE
        .get_or_init(|| {
            project()
                .build_trial_image("grub", "fallback", TRIES, KARGS)
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building the test image: {e}"))?
        .fork(&project(), name)
}

/// Boots `img`'s disk with the scenario; the update repository travels on the test disk.
fn boot(
    img: &Image,
    name: &str,
    scenario: &str,
) -> Result<(QemuOutcome, TestDisk, std::path::PathBuf)> {
    img.boot_with_repo(&project(), name, scenario)
}

/// How many times GRUB booted the entry titled with `version` (its menu title ends in
/// "<version> (ostree:N)").
fn grub_boots(console: &str, version: &str) -> usize {
    // GRUB draws its menu and the "Booting `TITLE'" line on one terminal line: take the title.
    console
        .split("Booting `")
        .skip(1)
        .filter_map(|rest| rest.split('\'').next())
        .filter(|title| title.contains(&format!(" {version} (ostree:")))
        .count()
}

const GOOD: &str = r#"
boot_1() { result booted "$(booted)"; stratum upgrade --apply-now; result rc $?; request_reboot; }
boot_2() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-2.trial"
    stratum status --json > "$out/boot-2.status"
    # A garbage grubenv must not stop the default entry from booting.
    head -c 1024 /dev/urandom > /boot/grubenv
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    result grubenv_head "$(head -c 24 /boot/grubenv)"
    stratum boot-complete --status --json > "$out/boot-3.trial"
}
"#;

fn good_update_is_blessed() -> Result<()> {
    let p = project();
    let img = image("fallback-good")?;
    let v1 = img.commit.clone();
    let v2 = img.compose_update(&p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
    let (out, test, dir) = boot(&img, "fallback-good-run", GOOD)?;
    check("fallback-good", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 3,
            "expected 3 scenario boots, got {}",
            r.boots()
        );
        ensure!(
            r.get(1, "booted") == v1 && r.get(1, "rc") == "0",
            "upgrade failed: {}",
            r.get(1, "log")
        );
        ensure!(r.get(2, "booted") == v2, "v2 did not boot");
        let trial: serde_json::Value =
            serde_json::from_str(&r.get(2, "trial")).context("trial json")?;
        ensure!(
            trial["blessed"] == true && trial["trial"].is_null(),
            "v2 not blessed after its checks: {trial}"
        );
        ensure!(
            r.get(3, "booted") == v2,
            "after blessing (and a garbage grubenv) v2 must stay the default; booted {}",
            r.get(3, "booted")
        );
        ensure!(
            r.get(3, "grubenv_head") == "# GRUB Environment Block",
            "the garbage grubenv was not repaired"
        );
        ensure!(
            grub_boots(&out.console, "2.0") == 2,
            "v2 booted {} times, expected 2",
            grub_boots(&out.console, "2.0")
        );
        Ok(())
    })
}

const FAILING: &str = r#"
boot_1() { result booted "$(booted)"; stratum upgrade --apply-now; result rc $?; request_reboot; }
boot_2() {
    result booted "$(booted)"
    stratum status > "$out/boot-2.status_text"
    stratum status --json > "$out/boot-2.status"
    request_reboot
}
boot_3() { result booted "$(booted)"; stratum status --json > "$out/boot-3.status"; }
"#;

/// v2 fails (a required health check, or it cannot boot at all): after exactly TRIES boots of
/// v2, v1 boots, status reports the fallback, and the next reboot stays on v1.
fn falls_back(name: &str, v2_files: &[(&str, &[u8], u32)], compose_args: &[&str]) -> Result<()> {
    let p = project();
    let img = image(name)?;
    let v1 = img.commit.clone();
    // An unbootable initramfs goes where the distribution keeps one, for the image's kernel.
    let (kernel, _) = img.boot_files()?;
    let kver = kernel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .trim_start_matches("vmlinuz-")
        .to_string();
    let initrd_path = format!("boot/initrd.img-{kver}");
    let files: Vec<(&str, &[u8], u32)> = v2_files
        .iter()
        .map(|(p, c, m)| {
            (
                if *p == "@initrd" {
                    initrd_path.as_str()
                } else {
                    *p
                },
                *c,
                *m,
            )
        })
        .collect();
    let v2 = img.compose_update_with(&p, "2.0", &files, compose_args)?;
    let (out, test, dir) = boot(&img, &format!("{name}-run"), FAILING)?;
    check(name, &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.get(1, "booted") == v1 && r.get(1, "rc") == "0",
            "upgrade failed: {}",
            r.get(1, "log")
        );
        let v2_boots = grub_boots(&out.console, "2.0");
        ensure!(
            v2_boots == TRIES,
            "v2 was booted {v2_boots} times, expected exactly {TRIES}"
        );
        ensure!(
            r.get(2, "booted") == v1,
            "after the fallback v1 should run, booted {:?}",
            r.get(2, "booted")
        );
        let text = r.get(2, "status_text");
        ensure!(
            text.contains("Fell back from")
                && text.contains(&format!("after {TRIES} failed boots")),
            "status does not report the fallback:\n{text}"
        );
        let st: serde_json::Value = serde_json::from_str(&r.get(2, "status"))?;
        ensure!(
            st["fallback"]["from"]
                .as_str()
                .is_some_and(|f| f.contains(&v2)),
            "status --json fallback: {st}"
        );
        ensure!(
            st["deployments"][0]["checksum"] == v1.as_str(),
            "v1 is not the default after the fallback: {st}"
        );
        ensure!(
            st["deployments"][1]["checksum"] == v2.as_str()
                && st["deployments"][1]["failed"] == true,
            "the failed v2 is not kept and marked: {st}"
        );
        ensure!(
            r.get(3, "booted") == v1,
            "the reboot after the fallback left v1"
        );
        ensure!(
            r.boots() == 3,
            "expected 3 scenario boots, got {}",
            r.boots()
        );
        Ok(())
    })
}

const ROLLBACK_DURING_TRIAL: &str = r#"
boot_1() { result booted "$(booted)"; stratum upgrade --apply-now; result rc $?; request_reboot; }
boot_2() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-2.trial_before"
    stratum rollback; result rollback_rc $?
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-3.trial"
    stratum status --json > "$out/boot-3.status"
    request_reboot
}
boot_4() { result booted "$(booted)"; }
"#;

fn rollback_ends_the_trial() -> Result<()> {
    let p = project();
    let img = image("fallback-rollback")?;
    let v1 = img.commit.clone();
    // v2's required check fails but only reports (on-failure = "none"): the trial stays open.
    let failing = b"#!/bin/sh\necho always fails\nexit 1\n";
    let v2 = img.compose_update_with(
        &p,
        "2.0",
        &[
            ("etc/stratum/health.d/required.d/50-fail", failing, 0o755),
            (
                "etc/stratum/stratum.d/50-report-only.toml",
                b"on-failure = \"none\"\n",
                0o644,
            ),
        ],
        &[],
    )?;
    let (out, test, dir) = boot(&img, "fallback-rollback-run", ROLLBACK_DURING_TRIAL)?;
    check("fallback-rollback", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 4,
            "expected 4 scenario boots, got {}",
            r.boots()
        );
        ensure!(r.get(2, "booted") == v2, "v2 did not boot");
        let before: serde_json::Value = serde_json::from_str(&r.get(2, "trial_before"))?;
        ensure!(
            before["trial"].as_str().is_some_and(|t| t.contains(&v2)),
            "v2 should be on trial: {before}"
        );
        ensure!(
            r.get(2, "rollback_rc") == "0",
            "rollback failed: {}",
            r.get(2, "log")
        );
        ensure!(
            r.get(3, "booted") == v1 && r.get(4, "booted") == v1,
            "v1 should boot after the rollback"
        );
        let trial: serde_json::Value = serde_json::from_str(&r.get(3, "trial"))?;
        ensure!(
            trial["trial"].is_null() && trial["pending-fallback"].is_null(),
            "the trial did not end: {trial}"
        );
        let st: serde_json::Value = serde_json::from_str(&r.get(3, "status"))?;
        ensure!(
            st["fallback"].is_null(),
            "a rollback is not a fallback: {st}"
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let failing_check: &'static [u8] = b"#!/bin/sh\necho the service is not healthy\nexit 1\n";
    let trials = vec![
        trial(
            "fallback::good_update_is_blessed_and_survives_garbage_grubenv",
            good_update_is_blessed,
        ),
        trial("fallback::failing_health_check_falls_back", move || {
            falls_back(
                "fallback-check",
                &[(
                    "etc/stratum/health.d/required.d/50-fail",
                    failing_check,
                    0o755,
                )],
                &[],
            )
        }),
        trial("fallback::unbootable_update_falls_back", || {
            // An initramfs the kernel cannot unpack: the kernel panics (panic=3 reboots).
            falls_back(
                "fallback-unbootable",
                &[("@initrd", b"this is not an initramfs", 0o644)],
                &["--keep-initramfs"],
            )
        }),
        trial(
            "fallback::rollback_during_trial_ends_it",
            rollback_ends_the_trial,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
