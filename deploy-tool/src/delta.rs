//! Static deltas on the client: an update's tree fetched as the remote's static delta from a
//! commit this repository already holds, and applied by libostree offline.
//!
//! libostree fetches deltas by itself, but before 2023.7 it scans the new commit while the
//! delta's parts are still being applied and fetches, object by object, every file the parts
//! have not written yet: an update through a delta can cost as many bytes as one without.
//! Stratum therefore fetches the delta's files itself, with the libcurl libostree uses, and
//! lets libostree apply them (`ostree_repo_static_delta_execute_offline`); the pull that
//! follows finds the tree whole and fetches nothing more.
//!
//! Trust comes from the commit, which is pulled (and its signature checked) first: the
//! summary, itself verified when the remote requires signed summaries, lists the deltas and
//! the SHA-256 of each superblock; the superblock lists its parts and their checksums, and
//! every object a part writes is checked against its own checksum, so nothing that is not part
//! of the verified commit's tree can enter the repository.
//!
//! On-disk and wire formats (libostree's): a delta `FROM`→`TO` lives under
//! `deltas/XX/REST/`, where `XXREST` is `FROM-TO` with each checksum in libostree's modified
//! base64; the directory holds `superblock` and the parts `0`, `1`, …

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ostree::gio::prelude::FileExt;
use ostree::{gio, glib};

use crate::config::Network;
use crate::progress;
use crate::repo::{Checksum, Presence};

/// The superblock's GVariant type: metadata, timestamp, from, to, the target commit,
/// dependencies, part headers (version, checksum, size, uncompressed size, objects) and
/// fallback objects (type, checksum, size, uncompressed size).
const SUPERBLOCK_TYPE: &str = "(a{sv}tayay(a{sv}aya(say)sstayay)aya(uayttay)a(yaytt))";
/// The summary's: refs and their commits, then metadata.
const SUMMARY_TYPE: &str = "(a(s(taya{sv}))a{sv})";
/// The summary's metadata key listing the static deltas (`FROM-TO` or `TO` → the SHA-256 of
/// the superblock).
const SUMMARY_DELTAS: &str = "ostree.static-deltas";
/// Bounds on what a remote may send for one file, so a hostile or broken server cannot fill
/// the disk: a superblock holds metadata only; libostree's parts are 32 MiB uncompressed by
/// default, and compression only makes them smaller.
const MAX_SUPERBLOCK: u64 = 64 << 20;
const MAX_PART: u64 = 1 << 30;

/// A delta that was fetched and applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// The commit it starts from.
    pub from: String,
    /// The bytes fetched: the superblock and the parts.
    pub bytes: u64,
    pub parts: usize,
}

/// Where libostree keeps the delta `from` → `to` (`from` `None`: from scratch), relative to
/// the repository: `deltas/XX/REST`.
pub fn relative_path(from: Option<&str>, to: &str) -> Result<String> {
    let to = checksum_b64(to)?;
    let name = match from {
        Some(f) => format!("{}-{to}", checksum_b64(f)?),
        None => to,
    };
    Ok(format!("deltas/{}/{}", &name[..2], &name[2..]))
}

/// libostree's "modified base64" of a checksum: standard base64 without padding, with `/`
/// written `_`.
fn checksum_b64(commit: &str) -> Result<String> {
    let raw = hex::decode(commit).with_context(|| format!("{commit:?} is not a checksum"))?;
    if raw.len() != 32 {
        bail!("{commit:?} is not a SHA-256 checksum");
    }
    Ok(glib::base64_encode(&raw)
        .trim_end_matches('=')
        .replace('/', "_"))
}

