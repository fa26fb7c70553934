//! The systemd-initrd mode (`stratum-prepare-root initrd-setup /sysroot`): in a dracut-built
//! initramfs systemd is PID 1 and has already mounted the physical root at `/sysroot`
//! (`sysroot.mount`, from `root=`). Run by `stratum-prepare-root.service` between
//! `sysroot.mount` and `initrd-root-fs.target`, this turns `/sysroot` into the deployment named
//! by `ostree=`, the way OSTree's `ostree-prepare-root` does in the same place:
//!
//! 1. bind the deployment directory at `/sysroot.tmp`, with `/usr` a read-only bind of itself
//!    and `/var` bound from the stateroot;
//! 2. move the physical root (`/sysroot`) to `/sysroot.tmp/sysroot`;
//! 3. move `/sysroot.tmp` (the deployment, carrying everything) to `/sysroot`, and make the
//!    physical root at `/sysroot/sysroot` read-only (unless `stratum.sysroot-rw`).
//!
//! systemd's own `initrd-switch-root.service` then switches to `/sysroot`. The markers
//! (`/run/ostree-booted`, `boot.json` with `mode` = [`MODE_SYSTEMD_INITRD`]) go straight to
//! `/run`, which systemd carries into the booted system.
//!
//! A fatal error prints the same report as the PID 1 path and exits 1 after
//! `stratum.reboot-delay=`; the unit's `FailureAction=reboot` then reboots through systemd, so
//! the bootloader counts the failed try. With `stratum.emergency=halt` it powers off itself.

use crate::boot::{initramfs_info, ms, since_kernel_start_ms};
use crate::bootinfo::{BootInfo, MountRecord};
use crate::cmdline::Cmdline;
use crate::confine::{self, Deployment};
use crate::error::BootError;
use crate::fatal::{self, Report};
use crate::mountinfo;
use crate::params::{BootParams, Emergency};
use nix::mount::{mount, MsFlags};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `mode` in `boot.json` when prepare-root ran as a systemd service in the initramfs.
pub const MODE_SYSTEMD_INITRD: &str = "systemd-initrd";
/// The subcommand the dracut module's unit runs.
pub const SUBCOMMAND: &str = "initrd-setup";
/// Present in every systemd-style initramfs (systemd itself requires it there). Its absence
/// means we are on a booted system, where rearranging `/sysroot` would be destructive.
pub const INITRD_RELEASE: &str = "/etc/initrd-release";

const NONE: Option<&str> = None;

/// One mount operation of the set-up, in order. Kept as data so the order can be tested
/// without mounting anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Bind `src` onto `dst`; `shown` is the mount point in the booted system.
    Bind {
        src: PathBuf,
        dst: PathBuf,
        shown: &'static str,
    },
    /// Make the mount at `target` read-only (that mount only, not the filesystem).
    ReadOnly {
        target: PathBuf,
        shown: &'static str,
    },
    /// Move the mount at `src` (with everything below it) to `dst`.
    Move {
        src: PathBuf,
        dst: PathBuf,
        shown: &'static str,
    },
}

/// Where the deployment is assembled before it replaces `sysroot`: its sibling `<sysroot>.tmp`
/// (on the initramfs's own filesystem, so it is gone after `switch_root`).
pub fn staging_dir(sysroot: &Path) -> PathBuf {
    // Through components, so a trailing slash does not put it inside.
    let mut s = sysroot.components().collect::<PathBuf>().into_os_string();
    s.push(".tmp");
    PathBuf::from(s)
}

