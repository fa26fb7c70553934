//! `upgrade`, `deploy` and `rebase`: find the commit to deploy (pulling it when the origin
//! names a remote), decide whether anything changes, and hand it to the pipeline.
//!
//! Two steps, so that the sysroot lock is never held while waiting on the network:
//! [`fetch`] pulls the commit (and its tree) into the repository without the lock (libostree
//! repositories take concurrent pulls, and a pull changes no deployment); then, under the
//! lock, [`update`] reads the state again (another command may have changed the default
//! deployment meanwhile) and decides and deploys from the repository alone.

use anyhow::{bail, Context, Result};
use ostree::glib;

use super::{DeployOutcome, NewDeployment};
use crate::config::Network;
use crate::counting::BootState;
use crate::repo::{Checksum, Presence};
use crate::state::State;

/// What to deploy.
#[derive(Debug, Clone)]
pub enum Target {
    /// The newest commit of the origin's ref.
    Upgrade,
    /// A given commit or ref.
    Rev(String),
    /// The commit with this `version` on the origin ref's history.
    Version(String),
    /// Follow another `REMOTE:REF` (or local `REF`) from now on.
    Rebase(String),
}

/// How far to go.
#[derive(Debug, Clone, Copy, Default)]
pub struct UpdateOptions {
    /// Only say whether an update exists.
    pub check: bool,
    /// Say what would change, deploy nothing.
    pub preview: bool,
    /// Stage (finalize at shutdown) rather than write the boot set now.
    pub stage: bool,
    /// Let an upgrade deploy a commit older than the deployed one.
    pub allow_downgrade: bool,
    /// Pull the whole commit, deploy nothing.
    pub download_only: bool,
}

/// What happened.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum UpdateResult {
    /// Already deployed: nothing to do.
    NoChange { checksum: String },
    /// An update exists (`--check`/`--preview`).
    Available {
        from: String,
        to: String,
        version: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        diff: Option<crate::repo::TreeDiff>,
    },
    /// The ref's commit is older than the deployed one: not an update (`--check`/`--preview`
    /// without `allow_downgrade`).
    Older {
        from: String,
        to: String,
        version: Option<String>,
        #[serde(rename = "from-timestamp")]
        from_timestamp: u64,
        #[serde(rename = "to-timestamp")]
        to_timestamp: u64,
    },
    /// The update is in the local repository, not deployed (`download_only`).
    Downloaded {
        from: String,
        to: String,
        version: Option<String>,
    },
    /// A new deployment was made.
    Deployed(Box<DeployOutcome>),
}

/// What an update starts from: the deployments it is decided against and the origin the
/// new deployment gets.
struct Plan {
    merge: crate::sysroot::Deployment,
    base: crate::sysroot::Deployment,
    base_origin: crate::state::origin::Origin,
    origin: crate::state::origin::Origin,
    remote: Option<String>,
    refname: String,
}

fn plan(st: &State, stateroot: &str, target: &Target) -> Result<Plan> {
    let merge = st.merge_deployment(stateroot).with_context(|| {
        format!("no deployment in stateroot {stateroot} to update; install one first")
    })?;
    // What to follow (ref, initramfs settings…) comes from what boots next, so changes
    // stack: an upgrade after `initramfs --enable` or a staged rebase keeps them.
    let base = st
        .pending_deployment(stateroot)
        .unwrap_or_else(|| merge.clone());
    let base_origin = st.origin_of(&base)?;
    let mut origin = base_origin.clone();
    if let Target::Rebase(refspec) = target {
        ostree::parse_refspec(refspec).map_err(|e| {
            anyhow::anyhow!(
                "invalid ref {refspec:?}: rebase needs REMOTE:REF or REF ({})",
                e.message()
            )
        })?;
        origin.refspec = Some(refspec.clone());
    }
    let (remote, refname) = origin
        .remote_and_ref()
        .map(|(r, f)| (r.map(str::to_string), f.to_string()))
        .context("the deployment's origin names no ref (no [origin] refspec)")?;
    Ok(Plan {
        merge,
        base,
        base_origin,
        origin,
        remote,
        refname,
    })
}

/// The commit [`fetch`] made available, and the ref it was fetched for.
#[derive(Debug, Clone)]
pub struct Fetched {
    refspec: Option<String>,
    commit: String,
}

