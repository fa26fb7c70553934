//! `stratum status`: the deployments of the boot set, for people and for scripts.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use crate::origin::Origin;
use crate::sysroot::Sysroot;

/// One deployment as `status --json` reports it (rpm-ostree's key names where shared).
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentStatus {
    pub id: String,
    pub osname: String,
    pub checksum: String,
    pub serial: u32,
    pub version: Option<String>,
    pub timestamp: u64,
    pub origin: Option<String>,
    pub booted: bool,
    pub staged: bool,
    pub pinned: bool,
    #[serde(rename = "default")]
    pub is_default: bool,
    pub rollback: bool,
    pub kernel: String,
    #[serde(rename = "kernel-arguments")]
    pub kargs: Vec<String>,
    pub bootcsum: String,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub deployments: Vec<DeploymentStatus>,
    /// The sysroot that was read.
    pub sysroot: String,
}

/// Reads the status of `sysroot`.
pub fn read(sysroot: &Sysroot) -> Result<Status> {
    let deployments = sysroot.deployments()?;
    let booted = sysroot.booted(&deployments)?;
    let repo = crate::repo::open(&sysroot.repo_path()).ok();
    let mut out = Vec::new();
    for (i, d) in deployments.iter().enumerate() {
        let info = repo
            .as_ref()
            .and_then(|r| crate::repo::commit_info(r, &d.checksum).ok())
            .unwrap_or_default();
        let origin = std::fs::read_to_string(sysroot.path.join(d.origin_relpath()))
            .ok()
            .and_then(|t| Origin::parse(&t).ok())
            .and_then(|o| o.refspec);
        let is_booted = booted.as_ref() == Some(d);
        out.push(DeploymentStatus {
            id: format!("{}-{}", d.stateroot, d.name()),
            osname: d.stateroot.clone(),
            checksum: d.checksum.clone(),
            serial: d.serial,
            version: info.version,
            timestamp: info.timestamp,
            origin,
            booted: is_booted,
            staged: false,
            pinned: false,
            is_default: i == 0,
            rollback: i == 1,
            kernel: d.kver.clone(),
            kargs: d.kargs.clone(),
            bootcsum: d.bootcsum.clone(),
        });
    }
    Ok(Status {
        deployments: out,
        sysroot: sysroot.path.to_string_lossy().into_owned(),
    })
}

/// Renders the status for a terminal, booted deployment marked with `●`.
pub fn render(status: &Status, verbose: bool) -> String {
    let mut s = String::new();
    if status.deployments.is_empty() {
        let _ = writeln!(s, "No deployments in {}.", status.sysroot);
        return s;
    }
    s.push_str("Deployments:\n");
    for d in &status.deployments {
        let mark = if d.booted { "●" } else { " " };
        let mut tags = Vec::new();
        if d.booted {
            tags.push("booted");
        }
        if d.is_default {
            tags.push("default");
        }
        if d.rollback {
            tags.push("rollback");
        }
        let _ = writeln!(
            s,
            "{mark} {}:{}.{} ({})",
            d.osname,
            d.checksum,
            d.serial,
            tags.join(", ")
        );
        let version = d.version.as_deref().unwrap_or("-");
        let _ = writeln!(
            s,
            "{:>17}: {version} ({})",
            "Version",
            format_timestamp(d.timestamp)
        );
        if let Some(o) = &d.origin {
            let _ = writeln!(s, "{:>17}: {o}", "Origin");
        }
        let _ = writeln!(s, "{:>17}: {}", "Kernel", d.kernel);
        if verbose {
            let _ = writeln!(s, "{:>17}: {}", "BootCsum", d.bootcsum);
            let _ = writeln!(s, "{:>17}: {}", "Kernel arguments", d.kargs.join(" "));
        }
    }
    s
}

/// Formats seconds since the epoch as UTC ISO 8601.
pub fn format_timestamp(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(format_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(1_795_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(format_timestamp(951_782_400), "2000-02-29T00:00:00Z");
    }
}
