//! VM scenarios: real disk images booted in QEMU. Run with `make test-vm`.

use std::sync::OnceLock;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{
    check, trial, Boot, Firmware, Image, Project, Qemu, TestDisk, SCENARIO_HELPERS,
};

static IMAGE: OnceLock<std::result::Result<Image, String>> = OnceLock::new();

fn project() -> Project {
    Project::locate().expect("locating the project")
}

/// The v1 image, built once for all scenarios.
fn image() -> Result<Image> {
    IMAGE
        .get_or_init(|| {
            project()
                .build_image("v1", "1.0")
                .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(|e| anyhow::anyhow!("building the test image: {e}"))
}

const FIRST_BOOT: &str = r#"
boot_1() {
    result root "$(findmnt -no SOURCE /)"
    result usr_opts "$(findmnt -no OPTIONS /usr)"
    touch /usr/stratum-write-test 2>"$out/boot-1.usr_write"; echo "rc=$?" >> "$out/boot-1.usr_write"
    echo edited > /etc/stratum-etc-test && result etc_write "$(cat /etc/stratum-etc-test)"
    mkdir -p /var/lib/stratum-test && cat /proc/sys/kernel/random/boot_id > /var/lib/stratum-test/keep
    result var_written "$(cat /var/lib/stratum-test/keep)"
    [ -e /run/ostree-booted ] && result ostree_booted yes
    result cmdline "$(cat /proc/cmdline)"
    stratum status > "$out/boot-1.status" 2>&1; result status_rc $?
    stratum status --json > "$out/boot-1.status_json" 2>&1
    result failed_units "$(systemctl --failed --no-legend --plain)"
    result multi_user "$(systemctl is-active multi-user.target)"
    result sysroot_opts "$(findmnt -no OPTIONS /sysroot)"
    result boot_mount "$(findmnt -no SOURCE,FSTYPE /boot)"
    cp /run/stratum/boot.json "$out/boot-1.boot_json"
    request_reboot
}
boot_2() {
    result var_kept "$(cat /var/lib/stratum-test/keep)"
    result etc_kept "$(cat /etc/stratum-etc-test)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
}
"#;

/// The first boot of an installed disk through shim, signed GRUB and the signed kernel under
/// Secure Boot: the deployment is `/`, `/usr` and `/sysroot` read-only, `/etc` writable,
/// `status` marks the booted deployment and reports Secure Boot; `/etc` and `/var` edits
/// survive the second boot. Boots: two.
fn first_boot() -> Result<()> {
    let img = image()?;
    let dir = project().workdir("first-boot")?;
    let (out, test) = img.boot_scenario(&dir, FIRST_BOOT, &[], |_| ())?;
    eprintln!(
        "first-boot: two boots in {:.0} s",
        out.elapsed.as_secs_f64()
    );
    check("first-boot", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 2,
            "expected 2 boots, the scenario ran {}",
            r.boots()
        );
        let dep = format!("/ostree/deploy/default/deploy/{}.0", img.commit);
        ensure!(
            r.get(1, "root").contains(&dep),
            "/ is {:?}, expected the deployment {dep}",
            r.get(1, "root")
        );
        ensure!(
            r.get(1, "usr_opts").split(',').any(|o| o == "ro"),
            "/usr options {:?}",
            r.get(1, "usr_opts")
        );
        let w = r.get(1, "usr_write");
        ensure!(
            w.contains("Read-only file system") && w.contains("rc=1"),
            "write to /usr: {w:?}"
        );
        ensure!(r.get(1, "etc_write") == "edited", "/etc not writable");
        ensure!(
            r.get(1, "ostree_booted") == "yes",
            "/run/ostree-booted missing"
        );
        ensure!(
            r.get(1, "cmdline")
                .contains("ostree=/ostree/boot.0/default/"),
            "cmdline {:?}",
            r.get(1, "cmdline")
        );
        ensure!(
            r.get(1, "status_rc") == "0",
            "stratum status failed: {}",
            r.get(1, "status")
        );
        let status = r.get(1, "status");
        ensure!(
            status.contains(&format!("● default:{}.0", img.commit)),
            "status does not mark the booted deployment:\n{status}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&r.get(1, "status_json")).context("status --json")?;
        ensure!(
            json["deployments"][0]["booted"] == true
                && json["deployments"][0]["checksum"] == img.commit.as_str(),
            "status --json: {json}"
        );
        ensure!(
            json["secure-boot"] == "enabled" && json["boot-chain"]["up-to-date"] == true,
            "status --json does not report Secure Boot enabled and the ESP's chain up to \
             date: {json}"
        );
        ensure!(
            r.get(1, "failed_units").is_empty(),
            "failed units: {}",
            r.get(1, "failed_units")
        );
        ensure!(
            r.get(1, "multi_user") == "active",
            "multi-user.target is {}",
            r.get(1, "multi_user")
        );
        ensure!(
            r.get(1, "sysroot_opts").split(',').any(|o| o == "ro"),
            "/sysroot options {:?}",
            r.get(1, "sysroot_opts")
        );
        ensure!(
            r.get(1, "boot_mount").contains("ext4"),
            "/boot mount: {:?}",
            r.get(1, "boot_mount")
        );
        let bj: serde_json::Value =
            serde_json::from_str(&r.get(1, "boot_json")).context("boot.json")?;
        ensure!(bj["checksum"] == img.commit.as_str(), "boot.json: {bj}");
        ensure!(
            r.get(2, "var_kept") == r.get(1, "var_written"),
            "/var file lost across reboot"
        );
        ensure!(
            r.get(2, "etc_kept") == "edited",
            "/etc edit lost across reboot"
        );
        ensure!(
            r.get(2, "failed_units").is_empty(),
            "failed units on boot 2: {}",
            r.get(2, "failed_units")
        );
        Ok(())
    })
}

/// Secure Boot refuses what nobody signed, and the firmware goes on to its next boot option:
/// disk 1 carries a GRUB built on the host (`install to-disk --unsigned-grub`), disk 2 the
/// image's signed chain. Under Secure Boot the firmware refuses disk 1 ("Access Denied") and
/// boots disk 2; without Secure Boot disk 1 boots. Boots: a refused load and a full boot with
/// Secure Boot, a full boot without.
fn secure_boot_refuses_unsigned_grub() -> Result<()> {
    let p = project();
    let img = image()?;
    let dir = p.workdir("unsigned-grub")?;
    let unsigned = dir.join("unsigned.img");
    let install = p.install_disk(
        &img.repo,
        &img.refname,
        &unsigned,
        &dir.join("install"),
        &["console=ttyS0"],
        "grub-unsigned",
    )?;
    let unsigned_root = stratum_vmtests::root_karg_of(&install).context("root= of the install")?;
    let signed_root = img.root_karg().context("root= of the image")?;
    const SCENARIO: &str = "boot_1() { result cmdline \"$(cat /proc/cmdline)\"; }\n";
    let boot = |name: &str, firmware: Firmware, disks: Vec<std::path::PathBuf>| -> Result<_> {
        let run = dir.join(name);
        std::fs::create_dir_all(&run)?;
        let mut test = TestDisk::create(&run, SCENARIO, &[])?;
        test.firmware = Some(firmware);
        let mut q = Qemu::new(run.join("console.log"));
        q.boot = Boot::Uefi(firmware);
        q.disks = disks;
        q.disks.push(test.image.clone());
        let out = q.run()?;
        Ok((out, test, run))
    };
    let signed = img.copy_disk(&dir.join("signed.img"))?;
    let (out, test, run) = boot(
        "secure-boot",
        Firmware::SecureBoot,
        vec![unsigned.clone(), signed],
    )?;
    check("unsigned-grub-secure-boot", &out, || {
        ensure!(
            out.console.contains("Access Denied"),
            "the firmware did not refuse the unsigned GRUB"
        );
        let r = test.results(&run.join("results"))?;
        ensure!(r.boots() == 1, "expected one boot, ran {}", r.boots());
        let cmdline = r.get(1, "cmdline");
        ensure!(
            cmdline.contains(&signed_root),
            "booted {cmdline:?}, expected the signed disk ({signed_root})"
        );
        Ok(())
    })?;
    let (out, test, run) = boot("no-secure-boot", Firmware::Plain, vec![unsigned])?;
    check("unsigned-grub-plain", &out, || {
        let r = test.results(&run.join("results"))?;
        ensure!(r.boots() == 1, "expected one boot, ran {}", r.boots());
        let cmdline = r.get(1, "cmdline");
        ensure!(
            cmdline.contains(&unsigned_root),
            "booted {cmdline:?}, expected the unsigned disk ({unsigned_root})"
        );
        Ok(())
    })
}

/// shim refuses a kernel that is not signed, with its message on the console, and the
/// kernel never starts: the image's kernel has its signature removed (`sbattach --remove`)
/// before it is composed. Boots: firmware, shim and GRUB, up to GRUB's `linux` command (the
/// run ends at the refusal).
fn secure_boot_refuses_unsigned_kernel() -> Result<()> {
    let p = project();
    let img = p.build_image_with(
        "unsigned-kernel",
        "1.0",
        |root| {
            for e in std::fs::read_dir(root.join("boot"))? {
                let path = e?.path();
                if path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                {
                    // A copy, unsigned in place and renamed over the original: the root
                    // shares inodes with the cache.
                    let unsigned = root.join("boot/vmlinuz.unsigned");
                    std::fs::copy(&path, &unsigned)?;
                    stratum_vmtests::run(
                        std::process::Command::new("sbattach")
                            .arg("--remove")
                            .arg(&unsigned),
                    )?;
                    std::fs::rename(&unsigned, &path)?;
                }
            }
            Ok(())
        },
        &["console=ttyS0"],
    )?;
    let dir = p.workdir("unsigned-kernel-run")?;
    let (out, _) = img.boot_scenario(&dir, "boot_1() { :; }\n", &[], |q| {
        q.cut = Some(stratum_vmtests::PowerCut {
            marker: SHIM_REFUSAL.to_string(),
            end: None,
            delay: std::time::Duration::ZERO,
        });
    })?;
    check("unsigned-kernel", &out, || {
        ensure!(
            out.console.contains(SHIM_REFUSAL),
            "GRUB did not report shim's refusal of the unsigned kernel"
        );
        ensure!(
            !out.console.contains("Linux version"),
            "the unsigned kernel started"
        );
        Ok(())
    })
}

/// Debian's signed GRUB in an image.
const SIGNED_GRUB: &str = "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed";

/// What Debian's GRUB prints when shim refuses the image its `linux` command loads.
const SHIM_REFUSAL: &str = "bad shim signature";

/// Boots the kernel and initramfs directly with a bad `ostree=`; prepare-root must explain
/// and reboot (QEMU exits on the reboot with -no-reboot), never panic.
fn bad_ostree_karg(name: &str, ostree: &str, expect: &str) -> Result<()> {
    let img = image()?;
    let dir = project().workdir(name)?;
    let disk = img.copy_disk(&dir.join("disk.img"))?;
    let (kernel, initrd) = img.boot_files()?;
    let root = img.root_karg().context("root= karg")?;
    let mut q = Qemu::new(dir.join("console.log"));
    q.disks = vec![disk];
    q.no_reboot = true;
    q.boot = Boot::Direct {
        kernel,
        initrd,
        append: format!("{root} rw console=ttyS0 ostree={ostree} stratum.reboot-delay=1"),
    };
    let out = q.run()?;
    check(name, &out, || {
        let c = &out.console;
        ensure!(
            c.contains("stratum-prepare-root: boot failed"),
            "no failure banner on the console"
        );
        ensure!(c.contains(expect), "console does not explain {expect:?}");
        ensure!(
            c.contains(&format!("{}.0", img.commit)),
            "console does not list the existing deployment"
        );
        ensure!(
            c.contains("rebooting in 1 second"),
            "no reboot announcement"
        );
        ensure!(!c.contains("Kernel panic"), "the kernel panicked");
        ensure!(
            c.contains("reboot: Restarting system"),
            "the machine did not reboot"
        );
        Ok(())
    })
}

fn ostree_admin_status_reads_our_sysroot() -> Result<()> {
    let img = image()?;
    let out = std::process::Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(&img.sysroot)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "ostree admin status failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        text.contains(&format!("default {}.0", img.commit)),
        "ostree admin status:\n{text}"
    );
    ensure!(
        text.contains("Version: 1.0"),
        "ostree admin status shows no version:\n{text}"
    );
    Ok(())
}