/// Brings `to`'s tree into `repo` through a static delta of `remote`, when its summary lists
/// one to `to` from a commit `repo` holds whole. `Ok(None)`: no such delta (or one this
/// client cannot apply alone); the caller pulls objects. The commit object of `to` should
/// already be here, verified.
pub fn fetch_and_apply(
    repo: &ostree::Repo,
    remote: &str,
    to: &Checksum,
    limits: &Network,
) -> Result<Option<Applied>> {
    // Objects and deltas come from the remote's `contenturl` when it has one (the summary
    // and signatures stay at `url`); mirror lists are left to libostree.
    let url = match crate::net::remote_option(repo, remote, "contenturl")? {
        Some(u) => u,
        None => repo
            .remote_get_url(remote)
            .with_context(|| format!("reading the URL of remote {remote}"))?
            .to_string(),
    };
    if !["http://", "https://", "file://"]
        .iter()
        .any(|s| url.starts_with(s))
    {
        return Ok(None);
    }
    let Some(summary) = remote_summary(repo, remote, limits)? else {
        return Ok(None);
    };
    let summary =
        glib::Variant::from_bytes_with_type(&summary, glib::VariantTy::new(SUMMARY_TYPE)?);
    let mut best: Option<(u64, String, Vec<u8>)> = None;
    for (from, digest) in deltas_to(&summary, to.as_str()) {
        let Ok(from_csum) = Checksum::parse(&from) else {
            continue;
        };
        if crate::repo::commit_presence(repo, &from_csum)? != Presence::Complete {
            continue;
        }
        // libostree's choice too: the newest commit held whole.
        let timestamp = crate::repo::commit_info(repo, &from)?.timestamp;
        if best.as_ref().is_none_or(|(t, _, _)| timestamp > *t) {
            best = Some((timestamp, from, digest));
        }
    }
    let Some((_, from, digest)) = best else {
        return Ok(None);
    };

    let path = relative_path(Some(&from), to.as_str())?;
    let base = format!("{}/{path}", url.trim_end_matches('/'));
    let tmp = repo_tmp(repo)?;
    let dir = tempfile::Builder::new()
        .prefix("stratum-delta-")
        .tempdir_in(&tmp)
        .with_context(|| format!("creating a directory in {}", tmp.display()))?;
    let fetcher = Fetcher::new(repo, remote, limits)?;

    let superblock_path = dir.path().join("superblock");
    let mut bytes = fetcher.get(
        &format!("{base}/superblock"),
        &superblock_path,
        MAX_SUPERBLOCK,
        None,
    )?;
    let raw = std::fs::read(&superblock_path)
        .with_context(|| format!("reading {}", superblock_path.display()))?;
    let got = sha256(&raw);
    if got != digest {
        bail!(
            "the superblock of the delta {from}..{to} does not match the summary of remote \
             {remote} (SHA-256 {}, the summary says {})",
            hex::encode(&got),
            hex::encode(&digest)
        );
    }
    let sb = Superblock::parse(&raw, &path)
        .with_context(|| format!("reading the superblock of the delta {from}..{to}"))?;
    if sb.from.as_deref() != Some(from.as_str()) || sb.to != to.as_str() {
        bail!("the superblock at {base} is not the delta {from}..{to}");
    }
    if sb.has_dependencies {
        return Ok(None);
    }
    for (kind, csum) in &sb.fallbacks {
        let kind = match kind {
            1 => ostree::ObjectType::File,
            2 => ostree::ObjectType::DirTree,
            3 => ostree::ObjectType::DirMeta,
            4 => ostree::ObjectType::Commit,
            k => bail!("the delta {from}..{to} names a fallback object of unknown type {k}"),
        };
        if !repo.has_object(kind, csum, gio::Cancellable::NONE)? {
            // A part of the tree the delta leaves to an object pull: libostree's pull does
            // the whole.
            return Ok(None);
        }
    }

    let fetched: Vec<&Part> = sb.parts.iter().filter(|p| !p.inline).collect();
    let total: u64 = fetched.iter().map(|p| p.size).sum();
    let phase = progress::Phase::start(
        format!(
            "Fetching the static delta {}..{}",
            short(&from),
            short(to.as_str())
        ),
        progress::Unit::Bytes,
    );
    let meter = phase.meter();
    meter.set_total(total);
    for part in &fetched {
        bytes += fetcher.get(
            &format!("{base}/{}", part.index),
            &dir.path().join(part.index.to_string()),
            MAX_PART,
            Some(&meter),
        )?;
    }
    let n = sb.parts.len();
    phase.finish(&format!(
        "{} in {n} part{}",
        progress::bytes(total),
        if n == 1 { "" } else { "s" }
    ));

    let phase = progress::Phase::start("Applying the static delta", progress::Unit::Time);
    apply(repo, dir.path()).with_context(|| format!("applying the delta {from}..{to}"))?;
    phase.finish("done");
    Ok(Some(Applied {
        from,
        bytes,
        parts: sb.parts.len(),
    }))
}

