//! Automatic updates: what `stratum-automatic-update.service` does on each run of its timer,
//! by the policy of `[automatic-update]` in `stratum.toml` (rpm-ostree's
//! `AutomaticUpdatePolicy`):
//!
//! - `none`: nothing;
//! - `check`: fetch the ref's newest commit (metadata only) and remember it as the cached update;
//! - `stage`: deploy it staged, so that the next reboot, whoever makes it, boots it;
//! - `apply`: stage, then reboot while a reboot window is open. A run outside every window
//!   leaves the update staged; a later run inside one reboots into it.
//!
//! Each run's outcome is recorded in the stateroot's `/var/lib/stratum/automatic-update.json`
//! (written atomically), which `status` shows: the last check, what it found, and the cached
//! update.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::update::{self, Target, UpdateOptions, UpdateResult};
use crate::config::{window, AutomaticUpdate, Config, Network, Policy};
use crate::state::State;
use crate::sysroot::Sysroot;

/// An update found by the last check (rpm-ostree's `cached-update`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedUpdate {
    pub checksum: String,
    pub version: Option<String>,
    pub timestamp: u64,
    /// Whether it is deployed (staged, or the default) and waits for a reboot.
    pub staged: bool,
}

/// The last automatic run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Record {
    pub policy: Policy,
    /// Unix time of the run.
    pub last_check: u64,
    /// What it found or did, for people.
    pub result: String,
    /// Whether the run failed (`result` says why).
    #[serde(default)]
    pub failed: bool,
    pub cached_update: Option<CachedUpdate>,
}

fn record_path(sysroot: &Sysroot, stateroot: &str) -> PathBuf {
    sysroot
        .stateroot_dir(stateroot)
        .join("var/lib/stratum/automatic-update.json")
}

impl Record {
    /// The last run's record; `None` before the first, or when the file is unreadable (the next
    /// run replaces it).
    pub fn load(sysroot: &Sysroot, stateroot: &str) -> Option<Record> {
        let text = std::fs::read_to_string(record_path(sysroot, stateroot)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn store(&self, sysroot: &Sysroot, stateroot: &str) -> Result<()> {
        let p = record_path(sysroot, stateroot);
        std::fs::create_dir_all(p.parent().context("state dir")?)
            .with_context(|| format!("creating {}", p.display()))?;
        crate::fsutil::atomic_write(&p, serde_json::to_string_pretty(self)?.as_bytes(), 0o644)
    }
}

/// The configuration that governs automatic updates: the running system's, or on another
/// sysroot that of its default deployment.
pub fn config(st: &State) -> Result<Config> {
    let current = st.booted.as_ref().or(st.deployments.first());
    Config::load(&crate::counting::config_root(&st.sysroot, current))
}

/// What a run did.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// `None` when the policy is `none` (nothing was done or recorded).
    pub record: Option<Record>,
    /// The caller should reboot now (`apply`, an update is staged, a window is open).
    pub reboot: bool,
}

/// How a run of `policy` updates, staging when `stage`.
fn options(policy: Policy, stage: bool) -> UpdateOptions {
    UpdateOptions {
        check: policy == Policy::Check,
        stage,
        ..Default::default()
    }
}

/// The network half of a run of `policy` ([`update::fetch`]), without the sysroot lock:
/// `None` when the policy is `none`. Its result, failed or not, goes to [`run`].
pub fn fetch(
    st: &State,
    stateroot: &str,
    policy: Policy,
    stage: bool,
    limits: &Network,
) -> Option<Result<update::Fetched>> {
    (policy != Policy::None).then(|| {
        update::fetch(
            st,
            stateroot,
            &Target::Upgrade,
            options(policy, stage),
            limits,
        )
    })
}

/// Runs the policy `auto` at `now` (Unix time) for `stateroot` with what [`fetch`] brought,
/// staging updates when `stage` (on the booted system; otherwise they are written into the
/// boot set at once); the caller holds the sysroot lock. A failed run (its fetch included)
/// is recorded, then returned as the error.
pub fn run(
    st: &State,
    stateroot: &str,
    auto: &AutomaticUpdate,
    now: u64,
    stage: bool,
    fetched: Option<Result<update::Fetched>>,
) -> Result<Outcome> {
    let policy = auto.policy;
    let Some(fetched) = fetched.filter(|_| policy != Policy::None) else {
        return Ok(Outcome {
            record: None,
            reboot: false,
        });
    };
    let opts = options(policy, stage);
    let mut record = Record {
        policy,
        last_check: now,
        result: String::new(),
        failed: false,
        cached_update: None,
    };
    let r = fetched.and_then(|f| update::update(st, stateroot, &Target::Upgrade, opts, &f));
    let r = match r {
        Ok(r) => r,
        Err(e) => {
            record.failed = true;
            record.result = format!("failed: {e:#}");
            // The error is what matters; a record that cannot be written is only logged.
            if let Err(w) = record.store(&st.sysroot, stateroot) {
                tracing::warn!("recording the automatic update: {w:#}");
            }
            return Err(e);
        }
    };
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let cached = |checksum: &str, staged: bool| {
        let info = crate::repo::commit_info(&repo, checksum).unwrap_or_default();
        CachedUpdate {
            checksum: checksum.to_string(),
            version: info.version,
            timestamp: info.timestamp,
            staged,
        }
    };
    // An update deployed earlier that still waits for a reboot (this run's or a previous one's).
    // (On a sysroot that is not booted, only a staged deployment waits.)
    let waiting = st.pending_deployment(stateroot).filter(|p| {
        st.staged.as_ref().is_some_and(|s| s.checksum == p.checksum)
            || st.booted.as_ref().is_some_and(|b| b != p)
    });
    match &r {
        UpdateResult::Available { to, .. } | UpdateResult::Downloaded { to, .. } => {
            record.cached_update = Some(cached(to, false));
            record.result = format!(
                "update available: {}",
                describe(record.cached_update.as_ref())
            );
        }
        UpdateResult::Deployed(d) => {
            record.cached_update = Some(cached(&d.checksum, true));
            record.result = format!("staged {}", describe(record.cached_update.as_ref()));
        }
        UpdateResult::NoChange { .. } | UpdateResult::Older { .. } => {
            record.cached_update = waiting.as_ref().map(|p| cached(&p.checksum, true));
            record.result = match &record.cached_update {
                Some(c) => format!("no new update; {} waits for a reboot", describe(Some(c))),
                None => "no update".to_string(),
            };
        }
    }
    let staged = record.cached_update.as_ref().is_some_and(|c| c.staged);
    let mut reboot = false;
    if policy == Policy::Apply && staged {
        if window::is_open(&auto.reboot_windows, now) {
            reboot = true;
            record.result.push_str("; rebooting into it");
        } else if let Some(next) = window::next_opening(&auto.reboot_windows, now) {
            record.result.push_str(&format!(
                "; the reboot waits for the next window ({})",
                update::format_time(next)
            ));
        }
    }
    record.store(&st.sysroot, stateroot)?;
    Ok(Outcome {
        record: Some(record),
        reboot,
    })
}

/// `VERSION (CHECKSUM)` of an update, for people.
fn describe(c: Option<&CachedUpdate>) -> String {
    match c {
        Some(c) => format!(
            "{} ({})",
            c.version.as_deref().unwrap_or("no version"),
            c.checksum
        ),
        None => "nothing".into(),
    }
}
