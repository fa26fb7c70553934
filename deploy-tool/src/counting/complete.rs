//! `stratum boot-complete`: run after every boot by `stratum-boot-complete.service`.
//!
//! 1. Repairs a missing or corrupt grubenv (GRUB ignored it and booted the default entry).
//! 2. If the bootloader fell back from a deployment on trial (GRUB sets `stratum_fallback`;
//!    systemd-boot leaves the trial's entry at `+0`), makes the running deployment the default,
//!    keeps the failed one (marked, never re-entered automatically) and records the fallback.
//! 3. Runs the health checks; during a trial, success blesses the deployment and a failed
//!    required check reboots (or only reports, with `on-failure = "none"`), so that GRUB
//!    counts the failed try.
//! 4. Runs the hooks of the verdict: `green.d` when every required check passed, `red.d` when
//!    one failed (before the reboot). Their failures are reported and change nothing.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use super::health::{self, CheckResult, ScriptRun};
use super::scripts::Set;
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
    /// The `green.d` or `red.d` hooks run after the verdict.
    pub hooks: Vec<ScriptRun>,
}

/// Runs boot-complete on the booted system.
pub fn run(session: &Session) -> Result<Outcome> {
    let (mut outcome, root, timeout) = assess(session)?;
    // The sysroot lock is released by now: a hook may run `stratum` itself (a `red.d` hook
    // that rolls back, say), which would otherwise wait for the lock until its timeout.
    outcome.hooks = run_hooks(&root, outcome.result, timeout);
    Ok(outcome)
}

/// Runs the hooks of `verdict` of the OS whose root is `root`, reporting each on stderr. A
/// fallback runs none: no check ran in this boot.
fn run_hooks(root: &Path, verdict: Verdict, timeout: Duration) -> Vec<ScriptRun> {
    let set = match verdict {
        Verdict::Blessed | Verdict::NoTrial => Set::Green,
        Verdict::CheckFailed => Set::Red,
        Verdict::FellBack => return Vec::new(),
    };
    let kind = if set == Set::Green { "green" } else { "red" };
    let hooks = health::run_hooks(root, set, timeout).unwrap_or_else(|e| {
        // A hook never changes the verdict, not even one that cannot be found.
        eprintln!("{kind} hooks not run: {e:#}");
        Vec::new()
    });
    for h in &hooks {
        report(&format!("{kind} hook {}", h.name), h);
    }
    hooks
}

/// Prints how the check or hook `label` ran, for the journal.
fn report(label: &str, r: &ScriptRun) {
    if r.passed {
        eprintln!("{label} passed");
    } else {
        eprintln!("{label} FAILED: {}", r.detail);
    }
}

/// Decides about this boot under the sysroot lock: the outcome, the root the scripts are read
/// from and their timeout.
fn assess(session: &Session) -> Result<(Outcome, PathBuf, Duration)> {
    let _lock = session.begin()?;
    let st = session.state()?;
    let sysroot = &st.sysroot;
    let booted = st
        .booted
        .clone()
        .context("the running system was not booted from a deployment of this sysroot")?;
    let root = bootstate::config_root(sysroot, Some(&booted));
    let config = Config::load(&root)?;
    let timeout = Duration::from_secs(config.health_check_timeout);
    let (mut env, problem) = bootstate::load_env(sysroot)?;
    if let Some(p) = &problem {
        eprintln!("Repairing the GRUB environment: {p}");
        grubenv::store(&bootstate::grubenv_path(sysroot), &env)?;
    }
    // systemd-boot counts in the entry's file name and records no fallback itself.
    if let Some(failed) = bootstate::esp_fallback(sysroot, &env, &booted)? {
        env.set(bootstate::FALLBACK, failed);
    }
    let booted_id = booted.id();
    let mut outcome = Outcome {
        booted: booted_id.clone(),
        result: Verdict::NoTrial,
        checks: Vec::new(),
        fallback: None,
        grubenv_repaired: problem,
        action: None,
        hooks: Vec::new(),
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
        return Ok((outcome, root, timeout));
    }

    let on_trial = env.get(bootstate::TRIAL) == Some(booted_id.as_str())
        && env.get(bootstate::SUCCESS) != Some("1");
    outcome.checks = health::run_checks(&root, timeout)?;
    for c in &outcome.checks {
        let kind = if c.required { "required" } else { "wanted" };
        report(&format!("health check {kind}/{}", c.run.name), &c.run);
    }
    let failed: Vec<&CheckResult> = outcome
        .checks
        .iter()
        .filter(|c| c.required && !c.run.passed)
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
            return Ok((outcome, root, timeout));
        }
        bootstate::bless(sysroot, &booted)?;
        outcome.result = if on_trial {
            Verdict::Blessed
        } else {
            Verdict::NoTrial
        };
        return Ok((outcome, root, timeout));
    }
    outcome.result = Verdict::CheckFailed;
    if on_trial {
        outcome.action = Some(match config.on_failure {
            OnFailure::Reboot => FailureAction::Reboot,
            OnFailure::None => FailureAction::None,
        });
    }
    Ok((outcome, root, timeout))
}

/// The one-line summary for `systemctl status` and the journal.
pub fn summary(o: &Outcome) -> String {
    let failed: Vec<&str> = o
        .checks
        .iter()
        .filter(|c| c.required && !c.run.passed)
        .map(|c| c.run.name.as_str())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// A hook at `path` under `root` that appends its name to `root/ran`, then exits `code`.
    fn hook(root: &Path, path: &str, code: i32) {
        let p = root.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        let log = root.join("ran");
        std::fs::write(
            &p,
            format!(
                "#!/bin/sh\necho $(basename $0) >> {}\nexit {code}\n",
                log.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// The hooks that ran, in order; empties the log.
    fn ran(root: &Path) -> Vec<String> {
        let text = std::fs::read_to_string(root.join("ran")).unwrap_or_default();
        let _ = std::fs::remove_file(root.join("ran"));
        text.lines().map(str::to_string).collect()
    }

    #[test]
    fn the_verdict_chooses_the_hooks() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        hook(r, "etc/stratum/health.d/green.d/20-green", 0);
        hook(r, "usr/lib/greenboot/green.d/10-green.sh", 0);
        hook(r, "usr/lib/stratum/health.d/red.d/20-red", 0);
        hook(r, "etc/greenboot/red.d/10-red.sh", 0);
        let t = Duration::from_secs(10);
        for v in [Verdict::Blessed, Verdict::NoTrial] {
            let h = run_hooks(r, v, t);
            assert_eq!(ran(r), ["10-green.sh", "20-green"], "{v:?}");
            assert!(h.iter().all(|h| h.passed) && h.len() == 2, "{h:?}");
        }
        run_hooks(r, Verdict::CheckFailed, t);
        assert_eq!(ran(r), ["10-red.sh", "20-red"]);
        // After a fallback no check ran in this boot: neither set runs.
        assert!(run_hooks(r, Verdict::FellBack, t).is_empty());
        assert!(ran(r).is_empty());
    }

    #[test]
    fn a_failed_hook_is_reported_and_the_rest_run() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        hook(r, "etc/greenboot/red.d/10-fails.sh", 4);
        hook(r, "etc/stratum/health.d/red.d/20-next", 0);
        let h = run_hooks(r, Verdict::CheckFailed, Duration::from_secs(10));
        assert_eq!(ran(r), ["10-fails.sh", "20-next"]);
        assert!(
            !h[0].passed && h[0].detail.starts_with("exit status: 4"),
            "{h:?}"
        );
        assert!(h[1].passed, "{h:?}");
    }
}
