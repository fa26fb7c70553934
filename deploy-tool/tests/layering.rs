//! Package layering on a real Debian system: apt resolves, the package cache is reused, the
//! sandbox protects the repository, the base is locked, and overrides work.

use crate::common;

use std::fs;
use std::process::Command;

use common::debian::{Deb, Debian};
use common::{err, ok, ok_stderr};

/// The repository of the end-to-end test: a virtual package, an alternative, a conffile,
/// /var content, a generated host key, and a script that tries to get out of its sandbox.
fn repo_packages() -> Vec<Deb<'static>> {
    vec![
        Deb {
            name: "t-hello",
            version: "1.0-1",
            // A virtual package (provided by t-mta) and an alternative whose first choice does
            // not exist.
            control: "Depends: t-mail-transport, t-missing | t-alt",
            files: &[
                ("usr/bin/t-hello", "#!/bin/sh\necho hello\n"),
                ("etc/t-hello.conf", "greeting=hello\n"),
                ("lib/t-hello/data", "merged usr\n"),
            ],
            scripts: &[(
                "postinst",
                "mkdir -p /var/lib/t-hello && echo configured > /var/lib/t-hello/state\n\
                 mkdir -p /etc/ssh && echo secret > /etc/ssh/ssh_host_t_key\n\
                 echo ran > /etc/t-hello.postinst",
            )],
            conffiles: &["/etc/t-hello.conf"],
        },
        Deb {
            name: "t-mta",
            version: "2.0",
            control: "Provides: t-mail-transport",
            files: &[("usr/sbin/t-mta", "#!/bin/sh\n")],
            ..Default::default()
        },
        Deb {
            name: "t-alt",
            version: "0.1",
            files: &[("usr/share/t-alt/README", "alt\n")],
            ..Default::default()
        },
        Deb {
            name: "t-evil",
            version: "1",
            scripts: &[(
                "postinst",
                // Writes in place into a file that is a hardlink to a repository object, looks
                // for the network and for the host.
                "echo evil >> /etc/debian_version\n\
                 echo evil >> /usr/share/t-alt/README\n\
                 mkdir -p /var/lib/t-evil\n\
                 grep -c : /proc/net/dev > /var/lib/t-evil/interfaces\n\
                 if [ -e /proc/1/root/work ] || [ -d /work ] || [ -d /root/.cache ]; then echo visible; else echo hidden; fi > /var/lib/t-evil/host",
            )],
            control: "Depends: t-alt",
            ..Default::default()
        },
        Deb {
            name: "t-extra",
            version: "1",
            files: &[("usr/share/t-extra/x", "x\n")],
            ..Default::default()
        },
    ]
}

