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
        let imported = import_gpg_keys(repo, name, keys)
            .with_context(|| format!("importing GPG keys from {}", keys.display()));
        if let Err(e) = imported {
            let _ = repo.remote_delete(name, gio::Cancellable::NONE);
            return Err(e);
        }
    }
    Ok(())
}

/// Imports every key of `keys` into the remote's keyring. The generated binding turns an
/// empty key list into "import none", so libostree is called directly with NULL ("all").
#[allow(unsafe_code)]
fn import_gpg_keys(repo: &ostree::Repo, name: &str, keys: &Path) -> Result<u32> {
    use glib::translate::{from_glib_full, ToGlibPtr};
    let f = gio::File::for_path(keys);
    let stream = f
        .read(gio::Cancellable::NONE)
        .with_context(|| format!("opening {}", keys.display()))?;
    let mut imported: u32 = 0;
    let mut error = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call: borrowed GObjects and a NUL-terminated
    // name from the translate helpers, NULL key ids (all keys), NULL cancellable, and
    // out-parameters that live across the call; an error, if set, is owned by us.
    let ok = unsafe {
        ostree::ffi::ostree_repo_remote_gpg_import(
            repo.to_glib_none().0,
            name.to_glib_none().0,
            stream.upcast_ref::<gio::InputStream>().to_glib_none().0,
            std::ptr::null(),
            &mut imported,
            std::ptr::null_mut(),
            &mut error,
        )
    };
    if ok == glib::ffi::GFALSE {
        let e: glib::Error = unsafe { from_glib_full(error) };
        return Err(e.into());
    }
    Ok(imported)
}

/// Adds what to do to libostree's signature and ref-binding errors, in Stratum's terms.
pub fn explain_pull_error(e: anyhow::Error, remote: &str, refname: &str) -> anyhow::Error {
    let text = format!("{e:#}");
    if text.contains("ref binding") {
        e.context(format!(
            "remote {remote} serves under {refname} a commit bound to another ref \
             (ostree.ref-binding); refusing it. If the publisher moved to another ref, follow \
             it with `stratum rebase {remote}:REF`"
        ))
    } else if text.contains("GPG") || text.contains("signature") {
        e.context(format!(
            "remote {remote} requires signed commits and this one is not signed by a trusted key; \
             import the publisher's key with `stratum remote delete {remote}` and \
             `stratum remote add {remote} URL --gpg-import KEYFILE`"
        ))
    } else {
        e
    }
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
    r.with_context(|| format!("pulling {refname} from remote {remote}"))
        .map_err(|e| explain_pull_error(e, remote, refname))?;
    crate::repo::resolve(repo, &format!("{remote}:{refname}"))
}
