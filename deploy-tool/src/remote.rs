//! Remotes of the sysroot's repository and pulls from them (libostree does the transport:
//! `file://`, `http(s)://`, static deltas, GPG signature verification). Every pull is held to
//! the `[network]` limits ([`crate::net`]).

use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::{gio, glib, prelude::*};

use crate::config::Network;

/// A remote as `remote list` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RemoteInfo {
    pub name: String,
    pub url: String,
    #[serde(rename = "sign-verify")]
    pub sign_verify: bool,
    #[serde(rename = "sign-verify-summary")]
    pub sign_verify_summary: bool,
}

/// What a remote's pulls verify, with the keys imported for the remote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verify {
    /// Commits must carry a valid GPG signature (`gpg-verify`).
    pub commits: bool,
    /// The summary must carry a valid GPG signature (`gpg-verify-summary`): the list of refs,
    /// their commits and the static deltas cannot be altered or replaced by an older one.
    pub summary: bool,
}

/// Adds a remote that verifies what `verify` says, with keys imported from `gpg_keys` (an
/// armored or binary keyring file).
pub fn add(
    repo: &ostree::Repo,
    name: &str,
    url: &str,
    verify: Verify,
    gpg_keys: Option<&Path>,
) -> Result<()> {
    validate_name(name)?;
    validate_url(url)?;
    if repo.remote_list().iter().any(|r| r == name) {
        anyhow::bail!(
            "remote {name} exists already; delete it first with `stratum remote delete {name}`"
        );
    }
    let opts = glib::VariantDict::new(None);
    opts.insert("gpg-verify", verify.commits);
    opts.insert("gpg-verify-summary", verify.summary);
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

/// Checks a remote's name: ASCII letters, digits, `.`, `_` and `-`, not starting with `.` or
/// `-`. The name becomes part of ref names (`NAME:REF`), of the repository's config and of
/// file names under `refs/remotes/`, and is typed on command lines.
pub fn validate_name(name: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if name.is_empty() || name.starts_with(['.', '-']) || !name.chars().all(allowed) {
        bail!(
            "invalid remote name {name:?}: use ASCII letters, digits, '.', '_' and '-', not \
             starting with '.' or '-'"
        );
    }
    Ok(())
}

/// Checks a remote's URL: `file:///ABSOLUTE/PATH`, or `http://` or `https://` with a host
/// name or address, an optional port and an optional path. Anything else (other schemes,
/// libostree's `mirrorlist=` and `metalink=` forms, credentials in the URL, spaces) is refused
/// before it reaches the repository's config.
pub fn validate_url(url: &str) -> Result<()> {
    let bad = |why: &str| {
        anyhow::anyhow!(
            "invalid remote URL {url:?}: {why}; expected file:///ABSOLUTE/PATH, \
             http://HOST[:PORT][/PATH] or https://HOST[:PORT][/PATH]"
        )
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(bad("it contains white space or control characters"));
    }
    if let Some(path) = url.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(bad("a file URL needs an absolute path (file:///srv/repo)"));
        }
        if path.trim_matches('/').is_empty() {
            return Err(bad("the path names no repository"));
        }
        return Ok(());
    }
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| bad("only file://, http:// and https:// URLs are supported"))?;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    if authority.contains('@') {
        return Err(bad("credentials in the URL are not supported"));
    }
    let port = match authority.strip_prefix('[') {
        // An IPv6 address: [::1] or [::1]:8080.
        Some(v6) => {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| bad("the IPv6 address has no closing ']'"))?;
            let v6_char = |c: char| c.is_ascii_hexdigit() || c == ':' || c == '.';
            if addr.is_empty() || !addr.chars().all(v6_char) {
                return Err(bad("the IPv6 address is not valid"));
            }
            match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("text follows the IPv6 address"))?,
                ),
            }
        }
        None => {
            let (host, port) = match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.is_empty() {
                return Err(bad("the host is missing"));
            }
            let host_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
            if !host.chars().all(host_char) || host.starts_with(['.', '-']) {
                return Err(bad("the host is not a valid host name or address"));
            }
            port
        }
    };
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.chars().all(|c| c.is_ascii_digit())
            && port.parse::<u16>().is_ok_and(|p| p > 0);
        if !valid {
            return Err(bad("the port is not a number from 1 to 65535"));
        }
    }
    Ok(())
}

