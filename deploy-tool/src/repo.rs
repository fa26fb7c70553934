//! The libostree repository: creating it, committing a tree, reading commit metadata,
//! copying a ref between repositories and checking out deployments.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib, prelude::*};

use crate::progress;

/// Metadata of a commit that `status` and the bootloader writer show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitInfo {
    pub checksum: String,
    pub version: Option<String>,
    /// The parent commit, when it has one.
    pub parent: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: u64,
}

/// Commit metadata: the refs a commit may be published under (`as`), as OSTree names it.
pub const REF_BINDING: &str = "ostree.ref-binding";
/// Commit metadata: the collection a commit belongs to (`s`), written only when the
/// repository has a collection id.
pub const COLLECTION_BINDING: &str = "ostree.collection-binding";

/// Opens the repository at `path`.
pub fn open(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repository {}", path.display()))?;
    Ok(repo)
}

/// The directory of `repo`.
pub fn local_path(repo: &ostree::Repo) -> Result<std::path::PathBuf> {
    repo.path()
        .path()
        .context("the repository has no local path")
}

/// Opens the repository at `path`, creating a bare one when nothing is there yet.
pub fn open_or_create(path: &Path, mode: ostree::RepoMode) -> Result<ostree::Repo> {
    if path.join("config").exists() {
        return open(path);
    }
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let repo = ostree::Repo::new_for_path(path);
    repo.create(mode, gio::Cancellable::NONE)
        .with_context(|| format!("creating ostree repository {}", path.display()))?;
    Ok(repo)
}

/// A commit checksum: 64 lowercase hexadecimal digits (SHA-256), the only form of commit
/// name libostree takes without resolving it (`override-commit-ids` of a pull).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checksum(String);

