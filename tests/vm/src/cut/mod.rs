//! Power cuts: QEMU is killed (SIGKILL, no clean shutdown) at a chosen moment of a boot-set
//! operation in the guest, then the machine boots again and must come up on the old or the
//! new state, with a consistent sysroot, a sane boot counter and clean filesystems.
//!
//! The protocol of one cut ([`Rig::cut`]):
//! 1. a copy-on-write overlay (`qemu-img create -f qcow2 -b BASE`) of a prepared base disk,
//!    so that many cuts start from the same machine state without copying gigabytes;
//! 2. the *cut boot*: the guest prints `STRATUM-CUT: begin OP` on the serial console right
//!    before the operation, and the host kills QEMU `delay` after it sees that line;
//! 3. the *check boot* on the same overlay: it must come up and record `stratum status`,
//!    `ostree admin status`, the grubenv as GRUB left it (copied before boot-complete runs,
//!    by a drop-in of `stratum-boot-complete.service`) and the kernel command line;
//! 4. on the host: the two status views agree on the booted and default deployment, the
//!    grubenv parses and its counter is sane, `e2fsck -fn` passes on every ext4 partition of
//!    the overlay, and the state is the old or the new one of the operation ([`Side`]).
//!
//! The delay is drawn by a seeded [`Rng`] over the operation's duration, measured by an
//! uncut run ([`Rig::calibrate`]), which is also the proof that the operation succeeds.

mod ops;
mod verify;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

pub use ops::{Op, Side};
pub use verify::{ext4_partitions, fsck, ostree_status, read_grubenv, Deployment};

use crate::{
    remove_tree, run, Image, PowerCut, Project, Qemu, QemuOutcome, TestDisk, SCENARIO_HELPERS,
};
use ops::Base;
use verify::{check_results, CHECK_BOOT};

/// The line a guest prints right before the operation (followed by the operation's key).
pub const BEGIN: &str = "STRATUM-CUT: begin";
/// The line a guest prints when the operation returned.
pub const END: &str = "STRATUM-CUT: end";

/// A small seeded generator (SplitMix64): the same seed draws the same delays.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The generator of `op`'s cuts under `seed`: the delays of one operation do not depend
    /// on which others run.
    pub fn for_op(seed: u64, op: Op) -> Rng {
        let mut r = Rng(seed ^ (op as u64 + 1).wrapping_mul(0xa076_1d64_78bd_642f));
        r.next_u64();
        r
    }

    /// The seed from `SOAK_SEED`, else one from the clock; print it so a run can be replayed.
    pub fn seed_from_env() -> Result<u64> {
        match std::env::var("SOAK_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .with_context(|| format!("SOAK_SEED={s} is not a number")),
            Err(_) => Ok(std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_nanos() as u64),
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration drawn uniformly from `[0, max]` (millisecond steps).
    pub fn below(&mut self, max: Duration) -> Duration {
        let ms = max.as_millis() as u64;
        Duration::from_millis(self.next_u64() % (ms + 1))
    }
}

/// Shell functions of the cut and check boots.
const CUT_HELPERS: &str = r#"
cut_begin() { sync; echo "STRATUM-CUT: begin $1" > /dev/console; }
cut_end() { echo "STRATUM-CUT: end" > /dev/console; }
# The update repository is a read-only disk of its own, shared by all cuts.
mount_repo() { mkdir -p /run/stratum-test/repo && mount -o ro,noload /dev/disk/by-label/STRATUMREPO /run/stratum-test/repo; }
"#;

/// The drop-in of `stratum-boot-complete.service` in the test image: it keeps the grubenv as
/// GRUB left it (the check boot's boot-complete rewrites it) and brackets the service with
/// the cut lines, so that the blessing can be cut.
const BOOT_COMPLETE_DROPIN: &str = "[Service]
ExecStartPre=/bin/sh -c 'mkdir -p /run/stratum-cut; cp /boot/grubenv /run/stratum-cut/grubenv; \
echo \"STRATUM-CUT: begin bless\" > /dev/console'
ExecStartPost=/bin/sh -c 'echo \"STRATUM-CUT: end\" > /dev/console'
";

/// Adds to a guest root what cut runs need: the drop-in above, and the `ostree` command line
/// (the Debian root carries only libostree; the host runs the same Debian release).
pub fn customize_root(root: &Path) -> Result<()> {
    let d = root.join("usr/lib/systemd/system/stratum-boot-complete.service.d");
    fs::create_dir_all(&d)?;
    fs::write(d.join("50-power-cut.conf"), BOOT_COMPLETE_DROPIN)?;
    let ostree = root.join("usr/bin/ostree");
    let _ = fs::remove_file(&ostree);
    fs::copy("/usr/bin/ostree", &ostree).context("copying the host's /usr/bin/ostree")?;
    Ok(())
}

/// A copy-on-write qcow2 overlay over a base disk image, which stays untouched.
pub fn overlay(base: &Path, path: &Path) -> Result<PathBuf> {
    let _ = fs::remove_file(path);
    let format = crate::qemu::disk_format(base);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-b"])
        .arg(base)
        .args(["-F", format])
        .arg(path))?;
    Ok(path.to_path_buf())
}

