//! `stratum status`: the deployments of the boot set, for people and for scripts.

use std::fmt::Write as _;

use anyhow::Result;
use serde::Serialize;

use super::Globals;
use crate::bootset::bootloader::{Bootloader, ESP_MOUNT};
use crate::bootset::efichain;
use crate::bootset::efivars::SecureBoot;
use crate::config::{Policy, RebootWindow};
use crate::counting::{self, BootState, Fallback, TrialStatus};
use crate::deployment::automatic::{self, CachedUpdate, Record};
use crate::state::staged::{self, FinalizeFailure};
use crate::state::State;
use crate::sysroot::{Deployment, Sysroot};

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Format {
    /// For people: one block per deployment
    #[default]
    #[value(alias = "humanreadable")]
    Human,
    /// JSON, rpm-ostree's key names where the concept is shared
    Json,
    /// YAML, the same keys as JSON
    Yaml,
}

/// Show the deployments in boot order (default first)
#[derive(Debug, clap::Args)]
pub struct StatusOpts {
    /// Output format
    #[arg(long, value_enum, value_name = "FORMAT", conflicts_with = "json")]
    pub format: Option<Format>,
    /// Same as --format json
    #[arg(long)]
    pub json: bool,
    /// Print only what the JSONPath expression EXPR (RFC 9535) selects from the JSON status,
    /// as a JSON array, e.g. '$.deployments[?@.booted == true].version'
    #[arg(long, value_name = "EXPR", conflicts_with = "format")]
    pub jsonpath: Option<String>,
    /// Only the booted deployment
    #[arg(long, short = 'b')]
    pub booted: bool,
    /// Also show kernel arguments and boot checksums
    #[arg(long, short = 'v')]
    pub verbose: bool,
}

pub fn run(g: &Globals, o: &StatusOpts) -> Result<i32> {
    let st = State::read(&g.sysroot())?;
    let mut status = read(&st);
    if let Some(sr) = &g.stateroot {
        status.deployments.retain(|d| &d.osname == sr);
    }
    if o.booted {
        status.deployments.retain(|d| d.booted);
    }
    if let Some(expr) = &o.jsonpath {
        let path = serde_json_path::JsonPath::parse(expr)
            .map_err(|e| anyhow::anyhow!("--jsonpath {expr:?}: {e}"))?;
        let value = serde_json::to_value(&status)?;
        super::print_json(&path.query(&value).all())?;
        return Ok(0);
    }
    match o.format() {
        Format::Json => super::print_json(&status)?,
        Format::Yaml => print!("{}", serde_yaml_ng::to_string(&status)?),
        Format::Human => print!("{}", render(&status, o.verbose)),
    }
    Ok(0)
}

impl StatusOpts {
    /// The format asked for: `--format`, `--json`, else for people.
    pub fn format(&self) -> Format {
        match (self.format, self.json) {
            (Some(f), _) => f,
            (None, true) => Format::Json,
            (None, false) => Format::Human,
        }
    }
}

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
    /// GRUB fell back from this deployment after its tries were spent.
    pub failed: bool,
    /// The base commit of a layered deployment (rpm-ostree's `base-checksum`).
    #[serde(rename = "base-checksum", skip_serializing_if = "Option::is_none")]
    pub base_checksum: Option<String>,
    /// `[packages] requested` of the origin.
    #[serde(rename = "requested-packages")]
    pub requested_packages: Vec<String>,
    /// `[packages] requested-local`, as `NAME_VERSION_ARCH`.
    #[serde(rename = "requested-local-packages")]
    pub requested_local_packages: Vec<String>,
    /// `[overrides] remove`.
    #[serde(rename = "requested-base-removals")]
    pub requested_base_removals: Vec<String>,
    /// Base packages this deployment's commit removed, by name.
    #[serde(rename = "base-removals")]
    pub base_removals: Vec<String>,
    /// Base packages replaced by local files: `OLD_NVA NEW_NVA`.
    #[serde(rename = "base-local-replacements")]
    pub base_local_replacements: Vec<String>,
    /// Packages the layered commit added, as `NAME_VERSION_ARCH`.
    #[serde(rename = "layered-packages")]
    pub layered_packages: Vec<String>,
    /// Requests the base image satisfies already (inactive).
    #[serde(rename = "inactive-requests")]
    pub inactive_requests: Vec<String>,
}