/// Checks that `keys` holds OpenPGP public keys that libostree imports, by importing them for
/// a remote of a scratch repository: the same import [`add`] does, without touching any
/// repository of the caller's. Returns how many keys it holds. An installer calls it before
/// writing anything, so that a bad key file leaves nothing half made.
pub fn check_gpg_keys(keys: &Path) -> Result<u32> {
    let what = || format!("checking the GPG keys in {}", keys.display());
    let scratch = tempfile::Builder::new()
        .prefix("stratum-keycheck-")
        .tempdir()
        .context("creating a scratch directory")
        .with_context(what)?;
    let repo = crate::repo::open_or_create(scratch.path(), ostree::RepoMode::Archive)
        .with_context(what)?;
    repo.remote_add(
        "check",
        Some("file:///nonexistent"),
        None,
        gio::Cancellable::NONE,
    )
    .context("adding a scratch remote")
    .with_context(what)?;
    let n = import_gpg_keys(&repo, "check", keys).with_context(|| {
        format!(
            "{} is not a keyring libostree can import: give an OpenPGP public key file \
             (armored, as `gpg --export --armor KEYID` writes it, or binary)",
            keys.display()
        )
    })?;
    if n == 0 {
        bail!(
            "{} holds no OpenPGP public key: give the key file of the key that signs the \
             remote's commits (`gpg --export --armor KEYID`)",
            keys.display()
        );
    }
    Ok(n)
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
pub fn explain_pull_error(
    repo: &ostree::Repo,
    e: anyhow::Error,
    remote: &str,
    refname: &str,
    limits: &Network,
) -> anyhow::Error {
    let text = format!("{e:#}");
    let about_signatures = text.contains("GPG") || text.contains("signature");
    if about_signatures && summary_fails_verification(repo, remote, limits) {
        e.context(format!(
            "the summary of remote {remote} is not signed by a key trusted for it (the remote \
             requires signed summaries): it was altered or replaced on the way, or the publisher \
             did not sign it (`stratum compose publish --gpg-sign KEYID`)"
        ))
    } else if text.contains("ref binding") {
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

/// Whether `remote` requires a signed summary and its summary fails verification. libostree
/// words a bad summary signature as it words a bad commit signature; fetching the summary
/// again (libostree verifies it) tells them apart.
fn summary_fails_verification(repo: &ostree::Repo, remote: &str, limits: &Network) -> bool {
    if !repo.remote_get_gpg_verify_summary(remote).unwrap_or(false) {
        return false;
    }
    let Ok(path) = crate::repo::local_path(repo) else {
        return false;
    };
    let what = format!(
        "fetching the summary of {}",
        crate::net::describe_remote(repo, remote)
    );
    let name = remote.to_string();
    let network = crate::net::over_network(repo, remote);
    let fetched = crate::net::watched(limits, network, &what, move |activity| {
        let repo = crate::repo::open(&path)?;
        Ok(
            match repo.remote_fetch_summary(&name, Some(activity.cancellable())) {
                Ok((summary, signatures)) => repo
                    .verify_summary(&name, &summary, &signatures, gio::Cancellable::NONE)
                    .is_err(),
                Err(e) => {
                    let m = e.message();
                    m.contains("GPG") || m.contains("signature")
                }
            },
        )
    });
    fetched.unwrap_or(false)
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
        let sign_verify_summary = repo.remote_get_gpg_verify_summary(&name).unwrap_or(false);
        out.push(RemoteInfo {
            name: name.to_string(),
            url,
            sign_verify,
            sign_verify_summary,
        });
    }
    Ok(out)
}

/// Pulls from `remote` the commit `rev` of `refname` (default: the commit the remote's
/// `refname` points to) and its tree, showing progress ([`crate::progress`]); returns the
/// commit.
///
/// The commit comes alone first, so that its signature and ref binding are checked before
/// anything else is fetched. Its tree then comes through a static delta of the remote when
/// its summary lists one from a commit held here ([`crate::delta`]), or object by object. A
/// delta that cannot be used (fetching or applying it failed) is reported, and the objects it
/// did not bring are pulled instead.
pub fn pull(
    repo: &ostree::Repo,
    remote: &str,
    refname: &str,
    rev: Option<&crate::repo::Checksum>,
    limits: &Network,
) -> Result<String> {
    let commit = pull_commit_only(repo, remote, refname, rev, limits)?;
    let checksum = crate::repo::Checksum::parse(&commit)?;
    if crate::repo::commit_presence(repo, &checksum)? == crate::repo::Presence::Complete {
        return Ok(commit);
    }
    // After a delta was tried, applied or not, libostree must not try it again: it would
    // fail on the same damage, or fetch objects beside a tree already whole.
    let tried = match crate::delta::fetch_and_apply(repo, remote, &checksum, limits) {
        Ok(Some(a)) => {
            tracing::debug!(from = %a.from, bytes = a.bytes, parts = a.parts, "static delta applied");
            true
        }
        Ok(None) => false,
        Err(e) => {
            crate::progress::warn(&format!(
                "the static delta to {commit} could not be used, pulling objects instead: {e:#}"
            ));
            true
        }
    };
    pull_with(repo, remote, refname, Some(&checksum), false, tried, limits)
}

/// Pulls the commit object of `rev` of `refname` (default: what the remote's `refname`
/// points to) from `remote`, verified, without its tree (libostree marks it partial); returns
/// the commit.
pub fn pull_commit_only(
    repo: &ostree::Repo,
    remote: &str,
    refname: &str,
    rev: Option<&crate::repo::Checksum>,
    limits: &Network,
) -> Result<String> {
    pull_with(repo, remote, refname, rev, true, false, limits)
}

/// libostree's pull of `refname` (its commit `rev` when given; only a full checksum may name
/// it: libostree aborts the process on anything else in `override-commit-ids`), the commit
/// object only or the whole tree, without history.
fn pull_with(
    repo: &ostree::Repo,
    remote: &str,
    refname: &str,
    rev: Option<&crate::repo::Checksum>,
    commit_only: bool,
    without_deltas: bool,
    limits: &Network,
) -> Result<String> {
    let opts = glib::VariantDict::new(None);
    opts.insert("refs", &vec![refname.to_string()][..]);
    opts.insert("depth", 0i32);
    if let Some(c) = rev {
        opts.insert("override-commit-ids", &vec![c.to_string()][..]);
    }
    if commit_only {
        opts.insert("flags", ostree::RepoPullFlags::COMMIT_ONLY.bits() as i32);
    }
    if without_deltas {
        opts.insert("disable-static-deltas", true);
    }
    let label = match (commit_only, rev) {
        (true, Some(c)) => format!("Pulling commit {c} of {remote}:{refname}"),
        (true, None) => format!("Pulling the commit of {remote}:{refname}"),
        (false, _) => format!("Pulling {remote}:{refname}"),
    };
    let what = match rev {
        Some(c) => format!(
            "pulling commit {c} of {refname} from {}",
            crate::net::describe_remote(repo, remote)
        ),
        None => format!(
            "pulling {refname} from {}",
            crate::net::describe_remote(repo, remote)
        ),
    };
    pull_watched(repo, remote, opts, label, &what, limits)
        .map_err(|e| explain_pull_error(repo, e, remote, refname, limits))?;
    match rev {
        Some(c) => Ok(c.to_string()),
        None => crate::repo::resolve(repo, &format!("{remote}:{refname}")),
    }
}

/// libostree's pull of `opts` (a dictionary still open, the limits are added to it) from
/// `remote`, shown as the phase `label`, held to `limits` ([`crate::net::watched`]); `what`
/// names it in errors.
pub fn pull_watched(
    repo: &ostree::Repo,
    remote: &str,
    opts: glib::VariantDict,
    label: String,
    what: &str,
    limits: &Network,
) -> Result<()> {
    crate::net::add_pull_options(limits, &opts);
    let opts = opts.end();
    // The pull runs on the watchdog's thread, on a repository object of its own (a GObject
    // is not shared across threads) for the same repository.
    let path = crate::repo::local_path(repo)?;
    let remote = remote.to_string();
    let context = what.to_string();
    let network = crate::net::over_network(repo, &remote);
    crate::net::watched(limits, network, what, move |activity| {
        let repo = crate::repo::open(&path)?;
        crate::repo::pull_reporting(&repo, &remote, &opts, label, Some(activity)).context(context)
    })
}

/// The remote's `option`; see [`net::remote_option`](crate::net::remote_option).
pub use crate::net::remote_option as option;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_key_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8]); 3] = [
            ("empty.asc", b""),
            ("text.asc", b"not a key\n"),
            (
                "armor.asc",
                b"-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nbm90IGEga2V5\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n",
            ),
        ];
        for (name, bytes) in cases {
            let p = d.path().join(name);
            std::fs::write(&p, bytes).unwrap();
            let e = format!("{:#}", check_gpg_keys(&p).unwrap_err());
            assert!(e.contains(name), "{name}: {e}");
        }
        let e = format!(
            "{:#}",
            check_gpg_keys(&d.path().join("missing")).unwrap_err()
        );
        assert!(e.contains("missing"), "{e}");
    }

    #[test]
    fn urls() {
        for good in [
            "file:///srv/repo",
            "file:///srv/repo/",
            "http://example.com",
            "http://example.com/repo",
            "https://updates.example.com:8443/ostree/repo/",
            "http://192.0.2.1:80/r",
            "http://[::1]:8080/repo",
            "https://[2001:db8::1]/repo",
            "http://my_host.internal/x?y=1",
        ] {
            validate_url(good).unwrap_or_else(|e| panic!("{good}: {e:#}"));
        }
        for bad in [
            "",
            "not-a-url",
            "/srv/repo",
            "ftp://example.com/repo",
            "HTTP://example.com/repo",
            "mirrorlist=https://example.com/list",
            "http://",
            "https:///repo",
            "http://:80/repo",
            "http://.example.com/",
            "http://exa mple.com/repo",
            "http://example.com/re po",
            "http://example.com:port/repo",
            "http://example.com:/repo",
            "http://example.com:0/repo",
            "http://example.com:99999/repo",
            "http://user:secret@example.com/repo",
            "http://[::1/repo",
            "http://[]/repo",
            "http://[::1]x/repo",
            "http://exämple.com/repo",
            "file://relative/path",
            "file://",
            "file:///",
            "file:///srv/re\npo",
        ] {
            assert!(validate_url(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn names() {
        for good in ["src", "updates", "b.1_x-y", "Fedora-40", "0"] {
            validate_name(good).unwrap_or_else(|e| panic!("{good}: {e:#}"));
        }
        for bad in [
            "", ".hidden", "-x", "a b", "a/b", "a:b", "rémote", "a\nb", "..",
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
