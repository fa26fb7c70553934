//! Package layering: Debian packages added to, removed from or replaced in the image on this
//! machine, as a new commit on top of the base commit, replayed on every new base.
//!
//! ```text
//! origin requests --> resolve (apt, isolated; base packages held)
//!                 --> fetch (package cache: one commit per .deb, downloaded and unpacked once)
//!                 --> assemble: base checkout + package trees as hardlinks
//!                     + dpkg database entries
//!                     + maintainer scripts and triggers in the sandbox (dpkg --configure)
//!                     + /var -> factory /var, machine-specific files out
//!                 --> layered commit (parent: the base; metadata: what was layered)
//! ```
//!
//! The new-deployment pipeline calls [`layer`] before its checkout, so every way to make a
//! deployment (`upgrade`, `deploy`, `rebase`, `install`, `initramfs --enable`…) replays the
//! requests. See docs/layering.md.

pub mod apt;
mod bootfiles;
pub mod cache;
pub mod sandbox;
pub mod unpack;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use ostree::glib;
use serde::Serialize;

use std::os::fd::AsFd;

use crate::beneath;
use crate::debian::dpkgdb::{self, PackageId, DB_DIR};
use crate::debian::{
    self,
    deb822::{self, Paragraph},
};
use crate::repo::{self, NewCommit};
use crate::state::origin::Packages;
use crate::sysroot::Sysroot;

/// Commit metadata of a layered commit: packages added (`as`, `NAME_VERSION_ARCH`).
pub const META_LAYERED: &str = "stratum.layered-packages";
/// Commit metadata: base packages removed (`as`, names).
pub const META_REMOVED: &str = "stratum.removed-base-packages";
/// Commit metadata: base packages replaced (`as`, `OLD_NVA NEW_NVA`).
pub const META_REPLACED: &str = "stratum.replaced-base-packages";
/// Commit metadata: requests the base satisfied already (`as`, names).
pub const META_INACTIVE: &str = "stratum.inactive-requests";
/// Commit metadata: the package cache commits the tree was made of (`as`).
pub const META_CACHE: &str = "stratum.package-cache";

/// Files that identify one machine: generated on the machine, never shipped in a commit.
/// (pattern relative to the root, what recreates it)
pub const MACHINE_SPECIFIC: &[(&str, &str)] = &[
    (
        "usr/etc/ssh/ssh_host_",
        "stratum-ssh-host-keys.service (ssh-keygen -A) at boot",
    ),
    ("var/lib/dbus/machine-id", "dbus, from /etc/machine-id"),
    ("var/lib/systemd/random-seed", "systemd-random-seed.service"),
    ("var/lib/systemd/credential.secret", "systemd, at first use"),
];

/// Where layering runs: the sysroot, its repository and the configuration it reads.
pub struct Layering<'a> {
    pub sysroot: &'a Sysroot,
    pub repo: &'a ostree::Repo,
    pub stateroot: &'a str,
    /// The root of the deployment whose `/etc/apt` lists the repositories (the merge
    /// deployment).
    pub config_root: Option<PathBuf>,
}

/// What layering made, for people and scripts.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    /// The layered commit (`None` when every request is satisfied by the base).
    pub commit: Option<String>,
    pub base: String,
    pub layered: Vec<PackageId>,
    #[serde(rename = "base-removals")]
    pub removed: Vec<PackageId>,
    #[serde(rename = "base-local-replacements")]
    pub replaced: Vec<(PackageId, PackageId)>,
    /// Requests the base satisfies already.
    pub inactive: Vec<String>,
    /// Packages downloaded for this (not in the cache before).
    pub downloaded: usize,
    /// Layered packages that bring kernel modules or firmware: the initramfs is made again
    /// so that it has them.
    #[serde(rename = "initramfs-inputs")]
    pub initramfs_inputs: Vec<String>,
}