impl Checksum {
    /// `s` when it is a full checksum.
    pub fn parse(s: &str) -> Result<Checksum> {
        if !is_checksum(s) {
            bail!("{s:?} is not a commit checksum (64 hexadecimal digits)");
        }
        Ok(Checksum(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Checksum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn is_checksum(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Resolves `rev` to a commit checksum, checking its form before libostree sees it:
/// - a full checksum is returned as it is (whether the commit is in the repository is
///   [`commit_presence`]'s question);
/// - otherwise `rev` must be a valid `REF` or `REMOTE:REF` (OSTree's rules) naming a ref of
///   the repository, or (libostree's rule) a prefix of exactly one of its commits.
pub fn resolve(repo: &ostree::Repo, rev: &str) -> Result<String> {
    if is_checksum(rev) {
        return Ok(rev.to_string());
    }
    ostree::parse_refspec(rev).map_err(|e| {
        anyhow::anyhow!(
            "invalid revision {rev:?}: not a commit checksum, a ref or REMOTE:REF ({})",
            e.message()
        )
    })?;
    let resolved = repo.resolve_rev(rev, true).map_err(|e| {
        anyhow::anyhow!(
            "{rev} names more than one thing in the local repository ({}); give more digits \
             or the full checksum",
            e.message()
        )
    })?;
    match resolved {
        Some(c) => Ok(c.to_string()),
        None if rev.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) => bail!(
            "no ref is named {rev} and no commit of the local repository starts with it; give \
             the full 64-digit checksum to fetch a commit from the remote"
        ),
        None => bail!(
            "{rev} is not a ref of the local repository, nor a commit checksum; give a ref, \
             REMOTE:REF or a commit checksum"
        ),
    }
}

/// How much of a commit the repository holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// Nothing.
    Missing,
    /// The commit object only (a metadata-only pull, e.g. `upgrade --check`).
    Partial,
    /// The commit and its whole tree.
    Complete,
}

/// How much of `commit` the repository holds.
pub fn commit_presence(repo: &ostree::Repo, commit: &Checksum) -> Result<Presence> {
    let c = commit.as_str();
    if !repo
        .has_object(ostree::ObjectType::Commit, c, gio::Cancellable::NONE)
        .with_context(|| format!("looking up commit {c}"))?
    {
        return Ok(Presence::Missing);
    }
    let (_, state) = repo
        .load_commit(c)
        .with_context(|| format!("loading commit {c}"))?;
    Ok(if state.contains(ostree::RepoCommitState::PARTIAL) {
        Presence::Partial
    } else {
        Presence::Complete
    })
}

/// Whether `refname` exists.
pub fn has_ref(repo: &ostree::Repo, refname: &str) -> Result<bool> {
    Ok(repo.resolve_rev(refname, true)?.is_some())
}

/// Reads a commit's version and timestamp.
pub fn commit_info(repo: &ostree::Repo, checksum: &str) -> Result<CommitInfo> {
    let (commit, _) = repo
        .load_commit(checksum)
        .with_context(|| format!("loading commit {checksum}"))?;
    let meta = glib::VariantDict::new(Some(&commit.child_value(0)));
    let version = meta.lookup::<String>("version").ok().flatten();
    Ok(CommitInfo {
        checksum: checksum.to_string(),
        version,
        parent: ostree::commit_get_parent(&commit).map(|p| p.to_string()),
        timestamp: ostree::commit_get_timestamp(&commit),
    })
}

/// Commit metadata of a layered commit: the base commit it was made from (`s`).
pub const BASE_COMMIT: &str = "stratum.base-commit";

/// The metadata dictionary of `checksum`.
pub fn commit_metadata(repo: &ostree::Repo, checksum: &str) -> Result<glib::VariantDict> {
    let (commit, _) = repo
        .load_commit(checksum)
        .with_context(|| format!("loading commit {checksum}"))?;
    Ok(glib::VariantDict::new(Some(&commit.child_value(0))))
}

/// The base commit of `checksum`: the image it was layered on, or itself when it is not a
/// layered commit. Reads only metadata, so it works after the base's objects are pruned.
pub fn base_commit(repo: &ostree::Repo, checksum: &str) -> Result<String> {
    let meta = commit_metadata(repo, checksum)?;
    Ok(meta
        .lookup::<String>(BASE_COMMIT)
        .ok()
        .flatten()
        .unwrap_or_else(|| checksum.to_string()))
}

/// Every directory of `commit`'s tree, as paths relative to its root, parents first.
pub fn directories(repo: &ostree::Repo, commit: &str) -> Result<Vec<String>> {
    fn walk(dir: &gio::File, prefix: &str, out: &mut Vec<String>) -> Result<()> {
        let entries = dir.enumerate_children(
            "standard::name,standard::type",
            gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
            gio::Cancellable::NONE,
        )?;
        while let Some(info) = entries.next_file(gio::Cancellable::NONE)? {
            if info.file_type() != gio::FileType::Directory {
                continue;
            }
            let name = info.name();
            let name = name
                .to_str()
                .context("a directory name that is not UTF-8")?;
            let rel = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}/{name}")
            };
            out.push(rel.clone());
            walk(&dir.child(name), &rel, out)?;
        }
        Ok(())
    }
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading commit {commit}"))?;
    let mut out = Vec::new();
    walk(&root, "", &mut out).with_context(|| format!("listing the directories of {commit}"))?;
    Ok(out)
}

/// The contents of the file at `path` (relative, no leading `/`) in `commit`, `None` when
/// there is no such file.
pub fn read_file(repo: &ostree::Repo, commit: &str, path: &str) -> Result<Option<Vec<u8>>> {
    use std::io::Read;
    let (root, _) = repo
        .read_commit(commit, gio::Cancellable::NONE)
        .with_context(|| format!("reading commit {commit}"))?;
    let f = root
        .resolve_relative_path(path)
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("not a repository file"))?;
    if let Err(e) = f.ensure_resolved() {
        if e.matches(gio::IOErrorEnum::NotFound) {
            return Ok(None);
        }
        return Err(e).with_context(|| format!("reading /{path} in commit {commit}"));
    }
    match f.query_info(
        "standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    ) {
        Ok(i) if i.file_type() == gio::FileType::Regular => {}
        Ok(_) => return Ok(None),
        Err(e) if e.matches(gio::IOErrorEnum::NotFound) => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading /{path} in commit {commit}")),
    }
    let (stream, _, _) = repo
        .load_file(&f.checksum(), gio::Cancellable::NONE)
        .with_context(|| format!("loading /{path} of commit {commit}"))?;
    let mut out = Vec::new();
    if let Some(s) = stream {
        s.into_read()
            .read_to_end(&mut out)
            .with_context(|| format!("reading /{path} of commit {commit}"))?;
    }
    Ok(Some(out))
}