/// The mount steps that turn the physical root mounted at `sysroot` into deployment `dep`.
pub fn plan(sysroot: &Path, dep: &Deployment, sysroot_rw: bool) -> Vec<Step> {
    let tmp = staging_dir(sysroot);
    let usr = tmp.join("usr");
    let var = sysroot
        .join("ostree/deploy")
        .join(&dep.stateroot)
        .join("var");
    let mut steps = vec![
        Step::Bind {
            src: sysroot.join(&dep.relpath),
            dst: tmp.clone(),
            shown: "/",
        },
        // The bind onto itself gives /usr its own mount, which can then be read-only.
        Step::Bind {
            src: usr.clone(),
            dst: usr.clone(),
            shown: "/usr",
        },
        Step::ReadOnly {
            target: usr,
            shown: "/usr",
        },
        Step::Bind {
            src: var,
            dst: tmp.join("var"),
            shown: "/var",
        },
        // The physical root goes inside the deployment; then the deployment takes its place.
        Step::Move {
            src: sysroot.to_path_buf(),
            dst: tmp.join("sysroot"),
            shown: "/sysroot",
        },
        Step::Move {
            src: tmp,
            dst: sysroot.to_path_buf(),
            shown: "/",
        },
    ];
    if !sysroot_rw {
        steps.push(Step::ReadOnly {
            target: sysroot.join("sysroot"),
            shown: "/sysroot",
        });
    }
    steps
}

/// The `(source, fstype)` of the topmost mount at `mountpoint` in `/proc/self/mountinfo`
/// text, i.e. what systemd mounted there.
pub fn mount_source(mountinfo: &str, mountpoint: &Path) -> Option<(String, String)> {
    // Later lines are mounted on top of earlier ones.
    mountinfo.lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mp = left.split(' ').nth(4)?;
        let mut r = right.split(' ');
        let fstype = r.next()?;
        let source = r.next()?;
        (Path::new(&mountinfo::unescape(mp)) == mountpoint)
            .then(|| (mountinfo::unescape(source), fstype.to_string()))
    })
}

/// Performs the steps, recording the mounts for `boot.json`.
fn execute(steps: &[Step], records: &mut Vec<MountRecord>) -> Result<(), BootError> {
    for step in steps {
        match step {
            Step::Bind { src, dst, shown } => {
                mount(Some(src), dst, NONE, MsFlags::MS_BIND, NONE).map_err(|e| {
                    BootError::sys(format!("bind mount of {}", src.display()), dst, e)
                })?;
                records.push(MountRecord {
                    target: shown.to_string(),
                    source: src.display().to_string(),
                    options: "bind".into(),
                });
            }
            Step::ReadOnly { target, shown } => {
                let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                mount(NONE, target, NONE, flags, NONE)
                    .map_err(|e| BootError::sys("read-only remount", target, e))?;
                if let Some(r) = records.iter_mut().rev().find(|r| r.target == *shown) {
                    r.options.push_str(",ro");
                }
            }
            Step::Move { src, dst, shown } => {
                mount(Some(src), dst, NONE, MsFlags::MS_MOVE, NONE)
                    .map_err(|e| BootError::sys(format!("move of {}", src.display()), dst, e))?;
                if *shown == "/sysroot" {
                    records.push(MountRecord {
                        target: shown.to_string(),
                        source: src.display().to_string(),
                        options: "move".into(),
                    });
                }
            }
        }
    }
    Ok(())
}

struct Setup {
    start: Instant,
    debug: bool,
    info: BootInfo,
    report: Report,
}

impl Setup {
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

