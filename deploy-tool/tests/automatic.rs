//! Host integration tests of automatic updates (`upgrade --trigger-automatic-update-policy`,
//! what `stratum-automatic-update.timer` runs) with each policy, the record `status` shows,
//! reboot windows, and `upgrade --download-only`.

use crate::common;

use std::fs;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn setup() -> (Env, String) {
    let env = Env::new();
    let v1 = env.compose_fake_os("1", &[], &[]);
    env.install_following_src();
    (env, v1)
}

/// Writes the admin's `stratum.toml` into the deployment `csum` (the configuration of the
/// deployment that runs or boots next is the one read).
fn configure(env: &Env, csum: &str, text: &str) {
    let dir = env.dep(csum).join("etc/stratum");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("stratum.toml"), text).unwrap();
}

fn trigger(env: &Env, extra: &[&str]) -> (Value, String) {
    let mut args = vec!["upgrade", "--trigger-automatic-update-policy", "--json"];
    args.extend(extra);
    let out = env.stratum(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "trigger failed: {stderr}");
    let v = serde_json::from_slice(&out.stdout).expect("--json output");
    (v, stderr)
}

#[test]
fn policy_none_does_nothing_and_check_caches_the_update() {
    let (env, v1) = setup();
    let (out, stderr) = trigger(&env, &[]);
    assert!(out["record"].is_null(), "{out}");
    assert!(stderr.contains("Automatic updates are off"), "{stderr}");
    let st = env.status();
    assert_eq!(st["automatic-update"]["policy"], "none");
    assert!(st["automatic-update"]["last-check"].is_null(), "{st}");
    let human = ok(env.stratum(&["status"]));
    assert!(human.starts_with("AutomaticUpdates: disabled\n"), "{human}");

    configure(&env, &v1, "[automatic-update]\npolicy = \"check\"\n");
    let (out, _) = trigger(&env, &[]);
    assert_eq!(out["record"]["result"], "no update", "{out}");
    let v2 = env.compose_fake_os("2", &[], &[]);
    let (out, _) = trigger(&env, &[]);
    assert_eq!(out["record"]["cached-update"]["checksum"], v2.as_str());
    assert_eq!(out["record"]["cached-update"]["staged"], false);
    // A check deploys nothing and fetched only the commit's metadata.
    assert_eq!(env.checksums(), vec![v1.clone()]);
    let st = env.status();
    assert_eq!(st["automatic-update"]["policy"], "check");
    assert!(st["automatic-update"]["last-check"].as_u64().unwrap() > 0);
    assert_eq!(st["cached-update"]["checksum"], v2.as_str());
    assert_eq!(st["cached-update"]["version"], "2");
    let human = ok(env.stratum(&["status"]));
    assert!(
        human.contains("AutomaticUpdates: check; stratum-automatic-update.timer")
            && human.contains("LastCheck: ")
            && human.contains(&format!("AvailableUpdate: 2 ({v2})")),
        "{human}"
    );
}

