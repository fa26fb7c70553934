//! What a check boot must show after a power cut, and the host-side checks of the disk: the
//! two status views agree, the grubenv is one GRUB reads with a sane counter, and every ext4
//! partition passes `e2fsck -fn`.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};

use crate::{run, run_output};

/// `check_boot`, run by the check boot: what the host checks after a cut.
pub(super) const CHECK_BOOT: &str = r#"
check_boot() {
    stratum status --json > "$out/boot-$n.status"; result status_rc $?
    ostree admin status > "$out/boot-$n.ostree_status" 2>&1; result ostree_rc $?
    cp /run/stratum-cut/grubenv "$out/boot-$n.grubenv_before" 2>/dev/null
    cp /boot/grubenv "$out/boot-$n.grubenv_after" 2>/dev/null
    result cmdline "$(cat /proc/cmdline)"
    result complete "$(systemctl is-active stratum-boot-complete.service)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
}
"#;

/// The ext4 partitions of a raw GPT disk image (start and size in bytes): those whose
/// superblock carries the ext4 magic (0xEF53 at byte 1080).
pub fn ext4_partitions(raw_disk: &Path) -> Result<Vec<(u64, u64)>> {
    use std::io::{Read, Seek, SeekFrom};
    let json: serde_json::Value =
        serde_json::from_str(&run_output(Command::new("sfdisk").arg("-J").arg(raw_disk))?)?;
    let table = &json["partitiontable"];
    let sector = table["sectorsize"].as_u64().unwrap_or(512);
    let mut f = fs::File::open(raw_disk)?;
    let mut found = Vec::new();
    for p in table["partitions"].as_array().context("no partitions")? {
        let (Some(start), Some(size)) = (p["start"].as_u64(), p["size"].as_u64()) else {
            continue;
        };
        let mut magic = [0u8; 2];
        f.seek(SeekFrom::Start(start * sector + 1080))?;
        f.read_exact(&mut magic)?;
        if magic == [0x53, 0xef] {
            found.push((start * sector, size * sector));
        }
    }
    Ok(found)
}

