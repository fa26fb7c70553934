//! `stratum cleanup`: remove pending and/or rollback deployments, prune the repository.

use anyhow::{bail, Result};
use serde::Serialize;

use super::Globals;
use crate::deployment::changes;
use crate::state::State;

/// Remove pending (-p) and/or rollback (-r) deployments, then prune the repository.
///
/// `-p` also discards the staged deployment, even when its record is corrupt.
#[derive(Debug, clap::Args)]
pub struct CleanupOpts {
    /// Remove the pending deployment (staged, or default but not yet booted)
    #[arg(long, short = 'p')]
    pub pending: bool,
    /// Remove the rollback deployment(s)
    #[arg(long, short = 'r')]
    pub rollback: bool,
    /// Print the removed deployments as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `cleanup --json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct CleanupReport {
    /// The removed deployments, `CHECKSUM.SERIAL` (the staged one included), in the order
    /// they were removed; empty when there was nothing to remove.
    pub removed: Vec<String>,
}

pub fn run(g: &Globals, o: &CleanupOpts) -> Result<i32> {
    if !o.pending && !o.rollback {
        bail!("say what to remove: -p (pending deployment) and/or -r (rollback deployment)");
    }
    let session = g.session();
    let _lock = session.begin()?;
    // Not `session.state()`: a corrupt staged record is what `-p` is there to remove.
    let st = State::read(&session.sysroot)?;
    let removed = changes::cleanup(&st, o.pending, o.rollback, session.stateroot.as_deref())?;
    if removed.is_empty() {
        eprintln!("Nothing to remove.");
    }
    for r in &removed {
        eprintln!("Removed deployment {r}");
    }
    if o.json {
        super::print_json(&CleanupReport { removed })?;
    }
    Ok(0)
}
