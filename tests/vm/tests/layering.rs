//! VM scenario for package layering: real Debian packages (`htop`, `openssh-server` and the
//! dependencies the image lacks) from a signed local APT repository on the test disk, with
//! their real maintainer scripts; a request that conflicts with a base package; replay on a
//! new base from the package cache; uninstall, a base package removed and restored. Run with
//! `cargo test --release -p stratum-vmtests --test layering` after `make build`.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use libtest_mimic::Arguments;
use serde_json::Value;
use stratum_vmtests::aptrepo::build_test_deb;
use stratum_vmtests::{check, trial, Project, SCENARIO_HELPERS};

/// The base package the scenario removes with `override remove` and gets back with
/// `override reset --all` (a leaf: nothing in the image depends on it).
const LEAF: &str = "nano";

/// A local package that conflicts with [`LEAF`].
const CONFLICT_DEB: &str = "stratum-test-conflict_1.0_all.deb";

/// Where the guest finds the repository (the test disk's `aptrepo/`).
const SOURCES: &str = "Types: deb
URIs: file:/run/stratum-test/aptrepo
Suites: ./
Signed-By: /etc/apt/keyrings/stratum-test.gpg
";

const SCENARIO: &str = r#"
deployments() { ls /ostree/deploy/default/deploy | sort | tr '\n' ' '; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null; }
common() {
    result booted "$(booted)"
    result htop "$(htop --version 2>/dev/null | head -n1)"
    result ssh "$(systemctl is-active ssh)"
    result leaf "$(installed @LEAF@)"
    result leaf_bin "$(command -v @LEAF@)"
    result failed_units "$(systemctl --failed --no-legend --plain)"
    stratum status --json > "$out/boot-$n.status_json"
}
boot_1() {
    common
    result deploy_before "$(deployments)"
    stratum install /run/stratum-test/debs/@CONFLICT_DEB@ 2> "$out/boot-1.conflict_err"
    result conflict_rc $?
    cat "$out/boot-1.conflict_err"
    result deploy_after_conflict "$(deployments)"
    t0=$(date +%s%N)
    stratum install htop openssh-server 2> "$out/boot-1.install_err"; result install_rc $?
    result install_ms $(( ($(date +%s%N) - t0) / 1000000 ))
    cat "$out/boot-1.install_err"
    stratum status --json > "$out/boot-1.status_installed"
    request_reboot
}
boot_2() {
    common
    result host_keys "$(ls /etc/ssh | grep '^ssh_host_.*_key$')"
    # /usr/etc is the commit's /etc: the keys made at boot must not be in it.
    result commit_keys "$(ls /usr/etc/ssh | grep '^ssh_host_')"
    result pkgcache "$(find /sysroot/ostree/repo/refs/heads/stratum/pkgcache -type f -printf '%P\n' | sort)"
    t0=$(date +%s%N)
    stratum upgrade 2> "$out/boot-2.upgrade_err"; result upgrade_rc $?
    result upgrade_ms $(( ($(date +%s%N) - t0) / 1000000 ))
    cat "$out/boot-2.upgrade_err"
    request_reboot
}
boot_3() {
    common
    result release "$(cat /usr/share/stratum-test/release)"
    stratum uninstall htop 2> "$out/boot-3.uninstall_err"; result uninstall_rc $?
    cat "$out/boot-3.uninstall_err"
    stratum override remove @LEAF@ 2> "$out/boot-3.remove_err"; result remove_rc $?
    cat "$out/boot-3.remove_err"
    request_reboot
}
boot_4() {
    common
    stratum db diff "$(cat "$out/boot-3.booted")" "$(booted)" > "$out/boot-4.diff" 2>&1
    result diff_rc $?
    cat "$out/boot-4.diff"
    stratum override reset --all 2> "$out/boot-4.reset_err"; result reset_rc $?
    cat "$out/boot-4.reset_err"
    request_reboot
}
boot_5() {
    common
}
"#;

/// Without Secure Boot: this scenario boots once per layering step and proves layering; the
/// signed chain on its ESP boots all the same (the `vm`, `fallback`, `kargs`, `initramfs`
/// and `systemd_boot` scenarios boot with Secure Boot).
fn project() -> Project {
    Project::locate()
        .expect("locating the project")
        .without_secure_boot()
}

