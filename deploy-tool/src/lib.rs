//! Stratum's admin library: sysroot layout, composing and deploying commits, the bootloader
//! writer, status. The `stratum` binary is a thin command line over it.

#![deny(unsafe_code)]

pub mod bls;
pub mod bootcomplete;
pub mod bootloader;
pub mod bootstate;
pub mod cli;
pub mod cmd;
pub mod compose;
pub mod config;
pub mod deploy;
pub mod disk;
pub mod etcmerge;
pub mod fsfreeze;
pub mod fsutil;
pub mod grubcfg;
pub mod grubenv;
pub mod health;
pub mod initramfs;
pub mod initramfs_etc;
pub mod install;
pub mod kargs;
pub mod kargs_cmd;
pub mod kargsd;
pub mod layout;
pub mod lock;
pub mod ops;
pub mod origin;
pub mod remote;
pub mod repo;
pub mod staged;
pub mod status;
pub mod sysroot;
pub mod update;

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
