//! `stratum install`: a new sysroot from a commit, in a directory or as a bootable disk image.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub mod disk;

use crate::bootset::bootloader::{Bootloader, ESP_MOUNT};
use crate::bootset::efichain;
use crate::deployment::{self, NewDeployment};
use crate::progress::{self, Phase, Unit};
use crate::state::origin::Origin;
use crate::state::State;
use crate::sysroot::Sysroot;

/// What to install.
#[derive(Debug, Clone)]
pub struct InstallOptions {
    pub repo: PathBuf,
    pub refname: String,
    pub stateroot: String,
    /// Kernel arguments besides `ostree=` (and, for disks, `root=`/`rw`, added first).
    pub kargs: Vec<String>,
    /// A remote the installed system follows: the origin becomes `NAME:REF`.
    pub remote: Option<FollowRemote>,
    pub bootloader: Bootloader,
    /// With GRUB, build its EFI binary on this host (`grub-mkimage`, unsigned) instead of
    /// taking shim and Debian's signed GRUB from the image.
    pub unsigned_grub: bool,
}

/// A remote an installed system follows for updates.
#[derive(Debug, Clone)]
pub struct FollowRemote {
    pub name: String,
    pub url: String,
    pub trust: RemoteTrust,
    /// The remote's summary must be signed by the same keys ([`RemoteTrust::GpgKeys`]).
    pub verify_summary: bool,
}

/// How a followed remote's commits are verified. There is no default: an installer chooses
/// a key, or chooses to accept unsigned commits.
#[derive(Debug, Clone)]
pub enum RemoteTrust {
    /// Commits must carry a valid GPG signature by a key of this keyring file.
    GpgKeys(PathBuf),
    /// Commits are not signature-checked.
    Unverified,
}

/// The result of an install.
#[derive(Debug, Clone, serde::Serialize)]
pub struct InstallResult {
    pub commit: String,
    pub deployment: String,
    pub bootcsum: String,
    pub kargs: Vec<String>,
    pub bootloader: Bootloader,
}

/// Writes a complete sysroot into the directory `dest` (its `boot/` holds the boot set):
/// repository with the commit, stateroot, one deployment, bootloader entries. `fstab` lines
/// are written into the deployment's `/etc/fstab`. With systemd-boot, the ESP is
/// `dest/boot/efi` and gets systemd-boot itself besides the entries.
pub fn to_filesystem(dest: &Path, opts: &InstallOptions, fstab: &str) -> Result<InstallResult> {
    check_inputs(opts)?;
    let sysroot = Sysroot::new(dest);
    if opts.bootloader == Bootloader::SystemdBoot && !dest.join(ESP_MOUNT).is_dir() {
        bail!(
            "{} does not exist: mount the EFI system partition there (systemd-boot reads its              entries from it), or install with --bootloader grub",
            dest.join(ESP_MOUNT).display()
        );
    }
    sysroot.init(&opts.stateroot)?;
    let repo = crate::repo::open_or_create(&sysroot.repo_path(), ostree::RepoMode::Bare)?;
    opts.bootloader.record(&repo)?;
    let commit = crate::repo::pull_local(&repo, &opts.repo, &opts.refname)?;
    let info = crate::repo::commit_info(&repo, &commit)?;
    let refspec = match &opts.remote {
        Some(FollowRemote {
            name,
            url,
            trust,
            verify_summary,
        }) => {
            let keys = match trust {
                RemoteTrust::GpgKeys(k) => Some(k.as_path()),
                RemoteTrust::Unverified => None,
            };
            let verify = crate::remote::Verify {
                commits: keys.is_some(),
                summary: *verify_summary,
            };
            crate::remote::add(&repo, name, url, verify, keys)?;
            // The commit is known under the remote's ref only, so later pulls move it and
            // pruning can drop what the remote no longer offers.
            repo.set_ref_immediate(
                Some(name),
                &opts.refname,
                Some(&commit),
                ostree::gio::Cancellable::NONE,
            )?;
            repo.set_ref_immediate(None, &opts.refname, None, ostree::gio::Cancellable::NONE)?;
            format!("{name}:{}", opts.refname)
        }
        None => opts.refname.clone(),
    };
    eprintln!(
        "Deploying {commit} ({})",
        info.version.as_deref().unwrap_or("no version")
    );
    let st = State::read(&sysroot)?;
    if !st.deployments.is_empty() {
        bail!(
            "{} already holds deployments; install into an empty directory (on an installed \
             system, use `stratum deploy` or `stratum rebase`)",
            dest.display()
        );
    }
    let append_fstab = |root: &Path| -> Result<()> {
        if fstab.is_empty() {
            return Ok(());
        }
        let path = root.join("etc/fstab");
        let mut text = fs::read_to_string(&path).unwrap_or_default();
        text.push_str(fstab);
        crate::fsutil::atomic_write(&path, text.as_bytes(), 0o644)
    };
    // The installer's arguments, then the image's defaults (kargs.d): the same pipeline as
    // every later deployment.
    let outcome = deployment::deploy(
        &st,
        NewDeployment {
            stateroot: &opts.stateroot,
            commit: &commit,
            origin: Origin::for_refspec(&refspec),
            kargs: Some(opts.kargs.clone()),
            stage: false,
            customize: Some(&append_fstab),
        },
    )?;
    let dep = outcome.new.context("the new deployment")?;
    if let Some(esp) = opts.bootloader.esp(&sysroot)? {
        crate::bootset::esp::install_loader(&esp, &sysroot.deployment_root(&dep))?;
    }
    Ok(InstallResult {
        commit,
        deployment: dep.relpath().to_string_lossy().into_owned(),
        bootcsum: dep.bootcsum,
        kargs: dep.kargs,
        bootloader: opts.bootloader,
    })
}

