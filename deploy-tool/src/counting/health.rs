//! Health checks: executables in `/etc/stratum/health.d/required.d/` (all must pass) and
//! `wanted.d/` (failures only warn), run in name order, each with a timeout.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// One check's outcome.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    pub name: String,
    pub required: bool,
    pub passed: bool,
    /// What went wrong, or the check's last line of output.
    pub detail: String,
    pub millis: u128,
}

/// Runs the checks under `root/etc/stratum/health.d`.
pub fn run_checks(root: &Path, timeout: Duration) -> Result<Vec<CheckResult>> {
    let base = root.join("etc/stratum/health.d");
    let mut out = Vec::new();
    for (sub, required) in [("required.d", true), ("wanted.d", false)] {
        for path in executables(&base.join(sub))? {
            out.push(run_one(&path, required, timeout));
        }
    }
    Ok(out)
}

fn executables(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let mut v = Vec::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(v),
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    };
    for e in rd {
        let p = e?.path();
        let m = std::fs::metadata(&p)?;
        if m.is_file() && m.permissions().mode() & 0o111 != 0 {
            v.push(p);
        }
    }
    v.sort();
    Ok(v)
}

fn run_one(path: &Path, required: bool, timeout: Duration) -> CheckResult {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let start = Instant::now();
    let result = (|| -> Result<(bool, String)> {
        let mut child = Command::new(path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {}", path.display()))?;
        loop {
            if let Some(status) = child.try_wait()? {
                let out = child.wait_with_output()?;
                let text = String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr);
                let last = text
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("")
                    .to_string();
                let detail = if status.success() {
                    last
                } else {
                    format!("{status}: {last}")
                };
                return Ok((status.success(), detail));
            }
            if start.elapsed() > timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Ok((false, format!("timed out after {} s", timeout.as_secs())));
            }
            // Checks are short programs; a coarse poll keeps this simple and cheap.
            std::thread::sleep(Duration::from_millis(20));
        }
    })();
    let (passed, detail) = result.unwrap_or_else(|e| (false, format!("{e:#}")));
    CheckResult {
        name,
        required,
        passed,
        detail,
        millis: start.elapsed().as_millis(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) {
        std::fs::create_dir_all(dir).unwrap();
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn required_and_wanted_checks_with_timeout() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().join("etc/stratum/health.d");
        script(&base.join("required.d"), "10-ok", "echo fine");
        script(
            &base.join("required.d"),
            "20-bad",
            "echo disk full >&2; exit 3",
        );
        script(&base.join("wanted.d"), "slow", "sleep 5");
        std::fs::write(base.join("required.d/README"), "not executable").unwrap();
        let r = run_checks(d.path(), Duration::from_millis(300)).unwrap();
        assert_eq!(r.len(), 3);
        assert!(r[0].passed && r[0].required && r[0].detail == "fine");
        assert!(
            !r[1].passed && r[1].detail.contains("disk full"),
            "{:?}",
            r[1]
        );
        assert!(!r[2].passed && !r[2].required && r[2].detail.contains("timed out"));
    }
}
