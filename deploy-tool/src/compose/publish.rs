//! `stratum compose publish`: copies a composed ref into an `archive` repository that any
//! static HTTP server can serve, with static deltas and a (signed) summary.
//!
//! The order of the steps is what keeps the published repository consistent for clients
//! reading it at any moment:
//! 1. the commit's objects (and up to N ancestors) are pulled in, without moving any ref;
//! 2. the commit is signed (its detached metadata), before any delta is made, because a
//!    static delta carries the detached metadata of its target commit, and clients pulling
//!    through a delta verify the signature found there;
//! 3. the deltas are generated;
//! 4. only then the ref moves, and the summary (refs, commits and the list of deltas) is
//!    written again and signed.
//!
//! An error at any step leaves the ref and summary as they were: objects and deltas written
//! before it are unreferenced until the next publish, and clients see the previous release.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ostree::{gio, glib};

use crate::delta::short;
use crate::progress;

/// What to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// The repository `compose rootfs` committed to (any mode).
    pub repo: PathBuf,
    /// The `archive` repository to publish into, created when missing.
    pub to: PathBuf,
    pub refname: String,
    /// Deltas to the new commit from this many of its nearest ancestors (0: none).
    pub deltas: u32,
    /// Also a delta from nothing to the new commit (for first installs over the network).
    pub delta_from_scratch: bool,
    /// Sign the commit and the summary with these GPG keys.
    pub gpg: Option<GpgSigner>,
}

/// GPG keys to sign with.
#[derive(Debug, Clone)]
pub struct GpgSigner {
    /// Key ids or fingerprints (each one signs).
    pub key_ids: Vec<String>,
    /// GnuPG's home directory [default: GnuPG's own, `~/.gnupg`].
    pub homedir: Option<PathBuf>,
}

/// A static delta that was generated.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Delta {
    /// The commit the delta starts from; `None` for a delta from scratch.
    pub from: Option<String>,
    pub to: String,
    /// The size of the delta's files (superblock and parts).
    pub bytes: u64,
}

/// The result of a publish.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PublishResult {
    pub commit: String,
    #[serde(rename = "ref")]
    pub refname: String,
    /// The commit the published ref pointed to before, if any.
    pub previous: Option<String>,
    pub deltas: Vec<Delta>,
    /// Whether the commit and the summary were signed.
    pub signed: bool,
}

/// Publishes `opts.refname` of `opts.repo` into the archive repository `opts.to`.
pub fn publish(opts: &PublishOptions) -> Result<PublishResult> {
    let src = crate::repo::open(&opts.repo)?;
    let commit = crate::repo::resolve(&src, &opts.refname)
        .with_context(|| format!("resolving {} in {}", opts.refname, opts.repo.display()))?;
    let dest = crate::repo::open_or_create(&opts.to, ostree::RepoMode::Archive)?;
    if dest.mode() != ostree::RepoMode::Archive {
        bail!(
            "{} is a {:?} repository; publish into an archive repository (HTTP servers serve \
             its compressed objects): give a new directory to --to",
            opts.to.display(),
            dest.mode()
        );
    }
    let previous = dest
        .resolve_rev(&opts.refname, true)?
        .map(|c| c.to_string())
        .filter(|c| *c != commit);

    pull_commit(&dest, &opts.repo, &commit, opts.deltas)?;
    if let Some(gpg) = &opts.gpg {
        sign_commit(&dest, &commit, gpg)?;
    }
    let mut deltas = Vec::new();
    for from in delta_sources(&dest, &commit, previous.as_deref(), opts.deltas)? {
        deltas.push(generate_delta(&dest, &opts.to, Some(&from), &commit)?);
    }
    if opts.delta_from_scratch {
        deltas.push(generate_delta(&dest, &opts.to, None, &commit)?);
    }

    dest.set_ref_immediate(None, &opts.refname, Some(&commit), gio::Cancellable::NONE)
        .with_context(|| format!("setting {} in {}", opts.refname, opts.to.display()))?;
    dest.regenerate_summary(None, gio::Cancellable::NONE)
        .with_context(|| format!("writing the summary of {}", opts.to.display()))?;
    if let Some(gpg) = &opts.gpg {
        let keys: Vec<&str> = gpg.key_ids.iter().map(String::as_str).collect();
        dest.add_gpg_signature_summary(&keys, homedir(gpg)?, gio::Cancellable::NONE)
            .with_context(|| {
                format!(
                    "signing the summary of {} with {}",
                    opts.to.display(),
                    keys.join(", ")
                )
            })?;
    }
    eprintln!(
        "Published {commit} as {} in {} ({} deltas, summary {})",
        opts.refname,
        opts.to.display(),
        deltas.len(),
        if opts.gpg.is_some() {
            "signed"
        } else {
            "unsigned"
        }
    );
    Ok(PublishResult {
        commit,
        refname: opts.refname.clone(),
        previous,
        deltas,
        signed: opts.gpg.is_some(),
    })
}

