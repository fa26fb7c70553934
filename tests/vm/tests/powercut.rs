//! VM scenarios of power cuts: one cut per operation kind (upgrade + finalize at shutdown,
//! kargs, rollback, cleanup, initramfs --enable, the boot-complete blessing), at a moment
//! drawn from the operation's typical duration; the machine must come up on the old or the new
//! state, consistent and with clean filesystems (see [`stratum_vmtests::cut`]). A disk
//! installed for systemd-boot is cut during the upgrade too. `make soak`
//! runs many more. `SOAK_SEED=N` replays the moments. Run with
//! `cargo test --release -p stratum-vmtests --test powercut -- --test-threads=1`.

use std::sync::{Mutex, OnceLock};

use anyhow::{anyhow, Result};
use libtest_mimic::Arguments;
use stratum_vmtests::cut::{Op, Rig, Rng};
use stratum_vmtests::{trial, Project};

type Shared = OnceLock<std::result::Result<Mutex<Rig>, String>>;

/// One image and its bases for all cuts of a bootloader (built on first use).
static RIG: Shared = OnceLock::new();
static RIG_SYSTEMD_BOOT: Shared = OnceLock::new();
static SEED: OnceLock<u64> = OnceLock::new();

/// Power cuts at random moments of `op` (a boot-set change) leave a machine that boots the
/// old or the new default, never a broken one. Boots: per cut, the interrupted run and the
/// check boot (GRUB under Secure Boot, systemd-boot without).
fn cut(op: Op, bootloader: &str) -> Result<()> {
    let (shared, name) = match bootloader {
        "grub" => (&RIG, "powercut"),
        _ => (&RIG_SYSTEMD_BOOT, "powercut-sdboot"),
    };
    let rig = shared
        .get_or_init(|| {
            // Without Secure Boot: each cut boots twice and proves the write order; the signed
            // chain on the ESP boots all the same.
            Project::locate()
                .map(Project::without_secure_boot)
                .and_then(|p| Rig::build_for(&p, name, bootloader))
                .map(Mutex::new)
                .map_err(|e| format!("{e:#}"))
        })
        .as_ref()
        .map_err(|e| anyhow!("building the test image: {e}"))?;
    let seed = *SEED.get_or_init(|| Rng::seed_from_env().unwrap_or(0));
    let delay = Rng::for_op(seed, op).below(op.typical());
    let mut rig = rig.lock().map_err(|_| anyhow!("an earlier cut panicked"))?;
    let r = rig.cut(op, delay, 0)?;
    eprintln!(
        "powercut {} ({bootloader}): SOAK_SEED={seed}, cut {} ms after the start{}: {:?} in {:.0} s",
        op.key(),
        delay.as_millis(),
        if r.killed { "" } else { " (it finished first)" },
        r.side,
        r.elapsed.as_secs_f64()
    );
    r.side.map(|_| ()).map_err(|e| {
        anyhow!(
            "{e}\nkept under {}",
            rig.dir.join(op.key()).join("000").display()
        )
    })
}

fn main() {
    let args = Arguments::from_args();
    let mut trials: Vec<_> = Op::ALL
        .into_iter()
        .map(|op| {
            let name: &'static str = match op {
                Op::Upgrade => "powercut::upgrade_and_finalize",
                Op::Kargs => "powercut::kargs_append",
                Op::Rollback => "powercut::rollback",
                Op::Cleanup => "powercut::cleanup",
                Op::Initramfs => "powercut::initramfs_enable",
                Op::Bless => "powercut::boot_complete_blessing",
            };
            trial(name, move || cut(op, "grub"))
        })
        .collect();
    // systemd-boot: the ESP written at shutdown (finalize). `SOAK_BOOTLOADER=systemd-boot
    // make soak` cuts every operation.
    trials.push(trial("powercut::systemd_boot_upgrade_and_finalize", || {
        cut(Op::Upgrade, "systemd-boot")
    }));
    libtest_mimic::run(&args, trials).exit();
}
