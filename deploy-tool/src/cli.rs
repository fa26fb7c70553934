//! The command line: one enum of verbs and one flat dispatch to their modules in
//! [`crate::commands`]; doc comments are the help.

use std::ffi::OsString;

use anyhow::{bail, Result};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::commands::{
    self, boot_complete, bootloader, cleanup, compose, initramfs, initramfs_etc, install, kargs,
    packages, pin, remote, rollback, status, update, Globals,
};
use crate::progress;

/// Image-based OS updates: compose images, install them, deploy, roll back.
///
/// Stratum keeps several deployments of versioned OS images side by side and switches between
/// them atomically. `/usr` is the image (read-only), `/etc` is merged configuration, `/var` is
/// the machine's own data and never rolled back.
///
/// Results go to stdout (`--json`: only JSON); messages and progress go to stderr: a bar on a
/// terminal, else one line per phase.
///
/// Exit status: 0 success, 1 failure, 2 invalid command line, 77 nothing to do (see EXIT
/// STATUS in stratum(8)).
#[derive(Debug, Parser)]
#[command(name = "stratum", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the deployments in boot order (default first)
    Status(status::StatusOpts),
    /// Build images (commits) from root filesystems
    #[command(subcommand)]
    Compose(compose::ComposeCmd),
    /// Layer Debian packages (PKG or ./FILE.deb) on the image, as a new deployment; or, with
    /// `to-disk`/`to-filesystem`, install an image onto a new disk or directory.
    ///
    /// Packages come from the repositories in /etc/apt/sources.list.d, resolved by apt
    /// against the image's own package database (base packages stay as they are). The
    /// request is recorded and replayed on every new base image, so layered packages survive
    /// upgrades. The deployment is staged (applied at shutdown) on a booted system.
    Install(install::InstallArgs),
    /// Remove layered packages (the new deployment is the base image plus what remains)
    Uninstall(packages::UninstallOpts),
    /// Remove, replace or restore packages of the base image
    #[command(subcommand)]
    Override(packages::OverrideCmd),
    /// Fetch the package indexes of the configured repositories
    RefreshMd,
    /// Search the configured repositories for packages
    Search(packages::SearchOpts),
    /// List the packages of a commit, or compare two (added, removed, upgraded, downgraded)
    #[command(subcommand)]
    Db(packages::DbCmd),
    /// Manage the remotes updates are pulled from
    #[command(subcommand)]
    Remote(remote::RemoteCmd),
    /// Pull the origin's newest commit and deploy it (staged: applied at shutdown)
    #[command(visible_alias = "update")]
    Upgrade(update::UpgradeOpts),
    /// Deploy a given commit or version of the origin's ref
    Deploy(update::DeployOpts),
    /// Follow another ref from now on (REMOTE:REF or a local REF) and deploy it
    #[command(visible_alias = "switch")]
    Rebase(update::RebaseOpts),
    /// Make the previous deployment the default again (no download, no checkout)
    Rollback(rollback::RollbackOpts),
    /// Remove pending (-p) and/or rollback (-r) deployments, then prune the repository
    Cleanup(cleanup::CleanupOpts),
    /// Keep a deployment (by index in `status`) through cleanups and upgrades
    Pin(pin::PinOpts),
    /// Show or change the kernel arguments of a deployment (only the boot set is rewritten)
    Kargs(kargs::KargsOpts),
    /// Assess this boot: run health checks, bless or reject a deployment on trial, handle a
    /// fallback (run after every boot by stratum-boot-complete.service)
    BootComplete(boot_complete::BootCompleteOpts),
    /// Show or update the boot chain on the EFI system partition (shim, GRUB or systemd-boot)
    /// from the default deployment
    #[command(subcommand)]
    Bootloader(bootloader::BootloaderCmd),
    /// Regenerate the initramfs on this machine for new deployments (or show the setting of
    /// the deployment that boots next: the staged one, else the default)
    Initramfs(initramfs::InitramfsOpts),
    /// Carry /etc files into the initramfs as an extra initrd (or list them)
    InitramfsEtc(initramfs_etc::InitramfsEtcOpts),
    /// Write the staged deployment into the boot set (run at shutdown by
    /// stratum-finalize-staged.service)
    #[command(hide = true)]
    FinalizeStaged,
}

