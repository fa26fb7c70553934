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

/// The SBAT metadata of an EFI binary (its `.sbat` section: CSV lines of component,
/// generation, vendor, package, version, URL), which shim checks against the revocations in
/// the firmware's `SbatLevel`. `None` when `pe` is not a PE image or has no `.sbat`. `pe` is
/// untrusted (a file on the ESP): every offset is bounds-checked.
pub fn sbat(pe: &[u8]) -> Option<Vec<SbatEntry>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(pe.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(pe.get(o..o + 4)?.try_into().ok()?));
    if pe.get(..2)? != b"MZ" {
        return None;
    }
    let nt = u32_at(0x3c)? as usize;
    if pe.get(nt..nt.checked_add(4)?)? != b"PE\0\0" {
        return None;
    }
    let coff = nt + 4;
    let sections = u16_at(coff + 2)? as usize;
    let optional = u16_at(coff + 16)? as usize;
    let table = coff + 20 + optional;
    for i in 0..sections.min(96) {
        let h = table + i * 40;
        if pe.get(h..h + 8)? != b".sbat\0\0\0" {
            continue;
        }
        let (vsize, raw_size, raw_at) = (u32_at(h + 8)?, u32_at(h + 16)?, u32_at(h + 20)?);
        let len = vsize.min(raw_size) as usize;
        let data = pe.get(raw_at as usize..(raw_at as usize).checked_add(len)?)?;
        let text = String::from_utf8_lossy(data);
        return Some(
            text.trim_end_matches('\0')
                .lines()
                .filter_map(SbatEntry::parse)
                .collect(),
        );
    }
    None
}

/// One line of SBAT metadata.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SbatEntry {
    pub component: String,
    pub generation: u32,
    pub vendor: String,
    pub package: String,
    pub version: String,
}

impl SbatEntry {
    fn parse(line: &str) -> Option<SbatEntry> {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        Some(SbatEntry {
            component: f.first()?.to_string(),
            generation: f.get(1)?.parse().ok()?,
            vendor: f.get(2).unwrap_or(&"").to_string(),
            package: f.get(3).unwrap_or(&"").to_string(),
            version: f.get(4).unwrap_or(&"").to_string(),
        })
    }
}

/// The version a binary's vendor gives it: that of its vendor's SBAT line (`shim.debian`,
/// `grub.debian`, `systemd-boot.debian`…), else of its first line with a version.
pub fn version(pe: &[u8]) -> Option<String> {
    let entries = sbat(pe)?;
    entries
        .iter()
        .find(|e| e.component.contains('.') && !e.version.is_empty())
        .or_else(|| entries.iter().find(|e| !e.version.is_empty()))
        .map(|e| e.version.clone())
}

/// One binary of the signed chain, on the ESP and in a deployment.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct FileState {
    /// Its path on the ESP.
    pub path: String,
    pub package: String,
    /// Its version on the ESP (from SBAT), `None` when missing or unreadable.
    pub esp_version: Option<String>,
    /// Its version in the deployment.
    pub image_version: Option<String>,
    /// The ESP holds exactly the deployment's binary.
    pub up_to_date: bool,
}

/// The ESP's signed chain compared with the deployment `root`'s, file by file; empty when the
/// deployment ships no signed chain for `second` (nothing to update from).
pub fn compare(esp: &Path, root: &Path, second: SecondStage) -> Result<Vec<FileState>> {
    if !missing_packages(root, second).is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for f in signed_files(second) {
        let image = read_optional(&root.join(f.image))?;
        let Some(image) = image else { continue };
        let on_esp = read_optional(&esp.join(f.esp))?;
        out.push(FileState {
            path: f.esp.to_string(),
            package: f.package.to_string(),
            esp_version: on_esp.as_deref().and_then(version),
            image_version: version(&image),
            up_to_date: on_esp.as_deref() == Some(&image[..]),
        });
    }
    Ok(out)
}

/// Replaces the ESP's signed chain by the deployment `root`'s, where they differ, each file
/// written under a temporary name, synced and renamed over the old. The second stage goes
/// first, shim after it: a power cut between them leaves the old shim starting the new
/// second stage, which it trusts (both are signed by Debian's key, and a newer second stage
/// meets any SBAT level the old shim enforces); the reverse order could leave a new shim
/// whose SBAT revocations refuse the old second stage. Returns the paths replaced.
pub fn update(esp: &Path, root: &Path, second: SecondStage) -> Result<Vec<String>> {
    let missing = missing_packages(root, second);
    if !missing.is_empty() {
        bail!(
            "the deployment does not ship the signed boot chain (missing: {})",
            missing.join(", ")
        );
    }
    let mut replaced = Vec::new();
    // The order of [`SIGNED`] is shim, second stage, MokManager.
    let files = signed_files(second);
    for f in [files[1], files[0], files[2]] {
        let src = root.join(f.image);
        let Some(new) = read_optional(&src)? else {
            continue;
        };
        let dest = esp.join(f.esp);
        if read_optional(&dest)?.as_deref() == Some(&new[..]) {
            continue;
        }
        crate::failpoint("efichain::before-file")?;
        copy_into(&src, &dest)?;
        fsutil::fsync_dir(dest.parent().context("ESP directory")?)?;
        replaced.push(f.esp.to_string());
    }
    Ok(replaced)
}

