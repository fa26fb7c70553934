//! Hostile packages: `.deb` files made by hand (not by `dpkg-deb --build`, which would refuse
//! most of them) that try to reach the host during layering. Each is offered as a local file,
//! with `--dry-run`, and (where apt can index it) from the signed APT repository. Whatever
//! happens, nothing outside the scratch tree may change: a canary directory the packages aim
//! at stays empty, the deployments stay as they were, and a refusal names the package.
//! Scripts that do run find no capability, environment or `/proc/sys` of the host's.

use crate::common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::debian::{make_repo, Debian};
use common::ok;

/// A package as an attacker writes it: any control text, any members, any data tree.
struct Hostile<'a> {
    /// The file name stem, and the name apt knows it by.
    name: &'a str,
    /// The whole `control` file.
    control: String,
    /// Extra control members: (name, contents); scripts are made executable.
    members: Vec<(&'a str, String)>,
    /// Extra control members that are symlinks: (name, target).
    links: Vec<(&'a str, &'a str)>,
    /// Makes the data tree in the given directory.
    data: Box<dyn Fn(&Path) + 'a>,
}

fn control(name: &str) -> String {
    format!(
        "Package: {name}\nVersion: 1.0\nArchitecture: amd64\nMaintainer: Tests \
         <t@example.invalid>\nDescription: hostile test package\n"
    )
}

fn script(body: &str) -> String {
    format!("#!/bin/sh\n{body}\n")
}

/// Builds `h` with tar and ar; returns the `.deb`.
fn build(dir: &Path, h: &Hostile) -> PathBuf {
    let work = dir.join(format!("build-{}", h.name));
    let _ = fs::remove_dir_all(&work);
    let (ctl, data) = (work.join("control"), work.join("data"));
    fs::create_dir_all(&ctl).unwrap();
    fs::create_dir_all(&data).unwrap();
    fs::write(ctl.join("control"), &h.control).unwrap();
    for (n, c) in &h.members {
        fs::write(ctl.join(n), c).unwrap();
        fs::set_permissions(ctl.join(n), fs::Permissions::from_mode(0o755)).unwrap();
    }
    for (n, target) in &h.links {
        symlink(target, ctl.join(n)).unwrap();
    }
    (h.data)(&data);
    let tar = |from: &Path, to: &str| {
        ok(Command::new("tar")
            .args(["--owner=0", "--group=0", "-czf"])
            .arg(work.join(to))
            .arg("-C")
            .arg(from)
            .arg(".")
            .output()
            .unwrap())
    };
    tar(&ctl, "control.tar.gz");
    tar(&data, "data.tar.gz");
    fs::write(work.join("debian-binary"), "2.0\n").unwrap();
    let out = dir.join(format!("{}_1.0_amd64.deb", h.name));
    let _ = fs::remove_file(&out);
    ok(Command::new("ar")
        .arg("rcD")
        .arg(&out)
        .args(["debian-binary", "control.tar.gz", "data.tar.gz"])
        .current_dir(&work)
        .output()
        .unwrap());
    out
}