/// Global options that mean nothing to a command (and its subcommands): they are hidden there
/// and refused when given. `compose` writes a repository and `install to-disk|to-filesystem`
/// a new sysroot, never the one `--sysroot` names; neither takes the sysroot lock. (`install
/// PKG…` layers packages on the sysroot and takes them all.) Remotes belong to the repository
/// that all stateroots share, `boot-complete` assesses the booted deployment and
/// `finalize-staged` writes the staged one, whatever their stateroot: a `--stateroot` there
/// would be silently ignored, so it is refused.
const UNUSED_GLOBALS: &[(&[&str], &[&str])] = &[
    (&["compose"], &["sysroot", "stateroot", "no_wait"]),
    (&["remote"], &["stateroot"]),
    (&["boot-complete"], &["stateroot"]),
    (&["finalize-staged"], &["stateroot"]),
    (&["install", "to-disk"], &["sysroot", "no_wait"]),
    (&["install", "to-filesystem"], &["sysroot", "no_wait"]),
];

/// The whole command tree, built (global options copied into every verb) and with the
/// global options hidden where they mean nothing: what is parsed, and what the man pages and
/// shell completions are generated from.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    for (path, ids) in UNUSED_GLOBALS {
        cmd = hide_at(cmd, path, ids);
    }
    cmd
}

/// Hides the arguments `ids` in the subcommand at `path` of `cmd` (and below it).
fn hide_at(cmd: clap::Command, path: &[&str], ids: &[&str]) -> clap::Command {
    match path.split_first() {
        None => hide_args(cmd, ids),
        Some((first, rest)) if cmd.find_subcommand(first).is_some() => {
            cmd.mut_subcommand(first, |c| hide_at(c, rest, ids))
        }
        Some(_) => cmd,
    }
}

/// Hides the arguments `ids` in `cmd` and all its subcommands.
fn hide_args(cmd: clap::Command, ids: &[&str]) -> clap::Command {
    let cmd = cmd.mut_args(|a| {
        if ids.contains(&a.get_id().as_str()) {
            a.hide(true)
        } else {
            a
        }
    });
    cmd.mut_subcommands(|c| hide_args(c, ids))
}

/// Refuses global options given to a command they mean nothing to (see [`UNUSED_GLOBALS`]);
/// `path` is the verb and its subcommand, as given.
fn check_globals(g: &Globals, path: &[&str]) -> Result<()> {
    let given = [
        ("sysroot", "--sysroot", g.sysroot.is_some()),
        ("stateroot", "--stateroot", g.stateroot.is_some()),
        ("no_wait", "--no-wait", g.no_wait),
    ];
    let unused = UNUSED_GLOBALS
        .iter()
        .filter(|(p, _)| path.starts_with(p))
        .flat_map(|(_, ids)| ids.iter());
    for id in unused {
        if let Some((_, flag, true)) = given.iter().find(|(i, _, _)| i == id) {
            bail!(
                "{flag} means nothing to `stratum {}`; leave it out",
                path.join(" ")
            );
        }
    }
    Ok(())
}

