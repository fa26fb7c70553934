//! `stratum compose tree` and `compose install` with the real mmdebstrap, Debian's archive
//! and the package `make deb` builds: a manifest using every kind of key, the commit's
//! metadata, "no apparent changes", reproducibility, and the errors a builder meets.

use crate::common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn stratum(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratum"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn ostree(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(args)
        .output()
        .unwrap();
    ok(out, &format!("ostree {args:?}"))
}

fn top() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

fn cachedir() -> String {
    format!("{}/debs", common::debian::cache_dir())
}

/// The test manifest: images/vm.toml plus one of every other kind of key.
fn write_manifest(dir: &Path) -> PathBuf {
    fs::write(dir.join("motd"), "composed from a manifest\n").unwrap();
    let m = dir.join("test.toml");
    fs::write(
        &m,
        format!(
            r#"include = ["{top}/images/vm.toml"]
ref = "test/compose"
version = "1.{{date}}.{{serial}}"
exclude-packages = ["initramfs-tools"]
kargs = ["quiet", "loglevel=4"]

[units]
mask = ["apt-daily.timer"]

[config]
boot-tries = 2

[[files]]
path = "/usr/share/compose-test/motd"
source = "motd"
mode = "0600"

[[groups]]
name = "ops"
gid = 991

[[users]]
name = "app"
uid = 990
home = "/var/lib/app"
groups = ["ops"]

[[postprocess]]
script = """
mkdir -p /usr/share/compose-test
hostname > /usr/share/compose-test/hostname
# Network interfaces the script sees: only lo.
tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' > /usr/share/compose-test/netdevs
test -n "$(getent passwd app)"
"""
"#,
            top = top().display()
        ),
    )
    .unwrap();
    m
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// `ostree ls -C -d`: the root directory's contents and metadata checksums.
fn tree_checksum(repo: &Path, commit: &str) -> String {
    let line = ostree(repo, &["ls", "-C", "-d", commit, "/"]);
    let fields: Vec<&str> = line.split_whitespace().collect();
    // d00755 0 0 0 CONTENTS META /
    fields[fields.len() - 3..fields.len() - 1].join(" ")
}

#[test]
fn compose_tree_from_a_manifest() {
    let d = tempfile::tempdir().unwrap();
    let manifest = write_manifest(d.path());
    let repo = d.path().join("repo");
    let (m, r) = (manifest.to_str().unwrap(), repo.to_str().unwrap());
    let cache = cachedir();
    let env = [("SOURCE_DATE_EPOCH", "1764633600")];
    let args = [
        "compose",
        "tree",
        m,
        "--repo",
        r,
        "--cachedir",
        &cache,
        "--json",
    ];

    // 1. The first build.
    let first = json(&ok(stratum(&args, &env), "compose tree"));
    assert_eq!(first["changed"], true);
    assert_eq!(first["version"], "1.20251202.0");
    let c1 = first["commit"].as_str().unwrap().to_string();
    assert_eq!(ostree(&repo, &["rev-parse", "test/compose"]).trim(), c1);

    // The package list, the digest and the ref binding are in the commit's metadata.
    let pkgs = ostree(
        &repo,
        &["show", "--print-metadata-key=stratum.packages", &c1],
    );
    for p in [
        "('stratum', '",
        "('linux-image-cloud-amd64', '",
        "('systemd', '",
    ] {
        assert!(pkgs.contains(p), "{p} missing from {pkgs}");
    }
    assert!(!pkgs.contains("initramfs-tools"), "{pkgs}");
    let digest = ostree(
        &repo,
        &["show", "--print-metadata-key=stratum.manifest-digest", &c1],
    );
    assert_eq!(digest.trim().trim_matches('\''), first["manifest-digest"]);
    let binding = ostree(
        &repo,
        &["show", "--print-metadata-key=ostree.ref-binding", &c1],
    );
    assert_eq!(binding.trim(), "['test/compose']");
    // `db list` reads the list from the repository, without a checkout.
    let list = ok(
        stratum(&["db", "list", "--repo", r, "test/compose", "--json"], &[]),
        "db list",
    );
    let list = json(&list);
    let names: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"stratum") && names.contains(&"apt"),
        "{names:?}"
    );
    assert_eq!(names.len() as u64, first["packages"].as_u64().unwrap());

    // What the manifest asked for is in the tree.
    let cat = |p: &str| ostree(&repo, &["cat", &c1, p]);
    assert_eq!(
        cat("/usr/share/compose-test/motd"),
        "composed from a manifest\n"
    );
    let motd = ostree(&repo, &["ls", &c1, "/usr/share/compose-test/motd"]);
    assert!(motd.starts_with("-00600 0 0"), "{motd}");
    assert_eq!(cat("/usr/share/compose-test/hostname"), "localhost\n");
    assert_eq!(cat("/usr/share/compose-test/netdevs"), "lo\n");
    assert!(cat("/usr/etc/passwd").contains("app:x:990:990::/var/lib/app:"));
    assert!(cat("/usr/etc/group").contains("ops:x:991:app"));
    assert!(cat("/usr/lib/sysusers.d/stratum-compose.conf").contains("u app 990"));
    let kargs = cat("/usr/lib/stratum/kargs.d/50-compose.toml");
    assert!(
        kargs.contains("\"quiet\"") && kargs.contains("\"loglevel=4\""),
        "{kargs}"
    );
    assert_eq!(
        cat("/usr/lib/stratum/stratum.d/50-compose.toml"),
        "boot-tries = 2\n"
    );
    let masked = ostree(
        &repo,
        &["ls", &c1, "/usr/etc/systemd/system/apt-daily.timer"],
    );
    assert!(masked.contains("-> /dev/null"), "{masked}");
    assert_eq!(cat("/usr/etc/hostname"), "stratum\n");
    // The build's local repository is not left in the image.
    let sources = cat("/usr/etc/apt/sources.list");
    assert!(!sources.contains("file:"), "{sources}");
    assert!(sources.contains("deb.debian.org"), "{sources}");

    // 2. Nothing changed: no commit, exit 77 when asked.
    let mut unchanged = args.to_vec();
    unchanged.push("--unchanged-exit-77");
    let out = stratum(&unchanged, &env);
    assert_eq!(out.status.code(), Some(77), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("No apparent changes"));
    assert_eq!(json(&text(&out.stdout))["changed"], false);
    assert_eq!(ostree(&repo, &["rev-parse", "test/compose"]).trim(), c1);

    // 3. Built again anyway: the same tree, the next serial.
    let mut force = args.to_vec();
    force.push("--force-nocache");
    let third = json(&ok(stratum(&force, &env), "compose tree --force-nocache"));
    let c3 = third["commit"].as_str().unwrap();
    assert_ne!(c3, c1);
    assert_eq!(third["version"], "1.20251202.1");
    assert_eq!(third["inputhash"], first["inputhash"]);
    assert_eq!(tree_checksum(&repo, c3), tree_checksum(&repo, &c1));
    assert_eq!(ostree(&repo, &["diff", &c1, c3]), "");

    // 4. A changed manifest is a change.
    fs::write(d.path().join("motd"), "changed\n").unwrap();
    let fourth = json(&ok(
        stratum(&unchanged, &env),
        "compose tree after a change",
    ));
    assert_eq!(fourth["changed"], true);
    assert_ne!(fourth["manifest-digest"], first["manifest-digest"]);
    let diff = ostree(&repo, &["diff", c3, fourth["commit"].as_str().unwrap()]);
    assert_eq!(diff.trim(), "M    /usr/share/compose-test/motd");
}

