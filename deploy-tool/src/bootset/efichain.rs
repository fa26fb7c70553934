//! What the firmware starts: the EFI binaries on the EFI system partition.
//!
//! For GRUB, two chains, chosen at install time:
//!
//! - **Signed** (the default): Debian's signed binaries, taken from the deployment being
//!   installed, at the removable-media path the firmware tries by itself:
//!
//!   | ESP path | from the image | verified by |
//!   |---|---|---|
//!   | `EFI/BOOT/BOOTX64.EFI` | `/usr/lib/shim/shimx64.efi.signed` (`shim-signed`) | the firmware's db (Microsoft's UEFI CA) |
//!   | `EFI/BOOT/grubx64.efi` | `/usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed` | shim (Debian's key, built into shim) |
//!   | `EFI/BOOT/mmx64.efi` | `/usr/lib/shim/mmx64.efi.signed` (MokManager) | shim |
//!   | `EFI/debian/grub.cfg` | the stub ([`ESP_STUB`]) | nobody |
//!
//!   shim loads `grubx64.efi` from its own directory. Debian's signed GRUB has its modules
//!   built in (it loads none from disk under Secure Boot) and its prefix fixed at
//!   `/EFI/debian`, where it reads `grub.cfg`: the stub, which finds the boot filesystem by
//!   UUID and hands over to the generated menu of the current boot generation
//!   (`/loader/grub.cfg`). The kernels that menu names are verified by shim too. shim's
//!   fallback (`fbx64.efi`) is left out: without a `BOOTX64.CSV` it would reset the machine
//!   in a loop.
//! - **Unsigned** (`install to-disk --unsigned-grub`): GRUB built on the installing host by
//!   `grub-mkimage`, the stub embedded, alone at `EFI/BOOT/BOOTX64.EFI`. It boots only with
//!   Secure Boot off.
//!
//! Both chains read the same boot set; the generated menu and the boot-counting script use
//! only commands built into Debian's signed GRUB.
//!
//! For systemd-boot, an image that ships Debian's signed systemd-boot
//! (`systemd-boot-efi-amd64-signed`, Debian 13 and later) gets the same signed chain with
//! systemd-boot as the second stage, under the name shim loads (`grubx64.efi`); systemd-boot
//! then has the kernels it loads verified by shim. Otherwise systemd-boot alone is the
//! removable-media loader, which boots only with Secure Boot off
//! ([`super::esp::install_loader`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cmd, fsutil};

/// The stub GRUB reads from the ESP, with `@BOOT_UUID@` for the boot filesystem's UUID.
pub const ESP_STUB: &str = include_str!("../../../grub/esp.cfg.in");

/// The stub embedded in the unsigned build: it only sets the prefix, from which GRUB's
/// normal mode then reads `grub.cfg` by itself.
const EMBEDDED_STUB: &str = include_str!("../../../grub/stub.cfg.in");

/// The second stage shim starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecondStage {
    Grub,
    SystemdBoot,
}

/// Debian's signed systemd-boot, relative to a root.
pub const SIGNED_SYSTEMD_BOOT: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed";

/// The signed GRUB chain, by each binary's path in the image and on the ESP.
pub const SIGNED: [SignedFile; 3] = [
    SignedFile {
        image: "usr/lib/shim/shimx64.efi.signed",
        esp: "EFI/BOOT/BOOTX64.EFI",
        package: "shim-signed",
        required: true,
    },
    SignedFile {
        image: "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
        esp: "EFI/BOOT/grubx64.efi",
        package: "grub-efi-amd64-signed",
        required: true,
    },
    SignedFile {
        image: "usr/lib/shim/mmx64.efi.signed",
        esp: "EFI/BOOT/mmx64.efi",
        package: "shim-helpers-amd64-signed",
        required: false,
    },
];

/// Where the signed GRUB reads its configuration on the ESP (its built-in prefix).
pub const ESP_STUB_PATH: &str = "EFI/debian/grub.cfg";

