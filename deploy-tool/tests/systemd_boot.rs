//! Host integration tests of a sysroot installed with `--bootloader systemd-boot`: the ESP
//! (a directory here) after an install and an upgrade, and after a crash at every step of a
//! boot-set write. What systemd-boot would boot is worked out as it does: the entries sorted
//! with spent ones last, then by version, newest first.

use crate::common;

use std::fs;
use std::process::Command;

use common::*;

fn install(env: &Env) {
    fs::create_dir_all(env.sysroot.join("boot/efi")).unwrap();
    let url = format!("src=file://{}", env.src.display());
    ok(env.install_to_filesystem([
        "--bootloader",
        "systemd-boot",
        "--karg",
        "root=UUID=1234",
        "--ref",
        "os/x",
        "--remote",
        &url,
        "--no-sign-verify",
    ]));
}

fn esp(env: &Env) -> std::path::PathBuf {
    env.sysroot.join("boot/efi")
}

/// The entry files on the ESP, sorted by name.
fn entry_files(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(esp(env).join("loader/entries"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn value<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
}

/// Whether the entry `text` passes `arg` to the kernel.
fn has_karg(text: &str, arg: &str) -> bool {
    value(text, "options").is_some_and(|o| o.split(' ').any(|a| a == arg))
}

/// The entry systemd-boot boots: entries whose tries are spent (`+0`) last, then the highest
/// `version` (dot-separated numbers). Returns its file name and text.
fn booting_entry(env: &Env) -> (String, String) {
    let mut entries: Vec<(bool, Vec<u64>, String, String)> = entry_files(env)
        .into_iter()
        .filter(|f| f.ends_with(".conf") && !f.starts_with('.'))
        .map(|f| {
            let text = fs::read_to_string(esp(env).join("loader/entries").join(&f)).unwrap();
            let spent = f.contains("+0");
            let version = value(&text, "version")
                .unwrap()
                .split('.')
                .map(|p| p.parse().unwrap())
                .collect();
            (spent, version, f, text)
        })
        .collect();
    entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
    let (_, _, f, text) = entries.into_iter().next().expect("no entry on the ESP");
    (f, text)
}

/// Fails unless the entry systemd-boot boots names files that are on the ESP and a bootlink
/// to a complete deployment; returns the deployment's checksum.
fn assert_bootable(env: &Env, what: &str) -> String {
    let (file, text) = booting_entry(env);
    let mut files = vec![value(&text, "linux").unwrap()];
    files.extend(text.lines().filter_map(|l| l.strip_prefix("initrd ")));
    for f in files {
        assert!(
            esp(env).join(f.trim_start_matches('/')).is_file(),
            "{what}: {file} names {f}, which is not on the ESP"
        );
    }
    let options = value(&text, "options").unwrap();
    let bootlink = options
        .split(' ')
        .find_map(|a| a.strip_prefix("ostree="))
        .unwrap();
    let dep = fs::canonicalize(env.sysroot.join(bootlink.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{what}: {file}'s bootlink {bootlink}: {e}"));
    assert!(
        dep.join("usr/bin/version").is_file(),
        "{what}: {file} boots {}, which is not complete",
        dep.display()
    );
    let name = dep.file_name().unwrap().to_string_lossy().into_owned();
    name.split('.').next().unwrap().to_string()
}

/// Directories of boot files on the ESP.
fn file_dirs(env: &Env) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(esp(env).join("stratum"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Fails unless the ESP holds exactly the boot set of `status` (one entry per deployment,
/// the files they name and no others, nothing left under a temporary name).
fn assert_clean(env: &Env, what: &str) {
    let entries = entry_files(env);
    let n = env.checksums().len();
    assert_eq!(entries.len(), n, "{what}: entries {entries:?}");
    let mut named: Vec<String> = entries
        .iter()
        .flat_map(|f| {
            let text = fs::read_to_string(esp(env).join("loader/entries").join(f)).unwrap();
            text.lines()
                .filter_map(|l| {
                    l.strip_prefix("linux ")
                        .or_else(|| l.strip_prefix("initrd "))
                })
                .map(|p| p.split('/').nth(2).unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    named.sort();
    named.dedup();
    assert_eq!(file_dirs(env), named, "{what}: boot file directories");
}

#[test]
fn install_and_upgrade_write_the_esp() {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[]);
    install(&env);
    let esp = esp(&env);
    for f in [
        "EFI/BOOT/BOOTX64.EFI",
        "EFI/systemd/systemd-bootx64.efi",
        "loader/loader.conf",
    ] {
        assert!(esp.join(f).is_file(), "{f} is missing from the ESP");
    }
    // The first deployment is not on trial: nothing to fall back to.
    assert_eq!(entry_files(&env), vec!["stratum-1-0.conf"]);
    assert_eq!(assert_bootable(&env, "install"), v1);
    let status = ok(env.stratum(&["status", "-v"]));
    assert!(status.contains("Bootloader: systemd-boot"), "{status}");
    assert_eq!(env.status()["bootloader"], "systemd-boot");
    let config = fs::read_to_string(env.sysroot.join("ostree/repo/config")).unwrap();
    assert!(
        config.contains("[sysroot]\nbootloader=none"),
        "OSTree's tools would write a GRUB config: {config}"
    );
    // No grub.cfg: nothing reads it.
    assert!(!env.sysroot.join("boot/loader/grub.cfg").exists());

    // v2's image adds a default kernel argument (kargs.d): it reaches v2's ESP entry.
    let v2 = env.compose_fake_os(
        "2",
        &[],
        &[(
            "usr/lib/stratum/kargs.d/10-image.toml",
            "kargs = [\"image.default=1\"]\n",
        )],
    );
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()]);
    let (_, text) = booting_entry(&env);
    assert!(
        has_karg(&text, "image.default=1"),
        "kargs.d of v2 not on its entry: {text}"
    );
    // The new default on trial with boot-tries (3) tries, the old one plain.
    assert_eq!(
        entry_files(&env),
        vec!["stratum-2-0+3.conf", "stratum-2-1.conf"]
    );
    assert_eq!(assert_bootable(&env, "upgrade"), v2);
    assert_clean(&env, "upgrade");
    // OSTree's tools read the record on /boot as before.
    let out = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(&env.sysroot)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains(&v2) && text.contains(&v1),
        "ostree admin status: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // systemd-boot spent every try of v2: the old default boots.
    fs::rename(
        esp.join("loader/entries/stratum-2-0+3.conf"),
        esp.join("loader/entries/stratum-2-0+0-3.conf"),
    )
    .unwrap();
    assert_eq!(assert_bootable(&env, "spent tries"), v1);

    // The rollback deployment removed: its boot files go too.
    ok(env.stratum(&["cleanup", "-r"]));
    assert_eq!(env.checksums(), vec![v2.clone()]);
    assert_clean(&env, "cleanup -r");
}

/// A crash (abort) at every step of an upgrade's boot-set write, and of a cleanup that
/// removes boot files: the ESP always boots a complete deployment, and the next command
/// leaves exactly its boot set.
#[test]
fn crash_at_every_step_leaves_a_bootable_esp() {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[]);
    install(&env);
    let v2 = env.compose_fake_os("2", &[], &[]);
    let pristine = env.dir.path().join("pristine");
    cp(&env.sysroot, &pristine);
    for point in [
        "bootloader::after-boot-files",
        "bootloader::after-bootlinks",
        "bootloader::after-generation",
        "bootloader::before-swap",
        "esp::after-files",
        "esp::after-entries",
        "bootloader::after-swap",
        "esp::after-old-entries",
        "ops::after-boot-set",
    ] {
        cp(&pristine, &env.sysroot);
        env.crash_at(&["upgrade", "--apply-now"], point);
        let booting = assert_bootable(&env, point);
        assert!(booting == v1 || booting == v2, "{point}: boots {booting}");
        ok(env.stratum(&["upgrade", "--apply-now"]));
        assert_eq!(env.checksums(), vec![v2.clone(), v1.clone()], "{point}");
        assert_eq!(assert_bootable(&env, point), v2, "{point}: retry");
        assert_clean(&env, point);
    }
    for point in ["esp::after-old-entries", "esp::after-old-files"] {
        cp(&pristine, &env.sysroot);
        ok(env.stratum(&["upgrade", "--apply-now"]));
        env.crash_at(&["cleanup", "-r"], point);
        assert_eq!(assert_bootable(&env, point), v2, "{point}");
        ok(env.stratum(&["cleanup", "-r"]));
        assert_clean(&env, point);
    }
}

/// Kernel arguments and `initramfs-etc` overlays reach the ESP's entries, the overlay copied
/// beside the boot files, and go again.
#[test]
fn kargs_and_initramfs_etc_reach_the_esp() {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[]);
    install(&env);
    fs::write(
        env.dep_serial(&v1, 0).join("etc/stratum-test.conf"),
        "secret=1\n",
    )
    .unwrap();
    ok(env.stratum(&["kargs", "--append", "stratumtest=esp"]));
    ok(env.stratum(&["initramfs-etc", "--track", "/etc/stratum-test.conf"]));
    let (file, text) = booting_entry(&env);
    assert!(has_karg(&text, "stratumtest=esp"), "{file}: {text}");
    let initrds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("initrd "))
        .collect();
    assert_eq!(initrds.len(), 2, "{file}: {text}");
    let overlay = initrds[1]
        .strip_prefix("/stratum/initramfs-overlays/")
        .unwrap_or_else(|| panic!("{file}: overlay {}", initrds[1]));
    assert_eq!(
        fs::read(esp(&env).join(initrds[1].trim_start_matches('/'))).unwrap(),
        fs::read(
            env.sysroot
                .join("boot/ostree/initramfs-overlays")
                .join(overlay)
        )
        .unwrap(),
        "the ESP's overlay is not /boot's"
    );
    assert_eq!(assert_bootable(&env, "initramfs-etc"), v1);
    assert_clean(&env, "initramfs-etc");
    ok(env.stratum(&["initramfs-etc", "--untrack", "/etc/stratum-test.conf"]));
    ok(env.stratum(&["kargs", "--delete", "stratumtest=esp"]));
    let (_, text) = booting_entry(&env);
    assert_eq!(text.matches("initrd ").count(), 1, "{text}");
    assert!(!text.contains("stratumtest"), "{text}");
    assert_clean(&env, "untracked");
}