fn layered(d: &Debian) -> Vec<String> {
    let s = d.env.status();
    let mut v: Vec<String> = s["deployments"][0]["layered-packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn cache_refs(d: &Debian) -> Vec<String> {
    let out = ok(Command::new("ostree")
        .arg("refs")
        .arg(format!(
            "--repo={}",
            d.env.sysroot.join("ostree/repo").display()
        ))
        .output()
        .unwrap());
    let mut v: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("stratum/pkgcache"))
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

#[test]
fn layering_resolves_replays_from_the_cache_and_sandboxes_scripts() {
    let d = Debian::new(&repo_packages(), &[]);
    let base_debian_version =
        fs::read_to_string(d.default_root().join("usr/etc/debian_version")).unwrap();

    // Resolution: the virtual package and the alternative are apt's choices.
    let stderr = ok_stderr(d.env.stratum(&["install", "t-hello", "t-evil"]));
    assert!(stderr.contains("Downloading 4 package(s)"), "{stderr}");
    assert_eq!(
        layered(&d),
        [
            "t-alt_0.1_amd64",
            "t-evil_1_amd64",
            "t-hello_1.0-1_amd64",
            "t-mta_2.0_amd64"
        ]
    );
    let root = d.default_root();
    let installed = d.installed();
    for p in ["t-hello", "t-mta", "t-alt", "t-evil"] {
        assert!(
            installed.contains_key(p),
            "{p} not installed: {installed:?}"
        );
    }
    // Files in image layout: /lib is /usr/lib; conffile and postinst output in the image's
    // /etc (and in the deployment's merged /etc).
    assert!(root.join("usr/lib/t-hello/data").is_file());
    assert_eq!(
        fs::read_to_string(root.join("usr/etc/t-hello.postinst")).unwrap(),
        "ran\n"
    );
    assert!(root.join("etc/t-hello.conf").is_file());
    // /var: factory content and a tmpfiles line; nothing in the commit's /var.
    assert_eq!(
        fs::read_to_string(root.join("usr/share/factory/var/lib/t-hello/state")).unwrap(),
        "configured\n"
    );
    let tmpfiles = fs::read_to_string(root.join("usr/lib/tmpfiles.d/stratum-var.conf")).unwrap();
    assert!(tmpfiles.contains("/var/lib/t-hello"), "{tmpfiles}");
    assert!(
        tmpfiles.contains("L /var/lib/dpkg - - - - ../../usr/lib/sysimage/dpkg"),
        "{tmpfiles}"
    );
    assert_eq!(fs::read_dir(root.join("var")).unwrap().count(), 0);
    // The machine-specific key is not in the image.
    assert!(!root.join("usr/etc/ssh/ssh_host_t_key").exists());
    // The sandbox: no network but loopback, the host invisible.
    let factory = root.join("usr/share/factory/var/lib/t-evil");
    assert_eq!(
        fs::read_to_string(factory.join("interfaces")).unwrap(),
        "1\n"
    );
    assert_eq!(
        fs::read_to_string(factory.join("host")).unwrap(),
        "hidden\n"
    );
    // In-place writes changed the layered tree only: the base commit's file and the cached
    // package's file are intact, and the repository is consistent.
    assert!(fs::read_to_string(root.join("usr/etc/debian_version"))
        .unwrap()
        .ends_with("evil\n"));
    let repo = d.env.sysroot.join("ostree/repo");
    let cat = |rev: &str, path: &str| {
        ok(Command::new("ostree")
            .arg(format!("--repo={}", repo.display()))
            .args(["cat", rev, path])
            .output()
            .unwrap())
    };
    assert_eq!(cat(&d.base, "/usr/etc/debian_version"), base_debian_version);
    let alt_ref = cache_refs(&d)
        .into_iter()
        .find(|r| r.contains("/t-alt/"))
        .unwrap();
    assert_eq!(cat(&alt_ref, "/usr/share/t-alt/README"), "alt\n");
    ok(Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["fsck", "--quiet"])
        .output()
        .unwrap());
    // The layered commit records its base; status shows it.
    let s = d.env.status();
    assert_eq!(s["deployments"][0]["base-checksum"], d.base.as_str());
    assert_eq!(
        s["deployments"][0]["requested-packages"],
        serde_json::json!(["t-evil", "t-hello"])
    );

    // One more package: only that one is downloaded; the others come from the cache.
    let refs_before = cache_refs(&d);
    let stderr = ok_stderr(d.env.stratum(&["install", "t-extra"]));
    assert!(
        stderr.contains("Downloading 1 package(s): t-extra"),
        "{stderr}"
    );
    assert_eq!(cache_refs(&d).len(), refs_before.len() + 1);

    // A new base replays every request without a download.
    let root2 = d.env.dir.path().join("root2");
    ok(Command::new("cp")
        .args(["-a", "--link"])
        .arg(d.env.dir.path().join("root"))
        .arg(&root2)
        .output()
        .unwrap());
    fs::write(root2.join("etc/stratum-v2"), "2\n").unwrap();
    let base2 = d.env.compose_root(&root2, Some("2"));
    let url = format!("file://{}", d.env.src.display());
    ok(d.env
        .stratum(&["remote", "add", "src", &url, "--no-sign-verify"]));
    let stderr = ok_stderr(d.env.stratum(&["rebase", "src:os/x"]));
    assert!(!stderr.contains("Downloading"), "{stderr}");
    assert_eq!(
        d.env.status()["deployments"][0]["base-checksum"],
        base2.as_str()
    );
    assert_eq!(layered(&d).len(), 5);
    assert!(d.default_root().join("usr/etc/stratum-v2").exists());

    // db diff: from the plain v1 base to the layered v2.
    let new = d.env.status()["deployments"][0]["checksum"]
        .as_str()
        .unwrap()
        .to_string();
    let diff = ok(d.env.stratum(&["db", "diff", &d.base, &new]));
    assert_eq!(
        diff,
        "Added:\n  t-alt 0.1\n  t-evil 1\n  t-extra 1\n  t-hello 1.0-1\n  t-mta 2.0\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(d.env.stratum(&["db", "diff", &d.base, &new, "--json"]))).unwrap();
    assert_eq!(json["diff"]["added"][2]["name"], "t-extra");
    let list = ok(d.env.stratum(&["db", "list", &new]));
    assert!(list.contains("t-extra 1 amd64\n"), "{list}");

    // Uninstall: the packages only it needed go with it.
    ok(d.env.stratum(&["uninstall", "t-hello", "t-evil"]));
    assert_eq!(layered(&d), ["t-extra_1_amd64"]);
    assert!(!d.default_root().join("usr/bin/t-hello").exists());
    let e = err(d.env.stratum(&["uninstall", "t-hello"]));
    assert!(
        e.contains("t-hello is not a layered package (layered: t-extra)"),
        "{e}"
    );
    ok(d.env.stratum(&["uninstall", "t-hello", "--idempotent"]));

    // cleanup drops cache entries no deployment uses any more.
    ok(d.env.stratum(&["cleanup", "-r"]));
    let refs = cache_refs(&d);
    assert_eq!(refs.len(), 1, "{refs:?}");
    assert!(refs[0].contains("t-extra"));
}

#[test]
fn layering_refuses_what_it_cannot_do_and_changes_nothing() {
    let d = Debian::new(
        &[
            Deb {
                name: "t-conflict",
                version: "1",
                control: "Conflicts: t-base-leaf",
                ..Default::default()
            },
            Deb {
                name: "t-one",
                version: "1",
                files: &[("usr/share/t-clash/file", "one\n")],
                ..Default::default()
            },
            Deb {
                name: "t-two",
                version: "1",
                files: &[("usr/share/t-clash/file", "two\n")],
                ..Default::default()
            },
            Deb {
                name: "t-fail",
                version: "1",
                scripts: &[("postinst", "echo 'postinst says no' >&2\nexit 3")],
                ..Default::default()
            },
        ],
        &[Deb {
            name: "t-base-leaf",
            version: "1",
            files: &[("usr/share/t-base-leaf/x", "leaf\n")],
            ..Default::default()
        }],
    );
    let before = d.env.deploy_dirs();
    let cases: [(&[&str], &str); 4] = [
        (
            &["t-conflict"],
            "it would remove the base package t-base-leaf",
        ),
        (
            &["no-such-package"],
            "package no-such-package was not found in the configured repositories",
        ),
        (
            &["t-one", "t-two"],
            "cannot add t-two 1 (amd64): a file it ships differs",
        ),
        (&["t-fail"], "postinst says no"),
    ];
    for (args, expected) in cases {
        let mut a = vec!["install"];
        a.extend(args);
        let e = err(d.env.stratum(&a));
        assert!(e.contains(expected), "stratum {a:?}: {e}");
        assert_eq!(
            d.env.deploy_dirs(),
            before,
            "stratum {a:?} left a deployment"
        );
    }
    // No scratch left behind in the repository.
    let tmp: Vec<_> = fs::read_dir(d.env.sysroot.join("ostree/repo/tmp"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("stratum-layer-")
        })
        .collect();
    assert!(tmp.is_empty());
    // Repositories: search; an unreachable one and an unsigned one are named in the error;
    // an unsigned one is used only with `Trusted: yes`.
    let found = ok(d.env.stratum(&["search", "t-on"]));
    assert_eq!(found, "t-one - t-one test package\n");
    let sources = d.default_root().join("etc/apt/sources.list.d");
    fs::write(
        sources.join("gone.sources"),
        "Types: deb\nURIs: file:/nonexistent/stratum-repo\nSuites: ./\nTrusted: yes\n",
    )
    .unwrap();
    let e = err(d.env.stratum(&["refresh-md"]));
    assert!(e.contains("file:/nonexistent/stratum-repo"), "{e}");
    fs::remove_file(sources.join("gone.sources")).unwrap();
    let unsigned = d.env.dir.path().join("unsigned");
    fs::create_dir_all(&unsigned).unwrap();
    for f in ["Packages", "Release"] {
        fs::copy(d.repo.join(f), unsigned.join(f)).unwrap();
    }
    let src = format!(
        "Types: deb\nURIs: file:{}\nSuites: ./\n",
        unsigned.display()
    );
    fs::write(sources.join("unsigned.sources"), &src).unwrap();
    let e = err(d.env.stratum(&["refresh-md"]));
    assert!(e.contains("is not signed"), "{e}");
    fs::write(
        sources.join("unsigned.sources"),
        format!("{src}Trusted: yes\n"),
    )
    .unwrap();
    ok(d.env.stratum(&["refresh-md"]));
    fs::remove_file(sources.join("unsigned.sources")).unwrap();
    ok(d.env.stratum(&["refresh-md"]));
    assert_eq!(d.env.deploy_dirs(), before);

    // --dry-run resolves and changes nothing.
    let plan = ok(d.env.stratum(&["install", "t-one", "--dry-run"]));
    assert_eq!(plan, "install t-one 1 (amd64)\n");
    assert_eq!(d.env.deploy_dirs(), before);
}

#[test]
fn overrides_remove_replace_and_reset_base_packages() {
    let leaf = |v: &'static str, content: &'static str| Deb {
        name: "t-base-leaf",
        version: v,
        files: Box::leak(Box::new([("usr/share/t-base-leaf/x", content)])),
        scripts: &[("postrm", "echo postrm \"$@\" >> /etc/t-base-leaf.log")],
        ..Default::default()
    };
    let d = Debian::new(&[], &[leaf("1", "leaf 1\n")]);
    assert_eq!(d.installed()["t-base-leaf"], "1");
    // An unknown base package is refused.
    let e = err(d.env.stratum(&["override", "remove", "t-nothing"]));
    assert!(
        e.contains("cannot remove t-nothing: it is not a package of the base image"),
        "{e}"
    );

    ok(d.env.stratum(&["override", "remove", "t-base-leaf"]));
    assert!(!d.installed().contains_key("t-base-leaf"));
    let root = d.default_root();
    assert!(!root.join("usr/share/t-base-leaf/x").exists());
    assert!(fs::read_to_string(root.join("usr/etc/t-base-leaf.log"))
        .unwrap()
        .contains("postrm purge"));
    let s = d.env.status();
    assert_eq!(
        s["deployments"][0]["requested-base-removals"],
        serde_json::json!(["t-base-leaf"])
    );
    let text = ok(d.env.stratum(&["status"]));
    assert!(text.contains("RemovedBasePackages: t-base-leaf"), "{text}");

    // Replace with a local file of another version.
    let newer = common::debian::build_deb(&d.debs, &leaf("2", "leaf 2\n"));
    ok(d.env.stratum(&["override", "reset", "t-base-leaf"]));
    ok(d.env
        .stratum(&["override", "replace", newer.to_str().unwrap()]));
    assert_eq!(d.installed()["t-base-leaf"], "2");
    assert_eq!(
        fs::read_to_string(d.default_root().join("usr/share/t-base-leaf/x")).unwrap(),
        "leaf 2\n"
    );
    let text = ok(d.env.stratum(&["status"]));
    assert!(
        text.contains("LocalOverrides: t-base-leaf 1 -> 2"),
        "{text}"
    );

    // Replace with a version from the repositories (PKG=VERSION).
    d.publish(&[leaf("3", "leaf 3\n")]);
    ok(d.env.stratum(&["override", "replace", "t-base-leaf=3"]));
    assert_eq!(d.installed()["t-base-leaf"], "3");
    let text = ok(d.env.stratum(&["status"]));
    assert!(
        text.contains("LocalOverrides: t-base-leaf 1 -> 3"),
        "{text}"
    );

    // Reset: the base image as it is.
    ok(d.env.stratum(&["override", "reset", "--all"]));
    assert_eq!(d.installed()["t-base-leaf"], "1");
    assert_eq!(
        d.env.status()["deployments"][0]["checksum"],
        d.base.as_str()
    );
}
