//! `stratum kargs`: show or change one deployment's kernel arguments.
//!
//! A change writes a new bootloader generation and nothing else: the deployment list stays
//! the same, only the chosen deployment's arguments differ. No checkout, no initramfs, no
//! pull. Every input is checked before the sysroot is touched, so a refused change leaves
//! the boot set byte-identical.

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::{Globals, EXIT_UNCHANGED};
use crate::counting;
use crate::kargs::{self, Edits, Kargs};
use crate::state::State;
use crate::sysroot::Deployment;

/// Show or change the kernel arguments of a deployment (only the boot set is rewritten)
///
/// Without options, prints the kernel arguments of the booted (else the default) deployment.
/// Changes follow rpm-ostree: applied in the order delete, replace, append,
/// append-if-missing, delete-if-present; see docs/kargs.md. Exit status 77 with
/// --unchanged-exit-77 when nothing changed.
#[derive(Debug, clap::Args)]
pub struct KargsOpts {
    /// Append a kernel argument (even if the key exists: e.g. console= repeats)
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub append: Vec<String>,
    /// Append a kernel argument unless that exact argument is present
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub append_if_missing: Vec<String>,
    /// Delete an argument: KEY when it has one value, KEY=VALUE to pick one of several
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub delete: Vec<String>,
    /// Delete that exact argument if present
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub delete_if_present: Vec<String>,
    /// Replace the value of KEY (one value), or the value OLD of KEY (KEY=OLD=NEW)
    #[arg(long, value_name = "KEY=VALUE=NEWVALUE")]
    pub replace: Vec<String>,
    /// Edit the kernel arguments in $EDITOR
    #[arg(long, conflicts_with_all = ["append", "append_if_missing", "delete", "delete_if_present", "replace", "import_proc_cmdline"])]
    pub editor: bool,
    /// Start from the running kernel's /proc/cmdline (without BOOT_IMAGE=, initrd=, ostree=)
    #[arg(long)]
    pub import_proc_cmdline: bool,
    /// The deployment by its index in `stratum status` [default: booted, else the default]
    #[arg(long, value_name = "N")]
    pub deploy_index: Option<usize>,
    /// Exit 77 when the arguments did not change
    #[arg(long)]
    pub unchanged_exit_77: bool,
    /// Reboot when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// Runs `stratum kargs`.
pub fn run(g: &Globals, o: &KargsOpts) -> Result<i32> {
    let req = Request {
        edits: Edits {
            delete: o.delete.clone(),
            replace: o.replace.clone(),
            append: o.append.clone(),
            append_if_missing: o.append_if_missing.clone(),
            delete_if_present: o.delete_if_present.clone(),
        },
        editor: o.editor,
        import_proc_cmdline: o.import_proc_cmdline,
        deploy_index: o.deploy_index,
    };
    let r = apply(g, &req)?;
    if o.json {
        super::print_json(&r)?;
    } else if !req.modifies() {
        println!("{}", r.kargs.join(" "));
    }
    if !req.modifies() {
        return Ok(0);
    }
    if !r.changed {
        eprintln!("Kernel arguments unchanged.");
        return Ok(if o.unchanged_exit_77 {
            EXIT_UNCHANGED
        } else {
            0
        });
    }
    eprintln!(
        "Kernel arguments of {}:{} updated; reboot to use them.",
        r.stateroot, r.deployment
    );
    if o.reboot {
        super::reboot()?;
    }
    Ok(0)
}

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
fn apply(g: &Globals, req: &Request) -> Result<Outcome> {
    let session = g.session();
    if !req.modifies() {
        let st = State::read(&session.sysroot)?;
        let (i, d) = target(&st, req.deploy_index, session.stateroot.as_deref())?;
        return Ok(outcome(&st, i, &d, d.kargs.clone(), false));
    }
    let _lock = session.begin()?;
    let st = session.state()?;
    let (i, d) = target(&st, req.deploy_index, session.stateroot.as_deref())?;
    let old = Kargs::from_list(&d.kargs);
    let base = if req.import_proc_cmdline {
        proc_cmdline(&st)?
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
    // Refused here (an argument GRUB would cut or choke on) before anything is written.
    crate::bootset::entry::command_line(st.bootversion.unwrap_or(0), &list[i])?;
    crate::failpoint("kargs::before-boot-set")?;
    counting::commit::write(&st, &list)?;
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

/// The deployment to act on: `index`, else the booted one, else the default; of
/// `stateroot` when one is named.
fn target(
    st: &State,
    index: Option<usize>,
    stateroot: Option<&str>,
) -> Result<(usize, Deployment)> {
    if st.deployments.is_empty() {
        bail!("there is no deployment; install one first");
    }
    let i = match index {
        Some(i) => st.deployment_at(i, stateroot).map(|_| i)?,
        None => st
            .booted
            .as_ref()
            .filter(|b| b.in_stateroot(stateroot))
            .and_then(|b| st.deployments.iter().position(|d| d == b))
            .or_else(|| {
                st.deployments
                    .iter()
                    .position(|d| d.in_stateroot(stateroot))
            })
            .with_context(|| {
                format!(
                    "there is no deployment in stateroot {} (see `stratum status`)",
                    stateroot.unwrap_or_default()
                )
            })?,
    };
    Ok((i, st.deployments[i].clone()))
}

/// The running kernel's command line without the per-boot arguments.
fn proc_cmdline(st: &State) -> Result<Kargs> {
    let path = &st.sysroot.proc_cmdline;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
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
