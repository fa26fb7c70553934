//! Boot counting and automatic fallback: the trial of a new default deployment.
//!
//! State GRUB must see lives in `/boot/grubenv`, with greenboot's variable names:
//! - `boot_counter`: tries left; GRUB decrements it on each boot of the trial entry and, when
//!   it is `0`, boots entry 1 instead and sets `stratum_fallback`;
//! - `boot_success`: `1` once the deployment was blessed (its health checks passed);
//! - `stratum_trial`: the id of the deployment on trial. The generated `grub.cfg` counts only
//!   when this equals its own entry 0, so the trial can be armed *before* the new boot set is
//!   swapped in: an old menu never counts a trial meant for a new one.
//!
//! State only Stratum needs (blessed deployments, past fallbacks) lives in the stateroot's
//! `/var/lib/stratum/boot-state.json`.
//!
//! [`commit`] is the one way a boot set is written on a live sysroot: it arms (or ends) the
//! trial, hands the counting prelude to the writer, and undoes the arming when the write
//! fails before the swap. [`complete`] is `boot-complete`; [`health`] runs the checks and
//! hooks that [`scripts`] finds.

pub mod commit;
pub mod complete;
pub mod health;
pub mod scripts;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::bootset::bootloader::Bootloader;
use crate::bootset::grubenv::{self, GrubEnv, Loaded};
use crate::bootset::sdboot::EntryName;
use crate::bootset::{bls, esp};
use crate::sysroot::{Deployment, Sysroot};

pub const COUNTER: &str = "boot_counter";
pub const SUCCESS: &str = "boot_success";
pub const TRIAL: &str = "stratum_trial";
pub const TRIES: &str = "stratum_tries";
pub const FALLBACK: &str = "stratum_fallback";

pub fn grubenv_path(sysroot: &Sysroot) -> PathBuf {
    sysroot.boot().join("grubenv")
}

/// A fallback that happened.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub struct Fallback {
    /// The deployment that failed.
    pub from: String,
    /// The deployment that booted instead.
    pub to: String,
    /// Boots the failed deployment was given.
    pub tries: u32,
    /// Checksum of the failed deployment's commit (an upgrade does not deploy it again).
    pub checksum: String,
}

/// Stratum's own record of boot outcomes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BootState {
    /// Deployments that passed their health checks at least once.
    #[serde(default)]
    pub blessed: Vec<String>,
    /// Fallbacks, newest last.
    #[serde(default)]
    pub fallbacks: Vec<Fallback>,
}

fn state_path(sysroot: &Sysroot, stateroot: &str) -> PathBuf {
    sysroot
        .stateroot_dir(stateroot)
        .join("var/lib/stratum/boot-state.json")
}

impl BootState {
    pub fn load(sysroot: &Sysroot, stateroot: &str) -> BootState {
        std::fs::read_to_string(state_path(sysroot, stateroot))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    pub fn store(&self, sysroot: &Sysroot, stateroot: &str) -> Result<()> {
        let p = state_path(sysroot, stateroot);
        std::fs::create_dir_all(p.parent().context("state dir")?)?;
        crate::fsutil::atomic_write(&p, serde_json::to_string_pretty(self)?.as_bytes(), 0o644)
    }

    pub fn is_blessed(&self, d: &Deployment) -> bool {
        self.blessed.contains(&d.id())
    }

    pub fn bless(&mut self, d: &Deployment) {
        if !self.is_blessed(d) {
            self.blessed.push(d.id());
        }
    }

    /// The fallback away from `d`, if it failed.
    pub fn failure_of(&self, d: &Deployment) -> Option<&Fallback> {
        self.fallbacks.iter().rev().find(|f| f.from == d.id())
    }

    /// Whether the commit `checksum` failed to boot here.
    pub fn commit_failed(&self, checksum: &str) -> bool {
        self.fallbacks.iter().any(|f| f.checksum == checksum)
    }
}

/// The grubenv as found, repaired when it was corrupt or missing (GRUB's `save_env` needs an
/// existing, valid block to write into). Returns the env and what was wrong, if anything.
pub fn load_env(sysroot: &Sysroot) -> Result<(GrubEnv, Option<String>)> {
    let path = grubenv_path(sysroot);
    match grubenv::load(&path)? {
        Loaded::Valid(e) => Ok((e, None)),
        Loaded::Missing => Ok((
            GrubEnv::default(),
            Some(format!("{} was missing", path.display())),
        )),
        Loaded::Corrupt(why) => Ok((
            GrubEnv::default(),
            Some(format!("{} was corrupt ({why})", path.display())),
        )),
    }
}

/// The trial as `boot-complete --status` reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct TrialStatus {
    /// The deployment on trial, if a trial is armed and not yet blessed.
    pub trial: Option<String>,
    pub tries: Option<u32>,
    pub tries_left: Option<u32>,
    pub blessed: bool,
    /// GRUB fell back from this deployment and Stratum has not handled it yet.
    pub pending_fallback: Option<String>,
    pub grubenv_problem: Option<String>,
}

