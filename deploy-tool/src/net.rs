//! How Stratum fetches from remotes: the one place that decides timeouts, redirects, TLS and
//! proxies for both HTTP stacks that talk to a remote, libostree's pulls (`remote.rs`)
//! and the static-delta fetcher (`delta.rs`, libcurl).
//!
//! The rule, from `[network]` in `stratum.toml` ([`crate::config::Network`]): a connection
//! must open within `connect-timeout` seconds, and a fetch that receives fewer than
//! `low-speed-limit` bytes per second for `low-speed-time` seconds fails. A server that sends
//! headers and then nothing, or one byte every few seconds, therefore fails a command in
//! bounded time instead of hanging it.
//!
//! How each stack is held to it:
//! - libcurl (the delta fetcher): `CURLOPT_CONNECTTIMEOUT`, `CURLOPT_LOW_SPEED_LIMIT` and
//!   `CURLOPT_LOW_SPEED_TIME`; redirects are followed up to [`MAX_REDIRECTS`] (the `curl`
//!   tool's default; libcurl before 8.3 follows them without end);
//! - libostree: its pull options `low-speed-limit-bytes` and `low-speed-time-seconds` exist
//!   only since 2023.7 (older versions ignore unknown keys), and before 2023.7 its curl
//!   fetcher sets no speed limit and does not stop a transfer when the pull is cancelled. So
//!   every libostree operation on a remote reached over the network also runs under
//!   [`watched`]: on a thread of its own, watched from the caller's thread through the bytes
//!   libostree reports; when too few arrive in time the operation is cancelled and the caller
//!   gets an error at once. Time counts only while libostree waits on the network (it reports
//!   fetches in flight, or has reported nothing yet): writing objects and committing them are
//!   local work, however long they take. A cancelled libostree that does not return is left
//!   behind on its thread, holding nothing but its own staging directory in the repository
//!   (which libostree reuses or cleans); the command fails and the process exits. A remote
//!   whose URLs are all `file://` (a disk) is not watched: nothing there can stall that a
//!   network limit would catch.
//! - TLS and proxies are the remote's own options in the repository's configuration
//!   (`tls-ca-path`, `tls-client-cert-path`, `tls-client-key-path`, `tls-permissive`,
//!   `proxy`), which libostree reads itself and [`RemoteTransport`] reads for libcurl.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ostree::gio::prelude::CancellableExt;
use ostree::{gio, glib};

use crate::config::Network;

/// Redirects followed for one request: the `curl` tool's default (`--max-redirs`).
pub const MAX_REDIRECTS: u32 = 50;

/// The `User-Agent` of Stratum's own requests.
const USER_AGENT: &str = concat!("stratum/", env!("CARGO_PKG_VERSION"));

/// Adds the limits to the options of a libostree pull (honoured from libostree 2023.7 on;
/// [`watched`] holds older versions to them).
pub fn add_pull_options(limits: &Network, opts: &glib::VariantDict) {
    opts.insert("low-speed-limit-bytes", limits.low_speed_limit);
    let secs = u32::try_from(limits.low_speed_time).unwrap_or(u32::MAX);
    opts.insert("low-speed-time-seconds", secs);
}

/// The transport options of a remote that libostree reads from the repository's
/// configuration, for Stratum's own libcurl requests to the same remote.
#[derive(Debug, Clone, Default)]
pub struct RemoteTransport {
    ca: Option<String>,
    client_cert: Option<String>,
    client_key: Option<String>,
    permissive: bool,
    proxy: Option<String>,
}

impl RemoteTransport {
    /// The options of `remote` in `repo`.
    pub fn of(repo: &ostree::Repo, remote: &str) -> Result<RemoteTransport> {
        let opt = |key: &str| remote_option(repo, remote, key);
        Ok(RemoteTransport {
            ca: opt("tls-ca-path")?,
            client_cert: opt("tls-client-cert-path")?,
            client_key: opt("tls-client-key-path")?,
            permissive: opt("tls-permissive")?.is_some_and(|v| v == "true"),
            proxy: opt("proxy")?,
        })
    }
}