/// Makes the commit `target` names available in the repository, pulling it from the
/// origin's remote when there is one, held to `limits`. Takes no lock: it changes nothing
/// but the repository.
pub fn fetch(
    st: &State,
    stateroot: &str,
    target: &Target,
    opts: UpdateOptions,
    limits: &Network,
) -> Result<Fetched> {
    let plan = plan(st, stateroot, target)?;
    let (remote, refname) = (plan.remote.as_deref(), plan.refname.as_str());
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let commit_only = opts.check && !opts.preview;
    let commit = match target {
        Target::Upgrade | Target::Rebase(_) => {
            fetch_ref(&repo, remote, refname, None, commit_only, limits)?
        }
        Target::Rev(rev) => {
            let c = Checksum::parse(&crate::repo::resolve(&repo, rev)?)?;
            match (crate::repo::commit_presence(&repo, &c)?, remote) {
                (Presence::Complete, _) => c.to_string(),
                (_, Some(_)) => fetch_ref(&repo, remote, refname, Some(&c), commit_only, limits)?,
                (_, None) => bail!(
                    "commit {c} is not (or only partly) in the local repository, and the \
                     deployment's origin ({refname}) names no remote to fetch it from"
                ),
            }
        }
        Target::Version(v) => {
            let head = fetch_history(&repo, remote, refname, limits)?;
            let found = Checksum::parse(&crate::repo::find_version(&repo, &head, v)?)?;
            // The history was fetched as commit metadata only; now fetch that commit's tree.
            if remote.is_some() && !commit_only {
                fetch_ref(&repo, remote, refname, Some(&found), false, limits)?;
            }
            found.to_string()
        }
    };
    Ok(Fetched {
        refspec: plan.origin.refspec,
        commit,
    })
}

/// Runs an update of `target` in `stateroot` to the commit [`fetch`] brought, from the
/// repository alone (the caller holds the sysroot lock, and read `st` under it).
pub fn update(
    st: &State,
    stateroot: &str,
    target: &Target,
    opts: UpdateOptions,
    fetched: &Fetched,
) -> Result<UpdateResult> {
    let sysroot = &st.sysroot;
    let Plan {
        merge,
        base,
        base_origin,
        origin,
        refname,
        ..
    } = plan(st, stateroot, target)?;
    if origin.refspec != fetched.refspec {
        bail!(
            "while the update was downloaded, another command changed what the deployment \
             follows (now {}, the download was for {}); run the command again",
            origin.refspec.as_deref().unwrap_or("nothing"),
            fetched.refspec.as_deref().unwrap_or("nothing"),
        );
    }
    let repo = crate::repo::open(&sysroot.repo_path())?;
    let new = fetched.commit.clone();
    // What is deployed must have been published under the ref the deployment follows.
    crate::repo::check_ref_binding(&repo, &new, &refname)?;
    // Layered deployments are compared by the base commit they were made from.
    let based_on = |c: &str| crate::repo::base_commit(&repo, c).is_ok_and(|b| b == new);
    let unchanged = match target {
        Target::Upgrade => {
            based_on(&merge.checksum)
                || st
                    .deployments
                    .first()
                    .is_some_and(|d| based_on(&d.checksum))
                || st.staged.as_ref().is_some_and(|s| based_on(&s.checksum))
        }
        // What boots next is that commit already, following the same ref: another
        // deployment of it would only push the rollback out of the boot set.
        _ => based_on(&base.checksum) && origin.refspec == base_origin.refspec,
    };
    if unchanged {
        return Ok(UpdateResult::NoChange { checksum: new });
    }
    // A mirror can serve an old, validly signed build to hold a machine on it (or bring it
    // back to a known flaw): an upgrade never goes back in time unless asked to (OSTree's
    // rule, by commit timestamp). `deploy` and `rebase` name their target and may.
    if matches!(target, Target::Upgrade) && !opts.allow_downgrade {
        let info = crate::repo::commit_info(&repo, &new)?;
        if let Some(newer) = newest_deployed(&repo, [&merge.checksum, &base.checksum])?
            .filter(|d| d.timestamp > info.timestamp)
        {
            if opts.check || opts.preview || opts.download_only {
                return Ok(UpdateResult::Older {
                    from: newer.checksum,
                    to: new,
                    version: info.version,
                    from_timestamp: newer.timestamp,
                    to_timestamp: info.timestamp,
                });
            }
            bail!(
                "the ref's commit {new} ({}, built {}) is older than the deployed {} ({}, built \
                 {}); refusing to downgrade. To go back to it on purpose, run \
                 `stratum upgrade --allow-downgrade`",
                info.version.as_deref().unwrap_or("no version"),
                format_time(info.timestamp),
                newer.checksum,
                newer.version.as_deref().unwrap_or("no version"),
                format_time(newer.timestamp),
            );
        }
    }
    // A commit that already failed to boot here is not deployed again by an upgrade; only an
    // explicit `deploy` of it is.
    if matches!(target, Target::Upgrade) && BootState::load(sysroot, stateroot).commit_failed(&new)
    {
        eprintln!("{new} failed to boot on this machine before; deploy it explicitly with `stratum deploy {new}` to try again.");
        return Ok(UpdateResult::NoChange { checksum: new });
    }
    if opts.check || opts.preview || opts.download_only {
        let version = crate::repo::commit_info(&repo, &new)
            .ok()
            .and_then(|i| i.version);
        if opts.download_only {
            return Ok(UpdateResult::Downloaded {
                from: merge.checksum.clone(),
                to: new,
                version,
            });
        }
        let diff = if opts.preview {
            Some(crate::repo::diff_commits(&repo, &merge.checksum, &new)?)
        } else {
            None
        };
        return Ok(UpdateResult::Available {
            from: merge.checksum.clone(),
            to: new,
            version,
            diff,
        });
    }
    let outcome = super::deploy(
        st,
        NewDeployment {
            stateroot,
            commit: &new,
            origin,
            kargs: None,
            stage: opts.stage,
            customize: None,
        },
    )?;
    Ok(UpdateResult::Deployed(Box::new(outcome)))
}