/// Checks what an install reads besides the image before anything is written, so that a
/// mistake in them leaves the target as it was: the source repository holds the ref, and the
/// followed remote's key file imports (it is only imported after the image is copied).
fn check_inputs(opts: &InstallOptions) -> Result<()> {
    let src = crate::repo::open(&opts.repo)?;
    if !crate::repo::has_ref(&src, &opts.refname)
        .with_context(|| format!("reading ref {} in {}", opts.refname, opts.repo.display()))?
    {
        bail!(
            "{} has no ref {}: give one that `ostree refs --repo {}` lists",
            opts.repo.display(),
            opts.refname,
            opts.repo.display()
        );
    }
    if let Some(FollowRemote {
        trust: RemoteTrust::GpgKeys(keys),
        ..
    }) = &opts.remote
    {
        crate::remote::check_gpg_keys(keys).context("--remote-gpg-import")?;
    }
    Ok(())
}

/// Sizes of the fixed partitions. With systemd-boot the ESP holds the boot files too (a
/// kernel and an initramfs per boot checksum).
const ESP_SIZE_GRUB: u64 = 64 << 20;
const ESP_SIZE_SYSTEMD_BOOT: u64 = 512 << 20;
const BOOT_SIZE: u64 = 512 << 20;

/// The scratch directory of an install without `--workdir`, removed when dropped. The
/// deployments staged in it are immutable (`chattr +i`, as on a real sysroot): the flag is
/// cleared first, or the removal would stop at them and leave the directory behind.
struct Scratch(tempfile::TempDir);

