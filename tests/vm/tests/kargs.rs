//! VM scenario of `stratum kargs`: an argument appended on the running system is on the
//! kernel command line after a reboot, and gone after it is deleted and the machine reboots
//! again. Run with `cargo test --release -p stratum-vmtests --test kargs` after `make build`.

use anyhow::{ensure, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::{check, trial, Project};

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
    let (out, test) = img.boot_scenario(&dir, KARGS, &[], |_| ())?;
    eprintln!("kargs: three boots in {:.0} s", out.elapsed.as_secs_f64());
    check("kargs", &out, || {
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
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![trial(
        "vm::kargs_append_delete_across_reboots",
        append_reboot_delete_reboot,
    )];
    libtest_mimic::run(&args, trials).exit();
}