/// One signed binary of the chain.
#[derive(Debug, Clone, Copy)]
pub struct SignedFile {
    /// Its path in a deployment, relative to the root.
    pub image: &'static str,
    /// Its path on the ESP, relative to the partition's root.
    pub esp: &'static str,
    /// The Debian package that ships it.
    pub package: &'static str,
    /// Whether the chain boots without it (MokManager only runs when a MOK request waits).
    pub required: bool,
}

/// The stub for the boot filesystem `boot_uuid`.
pub fn stub(boot_uuid: &str) -> String {
    ESP_STUB.replace("@BOOT_UUID@", boot_uuid)
}

/// The signed chain with `second` as the second stage.
pub fn signed_files(second: SecondStage) -> [SignedFile; 3] {
    let mut files = SIGNED;
    if second == SecondStage::SystemdBoot {
        files[1] = SignedFile {
            image: SIGNED_SYSTEMD_BOOT,
            package: "systemd-boot-efi-amd64-signed",
            ..files[1]
        };
    }
    files
}

/// The packages of the signed chain with `second` that the deployment `root` lacks.
pub fn missing_packages(root: &Path, second: SecondStage) -> Vec<&'static str> {
    signed_files(second)
        .iter()
        .filter(|f| f.required && !root.join(f.image).is_file())
        .map(|f| f.package)
        .collect()
}

/// Writes the signed GRUB chain from the deployment `root` into the ESP tree `esp`, its stub
/// pointing at the boot filesystem `boot_uuid`. Fails, naming the packages, when the image
/// does not ship the binaries.
pub fn install_signed(esp: &Path, root: &Path, boot_uuid: &str) -> Result<()> {
    let missing = missing_packages(root, SecondStage::Grub);
    if !missing.is_empty() {
        bail!(
            "the image does not ship Debian's signed boot chain (missing: {}): add those \
             packages to the image, or install with --unsigned-grub for a GRUB built on this \
             host that boots only with Secure Boot off",
            missing.join(", ")
        );
    }
    copy_signed(esp, root, SecondStage::Grub)?;
    let stub_path = esp.join(ESP_STUB_PATH);
    create_parent(&stub_path)?;
    fsutil::atomic_write(&stub_path, stub(boot_uuid).as_bytes(), 0o644)
}

/// Copies the signed chain with `second` from the deployment `root` into the ESP tree `esp`
/// (the optional binaries the image lacks are left out).
pub fn copy_signed(esp: &Path, root: &Path, second: SecondStage) -> Result<()> {
    for f in signed_files(second) {
        let src = root.join(f.image);
        if src.is_file() {
            copy_into(&src, &esp.join(f.esp))?;
        }
    }
    Ok(())
}

/// Builds GRUB's EFI binary on this host with the stub (finding the boot filesystem by UUID)
/// embedded, and writes it as `EFI/BOOT/BOOTX64.EFI` in the ESP tree `esp`.
pub fn install_unsigned(esp: &Path, boot_uuid: &str, workdir: &Path) -> Result<()> {
    let moddir = Path::new("/usr/lib/grub/x86_64-efi");
    if !moddir.is_dir() {
        bail!(
            "{} is missing: install GRUB's EFI modules (Debian: apt-get install \
             grub-efi-amd64-bin)",
            moddir.display()
        );
    }
    // GRUB's rescue parser, which runs the embedded config, knows no comments.
    let stub: String = EMBEDDED_STUB
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .map(|l| l.replace("@BOOT_UUID@", boot_uuid) + "\n")
        .collect();
    let stub_path = workdir.join("grub-stub.cfg");
    fs::write(&stub_path, stub)?;
    let out = esp.join("EFI/BOOT/BOOTX64.EFI");
    create_parent(&out)?;
    cmd::run(
        Command::new("grub-mkimage")
            .args(["-O", "x86_64-efi", "-p", "/EFI/BOOT", "-d"])
            .arg(moddir)
            .arg("-c")
            .arg(&stub_path)
            .arg("-o")
            .arg(&out)
            .args(UNSIGNED_MODULES),
    )
    .context("building the GRUB EFI binary")
}

