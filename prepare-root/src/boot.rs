//! The boot sequence of Stratum's native initramfs, run as PID 1: API filesystems, command
//! line, kernel modules, root device, deployment, markers, `switch_root`. Any error ends in
//! [`fatal::fail`], which explains it on the console and reboots.

use crate::bootinfo::{BootInfo, InitramfsInfo, MODE_INITRAMFS};
use crate::cmdline::Cmdline;
use crate::devices::{self, Layout, WaitResult};
use crate::error::BootError;
use crate::fatal::{self, Report};
use crate::mounts::{self, Mounter};
use crate::params::BootParams;
use crate::{confine, kmod, switchroot, NEWROOT, SYSROOT};
use std::convert::Infallible;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// State of one boot, kept so a failure can say how far it got.
struct Boot {
    start: Instant,
    pid1: bool,
    debug: bool,
    info: BootInfo,
    report: Report,
}

pub(crate) fn ms(d: Duration) -> u64 {
    d.as_millis().try_into().unwrap_or(u64::MAX)
}

/// `CLOCK_BOOTTIME` in milliseconds: time since the kernel started, including suspend.
pub(crate) fn since_kernel_start_ms() -> u64 {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_BOOTTIME).map_or(0, |t| {
        (t.tv_sec() as u64) * 1000 + (t.tv_nsec() as u64) / 1_000_000
    })
}

/// `VERSION_ID` from an os-release style file.
fn version_id(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("VERSION_ID="))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
}

/// What the initramfs says about itself, if anything.
pub(crate) fn initramfs_info() -> Option<InitramfsInfo> {
    let version_id = std::fs::read_to_string("/etc/initrd-release")
        .ok()
        .and_then(|t| version_id(&t));
    let info = std::fs::read(crate::INITRAMFS_INFO)
        .ok()
        .and_then(|d| serde_json::from_slice::<serde_json::Value>(&d).ok());
    (version_id.is_some() || info.is_some()).then_some(InitramfsInfo { version_id, info })
}

impl Boot {
    fn progress(&self, msg: &str) {
        if self.debug {
            let t = ms(self.start.elapsed());
            eprintln!("stratum-prepare-root: [{t:>5} ms] {msg}");
        }
    }

    fn warn(&mut self, w: String) {
        eprintln!("stratum-prepare-root: warning: {w}");
        self.info.warnings.push(w);
    }

    fn run(&mut self, init_argv: &[OsString]) -> Result<Infallible, BootError> {
        let mut mounter = Mounter::default();
        mounter.mount_api_filesystems()?;
        let text = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| BootError::io("read", "/proc/cmdline", e))?;
        let params = BootParams::from_cmdline(&Cmdline::parse(&text));
        fatal::configure(params.reboot_delay_secs, params.emergency, self.pid1);
        self.debug = params.debug;
        self.report.root = params.root.clone();
        self.report.ostree_arg = params.ostree.clone();
        for w in &params.warnings {
            self.warn(w.clone());
        }
        self.progress("API filesystems mounted, command line read");

        let t = Instant::now();
        let loaded = kmod::load_modules(Path::new(crate::MODULES_LOAD_LIST));
        for w in loaded.warnings {
            self.warn(w);
        }
        self.info.modules_loaded = loaded.loaded;
        self.info.timings_ms.modules = ms(t.elapsed());
        self.progress(&format!(
            "{} kernel modules loaded",
            self.info.modules_loaded.len()
        ));

        let t = Instant::now();
        let spec = params
            .root_spec
            .clone()
            .ok_or(BootError::MissingKarg("root"))?;
        let root = params.root.clone().unwrap_or_default();
        let timeout = Duration::from_secs(params.root_timeout_secs);
        let device = match devices::wait_for_root(&spec, timeout, &Layout::default()) {
            WaitResult::Found { device, others } => {
                if others > 0 {
                    self.warn(format!(
                        "root={root} matches {} devices; using {}",
                        others + 1,
                        device.devnode.display()
                    ));
                }
                device
            }
            WaitResult::TimedOut(seen) => {
                self.report.devices = Some(seen.iter().map(devices::describe).collect());
                return Err(BootError::RootNotFound {
                    spec: root,
                    timeout_secs: params.root_timeout_secs,
                });
            }
        };
        let devnode = device.devnode.display().to_string();
        self.report.root_device = Some(devnode.clone());
        self.info.timings_ms.wait_root = ms(t.elapsed());
        self.progress(&format!(
            "root device {devnode} found: {}",
            devices::describe(&device)
        ));