/// libostree's offline application of the delta in `dir`, in a transaction of its own;
/// the parts' checksums are verified.
fn apply(repo: &ostree::Repo, dir: &Path) -> Result<()> {
    repo.prepare_transaction(gio::Cancellable::NONE)?;
    let r = repo
        .static_delta_execute_offline(&gio::File::for_path(dir), false, gio::Cancellable::NONE)
        .and_then(|()| repo.commit_transaction(gio::Cancellable::NONE).map(drop));
    if r.is_err() {
        let _ = repo.abort_transaction(gio::Cancellable::NONE);
    }
    Ok(r?)
}

fn repo_tmp(repo: &ostree::Repo) -> Result<std::path::PathBuf> {
    let path = repo
        .path()
        .path()
        .context("the repository has no local path")?;
    Ok(path.join("tmp"))
}

/// The first 12 digits of a checksum, as people read them.
pub fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

fn sha256(data: &[u8]) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(data).to_vec()
}

/// The deltas to `to` the summary lists, as (from, SHA-256 of the superblock); deltas from
/// scratch are left out.
fn deltas_to(summary: &glib::Variant, to: &str) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    if summary.type_().as_str() != SUMMARY_TYPE {
        return out;
    }
    let meta = glib::VariantDict::new(Some(&summary.child_value(1)));
    let Some(deltas) = meta.lookup_value(SUMMARY_DELTAS, Some(glib::VariantTy::VARDICT)) else {
        return out;
    };
    for entry in deltas.iter() {
        let name = entry.child_value(0);
        let Some(name) = name.str() else { continue };
        let Some((from, delta_to)) = name.split_once('-') else {
            continue;
        };
        if delta_to != to {
            continue;
        }
        let value = entry.child_value(1);
        let Some(digest) = value.as_variant() else {
            continue;
        };
        if let Ok(d) = digest.fixed_array::<u8>() {
            if d.len() == 32 {
                out.push((from.to_string(), d.to_vec()));
            }
        }
    }
    out
}

/// What a client needs of a superblock.
#[derive(Debug)]
struct Superblock {
    from: Option<String>,
    to: String,
    parts: Vec<Part>,
    fallbacks: Vec<(u8, String)>,
    has_dependencies: bool,
}

#[derive(Debug)]
struct Part {
    index: usize,
    /// Compressed size, as stored on the server.
    size: u64,
    /// Carried in the superblock itself.
    inline: bool,
}

impl Superblock {
    /// `path`: the delta's directory relative to the repository, by which inline parts are
    /// named in the metadata (`/deltas/XX/REST/N`).
    fn parse(raw: &[u8], path: &str) -> Result<Superblock> {
        let v = glib::Variant::from_bytes_with_type(
            &glib::Bytes::from(raw),
            glib::VariantTy::new(SUPERBLOCK_TYPE)?,
        );
        if !v.is_normal_form() {
            bail!("not a static delta superblock (not in GVariant normal form)");
        }
        let checksum = |i: usize| -> Result<Option<String>> {
            let c = v.child_value(i);
            let b = c.fixed_array::<u8>()?;
            Ok(match b.len() {
                0 => None,
                32 => Some(hex::encode(b)),
                n => bail!("a checksum of {n} bytes"),
            })
        };
        let from = checksum(2)?;
        let to = checksum(3)?.context("no target commit")?;
        let meta = glib::VariantDict::new(Some(&v.child_value(0)));
        let headers = v.child_value(6);
        let mut parts = Vec::new();
        for index in 0..headers.n_children() {
            let h = headers.child_value(index);
            // Sizes are written in the generating machine's byte order, which the metadata
            // names ("ostree.endianness"); they only size the progress bar.
            let size = h.child_value(2).get::<u64>().unwrap_or(0);
            let size = match endianness(&meta) {
                Some(b'B') if cfg!(target_endian = "little") => size.swap_bytes(),
                Some(b'l') if cfg!(target_endian = "big") => size.swap_bytes(),
                _ => size,
            };
            let inline = meta.contains(&format!("/{path}/{index}"));
            parts.push(Part {
                index,
                size,
                inline,
            });
        }
        let fb = v.child_value(7);
        let mut fallbacks = Vec::new();
        for i in 0..fb.n_children() {
            let f = fb.child_value(i);
            let kind = f.child_value(0).get::<u8>().unwrap_or(0);
            let csum = f.child_value(1);
            let csum = csum.fixed_array::<u8>()?;
            fallbacks.push((kind, hex::encode(csum)));
        }
        let has_dependencies = v.child_value(5).n_children() > 0;
        Ok(Superblock {
            from,
            to,
            parts,
            fallbacks,
            has_dependencies,
        })
    }
}