/// The modules of the unsigned build: what the stub, the generated menu and the counting
/// script use, all of which Debian's signed GRUB has built in too.
const UNSIGNED_MODULES: &[&str] = &[
    "part_gpt",
    "fat",
    "ext2",
    "normal",
    "configfile",
    "search",
    "search_fs_uuid",
    "linux",
    "echo",
    "test",
    "loadenv",
    "all_video",
    "gzio",
    "serial",
    "terminal",
    "sleep",
    "reboot",
    "halt",
    "true",
];

/// Copies `src` to `dest` on the ESP durably, creating its directory.
pub fn copy_into(src: &Path, dest: &Path) -> Result<()> {
    let dir = create_parent(dest)?;
    fsutil::copy_file_durable(src, dest)?;
    fsutil::fsync_dir(&dir)
}

fn create_parent(path: &Path) -> Result<PathBuf> {
    let dir = path.parent().context("a path on the ESP")?.to_path_buf();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image_with(files: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for f in files {
            let p = root.path().join(f);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(&p, format!("binary {f}")).unwrap();
        }
        root
    }

    #[test]
    fn signed_chain_comes_from_the_image() {
        let root = image_with(&SIGNED.map(|f| f.image));
        let esp = tempfile::tempdir().unwrap();
        install_signed(esp.path(), root.path(), "1234-uuid").unwrap();
        for f in SIGNED {
            assert_eq!(
                fs::read_to_string(esp.path().join(f.esp)).unwrap(),
                format!("binary {}", f.image)
            );
        }
        let stub = fs::read_to_string(esp.path().join(ESP_STUB_PATH)).unwrap();
        assert!(stub.contains("--set=root 1234-uuid"), "{stub}");
        assert!(stub.contains("configfile"), "{stub}");
        // No fallback: without BOOTX64.CSV it would reset the machine in a loop.
        assert!(!esp.path().join("EFI/BOOT/fbx64.efi").exists());
    }

    #[test]
    fn systemd_boot_is_shims_second_stage_when_signed() {
        let mut files: Vec<&str> = SIGNED.iter().map(|f| f.image).collect();
        let root = image_with(&files);
        assert_eq!(
            missing_packages(root.path(), SecondStage::SystemdBoot),
            ["systemd-boot-efi-amd64-signed"]
        );
        files.push(SIGNED_SYSTEMD_BOOT);
        let root = image_with(&files);
        assert!(missing_packages(root.path(), SecondStage::SystemdBoot).is_empty());
        let esp = tempfile::tempdir().unwrap();
        crate::bootset::esp::install_loader(esp.path(), root.path()).unwrap();
        let read = |p: &str| fs::read_to_string(esp.path().join(p)).unwrap();
        assert_eq!(
            read("EFI/BOOT/BOOTX64.EFI"),
            format!("binary {}", SIGNED[0].image)
        );
        assert_eq!(
            read("EFI/BOOT/grubx64.efi"),
            format!("binary {SIGNED_SYSTEMD_BOOT}")
        );
        assert!(read("loader/loader.conf").contains("timeout"));
        assert!(!esp.path().join(ESP_STUB_PATH).exists());
    }

    #[test]
    fn an_image_without_the_chain_is_refused_naming_the_packages() {
        // MokManager is optional, shim and GRUB are not.
        let root = image_with(&[SIGNED[0].image]);
        let esp = tempfile::tempdir().unwrap();
        let e = format!(
            "{:#}",
            install_signed(esp.path(), root.path(), "u").unwrap_err()
        );
        assert!(e.contains("grub-efi-amd64-signed"), "{e}");
        assert!(!e.contains("shim-signed,"), "{e}");
        assert!(e.contains("--unsigned-grub"), "{e}");
        assert!(fs::read_dir(esp.path()).unwrap().next().is_none());
        let root = image_with(&[SIGNED[0].image, SIGNED[1].image]);
        install_signed(esp.path(), root.path(), "u").unwrap();
        assert!(!esp.path().join(SIGNED[2].esp).exists());
    }
}
