//! The boot parameters prepare-root takes from the kernel command line, with defaults applied
//! and bad values turned into warnings (a typo in a karg must not stop the boot).

use crate::cmdline::Cmdline;
use crate::probe::RootSpec;
use crate::*;
use serde::Serialize;

/// What to do after a fatal error (`stratum.emergency=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Emergency {
    /// Reboot, so the bootloader counts the failed try and can fall back (default).
    Reboot,
    /// Power off (`stratum.emergency=halt` or `poweroff`), e.g. for test VMs.
    Halt,
}

/// Parsed boot parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootParams {
    /// `root=` as written.
    pub root: Option<String>,
    /// `root=` parsed.
    pub root_spec: Option<RootSpec>,
    /// `rootfstype=`.
    pub rootfstype: Option<String>,
    /// `rootflags=`.
    pub rootflags: Option<String>,
    /// Mount the physical root read-only (`ro`; the last of `ro`/`rw` wins; default rw).
    pub read_only: bool,
    /// `ostree=`.
    pub ostree: Option<String>,
    /// `init=`.
    pub init: Option<String>,
    /// Words after `--`.
    pub init_args: Vec<String>,
    /// `stratum.root-timeout=` seconds.
    pub root_timeout_secs: u64,
    /// `stratum.reboot-delay=` seconds.
    pub reboot_delay_secs: u64,
    /// `stratum.emergency=`.
    pub emergency: Emergency,
    /// `stratum.debug`.
    pub debug: bool,
    /// `stratum.sysroot-rw`.
    pub sysroot_rw: bool,
    /// Values that could not be understood.
    pub warnings: Vec<String>,
}

impl BootParams {
    /// Extracts the boot parameters from a parsed command line.
    pub fn from_cmdline(c: &Cmdline) -> BootParams {
        let mut warnings = Vec::new();
        let mut secs = |key: &str, default: u64| match c.get(key) {
            None => default,
            Some(v) => v.trim_end_matches('s').parse().unwrap_or_else(|_| {
                warnings.push(format!(
                    "{key}={v}: not a number of seconds, using {default}"
                ));
                default
            }),
        };
        let root_timeout_secs = secs(KARG_ROOT_TIMEOUT, DEFAULT_ROOT_TIMEOUT_SECS);
        let reboot_delay_secs = secs(KARG_REBOOT_DELAY, DEFAULT_REBOOT_DELAY_SECS);
        let emergency = match c.get(KARG_EMERGENCY) {
            None | Some("reboot") => Emergency::Reboot,
            Some("halt" | "poweroff") => Emergency::Halt,
            Some(v) => {
                warnings.push(format!("{KARG_EMERGENCY}={v}: unknown, using reboot"));
                Emergency::Reboot
            }
        };
        let read_only = c
            .iter()
            .filter(|p| p.value.is_none() && (p.key == "ro" || p.key == "rw"))
            .last()
            .is_some_and(|p| p.key == "ro");
        let nonempty = |k: &str| c.get(k).filter(|v| !v.is_empty()).map(str::to_string);
        let root = nonempty("root");
        BootParams {
            root_spec: root.as_deref().map(RootSpec::parse),
            root,
            rootfstype: nonempty("rootfstype"),
            rootflags: nonempty("rootflags"),
            read_only,
            ostree: nonempty(KARG_OSTREE),
            init: nonempty("init"),
            init_args: c.init_args().to_vec(),
            root_timeout_secs,
            reboot_delay_secs,
            emergency,
            debug: c.flag(KARG_DEBUG),
            sysroot_rw: c.flag(KARG_SYSROOT_RW),
            warnings,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let p = BootParams::from_cmdline(&Cmdline::parse("quiet\n"));
        assert_eq!(p.root, None);
        assert!(!p.read_only);
        assert_eq!(p.root_timeout_secs, DEFAULT_ROOT_TIMEOUT_SECS);
        assert_eq!(p.reboot_delay_secs, DEFAULT_REBOOT_DELAY_SECS);
        assert_eq!(p.emergency, Emergency::Reboot);
        assert!(!p.debug && !p.sysroot_rw && p.warnings.is_empty());
    }

    #[test]
    fn full() {
        let c = Cmdline::parse(
            "root=LABEL=root ro rw ro rootflags=noatime rootfstype=ext4 \
             ostree=/ostree/boot.1/os/abc/0 init=/usr/lib/systemd/systemd stratum.debug \
             stratum.root_timeout=5 stratum.reboot-delay=0 stratum.emergency=halt \
             stratum.sysroot-rw -- --unit=rescue.target",
        );
        let p = BootParams::from_cmdline(&c);
        assert_eq!(p.root_spec, Some(RootSpec::Label("root".into())));
        assert!(p.read_only);
        assert_eq!(p.rootflags.as_deref(), Some("noatime"));
        assert_eq!(p.rootfstype.as_deref(), Some("ext4"));
        assert_eq!(p.ostree.as_deref(), Some("/ostree/boot.1/os/abc/0"));
        assert_eq!(p.init.as_deref(), Some("/usr/lib/systemd/systemd"));
        assert_eq!(p.init_args, vec!["--unit=rescue.target"]);
        assert_eq!((p.root_timeout_secs, p.reboot_delay_secs), (5, 0));
        assert_eq!(p.emergency, Emergency::Halt);
        assert!(p.debug && p.sysroot_rw);
        assert!(!BootParams::from_cmdline(&Cmdline::parse("ro rw")).read_only);
    }

    #[test]
    fn bad_values_warn() {
        let c = Cmdline::parse("stratum.root-timeout=soon stratum.emergency=shell");
        let p = BootParams::from_cmdline(&c);
        assert_eq!(p.root_timeout_secs, DEFAULT_ROOT_TIMEOUT_SECS);
        assert_eq!(p.emergency, Emergency::Reboot);
        assert_eq!(p.warnings.len(), 2);
    }
}