    fn run(&mut self, sysroot: &Path) -> Result<(), BootError> {
        if !Path::new(INITRD_RELEASE).exists() {
            return Err(BootError::Refused(format!(
                "refusing to rearrange {}: {INITRD_RELEASE} does not exist, this is not an initramfs",
                sysroot.display()
            )));
        }
        let text = std::fs::read_to_string("/proc/cmdline")
            .map_err(|e| BootError::io("read", "/proc/cmdline", e))?;
        let params = BootParams::from_cmdline(&Cmdline::parse(&text));
        fatal::configure(params.reboot_delay_secs, params.emergency, false);
        self.debug = params.debug;
        self.report.root = params.root.clone();
        self.report.ostree_arg = params.ostree.clone();
        for w in &params.warnings {
            self.warn(w.clone());
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| BootError::io("read", "/proc/self/mountinfo", e))?;
        let (device, fstype) = mount_source(&mountinfo, sysroot).ok_or_else(|| {
            BootError::Refused(format!(
                "{} is not a mount point (sysroot.mount did not mount the root device?)",
                sysroot.display()
            ))
        })?;
        self.report.root_device = Some(device.clone());
        self.report.sysroot = Some(sysroot.to_path_buf());
        self.progress(&format!(
            "{device} ({fstype}) is mounted on {}",
            sysroot.display()
        ));

        let t = Instant::now();
        let arg = params
            .ostree
            .clone()
            .ok_or(BootError::MissingKarg(crate::KARG_OSTREE))?;
        let dep =
            confine::resolve_deployment(sysroot, &arg).map_err(|err| BootError::Deployment {
                arg: arg.clone(),
                err,
            })?;
        self.progress(&format!("ostree={arg} -> /{}", dep.relpath.display()));
        let depdir = sysroot.join(&dep.relpath);
        if !depdir.join("usr").is_dir() {
            return Err(BootError::Refused(format!(
                "deployment {} has no /usr directory",
                dep.relpath.display()
            )));
        }
        let var = sysroot
            .join("ostree/deploy")
            .join(&dep.stateroot)
            .join("var");
        std::fs::create_dir_all(&var).map_err(|e| BootError::io("mkdir", &var, e))?;
        let tmp = staging_dir(sysroot);
        std::fs::create_dir_all(&tmp).map_err(|e| BootError::io("mkdir", &tmp, e))?;

        // systemd makes every mount shared, and MS_MOVE refuses to move a mount whose parent
        // is shared. Private for the rest of the initramfs; the booted systemd makes / shared
        // again at start.
        mount(NONE, "/", NONE, MsFlags::MS_REC | MsFlags::MS_PRIVATE, NONE)
            .map_err(|e| BootError::sys("making mounts private", "/", e))?;
        let mut records = Vec::new();
        let result = execute(&plan(sysroot, &dep, params.sysroot_rw), &mut records);
        self.info.mounts = records;
        result?;
        // Empty now; only the initramfs would see it. Not worth failing the boot over.
        let _ = std::fs::remove_dir(&tmp);
        self.report.sysroot = Some(sysroot.join("sysroot"));
        self.info.timings_ms.mount = ms(t.elapsed());
        self.progress("deployment mounted on /sysroot");

        let info = &mut self.info;
        info.record_deployment(
            MODE_SYSTEMD_INITRD,
            &dep,
            arg,
            device.clone(),
            params.root.clone().unwrap_or_default(),
            fstype.clone(),
        );
        info.initramfs = initramfs_info();
        self.write_markers();
        let short: String = dep.checksum.chars().take(12).collect();
        eprintln!(
            "stratum-prepare-root: {}/{short}.{} from {device} ({fstype}) set up on {} in {} ms",
            dep.stateroot,
            dep.serial,
            sysroot.display(),
            self.info.timings_ms.total
        );
        Ok(())
    }

    /// `/run` of a systemd initramfs is carried over into the booted system.
    fn write_markers(&mut self) {
        if let Err(e) = std::fs::write(crate::OSTREE_BOOTED, "") {
            self.warn(format!("cannot write {}: {e}", crate::OSTREE_BOOTED));
        }
        self.info.timings_ms.total = ms(self.start.elapsed());
        self.info.timings_ms.since_kernel_start_ms = since_kernel_start_ms();
        if let Err(e) = self.info.write(Path::new(crate::BOOT_JSON)) {
            self.warn(format!("cannot write {}: {e}", crate::BOOT_JSON));
        }
    }
}

