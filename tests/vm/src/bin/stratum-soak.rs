//! `make soak`: power cuts at random moments of every boot-set operation (see
//! [`stratum_vmtests::cut`]). Each operation is first run uncut to measure its duration; each
//! cut's delay is drawn from that span by a generator seeded with `SOAK_SEED` (printed, so a
//! run can be replayed). `SOAK_CUTS` sets the cuts per operation (default 9), `SOAK_KINDS` a
//! comma-separated subset (`upgrade,kargs,rollback,cleanup,initramfs,bless`), `SOAK_KEEP=1`
//! keeps every cut's overlay and console logs, `SOAK_BOOTLOADER=systemd-boot` cuts a disk
//! installed for systemd-boot (default `grub`). The table is printed and saved as
//! `target/soak-report.txt`; the exit status is non-zero when any cut failed.

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, Result};
use stratum_vmtests::cut::{CutResult, Op, Report, Rig, Rng};
use stratum_vmtests::{secs, Project};

fn main() -> ExitCode {
    match soak() {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the soak; the number of failed cuts.
fn soak() -> Result<usize> {
    let t = Instant::now();
    let p = Project::locate()?;
    let seed = Rng::seed_from_env()?;
    eprintln!("soak: SOAK_SEED={seed}");
    let cuts: usize = match std::env::var("SOAK_CUTS") {
        Ok(n) => n.parse().context("SOAK_CUTS")?,
        Err(_) => 9,
    };
    eprintln!("soak: the table is saved after every cut as target/soak-report.txt");
    let ops: Vec<Op> = match std::env::var("SOAK_KINDS") {
        Ok(k) => k.split(',').map(Op::from_key).collect::<Result<_>>()?,
        Err(_) => Op::ALL.to_vec(),
    };
    let bootloader = std::env::var("SOAK_BOOTLOADER").unwrap_or_else(|_| "grub".into());
    let mut rig = Rig::build_for(&p, "soak", &bootloader)?;
    rig.keep = std::env::var_os("SOAK_KEEP").is_some();
    let mut report = Report::default();
    let mut spans = String::new();
    for op in ops {
        let cal = match rig.calibrate(op) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("soak: {}: {e:#}", op.title());
                report.results.push(CutResult::failed(op, format!("{e:#}")));
                continue;
            }
        };
        let span = cal.span.unwrap_or(op.typical());
        spans.push_str(&format!(
            "{}: {:.1} s from its start line to its end (uncut run {:.0} s)\n",
            op.title(),
            span.as_secs_f64(),
            cal.elapsed.as_secs_f64()
        ));
        eprintln!("soak: {} takes {:.1} s", op.title(), span.as_secs_f64());
        let mut rng = Rng::for_op(seed, op);
        for n in 0..cuts {
            let delay = rng.below(span);
            let r = rig.cut(op, delay, n)?;
            eprintln!(
                "soak: {} cut {n} at {} ms{}: {} ({:.0} s)",
                op.key(),
                delay.as_millis(),
                if r.killed { "" } else { " (finished first)" },
                match &r.side {
                    Ok(side) => format!("came up {side:?}"),
                    Err(e) => format!("FAILED: {e}"),
                },
                r.elapsed.as_secs_f64()
            );
            report.results.push(r);
            // Saved after every cut, so that an interrupted soak still leaves its table.
            save(&p, &text(seed, t, &report, &spans))?;
        }
    }
    let text = text(seed, t, &report, &spans);
    println!("{text}");
    save(&p, &text)?;
    Ok(report.failures())
}

fn text(seed: u64, t: Instant, report: &Report, spans: &str) -> String {
    format!(
        "Power-cut soak, SOAK_SEED={seed}, {} cuts in {:.0} min\n\n{}\n{spans}",
        report.results.len(),
        secs(t) / 60.0,
        report.table()
    )
}

fn save(p: &Project, text: &str) -> Result<()> {
    let path = p.root.join("target/soak-report.txt");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}