/// Checks that `commit` may be deployed as `refname`: when it carries `ostree.ref-binding`,
/// the list must name `refname`. (libostree checks the same on every pull of a ref; this
/// covers commits that were already in the repository.) Commits without the metadata, from
/// tools that do not write it, are accepted, as libostree does.
pub fn check_ref_binding(repo: &ostree::Repo, commit: &str, refname: &str) -> Result<()> {
    let (variant, _) = repo
        .load_commit(commit)
        .with_context(|| format!("loading commit {commit}"))?;
    let meta = glib::VariantDict::new(Some(&variant.child_value(0)));
    let Some(bound) = meta
        .lookup::<Vec<String>>(REF_BINDING)
        .with_context(|| format!("commit {commit}: {REF_BINDING} is not a list of refs"))?
    else {
        return Ok(());
    };
    if bound.iter().any(|r| r == refname) {
        return Ok(());
    }
    bail!(
        "commit {commit} is bound to {} ({REF_BINDING}), not to {refname}, the ref being \
         followed; refusing it. To follow that ref instead, use `stratum rebase REMOTE:REF`",
        bound.join(", ")
    )
}

/// What [`commit_dir`] records.
pub struct CommitSpec<'a> {
    pub refname: &'a str,
    pub version: Option<&'a str>,
    pub subject: &'a str,
    /// Seconds since the epoch [default: now]. Clients compare it to refuse downgrades, so
    /// a build's timestamp must grow with its age.
    pub timestamp: Option<u64>,
    /// More commit metadata.
    pub metadata: &'a [(&'a str, glib::Variant)],
}

/// Commits the directory `dir` as a new commit on `spec.refname`, in one transaction:
/// either the ref moves to the complete commit or nothing changes.
pub fn commit_dir(repo: &ostree::Repo, dir: &Path, spec: &CommitSpec) -> Result<String> {
    let refname = spec.refname;
    let parent = repo.resolve_rev(refname, true)?.map(|s| s.to_string());
    let meta = glib::VariantDict::new(None);
    if let Some(v) = spec.version {
        meta.insert("version", v);
    }
    meta.insert("ostree.bootable", true);
    // The refs (and collection) the commit is published under, as `ostree commit
    // --bind-ref` records them: libostree refuses to pull it under any other ref, so a
    // mirror cannot pass one branch's build off as another's.
    meta.insert(REF_BINDING, &[refname][..]);
    if let Some(collection) = repo.collection_id() {
        meta.insert(COLLECTION_BINDING, collection.as_str());
    }
    for (k, v) in spec.metadata {
        meta.insert_value(k, v);
    }
    write_commit(
        repo,
        dir,
        &NewCommit {
            parent: parent.as_deref(),
            subject: spec.subject,
            metadata: meta.end(),
            timestamp: spec.timestamp,
            refname: Some(refname),
            devino: None,
        },
    )
}

/// A commit to write with [`write_commit`].
pub struct NewCommit<'a> {
    pub parent: Option<&'a str>,
    pub subject: &'a str,
    /// The commit metadata (`a{sv}`).
    pub metadata: glib::Variant,
    /// Seconds since the epoch [default: now].
    pub timestamp: Option<u64>,
    /// The ref to point at the commit, in the same transaction.
    pub refname: Option<&'a str>,
    /// Files checked out with this cache are not read again (their checksums are known).
    pub devino: Option<&'a ostree::RepoDevInoCache>,
}

/// Writes the directory `dir` as a commit in one transaction: a complete commit (and its
/// ref) or nothing.
pub fn write_commit(repo: &ostree::Repo, dir: &Path, c: &NewCommit) -> Result<String> {
    repo.prepare_transaction(gio::Cancellable::NONE)?;
    let result = (|| -> Result<String> {
        let mtree = ostree::MutableTree::new();
        let modifier = ostree::RepoCommitModifier::new(ostree::RepoCommitModifierFlags::NONE, None);
        if let Some(cache) = c.devino {
            modifier.set_devino_cache(cache);
        }
        repo.write_directory_to_mtree(
            &gio::File::for_path(dir),
            &mtree,
            Some(&modifier),
            gio::Cancellable::NONE,
        )
        .with_context(|| format!("writing {} to the repository", dir.display()))?;
        let root = repo.write_mtree(&mtree, gio::Cancellable::NONE)?;
        let root = root
            .downcast::<ostree::RepoFile>()
            .map_err(|_| anyhow::anyhow!("write_mtree did not return a repository file"))?;
        let csum = match c.timestamp {
            Some(t) => repo.write_commit_with_time(
                c.parent,
                Some(c.subject),
                None,
                Some(&c.metadata),
                &root,
                t,
                gio::Cancellable::NONE,
            )?,
            None => repo.write_commit(
                c.parent,
                Some(c.subject),
                None,
                Some(&c.metadata),
                &root,
                gio::Cancellable::NONE,
            )?,
        };
        if let Some(r) = c.refname {
            repo.transaction_set_ref(None, r, Some(csum.as_str()));
        }
        repo.commit_transaction(gio::Cancellable::NONE)?;
        Ok(csum.to_string())
    })();
    if result.is_err() {
        let _ = repo.abort_transaction(gio::Cancellable::NONE);
    }
    result
}