#[test]
fn stage_deploys_once_and_apply_waits_for_its_window() {
    let (env, v1) = setup();
    configure(&env, &v1, "[automatic-update]\npolicy = \"stage\"\n");
    let v2 = env.compose_fake_os("2", &[], &[]);
    let (out, _) = trigger(&env, &["--stage"]);
    assert_eq!(out["record"]["cached-update"]["checksum"], v2.as_str());
    assert_eq!(out["record"]["cached-update"]["staged"], true);
    assert_eq!(out["reboot"], false, "stage never reboots");
    let st = env.status();
    assert_eq!(st["deployments"][0]["checksum"], v2.as_str());
    assert_eq!(st["deployments"][0]["staged"], true);
    // The next run finds nothing new: the staged update still waits.
    let (out, _) = trigger(&env, &["--stage"]);
    assert!(
        out["record"]["result"]
            .as_str()
            .unwrap()
            .starts_with("no new update; 2 ("),
        "{out}"
    );
    assert_eq!(env.status()["deployments"].as_array().unwrap().len(), 2);

    // `apply` with a window that opens in two hours (every day): staged, no reboot yet.
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let later = (now / 60 + 120) % (24 * 60);
    let window = |start: u64| {
        format!(
            "[automatic-update]\npolicy = \"apply\"\n[[automatic-update.reboot-window]]\n\
             days = [\"Mon\", \"Tue\", \"Wed\", \"Thu\", \"Fri\", \"Sat\", \"Sun\"]\n\
             start-time = \"{:02}:{:02}\"\nlength-minutes = 30\n",
            start / 60,
            start % 60
        )
    };
    configure(&env, &v1, &window(later));
    let (out, _) = trigger(&env, &["--stage"]);
    assert_eq!(out["reboot"], false, "{out}");
    assert!(
        out["record"]["result"]
            .as_str()
            .unwrap()
            .contains("the reboot waits for the next window"),
        "{out}"
    );
    let human = ok(env.stratum(&["status"]));
    assert!(
        human.contains("AutomaticUpdates: apply (reboots Mon,Tue"),
        "{human}"
    );
    // A window open now: the run asks for the reboot (refused here: not the booted system).
    let earlier = (now / 60 + 24 * 60 - 10) % (24 * 60);
    configure(&env, &v1, &window(earlier));
    let (out, stderr) = trigger(&env, &["--stage"]);
    assert_eq!(out["reboot"], true, "{out}");
    assert!(stderr.contains("Not rebooting"), "{stderr}");
}

#[test]
fn a_bad_configuration_fails_the_run_and_status_says_why() {
    let (env, v1) = setup();
    configure(&env, &v1, "[automatic-update]\npolicy = \"weekly\"\n");
    let e = err(env.stratum(&["upgrade", "--trigger-automatic-update-policy"]));
    assert!(e.contains("etc/stratum/stratum.toml"), "{e}");
    let st = env.status();
    assert!(st["automatic-update"]["policy"].is_null(), "{st}");
    assert!(
        st["automatic-update"]["config-error"]
            .as_str()
            .unwrap()
            .contains("stratum.toml"),
        "{st}"
    );
    // A failing run (the remote is gone) is recorded as failed.
    configure(&env, &v1, "[automatic-update]\npolicy = \"check\"\n");
    fs::rename(&env.src, env.src.with_extension("gone")).unwrap();
    err(env.stratum(&["upgrade", "--trigger-automatic-update-policy"]));
    let st = env.status();
    assert_eq!(st["automatic-update"]["last-failed"], true, "{st}");
    assert!(
        st["automatic-update"]["last-result"]
            .as_str()
            .unwrap()
            .starts_with("failed: "),
        "{st}"
    );
}

#[test]
fn download_only_pulls_without_deploying() {
    let (env, v1) = setup();
    let v2 = env.compose_fake_os("2", &[], &[]);
    let out = env.stratum(&["upgrade", "--download-only", "--json"]);
    let j: Value = serde_json::from_str(&ok(out)).unwrap();
    assert_eq!(j["result"], "downloaded");
    assert_eq!(j["to"], v2.as_str());
    assert_eq!(env.checksums(), vec![v1]);
    // The whole commit is local: the source can go, the upgrade still deploys it.
    fs::rename(&env.src, env.src.with_extension("gone")).unwrap();
    let show = std::process::Command::new("ostree")
        .args(["ls", "-R"])
        .arg(format!(
            "--repo={}",
            env.sysroot.join("ostree/repo").display()
        ))
        .arg(&v2)
        .output()
        .unwrap();
    assert!(
        show.status.success(),
        "the tree of {v2} is not local: {}",
        String::from_utf8_lossy(&show.stderr)
    );
}

#[test]
fn status_jsonpath_selects() {
    let (env, v1) = setup();
    let out = ok(env.stratum(&[
        "status",
        "--jsonpath",
        "$.deployments[?@.booted == false].checksum",
    ]));
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v, serde_json::json!([v1]));
    let out = ok(env.stratum(&["status", "--jsonpath", "$['automatic-update'].policy"]));
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap(),
        serde_json::json!(["none"])
    );
    let e = err(env.stratum(&["status", "--jsonpath", "$.deployments[0"]));
    assert!(e.contains("--jsonpath"), "{e}");
}
