//! VM scenario of `stratum kargs`: an argument appended on the running system is on the
//! kernel command line after a reboot, and gone after it is deleted and the machine reboots
//! again. Run with `cargo test --release -p stratum-vmtests --test kargs` after `make build`.

use std::fs;

use anyhow::{ensure, Result};
use libtest_mimic::{Arguments, Failed, Trial};
use stratum_vmtests::{Project, Qemu, TestDisk};

fn project() -> Project {
    Project::locate().expect("locating the project")
}

const KARGS: &str = r#"
has_arg() { tr ' ' '\n' < /proc/cmdline | grep -qx "$1" && echo yes || echo no; }
boot_1() {
    result has_test "$(has_arg quiet.test=1)"
    result deploy_dirs "$(ls /ostree/deploy/default/deploy | grep -vc origin)"
    stratum kargs --append quiet.test=1; result append_rc $?
    result kargs "$(stratum kargs)"
    request_reboot
}
boot_2() {
    result has_test "$(has_arg quiet.test=1)"
    result cmdline "$(cat /proc/cmdline)"
    stratum kargs --delete quiet.test=1; result delete_rc $?
    request_reboot
}
boot_3() {
    result has_test "$(has_arg quiet.test=1)"
    result cmdline "$(cat /proc/cmdline)"
    result deploy_dirs "$(ls /ostree/deploy/default/deploy | grep -vc origin)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
}
"#;

fn append_reboot_delete_reboot() -> Result<()> {
    let p = project();
    let img = p.build_image("kargs", "1.0")?;
    let dir = p.workdir("kargs-run")?;
    let disk = img.copy_disk(&dir.join("disk.img"))?;
    let test = TestDisk::create(&dir, KARGS, &[])?;
    let mut q = Qemu::new(dir.join("console.log"));
    q.disks = vec![disk, test.image.clone()];
    let out = q.run()?;
    eprintln!("kargs: three boots in {:.0} s", out.elapsed.as_secs_f64());
    let r = (|| -> Result<()> {
        ensure!(!out.timed_out, "the VM did not finish within its timeout");
        let r = test.results(&dir.join("results"))?;
        ensure!(r.boots() == 3, "expected 3 boots, ran {}", r.boots());
        ensure!(
            r.get(1, "has_test") == "no",
            "quiet.test=1 present at first"
        );
        ensure!(
            r.get(1, "append_rc") == "0",
            "stratum kargs --append failed:\n{}",
            r.get(1, "log")
        );
        ensure!(
            r.get(1, "kargs").contains("quiet.test=1"),
            "stratum kargs shows {:?}",
            r.get(1, "kargs")
        );
        ensure!(
            r.get(2, "has_test") == "yes",
            "after the reboot /proc/cmdline lacks quiet.test=1: {}",
            r.get(2, "cmdline")
        );
        ensure!(
            r.get(2, "delete_rc") == "0",
            "stratum kargs --delete failed:\n{}",
            r.get(2, "log")
        );
        ensure!(
            r.get(3, "has_test") == "no",
            "after the second reboot quiet.test=1 is still there: {}",
            r.get(3, "cmdline")
        );
        ensure!(
            r.get(3, "cmdline").contains("ostree=/ostree/boot."),
            "cmdline {}",
            r.get(3, "cmdline")
        );
        ensure!(
            r.get(1, "deploy_dirs") == "1" && r.get(3, "deploy_dirs") == "1",
            "kargs made a deployment: {} then {} deployment directories",
            r.get(1, "deploy_dirs"),
            r.get(3, "deploy_dirs")
        );
        ensure!(
            r.get(3, "failed_units").is_empty(),
            "failed units: {}",
            r.get(3, "failed_units")
        );
        Ok(())
    })();
    r.map_err(|e| {
        let log = p.artifacts.join("kargs.console.log");
        let _ = fs::write(&log, &out.console);
        anyhow::anyhow!("{e:#}\nconsole log: {}", log.display())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![Trial::test(
        "vm::kargs_append_delete_across_reboots",
        || append_reboot_delete_reboot().map_err(|e| Failed::from(format!("{e:#}"))),
    )];
    libtest_mimic::run(&args, trials).exit();
}