/// Copies `refname` and the objects of its commit from the repository at `src` into `dest`
/// (a local pull), and sets the same ref in `dest`.
pub fn pull_local(dest: &ostree::Repo, src: &Path, refname: &str) -> Result<String> {
    let src = src
        .canonicalize()
        .with_context(|| format!("resolving {}", src.display()))?;
    let url = format!("file://{}", src.display());
    let opts = glib::VariantDict::new(None);
    opts.insert("refs", &vec![refname.to_string()][..]);
    opts.insert("flags", ostree::RepoPullFlags::NONE.bits() as i32);
    let label = format!("Copying {refname} from {}", src.display());
    pull(dest, &url, &opts.end(), label)
        .with_context(|| format!("pulling {refname} from {}", src.display()))?;
    let csum = resolve(&open(&src)?, refname)?;
    dest.set_ref_immediate(None, refname, Some(&csum), gio::Cancellable::NONE)?;
    Ok(csum)
}

/// libostree's pull of `opts` from `remote` (a remote's name or a `file://` URL), shown as
/// the phase `label` ([`crate::progress`]): objects fetched of those known so far, bytes and
/// rate on a terminal; the objects and bytes fetched on the phase's line otherwise.
pub fn pull(
    repo: &ostree::Repo,
    remote: &str,
    opts: &glib::Variant,
    label: String,
) -> Result<(), glib::Error> {
    pull_reporting(repo, remote, opts, label, None)
}

/// [`pull`], reporting to `activity` when it runs under [`crate::net::watched`] (a pull over
/// the network), which can also cancel it.
pub fn pull_reporting(
    repo: &ostree::Repo,
    remote: &str,
    opts: &glib::Variant,
    label: String,
    activity: Option<&crate::net::Activity>,
) -> Result<(), glib::Error> {
    let phase = progress::Phase::start(label, progress::Unit::Objects);
    let meter = phase.meter();
    let started = std::time::Instant::now();
    let p = ostree::AsyncProgress::new();
    let report = activity.map(|a| a.reporter());
    p.connect_changed(move |p| {
        meter.set_total(u64::from(p.uint("requested")));
        meter.set_done(u64::from(p.uint("fetched")));
        if let Some(report) = &report {
            report(p);
        }
        let status = p.status().map(|s| s.to_string()).unwrap_or_default();
        if status.is_empty() {
            let bytes = p.uint64("bytes-transferred");
            let secs = started.elapsed().as_secs_f64().max(0.001);
            meter.set_message(format!(
                "{} at {}/s",
                progress::bytes(bytes),
                progress::bytes((bytes as f64 / secs) as u64)
            ));
        } else {
            meter.set_message(status);
        }
    });
    let r = repo.pull_with_options(remote, opts, Some(&p), activity.map(|a| a.cancellable()));
    p.finish();
    r?;
    let fetched = p.uint("fetched");
    let status = p.status().map(|s| s.to_string()).unwrap_or_default();
    // A pull from a local repository imports objects instead of fetching them, and says how
    // many in its last status.
    let mut summary = if fetched == 0 && !status.is_empty() {
        status
    } else {
        format!(
            "{fetched} objects, {}",
            progress::bytes(p.uint64("bytes-transferred"))
        )
    };
    let parts = p.uint("fetched-delta-parts");
    if parts > 0 {
        summary.push_str(&format!(", {parts} delta parts"));
    }
    phase.finish(&summary);
    Ok(())
}

