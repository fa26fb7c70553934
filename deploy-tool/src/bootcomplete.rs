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

use crate::bootstate::{self, BootState, Fallback};
use crate::config::{Config, OnFailure};
use crate::health::{self, CheckResult};
use crate::ops::Ops;

/// What boot-complete concluded.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Outcome {
    /// The booted deployment.
    pub booted: String,
    /// `blessed`, `no-trial`, `check-failed`, `fell-back`.
    pub result: String,
    pub checks: Vec<CheckResult>,
    /// Set when GRUB fell back from a deployment during this boot.
    pub fallback: Option<Fallback>,
    pub grubenv_repaired: Option<String>,
    /// The action taken on a failed required check (`reboot` or `none`).
    pub action: Option<String>,
}

/// Runs boot-complete on the booted system.
pub fn run(ops: &Ops) -> Result<Outcome> {
    let _lock = ops.begin()?;
    let st = ops.state()?;
    let booted = st
        .booted
        .clone()
        .context("the running system was not booted from a deployment of this sysroot")?;
    let config = Config::load(&bootstate::config_root(&ops.sysroot, Some(&booted)))?;
    let (mut env, problem) = bootstate::load_env(&ops.sysroot)?;
    if let Some(p) = &problem {
        eprintln!("Repairing the GRUB environment: {p}");
        crate::grubenv::store(&bootstate::grubenv_path(&ops.sysroot), &env)?;
    }
    let booted_id = bootstate::id(&booted);
    let mut outcome = Outcome {
        booted: booted_id.clone(),
        result: "no-trial".into(),
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
        let failed = st
            .deployments
            .iter()
            .find(|d| bootstate::id(d) == failed_id)
            .cloned();
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
        let mut state = BootState::load(&ops.sysroot, &booted.stateroot);
        state.fallbacks.push(fb.clone());
        state.bless(&booted);
        state.store(&ops.sysroot, &booted.stateroot)?;
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
        crate::grubenv::store(&bootstate::grubenv_path(&ops.sysroot), &env)?;
        ops.commit_boot_set(&st, list)?;
        eprintln!("Fell back from {failed_id} after {tries} failed boots; {booted_id} is the default again.");
        outcome.fallback = Some(fb);
        outcome.result = "fell-back".into();
        return Ok(outcome);
    }

    let on_trial = env.get(bootstate::TRIAL) == Some(booted_id.as_str())
        && env.get(bootstate::SUCCESS) != Some("1");
    outcome.checks = health::run_checks(
        &bootstate::config_root(&ops.sysroot, Some(&booted)),
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
    if failed.is_empty() {
        bootstate::bless(&ops.sysroot, &booted)?;
        outcome.result = if on_trial {
            "blessed".into()
        } else {
            "no-trial".into()
        };
        return Ok(outcome);
    }
    outcome.result = "check-failed".into();
    if on_trial {
        outcome.action = Some(match config.on_failure {
            OnFailure::Reboot => "reboot".into(),
            OnFailure::None => "none".into(),
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
    match o.result.as_str() {
        "blessed" => format!("{} passed its health checks and is blessed", o.booted),
        "fell-back" => match &o.fallback {
            Some(f) => format!(
                "fell back from {} after {} failed boots; running {}",
                f.from, f.tries, f.to
            ),
            None => "fell back".into(),
        },
        "check-failed" => format!("required health checks failed: {}", failed.join(", ")),
        _ => format!("{} is running; no trial in progress", o.booted),
    }
}
