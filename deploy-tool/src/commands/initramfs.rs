//! `stratum initramfs`: regenerate the initramfs on this machine for new deployments.

use anyhow::{bail, Context, Result};

use super::{Globals, NewDeploymentOpts};
use crate::deployment::initramfs::{settings_of, Generator, Settings};
use crate::deployment::{self, NewDeployment};
use crate::state::{Session, State};

/// `stratum initramfs` options.
#[derive(Debug, clap::Args)]
pub struct InitramfsOpts {
    /// Regenerate the initramfs on the client for this and every later deployment
    #[arg(long, conflicts_with = "disable")]
    pub enable: bool,
    /// Use the image's own initramfs again
    #[arg(long)]
    pub disable: bool,
    /// An argument for the generator (repeatable; one word each, e.g. --arg=--add-module=nvme)
    #[arg(
        long = "arg",
        value_name = "ARG",
        requires = "enable",
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
    /// The generator [default: native]
    #[arg(long, value_enum, requires = "enable")]
    pub generator: Option<Generator>,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

/// Runs `stratum initramfs`: prints the state, or changes it with a new deployment.
pub fn run(g: &Globals, o: &InitramfsOpts) -> Result<i32> {
    let session = g.session();
    if !o.enable && !o.disable {
        return print_state(&session, o.new.json).map(|_| 0);
    }
    let _lock = session.begin()?;
    let st = session.state()?;
    let stateroot = session.stateroot(&st);
    // The change applies to what would boot next (a staged upgrade stays staged, with it).
    let base = st
        .pending_deployment(&stateroot)
        .with_context(|| format!("no deployment in stateroot {stateroot}; install one first"))?;
    let origin = st.origin_of(&base)?;
    let cur = Settings::from_origin(&origin)?;
    let mut new = cur.clone();
    if o.enable {
        new.regenerate = true;
        new.args = o.args.clone();
        new.generator = o.generator.unwrap_or_default();
        if new.generator == Generator::Native {
            // Refuse bad arguments before anything changes.
            stratum_initramfs::SpecArgs::parse_words(&new.args)?;
        }
    } else {
        if !cur.regenerate {
            bail!("initramfs regeneration is not enabled; nothing to disable");
        }
        new.regenerate = false;
        new.args.clear();
        new.generator = Generator::Native;
    }
    if new == cur {
        eprintln!("Initramfs regeneration is already enabled with these settings; nothing to do.");
        return Ok(0);
    }
    let outcome = deployment::deploy(
        &st,
        NewDeployment {
            stateroot: &stateroot,
            commit: &base.checksum,
            origin: new.apply(&origin)?,
            kargs: None,
            stage: o.new.stage(g),
            customize: None,
        },
    )?;
    if o.new.json {
        super::print_json(&outcome)?;
    }
    let how = if outcome.staged { "Staged" } else { "Deployed" };
    eprintln!(
        "{how} {} with initramfs regeneration {}; reboot to use it.",
        outcome.deployment,
        if new.regenerate {
            "enabled"
        } else {
            "disabled"
        }
    );
    if o.new.reboot {
        super::reboot()?;
    }
    Ok(0)
}

/// Prints the settings of the deployment that boots next (see
/// [`State::pending_deployment`]), and says so when that is not the booted one.
fn print_state(session: &Session, json: bool) -> Result<()> {
    let st = State::read(&session.sysroot)?;
    let stateroot = session.stateroot(&st);
    let Some(pending) = st.pending_deployment(&stateroot) else {
        bail!("no deployment in stateroot {stateroot}");
    };
    let s = settings_of(&st.sysroot, &pending)?;
    let staged = st
        .staged
        .as_ref()
        .is_some_and(|x| x.name() == pending.name());
    let booted = st.booted.as_ref() == Some(&pending);
    if json {
        let v = serde_json::json!({
            "deployment": pending.name(),
            "staged": staged,
            "booted": booted,
            "regenerate": s.regenerate,
            "generator": s.generator,
            "args": s.args,
            "etc": s.etc,
        });
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    if st.booted.is_some() && !booted {
        println!(
            "Next boot ({} deployment {}):",
            if staged { "staged" } else { "default" },
            pending.name()
        );
    }
    if s.regenerate {
        println!("Initramfs regeneration: enabled ({})", s.generator.name());
        if !s.args.is_empty() {
            println!("Initramfs args: {}", s.args.join(" "));
        }
    } else {
        println!("Initramfs regeneration: disabled");
    }
    if !s.etc.is_empty() {
        println!("Initramfs etc files: {}", s.etc.join(" "));
    }
    Ok(())
}