        let t = Instant::now();
        let fstypes: Vec<String> = match (&params.rootfstype, &device.fs) {
            (Some(list), _) => list.split(',').map(str::to_string).collect(),
            (None, Some(fs)) => vec![fs.fstype.clone()],
            (None, None) => mounts::block_fstypes(),
        };
        let fstype = mounter.mount_root(
            &device.devnode,
            &fstypes,
            params.rootflags.as_deref(),
            params.read_only,
        )?;
        self.report.sysroot = Some(PathBuf::from(SYSROOT));
        self.progress(&format!("{devnode} mounted on {SYSROOT} ({fstype})"));

        let arg = params
            .ostree
            .clone()
            .ok_or(BootError::MissingKarg(crate::KARG_OSTREE))?;
        let dep = confine::resolve_deployment(Path::new(SYSROOT), &arg).map_err(|err| {
            BootError::Deployment {
                arg: arg.clone(),
                err,
            }
        })?;
        self.progress(&format!("ostree={arg} -> /{}", dep.relpath.display()));
        mounter.setup_deployment(&dep, params.sysroot_rw)?;
        self.report.sysroot = Some(Path::new(NEWROOT).join("sysroot"));
        self.info.timings_ms.mount = ms(t.elapsed());
        self.progress("deployment mounts set up");

        let info = &mut self.info;
        info.record_deployment(
            MODE_INITRAMFS,
            &dep,
            arg,
            devnode.clone(),
            params.root.clone().unwrap_or_default(),
            fstype.clone(),
        );
        info.mounts = std::mem::take(&mut mounter.records);
        info.initramfs = initramfs_info();
        info.tracked_etc_files = std::fs::read_to_string(crate::TRACKED_ETC_LIST)
            .map(|t| kmod::parse_list(&t))
            .unwrap_or_default();
        self.write_markers();

        let short: String = dep.checksum.chars().take(12).collect();
        eprintln!(
            "stratum-prepare-root: booting {}/{short}.{} from {devnode} ({fstype}) in {} ms",
            dep.stateroot, dep.serial, self.info.timings_ms.total
        );
        let inits: Vec<String> = match &params.init {
            Some(init) => vec![init.clone()],
            None => crate::DEFAULT_INITS.iter().map(|s| s.to_string()).collect(),
        };
        self.progress(&format!("switching root, init {}", inits[0]));
        switchroot::switch_root(Path::new(NEWROOT), &inits, init_argv)
    }

    /// Writes `/run/ostree-booted` and `boot.json` into the moved /run (same tmpfs).
    fn write_markers(&mut self) {
        let run = |p: &str| Path::new(NEWROOT).join(p.trim_start_matches('/'));
        if let Err(e) = std::fs::write(run(crate::OSTREE_BOOTED), "") {
            self.warn(format!("cannot write {}: {e}", crate::OSTREE_BOOTED));
        }
        self.info.timings_ms.total = ms(self.start.elapsed());
        self.info.timings_ms.since_kernel_start_ms = since_kernel_start_ms();
        if let Err(e) = self.info.write(&run(crate::BOOT_JSON)) {
            self.warn(format!("cannot write {}: {e}", crate::BOOT_JSON));
        }
    }
}

/// Runs the boot; never returns (it execs init, or reports and reboots). `init_argv` are the
/// arguments the kernel gave us, which belong to the real init. With `pid1` false (the
/// `boot --force` diagnostic) failures exit 1 instead of rebooting.
pub fn run(init_argv: &[OsString], pid1: bool) -> ! {
    fatal::configure(
        crate::DEFAULT_REBOOT_DELAY_SECS,
        crate::params::Emergency::Reboot,
        pid1,
    );
    fatal::install_panic_hook();
    let mut boot = Boot {
        start: Instant::now(),
        pid1,
        debug: false,
        info: BootInfo::default(),
        report: Report::default(),
    };
    match boot.run(init_argv) {
        Ok(never) => match never {},
        Err(e) => {
            boot.report.error = e.to_string();
            fatal::fail(&boot.report)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initrd_release_version() {
        let t = "NAME=\"Stratum initramfs\"\nVERSION_ID=\"41.2\"\nID=stratum\n";
        assert_eq!(version_id(t).as_deref(), Some("41.2"));
        assert_eq!(version_id("VERSION_ID=7\n").as_deref(), Some("7"));
        assert_eq!(version_id("ID=x\n"), None);
    }
}
