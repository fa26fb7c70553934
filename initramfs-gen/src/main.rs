//! `stratum-initramfs`: build and inspect Stratum's native initramfs images.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use stratum_initramfs::{BuildOptions, DEFAULT_MODULES};

/// Build and inspect Stratum's native initramfs images.
///
/// Without a subcommand, the options of `build` are accepted directly:
/// `stratum-initramfs --root DIR --kver KVER -o FILE`.
#[derive(Debug, Parser)]
#[command(
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    build: Option<BuildArgs>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Build an initramfs from an OS root's kernel modules and stratum-prepare-root.
    Build(BuildArgs),
    /// List the members of an initramfs (zstd, gzip, xz or plain cpio, concatenated or not).
    List(ListArgs),
}

#[derive(Debug, Args)]
struct BuildArgs {
    /// OS root to take kernel modules and, by default, the init binary from.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Kernel version (a directory name in <root>/usr/lib/modules).
    #[arg(long, value_name = "KVER")]
    kver: String,
    /// Where to write the image (replaced atomically).
    #[arg(short, long, value_name = "FILE")]
    output: PathBuf,
    /// Init binary on the host [default: <root>/usr/lib/stratum/stratum-prepare-root].
    #[arg(long, value_name = "PATH")]
    init: Option<PathBuf>,
    /// Also include this kernel module and its dependencies (repeatable).
    #[arg(long = "add-module", value_name = "NAME")]
    add_modules: Vec<String>,
    /// zstd compression level.
    #[arg(
        long,
        default_value_t = 3,
        value_name = "N",
        allow_hyphen_values = true
    )]
    zstd_level: i32,
    /// Print the build report as JSON on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// The initramfs to read.
    file: PathBuf,
    /// Print the members as JSON on stdout.
    #[arg(long)]
    json: bool,
}

/// `SOURCE_DATE_EPOCH` from the environment (reproducible-builds.org), 0 when unset.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds")),
        _ => Ok(0),
    }
}

/// Write results to stdout; a closed pipe (`| head`) is not an error.
fn print_out(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn build(args: BuildArgs) -> Result<()> {
    let start = Instant::now();
    let mut opts = BuildOptions::new(&args.root, &args.kver);
    opts.init = args.init;
    opts.modules = DEFAULT_MODULES.iter().map(|s| s.to_string()).collect();
    opts.modules.extend(args.add_modules);
    opts.source_date_epoch = source_date_epoch()?;
    opts.zstd_level = args.zstd_level;
    let report = stratum_initramfs::build(&opts, &args.output)?;
    eprintln!(
        "wrote {}: {} members, {} modules, {} bytes ({} uncompressed) in {:.2}s",
        args.output.display(),
        report.members,
        report.modules.len(),
        report.compressed_size,
        report.uncompressed_size,
        start.elapsed().as_secs_f64()
    );
    if args.json {
        print_out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    }
    Ok(())
}

fn list(args: ListArgs) -> Result<()> {
    let entries = stratum_initramfs::list(&args.file)?;
    let text = if args.json {
        serde_json::to_string_pretty(&entries)? + "\n"
    } else {
        entries.iter().map(|e| format!("{e}\n")).collect()
    };
    print_out(&text)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match (cli.command, cli.build) {
        (Some(Command::Build(a)), _) | (None, Some(a)) => build(a),
        (Some(Command::List(a)), _) => list(a),
        (None, None) => {
            // Unreachable in practice: clap requires the build options without a subcommand.
            eprintln!("error: nothing to do; see --help");
            return ExitCode::from(2);
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_parses() {
        Cli::command().debug_assert();
        let bare = Cli::try_parse_from(["x", "--root", "/r", "--kver", "6.1", "-o", "/o"]).unwrap();
        assert!(matches!(bare, Cli { command: None, build: Some(ref b) } if b.kver == "6.1"));
        let sub = Cli::try_parse_from([
            "x",
            "build",
            "--root",
            "/r",
            "--kver",
            "6.1",
            "-o",
            "/o",
            "--add-module",
            "nvme",
        ])
        .unwrap();
        assert!(matches!(sub.command, Some(Command::Build(ref b)) if b.add_modules == ["nvme"]));
        let l = Cli::try_parse_from(["x", "list", "f.img", "--json"]).unwrap();
        assert!(matches!(
            l.command,
            Some(Command::List(ListArgs { json: true, .. }))
        ));
        assert!(Cli::try_parse_from(["x", "--root", "/r"]).is_err());
        assert!(Cli::try_parse_from(["x"]).is_err());
    }
}
