//! Stratum's configuration: `stratum.toml` and drop-ins.
//!
//! Read, in this order, from `/usr/lib/stratum` (the image's defaults), `/run/stratum` and
//! `/etc/stratum` (the admin's): `stratum.toml`, then `stratum.d/*.toml` sorted by file name.
//! Later files override earlier ones key by key. Unknown keys are errors naming the file, so
//! a typo never silently turns a safety feature off.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

pub mod window;

pub use window::RebootWindow;

/// What to do when a required health check fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Reboot, so the bootloader counts the failed try (and eventually falls back).
    #[default]
    Reboot,
    /// Only report the failure.
    None,
}

/// What the automatic-update timer does (rpm-ostree's `AutomaticUpdatePolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Policy {
    /// Nothing: automatic updates are off.
    #[default]
    None,
    /// Look for an update (commit metadata only) and remember what was found.
    Check,
    /// Download and stage the update; it is applied at the next reboot, whoever makes it.
    Stage,
    /// Stage, then reboot into it while a reboot window is open.
    Apply,
}

impl Policy {
    pub fn as_str(self) -> &'static str {
        match self {
            Policy::None => "none",
            Policy::Check => "check",
            Policy::Stage => "stage",
            Policy::Apply => "apply",
        }
    }
}

/// The `[automatic-update]` table.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
pub struct AutomaticUpdate {
    pub policy: Policy,
    /// When `apply` may reboot (UTC); none means at any time.
    #[serde(rename = "reboot-windows")]
    pub reboot_windows: Vec<RebootWindow>,
}

/// The `[network]` table: how long a fetch from a remote may stall before it fails, for every
/// way Stratum fetches (see `net.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Network {
    /// Seconds a connection to a remote may take to open.
    pub connect_timeout: u64,
    /// Bytes per second under which a transfer counts as stalled...
    pub low_speed_limit: u32,
    /// ...when it stays under for this many seconds.
    pub low_speed_time: u64,
}

impl Default for Network {
    /// librepo's limits, which libostree adopted in 2023.7: under 1000 bytes/s for 30 s.
    fn default() -> Self {
        Network {
            connect_timeout: 30,
            low_speed_limit: 1000,
            low_speed_time: 30,
        }
    }
}

/// The effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Boots a new default deployment gets before GRUB falls back (0 = no boot counting).
    pub boot_tries: u32,
    /// Action on a failed required health check.
    pub on_failure: OnFailure,
    /// Seconds each health check may run.
    pub health_check_timeout: u64,
    /// What `stratum-automatic-update.timer` does.
    pub automatic_update: AutomaticUpdate,
    /// Limits of fetches from remotes.
    pub network: Network,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            boot_tries: 3,
            on_failure: OnFailure::Reboot,
            health_check_timeout: 60,
            automatic_update: AutomaticUpdate::default(),
            network: Network::default(),
        }
    }
}

/// One file's settings; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct Fragment {
    boot_tries: Option<u32>,
    on_failure: Option<OnFailure>,
    health_check_timeout: Option<u64>,
    automatic_update: Option<AutomaticUpdateFragment>,
    network: Option<NetworkFragment>,
}

/// One file's `[network]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct NetworkFragment {
    connect_timeout: Option<u64>,
    low_speed_limit: Option<u32>,
    low_speed_time: Option<u64>,
}

/// One file's `[automatic-update]`; a file's `reboot-window` list replaces earlier ones.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct AutomaticUpdateFragment {
    policy: Option<Policy>,
    reboot_window: Option<Vec<RebootWindow>>,
}

/// The largest number of tries the generated GRUB menu can count (it has no arithmetic and
/// spells out each step).
pub const MAX_BOOT_TRIES: u32 = 9;

impl Config {
    /// Loads the configuration of the OS whose root is `root` (`/` on a booted system).
    pub fn load(root: &Path) -> Result<Config> {
        let mut c = Config::default();
        for file in files(root)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            c.apply(&file.display().to_string(), &text)?;
        }
        Ok(c)
    }

    /// Applies one file's settings (`text`, named `name` in errors) over these.
    pub fn apply(&mut self, name: &str, text: &str) -> Result<()> {
        let f: Fragment = toml::from_str(text)
            .map_err(crate::excerpt::error)
            .with_context(|| format!("parsing {name}"))?;
        if let Some(t) = f.boot_tries {
            if t > MAX_BOOT_TRIES {
                anyhow::bail!("{name}: boot-tries = {t}: at most {MAX_BOOT_TRIES} are supported");
            }
            self.boot_tries = t;
        }
        if let Some(o) = f.on_failure {
            self.on_failure = o;
        }
        if let Some(t) = f.health_check_timeout {
            self.health_check_timeout = t;
        }
        if let Some(a) = f.automatic_update {
            if let Some(p) = a.policy {
                self.automatic_update.policy = p;
            }
            if let Some(w) = a.reboot_window {
                for x in &w {
                    x.check().map_err(|e| {
                        anyhow::anyhow!("{name}: [[automatic-update.reboot-window]]: {e}")
                    })?;
                }
                self.automatic_update.reboot_windows = w;
            }
        }
        if let Some(n) = f.network {
            // Zero would mean "wait forever", which is what these keys exist to prevent.
            let positive = |key: &str, v: Option<u64>| match v {
                Some(0) => Err(anyhow::anyhow!(
                    "{name}: [network] {key} = 0: give at least 1"
                )),
                v => Ok(v),
            };
            if let Some(t) = positive("connect-timeout", n.connect_timeout)? {
                self.network.connect_timeout = t;
            }
            if let Some(l) = positive("low-speed-limit", n.low_speed_limit.map(u64::from))? {
                self.network.low_speed_limit = l as u32;
            }
            if let Some(t) = positive("low-speed-time", n.low_speed_time)? {
                self.network.low_speed_time = t;
            }
        }
        Ok(())
    }
}