fn endianness(meta: &glib::VariantDict) -> Option<u8> {
    meta.lookup::<u8>("ostree.endianness").ok().flatten()
}

/// Fetches files of a remote with libcurl, set up as [`crate::net`] decides for every fetch
/// from a remote (limits, redirects, the remote's TLS and proxy options).
struct Fetcher {
    limits: Network,
    transport: crate::net::RemoteTransport,
}

impl Fetcher {
    fn new(repo: &ostree::Repo, remote: &str, limits: &Network) -> Result<Fetcher> {
        Ok(Fetcher {
            limits: *limits,
            transport: crate::net::RemoteTransport::of(repo, remote)?,
        })
    }

    /// Writes `url` to `dest` (at most `limit` bytes), adding to `meter`; the bytes fetched.
    fn get(
        &self,
        url: &str,
        dest: &Path,
        limit: u64,
        meter: Option<&progress::Meter>,
    ) -> Result<u64> {
        let what = || format!("fetching {url}");
        let mut file =
            std::fs::File::create(dest).with_context(|| format!("creating {}", dest.display()))?;
        let mut easy = curl::easy::Easy::new();
        easy.url(url).with_context(what)?;
        crate::net::configure_curl(&mut easy, &self.limits, &self.transport).with_context(what)?;
        let mut written: u64 = 0;
        let mut failure: Option<anyhow::Error> = None;
        let r = {
            let mut t = easy.transfer();
            t.write_function(|data| {
                written += data.len() as u64;
                if written > limit {
                    failure = Some(anyhow::anyhow!("the server sent more than {limit} bytes"));
                    return Ok(0);
                }
                if let Err(e) = file.write_all(data) {
                    failure =
                        Some(anyhow::Error::new(e).context(format!("writing {}", dest.display())));
                    return Ok(0);
                }
                if let Some(m) = meter {
                    m.add(data.len() as u64);
                }
                Ok(data.len())
            })?;
            t.perform()
        };
        if let Some(e) = failure.take() {
            return Err(e.context(what()));
        }
        r.with_context(what)?;
        // HTTP answers carry a status; file:// has none (0).
        let code = easy.response_code()?;
        if code != 0 && code != 200 {
            bail!("fetching {url}: the server answered {code}");
        }
        file.sync_all()
            .with_context(|| format!("writing {}", dest.display()))?;
        Ok(written)
    }
}

/// The remote's summary, `None` when it publishes none; held to `limits`
/// ([`crate::net::watched`]).
fn remote_summary(
    repo: &ostree::Repo,
    remote: &str,
    limits: &Network,
) -> Result<Option<glib::Bytes>> {
    let path = crate::repo::local_path(repo)?;
    let what = format!(
        "fetching the summary of {}",
        crate::net::describe_remote(repo, remote)
    );
    let name = remote.to_string();
    let network = crate::net::over_network(repo, remote);
    crate::net::watched(limits, network, &what, move |activity| {
        let repo = crate::repo::open(&path)?;
        fetch_summary(&repo, &name, activity.cancellable())
    })
}