/// The result of one cut (or of a calibration run).
#[derive(Debug)]
pub struct CutResult {
    pub op: Op,
    pub delay: Duration,
    /// QEMU was killed (else the guest finished the operation and stopped first).
    pub killed: bool,
    pub side: std::result::Result<Side, String>,
    /// From the marker to the operation's end (or QEMU's exit), when seen.
    pub span: Option<Duration>,
    pub elapsed: Duration,
}

impl CutResult {
    /// An operation that could not be cut at all (its uncut run failed).
    pub fn failed(op: Op, why: String) -> CutResult {
        CutResult {
            op,
            delay: Duration::ZERO,
            killed: false,
            side: Err(why),
            span: None,
            elapsed: Duration::ZERO,
        }
    }
}

/// A test image with v1 installed and v2 in its repository, the bases cuts start from, and
/// the shared update-repository disk.
pub struct Rig {
    pub project: Project,
    pub image: Image,
    pub dir: PathBuf,
    pub v1: String,
    pub v2: String,
    repo_disk: PathBuf,
    partitions: Vec<(u64, u64)>,
    bases: BTreeMap<Base, PathBuf>,
    /// Keep overlays and consoles of every cut, not only failed ones.
    pub keep: bool,
}

impl Rig {
    /// Builds the image `name` (v1, customized by [`customize_root`]) and v2, for GRUB.
    pub fn build(p: &Project, name: &str) -> Result<Rig> {
        Rig::build_for(p, name, "grub")
    }

    /// Like [`Rig::build`], installed with `bootloader` (`grub`, `systemd-boot`).
    pub fn build_for(p: &Project, name: &str, bootloader: &str) -> Result<Rig> {
        let image =
            p.build_image_for(bootloader, name, "1.0", customize_root, &["console=ttyS0"])?;
        let v2 = image.compose_update(p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
        let dir = p.workdir(&format!("{name}-cuts"))?;
        let repo_disk = dir.join("repo.img");
        let f = fs::File::create(&repo_disk)?;
        f.set_len((128 << 20) + 2 * crate::tree_size(&image.repo)?)?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "STRATUMREPO", "-d"])
            .arg(&image.repo)
            .arg(&repo_disk))?;
        let partitions = ext4_partitions(&image.disk)?;
        ensure!(!partitions.is_empty(), "no ext4 partitions on the image");
        Ok(Rig {
            project: p.clone(),
            v1: image.commit.clone(),
            v2,
            image,
            dir,
            repo_disk,
            partitions,
            bases: BTreeMap::new(),
            keep: false,
        })
    }

    /// A machine on `disk` with a fresh test disk carrying `scenario` and the repository disk.
    fn machine(&self, dir: &Path, disk: &Path, scenario: &str) -> Result<(Qemu, TestDisk)> {
        fs::create_dir_all(dir)?;
        let mut test = TestDisk::create(
            dir,
            &format!("{SCENARIO_HELPERS}{CUT_HELPERS}{scenario}"),
            &[],
        )?;
        test.firmware = Some(self.image.firmware());
        let mut q = self.image.machine(dir.join("console.log"));
        q.disks = vec![disk.to_path_buf(), test.image.clone()];
        q.readonly_disks = vec![self.repo_disk.clone()];
        Ok((q, test))
    }

    /// Prepares a base: runs `scenario` on `disk`, whose `boot_1` must record `rc` 0.
    fn prepare(&self, name: &str, disk: &Path, scenario: &str, no_reboot: bool) -> Result<()> {
        let dir = self.dir.join(name);
        let (mut q, test) = self.machine(&dir, disk, scenario)?;
        q.no_reboot = no_reboot;
        let out = q.run()?;
        crate::check(name, &out, || {
            let r = test.results(&dir.join("results"))?;
            ensure!(r.get(1, "rc") == "0", "{name} failed: {}", r.get(1, "log"));
            Ok(())
        })
    }

    /// The base disk for `b`, prepared on first use (each an overlay over the one before).
    fn base(&mut self, b: Base) -> Result<PathBuf> {
        if let Some(p) = self.bases.get(&b) {
            return Ok(p.clone());
        }
        let t = Instant::now();
        let path = match b {
            Base::Fresh => self.image.disk.clone(),
            Base::Trial => {
                let disk = overlay(&self.base(Base::Fresh)?, &self.dir.join("base-trial.qcow2"))?;
                // The run ends at the reset after the finalize: the next boot is the trial.
                let scenario = "boot_1() { mount_repo; stratum upgrade; result rc $?; \
                                umount /run/stratum-test/repo; request_reboot; }\n";
                self.prepare("base-trial", &disk, scenario, true)?;
                disk
            }
            Base::Updated => {
                let disk = overlay(
                    &self.base(Base::Trial)?,
                    &self.dir.join("base-updated.qcow2"),
                )?;
                let scenario = format!(
                    "boot_1() {{ [ \"$(booted)\" = {} ]; result rc $?; }}\n",
                    self.v2
                );
                self.prepare("base-updated", &disk, &scenario, false)?;
                disk
            }
        };
        eprintln!(
            "[cuts] base {b:?} ready in {:.0} s",
            t.elapsed().as_secs_f64()
        );
        self.bases.insert(b, path.clone());
        Ok(path)
    }

    /// An uncut run of `op` (the delay is out of reach): it must end on the new side; its
    /// span is the operation's duration.
    pub fn calibrate(&mut self, op: Op) -> Result<CutResult> {
        let r = self.cut_run(op, Duration::from_secs(3600), "calibrate")?;
        if let Err(e) = &r.side {
            bail!("{} without a power cut failed: {e}", op.title());
        }
        ensure!(
            r.side == Ok(Side::New),
            "{} without a power cut left the old state",
            op.title()
        );
        ensure!(r.span.is_some(), "{}: no start line seen", op.title());
        Ok(r)
    }

    /// One power cut of `op`, `delay` after its start line, then the check boot.
    pub fn cut(&mut self, op: Op, delay: Duration, n: usize) -> Result<CutResult> {
        self.cut_run(op, delay, &format!("{n:03}"))
    }

    fn cut_run(&mut self, op: Op, delay: Duration, label: &str) -> Result<CutResult> {
        let t = Instant::now();
        let base = self.base(op.base())?;
        let dir = self.dir.join(op.key()).join(label);
        remove_tree(&dir)?;
        fs::create_dir_all(&dir)?;
        let disk = overlay(&base, &dir.join("disk.qcow2"))?;
        let (mut q, test) = self.machine(&dir, &disk, &format!("{}{CHECK_BOOT}", op.cut_boot()))?;
        // The cut boot.
        q.console = dir.join("cut.console.log");
        q.cut = Some(PowerCut {
            marker: op.marker(),
            end: Some(END.to_string()),
            delay,
        });
        let cut = q.run()?;
        let report = cut.cut.unwrap_or_default();
        // The check boot, on the same disks.
        q.console = dir.join("check.console.log");
        q.cut = None;
        let check = q.run()?;
        let side = self.judge(op, &dir, &cut, &check, &test, &disk);
        let result = CutResult {
            op,
            delay,
            killed: report.killed,
            side: side.map_err(|e| format!("{e:#}")),
            span: report.span,
            elapsed: t.elapsed(),
        };
        // A failed cut keeps its overlay and both console logs.
        if result.side.is_ok() && !self.keep {
            remove_tree(&dir)?;
        }
        Ok(result)
    }

    fn judge(
        &self,
        op: Op,
        dir: &Path,
        cut: &QemuOutcome,
        check: &QemuOutcome,
        test: &TestDisk,
        disk: &Path,
    ) -> Result<Side> {
        ensure!(!cut.timed_out, "the cut boot timed out");
        let report = cut.cut.unwrap_or_default();
        ensure!(
            report.marker_seen,
            "the guest never started {} ({:?} not on the console)",
            op.title(),
            op.marker()
        );
        ensure!(!check.timed_out, "the check boot did not finish (timeout)");
        let r = test.results(&dir.join("results"))?;
        let c = check_results(&r, op.check_boots()).context("after the cut")?;
        let side = op.classify(self, &c)?;
        let problems = fsck(disk, &self.partitions, dir)?;
        ensure!(problems.is_empty(), "{}", problems.join("\n"));
        Ok(side)
    }
}