/// Every file below `dir` (the canary), as text.
fn contents(dir: &Path) -> Vec<String> {
    let out = Command::new("find")
        .arg(dir)
        .arg("-mindepth")
        .arg("1")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn mkdirs(root: &Path, d: &str) -> PathBuf {
    let p = root.join(d);
    fs::create_dir_all(&p).unwrap();
    p
}

/// The packages that must be refused, each aimed at `canary`; (package, what the refusal
/// says, whether apt can index it).
fn refused(canary: &Path) -> Vec<(Hostile<'static>, &'static str, bool)> {
    let c = canary.to_path_buf();
    let c2 = c.clone();
    let c3 = c.clone();
    // Enough `../` to reach `/` from any directory of the scratch tree (`..` of `/` is `/`).
    let rel_escape = format!(
        "{}{}",
        "../".repeat(32),
        c.display().to_string().trim_start_matches('/')
    );
    vec![
        // (1) /usr/bin a symlink to a host directory, and a file in /bin that the merged-/usr
        // relocation moves into it.
        (
            Hostile {
                name: "h-usrbin",
                control: control("h-usrbin"),
                members: vec![],
                links: vec![],
                data: Box::new(move |d| {
                    fs::write(mkdirs(d, "bin").join("evil"), "x").unwrap();
                    symlink(&c, mkdirs(d, "usr").join("bin")).unwrap();
                }),
            },
            "symlink",
            true,
        ),
        // (2) dpkg's info directory a symlink to the host, and a control member named `sh`.
        (
            Hostile {
                name: "h-info",
                control: control("h-info"),
                members: vec![("sh", script("echo owned"))],
                links: vec![],
                data: Box::new(move |d| {
                    symlink(&c2, mkdirs(d, "usr/lib/sysimage/dpkg").join("info")).unwrap();
                }),
            },
            "dpkg",
            true,
        ),
        // (3) a Package field walking out of the info directory.
        (
            Hostile {
                name: "h-name",
                control: control(&format!("{rel_escape}/pkg")),
                members: vec![("postinst", script("true"))],
                links: vec![],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/share/h-name").join("f"), "x").unwrap();
                }),
            },
            "invalid package name",
            false,
        ),
        // (4) a trigger interest walking out of the triggers directory.
        (
            Hostile {
                name: "h-trigger",
                control: control("h-trigger"),
                members: vec![("triggers", format!("interest {rel_escape}/cron\n"))],
                links: vec![],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/share/h-trigger").join("f"), "x").unwrap();
                }),
            },
            "trigger",
            true,
        ),
        // (5) a preinst that replaces /usr/etc with a symlink to the host, so that the next
        // script's /etc would be the host's directory.
        (
            Hostile {
                name: "h-etc",
                control: control("h-etc"),
                members: vec![
                    (
                        "preinst",
                        script(&format!(
                            "rm -rf /usr/etc && ln -s {} /usr/etc",
                            c3.display()
                        )),
                    ),
                    ("postinst", script("echo owned > /etc/owned")),
                ],
                links: vec![],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/share/h-etc").join("f"), "x").unwrap();
                }),
            },
            "usr/etc",
            true,
        ),
        // (6) a postinst that replaces the image's kernel.
        (
            Hostile {
                name: "h-kernel",
                control: control("h-kernel"),
                members: vec![(
                    "postinst",
                    script("for k in /usr/lib/modules/*/vmlinuz; do echo evil > \"$k\"; done"),
                )],
                links: vec![],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/share/h-kernel").join("f"), "x").unwrap();
                }),
            },
            "kernel",
            true,
        ),
        // (7) a package that ships a kernel of its own beside the image's.
        (
            Hostile {
                name: "h-vmlinuz",
                control: control("h-vmlinuz"),
                members: vec![],
                links: vec![],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/lib/modules/9.9.9-evil").join("vmlinuz"), "k")
                        .unwrap();
                }),
            },
            "kernel",
            true,
        ),
        // (8) a control member that is a symlink to a host file.
        (
            Hostile {
                name: "h-member",
                control: control("h-member"),
                members: vec![],
                links: vec![("md5sums", "/etc/hostname")],
                data: Box::new(|d| {
                    fs::write(mkdirs(d, "usr/share/h-member").join("f"), "x").unwrap();
                }),
            },
            "regular file",
            true,
        ),
    ]
}