const UPGRADE: &str = r#"
boot_1() {
    echo "admin motd" > /etc/motd
    mkdir -p /var/lib && echo kept > /var/lib/keep
    result booted "$(booted)"
    # The update is staged by the automatic-update timer (enabled in the image), with the
    # policy "stage" and the timer made to fire now instead of an hour after boot.
    result timer_active "$(systemctl is-active stratum-automatic-update.timer)"
    mkdir -p /etc/stratum /etc/systemd/system/stratum-automatic-update.timer.d
    printf '[automatic-update]\npolicy = "stage"\n' > /etc/stratum/stratum.toml
    printf '[Timer]\nOnActiveSec=1s\nRandomizedDelaySec=0\n' \
        > /etc/systemd/system/stratum-automatic-update.timer.d/now.conf
    systemctl daemon-reload && systemctl restart stratum-automatic-update.timer
    # Bounded wait for the run the timer starts (the service is never started by hand).
    for _ in $(seq 600); do
        [ "$(systemctl show -P ExecMainExitTimestampMonotonic stratum-automatic-update.service)" != 0 ] && break
        sleep 1
    done
    result auto_result "$(systemctl show -P Result stratum-automatic-update.service)"
    journalctl -b -u stratum-automatic-update.service --no-pager
    rm -r /etc/systemd/system/stratum-automatic-update.timer.d
    stratum status > "$out/boot-1.status" 2>&1
    # An /etc edit made after staging must reach the new deployment.
    echo "late edit" > /etc/stratum-late.conf
    request_reboot
}
boot_2() {
    result booted "$(booted)"
    result motd "$(cat /etc/motd)"
    result late "$(cat /etc/stratum-late.conf)"
    result keep "$(cat /var/lib/keep)"
    stratum status --json > "$out/boot-2.status_json"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    # v2 ships another signed GRUB: the ESP still has v1's until it is updated.
    stratum bootloader status --json > "$out/boot-2.bootloader_before"
    stratum bootloader update; result bootloader_update_rc $?
    stratum bootloader status --json > "$out/boot-2.bootloader_after"
    stratum rollback; result rollback_rc $?
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    stratum cleanup -r; result cleanup_rc $?
    stratum status --json > "$out/boot-3.status_json"
    result deploy_dirs "$(ls /ostree/deploy/default/deploy | grep -v origin | wc -l)"
    result boot_dirs "$(ls /boot/ostree | wc -l)"
    result entries "$(ls /boot/loader/entries | wc -l)"
}
"#;

