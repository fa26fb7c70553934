//! The operations that are cut: what the cut boot runs, which machine state it starts from,
//! and how the check boot's findings tell the old state from the new one.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

use super::verify::{Checked, Deployment};
use super::{Rig, BEGIN};

/// The operations whose power cuts are tested.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Op {
    /// `stratum upgrade`, then a reboot: the staged deployment is written at shutdown.
    Upgrade,
    /// `stratum kargs --append`.
    Kargs,
    /// `stratum rollback`.
    Rollback,
    /// `stratum cleanup -r` (removes the rollback deployment).
    Cleanup,
    /// `stratum initramfs --enable`, then a reboot (finalized at shutdown).
    Initramfs,
    /// `stratum-boot-complete.service` blessing the deployment on its first trial boot.
    Bless,
}

/// Which state the check boot found after a cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Old,
    New,
}

/// The machine states cuts start from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Base {
    /// v1 as installed.
    Fresh,
    /// v2 staged and finalized: the next boot is v2's first trial boot.
    Trial,
    /// v2 booted and blessed, v1 its rollback deployment.
    Updated,
}

impl Op {
    pub const ALL: [Op; 6] = [
        Op::Upgrade,
        Op::Kargs,
        Op::Rollback,
        Op::Cleanup,
        Op::Initramfs,
        Op::Bless,
    ];

    /// How long the operation takes on a 2-core TCG host, as the soak measured it: the window
    /// the single cuts of `make test` draw their moment from.
    pub fn typical(self) -> Duration {
        Duration::from_millis(match self {
            Op::Upgrade => 40_000,
            Op::Kargs => 3_000,
            Op::Rollback => 3_000,
            Op::Cleanup => 3_000,
            Op::Initramfs => 30_000,
            Op::Bless => 2_000,
        })
    }

    /// A short name (`SOAK_KINDS`, console marker, file names).
    pub fn key(self) -> &'static str {
        match self {
            Op::Upgrade => "upgrade",
            Op::Kargs => "kargs",
            Op::Rollback => "rollback",
            Op::Cleanup => "cleanup",
            Op::Initramfs => "initramfs",
            Op::Bless => "bless",
        }
    }

    /// What is cut, for the report.
    pub fn title(self) -> &'static str {
        match self {
            Op::Upgrade => "upgrade + finalize at shutdown",
            Op::Kargs => "kargs --append",
            Op::Rollback => "rollback",
            Op::Cleanup => "cleanup -r",
            Op::Initramfs => "initramfs --enable + finalize",
            Op::Bless => "boot-complete blessing",
        }
    }

    pub fn from_key(key: &str) -> Result<Op> {
        Op::ALL
            .into_iter()
            .find(|o| o.key() == key)
            .with_context(|| format!("unknown operation {key:?}"))
    }

    pub(super) fn base(self) -> Base {
        match self {
            Op::Upgrade | Op::Kargs | Op::Initramfs => Base::Fresh,
            Op::Bless => Base::Trial,
            Op::Rollback | Op::Cleanup => Base::Updated,
        }
    }

    /// The console line after which the power is cut.
    pub fn marker(self) -> String {
        format!("{BEGIN} {}", self.key())
    }

    /// The scenario: `boot_1` runs the operation in the cut boot, `boot_2` is the check boot.
    /// Operations finalized at shutdown end with the reboot (their span runs to QEMU's exit);
    /// the others print the end line.
    pub(super) fn cut_boot(self) -> String {
        let op = match self {
            Op::Upgrade => {
                "mount_repo; cut_begin upgrade; stratum upgrade; result op_rc $?; \
                 umount /run/stratum-test/repo; request_reboot"
            }
            Op::Kargs => {
                "cut_begin kargs; stratum kargs --append soak.cut=1; result op_rc $?; cut_end"
            }
            Op::Rollback => "cut_begin rollback; stratum rollback; result op_rc $?; cut_end",
            Op::Cleanup => "cut_begin cleanup; stratum cleanup -r; result op_rc $?; cut_end",
            Op::Initramfs => {
                "cut_begin initramfs; stratum initramfs --enable; result op_rc $?; request_reboot"
            }
            // The operation is a service of the boot itself (its drop-in prints the lines),
            // which runs before the scenario: a cut may come before the scenario's first boot.
            Op::Bless => "check_boot",
        };
        format!("boot_1() {{ {op}; }}\nboot_2() {{ check_boot; }}\n")
    }

    /// The scenario boots a check boot may be: the blessing is cut before or after the cut
    /// boot's scenario runs.
    pub(super) fn check_boots(self) -> &'static [u32] {
        match self {
            Op::Bless => &[1, 2],
            _ => &[2],
        }
    }

    /// Which side the check boot is on, or why it is neither.
    pub(super) fn classify(self, rig: &Rig, c: &Checked) -> Result<Side> {
        let booted = &c.booted;
        match self {
            Op::Upgrade => side_of(booted, &rig.v1, &rig.v2),
            Op::Rollback => side_of(booted, &rig.v2, &rig.v1),
            Op::Kargs => {
                ensure!(booted.checksum == rig.v1, "booted {}", booted.id);
                let new = c.cmdline.split_whitespace().any(|a| a == "soak.cut=1");
                let default_has = c.default.kargs.iter().any(|a| a == "soak.cut=1");
                // Booted with the argument: the new boot set, which must be the default.
                // Booted without it: the old boot set; the new one may be the default all
                // the same, when the cut came after the swap but before the boot partition's
                // journal reached the disk (Linux replays the journal, GRUB does not): it
                // boots next.
                ensure!(
                    !new || default_has,
                    "booted with soak.cut=1 but the default entry does not have it"
                );
                Ok(if new { Side::New } else { Side::Old })
            }
            Op::Cleanup => {
                ensure!(booted.checksum == rig.v2, "booted {}", booted.id);
                match c.deployments {
                    1 => Ok(Side::New),
                    2 => Ok(Side::Old),
                    n => bail!("{n} deployments after cleanup -r"),
                }
            }
            Op::Initramfs => {
                ensure!(booted.checksum == rig.v1, "booted {}", booted.id);
                Ok(if booted.serial == 0 {
                    Side::Old
                } else {
                    Side::New
                })
            }
            Op::Bless => {
                ensure!(booted.checksum == rig.v2, "booted {}", booted.id);
                let env = &c.grubenv_before;
                let trial = env.get("stratum_trial").map(String::as_str);
                if env.get("boot_success").map(String::as_str) == Some("1") {
                    Ok(Side::New)
                } else if trial == Some(booted.id.as_str()) {
                    Ok(Side::Old)
                } else {
                    bail!("neither blessed nor on trial: grubenv {env:?}")
                }
            }
        }
    }
}

fn side_of(booted: &Deployment, old: &str, new: &str) -> Result<Side> {
    if booted.checksum == old {
        Ok(Side::Old)
    } else if booted.checksum == new {
        Ok(Side::New)
    } else {
        bail!(
            "booted {}, neither the old nor the new deployment",
            booted.id
        )
    }
}
