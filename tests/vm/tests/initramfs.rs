//! VM scenarios for client-side initramfs work: `stratum initramfs --enable` (a regenerated
//! native initramfs built in the guest from the deployment's own kernel modules and
//! prepare-root, finalized at shutdown, then booted) and `stratum initramfs-etc --track` (an
//! extra initrd carrying an /etc file). Run with
//! `cargo test --release -p stratum-vmtests --test initramfs -- --test-threads=1` after
//! `make build`.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{
    check, initramfs_digest, initramfs_enable_boot_1, trial, Image, Project, QemuOutcome,
};

static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();

/// The scenarios run on Debian 13 (trixie): kernel 6.12 with its modules xz-compressed, as
/// the kernel package ships them, and the signed chain under Secure Boot.
fn project() -> Project {
    Project::locate()
        .expect("locating the project")
        .on("vm-trixie")
}

fn image() -> Result<Image> {
    IMAGE
        .get_or_init(|| {
            project()
                .build_image("initramfs-v1", "1.0")
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building the test image: {e}"))
}

/// Boots `scenario` on a fresh copy of the image, with the image's repository on the test
/// disk when `with_repo` (the guest's remote); returns the results.
fn boot(
    name: &str,
    scenario: &str,
    with_repo: bool,
) -> Result<(QemuOutcome, stratum_vmtests::Results)> {
    let img = image()?;
    let dir = project().workdir(name)?;
    let repo = dir.join("repo");
    if with_repo {
        img.link_repo(&repo)?;
    }
    let trees: Vec<(&str, &std::path::Path)> = if with_repo {
        vec![("repo", repo.as_path())]
    } else {
        Vec::new()
    };
    let (out, test) = img.boot_scenario(&dir, scenario, &trees, |q| {
        q.timeout = q.timeout.max(Duration::from_secs(600));
    })?;
    eprintln!("{name}: finished in {:.0} s", out.elapsed.as_secs_f64());
    let r = test.results(&dir.join("results"))?;
    Ok((out, r))
}

/// After `initramfs --enable`: the regenerated image booted; an upgrade whose kernel,
/// modules and init are unchanged is served from the cache.
const ENABLE_BOOT_2: &str = r#"
boot_2() {
    cp /run/stratum/boot.json "$out/boot-2.boot_json"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    result multi_user "$(systemctl is-active multi-user.target)"
    # The same initramfs inputs again: served from the cache.
    t0=$(date +%s%N)
    stratum upgrade 2> "$out/boot-2.deploy_err"; result deploy_rc $?
    result deploy_ms $(( ($(date +%s%N) - t0) / 1000000 ))
    cat "$out/boot-2.deploy_err"
}
"#;

/// `initramfs --enable` builds an initramfs in the guest from the deployment's own modules
/// (xz-compressed, as Debian 13 ships them) and prepare-root; it is finalized at shutdown and
/// boots, its modules loading under lockdown. Boots: the enable, the regenerated image (which
/// then upgrades from the cache); under Secure Boot.
fn enable_boots_regenerated() -> Result<()> {
    let scenario = initramfs_enable_boot_1("") + ENABLE_BOOT_2;
    // The update changes one file; kernel, modules and init stay the same.
    image()?.compose_update(
        &project(),
        "2.0",
        &[("usr/share/stratum-test/release", "2.0\n")],
    )?;
    let (out, r) = boot("initramfs-enable", &scenario, true)?;
    check("initramfs-enable", &out, || {
        ensure!(r.boots() == 2, "expected 2 boots, ran {}", r.boots());
        let err = r.get(1, "enable_err");
        ensure!(
            r.get(1, "enable_rc") == "0",
            "initramfs --enable failed:\n{err}"
        );
        let digest = initramfs_digest(&err, "regenerated")
            .with_context(|| format!("no regeneration reported:\n{err}"))?;
        let bj1: serde_json::Value = serde_json::from_str(&r.get(1, "boot_json"))?;
        let bj2: serde_json::Value =
            serde_json::from_str(&r.get(2, "boot_json")).context("boot.json of boot 2")?;
        ensure!(
            bj1["initramfs"]["info"]["input_digest"].is_null(),
            "the image's own initramfs has no input digest: {bj1}"
        );
        ensure!(
            bj2["initramfs"]["info"]["input_digest"] == digest.as_str(),
            "boot 2 did not boot the regenerated initramfs {digest}: {}",
            bj2["initramfs"]
        );
        ensure!(
            bj2["serial"] == 1 && bj2["checksum"] == bj1["checksum"],
            "expected a new deployment of the same commit: {bj2}"
        );
        ensure!(
            bj2["modules_loaded"]
                .as_array()
                .is_some_and(|a| !a.is_empty()),
            "the regenerated image loaded no modules: {bj2}"
        );
        ensure!(
            r.get(2, "failed_units").is_empty() && r.get(2, "multi_user") == "active",
            "boot 2 unhealthy: {}",
            r.get(2, "failed_units")
        );
        let err2 = r.get(2, "deploy_err");
        ensure!(r.get(2, "deploy_rc") == "0", "upgrade failed:\n{err2}");
        ensure!(
            initramfs_digest(&err2, "cache hit").as_deref() == Some(digest.as_str()),
            "second deployment was not served from the cache:\n{err2}"
        );
        eprintln!(
            "initramfs-enable: --enable (regeneration) took {} ms, deploy with a cache hit {} ms (TCG guest)",
            r.get(1, "enable_ms"),
            r.get(2, "deploy_ms")
        );
        Ok(())
    })
}

const ETC: &str = r#"
boot_1() {
    echo "stratum-test=1" > /etc/stratum-test.conf
    stratum initramfs-etc --track /etc/stratum-test.conf; result track_rc $?
    result entry "$(cat /boot/loader/entries/*.conf)"
    request_reboot
}
boot_2() {
    cp /run/stratum/boot.json "$out/boot-2.boot_json"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    stratum initramfs-etc > "$out/boot-2.tracked"
}
"#;

/// `initramfs-etc --track` carries an /etc file into an extra initrd named by the boot
/// entry, and the next boot goes through it and reports it. Boots: two, under Secure Boot.
fn etc_tracked_file_reported() -> Result<()> {
    let (out, r) = boot("initramfs-etc", ETC, false)?;
    check("initramfs-etc", &out, || {
        ensure!(r.boots() == 2, "expected 2 boots, ran {}", r.boots());
        ensure!(r.get(1, "track_rc") == "0", "initramfs-etc --track failed");
        let entry = r.get(1, "entry");
        ensure!(
            entry.contains("initrd /ostree/initramfs-overlays/"),
            "no overlay initrd in the entry:\n{entry}"
        );
        let bj: serde_json::Value =
            serde_json::from_str(&r.get(2, "boot_json")).context("boot.json of boot 2")?;
        ensure!(
            bj["tracked_etc_files"]
                .as_array()
                .is_some_and(|a| a.iter().any(|f| f == "/etc/stratum-test.conf")),
            "boot.json does not list the tracked file: {bj}"
        );
        ensure!(
            r.get(2, "tracked") == "/etc/stratum-test.conf",
            "tracked list: {:?}",
            r.get(2, "tracked")
        );
        ensure!(
            r.get(2, "failed_units").is_empty(),
            "failed units: {}",
            r.get(2, "failed_units")
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        trial(
            "vm::initramfs_enable_boots_regenerated",
            enable_boots_regenerated,
        ),
        trial(
            "vm::initramfs_etc_tracked_file_in_boot_json",
            etc_tracked_file_reported,
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
