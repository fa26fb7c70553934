//! The command line: one enum of verbs, one options struct per verb; doc comments are the help.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

use crate::sysroot::Sysroot;

/// Image-based OS updates: compose images, install them, deploy, roll back.
///
/// Stratum keeps several deployments of versioned OS images side by side and switches between
/// them atomically. `/usr` is the image (read-only), `/etc` is merged configuration, `/var` is
/// the machine's own data and never rolled back.
///
/// Exit status: 0 success, 1 failure (the message says what failed and what to do),
/// 2 invalid command line, 77 `upgrade --check` (or `--unchanged-exit-77`) found no update.
#[derive(Debug, Parser)]
#[command(name = "stratum", version, max_term_width = 100)]
pub struct Cli {
    /// The sysroot to operate on: a directory holding ostree/ and boot/ [default: /]
    #[arg(long, global = true, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,
    /// The stateroot (OS name) to operate on [default: the booted one, or "default"]
    #[arg(long, global = true, value_name = "NAME")]
    pub stateroot: Option<String>,
    /// Fail at once if another command holds the sysroot lock, instead of waiting
    #[arg(long, global = true)]
    pub no_wait: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the deployments in boot order (default first)
    Status(StatusOpts),
    /// Build images (commits) from root filesystems
    #[command(subcommand)]
    Compose(ComposeCmd),
    /// Install an image onto a new disk or directory
    #[command(subcommand)]
    Install(InstallCmd),
    /// Manage the remotes updates are pulled from
    #[command(subcommand)]
    Remote(RemoteCmd),
    /// Pull the origin's newest commit and deploy it (staged: applied at shutdown)
    Upgrade(UpgradeOpts),
    /// Deploy a given commit or version of the origin's ref
    Deploy(DeployOpts),
    /// Follow another ref from now on (REMOTE:REF or a local REF) and deploy it
    Rebase(RebaseOpts),
    /// Make the previous deployment the default again (no download, no checkout)
    Rollback(RollbackOpts),
    /// Remove pending (-p) and/or rollback (-r) deployments, then prune the repository
    Cleanup(CleanupOpts),
    /// Keep a deployment (by index in `status`) through cleanups and upgrades
    Pin(PinOpts),
    /// Show or change the kernel arguments of a deployment (only the boot set is rewritten)
    Kargs(KargsOpts),
    /// Assess this boot: run health checks, bless or reject a deployment on trial, handle a
    /// fallback (run after every boot by stratum-boot-complete.service)
    BootComplete(BootCompleteOpts),
    /// Regenerate the initramfs on this machine for new deployments (or show the setting of
    /// the deployment that boots next: the staged one, else the default)
    Initramfs(crate::initramfs::InitramfsOpts),
    /// Carry /etc files into the initramfs as an extra initrd (or list them)
    InitramfsEtc(crate::initramfs_etc::InitramfsEtcOpts),
    /// Write the staged deployment into the boot set (run at shutdown by
    /// stratum-finalize-staged.service)
    #[command(hide = true)]
    FinalizeStaged,
}