/// The whole status.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub deployments: Vec<DeploymentStatus>,
    /// The sysroot that was read.
    pub sysroot: String,
    /// The last failed finalize of a staged deployment, if not superseded since.
    #[serde(rename = "finalize-failure")]
    pub finalize_failure: Option<FinalizeFailure>,
    /// The bootloader the sysroot was installed with (`grub`, `systemd-boot`); what the
    /// repository config says when it cannot be read.
    pub bootloader: String,
    /// The running firmware's Secure Boot state (`enabled`, `disabled`, `unknown`); absent
    /// for a sysroot that is not the booted system.
    #[serde(rename = "secure-boot")]
    pub secure_boot: Option<SecureBoot>,
    /// The signed boot chain on the ESP against the default deployment's, when the ESP holds
    /// one and the default deployment ships one (`stratum bootloader status` has the detail).
    #[serde(rename = "boot-chain")]
    pub boot_chain: Option<BootChain>,
    /// The latest automatic fallback after failed boots, if any.
    pub fallback: Option<Fallback>,
    /// The boot-counting trial in progress.
    pub trial: Option<TrialStatus>,
    /// Why the staged-deployment record could not be read (`cleanup -p` discards it).
    #[serde(rename = "staged-problem")]
    pub staged_problem: Option<String>,
    /// The automatic-update policy and the last automatic run.
    #[serde(rename = "automatic-update")]
    pub automatic_update: AutomaticStatus,
    /// The update the last automatic run found, until it boots (rpm-ostree's key).
    #[serde(rename = "cached-update")]
    pub cached_update: Option<CachedUpdate>,
}

/// The ESP's signed boot chain against the default deployment's.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BootChain {
    pub files: Vec<efichain::FileState>,
    /// The ESP holds exactly the default deployment's binaries.
    pub up_to_date: bool,
}

/// The ESP's chain against the default deployment's; `None` when there is nothing to
/// compare (no ESP mounted, an unsigned chain, a deployment without one) or it cannot be
/// read (the ESP is readable by root only).
fn boot_chain(sysroot: &Sysroot, st: &State) -> Option<BootChain> {
    let esp = sysroot.path.join(ESP_MOUNT);
    if !efichain::is_signed(&esp) {
        return None;
    }
    let second = match Bootloader::of(sysroot).ok()? {
        Bootloader::Grub => efichain::SecondStage::Grub,
        Bootloader::SystemdBoot => efichain::SecondStage::SystemdBoot,
    };
    let d = st.default_deployment()?;
    let files = efichain::compare(&esp, &sysroot.deployment_root(d), second).ok()?;
    if files.is_empty() {
        return None;
    }
    let up_to_date = files.iter().all(|f| f.up_to_date);
    Some(BootChain { files, up_to_date })
}

/// The automatic-update part of the status.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct AutomaticStatus {
    /// The configured policy; `None` when the configuration cannot be read.
    pub policy: Option<Policy>,
    pub reboot_windows: Vec<RebootWindow>,
    /// Why the configuration cannot be read.
    pub config_error: Option<String>,
    /// Unix time of the last automatic run.
    pub last_check: Option<u64>,
    /// What it found or did.
    pub last_result: Option<String>,
    pub last_failed: bool,
}

/// The automatic-update policy of the booted (else the default) deployment's configuration,
/// the record of the last run, and the update it found while that is not what is running.
fn automatic_status(st: &State) -> (AutomaticStatus, Option<CachedUpdate>) {
    let current = st.booted.as_ref().or(st.deployments.first());
    let (policy, reboot_windows, config_error) = match automatic::config(st) {
        Ok(c) => (
            Some(c.automatic_update.policy),
            c.automatic_update.reboot_windows,
            None,
        ),
        Err(e) => (None, Vec::new(), Some(format!("{e:#}"))),
    };
    let record = current.and_then(|d| Record::load(&st.sysroot, &d.stateroot));
    let cached = record
        .as_ref()
        .and_then(|r| r.cached_update.clone())
        .filter(|c| current.is_none_or(|d| d.checksum != c.checksum));
    let status = AutomaticStatus {
        policy,
        reboot_windows,
        config_error,
        last_check: record.as_ref().map(|r| r.last_check),
        last_result: record.as_ref().map(|r| r.result.clone()),
        last_failed: record.as_ref().is_some_and(|r| r.failed),
    };
    (status, cached)
}