/// Checks `commit` out at `dest` (which must not exist) as hardlinks into the repository.
pub fn checkout(repo: &ostree::Repo, commit: &str, dest: &Path) -> Result<()> {
    // No per-file fsync: the caller syncs the whole filesystem once before the checkout is
    // renamed into place (what OSTree does too; fsyncing thousands of files one by one costs
    // far more than one syncfs).
    checkout_with(
        repo,
        commit,
        dest,
        ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            no_copy_fallback: false,
            enable_fsync: false,
            ..Default::default()
        },
    )
}

/// Checks `commit` out into the existing tree `dest`, as hardlinks, adding its files: a
/// file that exists already must be identical, or this fails naming it. `devino` learns the
/// checksums of the files linked, so committing the tree later does not read them again.
pub fn checkout_union(
    repo: &ostree::Repo,
    commit: &str,
    dest: &Path,
    devino: &ostree::RepoDevInoCache,
) -> Result<()> {
    checkout_with(
        repo,
        commit,
        dest,
        ostree::RepoCheckoutAtOptions {
            mode: ostree::RepoCheckoutMode::None,
            overwrite_mode: ostree::RepoCheckoutOverwriteMode::UnionIdentical,
            no_copy_fallback: true,
            enable_fsync: false,
            devino_to_csum_cache: Some(devino.clone()),
            ..Default::default()
        },
    )
}

fn checkout_with(
    repo: &ostree::Repo,
    commit: &str,
    dest: &Path,
    opts: ostree::RepoCheckoutAtOptions,
) -> Result<()> {
    repo.checkout_at(
        Some(&opts),
        libc_at_fdcwd(),
        dest,
        commit,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("checking out {commit} into {}", dest.display()))
}

fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}

/// Points the refs `ostree/<bootversion>/0/<i>` at the deployed commits and removes other
/// `ostree/…` refs, as OSTree does: they keep the commits of deployments from being pruned.
///
/// Returns whether a commit that was protected before is not any more (pruning may free it).
pub fn set_deployment_refs(
    repo: &ostree::Repo,
    bootversion: u8,
    commits: &[String],
) -> Result<bool> {
    let existing = repo.list_refs(Some("ostree"), gio::Cancellable::NONE)?;
    let wanted: Vec<(String, &String)> = commits
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("ostree/{bootversion}/0/{i}"), c))
        .collect();
    for (name, csum) in &wanted {
        repo.set_ref_immediate(None, name, Some(csum), gio::Cancellable::NONE)?;
    }
    for name in existing.keys() {
        let full = format!("ostree/{name}");
        if !wanted.iter().any(|(w, _)| w == &full) {
            repo.set_ref_immediate(None, &full, None, gio::Cancellable::NONE)?;
        }
    }
    Ok(existing.values().any(|c| !commits.contains(c)))
}

/// Removes objects no ref reaches (history is not kept: depth 0, as OSTree's sysroot
/// cleanup does). Returns (objects, pruned, bytes freed).
pub fn prune(repo: &ostree::Repo) -> Result<(i32, i32, u64)> {
    repo.prune(ostree::RepoPruneFlags::REFS_ONLY, 0, gio::Cancellable::NONE)
        .context("pruning the repository")
}

/// Finds the commit with metadata `version` on the history of `start`.
pub fn find_version(repo: &ostree::Repo, start: &str, version: &str) -> Result<String> {
    let mut cur = Some(start.to_string());
    while let Some(c) = cur {
        let Ok((commit, _)) = repo.load_commit(&c) else {
            break;
        };
        if commit_info(repo, &c)?.version.as_deref() == Some(version) {
            return Ok(c);
        }
        cur = ostree::commit_get_parent(&commit).map(|p| p.to_string());
    }
    bail!("no commit with version {version} in the history of {start} (the history available locally)")
}

/// A file-level summary of what changes between two commits.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct TreeDiff {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub modified: Vec<String>,
}

/// Compares two commits' trees. Directories whose tree checksums are equal are skipped
/// without being read, so this costs in proportion to what changed.
pub fn diff_commits(repo: &ostree::Repo, from: &str, to: &str) -> Result<TreeDiff> {
    let (a, _) = repo.read_commit(from, gio::Cancellable::NONE)?;
    let (b, _) = repo.read_commit(to, gio::Cancellable::NONE)?;
    let mut d = TreeDiff::default();
    diff_dir(&a, &b, "", &mut d)?;
    Ok(d)
}