pub fn trial_status(env: &GrubEnv, problem: Option<String>) -> TrialStatus {
    let blessed = env.get(SUCCESS) == Some("1");
    let trial = env.get(TRIAL).filter(|t| !t.is_empty()).map(str::to_string);
    TrialStatus {
        trial: trial.clone().filter(|_| !blessed),
        tries: env.get(TRIES).and_then(|t| t.parse().ok()),
        tries_left: env.get(COUNTER).and_then(|t| t.parse().ok()),
        blessed,
        pending_fallback: env
            .get(FALLBACK)
            .filter(|f| !f.is_empty())
            .map(str::to_string),
        grubenv_problem: problem,
    }
}

/// Arms or ends the trial for a boot set about to be written whose default is `new_default`.
/// `old_default` is the current default. A new default that booted well before (blessed)
/// does not start a trial; `tries == 0` turns counting off. Returns the environment as it
/// was, when it was changed, so a boot set that then fails to be written can be undone.
pub fn prepare_for_boot_set(
    sysroot: &Sysroot,
    new_default: &Deployment,
    old_default: Option<&Deployment>,
    tries: u32,
    has_fallback_entry: bool,
) -> Result<Option<GrubEnv>> {
    let (mut env, problem) = load_env(sysroot)?;
    let before = env.clone();
    let state = BootState::load(sysroot, &new_default.stateroot);
    // The same deployment with other kernel arguments or initrds is still the same default.
    let same_default = old_default.map(Deployment::id) == Some(new_default.id());
    if same_default && problem.is_none() {
        return Ok(None);
    }
    if !same_default {
        env.unset(FALLBACK);
        if tries == 0 || state.is_blessed(new_default) || !has_fallback_entry {
            env.unset(COUNTER);
            env.unset(TRIAL);
            env.unset(TRIES);
            env.set(SUCCESS, "1");
        } else {
            env.set(COUNTER, tries.to_string());
            env.set(TRIES, tries.to_string());
            env.set(TRIAL, new_default.id());
            env.set(SUCCESS, "0");
        }
    }
    grubenv::store(&grubenv_path(sysroot), &env)?;
    Ok(Some(before))
}

/// Marks `d` good: clears the counter (GRUB stops counting; systemd-boot's entry loses its
/// `+LEFT-DONE`) and remembers it.
pub fn bless(sysroot: &Sysroot, d: &Deployment) -> Result<()> {
    if let Some(esp) = Bootloader::of(sysroot)?.esp(sysroot)? {
        if let Some(e) = esp_entry_of(sysroot, &esp, d)? {
            esp::bless(&esp, &e)?;
        }
    }
    let (mut env, _) = load_env(sysroot)?;
    env.set(SUCCESS, "1");
    env.unset(COUNTER);
    env.unset(FALLBACK);
    grubenv::store(&grubenv_path(sysroot), &env)?;
    let mut st = BootState::load(sysroot, &d.stateroot);
    st.bless(d);
    st.store(sysroot, &d.stateroot)
}

/// The ESP's default entry and the deployment it boots.
fn esp_default(sysroot: &Sysroot, esp: &Path) -> Result<Option<(EntryName, Deployment)>> {
    let Some(e) = esp::default_entry(esp)? else {
        return Ok(None);
    };
    let text = esp::read_entry(esp, &e)?;
    let boots = crate::bootset::entry::from_entry(sysroot, &bls::Entry::parse(&text)?)?;
    Ok(Some((e, boots)))
}

/// The ESP's default entry when it boots `d`.
fn esp_entry_of(sysroot: &Sysroot, esp: &Path, d: &Deployment) -> Result<Option<EntryName>> {
    Ok(esp_default(sysroot, esp)?
        .filter(|(_, boots)| boots.same_dir(d))
        .map(|(e, _)| e))
}

/// systemd-boot's fallback, as GRUB records it in `stratum_fallback`: the id of the
/// deployment on trial when its entry's tries are spent (`+0-N`, so systemd-boot booted the
/// next entry) and `booted` is another deployment. `None` with GRUB.
pub fn esp_fallback(
    sysroot: &Sysroot,
    env: &GrubEnv,
    booted: &Deployment,
) -> Result<Option<String>> {
    let Some(esp) = Bootloader::of(sysroot)?.esp(sysroot)? else {
        return Ok(None);
    };
    let Some((entry, failed)) = esp_default(sysroot, &esp)? else {
        return Ok(None);
    };
    let id = failed.id();
    let on_trial = env.get(TRIAL) == Some(id.as_str()) && env.get(SUCCESS) != Some("1");
    Ok((entry.is_bad() && on_trial && !failed.same_dir(booted)).then_some(id))
}