/// `[initramfs] mode = "dracut"`: dracut runs in the sandbox with Stratum's module, and the
/// commit carries its initramfs (systemd inside, the module's unit wired to
/// initrd-root-fs.target), not one of stratum-initramfs.
#[test]
fn compose_tree_with_dracut() {
    let d = tempfile::tempdir().unwrap();
    let manifest = d.path().join("dracut.toml");
    fs::write(
        &manifest,
        format!(
            "include = [\"{}/images/vm-dracut.toml\"]\nref = \"test/dracut\"\n\n\
             [initramfs]\nmode = \"dracut\"\n",
            top().display()
        ),
    )
    .unwrap();
    let repo = d.path().join("repo");
    let cache = cachedir();
    let out = ok(
        stratum(
            &[
                "compose",
                "tree",
                manifest.to_str().unwrap(),
                "--repo",
                repo.to_str().unwrap(),
                "--cachedir",
                &cache,
                "--json",
            ],
            &[],
        ),
        "compose tree (dracut)",
    );
    let commit = json(&out)["commit"].as_str().unwrap().to_string();
    let modules = ostree(
        &repo,
        &[
            "ls",
            "-R",
            "--nul-filenames-only",
            &commit,
            "/usr/lib/modules",
        ],
    );
    let image = modules
        .split('\0')
        .find(|p| p.ends_with("/initramfs.img"))
        .unwrap_or_else(|| panic!("no initramfs in the commit: {modules:?}"))
        .to_string();
    let file = d.path().join("initramfs.img");
    let bytes = Command::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["cat", &commit, &image])
        .output()
        .unwrap();
    assert!(bytes.status.success(), "ostree cat {image}");
    fs::write(&file, &bytes.stdout).unwrap();
    let lister = Path::new(env!("CARGO_BIN_EXE_stratum")).with_file_name("stratum-initramfs");
    let list = ok(
        Command::new(lister)
            .arg("list")
            .arg(&file)
            .output()
            .unwrap(),
        "stratum-initramfs list",
    );
    // `MODE UID GID SIZE /PATH [-> TARGET]`
    let members: Vec<&str> = list
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(|p| p.trim_start_matches('/'))
        .collect();
    for member in [
        "usr/lib/stratum/stratum-prepare-root",
        "usr/lib/systemd/system/stratum-prepare-root.service",
        "usr/lib/systemd/system/initrd-root-fs.target.wants/stratum-prepare-root.service",
        "usr/lib/systemd/systemd",
        "usr/lib/dracut-lib.sh",
    ] {
        assert!(
            members.contains(&member),
            "{member} is not in the dracut initramfs {image}:\n{list}"
        );
    }
}