/// Sets up `easy` for a request to a remote: the limits, redirects, the remote's TLS and
/// proxy options.
pub fn configure_curl(
    easy: &mut curl::easy::Easy,
    limits: &Network,
    transport: &RemoteTransport,
) -> Result<()> {
    easy.useragent(USER_AGENT)?;
    easy.follow_location(true)?;
    easy.max_redirections(MAX_REDIRECTS)?;
    easy.connect_timeout(Duration::from_secs(limits.connect_timeout))?;
    easy.low_speed_limit(limits.low_speed_limit)?;
    easy.low_speed_time(Duration::from_secs(limits.low_speed_time))?;
    if let Some(ca) = &transport.ca {
        easy.cainfo(ca)?;
    }
    if let Some(c) = &transport.client_cert {
        easy.ssl_cert(c)?;
    }
    if let Some(k) = &transport.client_key {
        easy.ssl_key(k)?;
    }
    if transport.permissive {
        easy.ssl_verify_peer(false)?;
        easy.ssl_verify_host(false)?;
    }
    if let Some(p) = &transport.proxy {
        easy.proxy(p)?;
    }
    Ok(())
}

/// Whether `remote` (a remote's name, or a URL) is reached over the network: its `url` or
/// its `contenturl` is anything but `file://`.
pub fn over_network(repo: &ostree::Repo, remote: &str) -> bool {
    let urls = if remote.contains("://") {
        vec![Some(remote.to_string())]
    } else {
        vec![
            repo.remote_get_url(remote).ok().map(|u| u.to_string()),
            remote_option(repo, remote, "contenturl").ok().flatten(),
        ]
    };
    // An unreadable URL counts as a network one: watching a local pull costs little.
    urls.iter()
        .any(|u| u.as_deref().is_none_or(|u| !u.starts_with("file://")))
}

/// What a [`watched`] operation reports to its watchdog, and how it is stopped.
#[derive(Debug, Clone)]
pub struct Activity {
    bytes: Arc<AtomicU64>,
    /// libostree reports no fetch in flight: it works locally.
    local: Arc<AtomicBool>,
    cancellable: gio::Cancellable,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            bytes: Arc::new(AtomicU64::new(0)),
            local: Arc::new(AtomicBool::new(false)),
            cancellable: gio::Cancellable::new(),
        }
    }

    /// Cancelled when the watchdog gives up; hand it to libostree.
    pub fn cancellable(&self) -> &gio::Cancellable {
        &self.cancellable
    }

    /// What a `'static` progress callback of libostree's pull hands its progress to: the
    /// bytes fetched so far, and whether fetches are in flight.
    pub fn reporter(&self) -> impl Fn(&ostree::AsyncProgress) + 'static {
        let (bytes, local) = (self.bytes.clone(), self.local.clone());
        move |p| {
            bytes.fetch_max(p.uint64("bytes-transferred"), Ordering::Relaxed);
            local.store(p.uint("outstanding-fetches") == 0, Ordering::Relaxed);
        }
    }
}

