//! Host integration tests of `stratum kargs` and image kernel argument defaults (kargs.d):
//! the real `stratum` binary on a temporary sysroot with a real libostree repository, checked
//! against Debian's `ostree admin status`.

use crate::common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

impl Env {
    /// Composes a version of the fake OS with `extra` files into the source repository.
    fn compose_extra(&self, version: &str, extra: &[(&str, &str)]) -> String {
        self.compose_fake_os(version, &[], extra)
    }

    fn kargs_of(&self, index: usize) -> Vec<String> {
        self.status()["deployments"][index]["kernel-arguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    /// Deployment directories with their inode numbers: a checkout would change them.
    fn deploy_inodes(&self) -> BTreeMap<String, u64> {
        fs::read_dir(self.sysroot.join("ostree/deploy/default/deploy"))
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| !e.file_name().to_string_lossy().ends_with(".origin"))
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    e.metadata().unwrap().ino(),
                )
            })
            .collect()
    }

    fn loader(&self) -> PathBuf {
        fs::read_link(self.sysroot.join("boot/loader")).unwrap()
    }

    /// The current generation: the `loader` link target and every file's bytes.
    fn boot_set(&self) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
        let mut files = BTreeMap::new();
        let gen = self.sysroot.join("boot/loader");
        files.insert(
            "grub.cfg".to_string(),
            fs::read(gen.join("grub.cfg")).unwrap(),
        );
        for e in fs::read_dir(gen.join("entries")).unwrap() {
            let e = e.unwrap();
            files.insert(
                format!("entries/{}", e.file_name().to_string_lossy()),
                fs::read(e.path()).unwrap(),
            );
        }
        (self.loader(), files)
    }

    /// The default entry's lines, keyed by BLS key.
    fn entry(&self, version: usize) -> BTreeMap<String, String> {
        let p = self
            .sysroot
            .join(format!("boot/loader/entries/ostree-{version}-default.conf"));
        fs::read_to_string(&p)
            .unwrap()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn grub_cfg(&self) -> String {
        fs::read_to_string(self.sysroot.join("boot/loader/grub.cfg")).unwrap()
    }

    /// A script usable as $EDITOR.
    fn editor(&self, name: &str, body: &str) -> String {
        let p = self.dir.path().join(name);
        fs::write(&p, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o755)).unwrap();
        p.to_string_lossy().into_owned()
    }
}

fn fails(out: Output, expect: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "expected a failure ({expect})");
    assert!(err.contains(expect), "expected {expect:?} in: {err}");
}

/// A sysroot with v1 (with `extra` files) installed, following remote `src`.
fn setup(extra: &[(&str, &str)]) -> (Env, String) {
    let env = Env::new();
    let v1 = env.compose_extra("1", extra);
    env.install_following_src();
    (env, v1)
}