#[test]
fn compose_errors() {
    let d = tempfile::tempdir().unwrap();
    let repo = d.path().join("repo");
    let r = repo.to_str().unwrap();
    let cache = cachedir();

    // A manifest error names the file and the line; nothing is created.
    let bad = d.path().join("bad.toml");
    fs::write(
        &bad,
        "ref = \"test/x\"\nkernel = \"linux-image-cloud-amd64\"\n\n[units]\nenabel = [\"a.service\"]\n",
    )
    .unwrap();
    let out = stratum(
        &["compose", "tree", bad.to_str().unwrap(), "--repo", r],
        &[],
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("bad.toml") && err.contains("line 5") && err.contains("enabel"),
        "{err}"
    );
    assert!(!repo.exists());

    // An excluded package that the set needs: mmdebstrap's resolver refuses, nothing is
    // committed and the build directory goes.
    let excl = d.path().join("excl.toml");
    fs::write(
        &excl,
        format!(
            "include = [\"{}/images/vm.toml\"]\nref = \"test/x\"\nexclude-packages = [\"bubblewrap\"]\n",
            top().display()
        ),
    )
    .unwrap();
    let out = stratum(
        &["compose", "tree", excl.to_str().unwrap(), "--repo", r],
        &[],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("both included and excluded") && err.contains("bubblewrap"),
        "{err}"
    );

    let need = d.path().join("need.toml");
    fs::write(
        &need,
        format!(
            "include = [\"{}/images/vm.toml\"]\nref = \"test/x\"\nexclude-packages = [\"libostree-1-1\"]\n",
            top().display()
        ),
    )
    .unwrap();
    let work = d.path().join("work");
    let out = stratum(
        &[
            "compose",
            "tree",
            need.to_str().unwrap(),
            "--repo",
            r,
            "--cachedir",
            &cache,
            "--workdir",
            work.to_str().unwrap(),
        ],
        &[],
    );
    let err = text(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("libostree-1-1"), "{err}");
    assert!(err.contains("mmdebstrap failed"), "{err}");
    assert_eq!(
        fs::read_dir(&work).unwrap().count(),
        0,
        "build directory left"
    );
    assert!(ostree(&repo, &["refs"]).trim().is_empty());

    // compose install refuses an existing directory.
    let out = stratum(
        &[
            "compose",
            "install",
            need.to_str().unwrap(),
            d.path().to_str().unwrap(),
        ],
        &[],
    );
    assert!(
        text(&out.stderr).contains("exists"),
        "{}",
        text(&out.stderr)
    );
}
