//! `stratum bootloader`: the signed boot chain on the EFI system partition (shim and Debian's
//! signed GRUB or systemd-boot), compared with the deployments' and updated from the
//! default one.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Subcommand;
use serde::Serialize;

use super::Globals;
use crate::bootset::bootloader::Bootloader;
use crate::bootset::efichain::{self, FileState, SecondStage};
use crate::bootset::efivars::SecureBoot;
use crate::state::State;
use crate::sysroot::{Deployment, Sysroot};

/// Show or update the boot chain on the EFI system partition
#[derive(Debug, Subcommand)]
pub enum BootloaderCmd {
    /// Show the versions of shim and GRUB (or systemd-boot) on the ESP, in the booted and in
    /// the default deployment, and whether the ESP is up to date with the default.
    ///
    /// Versions are read from each binary's SBAT metadata, the data shim checks against the
    /// firmware's revocations.
    Status(BootloaderOpts),
    /// Replace the ESP's shim and GRUB (or systemd-boot) with the default deployment's.
    ///
    /// Each binary is written under a temporary name, synced and renamed over the old one;
    /// GRUB (or systemd-boot) goes first and shim after it, so a power cut at any moment
    /// leaves a chain the firmware boots. Nothing is written when the ESP is up to date.
    Update(BootloaderOpts),
}

#[derive(Debug, clap::Args)]
pub struct BootloaderOpts {
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `bootloader status --json` prints (and `update --json`, after the update).
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BootloaderReport {
    /// `grub` or `systemd-boot`.
    pub bootloader: Bootloader,
    /// Where the ESP is.
    pub esp: PathBuf,
    /// The ESP holds shim and a signed second stage (else a GRUB built on the installing
    /// host, or systemd-boot alone, which Stratum does not update).
    pub signed: bool,
    /// The firmware's Secure Boot state, on the booted system.
    pub secure_boot: Option<SecureBoot>,
    /// The ESP compared with the default deployment's binaries.
    pub default: Option<Against>,
    /// The ESP compared with the booted deployment's binaries.
    pub booted: Option<Against>,
    /// The ESP holds exactly the default deployment's binaries.
    pub up_to_date: bool,
    /// What `update` replaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub updated: Vec<String>,
}

/// The ESP compared with one deployment.
#[derive(Debug, Serialize)]
pub struct Against {
    /// `STATEROOT:CHECKSUM.SERIAL`.
    pub deployment: String,
    /// One per binary of the deployment's chain; empty when it ships none.
    pub files: Vec<FileState>,
}

pub fn run(g: &Globals, c: &BootloaderCmd) -> Result<i32> {
    let session = g.session();
    let (opts, update) = match c {
        BootloaderCmd::Status(o) => (o, false),
        BootloaderCmd::Update(o) => (o, true),
    };
    let _lock = if update { Some(session.begin()?) } else { None };
    let st = session.state()?;
    let sysroot = &session.sysroot;
    let bootloader = Bootloader::of(sysroot)?;
    let esp = crate::bootset::bootloader::mounted_esp(sysroot)?;
    let second = match bootloader {
        Bootloader::Grub => SecondStage::Grub,
        Bootloader::SystemdBoot => SecondStage::SystemdBoot,
    };
    let mut updated = Vec::new();
    if update {
        if !efichain::is_signed(&esp) {
            bail!(
                "{} does not hold shim and a signed second stage (installed with \
                 --unsigned-grub, or systemd-boot without Debian's signed build): Stratum \
                 updates only the signed chain",
                esp.display()
            );
        }
        let Some(d) = st.default_deployment() else {
            bail!("no deployments: nothing to update the bootloader from");
        };
        let root = sysroot.deployment_root(d);
        updated = efichain::update(&esp, &root, second)?;
        if updated.is_empty() {
            eprintln!("The bootloader on {} is up to date.", esp.display());
        } else {
            eprintln!(
                "Updated {} on {} from {}:{}",
                updated.join(", "),
                esp.display(),
                d.stateroot,
                d.name()
            );
        }
    }
    let mut report = read(sysroot, &st, &esp, bootloader, second)?;
    report.updated = updated;
    if opts.json {
        super::print_json(&report)?;
    } else if !update {
        print!("{}", render(&report));
    }
    Ok(0)
}

/// The ESP's chain compared with the default and the booted deployments.
fn read(
    sysroot: &Sysroot,
    st: &State,
    esp: &Path,
    bootloader: Bootloader,
    second: SecondStage,
) -> Result<BootloaderReport> {
    let against = |d: Option<&Deployment>| -> Result<Option<Against>> {
        let Some(d) = d else { return Ok(None) };
        Ok(Some(Against {
            deployment: format!("{}:{}", d.stateroot, d.name()),
            files: efichain::compare(esp, &sysroot.deployment_root(d), second)?,
        }))
    };
    let default = against(st.default_deployment())?;
    let booted = against(st.booted.as_ref())?;
    let signed = efichain::is_signed(esp);
    let up_to_date = signed
        && default
            .as_ref()
            .is_some_and(|a| !a.files.is_empty() && a.files.iter().all(|f| f.up_to_date));
    Ok(BootloaderReport {
        bootloader,
        esp: esp.to_path_buf(),
        signed,
        secure_boot: sysroot
            .is_booted_system()
            .then(SecureBoot::of_running_system),
        default,
        booted,
        up_to_date,
        updated: Vec::new(),
    })
}

/// The report for people.
pub fn render(r: &BootloaderReport) -> String {
    let mut s = String::new();
    let chain = match (r.signed, r.bootloader) {
        (true, Bootloader::Grub) => "shim + Debian's signed GRUB",
        (true, Bootloader::SystemdBoot) => "shim + Debian's signed systemd-boot",
        (false, Bootloader::Grub) => "GRUB built on the installing host (unsigned)",
        (false, Bootloader::SystemdBoot) => "systemd-boot (unsigned)",
    };
    let _ = writeln!(
        s,
        "Bootloader: {} ({chain}) on {}",
        r.bootloader,
        r.esp.display()
    );
    if let Some(sb) = r.secure_boot {
        let _ = writeln!(s, "Secure Boot: {}", sb.as_str());
    }
    let v = |o: &Option<String>| o.clone().unwrap_or_else(|| "-".into());
    for (label, a) in [("default", &r.default), ("booted", &r.booted)] {
        let Some(a) = a else { continue };
        if a.files.is_empty() {
            let _ = writeln!(s, "{label} {}: ships no signed boot chain", a.deployment);
            continue;
        }
        let _ = writeln!(s, "{label} {}:", a.deployment);
        for f in &a.files {
            let _ = writeln!(
                s,
                "  {:<22} {:<30} ESP {:<22} deployment {:<22} {}",
                f.path,
                f.package,
                v(&f.esp_version),
                v(&f.image_version),
                if f.up_to_date { "same" } else { "differs" }
            );
        }
    }
    if r.signed && !r.up_to_date && r.default.as_ref().is_some_and(|a| !a.files.is_empty()) {
        s.push_str("The ESP differs from the default deployment: `stratum bootloader update` installs the default's.\n");
    } else if r.up_to_date {
        s.push_str("The ESP is up to date with the default deployment.\n");
    }
    s
}