fn ostree_admin_status(sysroot: &Path) -> String {
    let out = Command::new("ostree")
        .args(["admin", "status", "--sysroot"])
        .arg(sysroot)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ostree admin status: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn append_delete_replace_rewrite_only_the_boot_set() {
    let (env, v1) = setup(&[]);
    assert_eq!(ok(env.stratum(&["kargs"])).trim(), "root=UUID=1234 quiet");
    let dirs = env.deploy_inodes();
    let before = env.entry(1);
    let loader = env.loader();
    let grubenv = env.sysroot.join("boot/grubenv");
    let grubenv_inode = fs::metadata(&grubenv).unwrap().ino();

    ok(env.stratum(&[
        "kargs",
        "--append",
        "quiet.test=1",
        "--append",
        "foo=\"a b\"",
    ]));
    assert_ne!(env.loader(), loader, "a new generation was written");
    assert_eq!(
        env.kargs_of(0),
        ["root=UUID=1234", "quiet", "quiet.test=1", "\"foo=a b\""]
    );
    let after = env.entry(1);
    // ostree= first (a cut command line never loses it), then the arguments in order.
    assert!(
        after["options"].starts_with("ostree=/ostree/boot.")
            && after["options"].ends_with(" root=UUID=1234 quiet quiet.test=1 \"foo=a b\""),
        "{after:?}"
    );
    for key in ["title", "version", "linux", "initrd"] {
        assert_eq!(before[key], after[key], "BLS {key} changed");
    }
    let cfg = env.grub_cfg();
    // The word GRUB turns back into "foo=a b" for the kernel.
    assert!(cfg.contains(" 'quiet.test=1' 'foo=a b'\n"), "{cfg}");
    assert_eq!(env.deploy_inodes(), dirs, "kargs made a checkout");
    assert_eq!(
        fs::metadata(&grubenv).unwrap().ino(),
        grubenv_inode,
        "same default deployment: the boot-counting state is not rewritten"
    );
    assert!(ostree_admin_status(&env.sysroot).contains(&format!("default {v1}.0")));
    assert_eq!(
        ok(env.stratum(&["kargs"])).trim(),
        "root=UUID=1234 quiet quiet.test=1 \"foo=a b\""
    );

    ok(env.stratum(&[
        "kargs",
        "--delete",
        "quiet.test=1",
        "--replace",
        "root=UUID=1234=UUID=5678",
        "--delete",
        "foo",
    ]));
    assert_eq!(env.kargs_of(0), ["root=UUID=5678", "quiet"]);
    assert!(!env.grub_cfg().contains("quiet.test"));
    assert_eq!(env.deploy_inodes(), dirs);

    // Repeated keys: --delete K asks which one; K=V removes the first match.
    ok(env.stratum(&[
        "kargs",
        "--append",
        "console=tty0",
        "--append",
        "console=ttyS0",
    ]));
    fails(
        env.stratum(&["kargs", "--delete", "console"]),
        "console=VALUE",
    );
    ok(env.stratum(&["kargs", "--delete", "console=tty0"]));
    assert_eq!(
        env.kargs_of(0),
        ["root=UUID=5678", "quiet", "console=ttyS0"]
    );

    // Nothing to do: no new generation, exit 77 on request.
    let loader = env.loader();
    let out = env.stratum(&[
        "kargs",
        "--append-if-missing",
        "quiet",
        "--unchanged-exit-77",
    ]);
    assert_eq!(out.status.code(), Some(77));
    assert_eq!(env.loader(), loader);
    ok(env.stratum(&["kargs", "--delete-if-present", "nothere=1"]));
    assert_eq!(env.loader(), loader);

    // --json
    let j: serde_json::Value =
        serde_json::from_str(&ok(env.stratum(&["kargs", "--json", "--append", "j=1"]))).unwrap();
    assert_eq!(j["changed"], true);
    assert_eq!(j["deployment"], format!("{v1}.0"));
    assert_eq!(j["kernel-arguments"][3], "j=1");
}

#[test]
fn deploy_index_changes_one_deployment_and_kargs_survive_upgrade() {
    let (env, v1) = setup(&[]);
    ok(env.stratum(&["kargs", "--append", "admin.arg=1"]));
    let v2 = env.compose_extra("2", &[]);
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), [v2.clone(), v1.clone()]);
    assert_eq!(env.kargs_of(0), ["root=UUID=1234", "quiet", "admin.arg=1"]);

    let dirs = env.deploy_inodes();
    ok(env.stratum(&["kargs", "--deploy-index", "1", "--append", "old.only=1"]));
    assert_eq!(env.checksums(), [v2.clone(), v1.clone()], "order kept");
    assert_eq!(env.kargs_of(0), ["root=UUID=1234", "quiet", "admin.arg=1"]);
    assert_eq!(
        env.kargs_of(1),
        ["root=UUID=1234", "quiet", "admin.arg=1", "old.only=1"]
    );
    assert_eq!(
        ok(env.stratum(&["kargs", "--deploy-index", "1"])).trim(),
        "root=UUID=1234 quiet admin.arg=1 old.only=1"
    );
    assert_eq!(env.deploy_inodes(), dirs);
    let st = ostree_admin_status(&env.sysroot);
    assert!(st.find(&v2).unwrap() < st.find(&v1).unwrap(), "{st}");
}