#[derive(Debug, clap::Args)]
pub struct BootCompleteOpts {
    /// Only print the boot-counting state (trial, tries left, pending fallback); change nothing
    #[arg(long)]
    pub status: bool,
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RemoteCmd {
    /// Add a remote (file://, http:// or https:// URL of an ostree repository)
    Add(RemoteAddOpts),
    /// List remotes
    List {
        /// Print JSON
        #[arg(long)]
        json: bool,
    },
    /// Delete a remote
    Delete {
        /// The remote's name
        name: String,
    },
}

#[derive(Debug, clap::Args)]
pub struct RemoteAddOpts {
    /// The remote's name, used as REMOTE in REMOTE:REF
    pub name: String,
    /// The repository URL
    pub url: String,
    /// Require valid GPG signatures on commits (default)
    #[arg(long, overrides_with = "no_sign_verify")]
    pub sign_verify: bool,
    /// Accept unsigned commits from this remote
    #[arg(long)]
    pub no_sign_verify: bool,
    /// Import the GPG public keys in FILE as trusted for this remote
    #[arg(long, value_name = "FILE")]
    pub gpg_import: Option<PathBuf>,
}

/// Options shared by the verbs that make a new deployment.
#[derive(Debug, clap::Args)]
pub struct NewDeploymentOpts {
    /// Write the boot set now instead of staging the deployment until shutdown
    #[arg(long)]
    pub apply_now: bool,
    /// Stage even on a sysroot that is not the booted one (finalize with `finalize-staged`)
    #[arg(long, hide = true)]
    pub stage: bool,
    /// Reboot into the new deployment when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct UpgradeOpts {
    /// Only check whether an update exists: exit 0 if one does, 77 if not
    #[arg(long)]
    pub check: bool,
    /// Show what would change (commit, version, files) without deploying
    #[arg(long)]
    pub preview: bool,
    /// Exit 77 when there is no update (for scripts)
    #[arg(long)]
    pub unchanged_exit_77: bool,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

#[derive(Debug, clap::Args)]
pub struct DeployOpts {
    /// A commit checksum or ref
    #[arg(required_unless_present = "version", conflicts_with = "version")]
    pub rev: Option<String>,
    /// The commit with this version on the origin ref's history
    #[arg(long)]
    pub version: Option<String>,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

#[derive(Debug, clap::Args)]
pub struct RebaseOpts {
    /// REMOTE:REF, or a REF of the local repository
    pub refspec: String,
    #[command(flatten)]
    pub new: NewDeploymentOpts,
}

#[derive(Debug, clap::Args)]
pub struct RollbackOpts {
    /// Reboot into it when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
}

#[derive(Debug, clap::Args)]
pub struct CleanupOpts {
    /// Remove the pending deployment (staged, or default but not yet booted)
    #[arg(long, short = 'p')]
    pub pending: bool,
    /// Remove the rollback deployment(s)
    #[arg(long, short = 'r')]
    pub rollback: bool,
}

/// Without options, prints the kernel arguments of the booted (else the default) deployment.
/// Changes follow rpm-ostree: applied in the order delete, replace, append,
/// append-if-missing, delete-if-present; see docs/kargs.md. Exit status 77 with
/// --unchanged-exit-77 when nothing changed.
#[derive(Debug, clap::Args)]
pub struct KargsOpts {
    /// Append a kernel argument (even if the key exists: e.g. console= repeats)
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub append: Vec<String>,
    /// Append a kernel argument unless that exact argument is present
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub append_if_missing: Vec<String>,
    /// Delete an argument: KEY when it has one value, KEY=VALUE to pick one of several
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub delete: Vec<String>,
    /// Delete that exact argument if present
    #[arg(long, value_name = "KEY[=VALUE]")]
    pub delete_if_present: Vec<String>,
    /// Replace the value of KEY (one value), or the value OLD of KEY (KEY=OLD=NEW)
    #[arg(long, value_name = "KEY=VALUE=NEWVALUE")]
    pub replace: Vec<String>,
    /// Edit the kernel arguments in $EDITOR
    #[arg(long, conflicts_with_all = ["append", "append_if_missing", "delete", "delete_if_present", "replace", "import_proc_cmdline"])]
    pub editor: bool,
    /// Start from the running kernel's /proc/cmdline (without BOOT_IMAGE=, initrd=, ostree=)
    #[arg(long)]
    pub import_proc_cmdline: bool,
    /// The deployment by its index in `stratum status` [default: booted, else the default]
    #[arg(long, value_name = "N")]
    pub deploy_index: Option<usize>,
    /// Exit 77 when the arguments did not change
    #[arg(long)]
    pub unchanged_exit_77: bool,
    /// Reboot when done
    #[arg(long, short = 'r')]
    pub reboot: bool,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct PinOpts {
    /// The deployment's index in `stratum status` (0 = default)
    pub index: usize,
    /// Unpin instead
    #[arg(long)]
    pub unpin: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusOpts {
    /// Print JSON (rpm-ostree's key names where the concept is shared)
    #[arg(long)]
    pub json: bool,
    /// Only the booted deployment
    #[arg(long, short = 'b')]
    pub booted: bool,
    /// Also show kernel arguments and boot checksums
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

#[derive(Debug, Subcommand)]
pub enum ComposeCmd {
    /// Commit a root filesystem directory (e.g. from debootstrap) as a bootable image.
    ///
    /// The kernel moves to /usr/lib/modules/KVER/vmlinuz beside a new initramfs whose /init is
    /// stratum-prepare-root (taken from the root's /usr/lib/stratum, so install Stratum into
    /// the root first with `make install DESTDIR=ROOTFS`); /etc becomes /usr/etc; /var's
    /// contents move to /usr/share/factory/var (copied into /var at install, recreated when
    /// missing at boot by tmpfiles.d);
    /// /home /root /opt /srv /mnt /usr/local become symlinks into /var. ROOTFS itself is not
    /// modified. REPO is created when missing; on any error it is left unchanged.
    Rootfs(ComposeRootfsOpts),
}

#[derive(Debug, clap::Args)]
pub struct ComposeRootfsOpts {
    /// The root filesystem directory
    pub rootfs: PathBuf,
    /// The ostree repository to commit to (created as a bare repository when missing)
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to commit on, e.g. debian/12/x86_64/stable
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// Version string stored in the commit metadata (`version`)
    #[arg(long)]
    pub version: Option<String>,
    /// The kernel to use when the root has several
    #[arg(long)]
    pub kver: Option<String>,
    /// Keep the root's own initramfs (only for one that runs stratum-prepare-root, e.g. built
    /// by dracut with Stratum's module) instead of building one
    #[arg(long)]
    pub keep_initramfs: bool,
    /// Fail if REF exists already
    #[arg(long)]
    pub no_overwrite: bool,
    /// The static stratum-prepare-root to use as /init [default: the root's own]
    #[arg(long, value_name = "PATH")]
    pub prepare_root: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum InstallCmd {
    /// Write a bootable GPT disk image (UEFI): ESP with GRUB, ext4 /boot, ext4 root.
    ///
    /// Built from files, without loop devices or mounts, so it works unprivileged too. The
    /// root partition holds the sysroot (/ostree/repo with the commit, the stateroot and one
    /// deployment); the deployment's /etc/fstab mounts /boot and /boot/efi. Writing straight
    /// to a block device is not supported: write an image and copy it with
    /// `dd if=IMAGE of=DEVICE bs=4M conv=sparse`.
    ToDisk(ToDiskOpts),
    /// Write a sysroot into an existing directory (its boot/ holds the boot set)
    ToFilesystem(ToFilesystemOpts),
}

#[derive(Debug, clap::Args)]
pub struct InstallSource {
    /// The ostree repository holding the image
    #[arg(long)]
    pub repo: PathBuf,
    /// The ref to install
    #[arg(long = "ref", value_name = "REF")]
    pub refname: String,
    /// Extra kernel argument (repeatable), e.g. --karg console=ttyS0
    #[arg(long = "karg", value_name = "ARG")]
    pub kargs: Vec<String>,
    /// Make the installed system follow REF from this remote (origin NAME:REF), e.g.
    /// --remote updates=https://example.com/repo
    #[arg(long, value_name = "NAME=URL")]
    pub remote: Option<String>,
    /// GPG public keys that sign the remote's commits (verification is off without them)
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub remote_gpg_import: Option<PathBuf>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ToDiskOpts {
    #[command(flatten)]
    pub source: InstallSource,
    /// The disk image file to write (replaced when complete)
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Size of the image, e.g. 4G
    #[arg(long, default_value = "4G")]
    pub size: String,
    /// Keep the staged sysroot in DIR (for inspection, e.g. `ostree admin status --sysroot DIR/sysroot`)
    #[arg(long, value_name = "DIR")]
    pub workdir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ToFilesystemOpts {
    #[command(flatten)]
    pub source: InstallSource,
    /// The directory to write the sysroot into
    pub dir: PathBuf,
}

/// Exit status when there is no update (`--check`, `--unchanged-exit-77`), as rpm-ostree.
pub const EXIT_UNCHANGED: i32 = 77;

/// Parses `args` and runs the command; returns the exit status.
pub fn run(args: impl IntoIterator<Item = OsString>) -> Result<i32> {
    let cli = Cli::parse_from(args);
    match &cli.command {
        Command::Upgrade(o) => {
            let target = crate::update::Target::Upgrade;
            let opts = crate::update::UpdateOptions {
                check: o.check,
                preview: o.preview,
                stage: stage(&cli, &o.new),
            };
            let r = crate::update::update(&ops(&cli), &target, opts)?;
            let unchanged = matches!(r, crate::update::UpdateResult::NoChange { .. });
            report_update(&r, &o.new)?;
            Ok(if unchanged && (o.check || o.unchanged_exit_77) {
                EXIT_UNCHANGED
            } else {
                0
            })
        }
        Command::Deploy(o) => {
            let target = match (&o.rev, &o.version) {
                (Some(r), _) => crate::update::Target::Rev(r.clone()),
                (None, Some(v)) => crate::update::Target::Version(v.clone()),
                (None, None) => bail!("give a REV or --version"),
            };
            let opts = crate::update::UpdateOptions {
                stage: stage(&cli, &o.new),
                ..Default::default()
            };
            let r = crate::update::update(&ops(&cli), &target, opts)?;
            report_update(&r, &o.new).map(|_| 0)
        }
        Command::Rebase(o) => {
            let target = crate::update::Target::Rebase(o.refspec.clone());
            let opts = crate::update::UpdateOptions {
                stage: stage(&cli, &o.new),
                ..Default::default()
            };
            let r = crate::update::update(&ops(&cli), &target, opts)?;
            report_update(&r, &o.new).map(|_| 0)
        }
        Command::Rollback(o) => {
            let ops = ops(&cli);
            let _lock = ops.begin()?;
            let d = ops.rollback()?;
            eprintln!(
                "Moved {}:{} to be the default deployment; it boots next.",
                d.stateroot,
                d.name()
            );
            if o.reboot {
                reboot()?;
            }
            Ok(0)
        }
        Command::Cleanup(o) => {
            if !o.pending && !o.rollback {
                bail!(
                    "say what to remove: -p (pending deployment) and/or -r (rollback deployment)"
                );
            }
            let ops = ops(&cli);
            let _lock = ops.begin()?;
            let removed = ops.cleanup(o.pending, o.rollback)?;
            if removed.is_empty() {
                eprintln!("Nothing to remove.");
            }
            for r in removed {
                eprintln!("Removed deployment {r}");
            }
            Ok(0)
        }
        Command::Kargs(o) => kargs(&cli, o),
        Command::Pin(o) => {
            let ops = ops(&cli);
            let _lock = ops.begin()?;
            let d = ops.pin(o.index, !o.unpin)?;
            eprintln!(
                "Deployment {}:{} is now {}",
                d.stateroot,
                d.name(),
                if o.unpin { "unpinned" } else { "pinned" }
            );
            Ok(0)
        }
        Command::FinalizeStaged => {
            let ops = ops(&cli);
            let _lock = ops.begin()?;
            match ops.finalize_staged()? {
                Some(name) => eprintln!("Finalized staged deployment {name}"),
                None => eprintln!("No staged deployment."),
            }
            Ok(0)
        }
        Command::BootComplete(o) => boot_complete(&cli, o),
        Command::Remote(c) => remote(&cli, c).map(|_| 0),
        Command::Initramfs(o) => {
            crate::initramfs::run(&ops(&cli), o, stage(&cli, &o.new)).map(|_| 0)
        }
        Command::InitramfsEtc(o) => crate::initramfs_etc::run(&ops(&cli), o).map(|_| 0),
        _ => run_simple(&cli).map(|_| 0),
    }
}

fn boot_complete(cli: &Cli, o: &BootCompleteOpts) -> Result<i32> {
    let ops = ops(cli);
    if o.status {
        let (env, problem) = crate::bootstate::load_env(&ops.sysroot)?;
        let t = crate::bootstate::trial_status(&env, problem);
        if o.json {
            println!("{}", serde_json::to_string_pretty(&t)?);
        } else {
            match &t.trial {
                Some(id) => println!(
                    "trial: {id}, {} of {} tries left",
                    t.tries_left.map_or("?".into(), |n| n.to_string()),
                    t.tries.map_or("?".into(), |n| n.to_string())
                ),
                None => println!("no trial in progress"),
            }
            if let Some(f) = &t.pending_fallback {
                println!("GRUB fell back from {f}; the next `stratum boot-complete` makes the running deployment the default");
            }
            if let Some(p) = &t.grubenv_problem {
                println!("grubenv: {p}");
            }
        }
        return Ok(0);
    }
    let result = crate::bootcomplete::run(&ops);
    let outcome = match result {
        Ok(o) => o,
        Err(e) => {
            let _ = sd_notify::notify(
                false,
                &[sd_notify::NotifyState::Status(&format!("failed: {e:#}"))],
            );
            return Err(e);
        }
    };
    let summary = crate::bootcomplete::summary(&outcome);
    eprintln!("{summary}");
    if o.json {
        println!("{}", serde_json::to_string_pretty(&outcome)?);
    }
    if outcome.action.as_deref() == Some("reboot") {
        // Queue the reboot before the unit finishes: units ordered after this one then see
        // the machine going down rather than a finished boot.
        eprintln!("Rebooting so the failed try is counted.");
        let _ = sd_notify::notify(
            false,
            &[sd_notify::NotifyState::Status(&format!(
                "{summary}; rebooting"
            ))],
        );
        reboot()?;
        return Ok(1);
    }
    let _ = sd_notify::notify(
        false,
        &[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(&summary),
        ],
    );
    Ok(if outcome.result == "check-failed" {
        1
    } else {
        0
    })
}

fn ops(cli: &Cli) -> crate::ops::Ops {
    crate::ops::Ops {
        sysroot: default_sysroot(cli),
        stateroot: cli.stateroot.clone(),
        no_wait: cli.no_wait,
    }
}

/// New deployments are staged on the booted system (finalized at shutdown) unless
/// `--apply-now`; on any other sysroot they are written at once.
fn stage(cli: &Cli, o: &NewDeploymentOpts) -> bool {
    if o.apply_now {
        return false;
    }
    o.stage
        || (cli.sysroot.is_none()
            && std::path::Path::new(stratum_prepare_root::OSTREE_BOOTED).exists())
}

fn report_update(r: &crate::update::UpdateResult, o: &NewDeploymentOpts) -> Result<()> {
    use crate::update::UpdateResult;
    if o.json {
        println!("{}", serde_json::to_string_pretty(r)?);
    }
    match r {
        UpdateResult::NoChange { checksum } => {
            eprintln!("No update available ({checksum} is deployed).")
        }
        UpdateResult::Available {
            from,
            to,
            version,
            diff,
        } => {
            eprintln!(
                "Update available: {to} ({}), deployed: {from}",
                version.as_deref().unwrap_or("no version")
            );
            if let Some(d) = diff {
                eprintln!(
                    "  {} added, {} removed, {} modified files",
                    d.added.len(),
                    d.removed.len(),
                    d.modified.len()
                );
                if !o.json {
                    for (mark, list) in [("+", &d.added), ("-", &d.removed), ("M", &d.modified)] {
                        for p in list.iter().take(50) {
                            println!("{mark} {p}");
                        }
                        if list.len() > 50 {
                            println!("{mark} … and {} more", list.len() - 50);
                        }
                    }
                }
            }
        }
        UpdateResult::Deployed(d) => {
            let how = if d.staged { "Staged" } else { "Deployed" };
            eprintln!(
                "{how} {} (/etc: {} modified, {} added, {} removed by the admin, carried over).",
                d.deployment, d.etc_modified, d.etc_added, d.etc_removed
            );
            if d.staged {
                eprintln!("It is written into the boot set at shutdown; reboot to use it.");
            } else {
                eprintln!("It is the default deployment now; reboot to use it.");
            }
            if o.reboot {
                reboot()?;
            }
        }
    }
    Ok(())
}

fn kargs(cli: &Cli, o: &KargsOpts) -> Result<i32> {
    let req = crate::kargs_cmd::Request {
        edits: crate::kargs::Edits {
            delete: o.delete.clone(),
            replace: o.replace.clone(),
            append: o.append.clone(),
            append_if_missing: o.append_if_missing.clone(),
            delete_if_present: o.delete_if_present.clone(),
        },
        editor: o.editor,
        import_proc_cmdline: o.import_proc_cmdline,
        deploy_index: o.deploy_index,
    };
    let r = crate::kargs_cmd::run(&ops(cli), &req)?;
    if o.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
    } else if !req.modifies() {
        println!("{}", r.kargs.join(" "));
    }
    if !req.modifies() {
        return Ok(0);
    }
    if !r.changed {
        eprintln!("Kernel arguments unchanged.");
        return Ok(if o.unchanged_exit_77 {
            EXIT_UNCHANGED
        } else {
            0
        });
    }
    eprintln!(
        "Kernel arguments of {}:{} updated; reboot to use them.",
        r.stateroot, r.deployment
    );
    if o.reboot {
        reboot()?;
    }
    Ok(0)
}

fn reboot() -> Result<()> {
    crate::cmd::run(std::process::Command::new("systemctl").arg("reboot")).context("rebooting")
}

fn remote(cli: &Cli, c: &RemoteCmd) -> Result<()> {
    let sysroot = default_sysroot(cli);
    let repo = crate::repo::open(&sysroot.repo_path())?;
    match c {
        RemoteCmd::Add(o) => {
            let _lock = ops(cli).begin()?;
            crate::remote::add(
                &repo,
                &o.name,
                &o.url,
                !o.no_sign_verify,
                o.gpg_import.as_deref(),
            )?;
            if o.no_sign_verify {
                eprintln!(
                    "Added remote {} ({}); commits are NOT signature-checked.",
                    o.name, o.url
                );
            } else {
                eprintln!(
                    "Added remote {} ({}); commits must carry a valid GPG signature.",
                    o.name, o.url
                );
            }
        }
        RemoteCmd::List { json } => {
            let l = crate::remote::list(&repo)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&l)?);
            } else {
                for r in l {
                    println!(
                        "{}\t{}\t{}",
                        r.name,
                        r.url,
                        if r.sign_verify {
                            "sign-verify"
                        } else {
                            "no-sign-verify"
                        }
                    );
                }
            }
        }
        RemoteCmd::Delete { name } => {
            let _lock = ops(cli).begin()?;
            crate::remote::delete(&repo, name)?;
            eprintln!("Deleted remote {name}");
        }
    }
    Ok(())
}

fn run_simple(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Status(o) => status(cli, o),
        Command::Compose(ComposeCmd::Rootfs(o)) => {
            let r = crate::compose::compose_rootfs(&crate::compose::ComposeOptions {
                rootfs: o.rootfs.clone(),
                repo: o.repo.clone(),
                refname: o.refname.clone(),
                version: o.version.clone(),
                kver: o.kver.clone(),
                keep_initramfs: o.keep_initramfs,
                no_overwrite: o.no_overwrite,
                prepare_root: o.prepare_root.clone(),
            })?;
            print_result(o.json, &r, &r.commit)
        }
        Command::Install(InstallCmd::ToDisk(o)) => {
            let size = crate::disk::parse_size(&o.size)?;
            let r = crate::install::to_disk(
                &o.image,
                size,
                &install_options(cli, &o.source)?,
                o.workdir.as_deref(),
            )?;
            eprintln!(
                "Wrote {} ({} MiB) with deployment {}",
                o.image.display(),
                size >> 20,
                r.deployment
            );
            print_result(o.source.json, &r, &r.commit)
        }
        Command::Install(InstallCmd::ToFilesystem(o)) => {
            let r = crate::install::to_filesystem(&o.dir, &install_options(cli, &o.source)?, "")?;
            print_result(o.source.json, &r, &r.deployment)
        }
        _ => unreachable!("handled in run()"),
    }
}

fn install_options(cli: &Cli, s: &InstallSource) -> Result<crate::install::InstallOptions> {
    for k in &s.kargs {
        if k.is_empty() || k.contains(['\n', '\0']) {
            bail!("invalid kernel argument {k:?}: empty, or contains a newline or NUL");
        }
        if k.starts_with("ostree=") {
            bail!("--karg {k}: ostree= is written by stratum itself");
        }
    }
    let stateroot = cli
        .stateroot
        .clone()
        .unwrap_or_else(|| "default".to_string());
    crate::sysroot::validate_stateroot(&stateroot)?;
    let remote = match &s.remote {
        Some(r) => {
            let (name, url) = r
                .split_once('=')
                .with_context(|| format!("--remote {r}: expected NAME=URL"))?;
            Some((name.to_string(), url.to_string()))
        }
        None => None,
    };
    Ok(crate::install::InstallOptions {
        repo: s.repo.clone(),
        refname: s.refname.clone(),
        stateroot,
        kargs: s.kargs.clone(),
        remote,
        remote_gpg_keys: s.remote_gpg_import.clone(),
    })
}

fn print_result<T: serde::Serialize>(json: bool, value: &T, plain: &str) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(value)?);
    } else {
        println!("{plain}");
    }
    Ok(())
}

/// The sysroot to use when `--sysroot` is not given: `/`. On a booted system `/ostree` is a
/// symlink into the physical root (`/sysroot/ostree`) and `/boot` is the boot partition, so
/// `/` sees the whole sysroot, as OSTree's default sysroot does.
fn default_sysroot(cli: &Cli) -> Sysroot {
    Sysroot::new(cli.sysroot.clone().unwrap_or_else(|| "/".into()))
}

fn status(cli: &Cli, o: &StatusOpts) -> Result<()> {
    let sysroot = default_sysroot(cli);
    let mut st = crate::status::read(&sysroot)?;
    if let Some(sr) = &cli.stateroot {
        st.deployments.retain(|d| &d.osname == sr);
    }
    if o.booted {
        st.deployments.retain(|d| d.booted);
    }
    if o.json {
        println!("{}", serde_json::to_string_pretty(&st)?);
    } else {
        print!("{}", crate::status::render(&st, o.verbose));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
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
        let Command::Install(InstallCmd::ToDisk(o)) = cli.command else {
            panic!()
        };
        assert_eq!(o.source.kargs, vec!["console=ttyS0"]);
        assert_eq!(o.size, "4G");
    }

    #[test]
    fn bad_kargs_are_refused() {
        let cli = Cli::try_parse_from([
            "stratum",
            "install",
            "to-filesystem",
            "--repo",
            "r",
            "--ref",
            "x",
            "d",
        ])
        .unwrap();
        for bad in ["a\nb", "", "ostree=/x"] {
            let s = InstallSource {
                repo: "r".into(),
                refname: "x".into(),
                kargs: vec![bad.into()],
                json: false,
                remote: None,
                remote_gpg_import: None,
            };
            assert!(install_options(&cli, &s).is_err(), "{bad:?}");
        }
    }
}
