//! Running external programs (mkfs, sfdisk, grub-mkimage, cp) with errors that say which
//! program failed and what it printed.

use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// How many of a failed program's last stderr lines its error quotes.
const STDERR_LINES: usize = 40;

/// Runs `cmd`, failing with its stderr when it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<()> {
    output(cmd).map(|_| ())
}

/// Runs `cmd` and returns its stdout, failing with its stderr when it exits non-zero.
pub fn output(cmd: &mut Command) -> Result<String> {
    let program = cmd.get_program().to_string_lossy().into_owned();
    tracing::debug!("running {cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), STDERR_LINES)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on its stdin.
pub fn run_with_input(cmd: &mut Command, input: &str) -> Result<()> {
    use std::io::Write;
    let program = cmd.get_program().to_string_lossy().into_owned();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {program} (is it installed?)"))?;
    child
        .stdin
        .take()
        .context("stdin of child")?
        .write_all(input.as_bytes())
        .with_context(|| format!("writing to {program}"))?;
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr), STDERR_LINES)
        );
    }
    Ok(())
}

/// The last `n` lines of `text`, each cut to a readable length ([`crate::excerpt::line`]).
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim().lines().collect();
    crate::excerpt::lines(&lines[lines.len().saturating_sub(n)..].join("\n"))
}