/// The deployments issue's scenario: upgrade (staged by the automatic-update timer, finalized
/// at shutdown), reboot into v2 with /etc and /var kept, roll back, reboot into v1, clean up.
/// v2 also ships another signed GRUB (Debian 13's, 2.12): on v2 `bootloader status` reports
/// the ESP behind, `bootloader update` installs v2's, and the third boot goes through it
/// under Secure Boot. Boots: three, all with Secure Boot.
fn upgrade_rollback_cleanup() -> Result<()> {
    let p = project();
    // The scenarios' image: its repository gains v2, which the other scenarios (booting
    // copies of the disk as installed) never see.
    let img = image()?;
    let v1 = img.commit.clone();
    let grub = std::fs::read(p.debian_root_from("vm-trixie")?.join(SIGNED_GRUB))?;
    let v2 = img.compose_update_with(
        &p,
        "2.0",
        &[
            ("usr/share/stratum-test/release", b"2.0\n", 0o644),
            (SIGNED_GRUB, &grub, 0o644),
        ],
        &[],
    )?;
    let dir = p.workdir("upgrade-run")?;
    // The update server travels on the test disk: v2 published with its static delta from v1,
    // which the machine's pull fetches and applies instead of v2's objects.
    let published = dir.join("repo");
    let publish = img.publish_repo(&p, &published, 1)?;
    ensure!(
        publish["deltas"][0]["from"] == v1.as_str() && publish["deltas"][0]["to"] == v2.as_str(),
        "publish made no delta from v1 to v2: {publish}"
    );
    let (out, test) = img.boot_scenario(
        &dir,
        &format!("{SCENARIO_HELPERS}{UPGRADE}"),
        &[("repo", published.as_path())],
        |_| (),
    )?;
    eprintln!("upgrade: three boots in {:.0} s", out.elapsed.as_secs_f64());
    check("upgrade-rollback-cleanup", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 3,
            "expected 3 boots, the scenario ran {}",
            r.boots()
        );
        ensure!(
            r.get(1, "booted") == v1,
            "boot 1 booted {:?}, expected v1 {v1}",
            r.get(1, "booted")
        );
        ensure!(
            r.get(1, "timer_active") == "active",
            "stratum-automatic-update.timer is {:?} at boot",
            r.get(1, "timer_active")
        );
        ensure!(
            r.get(1, "auto_result") == "success",
            "the automatic update ended with {:?}:\n{}",
            r.get(1, "auto_result"),
            r.get(1, "log")
        );
        ensure!(
            r.get(1, "log").contains(&format!(
                "Fetching the static delta {}..{}",
                &v1[..12],
                &v2[..12]
            )),
            "the automatic update did not fetch the static delta from v1:\n{}",
            r.get(1, "log")
        );
        let status = r.get(1, "status");
        ensure!(
            status.contains("(staged")
                && status.contains("AutomaticUpdates: stage; stratum-automatic-update.timer")
                && status.contains(&format!("staged 2.0 ({v2})")),
            "status after the automatic update does not show it staged:\n{status}"
        );
        ensure!(
            r.get(2, "booted") == v2,
            "boot 2 booted {:?}, expected v2 {v2}",
            r.get(2, "booted")
        );
        ensure!(
            r.get(2, "motd") == "admin motd",
            "/etc edit lost: {:?}",
            r.get(2, "motd")
        );
        ensure!(
            r.get(2, "late") == "late edit",
            "/etc edit after staging lost: {:?}",
            r.get(2, "late")
        );
        ensure!(r.get(2, "keep") == "kept", "/var file lost");
        let st: serde_json::Value = serde_json::from_str(&r.get(2, "status_json"))?;
        ensure!(
            st["automatic-update"]["policy"] == "stage" && st["cached-update"].is_null(),
            "the update that booted is still reported as cached: {st}"
        );
        ensure!(
            st["boot-chain"]["up-to-date"] == false,
            "status on v2 does not report that v2 ships another GRUB than the ESP's: {st}"
        );
        ensure!(
            st["deployments"][1]["checksum"] == v1.as_str()
                && st["deployments"][1]["rollback"] == true,
            "v1 is not the rollback: {st}"
        );
        ensure!(
            r.get(2, "failed_units").is_empty(),
            "failed units: {}",
            r.get(2, "failed_units")
        );
        ensure!(
            r.get(2, "rollback_rc") == "0",
            "rollback failed:\n{}",
            r.get(2, "log")
        );
        let before: serde_json::Value = serde_json::from_str(&r.get(2, "bootloader_before"))?;
        let grub_state = |v: &serde_json::Value| v["default"]["files"][1].clone();
        ensure!(
            before["signed"] == true
                && before["up-to-date"] == false
                && before["secure-boot"] == "enabled"
                && grub_state(&before)["path"] == "EFI/BOOT/grubx64.efi"
                && grub_state(&before)["esp-version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("2.06"))
                && grub_state(&before)["image-version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("2.12")),
            "bootloader status on v2 does not show the ESP's GRUB 2.06 behind v2's 2.12: {before}"
        );
        ensure!(
            r.get(2, "bootloader_update_rc") == "0",
            "bootloader update failed:\n{}",
            r.get(2, "log")
        );
        let after: serde_json::Value = serde_json::from_str(&r.get(2, "bootloader_after"))?;
        ensure!(
            after["up-to-date"] == true
                && grub_state(&after)["esp-version"]
                    .as_str()
                    .is_some_and(|v| v.starts_with("2.12")),
            "after bootloader update the ESP is not v2's: {after}"
        );
        let third = out
            .console
            .rsplit("STRATUM-TEST: boot 2 done")
            .next()
            .unwrap_or_default();
        ensure!(
            third.contains("GNU GRUB  version 2.12"),
            "the boot after the update did not go through v2's GRUB 2.12"
        );
        ensure!(
            r.get(3, "booted") == v1,
            "boot 3 booted {:?}, expected v1",
            r.get(3, "booted")
        );
        ensure!(
            r.get(3, "cleanup_rc") == "0",
            "cleanup failed:\n{}",
            r.get(3, "log")
        );
        let st: serde_json::Value = serde_json::from_str(&r.get(3, "status_json"))?;
        ensure!(
            st["deployments"].as_array().map(|a| a.len()) == Some(1),
            "more than v1 left: {st}"
        );
        ensure!(
            r.get(3, "deploy_dirs") == "1"
                && r.get(3, "boot_dirs") == "1"
                && r.get(3, "entries") == "1",
            "leftovers: {} deployment dirs, {} boot dirs, {} entries",
            r.get(3, "deploy_dirs"),
            r.get(3, "boot_dirs"),
            r.get(3, "entries")
        );
        Ok(())
    })
}

