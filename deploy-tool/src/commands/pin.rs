//! `stratum pin`: keep a deployment through cleanups and upgrades.

use anyhow::Result;
use serde::Serialize;

use super::Globals;
use crate::deployment::changes;

/// Keep a deployment (by index in `status`) through cleanups and upgrades
#[derive(Debug, clap::Args)]
pub struct PinOpts {
    /// The deployment's index in `stratum status` (0 = default)
    pub index: usize,
    /// Unpin instead
    #[arg(long)]
    pub unpin: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `pin --json` prints.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct PinReport {
    pub stateroot: String,
    /// `CHECKSUM.SERIAL`.
    pub deployment: String,
    /// Whether it is pinned now.
    pub pinned: bool,
}

pub fn run(g: &Globals, o: &PinOpts) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    let d = changes::pin(&st, o.index, !o.unpin, session.stateroot.as_deref())?;
    eprintln!(
        "Deployment {}:{} is now {}",
        d.stateroot,
        d.name(),
        if o.unpin { "unpinned" } else { "pinned" }
    );
    if o.json {
        super::print_json(&PinReport {
            stateroot: d.stateroot.clone(),
            deployment: d.name(),
            pinned: !o.unpin,
        })?;
    }
    Ok(0)
}
