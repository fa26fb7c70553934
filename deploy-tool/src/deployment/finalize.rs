//! Finalizing the staged deployment at shutdown (`stratum finalize-staged`, run by
//! `stratum-finalize-staged.service`): the last steps of the pipeline, run late so that
//! `/etc` edits made since staging are kept.
//!
//! A failure is recorded in the stateroot's `/var` for the next boot's `status`; the staged
//! deployment is then dropped by the next garbage collection.

use std::fs;

use anyhow::{Context, Result};

use super::{etcmerge, new_boot_order, overlay};
use crate::counting;
use crate::fsutil;
use crate::state::staged::{self, Staged};
use crate::state::State;

/// Writes the staged deployment into the boot set. Returns its name, or `None` when nothing
/// is staged.
pub fn finalize_staged(st: &State) -> Result<Option<String>> {
    let Some(s) = st.staged.clone() else {
        return Ok(None);
    };
    let srdir = st.sysroot.stateroot_dir(&s.stateroot);
    let r = finalize(st, &s);
    if let Err(e) = &r {
        let _ = staged::record_failure(
            &srdir,
            &staged::FinalizeFailure {
                deployment: s.name(),
                error: format!("{e:#}"),
            },
        );
    }
    r.map(|_| Some(s.name()))
}

fn finalize(st: &State, s: &Staged) -> Result<()> {
    let sysroot = &st.sysroot;
    let mut dep = s.deployment();
    let root = sysroot.deployment_root(&dep);
    let merge = s.merge.as_ref().and_then(|name| {
        st.deployments
            .iter()
            .find(|d| &d.name() == name && d.stateroot == s.stateroot)
            .cloned()
    });
    if let Some(m) = &merge {
        // Start again from the image's defaults, then replay the admin's current changes.
        let etc = root.join("etc");
        let fresh = root.join("etc.stratum-new");
        fsutil::remove_any(&fresh)?;
        fsutil::copy_tree(&root.join("usr/etc"), &fresh)?;
        let mm = sysroot.deployment_root(m);
        let diff = etcmerge::diff(&mm.join("usr/etc"), &mm.join("etc"))?;
        etcmerge::apply(&diff, &mm.join("etc"), &fresh)?;
        fsutil::remove_any(&etc)?;
        fs::rename(&fresh, &etc).context("putting the merged /etc in place")?;
    }
    crate::failpoint("finalize::after-etc-merge")?;
    // The /etc overlay is built from the /etc just merged.
    overlay::attach(sysroot, &mut dep)?;
    fsutil::set_immutable(&root, true)?;
    let list = new_boot_order(st, dep, merge.as_ref());
    staged::clear(sysroot)?;
    counting::commit::write(st, &list)?;
    Ok(())
}