/// The booted deployment in a `stratum status --json` text.
fn booted(status: &str) -> Result<Value> {
    let v: Value = serde_json::from_str(status)
        .with_context(|| format!("stratum status --json is not JSON: {status:?}"))?;
    v["deployments"]
        .as_array()
        .and_then(|a| a.iter().find(|d| d["booted"] == true))
        .cloned()
        .with_context(|| format!("no booted deployment in {v}"))
}

/// The strings of a JSON list.
fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Package layering on a booted machine: install from a signed APT repository (with
/// maintainer scripts in the sandbox), a refused conflicting local package, override remove
/// of a base package, an upgrade that replays the layered packages on v2, removal and reset;
/// each change boots. Boots: one per step, under Secure Boot.
fn layering_scenario() -> Result<()> {
    let p = project();
    let fixture = p.workdir("layering-fixture")?;
    let debs = fixture.join("debs");
    std::fs::create_dir_all(&debs)?;
    build_test_deb(
        &debs,
        "stratum-test-conflict",
        "1.0",
        &[("Conflicts", LEAF)],
    )?;
    let base = p.debian_root()?;
    let apt = p.apt_repo(
        &base,
        &["htop", "openssh-server"],
        &[],
        &fixture.join("aptrepo"),
    )?;
    eprintln!(
        "layering: test repository with {} package(s): {}",
        apt.packages.len(),
        apt.packages
            .iter()
            .map(|p| p.name.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let key = apt.key.clone();
    let img = p.build_image_with(
        "layering",
        "1.0",
        |root| {
            let etc = root.join("etc/apt");
            std::fs::create_dir_all(etc.join("sources.list.d"))?;
            std::fs::create_dir_all(etc.join("keyrings"))?;
            std::fs::write(etc.join("sources.list.d/stratum-test.sources"), SOURCES)?;
            std::fs::copy(&key, etc.join("keyrings/stratum-test.gpg"))?;
            Ok(())
        },
        &["console=ttyS0"],
    )?;
    let v1 = img.commit.clone();
    let v2 = img.compose_update(&p, "2.0", &[("usr/share/stratum-test/release", "2.0\n")])?;
    let dir = p.workdir("layering-run")?;
    let repo = img.link_repo(&dir.join("repo"))?;
    let scenario = format!("{SCENARIO_HELPERS}{SCENARIO}")
        .replace("@LEAF@", LEAF)
        .replace("@CONFLICT_DEB@", CONFLICT_DEB);
    let trees: [(&str, &Path); 3] = [("repo", &repo), ("aptrepo", &apt.dir), ("debs", &debs)];
    let (out, test) = img.boot_scenario(&dir, &scenario, &trees, |q| {
        q.timeout = q.timeout.max(Duration::from_secs(2400));
    })?;
    let r = test.results(&dir.join("results"))?;
    eprintln!(
        "layering: {} boots in {:.0} s (install {} ms, upgrade {} ms in the TCG guest)",
        r.boots(),
        out.elapsed.as_secs_f64(),
        r.get(1, "install_ms"),
        r.get(2, "upgrade_ms"),
    );
    check("layering", &out, || {
        ensure!(
            r.boots() == 5,
            "expected 5 boots, the scenario ran {}",
            r.boots()
        );
        let installed = "install ok installed";
        for n in 1..=5 {
            r.expect(n, "failed_units", "")?;
        }

        // Boot 1: v1; a conflicting request changes nothing; htop and openssh-server layered.
        r.expect(1, "booted", &v1)?;
        r.expect(1, "leaf", installed)?;
        let conflict = r.get(1, "conflict_err");
        ensure!(
            r.get(1, "conflict_rc") != "0",
            "a package that conflicts with the base package {LEAF} was accepted:\n{conflict}"
        );
        ensure!(
            conflict.contains(LEAF) && conflict.to_lowercase().contains("conflicts"),
            "the refusal does not say that the request conflicts with {LEAF}:\n{conflict}"
        );
        r.expect(1, "deploy_after_conflict", &r.get(1, "deploy_before"))?;
        r.expect_success(
            1,
            "install_rc",
            "install_err",
            "stratum install htop openssh-server",
        )?;
        let err = r.get(1, "install_err");
        ensure!(
            err.contains("Downloading"),
            "the first install downloaded nothing:\n{err}"
        );

        // Boot 2: the layered deployment runs the packages; host keys made on the machine.
        let d2 = booted(&r.get(2, "status_json"))?;
        ensure!(
            d2["base-checksum"] == v1.as_str() && r.get(2, "booted") != v1,
            "boot 2 is not a layered deployment on v1: {d2}"
        );
        let layered = strings(&d2["layered-packages"]);
        for pkg in ["htop_", "openssh-server_"] {
            ensure!(
                layered.iter().any(|l| l.starts_with(pkg)),
                "layered-packages lacks {pkg}: {layered:?}"
            );
        }
        ensure!(
            r.get(2, "htop").starts_with("htop "),
            "htop --version on boot 2: {:?}",
            r.get(2, "htop")
        );
        r.expect(2, "ssh", "active")?;
        ensure!(
            r.get(2, "host_keys").lines().count() >= 3,
            "host keys in /etc/ssh: {:?}",
            r.get(2, "host_keys")
        );
        // /usr/etc is the commit's /etc.
        r.expect(2, "commit_keys", "")?;
        ensure!(
            r.get(2, "pkgcache").lines().any(|l| l.starts_with("htop/")),
            "no htop in the package cache refs: {:?}",
            r.get(2, "pkgcache")
        );
        r.expect_success(2, "upgrade_rc", "upgrade_err", "stratum upgrade")?;

        // Boot 3: v2 with the packages replayed from the cache.
        let d3 = booted(&r.get(3, "status_json"))?;
        ensure!(
            d3["base-checksum"] == v2.as_str(),
            "boot 3 is not layered on v2 {v2}: {d3}"
        );
        r.expect(3, "release", "2.0")?;
        r.expect(3, "htop", &r.get(2, "htop"))?;
        r.expect(3, "ssh", "active")?;
        let err = r.get(2, "upgrade_err");
        ensure!(
            !err.contains("Downloading"),
            "the upgrade downloaded packages instead of replaying the cache:\n{err}"
        );
        r.expect_success(3, "uninstall_rc", "uninstall_err", "stratum uninstall htop")?;
        r.expect_success(3, "remove_rc", "remove_err", "stratum override remove")?;

        // Boot 4: htop and the base package gone, and the package diff says so.
        r.expect(4, "htop", "")?;
        r.expect(4, "leaf_bin", "")?;
        ensure!(
            r.get(4, "leaf") != installed,
            "dpkg still lists {LEAF} as installed on boot 4"
        );
        r.expect(4, "ssh", "active")?;
        r.expect_success(4, "diff_rc", "diff", "stratum db diff")?;
        let diff = r.get(4, "diff");
        let removed = diff
            .split_once("Removed:")
            .map(|(_, rest)| rest.split("Added:").next().unwrap_or(rest).to_string())
            .unwrap_or_default();
        for pkg in ["htop", LEAF] {
            ensure!(
                removed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(pkg)),
                "db diff does not list {pkg} as removed:\n{diff}"
            );
        }
        let d4 = booted(&r.get(4, "status_json"))?;
        ensure!(
            strings(&d4["requested-base-removals"]) == [LEAF]
                && strings(&d4["base-removals"]) == [LEAF],
            "status --json does not record the removal of {LEAF}: {d4}"
        );
        ensure!(
            strings(&d4["requested-packages"]) == ["openssh-server"],
            "requested packages after uninstalling htop: {d4}"
        );
        r.expect_success(4, "reset_rc", "reset_err", "stratum override reset --all")?;

        // Boot 5: the base package is back.
        r.expect(5, "leaf", installed)?;
        ensure!(
            !r.get(5, "leaf_bin").is_empty(),
            "no {LEAF} binary on boot 5"
        );
        let d5 = booted(&r.get(5, "status_json"))?;
        ensure!(
            strings(&d5["requested-base-removals"]).is_empty(),
            "removal still requested after override reset --all: {d5}"
        );
        Ok(())
    })
}

fn main() {
    let args = Arguments::from_args();
    let trials = vec![trial(
        "vm::layering_install_upgrade_remove_reset",
        layering_scenario,
    )];
    libtest_mimic::run(&args, trials).exit();
}
