//! `stratum boot-complete`: run after every boot by `stratum-boot-complete.service`.
//!
//! 1. Repairs a missing or corrupt grubenv (GRUB ignored it and booted the default entry).
//! 2. If GRUB fell back from a deployment on trial, makes the running deployment the default,
//!    keeps the failed one (marked, never re-entered automatically) and records the fallback.
//! 3. Runs the health checks; during a trial, success blesses the deployment and a failed
//!    required check reboots (or only reports, with `on-failure = "none"`), so that GRUB
//!    counts the failed try.

use std::time::Duration;

use anyhow::{Context, Result};

use super::health::{self, CheckResult};
use super::{self as bootstate, BootState, Fallback};
use crate::bootset::grubenv;
use crate::config::{Config, OnFailure};
use crate::state::Session;

/// What boot-complete concluded about this boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The deployment on trial passed its required checks and is blessed.
    Blessed,
    /// No trial was in progress; the checks passed (or only wanted ones failed).
    NoTrial,
    /// A required check failed.
    CheckFailed,
    /// GRUB fell back from the deployment on trial; the running one is the default again.
    FellBack,
}

/// What to do about a failed required check during a trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureAction {
    /// Reboot, so GRUB counts the failed try.
    Reboot,
    /// Only report it (`on-failure = "none"`).
    None,
}

/// What boot-complete concluded.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    /// The booted deployment.
    pub booted: String,
    pub result: Verdict,
    pub checks: Vec<CheckResult>,
    /// Set when GRUB fell back from a deployment during this boot.
    pub fallback: Option<Fallback>,
    pub grubenv_repaired: Option<String>,
    /// The action taken on a failed required check.
    pub action: Option<FailureAction>,
}

/// Runs boot-complete on the booted system.
pub fn run(session: &Session) -> Result<Outcome> {
    let _lock = session.begin()?;
    let st = session.state()?;
    let sysroot = &st.sysroot;
    let booted = st
        .booted
        .clone()
        .context("the running system was not booted from a deployment of this sysroot")?;
    let config = Config::load(&bootstate::config_root(sysroot, Some(&booted)))?;
    let (mut env, problem) = bootstate::load_env(sysroot)?;
    if let Some(p) = &problem {
        eprintln!("Repairing the GRUB environment: {p}");
        grubenv::store(&bootstate::grubenv_path(sysroot), &env)?;
    }
    let booted_id = booted.id();
    let mut outcome = Outcome {
        booted: booted_id.clone(),
        result: Verdict::NoTrial,
        checks: Vec::new(),
        fallback: None,
        grubenv_repaired: problem,
        action: None,
    };

    // GRUB fell back: the trial deployment failed its tries and entry 1 is running.
    if let Some(failed_id) = env
        .get(bootstate::FALLBACK)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
    {
        let failed = st.deployments.iter().find(|d| d.id() == failed_id).cloned();
        let tries = env
            .get(bootstate::TRIES)
            .and_then(|t| t.parse().ok())
            .unwrap_or(config.boot_tries);
        let fb = Fallback {
            from: failed_id.clone(),
            to: booted_id.clone(),
            tries,
            checksum: failed
                .as_ref()
                .map(|d| d.checksum.clone())
                .unwrap_or_default(),
        };
        let mut state = BootState::load(sysroot, &booted.stateroot);
        state.fallbacks.push(fb.clone());
        state.bless(&booted);
        state.store(sysroot, &booted.stateroot)?;
        // The running deployment becomes the default; the failed one stays as entry 1.
        let mut list = vec![booted.clone()];
        list.extend(failed.clone());
        list.extend(
            st.deployments
                .iter()
                .filter(|d| **d != booted && Some(*d) != failed.as_ref())
                .cloned(),
        );
        env.unset(bootstate::FALLBACK);
        env.unset(bootstate::TRIAL);
        env.unset(bootstate::COUNTER);
        env.set(bootstate::SUCCESS, "1");
        grubenv::store(&bootstate::grubenv_path(sysroot), &env)?;
        super::commit::write(&st, &list)?;
        eprintln!("Fell back from {failed_id} after {tries} failed boots; {booted_id} is the default again.");
        outcome.fallback = Some(fb);
        outcome.result = Verdict::FellBack;
        return Ok(outcome);
    }

    let on_trial = env.get(bootstate::TRIAL) == Some(booted_id.as_str())
        && env.get(bootstate::SUCCESS) != Some("1");
    outcome.checks = health::run_checks(
        &bootstate::config_root(sysroot, Some(&booted)),
        Duration::from_secs(config.health_check_timeout),
    )?;
    for c in &outcome.checks {
        let kind = if c.required { "required" } else { "wanted" };
        if c.passed {
            eprintln!("health check {kind}/{} passed", c.name);
        } else {
            eprintln!("health check {kind}/{} FAILED: {}", c.name, c.detail);
        }
    }
    let failed: Vec<&CheckResult> = outcome
        .checks
        .iter()
        .filter(|c| c.required && !c.passed)
        .collect();
    // A trial armed for another deployment: the boot set that arms it was swapped in but
    // GRUB read the previous one (a power cut between the swap and the boot partition's
    // journal reaching the disk; Linux replays the journal, GRUB does not). Blessing now
    // would disarm the trial of the deployment that boots next; leave it armed.
    let other_trial = env
        .get(bootstate::TRIAL)
        .filter(|t| !t.is_empty() && *t != booted_id.as_str())
        .filter(|_| env.get(bootstate::SUCCESS) != Some("1"))
        .map(str::to_string);
    if failed.is_empty() {
        if let Some(t) = other_trial {
            eprintln!(
                "{booted_id} passed its health checks; {t} is on trial and boots next, its trial \
                 stays armed"
            );
            outcome.result = Verdict::NoTrial;
            return Ok(outcome);
        }
        bootstate::bless(sysroot, &booted)?;
        outcome.result = if on_trial {
            Verdict::Blessed
        } else {
            Verdict::NoTrial
        };
        return Ok(outcome);
    }
    outcome.result = Verdict::CheckFailed;
    if on_trial {
        outcome.action = Some(match config.on_failure {
            OnFailure::Reboot => FailureAction::Reboot,
            OnFailure::None => FailureAction::None,
        });
    }
    Ok(outcome)
}

/// The one-line summary for `systemctl status` and the journal.
pub fn summary(o: &Outcome) -> String {
    let failed: Vec<&str> = o
        .checks
        .iter()
        .filter(|c| c.required && !c.passed)
        .map(|c| c.name.as_str())
        .collect();
    match o.result {
        Verdict::Blessed => format!("{} passed its health checks and is blessed", o.booted),
        Verdict::FellBack => match &o.fallback {
            Some(f) => format!(
                "fell back from {} after {} failed boots; running {}",
                f.from, f.tries, f.to
            ),
            None => "fell back".into(),
        },
        Verdict::CheckFailed => {
            format!("required health checks failed: {}", failed.join(", "))
        }
        Verdict::NoTrial => format!("{} is running; no trial in progress", o.booted),
    }
}