const CRASHES: &str = r#"
# This guest's stratum is the failpoints build: it aborts at the named step (exit status 134).
crash() { FAILPOINTS="$1=panic" stratum "${@:2}"; result crash_rc $?; }
boot_1() {
    result booted "$(booted)"
    # Power cut before the loader symlink is swapped: the old boot set must boot.
    crash bootloader::after-generation upgrade --apply-now
    request_reboot
}
boot_2() {
    result booted "$(booted)"
    # Power cut right after the swap: the new boot set must boot.
    crash bootloader::after-swap upgrade --apply-now
    request_reboot
}
boot_3() {
    result booted "$(booted)"
    # Power cut in the middle of a checkout of a further deployment: nothing changes.
    crash deploy::after-checkout deploy "$(cat /run/stratum-test/v1)" --apply-now
    request_reboot
}
boot_4() {
    result booted "$(booted)"
    stratum status --json > "$out/boot-4.status_json"
    # The next command removes what the crash left.
    stratum cleanup -p; result cleanup_rc $?
    result partial "$(ls -a /ostree/deploy/default/deploy | grep -c partial)"
}
"#;

/// Crashes (abort, no cleanup) at three commit steps inside the guest, whose `stratum` is the
/// failpoints build; every following boot must come up on a complete boot set.
fn crash_points_boot() -> Result<()> {
    let p = project();
    let img = p.build_image_with(
        "crash",
        "1.0",
        |root| p.install_failpoints(root),
        &["console=ttyS0"],
    )?;
    let v1 = img.commit.clone();
    let v2 = img.compose_update(&p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
    let dir = p.workdir("crash-run")?;
    let repo_copy = img.link_repo(&dir.join("repo"))?;
    std::fs::write(dir.join("v1"), &v1)?;
    let (out, test) = img.boot_scenario(
        &dir,
        &format!("{SCENARIO_HELPERS}{CRASHES}"),
        &[
            ("repo", repo_copy.as_path()),
            ("v1", dir.join("v1").as_path()),
        ],
        |_| (),
    )?;
    eprintln!(
        "crash points: four boots in {:.0} s",
        out.elapsed.as_secs_f64()
    );
    check("crash-points", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(
            r.boots() == 4,
            "expected 4 boots, the scenario ran {}",
            r.boots()
        );
        ensure!(r.get(1, "booted") == v1, "boot 1: {:?}", r.get(1, "booted"));
        for n in 1..=3 {
            // 128 + SIGABRT: the process died at the failpoint, not at an error.
            ensure!(
                r.get(n, "crash_rc") == "134",
                "boot {n}: stratum did not abort at the failpoint (exit status {:?})",
                r.get(n, "crash_rc")
            );
        }
        ensure!(
            r.get(2, "booted") == v1,
            "crash before the swap: expected the old deployment v1, booted {:?}",
            r.get(2, "booted")
        );
        ensure!(
            r.get(3, "booted") == v2,
            "crash after the swap: expected the new deployment v2, booted {:?}",
            r.get(3, "booted")
        );
        ensure!(
            r.get(4, "booted") == v2,
            "crash during a checkout: expected v2 still, booted {:?}",
            r.get(4, "booted")
        );
        ensure!(
            r.get(4, "cleanup_rc") == "0" && r.get(4, "partial") == "0",
            "leftover partial checkout after the next command"
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        trial(
            "host::ostree_admin_status_reads_stratum_sysroot",
            ostree_admin_status_reads_our_sysroot,
        ),
        trial("vm::first_boot", first_boot),
        trial("vm::upgrade_rollback_cleanup", upgrade_rollback_cleanup),
        trial("vm::crash_points_boot", crash_points_boot),
        trial(
            "vm::secure_boot_refuses_unsigned_grub",
            secure_boot_refuses_unsigned_grub,
        ),
        trial(
            "vm::secure_boot_refuses_unsigned_kernel",
            secure_boot_refuses_unsigned_kernel,
        ),
        trial("vm::prepare_root_refuses_ostree_outside_deploy", || {
            bad_ostree_karg("bad-karg-outside", "/ostree/repo", "is not a deployment")
        }),
        trial("vm::prepare_root_explains_missing_deployment", || {
            bad_ostree_karg(
                "bad-karg-missing",
                "/ostree/boot.0/default/0000/9",
                "/ostree/boot.0/default/0000/9",
            )
        }),
    ];
    libtest_mimic::run(&args, trials).exit();
}
