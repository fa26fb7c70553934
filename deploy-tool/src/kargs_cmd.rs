//! `stratum kargs`: show or change one deployment's kernel arguments.
//!
//! A change writes a new bootloader generation and nothing else: the deployment list stays
//! the same, only the chosen deployment's arguments differ. No checkout, no initramfs, no
//! pull. Every input is checked before the sysroot is touched, so a refused change leaves
//! the boot set byte-identical.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use serde::Serialize;

use crate::kargs::{self, Edits, Kargs};
use crate::ops::{Ops, State};
use crate::sysroot::Deployment;

/// Arguments of `/proc/cmdline` that describe this boot, not the deployment's configuration.
const PER_BOOT: &[&str] = &["BOOT_IMAGE", "initrd", "ostree"];

/// What `stratum kargs` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub edits: Edits,
    /// Open `$EDITOR` on the current arguments.
    pub editor: bool,
    /// Start from `/proc/cmdline` instead of the deployment's arguments.
    pub import_proc_cmdline: bool,
    /// The deployment by index in `stratum status` (default: the booted one, else the default).
    pub deploy_index: Option<usize>,
}

impl Request {
    /// Whether the request changes anything (otherwise the arguments are only printed).
    pub fn modifies(&self) -> bool {
        self.editor || self.import_proc_cmdline || !self.edits.is_empty()
    }
}

/// What `stratum kargs` did (`--json`).
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub stateroot: String,
    pub deployment: String,
    pub index: usize,
    pub booted: bool,
    #[serde(rename = "kernel-arguments")]
    pub kargs: Vec<String>,
    /// Whether a new boot set was written.
    pub changed: bool,
}

/// Runs the request.
pub fn run(ops: &Ops, req: &Request) -> Result<Outcome> {
    if !req.modifies() {
        let st = ops.state()?;
        let (i, d) = target(&st, req.deploy_index)?;
        return Ok(outcome(&st, i, &d, d.kargs.clone(), false));
    }
    let _lock = ops.begin()?;
    let st = ops.state()?;
    let (i, d) = target(&st, req.deploy_index)?;
    let old = Kargs::from_list(&d.kargs)
        .with_context(|| format!("the current kernel arguments of {}", d.name()))?;
    let base = if req.import_proc_cmdline {
        proc_cmdline()?
    } else {
        old.clone()
    };
    let new = if req.editor {
        run_editor(&base)?
    } else {
        base.edited(&req.edits)?
    };
    old.check_result(&new)?;
    if new == old {
        return Ok(outcome(&st, i, &d, d.kargs.clone(), false));
    }
    if st.staged.is_some() {
        eprintln!("Note: the staged deployment keeps its own kernel arguments.");
    }
    let mut list = st.deployments.clone();
    list[i].kargs = new.to_list();
    crate::failpoint("kargs::before-boot-set")?;
    ops.commit_boot_set(&st, list)?;
    Ok(outcome(&st, i, &d, new.to_list(), true))
}

fn outcome(st: &State, index: usize, d: &Deployment, kargs: Vec<String>, changed: bool) -> Outcome {
    Outcome {
        stateroot: d.stateroot.clone(),
        deployment: d.name(),
        index,
        booted: st.booted.as_ref() == Some(d),
        kargs,
        changed,
    }
}

/// The deployment to act on: `index`, else the booted one, else the default.
fn target(st: &State, index: Option<usize>) -> Result<(usize, Deployment)> {
    if st.deployments.is_empty() {
        bail!("there is no deployment; install one first");
    }
    let i = match index {
        Some(i) if i < st.deployments.len() => i,
        Some(i) => bail!(
            "no deployment at index {i}; there are {} (see `stratum status`)",
            st.deployments.len()
        ),
        None => st
            .booted
            .as_ref()
            .and_then(|b| st.deployments.iter().position(|d| d == b))
            .unwrap_or(0),
    };
    Ok((i, st.deployments[i].clone()))
}

/// `/proc/cmdline` without the per-boot arguments. `STRATUM_PROC_CMDLINE` names another file
/// (for tests).
fn proc_cmdline() -> Result<Kargs> {
    let path = std::env::var_os("STRATUM_PROC_CMDLINE")
        .map(PathBuf::from)
        .unwrap_or_else(|| "/proc/cmdline".into());
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Kargs::parse(text.trim_end())
        .with_context(|| format!("parsing {}", path.display()))
        .map(|k| k.without_keys(PER_BOOT))
}

/// Lets the admin edit `current` in `$EDITOR` (or `vi`); returns the parsed result.
fn run_editor(current: &Kargs) -> Result<Kargs> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .unwrap_or_else(|| "vi".to_string());
    let file = tempfile::Builder::new()
        .prefix("stratum-kargs-")
        .suffix(".txt")
        .tempfile()
        .context("creating a temporary file for the editor")?;
    std::fs::write(file.path(), kargs::editor_text(current))
        .with_context(|| format!("writing {}", file.path().display()))?;
    // Through the shell, so EDITOR may carry options ("code --wait"), as git allows.
    let status = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(file.path())
        .status()
        .with_context(|| format!("running the editor {editor}"))?;
    if !status.success() {
        bail!("the editor {editor} failed ({status}); nothing changed");
    }
    let bytes =
        std::fs::read(file.path()).with_context(|| format!("reading {}", file.path().display()))?;
    let text = String::from_utf8(bytes).context("the edited kernel arguments are not UTF-8")?;
    kargs::parse_editor_text(&text)
}
