//! `stratum-prepare-root`: `/init` of Stratum's native initramfs, and a small diagnostic tool
//! on a running system. As PID 1 it ignores its arguments (the kernel meant them for the real
//! init, which gets them) and boots; otherwise it parses the command line below, including
//! `initrd-setup`, the systemd-initrd mode of dracut-built images.

use std::ffi::OsString;
use std::path::Path;
use stratum_prepare_root::cmdline::Cmdline;
use stratum_prepare_root::params::BootParams;
use stratum_prepare_root::{boot, confine, initrd, probe};

const USAGE: &str = "\
Usage: stratum-prepare-root [COMMAND]

As PID 1 (/init of a Stratum initramfs) it mounts the root device, sets up the deployment
named by ostree= and switches root. Otherwise:

  check-cmdline [CMDLINE]       parse CMDLINE (default: /proc/cmdline), print the boot
                                parameters as JSON
  probe DEVICE...               print filesystem (UUID, LABEL) and GPT partitions as JSON
  resolve SYSROOT OSTREE_ARG    resolve an ostree= value inside SYSROOT, print the deployment
  initrd-setup SYSROOT          in a systemd initramfs (dracut): turn SYSROOT, where
                                sysroot.mount put the root device, into the deployment
                                named by ostree=; systemd then switches root (run by
                                stratum-prepare-root.service; exits 1 on failure)
  boot --force                  run the boot sequence although not PID 1 (testing only;
                                it will not switch root unless / is an initramfs)
  --help, --version

Kernel arguments: root= rootfstype= rootflags= ro rw ostree= init= stratum.debug
stratum.root-timeout=SECS stratum.reboot-delay=SECS stratum.emergency=reboot|halt
stratum.sysroot-rw
";

fn print_json(v: &impl serde::Serialize) -> Result<(), String> {
    let s = serde_json::to_string_pretty(v).map_err(|e| e.to_string())?;
    println!("{s}");
    Ok(())
}

fn probe_device(dev: &str) -> Result<serde_json::Value, String> {
    let open = || std::fs::File::open(dev).map_err(|e| format!("{dev}: {e}"));
    let fs = probe::probe_filesystem(&mut open()?).map_err(|e| format!("{dev}: {e}"))?;
    let gpt = probe::read_gpt(&mut open()?).map_err(|e| format!("{dev}: {e}"))?;
    Ok(serde_json::json!({ "device": dev, "filesystem": fs, "gpt": gpt }))
}

fn run(args: &[String]) -> Result<(), String> {
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["--help" | "-h" | "help"] => {
            print!("{USAGE}");
            Ok(())
        }
        ["--version" | "-V"] => {
            println!("stratum-prepare-root {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        ["check-cmdline", rest @ ..] => {
            let text = match rest {
                [] => std::fs::read_to_string("/proc/cmdline")
                    .map_err(|e| format!("/proc/cmdline: {e}"))?,
                words => words.join(" "),
            };
            print_json(&BootParams::from_cmdline(&Cmdline::parse(&text)))
        }
        ["probe", devs @ ..] if !devs.is_empty() => {
            let out: Result<Vec<_>, _> = devs.iter().map(|d| probe_device(d)).collect();
            print_json(&out?)
        }
        ["resolve", sysroot, arg] => {
            let dep = confine::resolve_deployment(Path::new(sysroot), arg)
                .map_err(|e| format!("ostree={arg}: {e}"))?;
            print_json(&serde_json::json!({
                "stateroot": dep.stateroot,
                "name": dep.name,
                "checksum": dep.checksum,
                "serial": dep.serial,
                "relpath": dep.relpath,
            }))
        }
        [initrd::SUBCOMMAND, sysroot] => initrd::run(Path::new(sysroot)),
        ["boot", "--force"] | ["--force"] => boot::run(&[], false),
        ["boot"] => Err("refusing to boot: not PID 1 (use `boot --force` in a test VM)".into()),
        _ => Err(format!("unknown arguments {args:?}; see --help")),
    }
}

fn main() {
    stratum_prepare_root::fatal::abort_on_panic();
    if nix::unistd::getpid().as_raw() == 1 {
        let init_argv: Vec<OsString> = std::env::args_os().skip(1).collect();
        boot::run(&init_argv, true);
    }
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    if let Err(e) = run(&args) {
        eprintln!("stratum-prepare-root: {e}");
        std::process::exit(1);
    }
}