/// Of the deployed commits `checksums` (the merge deployment's, the one that boots next),
/// the one with the newest timestamp.
fn newest_deployed<'a>(
    repo: &ostree::Repo,
    checksums: impl IntoIterator<Item = &'a String>,
) -> Result<Option<crate::repo::CommitInfo>> {
    let mut newest: Option<crate::repo::CommitInfo> = None;
    for c in checksums {
        let info = crate::repo::commit_info(repo, c)
            .with_context(|| format!("reading the deployed commit {c} to compare timestamps"))?;
        if newest.as_ref().is_none_or(|n| info.timestamp > n.timestamp) {
            newest = Some(info);
        }
    }
    Ok(newest)
}

/// A commit timestamp for people, in UTC.
pub fn format_time(timestamp: u64) -> String {
    i64::try_from(timestamp)
        .ok()
        .and_then(|t| glib::DateTime::from_unix_utc(t).ok())
        .and_then(|d| d.format("%Y-%m-%d %H:%M:%S UTC").ok())
        .map(|s| s.to_string())
        .unwrap_or_else(|| format!("@{timestamp}"))
}

/// Makes `refname` (or its commit `rev`) available locally: pulls from `remote` when there is
/// one, the commit object only when `commit_only`.
fn fetch_ref(
    repo: &ostree::Repo,
    remote: Option<&str>,
    refname: &str,
    rev: Option<&Checksum>,
    commit_only: bool,
    limits: &Network,
) -> Result<String> {
    match (remote, rev) {
        (Some(remote), _) if commit_only => {
            crate::remote::pull_commit_only(repo, remote, refname, rev, limits)
        }
        (Some(remote), _) => crate::remote::pull(repo, remote, refname, rev, limits),
        (None, Some(c)) => Ok(c.to_string()),
        (None, None) => crate::repo::resolve(repo, refname),
    }
}

/// Pulls the ref's whole commit history (metadata only) so a version can be searched.
fn fetch_history(
    repo: &ostree::Repo,
    remote: Option<&str>,
    refname: &str,
    limits: &Network,
) -> Result<String> {
    let Some(remote) = remote else {
        return crate::repo::resolve(repo, refname);
    };
    let opts = glib::VariantDict::new(None);
    opts.insert("refs", &vec![refname.to_string()][..]);
    opts.insert("depth", -1i32);
    opts.insert("flags", ostree::RepoPullFlags::COMMIT_ONLY.bits() as i32);
    let label = format!("Pulling the history of {remote}:{refname}");
    let what = format!(
        "pulling the history of {refname} from {}",
        crate::net::describe_remote(repo, remote)
    );
    crate::remote::pull_watched(repo, remote, opts, label, &what, limits)
        .map_err(|e| crate::remote::explain_pull_error(repo, e, remote, refname, limits))?;
    crate::repo::resolve(repo, &format!("{remote}:{refname}"))
}
