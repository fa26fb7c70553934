//! `stratum boot-complete`: run after every boot by stratum-boot-complete.service.

use anyhow::Result;

use super::{reboot, Globals};
use crate::counting::complete::{self, FailureAction, Verdict};
use crate::counting::{load_env, trial_status};

/// Assess this boot: run health checks, bless or reject a deployment on trial, handle a
/// fallback (run after every boot by stratum-boot-complete.service)
#[derive(Debug, clap::Args)]
pub struct BootCompleteOpts {
    /// Only print the boot-counting state (trial, tries left, pending fallback); change nothing
    #[arg(long)]
    pub status: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(g: &Globals, o: &BootCompleteOpts) -> Result<i32> {
    let session = g.session();
    if o.status {
        let (env, problem) = load_env(&session.sysroot)?;
        let t = trial_status(&env, problem);
        if o.json {
            return super::print_json(&t).map(|_| 0);
        }
        match &t.trial {
            Some(id) => println!(
                "trial: {id}, {} of {} tries left",
                t.tries_left.map_or("?".into(), |n| n.to_string()),
                t.tries.map_or("?".into(), |n| n.to_string())
            ),
            None => println!("no trial in progress"),
        }
        if let Some(f) = &t.pending_fallback {
            println!("GRUB fell back from {f}; the next `stratum boot-complete` makes the running deployment the default");
        }
        if let Some(p) = &t.grubenv_problem {
            println!("grubenv: {p}");
        }
        return Ok(0);
    }
    let outcome = match complete::run(&session) {
        Ok(o) => o,
        Err(e) => {
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status(&format!("failed: {e:#}"))],
            );
            return Err(e);
        }
    };
    let summary = complete::summary(&outcome);
    eprintln!("{summary}");
    if o.json {
        super::print_json(&outcome)?;
    }
    if outcome.action == Some(FailureAction::Reboot) {
        // Queue the reboot before the unit finishes: units ordered after this one then see
        // the machine going down rather than a finished boot.
        eprintln!("Rebooting so the failed try is counted.");
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Status(&format!(
                "{summary}; rebooting"
            ))],
        );
        reboot()?;
        return Ok(1);
    }
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ],
    );
    Ok(if outcome.result == Verdict::CheckFailed {
        1
    } else {
        0
    })
}