/// Sets up the deployment on `sysroot` and exits 0; on a fatal error prints the report, waits
/// `stratum.reboot-delay=` seconds and exits 1 (or powers off with `stratum.emergency=halt`).
pub fn run(sysroot: &Path) -> ! {
    fatal::configure(crate::DEFAULT_REBOOT_DELAY_SECS, Emergency::Reboot, false);
    fatal::install_panic_hook();
    let mut setup = Setup {
        start: Instant::now(),
        debug: false,
        info: BootInfo::default(),
        report: Report::default(),
    };
    let Err(e) = setup.run(sysroot) else {
        std::process::exit(0)
    };
    setup.report.error = e.to_string();
    let text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = BootParams::from_cmdline(&Cmdline::parse(&text));
    let halt = params.emergency == Emergency::Halt;
    if halt {
        // Nothing in systemd's unit language maps "power off" to a karg; do it as PID 1 would.
        fatal::configure(params.reboot_delay_secs, Emergency::Halt, true);
        fatal::fail(&setup.report)
    }
    fatal::emit(&fatal::render(
        &setup.report,
        params.reboot_delay_secs,
        false,
    ));
    std::thread::sleep(Duration::from_secs(params.reboot_delay_secs));
    // The unit's FailureAction=reboot takes it from here.
    std::process::exit(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep() -> Deployment {
        Deployment {
            stateroot: "os".into(),
            name: "abc.0".into(),
            checksum: "abc".into(),
            serial: 0,
            relpath: "ostree/deploy/os/deploy/abc.0".into(),
        }
    }

    #[test]
    fn plan_matches_ostree_order() {
        let p = |s: &str| PathBuf::from(s);
        let steps = plan(Path::new("/sysroot"), &dep(), false);
        assert_eq!(
            steps,
            vec![
                Step::Bind {
                    src: p("/sysroot/ostree/deploy/os/deploy/abc.0"),
                    dst: p("/sysroot.tmp"),
                    shown: "/"
                },
                Step::Bind {
                    src: p("/sysroot.tmp/usr"),
                    dst: p("/sysroot.tmp/usr"),
                    shown: "/usr"
                },
                Step::ReadOnly {
                    target: p("/sysroot.tmp/usr"),
                    shown: "/usr"
                },
                Step::Bind {
                    src: p("/sysroot/ostree/deploy/os/var"),
                    dst: p("/sysroot.tmp/var"),
                    shown: "/var"
                },
                Step::Move {
                    src: p("/sysroot"),
                    dst: p("/sysroot.tmp/sysroot"),
                    shown: "/sysroot"
                },
                Step::Move {
                    src: p("/sysroot.tmp"),
                    dst: p("/sysroot"),
                    shown: "/"
                },
                Step::ReadOnly {
                    target: p("/sysroot/sysroot"),
                    shown: "/sysroot"
                },
            ]
        );
        // stratum.sysroot-rw: the same without the last step.
        let rw = plan(Path::new("/sysroot"), &dep(), true);
        assert_eq!(rw[..], steps[..steps.len() - 1]);
    }

    #[test]
    fn staging_dir_is_a_sibling() {
        assert_eq!(
            staging_dir(Path::new("/sysroot")),
            Path::new("/sysroot.tmp")
        );
        assert_eq!(staging_dir(Path::new("/a/b/")), Path::new("/a/b.tmp"));
    }

    #[test]
    fn mountinfo_source() {
        let mi = "\
22 1 0:21 / / rw,relatime shared:1 - rootfs rootfs rw
60 22 253:3 / /sysroot rw,relatime shared:30 - ext4 /dev/vda3 rw
61 22 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k
70 22 8:1 / /mnt/with\\040space ro - vfat /dev/sda1 ro
71 60 253:3 /x /sysroot rw - ext4 /dev/vdb1 rw
";
        // The topmost mount wins.
        assert_eq!(
            mount_source(mi, Path::new("/sysroot")),
            Some(("/dev/vdb1".into(), "ext4".into()))
        );
        assert_eq!(
            mount_source(mi, Path::new("/mnt/with space")),
            Some(("/dev/sda1".into(), "vfat".into()))
        );
        assert_eq!(mount_source(mi, Path::new("/nope")), None);
        assert_eq!(mount_source("garbage\n\n", Path::new("/")), None);
        assert_eq!(crate::mountinfo::unescape("a\\134b\\"), "a\\b\\");
    }
}