/// The status of the state `st`.
pub fn read(st: &State) -> Status {
    let sysroot = &st.sysroot;
    let deployments = &st.deployments;
    let booted = st.booted.as_ref();
    let repo = crate::repo::open(&sysroot.repo_path()).ok();
    // A staged deployment boots next: it is listed first, as rpm-ostree does.
    let mut rows: Vec<(Deployment, bool)> = Vec::new();
    if let Some(s) = &st.staged {
        rows.push((s.deployment(), true));
    }
    rows.extend(deployments.iter().map(|d| (d.clone(), false)));
    let mut out = Vec::new();
    for (i, (d, is_staged)) in rows.iter().enumerate() {
        let info = repo
            .as_ref()
            .and_then(|r| crate::repo::commit_info(r, &d.checksum).ok())
            .unwrap_or_default();
        let origin = st.origin_of(d).ok();
        let recorded = repo
            .as_ref()
            .and_then(|r| crate::layering::recorded(r, &d.checksum).ok())
            .unwrap_or_default();
        let pk = origin
            .as_ref()
            .map(|o| o.packages.clone())
            .unwrap_or_default();
        // The boot-set index: staged rows come before the boot set proper.
        let boot_index = i - usize::from(st.staged.is_some() && !is_staged);
        out.push(DeploymentStatus {
            id: d.id(),
            osname: d.stateroot.clone(),
            checksum: d.checksum.clone(),
            serial: d.serial,
            version: info.version,
            timestamp: info.timestamp,
            origin: origin.as_ref().and_then(|o| o.refspec.clone()),
            booted: booted == Some(d),
            staged: *is_staged,
            pinned: origin.as_ref().is_some_and(|o| o.pinned),
            is_default: !is_staged && boot_index == 0,
            rollback: !is_staged && is_rollback(deployments, booted, d),
            kernel: d.kver.clone(),
            kargs: d.kargs.clone(),
            bootcsum: d.bootcsum.clone(),
            failed: BootState::load(sysroot, &d.stateroot)
                .failure_of(d)
                .is_some(),
            base_checksum: recorded.base.clone(),
            requested_packages: pk.requested.iter().cloned().collect(),
            requested_local_packages: pk.requested_local.values().cloned().collect(),
            requested_base_removals: pk.remove.iter().cloned().collect(),
            base_removals: recorded.removed.clone(),
            base_local_replacements: recorded.replaced.clone(),
            layered_packages: recorded.layered.clone(),
            inactive_requests: recorded.inactive.clone(),
        });
    }
    let stateroots: Vec<String> = deployments.iter().map(|d| d.stateroot.clone()).collect();
    let finalize_failure = stateroots
        .iter()
        .find_map(|sr| staged::read_failure(&sysroot.stateroot_dir(sr)));
    let fallback = stateroots
        .iter()
        .find_map(|sr| BootState::load(sysroot, sr).fallbacks.last().cloned());
    let trial = counting::load_env(sysroot)
        .ok()
        .map(|(env, problem)| counting::trial_status(&env, problem))
        .filter(|t| t.trial.is_some() || t.pending_fallback.is_some());
    let (automatic_update, cached_update) = automatic_status(st);
    Status {
        deployments: out,
        sysroot: sysroot.path.to_string_lossy().into_owned(),
        finalize_failure,
        bootloader: match Bootloader::of(sysroot) {
            Ok(b) => b.to_string(),
            Err(e) => format!("unknown ({e:#})"),
        },
        secure_boot: sysroot
            .is_booted_system()
            .then(SecureBoot::of_running_system),
        boot_chain: boot_chain(sysroot, st),
        fallback,
        trial,
        staged_problem: st.staged_problem.clone(),
        automatic_update,
        cached_update,
    }
}

/// The rollback deployment: the one after the booted deployment in boot order (after the
/// default on a sysroot that is not booted), as rpm-ostree marks it.
fn is_rollback(deployments: &[Deployment], booted: Option<&Deployment>, d: &Deployment) -> bool {
    let anchor = booted
        .and_then(|b| deployments.iter().position(|x| x == b))
        .unwrap_or(0);
    deployments.get(anchor + 1) == Some(d)
}

