//! `stratum finalize-staged` (hidden): run at shutdown by stratum-finalize-staged.service.

use anyhow::Result;

use super::Globals;
use crate::deployment::finalize;

pub fn run(g: &Globals) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    match finalize::finalize_staged(&st)? {
        Some(name) => eprintln!("Finalized staged deployment {name}"),
        None => eprintln!("No staged deployment."),
    }
    Ok(0)
}
