//! VM scenarios for Stratum's dracut module: the deployment's initramfs is built by Debian's
//! dracut, run inside the deployment's own root with `--add stratum`, and kept by
//! `stratum compose rootfs --keep-initramfs`. systemd is PID 1 of that initramfs, mounts the
//! root at /sysroot, and `stratum-prepare-root.service` (`initrd-setup /sysroot`) turns it into
//! the deployment before systemd switches root. A second image is regenerated on the booted
//! machine by `stratum initramfs --enable --generator dracut`. Run with
//! `cargo test --release -p stratum-vmtests --test dracut -- --test-threads=1`.

use std::fs;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{
    check, initramfs_digest, initramfs_enable_boot_1, kernel_version, remove_tree, run_dracut,
    secs, trial, Boot, Image, Project, Qemu, TEST_REF,
};

/// The image, built once for all scenarios, and how long dracut took.
#[derive(Debug, Clone)]
struct Built {
    image: Image,
    dracut_time: Duration,
    initramfs_bytes: u64,
}

static BUILT: OnceLock<std::result::Result<Built, String>> = OnceLock::new();

fn project() -> Project {
    Project::locate().expect("locating the project")
}

/// Debian root with dracut + Stratum → dracut initramfs → compose (keeping it) → disk.
fn build() -> Result<Built> {
    let p = project();
    let name = "dracut";
    let t = Instant::now();
    let dir = p.workdir(name)?;
    eprintln!("[{name}] preparing the guest root (Debian bookworm + dracut + Stratum)");
    let base = p.debian_root_from("vm-dracut")?;
    let root = p.guest_root_from(&base, &dir, |_| Ok(()))?;
    let kver = kernel_version(&root)?;
    eprintln!("[{name}] dracut --no-hostonly --add stratum --kver {kver} (inside the root)");
    let td = Instant::now();
    let initramfs = run_dracut(&root, &kver, "stratum", &dir.join("dracut.log"))?;
    let dracut_time = td.elapsed();
    let initramfs_bytes = fs::metadata(&initramfs)?.len();
    eprintln!(
        "[{name}] dracut built the initramfs in {:.1} s ({} KiB)",
        dracut_time.as_secs_f64(),
        initramfs_bytes / 1024
    );
    let repo = dir.join("repo");
    eprintln!("[{name}] stratum compose rootfs --keep-initramfs → {TEST_REF}");
    let commit = p.compose_with(&root, &repo, TEST_REF, "1.0", &["--keep-initramfs"])?;
    remove_tree(&root)?;
    let disk = dir.join("disk.img");
    let stage = dir.join("install");
    eprintln!("[{name}] stratum install to-disk → {}", disk.display());
    let install = p.install_disk(&repo, TEST_REF, &disk, &stage, &["console=ttyS0"], "grub")?;
    eprintln!("[{name}] image ready in {:.0} s: commit {commit}", secs(t));
    Ok(Built {
        image: Image {
            dir,
            repo,
            refname: TEST_REF.to_string(),
            commit,
            disk,
            sysroot: stage.join("sysroot"),
            install,
            bootloader: "grub".to_string(),
            // Without Secure Boot: these scenarios prove the dracut module; the signed chain
            // boots all the same (the `vm` scenarios boot it with Secure Boot).
            firmware: stratum_vmtests::Firmware::Plain,
        },
        dracut_time,
        initramfs_bytes,
    })
}

fn built() -> Result<Built> {
    BUILT
        .get_or_init(|| build().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow::anyhow!("building the dracut image: {e}"))
}