/// Copies `commit` and up to `depth` of its ancestors from `src` into `dest`, by checksum, so
/// no ref of `dest` moves. Ancestors `src` does not hold are skipped.
fn pull_commit(dest: &ostree::Repo, src: &Path, commit: &str, depth: u32) -> Result<()> {
    let src = src
        .canonicalize()
        .with_context(|| format!("resolving {}", src.display()))?;
    let opts = glib::VariantDict::new(None);
    opts.insert("refs", &vec![commit.to_string()][..]);
    opts.insert("depth", i32::try_from(depth).unwrap_or(i32::MAX));
    let url = format!("file://{}", src.display());
    crate::repo::pull(dest, &url, &opts.end(), format!("Copying {commit}"))
        .with_context(|| format!("copying commit {commit} from {}", src.display()))
}

/// Signs `commit` with each of the keys; a key that signed it already is left as it is (a
/// publish that is run again, or a commit signed with `ostree gpg-sign` before).
fn sign_commit(repo: &ostree::Repo, commit: &str, gpg: &GpgSigner) -> Result<()> {
    for key in &gpg.key_ids {
        match repo.sign_commit(commit, key, homedir(gpg)?, gio::Cancellable::NONE) {
            Ok(()) => {}
            Err(e) if e.matches(gio::IOErrorEnum::Exists) => {}
            Err(e) => {
                return Err(e).with_context(|| format!("signing commit {commit} with key {key}"))
            }
        }
    }
    Ok(())
}

fn homedir(gpg: &GpgSigner) -> Result<Option<&str>> {
    gpg.homedir
        .as_deref()
        .map(|p| {
            p.to_str()
                .with_context(|| format!("the GnuPG home {} is not UTF-8", p.display()))
        })
        .transpose()
}

/// The commits to make deltas from, nearest first: the `count` nearest ancestors of `commit`
/// that `repo` holds complete, then `previous` (what the ref pointed to before, what clients
/// run now) when it is not among them: several composes may have happened between two
/// publishes, or the ref may have been moved to another history.
fn delta_sources(
    repo: &ostree::Repo,
    commit: &str,
    previous: Option<&str>,
    count: u32,
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    if count == 0 {
        return Ok(out);
    }
    let mut cur = commit.to_string();
    while out.len() < count as usize {
        let (variant, _) = repo
            .load_commit(&cur)
            .with_context(|| format!("loading commit {cur}"))?;
        let Some(parent) = ostree::commit_get_parent(&variant).map(|p| p.to_string()) else {
            break;
        };
        let parent_csum = crate::repo::Checksum::parse(&parent)?;
        match crate::repo::commit_presence(repo, &parent_csum)? {
            crate::repo::Presence::Complete => out.push(parent.clone()),
            // Its objects are gone (pruned history): no delta from it, but its own parent
            // may still be whole.
            crate::repo::Presence::Partial => {}
            crate::repo::Presence::Missing => break,
        }
        cur = parent;
    }
    if let Some(prev) = previous {
        let prev_csum = crate::repo::Checksum::parse(prev)?;
        let whole =
            crate::repo::commit_presence(repo, &prev_csum)? == crate::repo::Presence::Complete;
        if whole && !out.iter().any(|c| c == prev) {
            out.push(prev.to_string());
        }
    }
    Ok(out)
}

/// Generates the static delta `from` -> `to` (`from` `None`: from scratch), replacing one that
/// exists.
fn generate_delta(
    repo: &ostree::Repo,
    repo_path: &Path,
    from: Option<&str>,
    to: &str,
) -> Result<Delta> {
    let label = match from {
        Some(f) => format!("Generating the delta {}..{}", short(f), short(to)),
        None => format!("Generating the delta from scratch to {}", short(to)),
    };
    let phase = progress::Phase::start(label, progress::Unit::Time);
    // libostree reads both dictionaries without checking for NULL: pass empty ones (its
    // defaults for every parameter, as `ostree static-delta generate` without options).
    let empty = || glib::VariantDict::new(None).end();
    repo.static_delta_generate(
        ostree::StaticDeltaGenerateOpt::Major,
        from,
        to,
        Some(&empty()),
        Some(&empty()),
        gio::Cancellable::NONE,
    )
    .with_context(|| match from {
        Some(f) => format!("generating the static delta from {f} to {to}"),
        None => format!("generating the static delta from scratch to {to}"),
    })?;
    let dir = repo_path.join(crate::delta::relative_path(from, to)?);
    let bytes = dir_size(&dir)?;
    phase.finish(&progress::bytes(bytes));
    Ok(Delta {
        from: from.map(str::to_string),
        to: to.to_string(),
        bytes,
    })
}

/// The total size of the files directly in `dir`.
fn dir_size(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let meta = e
            .and_then(|e| e.metadata())
            .with_context(|| format!("reading {}", dir.display()))?;
        if meta.is_file() {
            total += meta.len();
        }
    }
    Ok(total)
}