/// Parses `args` and runs the command; returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<i32> {
    let matches = command().get_matches_from(args);
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let g = &cli.globals;
    if let Some((verb, sub)) = matches.subcommand() {
        let mut path = vec![verb];
        path.extend(sub.subcommand_name());
        check_globals(g, &path)?;
    }
    // Internal commands are run by systemd units and log to the journal: no progress there.
    if matches!(cli.command, Command::FinalizeStaged) {
        progress::set_mode(progress::Mode::Off);
    }
    match &cli.command {
        Command::Status(o) => status::run(g, o),
        Command::Compose(c) => compose::run(c),
        Command::Install(a) => match &a.target {
            Some(c) => install::run(g, c),
            None => packages::install(g, &a.packages),
        },
        Command::Uninstall(o) => packages::uninstall(g, o),
        Command::Override(c) => packages::override_cmd(g, c),
        Command::RefreshMd => packages::refresh_md(g),
        Command::Search(o) => packages::search(g, o),
        Command::Db(c) => packages::db(g, c),
        Command::Remote(c) => remote::run(g, c),
        Command::Upgrade(o) => update::upgrade(g, o),
        Command::Deploy(o) => update::deploy(g, o),
        Command::Rebase(o) => update::rebase(g, o),
        Command::Rollback(o) => rollback::run(g, o),
        Command::Cleanup(o) => cleanup::run(g, o),
        Command::Pin(o) => pin::run(g, o),
        Command::Kargs(o) => kargs::run(g, o),
        Command::BootComplete(o) => boot_complete::run(g, o),
        Command::Bootloader(c) => bootloader::run(g, c),
        Command::Initramfs(o) => initramfs::run(g, o),
        Command::InitramfsEtc(o) => initramfs_etc::run(g, o),
        Command::FinalizeStaged => commands::finalize::run(g),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn aliases_follow_rpm_ostree_and_bootc() {
        let cli = Cli::try_parse_from(["stratum", "update", "--check"]).unwrap();
        assert!(matches!(cli.command, Command::Upgrade(ref o) if o.check));
        let cli = Cli::try_parse_from(["stratum", "switch", "r:x"]).unwrap();
        assert!(matches!(cli.command, Command::Rebase(ref o) if o.refspec == "r:x"));
    }

    #[test]
    fn stateroot_is_validated_where_it_is_parsed() {
        for bad in ["../../../x", "", ".x", "a/b", "a b"] {
            for args in [
                &["stratum", "--stateroot", bad, "status"][..],
                &["stratum", "cleanup", "-r", "--stateroot", bad],
            ] {
                let e = Cli::try_parse_from(args).unwrap_err();
                assert!(e.to_string().contains("invalid stateroot name"), "{e}");
            }
        }
        let cli = Cli::try_parse_from(["stratum", "--stateroot", "os-1", "rollback"]).unwrap();
        assert_eq!(cli.globals.stateroot.as_deref(), Some("os-1"));
    }

    #[test]
    fn globals_are_hidden_and_refused_where_they_mean_nothing() {
        let cmd = command();
        let arg = |path: &[&str], id: &str| {
            let mut c = &cmd;
            for p in path {
                c = c.find_subcommand(p).unwrap();
            }
            c.get_arguments()
                .find(|a| a.get_id() == id)
                .unwrap()
                .is_hide_set()
        };
        assert!(arg(&["compose", "rootfs"], "sysroot"));
        assert!(arg(&["compose", "rootfs"], "stateroot"));
        assert!(arg(&["install", "to-disk"], "no_wait"));
        assert!(!arg(&["install", "to-disk"], "stateroot"));
        assert!(!arg(&["status"], "sysroot") && !arg(&[], "sysroot"));
        let g = |sysroot: Option<&str>, no_wait| Globals {
            sysroot: sysroot.map(Into::into),
            stateroot: Some("os".into()),
            no_wait,
        };
        assert!(check_globals(&g(None, false), &["install", "to-disk"]).is_ok());
        let e = check_globals(&g(None, true), &["install", "to-disk"]).unwrap_err();
        assert!(format!("{e}").contains("--no-wait means nothing"), "{e}");
        // `install PKG` layers packages on the sysroot.
        assert!(check_globals(&g(Some("/x"), true), &["install"]).is_ok());
        assert!(!arg(&["install"], "sysroot"));
        assert!(check_globals(&g(Some("/x"), true), &["status"]).is_ok());
        assert!(check_globals(&g(None, false), &["compose", "rootfs"]).is_err());
        for path in [
            &["remote", "list"][..],
            &["boot-complete"],
            &["finalize-staged"],
        ] {
            assert!(check_globals(&g(None, false), path).is_err(), "{path:?}");
        }
    }

    #[test]
    fn parses_install_to_disk() {
        let cli = Cli::try_parse_from([
            "stratum",
            "install",
            "to-disk",
            "--repo",
            "r",
            "--ref",
            "x",
            "--image",
            "d.img",
            "--karg",
            "console=ttyS0",
        ])
        .unwrap();
        let Command::Install(install::InstallArgs {
            target: Some(install::InstallCmd::ToDisk(o)),
            ..
        }) = cli.command
        else {
            panic!()
        };
        assert_eq!(o.source.kargs, vec!["console=ttyS0"]);
        assert_eq!(o.size, "4G");
    }

    #[test]
    fn parses_install_of_packages() {
        let cli =
            Cli::try_parse_from(["stratum", "install", "htop", "./x.deb", "--dry-run"]).unwrap();
        let Command::Install(install::InstallArgs {
            target: None,
            packages,
        }) = cli.command
        else {
            panic!()
        };
        assert_eq!(packages.packages, vec!["htop", "./x.deb"]);
        assert!(packages.change.dry_run);
        assert!(Cli::try_parse_from(["stratum", "install"]).is_err());
    }
}