/// Renders the status for a terminal, booted deployment marked with `●`.
pub fn render(status: &Status, verbose: bool) -> String {
    let mut s = String::new();
    if status.deployments.is_empty() {
        let _ = writeln!(s, "No deployments in {}.", status.sysroot);
        return s;
    }
    render_automatic(&mut s, status);
    if verbose {
        let _ = writeln!(s, "Bootloader: {}", status.bootloader);
        if let Some(sb) = status.secure_boot {
            let _ = writeln!(s, "Secure Boot: {}", sb.as_str());
        }
        if let Some(c) = &status.boot_chain {
            let versions: Vec<String> = c
                .files
                .iter()
                .map(|f| {
                    format!(
                        "{} {}",
                        f.package,
                        f.esp_version.as_deref().unwrap_or("(unknown version)")
                    )
                })
                .collect();
            let _ = writeln!(
                s,
                "Boot chain: {} ({})",
                versions.join(", "),
                if c.up_to_date {
                    "as in the default deployment"
                } else {
                    "the default deployment ships others"
                }
            );
        }
    }
    if status.boot_chain.as_ref().is_some_and(|c| !c.up_to_date) {
        let _ = writeln!(
            s,
            "The default deployment ships another shim or boot loader than the ESP holds: \
             `stratum bootloader update` installs them.\n"
        );
    }
    if let Some(p) = &status.staged_problem {
        let _ = writeln!(
            s,
            "Warning: {p}; `stratum cleanup -p` discards the staged deployment.\n"
        );
    }
    if let Some(f) = &status.finalize_failure {
        let _ = writeln!(
            s,
            "Warning: finalizing the staged deployment {} failed at the last shutdown: {}\n",
            f.deployment, f.error
        );
    }
    if let Some(f) = &status.fallback {
        let _ = writeln!(
            s,
            "Fell back from {} after {} failed boots; running {}.\n",
            f.from, f.tries, f.to
        );
    }
    if let Some(t) = status.trial.as_ref().filter(|t| t.trial.is_some()) {
        let _ = writeln!(
            s,
            "On trial: {} ({} of {} boots left before falling back).\n",
            t.trial.as_deref().unwrap_or("?"),
            t.tries_left.map_or("?".into(), |n| n.to_string()),
            t.tries.map_or("?".into(), |n| n.to_string())
        );
    }
    s.push_str("Deployments:\n");
    for d in &status.deployments {
        let mark = if d.booted { "●" } else { " " };
        let mut tags = Vec::new();
        if d.staged {
            tags.push("staged");
        }
        if d.pinned {
            tags.push("pinned");
        }
        if d.failed {
            tags.push("failed");
        }
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
        if let Some(b) = &d.base_checksum {
            let _ = writeln!(s, "{:>17}: {b}", "BaseCommit");
        }
        let _ = writeln!(s, "{:>17}: {}", "Kernel", d.kernel);
        let active: Vec<&String> = d
            .requested_packages
            .iter()
            .filter(|p| !d.inactive_requests.contains(p))
            .collect();
        let lists: [(&str, Vec<String>); 4] = [
            (
                "LayeredPackages",
                active.iter().map(|p| p.to_string()).collect(),
            ),
            ("LocalPackages", d.requested_local_packages.clone()),
            ("RemovedBasePackages", d.requested_base_removals.clone()),
            (
                "LocalOverrides",
                d.base_local_replacements
                    .iter()
                    .map(|r| match r.split_once(' ') {
                        Some((old, new)) => {
                            let v = |nva: &str| nva.split('_').nth(1).unwrap_or("").to_string();
                            format!(
                                "{} {} -> {}",
                                old.split('_').next().unwrap_or(old),
                                v(old),
                                v(new)
                            )
                        }
                        None => r.clone(),
                    })
                    .collect(),
            ),
        ];
        for (label, items) in lists {
            if !items.is_empty() {
                let _ = writeln!(s, "{label:>17}: {}", items.join(" "));
            }
        }
        if verbose && !d.inactive_requests.is_empty() {
            let _ = writeln!(
                s,
                "{:>17}: {} (in the base image already)",
                "InactiveRequests",
                d.inactive_requests.join(" ")
            );
        }
        if verbose {
            let _ = writeln!(s, "{:>17}: {}", "BootCsum", d.bootcsum);
            let _ = writeln!(s, "{:>17}: {}", "Kernel arguments", d.kargs.join(" "));
        }
    }
    s
}

/// The `AutomaticUpdates:` line (as rpm-ostree prints it) and the cached update, if any.
fn render_automatic(s: &mut String, status: &Status) {
    let a = &status.automatic_update;
    let policy = match (a.policy, &a.config_error) {
        (_, Some(e)) => format!("unknown ({e})"),
        (Some(Policy::None) | None, _) => "disabled".to_string(),
        (Some(p), _) => {
            let windows = if a.reboot_windows.is_empty() || p != Policy::Apply {
                String::new()
            } else {
                let w: Vec<String> = a
                    .reboot_windows
                    .iter()
                    .map(|w| {
                        let days: Vec<String> = w.days.iter().map(|d| String::from(*d)).collect();
                        format!(
                            "{} {} UTC for {} min",
                            days.join(","),
                            String::from(w.start_time),
                            w.length_minutes
                        )
                    })
                    .collect();
                format!(" (reboots {})", w.join("; "))
            };
            format!("{}{windows}; stratum-automatic-update.timer", p.as_str())
        }
    };
    let _ = writeln!(s, "AutomaticUpdates: {policy}");
    if let (Some(t), Some(r)) = (a.last_check, &a.last_result) {
        let _ = writeln!(s, "       LastCheck: {}: {r}", format_timestamp(t));
    }
    if let Some(c) = status.cached_update.as_ref().filter(|c| !c.staged) {
        let _ = writeln!(
            s,
            " AvailableUpdate: {} ({}), built {}",
            c.version.as_deref().unwrap_or("no version"),
            c.checksum,
            format_timestamp(c.timestamp)
        );
    }
    s.push('\n');
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