impl Layering<'_> {
    fn apt(&self, scratch: &Path) -> Result<apt::Apt> {
        let root = self
            .config_root
            .clone()
            .context("no deployment to read /etc/apt from: layering needs a deployed system")?;
        // apt resolves relative paths against its own directories: give it absolute ones.
        let root = std::path::absolute(root)?;
        Ok(apt::Apt {
            etc: root.join("etc"),
            config_root: root,
            cache: std::path::absolute(
                self.sysroot
                    .stateroot_dir(self.stateroot)
                    .join("var/cache/stratum/apt"),
            )?,
            scratch: std::path::absolute(scratch)?,
            keys: std::sync::Arc::new(apt::keys_dir()?),
        })
    }

    /// A scratch directory on the repository's filesystem (hardlinks), removed on drop; a
    /// crash leaves it to libostree's cleaning of `repo/tmp`.
    fn scratch(&self) -> Result<tempfile::TempDir> {
        tempfile::Builder::new()
            .prefix("stratum-layer-")
            .tempdir_in(self.sysroot.repo_path().join("tmp"))
            .context("creating a scratch directory in the repository")
    }

    /// Fetches the package indexes (`refresh-md`).
    pub fn refresh(&self, base: &str) -> Result<()> {
        let scratch = self.scratch()?;
        let apt = self.apt(scratch.path())?;
        let status = base_status_file(self.repo, base, scratch.path())?;
        apt.refresh(&status)
    }

    /// Searches the configured repositories.
    pub fn search(&self, base: &str, terms: &[String]) -> Result<Vec<(String, String)>> {
        let scratch = self.scratch()?;
        let apt = self.apt(scratch.path())?;
        let status = base_status_file(self.repo, base, scratch.path())?;
        if !apt.has_indexes() {
            apt.refresh(&status)?;
        }
        apt.search(&status, terms)
    }

    /// Downloads `name` at `version` from the configured repositories and imports it into
    /// the package cache as a local file would be (for `override replace PKG=VERSION`);
    /// returns its SHA-256 and id.
    pub fn fetch_version(
        &self,
        base: &str,
        name: &str,
        version: &str,
    ) -> Result<(String, PackageId)> {
        let scratch = self.scratch()?;
        let apt = self.apt(scratch.path())?;
        let status = base_status_file(self.repo, base, scratch.path())?;
        if !apt.has_indexes() {
            apt.refresh(&status)?;
        }
        let id = PackageId::new(name, version, &apt::native_arch()?)?;
        let debs = scratch.path().join("debs");
        fs::create_dir_all(&debs)?;
        apt.download(&status, std::slice::from_ref(&id), &debs)
            .with_context(|| format!("fetching {name} {version} from the repositories"))?;
        let file = match find_deb(&debs, &id) {
            Ok(f) => f,
            Err(_) => {
                // An `all` package.
                let all = PackageId {
                    arch: "all".into(),
                    ..id.clone()
                };
                find_deb(&debs, &all)?
            }
        };
        self.import_local(&file)
    }

    /// Imports a local `.deb` file into the package cache; returns its SHA-256 and id.
    pub fn import_local(&self, deb: &Path) -> Result<(String, PackageId)> {
        let scratch = self.scratch()?;
        let sha = cache::sha256_file(deb)?;
        let c = cache::import(self.repo, deb, &cache::local_ref(&sha), scratch.path())?;
        Ok((sha, c.id))
    }
}

/// The plan for one base: what apt chose and where each package comes from.
#[derive(Debug, Default)]
pub struct Plan {
    pub base_packages: BTreeMap<String, PackageId>,
    /// To add, in unpack order (local files included).
    pub install: Vec<PackageId>,
    /// Base packages to take out (removed or replaced).
    pub remove: Vec<PackageId>,
    pub replaced: Vec<(PackageId, PackageId)>,
    pub inactive: Vec<String>,
    /// Local packages, by name.
    local: BTreeMap<String, cache::Cached>,
}

