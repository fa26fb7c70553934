//! Package layering verbs: `install PKG…`, `uninstall`, `override remove|replace|reset`,
//! `refresh-md`, `search`, `db list|diff`. Each change is a new deployment of the same base
//! image with the origin's requests changed, made by the one new-deployment pipeline.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::Subcommand;

use super::{Globals, NewDeploymentOpts, EXIT_UNCHANGED};
use crate::debian::dpkgdb::{self, PackageDiff, PackageId};
use crate::deployment::{self, NewDeployment};
use crate::layering::{self, Layering};
use crate::state::origin::{Origin, Packages};
use crate::state::State;

/// Options of every verb that changes package requests.
#[derive(Debug, clap::Args)]
pub struct ChangeOpts {
    /// Resolve and show what would change, without making a deployment
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Do nothing (successfully) when a request is already there or already absent
    #[arg(long)]
    pub idempotent: bool,
    /// Exit 77 when the requests did not change
    #[arg(long)]
    pub unchanged_exit_77: bool,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

/// Layer packages from the configured repositories or local .deb files
#[derive(Debug, clap::Args)]
pub struct InstallPackagesOpts {
    /// Package names, or paths of .deb files (anything with a `/` or ending in `.deb`)
    #[arg(value_name = "PKG|FILE.deb", required = true)]
    pub packages: Vec<String>,
    #[command(flatten)]
    pub change: ChangeOpts,
}

/// Remove layered packages (requests made with `install`)
#[derive(Debug, clap::Args)]
pub struct UninstallOpts {
    /// Names of layered packages
    #[arg(value_name = "PKG", required_unless_present = "all")]
    pub packages: Vec<String>,
    /// Remove every layered package
    #[arg(long)]
    pub all: bool,
    #[command(flatten)]
    pub change: ChangeOpts,
}

/// Change base packages: remove them, replace them with local .deb files, or reset
#[derive(Debug, Subcommand)]
pub enum OverrideCmd {
    /// Take base packages out of the image (everything depending on them must go too)
    Remove {
        #[arg(value_name = "PKG", required = true)]
        packages: Vec<String>,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Replace base packages with local .deb files, or with other versions from the
    /// configured repositories (PKG=VERSION)
    Replace {
        #[arg(value_name = "FILE.deb|PKG=VERSION", required = true)]
        files: Vec<String>,
        #[command(flatten)]
        change: ChangeOpts,
    },
    /// Drop overrides of base packages (by name), or all with --all
    Reset {
        #[arg(value_name = "PKG", required_unless_present = "all")]
        packages: Vec<String>,
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        change: ChangeOpts,
    },
}

/// Search the configured repositories
#[derive(Debug, clap::Args)]
pub struct SearchOpts {
    /// Terms (regular expressions, as apt-cache search takes them), all must match
    #[arg(required = true)]
    pub terms: Vec<String>,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

/// Packages of commits: list them, or compare two
#[derive(Debug, Subcommand)]
pub enum DbCmd {
    /// List the packages of a commit [default: the booted deployment's]
    List {
        /// A commit, a unique checksum prefix or a ref
        rev: Option<String>,
        /// Read commits from this repository (e.g. one `compose tree` committed to) instead
        /// of the sysroot's; REV is then required
        #[arg(long, value_name = "PATH")]
        repo: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Package changes from FROM to TO [default: booted to the deployment that boots next]
    Diff {
        from: Option<String>,
        to: Option<String>,
        /// Read commits from this repository instead of the sysroot's; FROM and TO are then
        /// required
        #[arg(long, value_name = "PATH")]
        repo: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

/// What a change verb asks of the requests.
enum Change<'a> {
    Install(&'a [String]),
    Uninstall(&'a [String], bool),
    Remove(&'a [String]),
    Replace(&'a [String]),
    Reset(&'a [String], bool),
}

pub fn install(g: &Globals, o: &InstallPackagesOpts) -> Result<i32> {
    change(g, &o.change, Change::Install(&o.packages))
}

pub fn uninstall(g: &Globals, o: &UninstallOpts) -> Result<i32> {
    change(g, &o.change, Change::Uninstall(&o.packages, o.all))
}

pub fn override_cmd(g: &Globals, c: &OverrideCmd) -> Result<i32> {
    match c {
        OverrideCmd::Remove {
            packages,
            change: o,
        } => change(g, o, Change::Remove(packages)),
        OverrideCmd::Replace { files, change: o } => change(g, o, Change::Replace(files)),
        OverrideCmd::Reset {
            packages,
            all,
            change: o,
        } => change(g, o, Change::Reset(packages, *all)),
    }
}

fn is_file_request(p: &str) -> bool {
    p.contains('/') || p.ends_with(".deb")
}

/// Applies `c` to `pk`; returns whether anything changed.
fn edit(
    ctx: &Layering,
    base: &str,
    pk: &mut Packages,
    c: &Change,
    idempotent: bool,
) -> Result<bool> {
    let mut changed = false;
    let mut skip_or_fail = |msg: String| -> Result<()> {
        if idempotent {
            eprintln!("{msg}; skipped (--idempotent)");
            Ok(())
        } else {
            bail!("{msg}")
        }
    };
    match c {
        Change::Install(items) => {
            for item in items.iter() {
                if is_file_request(item) {
                    let (sha, id) = ctx
                        .import_local(Path::new(item))
                        .with_context(|| format!("reading {item}"))?;
                    if pk.requested_local.contains_key(&sha) {
                        skip_or_fail(format!("{item} is already requested"))?;
                        continue;
                    }
                    pk.requested_local.insert(sha, id.nva());
                } else {
                    check_name(item)?;
                    if !pk.requested.insert(item.clone()) {
                        skip_or_fail(format!("{item} is already requested"))?;
                        continue;
                    }
                }
                changed = true;
            }
        }
        Change::Uninstall(names, all) => {
            changed |= drop_requests(
                &mut pk.requested,
                &mut pk.requested_local,
                names,
                *all,
                |n, pk_names| format!("{n} is not a layered package (layered: {pk_names})"),
                &mut skip_or_fail,
            )?;
        }
        Change::Remove(names) => {
            for n in names.iter() {
                check_name(n)?;
                if pk.requested.contains(n) {
                    bail!("{n} is a layered package; use `stratum uninstall {n}`");
                }
                if !pk.remove.insert(n.clone()) {
                    skip_or_fail(format!("{n} is already removed"))?;
                    continue;
                }
                changed = true;
            }
        }
        Change::Replace(items) => {
            for item in items.iter() {
                let (sha, id) = match item.split_once('=') {
                    Some((name, version)) if !is_file_request(item) => {
                        check_name(name)?;
                        ctx.fetch_version(base, name, version)?
                    }
                    _ => ctx
                        .import_local(Path::new(item))
                        .with_context(|| format!("reading {item}"))?,
                };
                pk.replace_local
                    .retain(|_, nva| Packages::local_name(nva) != id.name);
                pk.replace_local.insert(sha, id.nva());
                changed = true;
            }
        }
        Change::Reset(names, all) => {
            changed |= drop_requests(
                &mut pk.remove,
                &mut pk.replace_local,
                names,
                *all,
                |n, _| format!("{n} has no override"),
                &mut skip_or_fail,
            )?;
        }
    }
    Ok(changed)
}

/// Drops the requests named `names` (or all) from a set of names and a map of local files
/// (SHA-256 -> `NAME_VERSION_ARCH`); a name in neither is `missing(name, what there is)`.
fn drop_requests(
    names_set: &mut std::collections::BTreeSet<String>,
    local: &mut std::collections::BTreeMap<String, String>,
    names: &[String],
    all: bool,
    missing: impl Fn(&str, &str) -> String,
    skip_or_fail: &mut dyn FnMut(String) -> Result<()>,
) -> Result<bool> {
    let mut changed = false;
    if all {
        changed = !names_set.is_empty() || !local.is_empty();
        names_set.clear();
        local.clear();
    }
    for n in names {
        let before = local.len();
        local.retain(|_, nva| Packages::local_name(nva) != n.as_str());
        if names_set.remove(n) || local.len() != before {
            changed = true;
        } else {
            let mut present: Vec<&str> = names_set.iter().map(String::as_str).collect();
            present.extend(local.values().map(|v| Packages::local_name(v)));
            let present = if present.is_empty() {
                "none".to_string()
            } else {
                present.join(" ")
            };
            skip_or_fail(missing(n, &present))?;
        }
    }
    Ok(changed)
}

/// Debian package names: lowercase letters, digits, `+ - .`, starting alphanumeric, at least
/// two characters; `NAME=VERSION` and `NAME:ARCH` are not requests Stratum records.
fn check_name(n: &str) -> Result<()> {
    let ok = n.len() >= 2
        && n.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && n.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    if !ok {
        bail!(
            "{n:?} is not a Debian package name (lowercase letters, digits, `+`, `-`, `.`); a \
             local package is given by its path (./file.deb)"
        );
    }
    Ok(())
}

fn change(g: &Globals, o: &ChangeOpts, c: Change) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    st.require_readable_staged()?;
    let stateroot = session.stateroot(&st);
    let pending = st
        .pending_deployment(&stateroot)
        .with_context(|| format!("no deployment in stateroot {stateroot}; install one first"))?;
    let mut origin: Origin = st.origin_of(&pending)?;
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let ctx = layering_context(&st, &repo, &stateroot);
    let base = crate::repo::base_commit(&repo, &pending.checksum)?;
    let changed = edit(&ctx, &base, &mut origin.packages, &c, o.idempotent)?;
    if !changed {
        eprintln!("No change to the package requests.");
        return Ok(if o.unchanged_exit_77 {
            EXIT_UNCHANGED
        } else {
            0
        });
    }
    if o.dry_run {
        let scratch = tempfile::Builder::new()
            .prefix("stratum-layer-")
            .tempdir_in(st.sysroot.repo_path().join("tmp"))?;
        let plan = layering::plan(&ctx, &base, &origin.packages, scratch.path())?;
        print_plan(&plan, o.new.json)?;
        return Ok(0);
    }
    let stage = o.new.stage(g);
    let outcome = deployment::deploy(
        &st,
        NewDeployment {
            stateroot: &stateroot,
            commit: &pending.checksum,
            origin,
            kargs: None,
            stage,
            customize: None,
        },
    )?;
    if o.new.json {
        super::print_json(&outcome)?;
    }
    if let Some(p) = &outcome.packages {
        if !p.layered.is_empty() {
            eprintln!(
                "Layered: {}",
                p.layered
                    .iter()
                    .map(|i| i.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        if !p.inactive.is_empty() {
            eprintln!(
                "In the base image already (inactive requests): {}",
                p.inactive.join(" ")
            );
        }
        if p.downloaded > 0 {
            eprintln!(
                "Downloaded {} package(s) into the package cache",
                p.downloaded
            );
        }
    }
    let how = if outcome.staged { "Staged" } else { "Deployed" };
    eprintln!("{how} {}; reboot to use it.", outcome.deployment);
    if o.new.reboot {
        super::reboot()?;
    }
    Ok(0)
}

fn layering_context<'a>(st: &'a State, repo: &'a ostree::Repo, stateroot: &'a str) -> Layering<'a> {
    Layering {
        sysroot: &st.sysroot,
        repo,
        stateroot,
        config_root: st
            .merge_deployment(stateroot)
            .map(|m| st.sysroot.deployment_root(&m)),
    }
}

fn print_plan(plan: &layering::Plan, json: bool) -> Result<()> {
    #[derive(serde::Serialize)]
    struct Out<'a> {
        install: &'a [PackageId],
        remove: &'a [PackageId],
        inactive: &'a [String],
    }
    if json {
        return super::print_json(&Out {
            install: &plan.install,
            remove: &plan.remove,
            inactive: &plan.inactive,
        });
    }
    for p in &plan.install {
        println!("install {p}");
    }
    for p in &plan.remove {
        println!("remove  {p}");
    }
    for p in &plan.inactive {
        println!("inactive {p} (in the base image)");
    }
    Ok(())
}

/// Fetch the package indexes of the configured repositories
pub fn refresh_md(g: &Globals) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    let stateroot = session.stateroot(&st);
    let pending = st
        .pending_deployment(&stateroot)
        .context("no deployment to read repositories from")?;
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let base = crate::repo::base_commit(&repo, &pending.checksum)?;
    layering_context(&st, &repo, &stateroot).refresh(&base)?;
    eprintln!("Package indexes are up to date.");
    Ok(0)
}

pub fn search(g: &Globals, o: &SearchOpts) -> Result<i32> {
    let session = g.session();
    let _lock = session.begin()?;
    let st = session.state()?;
    let stateroot = session.stateroot(&st);
    let pending = st
        .pending_deployment(&stateroot)
        .context("no deployment to read repositories from")?;
    let repo = crate::repo::open(&st.sysroot.repo_path())?;
    let base = crate::repo::base_commit(&repo, &pending.checksum)?;
    let found = layering_context(&st, &repo, &stateroot).search(&base, &o.terms)?;
    if o.json {
        let v: Vec<serde_json::Value> = found
            .iter()
            .map(|(n, s)| serde_json::json!({"name": n, "summary": s}))
            .collect();
        super::print_json(&v)?;
    } else {
        for (n, s) in &found {
            println!("{n} - {s}");
        }
    }
    Ok(if found.is_empty() { 1 } else { 0 })
}

pub fn db(g: &Globals, c: &DbCmd) -> Result<i32> {
    let (DbCmd::List { repo: other, .. } | DbCmd::Diff { repo: other, .. }) = c;
    // With --repo, no sysroot is read: there are no deployments to default to.
    let st = match other {
        Some(_) => None,
        None => Some(State::read(&g.sysroot())?),
    };
    let repo = match (other, &st) {
        (Some(p), _) => crate::repo::open(p)?,
        (None, Some(st)) => crate::repo::open(&st.sysroot.repo_path())?,
        (None, None) => unreachable!("the state is read without --repo"),
    };
    let deployments = || -> Result<&State> {
        st.as_ref()
            .context("give the commits to read: --repo has no deployments to default to")
    };
    let booted_or_default = || -> Result<String> {
        let st = deployments()?;
        let stateroot = g.session().stateroot(st);
        st.merge_deployment(&stateroot)
            .map(|d| d.checksum)
            .with_context(|| format!("no deployments in stateroot {stateroot}"))
    };
    let resolve = |rev: &Option<String>, default: &dyn Fn() -> Result<String>| -> Result<String> {
        match rev {
            Some(r) => crate::repo::resolve(&repo, r),
            None => default(),
        }
    };
    match c {
        DbCmd::List { rev, json, .. } => {
            let commit = resolve(rev, &booted_or_default)?;
            let pkgs = dpkgdb::packages_of_commit(&repo, &commit)?;
            if *json {
                super::print_json(&pkgs.values().collect::<Vec<_>>())?;
            } else {
                eprintln!("{commit}:");
                for p in pkgs.values() {
                    println!("{} {} {}", p.name, p.version, p.arch);
                }
            }
        }
        DbCmd::Diff { from, to, json, .. } => {
            let next = || -> Result<String> {
                let st = deployments()?;
                st.staged
                    .as_ref()
                    .map(|s| s.checksum.clone())
                    .or_else(|| st.deployments.first().map(|d| d.checksum.clone()))
                    .context("no deployments")
            };
            // From the booted deployment (on a sysroot that is not booted: the rollback).
            let current = || -> Result<String> {
                let st = deployments()?;
                st.booted
                    .as_ref()
                    .or(st.deployments.get(1))
                    .or(st.deployments.first())
                    .map(|d| d.checksum.clone())
                    .context("no deployments")
            };
            let a = resolve(from, &current)?;
            let b = resolve(to, &next)?;
            let d = dpkgdb::diff(
                &dpkgdb::packages_of_commit(&repo, &a)?,
                &dpkgdb::packages_of_commit(&repo, &b)?,
            );
            if *json {
                super::print_json(&serde_json::json!({"from": a, "to": b, "diff": d}))?;
            } else {
                eprintln!("ostree diff commit from: {a}\nostree diff commit to:   {b}");
                print!("{}", render_diff(&d));
            }
        }
    }
    Ok(0)
}

/// A package diff for people, in rpm-ostree's layout.
pub fn render_diff(d: &PackageDiff) -> String {
    let mut s = String::new();
    if d.is_empty() {
        s.push_str("No package changes.\n");
        return s;
    }
    let pair =
        |(a, b): &(PackageId, PackageId)| format!("  {} {} -> {}\n", a.name, a.version, b.version);
    if !d.upgraded.is_empty() {
        s.push_str("Upgraded:\n");
        d.upgraded.iter().for_each(|p| s.push_str(&pair(p)));
    }
    if !d.downgraded.is_empty() {
        s.push_str("Downgraded:\n");
        d.downgraded.iter().for_each(|p| s.push_str(&pair(p)));
    }
    if !d.removed.is_empty() {
        s.push_str("Removed:\n");
        d.removed
            .iter()
            .for_each(|p| s.push_str(&format!("  {} {}\n", p.name, p.version)));
    }
    if !d.added.is_empty() {
        s.push_str("Added:\n");
        d.added
            .iter()
            .for_each(|p| s.push_str(&format!("  {} {}\n", p.name, p.version)));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_checked() {
        check_name("openssh-server").unwrap();
        check_name("libstdc++6").unwrap();
        for bad in ["X", "a", "htop=3.2", "-rf", "a b", "Foo"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert!(is_file_request("./x.deb"));
        assert!(is_file_request("/tmp/x"));
        assert!(!is_file_request("htop"));
    }
}
