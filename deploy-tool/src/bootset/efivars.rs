//! What the running firmware says about itself, from `efivarfs`.

use std::path::Path;

/// The global-variable vendor GUID of the UEFI specification.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";

/// The firmware's Secure Boot state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecureBoot {
    /// Enforced: the firmware runs only signed EFI binaries.
    Enabled,
    /// Off (or in setup mode).
    Disabled,
    /// No UEFI variables to read: legacy BIOS boot, or efivarfs not mounted.
    Unknown,
}

impl SecureBoot {
    /// The state of the running machine (`/sys/firmware/efi/efivars`).
    pub fn of_running_system() -> SecureBoot {
        SecureBoot::read(Path::new("/sys/firmware/efi/efivars"))
    }

    /// The state recorded in the efivarfs at `efivars`. A variable's file holds 4 bytes of
    /// attributes, then the value: `SecureBoot` is one byte, 1 when enforced.
    pub fn read(efivars: &Path) -> SecureBoot {
        match std::fs::read(efivars.join(format!("SecureBoot-{GLOBAL}"))) {
            Ok(v) if v.len() == 5 && v[4] == 1 => SecureBoot::Enabled,
            Ok(v) if v.len() == 5 => SecureBoot::Disabled,
            _ => SecureBoot::Unknown,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SecureBoot::Enabled => "enabled",
            SecureBoot::Disabled => "disabled",
            SecureBoot::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_value_after_the_attributes() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(SecureBoot::read(d.path()), SecureBoot::Unknown);
        let var = d.path().join(format!("SecureBoot-{GLOBAL}"));
        std::fs::write(&var, [6, 0, 0, 0, 1]).unwrap();
        assert_eq!(SecureBoot::read(d.path()), SecureBoot::Enabled);
        std::fs::write(&var, [6, 0, 0, 0, 0]).unwrap();
        assert_eq!(SecureBoot::read(d.path()), SecureBoot::Disabled);
        std::fs::write(&var, [6, 0, 0]).unwrap();
        assert_eq!(SecureBoot::read(d.path()), SecureBoot::Unknown);
    }
}