/// What went wrong with one package offered one way, if anything.
fn breaches(
    d: &Debian,
    canary: &Path,
    before: &[String],
    name: &str,
    says: &str,
    args: &[&str],
    must_fail: bool,
) -> Vec<String> {
    let out = d.env.stratum(args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let how = args.join(" ");
    let mut v = Vec::new();
    if must_fail && out.status.success() {
        v.push(format!("{name}: `{how}` succeeded"));
    }
    if must_fail && !out.status.success() && !stderr.contains(says) {
        v.push(format!(
            "{name}: `{how}` failed without saying {says:?}: {stderr}"
        ));
    }
    if must_fail && name != "h-name" && !stderr.contains(name) {
        v.push(format!(
            "{name}: `{how}`'s message does not name the package: {stderr}"
        ));
    }
    let written = contents(canary);
    if !written.is_empty() {
        v.push(format!(
            "{name}: `{how}` wrote outside the tree: {written:?}"
        ));
        for f in written {
            let _ = fs::remove_file(f);
        }
    }
    if d.env.deploy_dirs() != before {
        v.push(format!("{name}: `{how}` changed the deployments"));
    }
    v
}

#[test]
fn hostile_packages_cannot_reach_the_host() {
    let d = Debian::new(&[], &[]);
    let canary = d.env.dir.path().join("canary");
    fs::create_dir_all(&canary).unwrap();
    let before = d.env.deploy_dirs();
    let dir = d.env.dir.path().join("hostile");
    fs::create_dir_all(&dir).unwrap();
    let cases = refused(&canary);
    let mut failures = Vec::new();
    let mut indexable = Vec::new();
    for (h, says, in_repo) in &cases {
        let deb = build(&dir, h);
        let deb_s = deb.to_str().unwrap().to_string();
        // --dry-run imports the file into the package cache: the boundary holds there too
        // (a package whose scripts are its weapon passes a dry run).
        for (args, must_fail) in [
            (vec!["install", "--dry-run", deb_s.as_str()], false),
            (vec!["install", deb_s.as_str()], true),
        ] {
            failures.extend(breaches(
                &d, &canary, &before, h.name, says, &args, must_fail,
            ));
        }
        if *in_repo {
            indexable.push(deb);
        }
    }
    // The same packages from the signed APT repository (those apt can index).
    make_repo(&d.repo, &indexable, &d.gnupg);
    let refresh = d.env.stratum(&["refresh-md"]);
    if !refresh.status.success() {
        // Only an earlier package that got through can have broken the machine's sources.
        failures.push(format!(
            "refresh-md failed after the local cases: {}",
            String::from_utf8_lossy(&refresh.stderr)
        ));
    }
    for (h, says, in_repo) in &cases {
        if *in_repo && refresh.status.success() {
            let args = ["install", h.name];
            failures.extend(breaches(&d, &canary, &before, h.name, says, &args, true));
        }
    }
    assert!(
        failures.is_empty(),
        "{} breaches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn maintainer_scripts_have_no_power_over_the_host() {
    // A `,` in the sysroot's path: overlayfs's option separator (gpg-agent refuses a `:`).
    let d = Debian::in_env(common::Env::with_prefix("stratum,sysroot-"), &[], &[]);
    let dir = d.env.dir.path().join("hostile");
    fs::create_dir_all(&dir).unwrap();
    let probe = Hostile {
        name: "h-probe",
        control: control("h-probe"),
        members: vec![(
            "postinst",
            script(
                "d=/var/lib/h-probe; mkdir -p $d\n\
                 grep CapEff /proc/self/status > $d/caps\n\
                 tr '\\0' '\\n' < /proc/1/environ > $d/environ1\n\
                 env > $d/environ\n\
                 if mount -t tmpfs none /mnt 2>/dev/null; then echo yes; else echo no; fi > $d/mount\n\
                 if mknod /tmp/n c 1 3 2>/dev/null; then echo yes; else echo no; fi > $d/mknod\n\
                 if echo 1 > /proc/sys/kernel/sysrq 2>/dev/null; then echo yes; else echo no; fi > $d/sysctl\n\
                 true",
            ),
        )],
        links: vec![],
        data: Box::new(|d| {
            fs::write(mkdirs(d, "usr/share/h-probe").join("f"), "x").unwrap();
        }),
    };
    let deb = build(&dir, &probe);
    ok(d.env.stratum_env(
        &["install", deb.to_str().unwrap()],
        &[("STRATUM_TEST_SECRET", "do-not-leak")],
    ));
    let var = d.default_root().join("usr/share/factory/var/lib/h-probe");
    let read = |f: &str| fs::read_to_string(var.join(f)).unwrap();
    let caps = read("caps");
    let eff = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    // CAP_SYS_ADMIN (21), CAP_MKNOD (27), CAP_SYS_MODULE (16), CAP_SYS_PTRACE (19),
    // CAP_NET_ADMIN (12), CAP_SYS_RAWIO (17).
    for bit in [21, 27, 16, 19, 12, 17] {
        assert_eq!(eff & (1 << bit), 0, "capability {bit} kept: {caps}");
    }
    for f in ["environ", "environ1"] {
        assert!(!read(f).contains("do-not-leak"), "{f}: {}", read(f));
        assert!(!read(f).contains("STRATUM_TEST_SECRET"), "{f}");
    }
    assert_eq!(read("mount").trim(), "no");
    assert_eq!(read("mknod").trim(), "no");
    assert_eq!(read("sysctl").trim(), "no");
}
