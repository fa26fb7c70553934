//! `stratum rollback`: the previous deployment becomes the default.

use anyhow::Result;
use serde::Serialize;

use super::Globals;
use crate::deployment::changes;

/// Make the previous deployment the default again (no download, no checkout)
#[derive(Debug, clap::Args)]
pub struct RollbackOpts {
    /// Reboot into it when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
    /// Print the new default as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `rollback --json` prints: the deployment that is the default now.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct RollbackReport {
    /// Its stateroot (`osname` in `status`).
    pub stateroot: String,
    /// `CHECKSUM.SERIAL`, as in its directory name.
    pub deployment: String,
    pub checksum: String,
    pub serial: u32,
}

pub fn run(g: &Globals, o: &RollbackOpts) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    let d = changes::rollback(&st, session.stateroot.as_deref())?;
    eprintln!(
        "Moved {}:{} to be the default deployment; it boots next.",
        d.stateroot,
        d.name()
    );
    if o.json {
        super::print_json(&RollbackReport {
            stateroot: d.stateroot.clone(),
            deployment: d.name(),
            checksum: d.checksum.clone(),
            serial: d.serial,
        })?;
    }
    if o.reboot {
        super::reboot()?;
    }
    Ok(0)
}