/// libostree's fetch of the summary of `remote`. (The binding of
/// `ostree_repo_remote_fetch_summary_with_options` takes the NULL libostree returns for a
/// remote without a summary for a `Bytes`.)
fn fetch_summary(
    repo: &ostree::Repo,
    remote: &str,
    cancellable: &gio::Cancellable,
) -> Result<Option<glib::Bytes>> {
    use glib::translate::{from_glib_full, ToGlibPtr};
    let mut summary: *mut glib::ffi::GBytes = std::ptr::null_mut();
    let mut signatures: *mut glib::ffi::GBytes = std::ptr::null_mut();
    let mut error: *mut glib::ffi::GError = std::ptr::null_mut();
    // The pointers are valid for the call; what it returns is owned.
    #[allow(unsafe_code)]
    let ok = unsafe {
        ostree::ffi::ostree_repo_remote_fetch_summary_with_options(
            repo.to_glib_none().0,
            remote.to_glib_none().0,
            std::ptr::null_mut(),
            &mut summary,
            &mut signatures,
            cancellable.to_glib_none().0,
            &mut error,
        )
    };
    #[allow(unsafe_code)]
    let signatures: Option<glib::Bytes> = unsafe { from_glib_full(signatures) };
    drop(signatures);
    if ok == glib::ffi::GFALSE {
        #[allow(unsafe_code)]
        let e: glib::Error = unsafe { from_glib_full(error) };
        return Err(e).with_context(|| format!("fetching the summary of remote {remote}"));
    }
    #[allow(unsafe_code)]
    let summary: Option<glib::Bytes> = unsafe { from_glib_full(summary) };
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delta_paths_are_libostree_s() {
        let from = "8e4d5bd6b1b0a3e2e7d8b9b9c56a61f0bb2a0f6fbd8f0a8a3b7f5b4ec0d1e2f3";
        let to = "ff".repeat(32);
        // 32 bytes of 0xff: 42 times '/' (written '_') and '8', the padding dropped.
        let to_b64 = format!("{}8", "_".repeat(42));
        assert_eq!(
            relative_path(Some(from), &to).unwrap(),
            format!("deltas/jk/1b1rGwo+Ln2Lm5xWph8LsqD2+9jwqKO39bTsDR4vM-{to_b64}")
        );
        assert_eq!(
            relative_path(None, &to).unwrap(),
            format!("deltas/__/{}", &to_b64[2..])
        );
        assert!(relative_path(Some("xyz"), &to).is_err());
        assert!(relative_path(Some("abcd"), &to).is_err());
    }

    fn summary(deltas: &[(&str, Vec<u8>)]) -> glib::Variant {
        let d = glib::VariantDict::new(None);
        for (name, digest) in deltas {
            d.insert_value(name, &glib::Variant::array_from_fixed_array(digest));
        }
        let meta = glib::VariantDict::new(None);
        meta.insert_value(SUMMARY_DELTAS, &d.end());
        let refs = glib::Variant::array_from_iter_with_type(
            glib::VariantTy::new("(s(taya{sv}))").unwrap(),
            std::iter::empty::<glib::Variant>(),
        );
        glib::Variant::tuple_from_iter([refs, meta.end()])
    }

    #[test]
    fn summary_deltas_to_a_commit() {
        let (a, b, c) = ("aa".repeat(32), "bb".repeat(32), "cc".repeat(32));
        let s = summary(&[
            (&format!("{a}-{c}"), vec![1; 32]),
            (&format!("{b}-{c}"), vec![2; 32]),
            (&format!("{a}-{b}"), vec![3; 32]),
            (&c, vec![4; 32]),
            (&format!("{b}-{c}x"), vec![5; 32]),
            (&format!("{}-{c}", "dd".repeat(32)), vec![6; 3]),
        ]);
        let mut found = deltas_to(&s, &c);
        found.sort();
        assert_eq!(
            found,
            vec![(a.clone(), vec![1; 32]), (b.clone(), vec![2; 32])]
        );
        assert!(deltas_to(&summary(&[]), &c).is_empty());
        // Not a summary at all: nothing, no panic.
        assert!(deltas_to(&glib::Variant::from("x"), &c).is_empty());
    }

    #[test]
    fn superblocks_refuse_garbage() {
        assert!(Superblock::parse(b"", "deltas/x/y").is_err());
        assert!(Superblock::parse(&[0xff; 200], "deltas/x/y").is_err());
    }
}
