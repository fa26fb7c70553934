//! The command line of `stratum-initramfs`, in the library so that man pages and shell
//! completions are generated from the same definition the program parses.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::SpecArgs;

/// Build and inspect Stratum's native initramfs images.
///
/// Without a subcommand, the options of `build` are accepted directly:
/// `stratum-initramfs --root DIR --kver KVER -o FILE`.
#[derive(Debug, Parser)]
#[command(
    name = "stratum-initramfs",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    /// The subcommand, if any.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The options of `build`, given without the subcommand.
    #[command(flatten)]
    pub build: Option<BuildArgs>,
}

// Parsed once per run: the size of the build variant does not matter.
#[allow(clippy::large_enum_variant)]
/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Build an initramfs from an OS root's kernel modules and stratum-prepare-root.
    Build(BuildArgs),
    /// List the members of an initramfs (zstd, gzip, xz or plain cpio, concatenated or not).
    List(FileArgs),
    /// Summarise an initramfs: its archives and their compression, members, kernel, modules.
    Inspect(FileArgs),
}

/// Settings come from `<root>/etc/stratum/initramfs.toml` and drop-ins in
/// `<root>/{usr/lib,run,etc}/stratum/initramfs.d/*.toml`; options given here win.
#[derive(Debug, Args)]
pub struct BuildArgs {
    /// OS root to take kernel modules, firmware, configuration and, by default, the init binary from.
    // `Cli::build` is `Some` when an argument of this group is given, but clap leaves the group
    // of a struct with a flattened part empty (clap#4697): `--root`, always given, is added.
    #[arg(long, value_name = "DIR", group = "BuildArgs")]
    pub root: PathBuf,
    /// Kernel version (a directory name in <root>/usr/lib/modules) [default: the only one].
    #[arg(long, value_name = "KVER")]
    pub kver: Option<String>,
    /// Where to write the image (replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Init binary on the host [default: <root>/usr/lib/stratum/stratum-prepare-root].
    #[arg(long, value_name = "PATH")]
    pub init: Option<PathBuf>,
    /// Options that shape the image.
    #[command(flatten)]
    pub spec: SpecArgs,
    /// With --hostonly: the path whose filesystem is the root to reach [default: /].
    #[arg(long, value_name = "PATH")]
    pub hostonly_root: Option<PathBuf>,
    /// sysfs to read in hostonly mode (for tests).
    #[arg(long, value_name = "DIR", hide = true, default_value = "/sys")]
    pub sysfs: PathBuf,
    /// Mount table to read in hostonly mode (for tests).
    #[arg(
        long,
        value_name = "FILE",
        hide = true,
        default_value = "/proc/self/mountinfo"
    )]
    pub mountinfo: PathBuf,
    /// zstd worker threads; 0 compresses on one thread [default: 0].
    #[arg(long, value_name = "N")]
    pub zstd_threads: Option<u32>,
    /// Threads reading and decompressing modules [default: one per CPU, at most 8].
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub jobs: usize,
    /// Ignore the configuration files.
    #[arg(long)]
    pub no_config: bool,
    /// Print the build report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A file to read.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The initramfs to read.
    pub file: PathBuf,
    /// Print JSON on stdout.
    #[arg(long)]
    pub json: bool,
}
