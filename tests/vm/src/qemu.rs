//! Running QEMU: OVMF + a disk image (or a direct kernel boot), serial console to a file,
//! hard timeout, waiting for QEMU's own exit; a guest reboot is a power cycle (a new QEMU
//! process on the same disks and firmware variables).

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The guest's CPU model (`STRATUM_QEMU_CPU` overrides it): the plain x86-64 baseline that
/// Debian is built for. Under TCG, `max` is slower for the same work: with AVX2 and the rest
/// announced, glibc and the kernel take code paths that QEMU emulates at a higher cost (the
/// same scenarios took 12–15% longer).
const DEFAULT_CPU: &str = "qemu64";

/// The UEFI firmware and the keys enrolled in its variable store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// OVMF without Secure Boot.
    Plain,
    /// OVMF with Secure Boot enforced and the keys every PC ships (Microsoft's KEK and UEFI
    /// CA in db): Debian's shim boots, nothing else unsigned does.
    SecureBoot,
    /// OVMF with Secure Boot enforced and only the snakeoil key of Debian's `ovmf` package
    /// in db (`/usr/share/ovmf/PkKek-1-snakeoil.{key,pem}`): an owner's own key.
    SecureBootSnakeoil,
}

impl Firmware {
    /// The firmware code and the variable store it starts from (copied for each run).
    fn files(self) -> (&'static str, &'static str) {
        match self {
            Firmware::Plain => (
                "/usr/share/OVMF/OVMF_CODE_4M.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.fd",
            ),
            Firmware::SecureBoot => (
                "/usr/share/OVMF/OVMF_CODE_4M.ms.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.ms.fd",
            ),
            Firmware::SecureBootSnakeoil => (
                "/usr/share/OVMF/OVMF_CODE_4M.snakeoil.fd",
                "/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd",
            ),
        }
    }

    pub fn secure_boot(self) -> bool {
        self != Firmware::Plain
    }
}

/// How the machine boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// UEFI firmware (OVMF) and the disk's own bootloader.
    Uefi(Firmware),
    /// `-kernel/-initrd/-append`, without firmware or bootloader.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        append: String,
    },
}

/// A QEMU machine.
#[derive(Debug, Clone)]
pub struct Qemu {
    pub disks: Vec<PathBuf>,
    pub boot: Boot,
    pub memory_mib: u32,
    pub timeout: Duration,
    /// End the run at the guest's first reset instead of power-cycling it (for tests that
    /// expect a reboot request).
    pub no_reboot: bool,
    /// Where the serial console is written.
    pub console: PathBuf,
    /// Copy console lines to stderr as they come (`STRATUM_VM_ECHO=1`).
    pub echo: bool,
    /// Show only the lines this returns (rewritten), as they come (the demo).
    pub echo_filter: Option<fn(&str) -> Option<String>>,
    /// Disks the guest sees read-only, after `disks` (for example a shared update repository).
    pub readonly_disks: Vec<PathBuf>,
    /// Cut the power (SIGKILL QEMU) `delay` after a console line containing `marker`; the run
    /// then ends at the first QEMU exit, as with `no_reboot`.
    pub cut: Option<PowerCut>,
    /// Time the first console line containing this, from the start of the first QEMU
    /// process ([`QemuOutcome::stamp`]; benchmarks).
    pub stamp: Option<String>,
}

/// When to cut the power of a run: `delay` after the guest prints a line containing `marker`.
#[derive(Debug, Clone)]
pub struct PowerCut {
    pub marker: String,
    /// A line the guest prints when the operation is over, to measure it (see
    /// [`CutReport::span`]).
    pub end: Option<String>,
    pub delay: Duration,
}

/// What happened to a run with a [`PowerCut`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CutReport {
    /// The guest printed the marker.
    pub marker_seen: bool,
    /// QEMU was killed `delay` after the marker (else it exited on its own first).
    pub killed: bool,
    /// From the marker to the end line, or to QEMU's exit when there was none before it.
    pub span: Option<Duration>,
}

/// How a run ended.
#[derive(Debug)]
pub struct QemuOutcome {
    pub timed_out: bool,
    pub console: String,
    pub elapsed: Duration,
    /// Set for a run with a [`PowerCut`].
    pub cut: Option<CutReport>,
    /// When the first line containing [`Qemu::stamp`] arrived, from QEMU's start.
    pub stamp: Option<Duration>,
}