/// Resolves `pk` against `base` without changing anything (also `--dry-run`).
pub fn plan(ctx: &Layering, base: &str, pk: &Packages, scratch: &Path) -> Result<Plan> {
    let base_status = dpkgdb::status_of_commit(ctx.repo, base)?.with_context(|| {
        format!("commit {base} has no dpkg database: packages cannot be layered on it")
    })?;
    let base_packages = dpkgdb::installed(&base_status)?;
    let mut p = Plan {
        base_packages,
        ..Default::default()
    };
    // Local files: imported into the cache when they were requested.
    for (sha, nva) in pk.requested_local.iter().chain(pk.replace_local.iter()) {
        let c = cache::lookup(ctx.repo, &cache::local_ref(sha))?.with_context(|| {
            format!(
                "the local package {nva} ({sha}) is no longer in the package cache; request \
                 it again from its file"
            )
        })?;
        p.local.insert(c.id.name.clone(), c);
    }
    let mut install_names = Vec::new();
    for name in &pk.requested {
        if p.base_packages.contains_key(name) {
            p.inactive.push(name.clone());
        } else {
            install_names.push(name.clone());
        }
    }
    for nva in pk.requested_local.values() {
        let name = Packages::local_name(nva);
        match p.base_packages.get(name) {
            Some(b) if b.nva() == *nva => p.inactive.push(name.to_string()),
            Some(b) => bail!(
                "{name} is a base package ({}); to replace it with the local file use `stratum \
                 override replace`",
                b.version
            ),
            None => {}
        }
    }
    let mut unlocked = Vec::new();
    for name in &pk.remove {
        let b = p.base_packages.get(name).with_context(|| {
            format!("cannot remove {name}: it is not a package of the base image")
        })?;
        p.remove.push(b.clone());
    }
    for nva in pk.replace_local.values() {
        let name = Packages::local_name(nva);
        let b = p.base_packages.get(name).with_context(|| {
            format!(
                "cannot replace {name}: it is not a package of the base image (use `stratum \
                 install` to add it)"
            )
        })?;
        unlocked.push(name.to_string());
        let new = p.local[name].id.clone();
        p.remove.push(b.clone());
        p.replaced.push((b.clone(), new));
    }
    let active_local: Vec<&cache::Cached> = p
        .local
        .values()
        .filter(|c| !p.inactive.contains(&c.id.name))
        .collect();
    if install_names.is_empty() && active_local.is_empty() && p.remove.is_empty() {
        return Ok(p);
    }
    let apt = ctx.apt(scratch)?;
    if !install_names.is_empty() && !apt.has_indexes() {
        eprintln!("Fetching package indexes");
        let status = scratch.join("status.base");
        fs::write(&status, &base_status)?;
        apt.refresh(&status)?;
    }
    let req = apt::Request {
        install: install_names,
        remove: pk.remove.iter().cloned().collect(),
        preinstalled: active_local.iter().map(|c| &c.status).collect(),
        unlocked,
    };
    let r = apt.resolve(&base_status, &req)?;
    // Local packages are treated as installed by apt: they come first, then apt's choices.
    for c in &active_local {
        p.install.push(c.id.clone());
    }
    p.install.extend(r.install);
    Ok(p)
}

