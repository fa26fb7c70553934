//! Remotes of the sysroot's repository and pulls from them (libostree does the transport:
//! `file://`, `http(s)://`, static deltas, GPG signature verification).

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, Result};
use ostree::{gio, glib, prelude::*};

/// A remote as `remote list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteInfo {
    pub name: String,
    pub url: String,
    #[serde(rename = "sign-verify")]
    pub sign_verify: bool,
}

/// Adds a remote. With `sign_verify`, commits must carry a valid GPG signature from a key
/// imported with `gpg_keys` (an armored or binary keyring file).
pub fn add(
    repo: &ostree::Repo,
    name: &str,
    url: &str,
    sign_verify: bool,
    gpg_keys: Option<&Path>,
) -> Result<()> {
    if name.is_empty() || name.contains([':', '/', ' ']) {
        anyhow::bail!("invalid remote name {name:?}: no ':', '/' or spaces");
    }
    if repo.remote_list().iter().any(|r| r == name) {
        anyhow::bail!(
            "remote {name} exists already; delete it first with `stratum remote delete {name}`"
        );
    }
    let opts = glib::VariantDict::new(None);
    opts.insert("gpg-verify", sign_verify);
    opts.insert("gpg-verify-summary", false);
    repo.remote_add(name, Some(url), Some(&opts.end()), gio::Cancellable::NONE)
        .with_context(|| format!("adding remote {name}"))?;
    if let Some(keys) = gpg_keys {
        let f = gio::File::for_path(keys);
        let stream = f
            .read(gio::Cancellable::NONE)
            .with_context(|| format!("opening {}", keys.display()))?;
        let imported = repo
            .remote_gpg_import(name, Some(&stream), &[], gio::Cancellable::NONE)
            .with_context(|| format!("importing GPG keys from {}", keys.display()));
        if let Err(e) = imported {
            let _ = repo.remote_delete(name, gio::Cancellable::NONE);
            return Err(e);
        }
    }
    Ok(())
}

/// Deletes a remote.
pub fn delete(repo: &ostree::Repo, name: &str) -> Result<()> {
    if !repo.remote_list().iter().any(|r| r == name) {
        anyhow::bail!("no remote named {name} (see `stratum remote list`)");
    }
    repo.remote_delete(name, gio::Cancellable::NONE)
        .with_context(|| format!("deleting remote {name}"))
}

/// Lists remotes.
pub fn list(repo: &ostree::Repo) -> Result<Vec<RemoteInfo>> {
    let mut out = Vec::new();
    for name in repo.remote_list() {
        let url = repo
            .remote_get_url(&name)
            .map(|s| s.to_string())
            .unwrap_or_default();
        let sign_verify = repo.remote_get_gpg_verify(&name).unwrap_or(false);
        out.push(RemoteInfo {
            name: name.to_string(),
            url,
            sign_verify,
        });
    }
    Ok(out)
}

/// Pulls `refname` from `remote` (a commit only, no history), showing progress on a
/// terminal. Returns the commit the remote ref points to afterwards.
pub fn pull(repo: &ostree::Repo, remote: &str, refname: &str) -> Result<String> {
    let opts = glib::VariantDict::new(None);
    opts.insert("refs", &vec![refname.to_string()][..]);
    opts.insert("depth", 0i32);
    let progress = std::io::stderr().is_terminal().then(|| {
        let p = ostree::AsyncProgress::new();
        p.connect_changed(|p| {
            let fetched = p.uint("fetched");
            let requested = p.uint("requested");
            let bytes = p.uint64("bytes-transferred");
            let status = p.status().map(|s| s.to_string()).unwrap_or_default();
            let line = if !status.is_empty() {
                status
            } else {
                format!(
                    "Receiving objects: {fetched}/{requested}, {} KiB",
                    bytes / 1024
                )
            };
            eprint!("\r\x1b[K{line}");
        });
        p
    });
    let r = repo.pull_with_options(
        remote,
        &opts.end(),
        progress.as_ref(),
        gio::Cancellable::NONE,
    );
    if let Some(p) = &progress {
        p.finish();
        eprintln!();
    }
    r.with_context(|| format!("pulling {refname} from remote {remote}"))?;
    crate::repo::resolve(repo, &format!("{remote}:{refname}"))
}