const BOOT: &str = r#"
boot_1() {
    result root "$(findmnt -no SOURCE /)"
    result usr_opts "$(findmnt -no OPTIONS /usr)"
    touch /usr/stratum-write-test 2>"$out/boot-1.usr_write"; echo "rc=$?" >> "$out/boot-1.usr_write"
    echo edited > /etc/stratum-etc-test && result etc_write "$(cat /etc/stratum-etc-test)"
    result var_source "$(findmnt -no SOURCE /var)"
    result sysroot_opts "$(findmnt -no OPTIONS /sysroot)"
    [ -e /run/ostree-booted ] && result ostree_booted yes
    cp /run/stratum/boot.json "$out/boot-1.boot_json"
    result unit "$(journalctl -b -o cat -u stratum-prepare-root.service)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    result multi_user "$(systemctl is-active multi-user.target)"
    # Microseconds since the kernel started: systemd of the initramfs, and of the deployment
    # (that is, the switch_root).
    result initrd_start_us "$(systemctl show -P InitRDTimestampMonotonic)"
    result switch_root_us "$(systemctl show -P UserspaceTimestampMonotonic)"
    stratum status > "$out/boot-1.status" 2>&1; result status_rc $?
}
"#;

/// A dracut-built initramfs with Stratum's module boots the deployment: prepare-root runs as
/// a unit of the initramfs' systemd and switches into the deployment, with no failed unit.
/// Boots: one, under Secure Boot.
fn boots_through_dracut_module() -> Result<()> {
    let b = built()?;
    let img = &b.image;
    let dir = project().workdir("dracut-boot")?;
    let (out, test) = img.boot_scenario(&dir, BOOT, &[], |_| ())?;
    eprintln!(
        "dracut-boot: one boot in {:.0} s",
        out.elapsed.as_secs_f64()
    );
    check("dracut-boot", &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(r.boots() == 1, "the scenario ran {} times", r.boots());
        let bj: serde_json::Value =
            serde_json::from_str(&r.get(1, "boot_json")).context("boot.json")?;
        ensure!(bj["mode"] == "systemd-initrd", "boot.json mode: {bj}");
        ensure!(bj["checksum"] == img.commit.as_str(), "boot.json: {bj}");
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
            r.get(1, "var_source")
                .contains("/ostree/deploy/default/var"),
            "/var is {:?}",
            r.get(1, "var_source")
        );
        ensure!(
            r.get(1, "sysroot_opts").split(',').any(|o| o == "ro"),
            "/sysroot options {:?}",
            r.get(1, "sysroot_opts")
        );
        ensure!(
            r.get(1, "ostree_booted") == "yes",
            "/run/ostree-booted missing"
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
            r.get(1, "status_rc") == "0",
            "stratum status failed: {}",
            r.get(1, "status")
        );
        // The evidence that systemd (not prepare-root) was PID 1 of the initramfs.
        ensure!(
            r.get(1, "unit").contains("set up on /sysroot"),
            "stratum-prepare-root.service journal: {:?}",
            r.get(1, "unit")
        );
        let ms = |name: &str| r.get(1, name).parse::<u64>().map(|us| us / 1000).ok();
        let switch_root = ms("switch_root_us").context("UserspaceTimestampMonotonic")?;
        eprintln!(
            "dracut: initramfs built by dracut in {:.1} s ({} KiB); from kernel start: \
             systemd in the initramfs at {} ms, deployment ready on /sysroot at {} ms \
             (stratum-prepare-root took {} ms), switch_root at {switch_root} ms",
            b.dracut_time.as_secs_f64(),
            b.initramfs_bytes / 1024,
            ms("initrd_start_us").unwrap_or(0),
            bj["timings_ms"]["since_kernel_start_ms"],
            bj["timings_ms"]["total"],
        );
        Ok(())
    })
}

/// `stratum initramfs --enable --generator dracut` on the booted machine: dracut runs inside
/// the new deployment's root with the `stratum` module, the image carries the input digest
/// (as `/etc/stratum/initramfs.json`), and the next boot goes through it.
const REGENERATE_BOOT_2: &str = r#"
boot_2() {
    cp /run/stratum/boot.json "$out/boot-2.boot_json"
    result unit "$(journalctl -b -o cat -u stratum-prepare-root.service)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    result multi_user "$(systemctl is-active multi-user.target)"
}
"#;

