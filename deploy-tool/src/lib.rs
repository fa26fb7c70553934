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
