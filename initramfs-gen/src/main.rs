//! `stratum-initramfs`: build and inspect Stratum's native initramfs images.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;
use stratum_initramfs::cli::{BuildArgs, Cli, Command, FileArgs};
use stratum_initramfs::{config, hostonly::HostSource, modules, BuildSpec};

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

/// The build spec: configuration files first, then the command line over them.
fn spec(args: BuildArgs) -> Result<BuildSpec> {
    let cfg = if args.no_config {
        config::Config::default()
    } else {
        config::load(&args.root)?
    };
    let kver = match args.kver {
        Some(k) => k,
        None => modules::only_kernel_version(&args.root)?,
    };
    let mut spec = BuildSpec::from_config(&args.root, kver, &cfg)?;
    spec.options.init = args.init;
    spec.options.source_date_epoch = source_date_epoch()?;
    args.spec.apply(&mut spec);
    if let Some(t) = args.zstd_threads {
        spec.zstd_threads = t;
    }
    spec.jobs = args.jobs;
    spec.host = HostSource {
        sysfs: args.sysfs,
        mountinfo: args.mountinfo,
        root_path: args.hostonly_root.unwrap_or_else(|| "/".into()),
    };
    Ok(spec)
}

fn build(args: BuildArgs) -> Result<()> {
    let start = Instant::now();
    let (output, json) = (args.output.clone(), args.json);
    let spec = spec(args)?;
    let report = stratum_initramfs::build_spec(&spec, &output)?;
    if !report.skipped.is_empty() {
        eprintln!(
            "note: not in kernel {}: {}",
            spec.options.kver,
            report.skipped.join(" ")
        );
    }
    if !report.omitted.is_empty() {
        eprintln!("note: omitted: {}", report.omitted.join(", "));
    }
    if !report.missing_firmware.is_empty() {
        eprintln!(
            "warning: {} firmware file(s) declared by included modules are not in {}/usr/lib/firmware: {}",
            report.missing_firmware.len(),
            spec.options.root.display(),
            report.missing_firmware.join(" ")
        );
    }
    eprintln!(
        "wrote {}: {} members, {} modules, {} bytes ({} uncompressed) in {:.2}s",
        output.display(),
        report.members,
        report.modules.len(),
        report.compressed_size,
        report.uncompressed_size,
        start.elapsed().as_secs_f64()
    );
    if json {
        print_out(&(serde_json::to_string_pretty(&report)? + "\n"))?;
    }
    Ok(())
}

/// Write `text` to stdout; a closed pipe (`| head`) asks to stop rather than fail.
fn emit(out: &mut impl Write, text: &str) -> Result<ControlFlow<()>> {
    match out.write_all(text.as_bytes()) {
        Ok(()) => Ok(ControlFlow::Continue(())),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ControlFlow::Break(())),
        Err(e) => Err(e).context("writing to stdout"),
    }
}

/// Print each member as it is read, so that memory does not grow with the image.
fn list(args: FileArgs) -> Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut first = true;
    let mut flow = ControlFlow::Continue(());
    stratum_initramfs::for_each_member(&args.file, |e| {
        let text = if args.json {
            // The layout of `serde_json::to_string_pretty` for the whole list, one member at a
            // time (a pretty value has no raw newline but those of its layout).
            let item = serde_json::to_string_pretty(e)?.replace('\n', "\n  ");
            format!("{}  {item}", if first { "[\n" } else { ",\n" })
        } else {
            format!("{e}\n")
        };
        first = false;
        flow = emit(&mut out, &text)?;
        Ok(flow)
    })?;
    if args.json && flow.is_continue() {
        // A closed pipe has nothing left to stop.
        let _ = emit(&mut out, if first { "[]\n" } else { "\n]\n" })?;
    }
    match out.flush() {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn inspect(args: FileArgs) -> Result<()> {
    let summary = stratum_initramfs::inspect(&args.file)?;
    let text = if args.json {
        serde_json::to_string_pretty(&summary)? + "\n"
    } else {
        summary.to_string()
    };
    print_out(&text)
}

fn main() -> ExitCode {
    stratum_prepare_root::fatal::abort_on_panic();
    let cli = Cli::parse();
    let res = match (cli.command, cli.build) {
        (Some(Command::Build(a)), _) | (None, Some(a)) => build(a),
        (Some(Command::List(a)), _) => list(a),
        (Some(Command::Inspect(a)), _) => inspect(a),
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
        assert!(
            matches!(bare, Cli { command: None, build: Some(ref b) } if b.kver.as_deref() == Some("6.1"))
        );
        let sub = Cli::try_parse_from([
            "x",
            "build",
            "--root",
            "/r",
            "-o",
            "/o",
            "--generic",
            "--add-module",
            "nvme",
            "--omit-module",
            "btrfs",
            "--include",
            "/etc/a:/b",
            "--zstd-threads",
            "2",
        ])
        .unwrap();
        let Some(Command::Build(b)) = sub.command else {
            panic!("not build")
        };
        assert_eq!(b.spec.add_modules, ["nvme"]);
        assert_eq!(b.spec.omit_modules, ["btrfs"]);
        assert_eq!(b.spec.includes[0].dest, "/b");
        assert!(b.spec.generic && b.kver.is_none() && b.zstd_threads == Some(2));
        let l = Cli::try_parse_from(["x", "list", "f.img", "--json"]).unwrap();
        assert!(matches!(
            l.command,
            Some(Command::List(FileArgs { json: true, .. }))
        ));
        let i = Cli::try_parse_from(["x", "inspect", "f.img"]).unwrap();
        assert!(matches!(i.command, Some(Command::Inspect(_))));
        assert!(Cli::try_parse_from(["x", "--root", "/r"]).is_err());
        assert!(Cli::try_parse_from(["x"]).is_err());
        let both = ["x", "--root", "/r", "-o", "/o", "--generic", "--hostonly"];
        assert!(Cli::try_parse_from(both).is_err(), "modes conflict");
        assert!(Cli::try_parse_from(["x", "--root", "/r", "-o", "/o", "--mode", "all"]).is_err());
        assert!(Cli::try_parse_from(["x", "--root", "/r", "-o", "/o", "--include", ":x"]).is_err());
    }
}
