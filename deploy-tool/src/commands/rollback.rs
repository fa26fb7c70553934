//! `stratum rollback`: the previous deployment becomes the default.

use anyhow::Result;

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

pub fn run(g: &Globals, o: &RollbackOpts) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    let d = changes::rollback(&st)?;
    eprintln!(
        "Moved {}:{} to be the default deployment; it boots next.",
        d.stateroot,
        d.name()
    );
    if o.json {
        super::print_json(&serde_json::json!({
            "stateroot": d.stateroot,
            "deployment": d.name(),
            "checksum": d.checksum,
        }))?;
    }
    if o.reboot {
        super::reboot()?;
    }
    Ok(0)
}