/// Runs `op` (a libostree operation that may fetch from a remote, described for people as
/// `what`) on a thread of its own, with a main context of its own, and fails when it brings
/// fewer than `limits.low_speed_limit` bytes per second for `limits.low_speed_time` seconds
/// while it waits on the network, as counted by what it reports to its [`Activity`]. Until
/// `op` reports anything (libostree reports nothing while it fetches a summary and its
/// signature), the whole of that phase must end within `low-speed-time`. When `network` is
/// false ([`over_network`]), `op` simply runs here, unwatched.
pub fn watched<T, F>(limits: &Network, network: bool, what: &str, op: F) -> Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Activity) -> Result<T> + Send + 'static,
{
    let activity = Activity::new();
    if !network {
        return op(&activity);
    }
    let (tx, rx) = mpsc::channel();
    let worker = activity.clone();
    std::thread::Builder::new()
        .name("stratum-fetch".into())
        .spawn(move || {
            // A main context of its own: libostree iterates the thread-default one, and a
            // thread left behind must not hold the process's global context.
            let r = glib::MainContext::new()
                .with_thread_default(|| op(&worker))
                .map_err(anyhow::Error::from)
                .and_then(|r| r);
            let _ = tx.send(r);
        })
        .context("starting a thread for the fetch")?;

    let window = Duration::from_secs(limits.low_speed_time);
    let needed = u64::from(limits.low_speed_limit).saturating_mul(limits.low_speed_time);
    let tick = (window / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let (mut since, mut mark) = (Instant::now(), 0u64);
    loop {
        match rx.recv_timeout(tick) {
            Ok(r) => return r,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                anyhow::bail!("{what}: the fetch ended without a result (it crashed)")
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        let bytes = activity.bytes.load(Ordering::Relaxed);
        if bytes.saturating_sub(mark) >= needed || activity.local.load(Ordering::Relaxed) {
            (since, mark) = (Instant::now(), bytes);
        } else if since.elapsed() >= window {
            activity.cancellable.cancel();
            anyhow::bail!(
                "{what}: received {} bytes in the last {} s, under the limit of {} bytes/s: \
                 the server stalls or the network is down. Try again later; the limits are \
                 low-speed-limit and low-speed-time in [network] of stratum.toml",
                bytes - mark,
                limits.low_speed_time,
                limits.low_speed_limit,
            );
        }
    }
}

/// `remote NAME (URL)` for messages, or the URL alone when `remote` is one.
pub fn describe_remote(repo: &ostree::Repo, remote: &str) -> String {
    if remote.contains("://") {
        return remote.to_string();
    }
    match repo.remote_get_url(remote) {
        Ok(url) => format!("remote {remote} ({url})"),
        Err(_) => format!("remote {remote}"),
    }
}

/// The remote's `option` (its section of the repository's configuration or of
/// `/etc/ostree/remotes.d`), `None` when unset. Here, below every user of a remote's
/// transport settings, so that this module needs no other part of Stratum but its config.
pub fn remote_option(repo: &ostree::Repo, remote: &str, option: &str) -> Result<Option<String>> {
    use glib::translate::{from_glib_full, ToGlibPtr};
    let mut out: *mut std::os::raw::c_char = std::ptr::null_mut();
    let mut error: *mut glib::ffi::GError = std::ptr::null_mut();
    // No safe binding exists for ostree_repo_get_remote_option: the pointers are valid for
    // the call, and `out` is returned owned.
    #[allow(unsafe_code)]
    let ok = unsafe {
        ostree::ffi::ostree_repo_get_remote_option(
            repo.to_glib_none().0,
            remote.to_glib_none().0,
            option.to_glib_none().0,
            std::ptr::null(),
            &mut out,
            &mut error,
        )
    };
    if ok == glib::ffi::GFALSE {
        #[allow(unsafe_code)]
        let e: glib::Error = unsafe { from_glib_full(error) };
        return Err(e).with_context(|| format!("reading option {option} of remote {remote}"));
    }
    #[allow(unsafe_code)]
    let value: Option<String> = unsafe { from_glib_full(out) };
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(time: u64) -> Network {
        Network {
            connect_timeout: 1,
            low_speed_limit: 10,
            low_speed_time: time,
        }
    }

    #[test]
    fn a_silent_operation_fails_within_the_window() {
        let started = Instant::now();
        let e = watched(&limits(1), true, "fetching x", |a: &Activity| {
            // Stands for a libostree that ignores cancellation for a while.
            std::thread::sleep(Duration::from_secs(4));
            Ok(a.cancellable().is_cancelled())
        })
        .unwrap_err();
        let took = started.elapsed();
        let e = format!("{e:#}");
        assert!(e.contains("fetching x") && e.contains("stalls"), "{e}");
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    #[test]
    fn steady_progress_and_results_pass() {
        let r = watched(&limits(1), true, "fetching y", |a: &Activity| {
            for i in 1..=25u64 {
                std::thread::sleep(Duration::from_millis(100));
                a.bytes.store(i * 100, Ordering::Relaxed);
            }
            Ok(42)
        })
        .unwrap();
        assert_eq!(r, 42);
        let e = watched(
            &limits(1),
            true,
            "fetching z",
            |_: &Activity| -> Result<()> { anyhow::bail!("404") },
        )
        .unwrap_err();
        assert_eq!(format!("{e:#}"), "404");
    }

    #[test]
    fn local_work_and_local_remotes_are_not_timed() {
        // Nothing arrives for 2.5 windows, but no fetch is in flight: local work.
        let r = watched(&limits(1), true, "committing", |a: &Activity| {
            a.local.store(true, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(2500));
            Ok("done")
        });
        assert_eq!(r.unwrap(), "done");
        // Unwatched: runs on this thread, however long it takes.
        let here = std::thread::current().id();
        let r = watched(&limits(1), false, "copying", move |_: &Activity| {
            std::thread::sleep(Duration::from_millis(1500));
            Ok(std::thread::current().id() == here)
        });
        assert!(r.unwrap());
    }
}
