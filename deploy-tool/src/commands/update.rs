//! `stratum upgrade`, `deploy` and `rebase`: a new deployment of another commit.

use anyhow::{bail, Result};

use super::{Globals, NewDeploymentOpts, EXIT_UNCHANGED};
use crate::deployment::automatic;
use crate::deployment::update::{self, Target, UpdateOptions, UpdateResult};
use crate::state::{Session, State};

/// Pull the origin's newest commit and deploy it (staged: applied at shutdown)
#[derive(Debug, clap::Args)]
pub struct UpgradeOpts {
    /// Only check whether an update exists: exit 0 if one does, 77 if not
    #[arg(long)]
    pub check: bool,
    /// Show what would change (commit, version, files) without deploying; exit 77 if there
    /// is no update
    #[arg(long)]
    pub preview: bool,
    /// Exit 77 when there is no update (for scripts)
    #[arg(long)]
    pub unchanged_exit_77: bool,
    /// Deploy the ref's commit even when it is older (by commit timestamp) than the deployed
    /// one. Without it an older commit is refused: a mirror could be replaying an old build
    #[arg(long)]
    pub allow_downgrade: bool,
    /// Only download the update into the local repository and deploy nothing; a later
    /// `upgrade` deploys it without downloading it again
    #[arg(long, conflicts_with_all = ["check", "preview"])]
    pub download_only: bool,
    /// Do what the automatic-update policy in stratum.toml says (none, check, stage or apply,
    /// rebooting only in a reboot window) and record the outcome for `status`; this is what
    /// stratum-automatic-update.timer runs
    #[arg(long, conflicts_with_all = ["check", "preview", "download_only", "allow_downgrade"])]
    pub trigger_automatic_update_policy: bool,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

/// Deploy a given commit or version of the origin's ref
#[derive(Debug, clap::Args)]
pub struct DeployOpts {
    /// A commit: its full checksum (fetched from the origin's remote when missing), a unique
    /// prefix of a commit in the local repository, or a local REF or REMOTE:REF
    #[arg(required_unless_present = "version", conflicts_with = "version")]
    pub rev: Option<String>,
    /// The commit with this version on the origin ref's history
    #[arg(long)]
    pub version: Option<String>,
    /// Exit 77 when that commit is already what boots next
    #[arg(long)]
    pub unchanged_exit_77: bool,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

/// Follow another ref from now on (REMOTE:REF or a local REF) and deploy it
#[derive(Debug, clap::Args)]
pub struct RebaseOpts {
    /// REMOTE:REF, or a REF of the local repository
    pub refspec: String,
    /// Exit 77 when that ref's commit is already what boots next, on the same ref
    #[arg(long)]
    pub unchanged_exit_77: bool,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

pub fn upgrade(g: &Globals, o: &UpgradeOpts) -> Result<i32> {
    if o.trigger_automatic_update_policy {
        return automatic_update(g, o);
    }
    let opts = UpdateOptions {
        check: o.check,
        preview: o.preview,
        stage: o.new.stage(g),
        allow_downgrade: o.allow_downgrade,
        download_only: o.download_only,
    };
    run(
        g,
        &Target::Upgrade,
        opts,
        &o.new,
        // rpm-ostree: `--check` and `--preview` answer "is there an update?" by exit status.
        o.check || o.preview || o.unchanged_exit_77,
    )
}

/// `upgrade --trigger-automatic-update-policy`.
fn automatic_update(g: &Globals, o: &UpgradeOpts) -> Result<i32> {
    let session = g.session();
    let stage = o.new.stage(g);
    // The download, without the lock (see `run`).
    let (st, stateroot) = unlocked_state(&session)?;
    let cfg = automatic::config(&st)?;
    let fetched = automatic::fetch(
        &st,
        &stateroot,
        cfg.automatic_update.policy,
        stage,
        &cfg.network,
    );
    let _lock = session.begin()?;
    let st = session.state()?;
    let cfg = automatic::config(&st)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let out = automatic::run(&st, &stateroot, &cfg.automatic_update, now, stage, fetched)?;
    if o.new.json {
        super::print_json(&out)?;
    }
    match &out.record {
        None => eprintln!(
            "Automatic updates are off (policy \"none\"); set [automatic-update] policy in \
             /etc/stratum/stratum.toml to turn them on."
        ),
        Some(r) => eprintln!("Automatic update ({}): {}.", r.policy.as_str(), r.result),
    }
    if out.reboot {
        // Only the running machine is rebooted, never because of another sysroot's update.
        if g.sysroot.is_none() && st.sysroot.is_booted_system() {
            super::reboot()?;
        } else {
            eprintln!(
                "Not rebooting: {} is not the booted system.",
                st.sysroot.path.display()
            );
        }
    }
    Ok(0)
}

pub fn deploy(g: &Globals, o: &DeployOpts) -> Result<i32> {
    let target = match (&o.rev, &o.version) {
        (Some(r), _) => Target::Rev(r.clone()),
        (None, Some(v)) => Target::Version(v.clone()),
        (None, None) => bail!("give a REV or --version"),
    };
    let opts = UpdateOptions {
        stage: o.new.stage(g),
        ..Default::default()
    };
    run(g, &target, opts, &o.new, o.unchanged_exit_77)
}

pub fn rebase(g: &Globals, o: &RebaseOpts) -> Result<i32> {
    let opts = UpdateOptions {
        stage: o.new.stage(g),
        ..Default::default()
    };
    let target = Target::Rebase(o.refspec.clone());
    run(g, &target, opts, &o.new, o.unchanged_exit_77)
}

fn run(
    g: &Globals,
    target: &Target,
    opts: UpdateOptions,
    o: &NewDeploymentOpts,
    exit_77: bool,
) -> Result<i32> {
    let session = g.session();
    // The network first, without the sysroot lock: a slow or stalled remote must not keep
    // every other command (kargs, rollback, a shutdown's finalize) waiting.
    let (st, stateroot) = unlocked_state(&session)?;
    let limits = automatic::config(&st)?.network;
    let fetched = update::fetch(&st, &stateroot, target, opts, &limits)?;
    // Then the lock, and the state read again: the default deployment may have changed.
    let _lock = session.begin()?;
    let st = session.state()?;
    let r = update::update(&st, &stateroot, target, opts, &fetched)?;
    report(&r, target, o)?;
    let unchanged = matches!(
        r,
        UpdateResult::NoChange { .. } | UpdateResult::Older { .. }
    );
    Ok(if unchanged && exit_77 {
        EXIT_UNCHANGED
    } else {
        0
    })
}

/// The state and the stateroot to act on, read without the lock for the download that
/// precedes an update. The sysroot is made writable first: the pull writes into its
/// repository.
fn unlocked_state(session: &Session) -> Result<(State, String)> {
    crate::lock::make_writable(&session.sysroot)?;
    session.sysroot.ensure_is_sysroot()?;
    let st = session.state()?;
    let stateroot = session.stateroot(&st);
    Ok((st, stateroot))
}

fn report(r: &UpdateResult, target: &Target, o: &NewDeploymentOpts) -> Result<()> {
    if o.json {
        super::print_json(r)?;
    }
    match r {
        UpdateResult::NoChange { checksum } => match target {
            Target::Upgrade => eprintln!("No update available ({checksum} is deployed)."),
            _ => eprintln!(
                "{checksum} is already deployed and boots next; nothing to do \
                 (`stratum rollback` switches between deployments)."
            ),
        },
        UpdateResult::Available {
            from,
            to,
            version,
            diff,
        } => {
            eprintln!(
                "Update available: {to} ({}), deployed: {from}",
                version.as_deref().unwrap_or("no version")
            );
            if let Some(d) = diff {
                eprintln!(
                    "  {} added, {} removed, {} modified files",
                    d.added.len(),
                    d.removed.len(),
                    d.modified.len()
                );
                if !o.json {
                    for (mark, list) in [("+", &d.added), ("-", &d.removed), ("M", &d.modified)] {
                        for p in list.iter().take(50) {
                            println!("{mark} {p}");
                        }
                        if list.len() > 50 {
                            println!("{mark} … and {} more", list.len() - 50);
                        }
                    }
                }
            }
        }
        UpdateResult::Older {
            from,
            to,
            version,
            from_timestamp,
            to_timestamp,
        } => eprintln!(
            "No update: the ref's commit {to} ({}, built {}) is older than the deployed {from} \
             (built {}); `stratum upgrade --allow-downgrade` would deploy it.",
            version.as_deref().unwrap_or("no version"),
            update::format_time(*to_timestamp),
            update::format_time(*from_timestamp),
        ),
        UpdateResult::Downloaded { from, to, version } => eprintln!(
            "Downloaded {to} ({}), deployed: {from}; `stratum upgrade` deploys it without \
             downloading it again.",
            version.as_deref().unwrap_or("no version")
        ),
        UpdateResult::Deployed(d) => {
            let how = if d.staged { "Staged" } else { "Deployed" };
            eprintln!(
                "{how} {} (/etc: {} modified, {} added, {} removed by the admin, carried over).",
                d.deployment, d.etc_modified, d.etc_added, d.etc_removed
            );
            if d.staged {
                eprintln!("It is written into the boot set at shutdown; reboot to use it.");
            } else {
                eprintln!("It is the default deployment now; reboot to use it.");
            }
            if o.reboot {
                super::reboot()?;
            }
        }
    }
    Ok(())
}
