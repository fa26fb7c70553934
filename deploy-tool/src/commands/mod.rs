//! One module per verb: its arguments (clap), its output for people (stderr) and scripts
//! (stdout, `--json`), and the calls into the mechanisms below. Nothing below this folder
//! imports it.

pub mod boot_complete;
pub mod bootloader;
pub mod cleanup;
pub mod compose;
pub mod finalize;
pub mod initramfs;
pub mod initramfs_etc;
pub mod install;
pub mod kargs;
pub mod packages;
pub mod pin;
pub mod remote;
pub mod rollback;
pub mod status;
pub mod update;

use std::path::PathBuf;

use anyhow::{Context, Result};

use crate::state::Session;
use crate::sysroot::Sysroot;

/// Exit status of a command that found nothing to do, when asked to say so
/// (`--unchanged-exit-77`, `upgrade --check`).
pub const EXIT_UNCHANGED: i32 = 77;

/// Options every verb that works on a sysroot accepts, before or after its name.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Global options")]
pub struct Globals {
    /// The sysroot to operate on: a directory holding ostree/ and boot/ [default: /]
    #[arg(long, global = true, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// The stateroot (OS name) to operate on [default: the booted one, or "default"]
    #[arg(long, global = true, value_name = "NAME", value_parser = parse_stateroot)]
    pub stateroot: Option<String>,
    /// Fail at once if another command holds the sysroot lock, instead of waiting
    #[arg(long, global = true)]
    pub no_wait: bool,
}

impl Globals {
    /// The sysroot to use: `--sysroot`, else `/`. On a booted system `/ostree` is a symlink
    /// into the physical root (`/sysroot/ostree`) and `/boot` is the boot partition, so `/`
    /// sees the whole sysroot, as OSTree's default sysroot does. `STRATUM_RUN_DIR` and
    /// `STRATUM_PROC_CMDLINE` replace `/run/stratum` and `/proc/cmdline` (for tests).
    pub fn sysroot(&self) -> Sysroot {
        let mut s = Sysroot::new(self.sysroot.clone().unwrap_or_else(|| "/".into()));
        if let Some(d) = std::env::var_os("STRATUM_RUN_DIR") {
            s.run_dir = d.into();
        }
        if let Some(p) = std::env::var_os("STRATUM_PROC_CMDLINE") {
            s.proc_cmdline = p.into();
        }
        s
    }

    /// The session the verb runs in.
    pub fn session(&self) -> Session {
        Session {
            sysroot: self.sysroot(),
            stateroot: self.stateroot.clone(),
            no_wait: self.no_wait,
        }
    }
}

/// Checks `--stateroot` where it is parsed, so no verb sees a name that would make a path
/// outside `ostree/deploy` (`../x`) or an odd boot entry name.
fn parse_stateroot(name: &str) -> Result<String> {
    crate::sysroot::validate_stateroot(name)?;
    Ok(name.to_string())
}

/// Options shared by the verbs that make a new deployment.
#[derive(Debug, clap::Args)]
pub struct NewDeploymentOpts {
    /// Write the boot set now instead of staging the deployment until shutdown
    #[arg(long)]
    pub apply_now: bool,
    /// Stage even on a sysroot that is not the booted one (finalize with `finalize-staged`)
    #[arg(long, hide = true)]
    pub stage: bool,
    /// Reboot into the new deployment when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

impl NewDeploymentOpts {
    /// New deployments are staged on the booted system (finalized at shutdown) unless
    /// `--apply-now`; on any other sysroot they are written at once.
    pub fn stage(&self, g: &Globals) -> bool {
        if self.apply_now {
            return false;
        }
        self.stage || (g.sysroot.is_none() && g.sysroot().is_booted_system())
    }
}

/// Reboots the machine (through systemd, so units stop in order).
pub fn reboot() -> Result<()> {
    crate::cmd::run(std::process::Command::new("systemctl").arg("reboot")).context("rebooting")
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