#[test]
fn image_defaults_diff_is_applied_on_upgrade() {
    let (env, v1) = setup(&[
        (
            "usr/lib/stratum/kargs.d/10-base.toml",
            "kargs = [\"def.old=1\", \"def.keep=1\"]\n",
        ),
        (
            "usr/lib/stratum/kargs.d/20-other-arch.toml",
            "kargs = [\"never\"]\nmatch-architectures = [\"riscv-nonexistent\"]\n",
        ),
    ]);
    assert_eq!(
        env.kargs_of(0),
        ["root=UUID=1234", "quiet", "def.old=1", "def.keep=1"],
        "install applies the image's defaults"
    );
    ok(env.stratum(&["kargs", "--append", "admin=1"]));
    let v2 = env.compose_extra(
        "2",
        &[(
            "usr/lib/stratum/kargs.d/10-base.toml",
            "kargs = [\"def.keep=1\", \"def.new=1\"]\n",
        )],
    );
    ok(env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(env.checksums(), [v2.clone(), v1.clone()]);
    assert_eq!(
        env.kargs_of(0),
        [
            "root=UUID=1234",
            "quiet",
            "def.keep=1",
            "admin=1",
            "def.new=1"
        ]
    );
    assert_eq!(
        env.kargs_of(1),
        [
            "root=UUID=1234",
            "quiet",
            "def.old=1",
            "def.keep=1",
            "admin=1"
        ],
        "the old deployment keeps its arguments"
    );

    // A malformed kargs.d file: the upgrade fails naming it, nothing changes.
    env.compose_extra(
        "3",
        &[(
            "usr/lib/stratum/kargs.d/30-bad.toml",
            "kargs = [\"x\"]\nunknown-key = true\n",
        )],
    );
    let set = env.boot_set();
    let dirs = env.deploy_inodes();
    fails(env.stratum(&["upgrade", "--apply-now"]), "30-bad.toml");
    assert_eq!(env.boot_set(), set);
    assert_eq!(env.deploy_inodes(), dirs, "the new deployment was removed");
}

#[test]
fn editor_and_proc_cmdline() {
    let (env, _) = setup(&[]);
    let ed = env.editor("ed-ok", "sed -i '1s/$/ editor.test=1/' \"$1\"");
    ok(env.stratum_env(&["kargs", "--editor"], &[("EDITOR", &ed)]));
    assert_eq!(
        env.kargs_of(0),
        ["root=UUID=1234", "quiet", "editor.test=1"]
    );

    let proc = env.dir.path().join("cmdline");
    fs::write(
        &proc,
        "BOOT_IMAGE=/ostree/default-x/vmlinuz root=UUID=1234 rw imported=\"a b\" \
         ostree=/ostree/boot.1/default/x/0 initrd=/x\n",
    )
    .unwrap();
    ok(env.stratum_env(
        &["kargs", "--import-proc-cmdline", "--append", "more=1"],
        &[("STRATUM_PROC_CMDLINE", proc.to_str().unwrap())],
    ));
    assert_eq!(
        env.kargs_of(0),
        ["root=UUID=1234", "rw", "\"imported=a b\"", "more=1"]
    );
}

#[test]
fn bad_input_leaves_the_boot_set_byte_identical() {
    let (env, _) = setup(&[]);
    ok(env.stratum(&[
        "kargs",
        "--append",
        "console=tty0",
        "--append",
        "console=ttyS0",
    ]));
    let set = env.boot_set();
    let dirs = env.deploy_inodes();
    let cases: &[(&[&str], &str)] = &[
        (&["--append", "a\nb"], "newline"),
        (&["--append", "=x"], "empty key"),
        (&["--append", ""], "empty"),
        (&["--append", "a b"], "2 kernel arguments"),
        (&["--append", r"path=C:\dir"], "backslash"),
        (&["--append", "it=don't"], "backslash before every"),
        (&["--append", "word=voilà"], "0xA0"),
        (&["--append", "ostree=/x"], "ostree="),
        (&["--delete", "ostree"], "ostree="),
        (&["--delete", "root"], "root= cannot be deleted"),
        (
            &["--delete-if-present", "root=UUID=1234"],
            "root= cannot be deleted",
        ),
        (&["--delete", "nothere"], "nothere"),
        (&["--delete", "console"], "console=VALUE"),
        (&["--replace", "console=x"], "console=OLD=NEW"),
        (&["--replace", "quiet=1=2"], "no kernel argument"),
        (
            &["--deploy-index", "5", "--append", "x"],
            "no deployment at index 5",
        ),
        // A valid edit before an invalid one is not applied either.
        (&["--append", "good=1", "--delete", "nothere"], "nothere"),
    ];
    for (args, expect) in cases {
        let mut a = vec!["kargs"];
        a.extend_from_slice(args);
        fails(env.stratum(&a), expect);
        assert_eq!(env.boot_set(), set, "{args:?} changed the boot set");
    }
    let editors = [
        ("ed-empty", "printf '# nothing\\n' > \"$1\"", "empty"),
        (
            "ed-quote",
            "printf 'root=UUID=1234 a=\"b\\n' > \"$1\"",
            "double quote",
        ),
        (
            "ed-nul",
            "printf 'root=UUID=1234 a\\000b\\n' > \"$1\"",
            "NUL",
        ),
        (
            "ed-noroot",
            "printf 'quiet\\n' > \"$1\"",
            "root= cannot be deleted",
        ),
        (
            "ed-ostree",
            "printf 'root=UUID=1 ostree=/x\\n' > \"$1\"",
            "ostree=",
        ),
        ("ed-fail", "exit 3", "failed"),
    ];
    for (name, body, expect) in editors {
        let ed = env.editor(name, body);
        fails(
            env.stratum_env(&["kargs", "--editor"], &[("EDITOR", &ed)]),
            expect,
        );
        assert_eq!(env.boot_set(), set, "editor {name} changed the boot set");
    }
    // A crash before the loader swap leaves the old boot set; after it, the new one.
    for point in ["kargs::before-boot-set", "bootloader::before-swap"] {
        env.crash_at(&["kargs", "--append", "crash=1"], point);
        assert_eq!(env.boot_set(), set, "{point}");
    }
    env.crash_at(&["kargs", "--append", "crash=1"], "bootloader::after-swap");
    assert!(env.kargs_of(0).contains(&"crash=1".to_string()));
    assert_eq!(env.deploy_inodes(), dirs);
    // The next command cleans up and works.
    ok(env.stratum(&["kargs", "--delete", "crash"]));
    assert!(!env.kargs_of(0).contains(&"crash=1".to_string()));
}