impl Drop for Scratch {
    fn drop(&mut self) {
        let deploy = self.0.path().join("sysroot/ostree/deploy");
        for os in fs::read_dir(deploy).into_iter().flatten().flatten() {
            for d in fs::read_dir(os.path().join("deploy"))
                .into_iter()
                .flatten()
                .flatten()
            {
                let _ = crate::fsutil::set_immutable(&d.path(), false);
            }
        }
        // The TempDir removes the rest when it drops, after this.
    }
}
/// Writes a bootable GPT disk image (UEFI): ESP with GRUB, ext4 `/boot`, ext4 root holding
/// the sysroot. The image appears under its name only when complete. With `workdir`, the
/// staged sysroot is kept there for inspection.
pub fn to_disk(
    image: &Path,
    size: u64,
    opts: &InstallOptions,
    workdir: Option<&Path>,
) -> Result<InstallResult> {
    check_inputs(opts)?;
    let tmp;
    let work = match workdir {
        Some(w) => {
            crate::fsutil::remove_any(w)?;
            fs::create_dir_all(w).with_context(|| format!("creating {}", w.display()))?;
            w.to_path_buf()
        }
        None => {
            let parent = image
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            tmp = Scratch(
                tempfile::Builder::new()
                    .prefix(".stratum-install-")
                    .tempdir_in(parent)?,
            );
            tmp.0.path().to_path_buf()
        }
    };
    let (esp_uuid, boot_uuid, root_uuid) = (
        disk::random_uuid()?,
        disk::random_uuid()?,
        disk::random_uuid()?,
    );
    let esp_id = esp_uuid.replace('-', "")[..8].to_uppercase();
    let esp_fs_uuid = format!("{}-{}", &esp_id[..4], &esp_id[4..]);
    let mut kargs = vec![format!("root=UUID={root_uuid}"), "rw".to_string()];
    // A kernel panic reboots, so GRUB counts the failed try of a deployment on trial.
    if !opts.kargs.iter().any(|k| k.starts_with("panic=")) {
        kargs.push("panic=10".to_string());
    }
    kargs.extend(opts.kargs.iter().cloned());
    let fstab = format!(
        "# Written by stratum install to-disk.\n\
         UUID={boot_uuid} /boot ext4 defaults,nodev,nosuid 0 2\n\
         UUID={esp_fs_uuid} /boot/efi vfat umask=0077,shortname=winnt,nofail 0 2\n"
    );
    let sysroot_dir = work.join("sysroot");
    // The ESP's contents are staged at its mount point, and become its FAT image.
    fs::create_dir_all(sysroot_dir.join(ESP_MOUNT))?;
    let result = to_filesystem(
        &sysroot_dir,
        &InstallOptions {
            kargs,
            ..opts.clone()
        },
        &fstab,
    )?;
    let phase = Phase::start("Making the filesystems", Unit::Time);
    phase.meter().set_message("ESP");
    let esp_tree = sysroot_dir.join(ESP_MOUNT);
    let esp_size = match opts.bootloader {
        Bootloader::Grub if opts.unsigned_grub => {
            efichain::install_unsigned(&esp_tree, &boot_uuid, &work)?;
            ESP_SIZE_GRUB
        }
        Bootloader::Grub => {
            let root = sysroot_dir.join(&result.deployment);
            efichain::install_signed(&esp_tree, &root, &boot_uuid)?;
            ESP_SIZE_GRUB
        }
        Bootloader::SystemdBoot => ESP_SIZE_SYSTEMD_BOOT,
    };
    let esp_img = work.join("esp.img");
    disk::mkfs_esp(&esp_img, esp_size, &esp_id, &esp_tree)?;
    phase.meter().set_message("/boot");
    // /boot gets an empty efi/, the ESP's mount point: its tree is set aside meanwhile.
    let boot_img = work.join("boot.img");
    let esp_aside = work.join("esp-aside");
    fs::rename(&esp_tree, &esp_aside)?;
    fs::create_dir(&esp_tree)?;
    let made = disk::mkfs_ext4(
        &boot_img,
        BOOT_SIZE,
        "boot",
        &boot_uuid,
        &sysroot_dir.join("boot"),
    );
    fs::remove_dir(&esp_tree)?;
    fs::rename(&esp_aside, &esp_tree)?;
    made?;
    // The root filesystem gets an empty /boot: the boot partition is mounted there. The boot
    // tree is set aside while the root image is made, then put back so the staged sysroot
    // stays whole for inspection.
    let root_size = size
        .checked_sub(esp_size + BOOT_SIZE + (2 << 20))
        .with_context(|| format!("disk size {size} is too small"))?;
    let aside = work.join("boot-aside");
    fs::rename(sysroot_dir.join("boot"), &aside)?;
    fs::create_dir(sysroot_dir.join("boot"))?;
    let root_img = work.join("root.img");
    phase.meter().set_message("root");
    let made = disk::mkfs_ext4(&root_img, root_size, "root", &root_uuid, &sysroot_dir);
    fs::remove_dir(sysroot_dir.join("boot"))?;
    fs::rename(&aside, sysroot_dir.join("boot"))?;
    made?;
    phase.finish("ESP, /boot and root");

    let partial = image.with_extension("partial");
    let parts = [
        disk::Partition {
            name: "EFI-SYSTEM",
            type_guid: disk::ESP_TYPE,
            size: esp_size,
            image: esp_img,
        },
        disk::Partition {
            name: "boot",
            // systemd-boot would look for entries on an XBOOTLDR partition, which must be
            // FAT for it; this one is ext4 and holds the record only.
            type_guid: match opts.bootloader {
                Bootloader::Grub => disk::XBOOTLDR_TYPE,
                Bootloader::SystemdBoot => disk::LINUX_DATA_TYPE,
            },
            size: BOOT_SIZE,
            image: boot_img,
        },
        disk::Partition {
            name: "root",
            type_guid: disk::ROOT_TYPE,
            size: root_size,
            image: root_img,
        },
    ];
    let partuuids = [
        disk::random_uuid()?,
        disk::random_uuid()?,
        disk::random_uuid()?,
    ];
    let phase = Phase::start(format!("Writing {}", image.display()), Unit::Bytes);
    let copied = disk::assemble(&partial, size, &parts, &partuuids, &phase.meter())?;
    phase.finish(&format!(
        "{} of filesystems on a {} disk",
        progress::bytes(copied),
        progress::bytes(size)
    ));
    for p in &parts {
        let _ = fs::remove_file(&p.image);
    }
    fs::rename(&partial, image)
        .with_context(|| format!("renaming {} to {}", partial.display(), image.display()))?;
    Ok(result)
}
