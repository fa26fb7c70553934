//! `stratum initramfs-etc`: carry `/etc` files into the initramfs as an extra initrd.

use anyhow::{Context, Result};
use serde::Serialize;

use super::Globals;
use crate::deployment::initramfs::Settings;
use crate::deployment::overlay;
use crate::state::State;

/// `stratum initramfs-etc` options.
#[derive(Debug, clap::Args)]
pub struct InitramfsEtcOpts {
    /// Carry this /etc file in the initramfs (repeatable)
    #[arg(long, value_name = "PATH")]
    pub track: Vec<String>,
    /// Stop carrying this file (repeatable)
    #[arg(long, value_name = "PATH")]
    pub untrack: Vec<String>,
    /// Stop carrying all files
    #[arg(long)]
    pub untrack_all: bool,
    /// Copy the tracked files' current contents into the initramfs even if the list is unchanged
    #[arg(long)]
    pub force_sync: bool,
    /// Print the tracked files (and what changed) as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `initramfs-etc --json` prints, whether or not anything changed.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct InitramfsEtcReport {
    /// The deployment whose setting this is, `CHECKSUM.SERIAL` (the one that boots next).
    pub deployment: String,
    /// The tracked `/etc` files, sorted.
    pub tracked: Vec<String>,
    /// Whether this run changed the boot set.
    pub changed: bool,
    /// The extra initrd files written for the deployment (only when `changed`).
    pub overlays: Vec<String>,
}

/// Runs `stratum initramfs-etc`.
pub fn run(g: &Globals, o: &InitramfsEtcOpts) -> Result<i32> {
    let session = g.session();
    let changing = !o.track.is_empty() || !o.untrack.is_empty() || o.untrack_all || o.force_sync;
    let _lock = if changing {
        Some(session.begin()?)
    } else {
        None
    };
    let st = if changing {
        session.state()?
    } else {
        State::read(&session.sysroot)?
    };
    let stateroot = session.stateroot(&st);
    let target = st
        .deployments
        .iter()
        .find(|d| d.stateroot == stateroot)
        .cloned()
        .with_context(|| format!("no deployment in stateroot {stateroot}"))?;
    // The files come from the running system's /etc (the merge deployment's).
    let merge = st
        .merge_deployment(&stateroot)
        .unwrap_or_else(|| target.clone());
    let origin = st.origin_of(&target)?;
    let cur = Settings::from_origin(&origin)?;
    let report = |tracked: &[String], changed: bool, overlays: Vec<String>| InitramfsEtcReport {
        deployment: target.name(),
        tracked: tracked.to_vec(),
        changed,
        overlays,
    };
    if !changing {
        if o.json {
            super::print_json(&report(&cur.etc, false, Vec::new()))?;
        } else {
            for f in &cur.etc {
                println!("{f}");
            }
        }
        if cur.etc.is_empty() {
            eprintln!("No /etc files are tracked.");
        }
        return Ok(0);
    }
    let mut new = cur.clone();
    if o.untrack_all {
        new.etc.clear();
    }
    for p in &o.untrack {
        let p = overlay::normalize(p)?;
        if !new.etc.contains(&p) {
            eprintln!("{p} is not tracked");
        }
        new.etc.retain(|x| x != &p);
    }
    for p in &o.track {
        let p = overlay::normalize(p)?;
        if !new.etc.contains(&p) {
            new.etc.push(p);
        }
    }
    new.etc.sort();
    if new == cur && !o.force_sync {
        eprintln!("No changes.");
        if o.json {
            super::print_json(&report(&cur.etc, false, Vec::new()))?;
        }
        return Ok(0);
    }
    let overlays = overlay::retrack(&st, &target, &merge, &new.etc)?;
    if new.etc.is_empty() {
        eprintln!("No /etc files are tracked any more; reboot to use the change.");
    } else {
        eprintln!(
            "Tracking {} /etc file(s) in {}; reboot to use them.",
            new.etc.len(),
            overlays.join(" ")
        );
    }
    if o.json {
        super::print_json(&report(&new.etc, true, overlays))?;
    }
    Ok(0)
}