fn children(
    dir: &gio::File,
) -> Result<std::collections::BTreeMap<String, (gio::FileType, gio::File)>> {
    let mut out = std::collections::BTreeMap::new();
    let en = dir.enumerate_children(
        "standard::name,standard::type",
        gio::FileQueryInfoFlags::NOFOLLOW_SYMLINKS,
        gio::Cancellable::NONE,
    )?;
    while let Some(info) = en.next_file(gio::Cancellable::NONE)? {
        let name = info.name().to_string_lossy().into_owned();
        out.insert(name.clone(), (info.file_type(), dir.child(&name)));
    }
    Ok(out)
}

fn repo_checksum(f: &gio::File) -> Result<String> {
    let rf = f
        .clone()
        .downcast::<ostree::RepoFile>()
        .map_err(|_| anyhow::anyhow!("not a repository file"))?;
    rf.ensure_resolved()?;
    Ok(rf
        .tree_get_contents_checksum()
        .map(|s| s.to_string())
        .unwrap_or_else(|| rf.checksum().to_string()))
}

fn diff_dir(a: &gio::File, b: &gio::File, path: &str, d: &mut TreeDiff) -> Result<()> {
    if repo_checksum(a)? == repo_checksum(b)? {
        return Ok(());
    }
    let (ca, cb) = (children(a)?, children(b)?);
    for (name, (ta, fa)) in &ca {
        let p = format!("{path}/{name}");
        match cb.get(name) {
            None => d.removed.push(p),
            Some((tb, fb)) => {
                if *ta == gio::FileType::Directory && *tb == gio::FileType::Directory {
                    diff_dir(fa, fb, &p, d)?;
                } else if ta != tb || repo_checksum(fa)? != repo_checksum(fb)? {
                    d.modified.push(p);
                }
            }
        }
    }
    for name in cb.keys().filter(|n| !ca.contains_key(*n)) {
        d.added.push(format!("{path}/{name}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec<'a>(refname: &'a str, version: Option<&'a str>, subject: &'a str) -> CommitSpec<'a> {
        CommitSpec {
            refname,
            version,
            subject,
            timestamp: Some(1),
            metadata: &[],
        }
    }

    #[test]
    fn checksums() {
        let c = "0123456789abcdef".repeat(4);
        assert_eq!(Checksum::parse(&c).unwrap().as_str(), c);
        for bad in [
            "",
            "deadbeef",
            &c[1..],
            &format!("{c}0"),
            &c.to_uppercase(),
            &c.replace('0', "g"),
            &format!("../{}", &c[3..]),
        ] {
            assert!(Checksum::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn revisions_are_checked_before_libostree() {
        let dir = tempfile::tempdir().unwrap();
        let repo = open_or_create(&dir.path().join("repo"), ostree::RepoMode::Bare).unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        std::fs::write(tree.join("f"), "f").unwrap();
        let c = commit_dir(&repo, &tree, &spec("os/x", Some("1"), "s")).unwrap();
        assert_eq!(resolve(&repo, "os/x").unwrap(), c);
        assert_eq!(resolve(&repo, &c[..12]).unwrap(), c);
        assert_eq!(resolve(&repo, &c).unwrap(), c);
        let other = if c.starts_with('0') { "1" } else { "0" }.repeat(64);
        assert_eq!(
            resolve(&repo, &other).unwrap(),
            other,
            "full checksums pass as they are"
        );
        for bad in [
            "zz",
            "../x",
            "src:",
            "os/y",
            &other[..8],
            "DEADBEEF",
            "a b",
            "",
        ] {
            let e = resolve(&repo, bad).unwrap_err();
            assert!(format!("{e}").contains(bad), "{bad:?}: {e}");
        }
        // Of 17 commits, two share their first digit: that digit is ambiguous.
        let mut commits = vec![c.clone()];
        for i in 0..16 {
            let subject = format!("s{i}");
            commits.push(commit_dir(&repo, &tree, &spec("os/x", None, &subject)).unwrap());
        }
        let shared = commits
            .iter()
            .map(|c| &c[..1])
            .find(|p| commits.iter().filter(|c| c.starts_with(*p)).count() > 1)
            .unwrap();
        let e = format!("{}", resolve(&repo, shared).unwrap_err());
        assert!(e.contains("more than one"), "{e}");
        assert_eq!(
            commit_presence(&repo, &Checksum::parse(&c).unwrap()).unwrap(),
            Presence::Complete
        );
        assert_eq!(
            commit_presence(&repo, &Checksum::parse(&other).unwrap()).unwrap(),
            Presence::Missing
        );
    }
}
