//! Stratum's admin library. The `stratum` binary is a thin command line over it.
//!
//! Commands sit above mechanisms, and the mechanisms' folders follow the data flow:
//!
//! | module | owns |
//! |---|---|
//! | [`commands`] | one module per verb: arguments, output, `--json` |
//! | [`compose`] | root directory -> postprocessed tree -> commit |
//! | [`install`] | a new sysroot (directory or GPT disk image) from a commit |
//! | [`deployment`] | the one new-deployment pipeline, finalize, rollback/cleanup/pin |
//! | [`counting`] | boot counting: trials, health checks, boot-complete, the boot-set commit |
//! | [`state`] | the one reader of a sysroot's state: boot set, booted, staged, origins |
//! | [`bootset`] | the entry codec, the GRUB writer and formats, durability, garbage |
//! | [`sysroot`] | paths and the deployment type every part shares |
//!
//! Each depends only on those below it in this table (and on the small leaf modules
//! [`fsutil`], [`repo`], [`remote`], [`kargs`], [`config`], [`lock`], [`cmd`]).

#![deny(unsafe_code)]

pub mod bootset;
pub mod cli;
pub mod cmd;
pub mod commands;
pub mod compose;
pub mod config;
pub mod counting;
pub mod deployment;
pub mod fsutil;
pub mod install;
pub mod kargs;
pub mod lock;
pub mod remote;
pub mod repo;
pub mod state;
pub mod sysroot;

/// A named failpoint at a commit step. `STRATUM_FAILPOINTS=name1,name2` makes the process
/// die at once at those points (as a power cut would: no cleanup runs);
/// `STRATUM_FAILPOINTS=name=error` makes the step fail with an error instead. Tests use it to
/// prove that every step leaves a consistent sysroot.
pub fn failpoint(name: &str) -> anyhow::Result<()> {
    let Ok(spec) = std::env::var("STRATUM_FAILPOINTS") else {
        return Ok(());
    };
    for item in spec.split(',') {
        let (point, action) = item.split_once('=').unwrap_or((item, "abort"));
        if point == name {
            if action == "error" {
                anyhow::bail!("failpoint {name} triggered");
            }
            eprintln!("stratum: failpoint {name}: aborting");
            std::process::abort();
        }
    }
    Ok(())
}
