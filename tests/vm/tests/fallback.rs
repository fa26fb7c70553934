//! VM scenarios of boot counting and automatic fallback, on Debian 13 (trixie): shim, GRUB 2.12
//! and the signed kernel under OVMF with Secure Boot enforced (TCG).
//!
//! The images use `boot-tries = 2` and quick reboots (`panic=3`, `stratum.reboot-delay=2`) to
//! keep the number of boots small; the logic is the same for any count. Two runs share one
//! image: a good update and a rollback during a trial; then the two kinds of failed update.

use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{check, trial, Image, Project, QemuOutcome, TestDisk};

const TRIES: usize = 2;
const KARGS: &[&str] = &["console=ttyS0", "panic=3", "stratum.reboot-delay=2"];

/// The scenarios run on Debian 13 (trixie): GRUB 2.12 through shim, kernel 6.12.
fn project() -> Project {
    Project::locate()
        .expect("locating the project")
        .on("vm-trixie")
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

/// v2 is good: on trial, blessed, and stays the default through a garbage grubenv. v3's
/// required check fails but only reports (`on-failure = "none"`): its trial stays open, and a
/// rollback ends it.
const GOOD_THEN_ROLLBACK: &str = r#"
boot_1() {
    result booted "$(booted)"
    # v2 by version: the ref's head is v3.
    stratum deploy --version 2.0 --apply-now; result rc $?
    request_reboot
}
boot_2() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-2.trial"
    # A garbage grubenv must not stop the default entry from booting.
    head -c 1024 /dev/urandom > /boot/grubenv
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    result grubenv_head "$(head -c 24 /boot/grubenv)"
    stratum upgrade --apply-now; result rc $?
    request_reboot
}
boot_4() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-4.trial_before"
    stratum rollback; result rc $?
    request_reboot
}
boot_5() {
    result booted "$(booted)"
    stratum boot-complete --status --json > "$out/boot-5.trial"
    stratum status --json > "$out/boot-5.status"
    request_reboot
}
boot_6() { result booted "$(booted)"; }
"#;

/// What [`GOOD_THEN_ROLLBACK`] says: boot counting blesses a good update, survives a garbage
/// grubenv, and a rollback ends an open trial. Boots: v1, v2 on trial and blessed, v2 again
/// through the garbage grubenv, v3 on trial, v1 after the rollback; all under Secure Boot.
fn good_update_then_rollback_during_trial() -> Result<()> {
    let p = project();
    let img = image("fallback-good")?;
    let v1 = img.commit.clone();
    let v2 = img.compose_update(&p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
    let failing = b"#!/bin/sh\necho always fails\nexit 1\n";
    let v3 = img.compose_update_with(
        &p,
        "3.0",
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
    let (out, test, dir) = boot(&img, "fallback-good-run", GOOD_THEN_ROLLBACK)?;
    check("fallback-good", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 6,
            "expected 6 scenario boots, got {}",
            r.boots()
        );
        r.expect(1, "booted", &v1)?;
        r.expect_success(1, "rc", "log", "deploy --version 2.0")?;
        r.expect(2, "booted", &v2)?;
        let trial: serde_json::Value =
            serde_json::from_str(&r.get(2, "trial")).context("trial json")?;
        ensure!(
            trial["blessed"] == true && trial["trial"].is_null(),
            "v2 not blessed after its checks: {trial}"
        );
        // After blessing (and a garbage grubenv) v2 stays the default.
        r.expect(3, "booted", &v2)?;
        r.expect(3, "grubenv_head", "# GRUB Environment Block")?;
        ensure!(
            grub_boots(&out.console, "2.0") == 4,
            "v2 booted {} times, expected 4 (boots 2, 3, 5 and 6)",
            grub_boots(&out.console, "2.0")
        );
        r.expect_success(3, "rc", "log", "upgrade to v3")?;
        // v3 on trial, its check failing without a reboot; the rollback ends the trial.
        r.expect(4, "booted", &v3)?;
        let before: serde_json::Value = serde_json::from_str(&r.get(4, "trial_before"))?;
        ensure!(
            before["trial"].as_str().is_some_and(|t| t.contains(&v3)),
            "v3 should be on trial: {before}"
        );
        r.expect_success(4, "rc", "log", "rollback")?;
        r.expect(5, "booted", &v2)?;
        r.expect(6, "booted", &v2)?;
        let trial: serde_json::Value = serde_json::from_str(&r.get(5, "trial"))?;
        ensure!(
            trial["trial"].is_null() && trial["pending-fallback"].is_null(),
            "the trial did not end: {trial}"
        );
        let st: serde_json::Value = serde_json::from_str(&r.get(5, "status"))?;
        ensure!(
            st["fallback"].is_null(),
            "a rollback is not a fallback: {st}"
        );
        Ok(())
    })
}

/// v2 cannot boot (an initramfs the kernel cannot unpack: it panics, `panic=3` reboots); v3
/// boots but its required health check fails (boot-complete reboots). After exactly TRIES
/// boots of each, v1 boots by itself, status reports the fallback, and v1 stays.
const TWO_FAILURES: &str = r#"
boot_1() {
    result booted "$(booted)"
    stratum deploy --version 2.0 --apply-now; result rc $?
    request_reboot
}
boot_2() {
    result booted "$(booted)"
    stratum status > "$out/boot-2.status_text"
    stratum status --json > "$out/boot-2.status"
    stratum upgrade --apply-now; result rc $?
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    stratum status > "$out/boot-3.status_text"
    stratum status --json > "$out/boot-3.status"
    request_reboot
}
boot_4() { result booted "$(booted)"; }
"#;

/// Both kinds of failed update fall back by themselves: exactly TRIES boots of each, then
/// v1 again, with `status` explaining. Boots: v1, TRIES of unbootable v2, v1, TRIES of
/// unhealthy v3 (its required check fails and boot-complete reboots), v1; all under Secure
/// Boot.
fn failed_updates_fall_back() -> Result<()> {
    let p = project();
    let img = image("fallback-failures")?;
    let v1 = img.commit.clone();
    let (v2, v3) = img.compose_failing_updates(&p, "2.0", "3.0")?;
    let (out, test, dir) = boot(&img, "fallback-failures-run", TWO_FAILURES)?;
    check("fallback-failures", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 4,
            "expected 4 scenario boots, got {}",
            r.boots()
        );
        r.expect(1, "booted", &v1)?;
        r.expect_success(1, "rc", "log", "deploy --version 2.0")?;
        for (version, what) in [
            ("2.0", "the unbootable v2"),
            ("3.0", "v3, whose check fails"),
        ] {
            let boots = grub_boots(&out.console, version);
            ensure!(
                boots == TRIES,
                "{what} was booted {boots} times, expected exactly {TRIES}"
            );
        }
        r.expect_fallback(2, &v2, &v1, TRIES)?;
        r.expect_success(2, "rc", "log", "upgrade to v3")?;
        r.expect_fallback(3, &v3, &v1, TRIES)?;
        r.expect(4, "booted", &v1)?;
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        trial(
            "fallback::good_update_survives_garbage_grubenv_then_rollback_ends_a_trial",
            good_update_then_rollback_during_trial,
        ),
        trial(
            "fallback::unbootable_and_unhealthy_updates_fall_back",
            failed_updates_fall_back,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