/// Applies the requests `pk` to `base`; returns the layered commit (none when the base
/// satisfies them all) and what was done.
pub fn layer(ctx: &Layering, base: &str, pk: &Packages) -> Result<Report> {
    let mut report = Report {
        base: base.to_string(),
        ..Default::default()
    };
    if pk.is_empty() {
        return Ok(report);
    }
    let scratch = ctx.scratch()?;
    eprintln!("Resolving package requests");
    let plan = plan(ctx, base, pk, scratch.path())?;
    report.inactive = plan.inactive.clone();
    if plan.install.is_empty() && plan.remove.is_empty() {
        eprintln!("Every package request is satisfied by the base image");
        return Ok(report);
    }
    let cached = fetch(ctx, base, &plan, scratch.path(), &mut report)?;
    eprintln!(
        "Assembling: {} added, {} removed, {} replaced",
        plan.install.len() - plan.replaced.len(),
        plan.remove.len() - plan.replaced.len(),
        plan.replaced.len()
    );
    let devino = ostree::RepoDevInoCache::new();
    let root = scratch.path().join("root");
    fs::create_dir(&root)?;
    repo::checkout_union(ctx.repo, base, &root, &devino)?;
    assemble(ctx, &plan, &cached, &root, scratch.path(), &devino)?;
    report.layered = plan
        .install
        .iter()
        .filter(|i| !plan.replaced.iter().any(|(_, n)| n == *i))
        .cloned()
        .collect();
    report.removed = plan
        .remove
        .iter()
        .filter(|r| !plan.replaced.iter().any(|(o, _)| o == *r))
        .cloned()
        .collect();
    report.replaced = plan.replaced.clone();
    report.initramfs_inputs = initramfs_inputs(&root.join(DB_DIR), &plan, &cached);
    eprintln!("Committing the layered tree");
    let info = repo::commit_info(ctx.repo, base)?;
    let meta = glib::VariantDict::new(None);
    if let Some(v) = &info.version {
        meta.insert("version", v.as_str());
    }
    meta.insert("ostree.bootable", true);
    meta.insert(repo::BASE_COMMIT, base);
    let lists: [(&str, Vec<String>); 5] = [
        (
            META_LAYERED,
            report.layered.iter().map(PackageId::nva).collect(),
        ),
        (
            META_REMOVED,
            report.removed.iter().map(|p| p.name.clone()).collect(),
        ),
        (
            META_REPLACED,
            report
                .replaced
                .iter()
                .map(|(o, n)| format!("{} {}", o.nva(), n.nva()))
                .collect(),
        ),
        (META_INACTIVE, report.inactive.clone()),
        (
            META_CACHE,
            cached.values().map(|c| c.commit.clone()).collect(),
        ),
    ];
    for (key, values) in &lists {
        meta.insert(key, &values[..]);
    }
    let subject = format!(
        "Layered on {}: {}",
        info.version.as_deref().unwrap_or(base),
        report
            .layered
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let commit = repo::write_commit(
        ctx.repo,
        &root,
        &NewCommit {
            parent: Some(base),
            subject: &subject,
            metadata: meta.end(),
            timestamp: Some(info.timestamp),
            refname: None,
            devino: Some(&devino),
        },
    )?;
    report.commit = Some(commit);
    Ok(report)
}

/// Makes sure every package of the plan is in the cache, downloading what is missing.
fn fetch(
    ctx: &Layering,
    base: &str,
    plan: &Plan,
    scratch: &Path,
    report: &mut Report,
) -> Result<BTreeMap<String, cache::Cached>> {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    for id in &plan.install {
        if let Some(c) = plan.local.get(&id.name).filter(|c| c.id == *id) {
            out.insert(id.name.clone(), c.clone());
        } else if let Some(c) = cache::lookup(ctx.repo, &cache::ref_of(id))? {
            out.insert(id.name.clone(), c);
        } else {
            missing.push(id.clone());
        }
    }
    if missing.is_empty() {
        return Ok(out);
    }
    eprintln!(
        "Downloading {} package(s): {}",
        missing.len(),
        missing
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let debs = scratch.join("debs");
    fs::create_dir_all(&debs)?;
    let apt = ctx.apt(scratch)?;
    let status = base_status_file(ctx.repo, base, scratch)?;
    apt.download(&status, &missing, &debs)?;
    for id in &missing {
        let file = find_deb(&debs, id)?;
        let work = scratch.join(format!("import-{}", id.name));
        let c = cache::import(ctx.repo, &file, &cache::ref_of(id), &work)?;
        let _ = fs::remove_dir_all(&work);
        if c.id != *id {
            bail!("downloaded {} but it is {}", id, c.id);
        }
        out.insert(id.name.clone(), c);
        report.downloaded += 1;
    }
    Ok(out)
}

fn find_deb(dir: &Path, id: &PackageId) -> Result<PathBuf> {
    // apt names files NAME_VERSION_ARCH.deb with `:` escaped as `%3a`.
    let name = format!(
        "{}_{}_{}.deb",
        id.name,
        id.version.replace(':', "%3a"),
        id.arch
    );
    let p = dir.join(&name);
    if p.is_file() {
        return Ok(p);
    }
    bail!("apt-get download did not produce {name}")
}

/// The base's `status` written to a file (what apt reads).
fn base_status_file(repo: &ostree::Repo, base: &str, scratch: &Path) -> Result<PathBuf> {
    let path = scratch.join("status.base");
    let text = dpkgdb::status_of_commit(repo, base)?.unwrap_or_default();
    fs::write(&path, text)?;
    Ok(path)
}

/// Builds the layered tree at `root` (a checkout of the base).
fn assemble(
    ctx: &Layering,
    plan: &Plan,
    cached: &BTreeMap<String, cache::Cached>,
    root: &Path,
    scratch: &Path,
    devino: &ostree::RepoDevInoCache,
) -> Result<()> {
    let db = root.join(DB_DIR);
    if !db.join("status").is_file() {
        bail!(
            "the base image keeps its dpkg database in /var (composed by an older stratum); \
             compose it again so that the database is under /{DB_DIR}"
        );
    }
    // /var as the image sets it up, with the database link: scripts read and write there.
    let factory = root.join(crate::compose::layout::FACTORY_VAR);
    if factory.is_dir() {
        crate::cmd::run(
            Command::new("cp")
                .args(["-a", "--link", "--no-target-directory"])
                .arg(&factory)
                .arg(root.join("var")),
        )?;
    }
    let var_dpkg = root.join("var/lib/dpkg");
    if fs::symlink_metadata(&var_dpkg).is_err() {
        fs::create_dir_all(root.join("var/lib"))?;
        std::os::unix::fs::symlink(dpkgdb::VAR_LINK_TARGET, &var_dpkg)?;
    }
    let kernel = bootfiles::BootFiles::of(root)?;
    let mut sb = sandbox::Sandbox::new(root, &scratch.join("sandbox"))?;
    if !plan.remove.is_empty() {
        let mut argv = vec!["dpkg", "--purge"];
        if !plan.replaced.is_empty() {
            // A replaced package is gone only until its replacement is unpacked.
            argv.push("--force-depends");
        }
        let names: Vec<String> = plan.remove.iter().map(|p| p.name.clone()).collect();
        argv.extend(names.iter().map(String::as_str));
        eprintln!("Removing {}", names.join(" "));
        sb.run("removing base packages", &argv, &[])?;
        kernel.check(root, &format!("removing {}", names.join(" ")))?;
    }
    let mut triggers = Triggers::default();
    for id in &plan.install {
        let c = &cached[&id.name];
        let info = c.info_name();
        if let Some(script) = repo::read_file(
            ctx.repo,
            &c.commit,
            &format!("{DB_DIR}/info/{info}.preinst"),
        )? {
            // Written through directory handles: an earlier script may have replaced any
            // directory of the tree with a symlink.
            let tree = beneath::open_root(root)?;
            let tmp = beneath::create_dir_all(tree.as_fd(), &format!("{DB_DIR}/tmp.ci"))
                .with_context(|| format!("preparing the preinst of {id}"))?;
            beneath::write_new(tmp.as_fd(), "preinst", &script, 0o755)?;
            let env = maintscript_env(id, "preinst");
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            sb.run(
                &format!("the preinst script of {}", id.name),
                &["/var/lib/dpkg/tmp.ci/preinst", "install"],
                &env,
            )?;
            kernel.check(root, &format!("the preinst script of {id}"))?;
            // The sandbox checked that the database's directories are still directories;
            // remove_dir_all does not follow a symlink it is given.
            fs::remove_dir_all(root.join(DB_DIR).join("tmp.ci"))
                .with_context(|| format!("removing the preinst of {id}"))?;
        }
        check_directories(ctx.repo, &c.commit, root).with_context(|| format!("cannot add {id}"))?;
        repo::checkout_union(ctx.repo, &c.commit, root, devino).map_err(|e| {
            anyhow::anyhow!(
                "cannot add {}: a file it ships differs from one already in the tree (from the \
                 base image or another layered package): {e:#}",
                id
            )
        })?;
        kernel.check(root, &format!("{id}"))?;
        add_status(root, &c.status)?;
        triggers.collect(root, &info, &id.name)?;
    }
    triggers.register(&db)?;
    let activate = triggers.activations(&db, plan, cached)?;
    if !activate.is_empty() {
        let mut argv = vec![
            "/bin/sh",
            "-c",
            "for t; do dpkg-trigger --no-await \"$t\"; done",
            "sh",
        ];
        argv.extend(activate.iter().map(String::as_str));
        sb.run("activating triggers", &argv, &[])?;
    }
    eprintln!("Running maintainer scripts and triggers");
    sb.run(
        "configuring the layered packages (dpkg --configure)",
        &["dpkg", "--configure", "--pending", "--force-confold"],
        &[],
    )?;
    sb.finish()?;
    let names: Vec<&str> = plan.install.iter().map(|p| p.name.as_str()).collect();
    kernel.check(
        root,
        &format!("a maintainer script or trigger of {}", names.join(", ")),
    )?;
    let removed = machine_specific(root)?;
    for r in removed {
        eprintln!("Not in the image (made on each machine): /{r}");
    }
    crate::compose::layout::refresh_factory_var(root)?;
    Ok(())
}

/// Appends (or replaces) the package's paragraph in the database's `status`. The file is
/// replaced, never written in place: it is a link into the repository.
fn add_status(root: &Path, para: &Paragraph) -> Result<()> {
    let rel = format!("{DB_DIR}/status");
    let text = read_db(root, &rel)?;
    let path = root.join(&rel);
    let name = para.get("Package").unwrap_or_default();
    let mut out = String::new();
    for p in deb822::parse(&text)? {
        if p.get("Package") == Some(name) && p.get("Architecture") == para.get("Architecture") {
            continue;
        }
        out.push_str(&p.to_text());
        out.push('\n');
    }
    out.push_str(&para.to_text());
    out.push('\n');
    crate::fsutil::atomic_write(&path, out.as_bytes(), 0o644)
}

/// Reads a file of the dpkg database of the tree at `root` without following a symlink
/// (maintainer scripts have run in the tree).
fn read_db(root: &Path, rel: &str) -> Result<String> {
    let tree = beneath::open_root(root)?;
    let data =
        beneath::read(tree.as_fd(), rel, 1 << 30).with_context(|| format!("reading /{rel}"))?;
    String::from_utf8(data).with_context(|| format!("/{rel} is not UTF-8"))
}

/// Refuses to check `commit` out into `root` when one of its directories stands in the tree
/// as a symlink or a file: the checkout would follow it (a maintainer script may have put it
/// there).
fn check_directories(repo: &ostree::Repo, commit: &str, root: &Path) -> Result<()> {
    let tree = beneath::open_root(root)?;
    for d in repo::directories(repo, commit)? {
        match beneath::kind_at(tree.as_fd(), &d)? {
            beneath::Kind::Dir | beneath::Kind::Missing => {}
            k => bail!("its directory /{d} is a {k:?} in the tree being assembled"),
        }
    }
    Ok(())
}

/// The environment dpkg gives maintainer scripts.
fn maintscript_env(id: &PackageId, script: &str) -> Vec<(&'static str, String)> {
    vec![
        ("DPKG_MAINTSCRIPT_PACKAGE", id.name.clone()),
        ("DPKG_MAINTSCRIPT_ARCH", id.arch.clone()),
        ("DPKG_MAINTSCRIPT_NAME", script.to_string()),
        ("DPKG_MAINTSCRIPT_PACKAGE_REFCOUNT", "1".to_string()),
        ("DPKG_ADMINDIR", "/var/lib/dpkg".to_string()),
        ("DPKG_ROOT", String::new()),
    ]
}

/// dpkg's triggers for packages unpacked by hand: the interests they declare are registered
/// as dpkg would on unpack, and the triggers they activate (explicitly, or through files in
/// a path some package is interested in) are activated before `dpkg --configure` runs them.
#[derive(Default)]
struct Triggers {
    /// (trigger, package[/noawait]) interests declared by new packages.
    interests: Vec<(String, String)>,
    /// Named triggers activated by new packages.
    named: BTreeSet<String>,
}

impl Triggers {
    fn collect(&mut self, root: &Path, info: &str, name: &str) -> Result<()> {
        let rel = format!("{DB_DIR}/info/{info}.triggers");
        let tree = beneath::open_root(root)?;
        if beneath::kind_at(tree.as_fd(), &rel)? == beneath::Kind::Missing {
            return Ok(());
        }
        let text = read_db(root, &rel)?;
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(kind), Some(arg)) = (w.next(), w.next()) else {
                continue;
            };
            if kind.starts_with("interest") || kind.starts_with("activate") {
                debian::names::trigger(arg)
                    .with_context(|| format!("the triggers file of {name}"))?;
            }
            match kind {
                "interest" | "interest-await" => {
                    self.interests.push((arg.to_string(), name.to_string()))
                }
                "interest-noawait" => self
                    .interests
                    .push((arg.to_string(), format!("{name}/noawait"))),
                "activate" | "activate-await" | "activate-noawait" => {
                    self.named.insert(arg.to_string());
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Writes the new packages' interests into `triggers/`.
    fn register(&self, db: &Path) -> Result<()> {
        let dir = db.join("triggers");
        fs::create_dir_all(&dir)?;
        for (trigger, who) in &self.interests {
            let (file, line) = if trigger.starts_with('/') {
                (dir.join("File"), format!("{trigger} {who}\n"))
            } else {
                (dir.join(trigger), format!("{who}\n"))
            };
            let mut text = fs::read_to_string(&file).unwrap_or_default();
            if !text.lines().any(|l| l == line.trim_end()) {
                text.push_str(&line);
                crate::fsutil::atomic_write(&file, text.as_bytes(), 0o644)?;
            }
        }
        Ok(())
    }

    /// The triggers to activate: the named ones, and every file-trigger path under which a
    /// new package put a file.
    fn activations(
        &self,
        db: &Path,
        plan: &Plan,
        cached: &BTreeMap<String, cache::Cached>,
    ) -> Result<Vec<String>> {
        let mut out: BTreeSet<String> = self.named.clone();
        let file_interests = fs::read_to_string(db.join("triggers/File")).unwrap_or_default();
        let paths: Vec<&str> = file_interests
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        for id in &plan.install {
            let info = cached[&id.name].info_name();
            let list = fs::read_to_string(db.join("info").join(format!("{info}.list")))
                .unwrap_or_default();
            for f in list.lines() {
                for p in &paths {
                    if canonical(f).starts_with(&canonical(p)) {
                        out.insert(p.to_string());
                    }
                }
            }
        }
        Ok(out.into_iter().collect())
    }
}

/// Where kernel modules and firmware live (as dpkg lists them, merged-/usr canonical).
const INITRAMFS_INPUT_DIRS: &[&str] = &["/usr/lib/modules/", "/usr/lib/firmware/"];

/// The packages of the plan that install kernel modules or firmware.
fn initramfs_inputs(
    db: &Path,
    plan: &Plan,
    cached: &BTreeMap<String, cache::Cached>,
) -> Vec<String> {
    plan.install
        .iter()
        .filter(|id| {
            let info = cached[&id.name].info_name();
            fs::read_to_string(db.join("info").join(format!("{info}.list")))
                .unwrap_or_default()
                .lines()
                .any(|f| {
                    let f = canonical(f);
                    INITRAMFS_INPUT_DIRS
                        .iter()
                        .any(|d| f.starts_with(d) && f.len() > d.len())
                })
        })
        .map(|id| id.name.clone())
        .collect()
}

/// A path as it is on a merged-/usr system (`/lib/x` is `/usr/lib/x`).
fn canonical(p: &str) -> String {
    for top in ["/bin/", "/sbin/", "/lib/", "/lib64/", "/lib32/", "/libx32/"] {
        if let Some(rest) = p.strip_prefix(top) {
            return format!("/usr{top}{rest}");
        }
    }
    p.to_string()
}

/// Removes machine-specific files scripts generated; returns what was removed.
fn machine_specific(root: &Path) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (pattern, _) in MACHINE_SPECIFIC {
        let p = root.join(pattern);
        let (dir, prefix) = match p.file_name() {
            Some(f) if !pattern.ends_with('/') => (
                p.parent().context("parent")?.to_path_buf(),
                f.to_string_lossy().into_owned(),
            ),
            _ => (p.clone(), String::new()),
        };
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd {
            let e = e?;
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let rel = e.path().strip_prefix(root)?.to_string_lossy().into_owned();
                crate::fsutil::remove_any(&e.path())?;
                removed.push(rel);
            }
        }
    }
    removed.sort();
    Ok(removed)
}

/// The layering recorded in a commit's metadata (empty for a base commit).
#[derive(Debug, Default, Clone, Serialize)]
pub struct Recorded {
    pub base: Option<String>,
    pub layered: Vec<String>,
    pub removed: Vec<String>,
    pub replaced: Vec<String>,
    pub inactive: Vec<String>,
    pub cache: Vec<String>,
}

/// Reads what `commit` records about its layering.
pub fn recorded(repo: &ostree::Repo, commit: &str) -> Result<Recorded> {
    let meta = repo::commit_metadata(repo, commit)?;
    let list = |k: &str| -> Vec<String> {
        meta.lookup::<Vec<String>>(k)
            .ok()
            .flatten()
            .unwrap_or_default()
    };
    Ok(Recorded {
        base: meta.lookup::<String>(repo::BASE_COMMIT).ok().flatten(),
        layered: list(META_LAYERED),
        removed: list(META_REMOVED),
        replaced: list(META_REPLACED),
        inactive: list(META_INACTIVE),
        cache: list(META_CACHE),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_usr_paths_are_canonical() {
        assert_eq!(canonical("/lib/firmware/x.bin"), "/usr/lib/firmware/x.bin");
        assert_eq!(canonical("/bin/sh"), "/usr/bin/sh");
        assert_eq!(
            canonical("/usr/lib/modules/6.1/x.ko"),
            "/usr/lib/modules/6.1/x.ko"
        );
        assert_eq!(canonical("/libexec/x"), "/libexec/x");
    }
}
