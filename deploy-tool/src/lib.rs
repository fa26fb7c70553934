//! Stratum's admin library. The `stratum` binary is a thin command line over it.
//!
//! Commands sit above mechanisms, and the mechanisms' folders follow the data flow:
//!
//! | module | owns |
//! |---|---|
//! | [`commands`] | one module per verb: arguments, output, `--json` |
//! | [`compose`] | root directory -> postprocessed tree -> commit; publishing (archive repository, static deltas, signed summary) |
//! | [`install`] | a new sysroot (directory or GPT disk image) from a commit |
//! | [`deployment`] | the one new-deployment pipeline, finalize, rollback/cleanup/pin |
//! | [`layering`] | Debian packages on the base: requests, apt, package cache, sandbox |
//! | [`counting`] | boot counting: trials, health checks, boot-complete, the boot-set commit |
//! | [`state`] | the one reader of a sysroot's state: boot set, booted, staged, origins |
//! | [`bootset`] | the entry codec, the GRUB writer and formats, durability, garbage |
//! | [`sysroot`] | paths and the deployment type every part shares |
//!
//! Each depends only on those below it in this table (and on the small leaf modules
//! [`fsutil`], [`beneath`], [`repo`], [`remote`], [`net`], [`kargs`], [`config`], [`lock`],
//! [`cmd`], [`progress`], [`excerpt`]).

#![deny(unsafe_code)]

pub mod beneath;
pub mod bootset;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod compose;
pub mod config;
pub mod counting;
pub mod debian;
pub mod delta;
pub mod deployment;
pub mod excerpt;
pub mod fsutil;
pub mod install;
pub mod kargs;
pub mod layering;
pub mod lock;
pub mod net;
pub mod progress;
pub mod remote;
pub mod repo;
pub mod state;
pub mod sysroot;

/// A named failpoint at a commit step, so that tests can crash the program exactly there and
/// prove that every step leaves a consistent sysroot.
///
/// Only a build with the `failpoints` feature honours failpoints (the `fail` crate's
/// `fail_point!`), configured by the `FAILPOINTS` environment variable, which `main` reads
/// once at start:
/// - `FAILPOINTS=NAME=panic`: the process dies at once at that point. Release builds abort on
///   panic, so no cleanup runs, as after a power cut;
/// - `FAILPOINTS=NAME=return`: the step fails with the error `failpoint NAME triggered`;
/// - several points are separated by `;` (`a=panic;b=return`); the `fail` crate's other
///   actions (`sleep(MS)`, `N*ACTION`, `P%ACTION`, ...) work too.
///
/// Without the feature this is `Ok(())` and `FAILPOINTS` is ignored: the `stratum` that is
/// built and installed on machines never honours failpoints.
pub fn failpoint(name: &str) -> anyhow::Result<()> {
    #[cfg(feature = "failpoints")]
    fail::fail_point!(name, |_| Err(anyhow::anyhow!("failpoint {name} triggered")));
    #[cfg(not(feature = "failpoints"))]
    let _ = name;
    Ok(())
}
