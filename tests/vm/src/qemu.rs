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

/// How the machine boots.
#[derive(Debug, Clone)]
pub enum Boot {
    /// UEFI firmware (OVMF) and the disk's own bootloader.
    Uefi,
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
}

/// How a run ended.
#[derive(Debug)]
pub struct QemuOutcome {
    pub timed_out: bool,
    pub console: String,
    pub elapsed: Duration,
}

impl Qemu {
    pub fn new(console: PathBuf) -> Qemu {
        Qemu {
            disks: Vec::new(),
            boot: Boot::Uefi,
            memory_mib: 1024,
            timeout: crate::default_timeout(),
            no_reboot: false,
            console,
            echo: std::env::var_os("STRATUM_VM_ECHO").is_some(),
            echo_filter: None,
        }
    }

    fn command(&self, vars: &Path) -> Command {
        let mut c = Command::new("qemu-system-x86_64");
        let accel = std::env::var("STRATUM_QEMU_ACCEL").unwrap_or_else(|_| "tcg".into());
        c.args([
            "-machine", "q35", "-accel", &accel, "-cpu", "max", "-smp", "2",
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
            Boot::Uefi => {
                c.args([
                    "-drive",
                    "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
                ]);
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
        for d in &self.disks {
            c.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,cache=unsafe",
                d.display()
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
        let vars = self.console.with_extension("ovmf-vars.fd");
        fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
            .context("copying OVMF variables (install ovmf)")?;
        let start = Instant::now();
        let mut log = fs::File::create(&self.console)?;
        let mut console = String::new();
        let mut timed_out = false;
        // Bounded only as a safety net; the overall timeout is what ends a stuck run.
        for _ in 0..64 {
            let Some(left) = self.timeout.checked_sub(start.elapsed()) else {
                timed_out = true;
                break;
            };
            let run = self.run_once(&vars, left, &mut log)?;
            console.push_str(&run.console);
            if run.timed_out {
                timed_out = true;
                break;
            }
            // The guest powered off, QEMU failed, or a reset is what the caller waits for.
            if self.no_reboot || !run.exited_ok || run.console.contains(POWER_DOWN) {
                break;
            }
        }
        let _ = fs::remove_file(&vars);
        Ok(QemuOutcome {
            timed_out,
            console,
            elapsed: start.elapsed(),
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
        let reader = std::thread::spawn(move || {
            let mut all = String::new();
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let text = String::from_utf8_lossy(&line).replace('\r', "");
                let _ = writeln!(log, "{text}");
                if echo {
                    eprintln!("{text}");
                } else if let Some(show) = filter.and_then(|f| f(&text)) {
                    eprintln!("{show}");
                }
                all.push_str(&text);
                all.push('\n');
            }
            let _ = tx.send(all);
        });
        // Wait for QEMU itself; poll its status with a short period only to enforce the
        // deadline (the wait is for the process, not a guess at readiness).
        let mut timed_out = false;
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if start.elapsed() > timeout {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let console = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
        let _ = reader.join();
        Ok(OneRun {
            timed_out,
            exited_ok: status.is_some_and(|s| s.success()),
            console,
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
}
