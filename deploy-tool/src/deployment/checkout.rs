//! Creating a deployment: a hardlink checkout of a commit with its own `/etc` and origin.
//!
//! The checkout is made under a temporary name and renamed into place only when complete, so
//! a crash never leaves a half-built deployment under a name the boot set could refer to.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};

use crate::fsutil;
use crate::progress::{self, Unit};
use crate::state::origin::Origin;
use crate::sysroot::{Deployment, Sysroot};

/// What to check out.
#[derive(Debug, Clone)]
pub struct Checkout<'a> {
    pub stateroot: &'a str,
    pub commit: &'a str,
    pub origin: &'a Origin,
    pub kargs: Vec<String>,
}

/// Checks out `nd.commit` from the sysroot's repository as a new deployment directory and
/// returns it (not yet in the boot set: that is the bootloader writer's job).
pub fn create(sysroot: &Sysroot, repo: &ostree::Repo, nd: &Checkout) -> Result<Deployment> {
    let deploy_dir = sysroot.stateroot_dir(nd.stateroot).join("deploy");
    fs::create_dir_all(&deploy_dir)
        .with_context(|| format!("creating {}", deploy_dir.display()))?;
    remove_partial_checkouts(&deploy_dir)?;
    let serial = next_serial(&deploy_dir, nd.commit)?;
    let name = format!("{}.{serial}", nd.commit);
    let partial = deploy_dir.join(format!(".{name}.partial"));
    let prepared = prepare(sysroot, repo, nd, &partial);
    let (kver, bootcsum) = match prepared {
        Ok(k) => k,
        Err(e) => {
            // Never referenced: an error takes it away at once (a crash leaves it to the
            // next checkout, which removes `.partial` directories first).
            let _ = fsutil::remove_tree_force(&partial);
            return Err(e);
        }
    };
    fsutil::atomic_write(
        &deploy_dir.join(format!("{name}.origin")),
        nd.origin.to_text().as_bytes(),
        0o644,
    )?;
    // One syncfs makes the whole checkout durable before it appears under its real name.
    crate::bootset::durability::syncfs(&partial)?;
    fs::rename(&partial, deploy_dir.join(&name))
        .with_context(|| format!("renaming {} into place", partial.display()))?;
    fsutil::fsync_dir(&deploy_dir)?;
    crate::failpoint("deploy::after-rename")?;
    Ok(Deployment {
        stateroot: nd.stateroot.to_string(),
        checksum: nd.commit.to_string(),
        serial,
        bootcsum,
        bootserial: 0,
        kver,
        kargs: nd.kargs.clone(),
        overlay_initrds: Vec::new(),
    })
}

/// Checks out the commit at `partial`, checks that it is a bootable image, and gives it its
/// own `/etc`; returns its kernel version and boot checksum.
fn prepare(
    sysroot: &Sysroot,
    repo: &ostree::Repo,
    nd: &Checkout,
    partial: &Path,
) -> Result<(String, String)> {
    let phase = progress::Phase::start(format!("Checking out {}", nd.commit), Unit::Time);
    crate::repo::checkout(repo, nd.commit, partial)?;
    phase.finish("done");
    crate::failpoint("deploy::after-checkout")?;
    let usr_etc = partial.join("usr/etc");
    if !usr_etc.is_dir() {
        bail!(
            "commit {} has no /usr/etc; was it made with `stratum compose`?",
            nd.commit
        );
    }
    let kver = find_kver(partial)?;
    crate::bootset::entry::validate_kver(&kver).with_context(|| format!("commit {}", nd.commit))?;
    let bootcsum = boot_checksum(&partial.join("usr/lib/modules").join(&kver))?;
    // /etc starts as a copy of the image's defaults; it must not share inodes with the
    // repository, or an edit in /etc would corrupt the repository's objects.
    fsutil::copy_tree(&usr_etc, &partial.join("etc"))?;
    seed_var(sysroot, nd.stateroot, partial)?;
    Ok((kver, bootcsum))
}

/// A new stateroot's `/var` starts as a copy of the image's (`/usr/share/factory/var`), as
/// an installer leaves it, so the first boot's tmpfiles.d has nothing left to copy. A `/var`
/// with anything in it belongs to the machine and is never touched. The copy is made beside
/// it and renamed over the empty directory, so `/var` is either empty or complete.
fn seed_var(sysroot: &Sysroot, stateroot: &str, checkout: &Path) -> Result<()> {
    let sr = sysroot.stateroot_dir(stateroot);
    let var = sr.join("var");
    let factory = checkout.join(crate::compose::layout::FACTORY_VAR);
    let empty = match fs::read_dir(&var) {
        Ok(mut rd) => rd.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e).with_context(|| format!("reading {}", var.display())),
    };
    if !empty || !factory.is_dir() {
        return Ok(());
    }
    let tmp = sr.join(".var.seed");
    fsutil::remove_any(&tmp)?;
    fsutil::copy_tree(&factory, &tmp)?;
    fs::rename(&tmp, &var).with_context(|| format!("putting {} in place", var.display()))?;
    Ok(())
}

/// Removes checkouts a crash left behind (they were never part of a boot set).
fn remove_partial_checkouts(deploy_dir: &Path) -> Result<()> {
    for e in fs::read_dir(deploy_dir)? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".partial") {
            tracing::info!("removing interrupted checkout {name}");
            fsutil::remove_any(&e.path())?;
        }
    }
    Ok(())
}

fn next_serial(deploy_dir: &Path, commit: &str) -> Result<u32> {
    let mut serial = 0;
    while deploy_dir.join(format!("{commit}.{serial}")).exists() {
        serial += 1;
    }
    Ok(serial)
}

/// The kernel version of a deployment: its image's only kernel, which `compose` put at
/// `usr/lib/modules/<kver>/vmlinuz` (found by the same rules `compose` uses).
pub fn find_kver(root: &Path) -> Result<String> {
    let k = crate::compose::layout::select_kernel(root, None)?;
    if k.vmlinuz != Path::new("usr/lib/modules").join(&k.kver).join("vmlinuz") {
        bail!(
            "the kernel of {} is at {}, not usr/lib/modules/{}/vmlinuz; was the image made \
             with `stratum compose`?",
            root.display(),
            k.vmlinuz.display(),
            k.kver
        );
    }
    Ok(k.kver)
}

/// OSTree's boot checksum: SHA-256 over the kernel and then the initramfs.
pub fn boot_checksum(moddir: &Path) -> Result<String> {
    fsutil::sha256_files(&[&moddir.join("vmlinuz"), &moddir.join("initramfs.img")])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_checksum_matches_ostree() {
        // `ostree admin deploy` of a tree whose vmlinuz is "kernel\n" and initramfs.img is
        // "initrd\n" puts its boot files in default-ff6d610a….
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("vmlinuz"), "kernel\n").unwrap();
        fs::write(d.path().join("initramfs.img"), "initrd\n").unwrap();
        assert_eq!(
            boot_checksum(d.path()).unwrap(),
            "ff6d610a0f0d84602d9e2878eb3a16a850f2d31faa2f14108006723892a17899"
        );
    }
}