/// `e2fsck -fn` on each partition of `disk` (raw or qcow2; each is copied out through QEMU's
/// raw driver with an offset, as no loop device is used); the problems found.
pub fn fsck(disk: &Path, partitions: &[(u64, u64)], scratch: &Path) -> Result<Vec<String>> {
    let format = crate::qemu::disk_format(disk);
    let mut problems = Vec::new();
    for (i, (offset, size)) in partitions.iter().enumerate() {
        let part = scratch.join(format!("partition-{i}.img"));
        let _ = fs::remove_file(&part);
        run(Command::new("qemu-img")
            .args(["convert", "-O", "raw", "--image-opts"])
            .arg(format!(
                "driver=raw,offset={offset},size={size},file.driver={format},file.file.filename={}",
                disk.display()
            ))
            .arg(&part))?;
        let out = Command::new("e2fsck")
            .arg("-fn")
            .arg(&part)
            .output()
            .context("running e2fsck")?;
        let _ = fs::remove_file(&part);
        if !out.status.success() {
            problems.push(format!(
                "e2fsck -fn on partition at {offset}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    Ok(problems)
}

/// A deployment as `stratum status --json` and `ostree admin status` name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    pub id: String,
    pub checksum: String,
    pub serial: u32,
    pub kargs: Vec<String>,
}

/// What the check boot showed, checked for consistency.
#[derive(Debug)]
pub(super) struct Checked {
    pub(super) booted: Deployment,
    pub(super) default: Deployment,
    pub(super) deployments: usize,
    pub(super) cmdline: String,
    pub(super) grubenv_before: BTreeMap<String, String>,
}

/// The booted and default deployments of `ostree admin status` output (`* ` marks the booted
/// one; the first listed boots next), as `checksum.serial`.
pub fn ostree_status(text: &str) -> (Option<String>, Option<String>) {
    let mut booted = None;
    let mut default = None;
    for line in text.lines() {
        // Deployment lines: "* STATEROOT CSUM.SERIAL [(annotation)]" or the same after two
        // spaces; their details are indented further.
        let (marked, rest) = match (line.strip_prefix("* "), line.strip_prefix("  ")) {
            (Some(rest), _) => (true, rest),
            (None, Some(rest)) if !rest.starts_with(' ') => (false, rest),
            _ => continue,
        };
        let Some(dep) = rest.split_whitespace().nth(1) else {
            continue;
        };
        if dep.split('.').next().map(str::len) != Some(64) {
            continue;
        }
        default.get_or_insert_with(|| dep.to_string());
        if marked {
            booted = Some(dep.to_string());
        }
    }
    (booted, default)
}

/// A grubenv file read by GRUB's own `grub-editenv`, which refuses what GRUB would refuse;
/// its variables.
pub fn read_grubenv(path: &Path) -> Result<BTreeMap<String, String>> {
    let len = fs::metadata(path)
        .with_context(|| format!("{} is missing", path.display()))?
        .len();
    ensure!(len == 1024, "{} is {len} bytes, not 1024", path.display());
    let out = Command::new("grub-editenv")
        .arg(path)
        .arg("list")
        .output()
        .context("running grub-editenv (install grub-common)")?;
    ensure!(
        out.status.success(),
        "grub-editenv cannot read it: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}

/// The boot counter is sane: no fallback (the cut and check boots use at most two tries of
/// three), and during an open trial a counter no larger than the tries.
fn check_counter(env: &BTreeMap<String, String>, what: &str) -> Result<()> {
    let get = |k: &str| env.get(k).map(String::as_str).unwrap_or("");
    ensure!(
        get("stratum_fallback").is_empty(),
        "{what}: GRUB fell back: {env:?}"
    );
    if !get("stratum_trial").is_empty() && get("boot_success") != "1" {
        let tries: u32 = get("stratum_tries").parse().unwrap_or(3);
        let left: u32 = get("boot_counter")
            .parse()
            .with_context(|| format!("{what}: trial without a counter: {env:?}"))?;
        ensure!(left <= tries, "{what}: counter {left} above {tries} tries");
    }
    Ok(())
}

fn deployment(v: &serde_json::Value) -> Result<Deployment> {
    Ok(Deployment {
        id: v["id"].as_str().context("id")?.to_string(),
        checksum: v["checksum"].as_str().context("checksum")?.to_string(),
        serial: v["serial"].as_u64().context("serial")? as u32,
        kargs: v["kernel-arguments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|k| k.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// The consistency checks of a check boot's results.
pub(super) fn check_results(r: &crate::Results, boots: &[u32]) -> Result<Checked> {
    // The check boot is the last one that ran the scenario: the second, or the first when
    // the cut came before the cut boot's scenario (the blessing runs before it).
    let n = r.boots();
    ensure!(
        boots.contains(&n),
        "the check boot did not run its scenario ({n} scenario boots)"
    );
    ensure!(
        r.get(n, "status_rc") == "0",
        "stratum status failed:\n{}",
        r.get(n, "log")
    );
    let st: serde_json::Value =
        serde_json::from_str(&r.get(n, "status")).context("stratum status --json")?;
    let deps = st["deployments"].as_array().context("deployments")?;
    let booted = deployment(
        deps.iter()
            .find(|d| d["booted"] == true)
            .context("stratum status shows no booted deployment")?,
    )?;
    let default = deployment(
        deps.iter()
            .find(|d| d["default"] == true)
            .context("stratum status shows no default deployment")?,
    )?;
    ensure!(
        r.get(n, "ostree_rc") == "0",
        "ostree admin status failed: {}",
        r.get(n, "ostree_status")
    );
    let (o_booted, o_default) = ostree_status(&r.get(n, "ostree_status"));
    let name = |d: &Deployment| format!("{}.{}", d.checksum, d.serial);
    ensure!(
        o_booted.as_deref() == Some(name(&booted).as_str())
            && o_default.as_deref() == Some(name(&default).as_str()),
        "stratum status (booted {}, default {}) and ostree admin status disagree:\n{}",
        booted.id,
        default.id,
        r.get(n, "ostree_status")
    );
    let grubenv_before = read_grubenv(&r.dir.join(format!("boot-{n}.grubenv_before")))
        .context("the grubenv GRUB booted with")?;
    check_counter(&grubenv_before, "grubenv at boot")?;
    let after = read_grubenv(&r.dir.join(format!("boot-{n}.grubenv_after")))
        .context("the grubenv after boot-complete")?;
    check_counter(&after, "grubenv after boot-complete")?;
    // Blessed, unless the boot set GRUB read was the previous one while the default (the new
    // one) is on trial: that trial stays armed for the next boot.
    let pending_trial = default != booted
        && after.get("stratum_trial").map(String::as_str) == Some(default.id.as_str());
    ensure!(
        after.get("boot_success").map(String::as_str) == Some("1") || pending_trial,
        "the check boot was not blessed: {after:?}"
    );
    ensure!(
        r.get(n, "complete") == "active",
        "stratum-boot-complete.service is {}",
        r.get(n, "complete")
    );
    Ok(Checked {
        booted,
        default,
        deployments: deps.len(),
        cmdline: r.get(n, "cmdline"),
        grubenv_before,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ostree_status_marks() {
        let a = "a".repeat(64);
        let b = "b".repeat(64);
        let text = format!(
            "  default {b}.0\n    Version: 2.0\n    origin refspec: x\n* default {a}.1 (rollback)\n    Version: 1.0\n"
        );
        let (booted, default) = ostree_status(&text);
        assert_eq!(booted, Some(format!("{a}.1")));
        assert_eq!(default, Some(format!("{b}.0")));
    }

    #[test]
    fn counter_sanity() {
        let env = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let trial = [("stratum_trial", "x"), ("stratum_tries", "3")];
        assert!(check_counter(&env(&[trial[0], trial[1], ("boot_counter", "2")]), "t").is_ok());
        assert!(check_counter(&env(&[trial[0], trial[1], ("boot_counter", "7")]), "t").is_err());
        assert!(check_counter(&env(&trial), "t").is_err());
        assert!(check_counter(&env(&[trial[0], ("boot_success", "1")]), "t").is_ok());
        assert!(check_counter(&env(&[("stratum_fallback", "x")]), "t").is_err());
    }
}