fn files(root: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for dir in ["usr/lib/stratum", "run/stratum", "etc/stratum"] {
        let d = root.join(dir);
        let main = d.join("stratum.toml");
        if main.is_file() {
            out.push(main);
        }
        let dropins = d.join("stratum.d");
        if let Ok(rd) = std::fs::read_dir(&dropins) {
            let mut v: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                .collect();
            v.sort();
            out.extend(v);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_then_drop_ins_in_order() {
        let d = tempfile::tempdir().unwrap();
        let r = d.path();
        assert_eq!(Config::load(r).unwrap(), Config::default());
        std::fs::create_dir_all(r.join("usr/lib/stratum")).unwrap();
        std::fs::create_dir_all(r.join("etc/stratum/stratum.d")).unwrap();
        std::fs::write(
            r.join("usr/lib/stratum/stratum.toml"),
            "boot-tries = 5\non-failure = \"none\"\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/stratum/stratum.d/20-b.toml"),
            "boot-tries = 2\n",
        )
        .unwrap();
        std::fs::write(
            r.join("etc/stratum/stratum.d/10-a.toml"),
            "boot-tries = 7\nhealth-check-timeout = 5\n",
        )
        .unwrap();
        let c = Config::load(r).unwrap();
        assert_eq!(
            c,
            Config {
                boot_tries: 2,
                on_failure: OnFailure::None,
                health_check_timeout: 5,
                automatic_update: AutomaticUpdate::default(),
                network: Network::default(),
            }
        );
    }

    #[test]
    fn network_limits_merge_key_by_key_and_refuse_zero() {
        let mut c = Config::default();
        c.apply(
            "a.toml",
            "[network]\nlow-speed-time = 5\nlow-speed-limit = 10\n",
        )
        .unwrap();
        c.apply("b.toml", "[network]\nlow-speed-limit = 20\n")
            .unwrap();
        assert_eq!(
            c.network,
            Network {
                connect_timeout: 30,
                low_speed_limit: 20,
                low_speed_time: 5,
            }
        );
        for bad in [
            "[network]\nlow-speed-time = 0\n",
            "[network]\nlow-speed-limit = 0\n",
            "[network]\nconnect-timeout = 0\n",
            "[network]\ntimeout = 5\n",
        ] {
            let e = format!("{:#}", c.apply("bad.toml", bad).unwrap_err());
            assert!(e.contains("bad.toml"), "{e}");
        }
        assert_eq!(c.network.low_speed_time, 5);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_file() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("etc/stratum")).unwrap();
        std::fs::write(d.path().join("etc/stratum/stratum.toml"), "boot-trys = 1\n").unwrap();
        let e = format!("{:#}", Config::load(d.path()).unwrap_err());
        assert!(
            e.contains("etc/stratum/stratum.toml") && e.contains("boot-trys"),
            "{e}"
        );
        std::fs::write(
            d.path().join("etc/stratum/stratum.toml"),
            "boot-tries = 12\n",
        )
        .unwrap();
        assert!(Config::load(d.path()).is_err());
    }

    #[test]
    fn automatic_update_merges_key_by_key() {
        let mut c = Config::default();
        c.apply(
            "a.toml",
            "[automatic-update]\npolicy = \"apply\"\n\n\
             [[automatic-update.reboot-window]]\ndays = [\"Sat\", \"Sun\"]\n\
             start-time = \"23:30\"\nlength-minutes = 60\n",
        )
        .unwrap();
        assert_eq!(c.automatic_update.policy, Policy::Apply);
        assert_eq!(c.automatic_update.reboot_windows.len(), 1);
        // A later file that sets only the policy keeps the windows.
        c.apply("b.toml", "[automatic-update]\npolicy = \"stage\"\n")
            .unwrap();
        assert_eq!(c.automatic_update.policy, Policy::Stage);
        assert_eq!(c.automatic_update.reboot_windows.len(), 1);
        for bad in [
            "[automatic-update]\npolicy = \"sometimes\"\n",
            "[automatic-update]\npolcy = \"stage\"\n",
            "[[automatic-update.reboot-window]]\ndays = [\"Sat\"]\nstart-time = \"25:00\"\nlength-minutes = 5\n",
            "[[automatic-update.reboot-window]]\ndays = []\nstart-time = \"01:00\"\nlength-minutes = 5\n",
        ] {
            let e = format!("{:#}", c.apply("bad.toml", bad).unwrap_err());
            assert!(e.contains("bad.toml"), "{e}");
        }
        assert_eq!(c.automatic_update.policy, Policy::Stage);
    }
}