impl Qemu {
    pub fn new(console: PathBuf) -> Qemu {
        Qemu {
            disks: Vec::new(),
            boot: Boot::Uefi(Firmware::SecureBoot),
            memory_mib: 1024,
            timeout: crate::default_timeout(),
            no_reboot: false,
            console,
            echo: std::env::var_os("STRATUM_VM_ECHO").is_some(),
            echo_filter: None,
            readonly_disks: Vec::new(),
            cut: None,
            stamp: None,
        }
    }

    fn command(&self, vars: &Path) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let accel = std::env::var("STRATUM_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        // `make test-vm` runs two one-vCPU guests at once (STRATUM_QEMU_SMP=1).
        let smp = std::env::var("STRATUM_QEMU_SMP").unwrap_or_else(|_| "2".into());
        let cpu = std::env::var("STRATUM_QEMU_CPU").unwrap_or_else(|_| DEFAULT_CPU.into());
        // Secure Boot needs SMM, so that only the firmware can write its variable store.
        let machine = match self.boot {
            Boot::Uefi(f) if f.secure_boot() => "q35,smm=on",
            _ => "q35",
        };
        c.args([
            "-machine", machine, "-accel", &accel, "-cpu", &cpu, "-smp", &smp,
        ])
        .args(["-m", &self.memory_mib.to_string()])
        .args([
            "-nographic",
            "-nic",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
        ]);
        match &self.boot {
            Boot::Uefi(firmware) => {
                if firmware.secure_boot() {
                    c.args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
                }
                c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=0,readonly=on,file={}",
                    firmware.files().0
                ));
                c.arg("-drive").arg(format!(
                    "if=pflash,format=raw,unit=1,file={}",
                    vars.display()
                ));
            }
            Boot::Direct {
                kernel,
                initrd,
                append,
            } => {
                c.arg("-kernel")
                    .arg(kernel)
                    .arg("-initrd")
                    .arg(initrd)
                    .arg("-append")
                    .arg(append);
            }
        }
        // cache=unsafe: the guest's flushes do not fsync the image file on the host. Writes
        // still reach the host's page cache before QEMU exits, so a guest crash or reboot
        // loses nothing; only a host crash would, and then the run is void anyway. Without
        // it, the guest's first flush waits for the host to write back the freshly copied
        // image, which makes boot timings depend on the host's writeback, not the guest.
        // A `.qcow2` disk is a copy-on-write overlay (see `crate::cut::Overlay`).
        for d in &self.disks {
            c.arg("-drive").arg(format!(
                "file={},format={},if=virtio,cache=unsafe",
                d.display(),
                disk_format(d)
            ));
        }
        for d in &self.readonly_disks {
            c.arg("-drive").arg(format!(
                "file={},format={},if=virtio,readonly=on",
                d.display(),
                disk_format(d)
            ));
        }
        c
    }

    /// Runs the machine until the guest powers off (or, with `no_reboot`, until its first
    /// reset), or the timeout passes (then QEMU is killed).
    ///
    /// A guest reboot is a power cycle: QEMU runs with `-no-reboot`, and when the guest resets,
    /// a new QEMU process starts on the same disks and the same firmware variables. A reset
    /// inside one TCG process has been seen to leave the next boot hanging in the firmware or
    /// much slower; a new process is also what a real machine's power cycle looks like.
    pub fn run(&self) -> Result<QemuOutcome> {
        // Each run starts from a fresh, writable copy of the variable store: shim writes its
        // SBAT level and MOK state there, and a power cycle keeps them.
        let vars = self.console.with_extension("ovmf-vars.fd");
        let store = match self.boot {
            Boot::Uefi(f) => f.files().1,
            Boot::Direct { .. } => Firmware::Plain.files().1,
        };
        fs::copy(store, &vars).with_context(|| format!("copying {store} (install ovmf)"))?;
        let start = Instant::now();
        let mut log = fs::File::create(&self.console)?;
        let mut console = String::new();
        let mut timed_out = false;
        let mut cut = None;
        let mut stamp = None;
        // Bounded only as a safety net; the overall timeout is what ends a stuck run.
        for _ in 0..64 {
            let Some(left) = self.timeout.checked_sub(start.elapsed()) else {
                timed_out = true;
                break;
            };
            let run = self.run_once(&vars, left, &mut log)?;
            console.push_str(&run.console);
            cut = run.cut;
            if stamp.is_none() {
                stamp = run.stamp.map(|at| at - start);
            }
            if run.timed_out {
                timed_out = true;
                break;
            }
            // The guest powered off, QEMU failed, or a reset is what the caller waits for.
            if self.no_reboot
                || self.cut.is_some()
                || !run.exited_ok
                || run.console.contains(POWER_DOWN)
            {
                break;
            }
        }
        let _ = fs::remove_file(&vars);
        Ok(QemuOutcome {
            timed_out,
            console,
            elapsed: start.elapsed(),
            cut,
            stamp,
        })
    }

    /// One QEMU process, until it exits or `timeout` passes; console lines are appended to
    /// `log`.
    fn run_once(&self, vars: &Path, timeout: Duration, log: &mut fs::File) -> Result<OneRun> {
        let start = Instant::now();
        let mut child = self
            .command(vars)
            .arg("-no-reboot")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting qemu-system-x86_64 (install qemu-system-x86)")?;
        let stdout = child.stdout.take().context("qemu stdout")?;
        let mut log = log.try_clone()?;
        let echo = self.echo;
        let filter = self.echo_filter;
        let (tx, rx) = mpsc::channel();
        let (marker_tx, marker_rx) = mpsc::channel();
        let marker = self.cut.as_ref().map(|c| c.marker.clone());
        let end = self.cut.as_ref().and_then(|c| c.end.clone());
        let stamp = self.stamp.clone();
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            let mut stamped = None;
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).replace('\r', "");
                if stamped.is_none() && stamp.as_deref().is_some_and(|m| text.contains(m)) {
                    stamped = Some(Instant::now());
                }
                let _ = writeln!(log, "{text}");
                if echo {
                    eprintln!("{text}");
                } else if let Some(show) = filter.and_then(|f| f(&text)) {
                    eprintln!("{show}");
                }
                if marker.as_deref().is_some_and(|m| text.contains(m)) {
                    let _ = marker_tx.send((true, Instant::now()));
                } else if end.as_deref().is_some_and(|m| text.contains(m)) {
                    let _ = marker_tx.send((false, Instant::now()));
                }
                all.push_str(&text);
                all.push('\n');
            }
            let _ = tx.send((all, stamped));
        });
        // Wait for QEMU itself; poll its status with a short period only to enforce the
        // deadline (the wait is for the process, not a guess at readiness).
        let mut timed_out = false;
        let mut marker_at: Option<Instant> = None;
        let mut report = CutReport::default();
        let status = loop {
            let exited = child.try_wait()?;
            for (begin, at) in marker_rx.try_iter() {
                match (begin, marker_at) {
                    (true, None) => marker_at = Some(at),
                    (false, Some(m)) if report.span.is_none() => report.span = Some(at - m),
                    _ => {}
                }
            }
            if let Some(status) = exited {
                if let (Some(m), None) = (marker_at, report.span) {
                    report.span = Some(m.elapsed());
                }
                break Some(status);
            }
            if let (Some(at), Some(c)) = (marker_at, &self.cut) {
                if at.elapsed() >= c.delay {
                    // SIGKILL: no clean shutdown, nothing flushed that the guest had not
                    // written to its virtual disks.
                    let _ = child.kill();
                    let _ = child.wait();
                    report.killed = true;
                    break None;
                }
            }
            if start.elapsed() > timeout {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            // Short enough to cut within a few milliseconds of the drawn moment.
            std::thread::sleep(Duration::from_millis(if marker_at.is_some() {
                2
            } else {
                50
            }));
        };
        let (console, stamp) = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let _ = reader.join();
        Ok(OneRun {
            timed_out,
            exited_ok: status.is_some_and(|s| s.success()),
            console,
            stamp,
            cut: self.cut.as_ref().map(|_| CutReport {
                marker_seen: marker_at.is_some(),
                ..report
            }),
        })
    }
}

/// What the kernel prints when the guest powers off (as opposed to `reboot: Restarting
/// system`, or a panic's reset).
const POWER_DOWN: &str = "reboot: Power down";

/// How one QEMU process ended.
struct OneRun {
    timed_out: bool,
    exited_ok: bool,
    console: String,
    stamp: Option<Instant>,
    cut: Option<CutReport>,
}

/// QEMU's format name for a disk image: `qcow2` for `*.qcow2`, else `raw`.
pub(crate) fn disk_format(path: &Path) -> &'static str {
    if path.extension().is_some_and(|e| e == "qcow2") {
        "qcow2"
    } else {
        "raw"
    }
}