fn read_optional(path: &Path) -> Result<Option<Vec<u8>>> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Whether the ESP tree `esp` holds shim's second stage, that is the signed chain (not a GRUB
/// built on the installing host, nor systemd-boot alone).
pub fn is_signed(esp: &Path) -> bool {
    esp.join(SIGNED[1].esp).is_file()
}

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

    /// A PE image with one section, `.sbat`, holding `sbat`.
    fn pe_with_sbat(sbat: &[u8]) -> Vec<u8> {
        let mut pe = vec![0u8; 0x200];
        pe[..2].copy_from_slice(b"MZ");
        pe[0x3c..0x40].copy_from_slice(&0x80u32.to_le_bytes());
        pe[0x80..0x84].copy_from_slice(b"PE\0\0");
        pe[0x86..0x88].copy_from_slice(&1u16.to_le_bytes()); // sections
        pe[0x94..0x96].copy_from_slice(&0u16.to_le_bytes()); // optional header size
        let h = 0x84 + 20;
        pe[h..h + 8].copy_from_slice(b".sbat\0\0\0");
        let len = sbat.len() as u32;
        pe[h + 8..h + 12].copy_from_slice(&len.to_le_bytes());
        pe[h + 16..h + 20].copy_from_slice(&len.to_le_bytes());
        pe[h + 20..h + 24].copy_from_slice(&0x200u32.to_le_bytes());
        pe.extend_from_slice(sbat);
        pe
    }

    #[test]
    fn versions_come_from_sbat() {
        let pe = pe_with_sbat(
            b"sbat,1,SBAT Version,sbat,1,https://x\ngrub,4,Free Software Foundation,grub,2.12,https://x\n\
              grub.debian,4,Debian,grub2,2.12-9+deb13u4,https://x\n\0\0",
        );
        assert_eq!(version(&pe).as_deref(), Some("2.12-9+deb13u4"));
        assert_eq!(sbat(&pe).unwrap()[1].generation, 4);
        // Not a PE image, cut short, or offsets beyond the end: no version, no panic.
        assert_eq!(version(b"not a PE image"), None);
        for cut in [0x10, 0x84, 0xa0, 0x1ff, 0x210] {
            assert_eq!(version(&pe[..cut]), None, "cut at {cut:#x}");
        }
        let mut bad = pe.clone();
        bad[0x3c..0x40].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(version(&bad), None);
    }

    /// A real EFI binary: the host's systemd-boot (package systemd-boot-efi, which `make deps`
    /// installs) carries SBAT metadata with its Debian version.
    #[test]
    fn reads_the_sbat_of_a_real_binary() {
        let pe = fs::read("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
            .expect("systemd-boot-efi is installed (make deps)");
        let entries = sbat(&pe).expect("systemd-boot has an .sbat section");
        assert!(
            entries.iter().any(|e| e.component == "systemd.debian"),
            "{entries:?}"
        );
        let v = version(&pe).unwrap();
        assert!(v.chars().next().unwrap().is_ascii_digit(), "{v}");
    }

    #[test]
    fn update_replaces_the_second_stage_then_shim_and_only_what_differs() {
        let root = image_with(&SIGNED.map(|f| f.image));
        let esp = tempfile::tempdir().unwrap();
        install_signed(esp.path(), root.path(), "u").unwrap();
        assert!(compare(esp.path(), root.path(), SecondStage::Grub)
            .unwrap()
            .iter()
            .all(|f| f.up_to_date));
        assert!(update(esp.path(), root.path(), SecondStage::Grub)
            .unwrap()
            .is_empty());
        for f in SIGNED {
            fs::write(root.path().join(f.image), format!("new {}", f.image)).unwrap();
        }
        let states = compare(esp.path(), root.path(), SecondStage::Grub).unwrap();
        assert!(states.iter().all(|f| !f.up_to_date), "{states:?}");
        let replaced = update(esp.path(), root.path(), SecondStage::Grub).unwrap();
        assert_eq!(
            replaced,
            [
                "EFI/BOOT/grubx64.efi",
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/BOOT/mmx64.efi"
            ]
        );
        for f in SIGNED {
            assert_eq!(
                fs::read_to_string(esp.path().join(f.esp)).unwrap(),
                format!("new {}", f.image)
            );
        }
        // No temporary file is left beside them.
        let names: Vec<String> = fs::read_dir(esp.path().join("EFI/BOOT"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
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
