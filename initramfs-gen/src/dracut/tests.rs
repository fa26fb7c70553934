//! The dracut command line, the output checks, and a whole run against a fake static `dracut`
//! in a fake root (as root, with gcc and a static libc; skipped otherwise).

use super::*;
use std::process::Command;

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn command_line() {
    let mut r = DracutRun::new("/r", "6.1.0-1-amd64", "/cache/x.img");
    assert_eq!(
        r.dracut_command("x.img"),
        strings(&[
            "dracut",
            "--no-hostonly",
            "--kver",
            "6.1.0-1-amd64",
            "--force",
            "--tmpdir",
            "/tmp",
            "/run/stratum-dracut/out/x.img"
        ])
    );
    r.add_modules = strings(&["stratum", "ostree"]);
    r.includes = vec![("/h/m.json".into(), "/etc/stratum/initramfs.json".into())];
    r.args = strings(&["--omit", "plymouth"]);
    let cmd = r.dracut_command("x.img").join(" ");
    assert_eq!(
        cmd,
        "dracut --no-hostonly --add stratum --add ostree --kver 6.1.0-1-amd64 --force --tmpdir \
         /tmp --include /run/stratum-dracut/in/0 /etc/stratum/initramfs.json --omit plymouth \
         /run/stratum-dracut/out/x.img"
    );
}

#[test]
fn included_modules_are_read_from_the_output() {
    let out = "dracut: *** Including module: systemd ***\n\
               dracut: *** Including module: stratum-extra ***\n\
               *** Including module: ostree ***\n";
    let wanted = strings(&["systemd", "stratum", "ostree"]);
    assert_eq!(not_included(out, &wanted), ["stratum"]);
    assert!(not_included(out, &[]).is_empty());
    assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
    assert_eq!(tail("a", 5), "a");
}

#[test]
fn paths_hidden_by_the_mounts_are_refused() {
    let root = Path::new("/r");
    assert!(check_visible(root, Path::new("/r/var/cache"), "x").is_err());
    assert!(check_visible(root, Path::new("/r/run"), "x").is_err());
    assert!(check_visible(root, Path::new("/r/usr/lib/modules/k"), "x").is_ok());
    assert!(check_visible(root, Path::new("/r/variable"), "x").is_ok());
    assert!(check_visible(root, Path::new("/cache"), "x").is_ok());
}

/// A `dracut` that checks its mounts, reports `--add` modules, and writes the kernel version and
/// every included file into the output.
const FAKE_DRACUT: &str = r#"
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
static int isdir(const char *p) { struct stat s; return stat(p, &s) == 0 && S_ISDIR(s.st_mode); }
int main(int argc, char **argv) {
    const char *kver = "", *out = argv[argc - 1];
    int quiet = 0;
    for (int i = 1; i < argc; i++) quiet |= !strcmp(argv[i], "--quiet");
    if (!isdir("/proc/self") || !isdir("/sys/class") || !isdir("/var/tmp")) {
        fprintf(stderr, "dracut: missing mounts\n");
        return 1;
    }
    FILE *o = fopen(out, "w");
    if (!o) { perror(out); return 1; }
    for (int i = 1; i < argc - 1; i++) {
        if (!strcmp(argv[i], "--fail")) { fprintf(stderr, "dracut: failing\n"); return 3; }
        if (!strcmp(argv[i], "--add")) {
            if (!quiet) printf("dracut: *** Including module: %s ***\n", argv[i + 1]);
            i++;
        }
        else if (!strcmp(argv[i], "--kver")) kver = argv[++i];
        else if (!strcmp(argv[i], "--include")) {
            char buf[256] = {0};
            FILE *f = fopen(argv[i + 1], "r");
            if (!f) { perror(argv[i + 1]); return 1; }
            fread(buf, 1, sizeof buf - 1, f);
            fclose(f);
            fprintf(o, "%s=%s", argv[i + 2], buf);
            i += 2;
        }
    }
    fprintf(o, "kver=%s\n", kver);
    return fclose(o) ? 1 : 0;
}
"#;

/// A root with the directories the runner mounts on and a static fake `dracut`; `None` when
/// this machine cannot compile one or make a mount namespace.
fn fake_root(dir: &Path) -> Option<PathBuf> {
    let root = dir.join("root");
    for d in MOUNTED.iter().chain(&["usr/bin"]) {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let src = dir.join("dracut.c");
    std::fs::write(&src, FAKE_DRACUT).unwrap();
    let built = Command::new("gcc")
        .args(["-static", "-O1", "-o"])
        .arg(root.join("usr/bin/dracut"))
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    let can_mount = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "true"])
        .status()
        .is_ok_and(|s| s.success());
    (built && can_mount).then_some(root)
}

#[test]
fn runs_in_the_root_with_outputs_and_includes_bound() {
    let t = tempfile::tempdir().unwrap();
    let Some(root) = fake_root(t.path()) else {
        eprintln!("note: needs root, gcc and a static libc; skipping");
        return;
    };
    let cache = t.path().join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    let manifest = t.path().join("m.json");
    std::fs::write(&manifest, "{}").unwrap();
    let log = t.path().join("dracut.log");
    let mut r = DracutRun::new(&root, "6.1.0-test", cache.join("a.img"));
    r.add_modules = strings(&["stratum"]);
    r.includes = vec![(manifest.clone(), "/etc/stratum/initramfs.json".into())];
    r.log = Some(log.clone());
    let text = run(&r).unwrap();
    assert!(text.contains("Including module: stratum"), "{text}");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), text);
    assert_eq!(
        std::fs::read_to_string(cache.join("a.img")).unwrap(),
        "/etc/stratum/initramfs.json={}kver=6.1.0-test\n"
    );
    // Nothing was left mounted or written in the root.
    for d in ["tmp", "var", "run"] {
        let n = std::fs::read_dir(root.join(d)).unwrap().count();
        assert_eq!(n, 0, "/{d} of the root is not empty");
    }
    // Into the root itself (where `stratum compose --keep-initramfs` takes it from).
    let moddir = root.join("usr/lib/modules/6.1.0-test");
    std::fs::create_dir_all(&moddir).unwrap();
    let mut r2 = DracutRun::new(&root, "6.1.0-test", moddir.join("initramfs.img"));
    r2.add_modules = strings(&["stratum"]);
    run(&r2).unwrap();
    assert!(moddir.join("initramfs.img").is_file());

    r.args = strings(&["--fail"]);
    let e = format!("{:#}", run(&r).unwrap_err());
    assert!(
        e.contains("dracut: failing") && e.contains("dracut.log"),
        "{e}"
    );
    // A module dracut does not report is an error, unless the check is off.
    let mut quiet = DracutRun::new(&root, "6.1.0-test", cache.join("b.img"));
    quiet.add_modules = strings(&["stratum"]);
    quiet.args = strings(&["--quiet"]);
    let e = format!("{:#}", run(&quiet).unwrap_err());
    assert!(
        e.contains("did not include the dracut module(s) stratum"),
        "{e}"
    );
    quiet.check_included = false;
    run(&quiet).unwrap();
    r.output = root.join("var/x.img");
    assert!(
        run(&r).is_err(),
        "an output under the root's /var would be hidden"
    );
}