/// systemd-boot: the tries the new default's entry carries (`+N`). A trial armed for a new
/// default gets `tries`; a boot set rewritten during the trial of the same default (new
/// kernel arguments) keeps what its entry has left; no trial, none.
pub fn esp_tries(
    sysroot: &Sysroot,
    esp: &Path,
    new_default: &Deployment,
    old_default: Option<&Deployment>,
    tries: u32,
) -> Result<u32> {
    let (env, _) = load_env(sysroot)?;
    let id = new_default.id();
    if env.get(TRIAL) != Some(id.as_str()) || env.get(SUCCESS) == Some("1") {
        return Ok(0);
    }
    if old_default.map(Deployment::id) != Some(id) {
        return Ok(tries);
    }
    Ok(esp_entry_of(sysroot, esp, new_default)?
        .and_then(|e| e.counter)
        .map_or(0, |c| c.left))
}

/// The GRUB script that counts the trial of entry 0 (`entry0` is its id). Stock GRUB 2.06:
/// no arithmetic, so each decrement is spelled out.
pub fn grub_counting_script(entry0: &str, max_tries: u32) -> String {
    use std::fmt::Write as _;
    let q = crate::bootset::grubcfg::quote;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Boot counting: only for the deployment on trial, only until it is blessed."
    );
    let _ = writeln!(s, "set stratum_entry0={}", q(entry0));
    s.push_str("if [ -f /grubenv ]; then\n\tload_env --file /grubenv boot_counter boot_success stratum_trial\nfi\n");
    s.push_str("if [ \"${stratum_trial}\" = \"${stratum_entry0}\" ]; then\n\tif [ \"${boot_success}\" != \"1\" ]; then\n");
    s.push_str("\t\tif [ \"${boot_counter}\" = \"0\" ]; then\n");
    s.push_str("\t\t\tset default=1\n\t\t\tset stratum_fallback=\"${stratum_trial}\"\n\t\t\tsave_env --file /grubenv stratum_fallback\n");
    for n in 1..=max_tries {
        let _ = writeln!(s, "\t\telif [ \"${{boot_counter}}\" = \"{n}\" ]; then");
        let _ = writeln!(
            s,
            "\t\t\tset boot_counter={}\n\t\t\tsave_env --file /grubenv boot_counter",
            n - 1
        );
    }
    s.push_str("\t\tfi\n\tfi\nfi\n");
    s
}

/// The configuration root of the running system (or of `d` on another sysroot).
pub fn config_root(sysroot: &Sysroot, d: Option<&Deployment>) -> PathBuf {
    match d {
        Some(d) if sysroot.path != Path::new("/") => sysroot.deployment_root(d),
        _ => PathBuf::from("/"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dep(c: char) -> Deployment {
        Deployment {
            stateroot: "default".into(),
            checksum: c.to_string().repeat(64),
            serial: 0,
            bootcsum: "b".into(),
            bootserial: 0,
            kver: "k".into(),
            kargs: vec![],
            overlay_initrds: vec![],
        }
    }

    #[test]
    fn trial_arms_for_a_new_default_only() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        let s = Sysroot::new(d.path());
        let (v1, v2) = (dep('1'), dep('2'));
        prepare_for_boot_set(&s, &v2, Some(&v1), 3, true).unwrap();
        let (env, problem) = load_env(&s).unwrap();
        assert!(problem.is_none());
        assert_eq!(
            (env.get(COUNTER), env.get(SUCCESS), env.get(TRIAL)),
            (Some("3"), Some("0"), Some(v2.id().as_str()))
        );
        // Blessing ends it; rolling back to a blessed deployment starts none.
        bless(&s, &v2).unwrap();
        bless(&s, &v1).unwrap();
        prepare_for_boot_set(&s, &v1, Some(&v2), 3, true).unwrap();
        let (env, _) = load_env(&s).unwrap();
        assert_eq!((env.get(COUNTER), env.get(SUCCESS)), (None, Some("1")));
        // tries = 0 turns counting off.
        prepare_for_boot_set(&s, &dep('3'), Some(&v1), 0, true).unwrap();
        assert_eq!(load_env(&s).unwrap().0.get(COUNTER), None);
    }

    #[test]
    fn corrupt_grubenv_is_reported_and_repaired() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("boot")).unwrap();
        std::fs::write(d.path().join("boot/grubenv"), b"garbage").unwrap();
        let s = Sysroot::new(d.path());
        let (_, problem) = load_env(&s).unwrap();
        assert!(problem.unwrap().contains("corrupt"));
        prepare_for_boot_set(&s, &dep('1'), Some(&dep('1')), 3, true).unwrap();
        assert!(matches!(
            grubenv::load(&grubenv_path(&s)).unwrap(),
            Loaded::Valid(_)
        ));
    }

    #[test]
    fn counting_script_spells_out_each_step() {
        let s = grub_counting_script("default-abc.0", 3);
        assert!(s.contains("set stratum_entry0='default-abc.0'"));
        assert!(s.contains("elif [ \"${boot_counter}\" = \"3\" ]; then\n\t\t\tset boot_counter=2"));
        assert!(s.contains("set default=1"));
        assert!(!s.contains("= \"4\""));
    }
}