/// Cuts per operation, and the table of outcomes.
#[derive(Debug, Default)]
pub struct Report {
    pub results: Vec<CutResult>,
}

impl Report {
    /// The table: operation, cuts, came up old, came up new, failures.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<32} {:>5} {:>7} {:>7} {:>8} {:>10}",
            "operation", "cuts", "old", "new", "failures", "mean s/cut"
        );
        for op in Op::ALL {
            let rows: Vec<&CutResult> = self.results.iter().filter(|r| r.op == op).collect();
            if rows.is_empty() {
                continue;
            }
            let count = |side| rows.iter().filter(|r| r.side == Ok(side)).count();
            let failures = rows.iter().filter(|r| r.side.is_err()).count();
            let mean =
                rows.iter().map(|r| r.elapsed.as_secs_f64()).sum::<f64>() / rows.len() as f64;
            let _ = writeln!(
                s,
                "{:<32} {:>5} {:>7} {:>7} {:>8} {:>10.0}",
                op.title(),
                rows.len(),
                count(Side::Old),
                count(Side::New),
                failures,
                mean
            );
        }
        for r in self.results.iter().filter(|r| r.side.is_err()) {
            let _ = writeln!(
                s,
                "FAILED {} cut at {} ms: {}",
                r.op.key(),
                r.delay.as_millis(),
                r.side.as_ref().err().map(String::as_str).unwrap_or("")
            );
        }
        s
    }

    pub fn failures(&self) -> usize {
        self.results.iter().filter(|r| r.side.is_err()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_replays() {
        let mut a = Rng::new(7);
        let mut b = Rng::new(7);
        let max = Duration::from_secs(5);
        for _ in 0..100 {
            let d = a.below(max);
            assert_eq!(d, b.below(max));
            assert!(d <= max);
        }
    }
}
