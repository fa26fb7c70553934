//! The failure path: as PID 1 we must never exit or panic (either is a kernel panic). Print a
//! one-screen explanation on the console and in the kernel log, then reboot after
//! `stratum.reboot-delay=` seconds so the bootloader counts the failed try and can fall back,
//! or power off with `stratum.emergency=halt` (useful for test VMs and kiosks that must not
//! loop). There is no shell to drop into.

use crate::params::Emergency;
use nix::sys::reboot::{reboot, RebootMode};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

/// Entries shown per list, to keep the report on one screen.
const MAX_LIST: usize = 12;

static REBOOT_DELAY: AtomicU64 = AtomicU64::new(crate::DEFAULT_REBOOT_DELAY_SECS);
static HALT: AtomicBool = AtomicBool::new(false);
static PID1: AtomicBool = AtomicBool::new(false);

/// Sets what the failure path does; called once the command line is known.
pub fn configure(reboot_delay_secs: u64, emergency: Emergency, pid1: bool) {
    REBOOT_DELAY.store(reboot_delay_secs, Ordering::SeqCst);
    HALT.store(emergency == Emergency::Halt, Ordering::SeqCst);
    PID1.store(pid1, Ordering::SeqCst);
}

/// What is known when the boot fails.
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// The error, as text.
    pub error: String,
    /// `root=` value.
    pub root: Option<String>,
    /// The device found for it, if any.
    pub root_device: Option<String>,
    /// `ostree=` value.
    pub ostree_arg: Option<String>,
    /// Where the physical root is mounted, if it got mounted.
    pub sysroot: Option<PathBuf>,
    /// Block devices seen (`devices::describe` lines), when the root was not found.
    pub devices: Option<Vec<String>>,
}

fn push_list(lines: &mut Vec<String>, items: &[String]) {
    for item in items.iter().take(MAX_LIST) {
        lines.push(format!("    {item}"));
    }
    if items.len() > MAX_LIST {
        lines.push(format!("    … and {} more", items.len() - MAX_LIST));
    }
}

/// The lines of the failure report.
pub fn render(r: &Report, delay: u64, halt: bool) -> Vec<String> {
    let mut l = vec![
        "stratum-prepare-root: boot failed".to_string(),
        format!("  error: {}", r.error),
    ];
    if let Some(root) = &r.root {
        let dev = r.root_device.as_deref().map(|d| format!(" (device {d})"));
        l.push(format!("  root={root}{}", dev.unwrap_or_default()));
    }
    l.push(format!(
        "  ostree={}",
        r.ostree_arg.as_deref().unwrap_or("(not set)")
    ));
    if let Some(sysroot) = &r.sysroot {
        let deps = crate::confine::list_deployments(sysroot);
        if deps.is_empty() {
            l.push("  no deployments found under /ostree/deploy/*/deploy/".into());
        } else {
            l.push("  deployments on the root filesystem (/ostree/deploy/<os>/deploy/):".into());
            push_list(&mut l, &deps);
        }
    } else if let Some(devs) = &r.devices {
        if devs.is_empty() {
            l.push("  root device not found; no block devices seen (driver missing?)".into());
        } else {
            l.push("  root device not found; block devices seen:".into());
            push_list(&mut l, devs);
        }
    }
    let action = if halt { "powering off" } else { "rebooting" };
    l.push(match delay {
        0 => format!("  {action} now"),
        1 => format!("  {action} in 1 second"),
        n => format!("  {action} in {n} seconds"),
    });
    l
}

/// Writes lines to the console (stderr) and, best effort, to the kernel log.
pub fn emit(lines: &[String]) {
    let mut err = std::io::stderr().lock();
    for line in lines {
        let _ = writeln!(err, "{line}");
    }
    let _ = err.flush();
    if let Ok(mut kmsg) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        for line in lines {
            // One write per record; <3> = KERN_ERR.
            let _ = kmsg.write_all(format!("<3>{}\n", line.trim_start()).as_bytes());
        }
    }
}

/// Waits, syncs and reboots or powers off (as PID 1); exits 1 otherwise. Never returns.
pub fn finish() -> ! {
    if !PID1.load(Ordering::SeqCst) {
        std::process::exit(1);
    }
    std::thread::sleep(Duration::from_secs(REBOOT_DELAY.load(Ordering::SeqCst)));
    nix::unistd::sync();
    let mode = if HALT.load(Ordering::SeqCst) {
        RebootMode::RB_POWER_OFF
    } else {
        RebootMode::RB_AUTOBOOT
    };
    let err = match reboot(mode) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    let _ = writeln!(
        std::io::stderr(),
        "stratum-prepare-root: reboot failed: {err}"
    );
    // PID 1 must not exit: wait for someone to press the reset button.
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Reports a fatal error and reboots. Never returns.
pub fn fail(report: &Report) -> ! {
    let delay = REBOOT_DELAY.load(Ordering::SeqCst);
    emit(&render(report, delay, HALT.load(Ordering::SeqCst)));
    finish()
}

/// Makes every panic abort the process once the default hook has printed it, as `panic =
/// "abort"` would: no destructor runs, so a crash leaves what a power cut would. The release
/// profile unwinds (libtest needs it, and the test binaries then share the programs' build of
/// every dependency); each program calls this first.
pub fn abort_on_panic() {
    let print = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        print(info);
        std::process::abort();
    }));
}

/// Makes a panic go through the same report-and-reboot path instead of killing PID 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let report = Report {
            error: format!("internal error: {info}"),
            ..Default::default()
        };
        fail(&report)
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_root_not_found() {
        let r = Report {
            error: "root device root=LABEL=x not found after 30 s".into(),
            root: Some("LABEL=x".into()),
            ostree_arg: Some("/ostree/boot.1/os/abc/0".into()),
            devices: Some(vec!["/dev/vda (no filesystem)".into(); 20]),
            ..Default::default()
        };
        let l = render(&r, 10, false);
        assert_eq!(l[0], "stratum-prepare-root: boot failed");
        assert!(l.iter().any(|x| x == "  ostree=/ostree/boot.1/os/abc/0"));
        assert!(l.iter().any(|x| x.contains("block devices seen")));
        assert!(l.iter().any(|x| x.contains("and 8 more")));
        assert_eq!(l.last().unwrap(), "  rebooting in 10 seconds");
        assert!(l.len() <= 24, "one screen: {l:?}");
        assert_eq!(render(&r, 0, true).last().unwrap(), "  powering off now");
    }

    #[test]
    fn report_lists_deployments() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("ostree/deploy/os/deploy/abc.0")).unwrap();
        let r = Report {
            error: "x".into(),
            sysroot: Some(d.path().to_path_buf()),
            ..Default::default()
        };
        let l = render(&r, 5, false);
        assert!(l.contains(&"    os/abc.0".to_string()), "{l:?}");
        assert!(l.contains(&"  ostree=(not set)".to_string()));
    }
}
