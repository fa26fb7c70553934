//! The libostree repository: creating it, committing a tree, reading commit metadata,
//! copying a ref between repositories and checking out deployments.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib, prelude::*};

/// Metadata of a commit that `status` and the bootloader writer show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CommitInfo {
    pub checksum: String,
    pub version: Option<String>,
    /// Seconds since the epoch.
    pub timestamp: u64,
}

/// Opens the repository at `path`.
pub fn open(path: &Path) -> Result<ostree::Repo> {
    let repo = ostree::Repo::new_for_path(path);
    repo.open(gio::Cancellable::NONE)
        .with_context(|| format!("opening ostree repository {}", path.display()))?;
    Ok(repo)
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

/// Resolves `rev` (a ref or a checksum) to a commit checksum.
pub fn resolve(repo: &ostree::Repo, rev: &str) -> Result<String> {
    match repo.resolve_rev(rev, true)? {
        Some(c) => Ok(c.to_string()),
        None => bail!("{rev} is not a ref or commit in the repository"),
    }
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
        timestamp: ostree::commit_get_timestamp(&commit),
    })
}

/// Commits the directory `dir` as a new commit on `refname`, with `version` metadata, in one
/// transaction: either the ref moves to the complete commit or nothing changes.
pub fn commit_dir(
    repo: &ostree::Repo,
    dir: &Path,
    refname: &str,
    version: Option<&str>,
    subject: &str,
) -> Result<String> {
    let parent = repo.resolve_rev(refname, true)?.map(|s| s.to_string());
    repo.prepare_transaction(gio::Cancellable::NONE)?;
    let result = (|| -> Result<String> {
        let mtree = ostree::MutableTree::new();
        let modifier = ostree::RepoCommitModifier::new(ostree::RepoCommitModifierFlags::NONE, None);
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
        let meta = glib::VariantDict::new(None);
        if let Some(v) = version {
            meta.insert("version", v);
        }
        meta.insert("ostree.bootable", true);
        let meta = meta.end();
        let csum = repo.write_commit(
            parent.as_deref(),
            Some(subject),
            None,
            Some(&meta),
            &root,
            gio::Cancellable::NONE,
        )?;
        repo.transaction_set_ref(None, refname, Some(csum.as_str()));
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
    dest.pull_with_options(&url, &opts.end(), None, gio::Cancellable::NONE)
        .with_context(|| format!("pulling {refname} from {}", src.display()))?;
    let csum = resolve(&open(&src)?, refname)?;
    dest.set_ref_immediate(None, refname, Some(&csum), gio::Cancellable::NONE)?;
    Ok(csum)
}

/// Checks `commit` out at `dest` (which must not exist) as hardlinks into the repository.
pub fn checkout(repo: &ostree::Repo, commit: &str, dest: &Path) -> Result<()> {
    let opts = ostree::RepoCheckoutAtOptions {
        mode: ostree::RepoCheckoutMode::None,
        no_copy_fallback: false,
        enable_fsync: true,
        ..Default::default()
    };
    repo.checkout_at(
        Some(&opts),
        libc_at_fdcwd(),
        dest,
        commit,
        gio::Cancellable::NONE,
    )
    .with_context(|| format!("checking out {commit} to {}", dest.display()))
}

fn libc_at_fdcwd() -> i32 {
    nix::libc::AT_FDCWD
}