fn regenerated_by_dracut_boots() -> Result<()> {
    let b = built()?;
    let img = &b.image;
    let name = "dracut-regenerate";
    let dir = project().workdir(name)?;
    let scenario = initramfs_enable_boot_1("--generator dracut") + REGENERATE_BOOT_2;
    let (out, test) = img.boot_scenario(&dir, &scenario, &[], |_| ())?;
    eprintln!("{name}: 2 boots in {:.0} s", out.elapsed.as_secs_f64());
    check(name, &out, || {
        let r = test.results(&dir.join("results"))?;
        ensure!(r.boots() == 2, "expected 2 boots, ran {}", r.boots());
        let err = r.get(1, "enable_err");
        ensure!(
            r.get(1, "enable_rc") == "0",
            "initramfs --enable --generator dracut failed:\n{err}"
        );
        let digest = initramfs_digest(&err, "regenerated")
            .with_context(|| format!("no regeneration reported:\n{err}"))?;
        ensure!(
            err.contains("(dracut)"),
            "the regeneration did not use dracut:\n{err}"
        );
        let state: serde_json::Value =
            serde_json::from_str(&r.get(1, "state")).context("initramfs --json")?;
        ensure!(
            state.to_string().contains("dracut"),
            "initramfs state does not name the generator: {state}"
        );
        let bj: serde_json::Value =
            serde_json::from_str(&r.get(2, "boot_json")).context("boot.json of boot 2")?;
        ensure!(bj["mode"] == "systemd-initrd", "boot.json mode: {bj}");
        let info = &bj["initramfs"]["info"];
        ensure!(
            info["input_digest"] == digest.as_str() && info["generator"] == "dracut",
            "boot 2 did not boot the dracut image {digest}: {}",
            bj["initramfs"]
        );
        ensure!(
            bj["serial"] == 1 && bj["checksum"] == img.commit.as_str(),
            "expected a new deployment of the same commit: {bj}"
        );
        ensure!(
            r.get(2, "unit").contains("set up on /sysroot"),
            "stratum-prepare-root.service journal: {:?}",
            r.get(2, "unit")
        );
        ensure!(
            r.get(2, "failed_units").is_empty() && r.get(2, "multi_user") == "active",
            "boot 2 unhealthy: {}",
            r.get(2, "failed_units")
        );
        eprintln!(
            "{name}: dracut regeneration in the guest took {} ms (TCG)",
            r.get(1, "enable_ms")
        );
        Ok(())
    })
}

/// A bad `ostree=`: the service must explain on the console, and systemd must reboot
/// (`FailureAction=reboot`) after `stratum.reboot-delay=`.
fn failure_reboots() -> Result<()> {
    let b = built()?;
    let img = &b.image;
    let name = "dracut-bad-karg";
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
        append: format!(
            "{root} rw console=ttyS0 ostree=/ostree/boot.0/default/0000/9 stratum.reboot-delay=1"
        ),
    };
    let out = q.run()?;
    check(name, &out, || {
        let c = &out.console;
        ensure!(
            c.contains("stratum-prepare-root: boot failed"),
            "no failure banner on the console"
        );
        ensure!(
            c.contains("/ostree/boot.0/default/0000/9"),
            "the console does not name the bad ostree= target"
        );
        ensure!(
            c.contains(&format!("{}.0", img.commit)),
            "the console does not list the existing deployment"
        );
        ensure!(!c.contains("Kernel panic"), "the kernel panicked");
        ensure!(
            c.contains("reboot: Restarting system"),
            "the machine did not reboot"
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![
        trial(
            "vm::dracut_initramfs_boots_deployment",
            boots_through_dracut_module,
        ),
        trial(
            "vm::dracut_regenerated_on_client_boots",
            regenerated_by_dracut_boots,
        ),
        trial("vm::dracut_initramfs_bad_ostree_reboots", failure_reboots),
    ];
    libtest_mimic::run(&args, trials).exit();
}
