//! Host integration test of update delivery over HTTP: `stratum compose publish` writes an
//! archive repository with static deltas and a signed summary, a static HTTP server started
//! by the test (on 127.0.0.1, stopped at the end) serves it, and the real `stratum` on a
//! temporary sysroot upgrades through it:
//! - the upgrade downloads the static delta (the server's log shows what was fetched), not
//!   the changed files' objects, and far fewer bytes than an object pull;
//! - the summary's signature is verified, and a summary altered on the server makes the pull
//!   fail with a message about the summary, deploying nothing.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::gpg::Gpg;
use common::http::{total, Server};
use common::*;

/// 1 MiB of pseudo-random bytes (xorshift, so the same every run): a file that compresses
/// badly, like the binaries of a real image.
fn noise(seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..1 << 17)
        .flat_map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()
        })
        .collect()
}

const BIG: &str = "usr/lib/fake/libbig.so";

/// The test's world: the sysroot environment, the published repository and a signing key.
struct World {
    env: Env,
    gpg: Gpg,
    key: String,
    pubkey: PathBuf,
    published: PathBuf,
}

impl World {
    fn new() -> World {
        let gpg = Gpg::new();
        let key = gpg.gen_key("Stratum Publisher", "publisher@example.com");
        let env = Env::new();
        let pubkey = env.dir.path().join("publisher.asc");
        gpg.export(&key, &pubkey);
        let published = env.dir.path().join("www/repo");
        World {
            env,
            gpg,
            key,
            pubkey,
            published,
        }
    }

    /// Composes a version of the fake OS whose big library is `big`.
    fn compose(&self, version: &str, big: &[u8]) -> String {
        let root = self.env.fake_os_root(version, &["usr/lib/fake"], &[]);
        std::fs::write(root.join(BIG), big).unwrap();
        self.env.compose_root(&root, Some(version))
    }

    /// `stratum compose publish ARGS` of `os/x`, signed; its JSON result.
    fn publish(&self, args: &[&str]) -> serde_json::Value {
        let out = Command::new(env!("CARGO_BIN_EXE_stratum"))
            .args(["compose", "publish", "--ref", "os/x", "--json", "--repo"])
            .arg(&self.env.src)
            .arg("--to")
            .arg(&self.published)
            .args(["--gpg-sign", &self.key, "--gpg-homedir"])
            .arg(self.gpg.home.path())
            .args(args)
            .output()
            .unwrap();
        serde_json::from_str(&succeeded(out, "stratum compose publish")).unwrap()
    }
}

/// The (from, to) commits of a publish's deltas.
fn deltas(published: &serde_json::Value) -> Vec<(Option<String>, String)> {
    published["deltas"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["from"].as_str().map(str::to_string),
                d["to"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// The checksum of the content object of `/PATH` in `commit` of the repository `repo`.
fn content_object(repo: &Path, commit: &str, path: &str) -> String {
    let out = Command::new("ostree")
        .args(["ls", "-C", "--repo"])
        .arg(repo)
        .args([commit, path])
        .output()
        .unwrap();
    let text = succeeded(out, "ostree ls");
    text.split_whitespace()
        .find(|w| w.len() == 64)
        .unwrap_or_else(|| panic!("no checksum in `ostree ls -C`: {text}"))
        .to_string()
}

/// The version of the libostree the `ostree` program (and `stratum`) uses: (year, release).

#[test]
fn upgrades_over_http_use_static_deltas_and_a_signed_summary() {
    let w = World::new();
    let big1 = noise(1);
    let v1 = w.compose("1", &big1);
    let p1 = w.publish(&[]);
    assert_eq!(p1["commit"], v1.as_str(), "{p1}");
    assert!(deltas(&p1).is_empty(), "v1 has no ancestor: {p1}");
    for f in ["summary", "summary.sig", "config"] {
        assert!(w.published.join(f).is_file(), "publish wrote no {f}");
    }

    let server = Server::start(&w.published);
    let remote = format!("pub={}", server.url());
    let install = w.env.install_to_filesystem([
        "--ref",
        "os/x",
        "--remote",
        &remote,
        "--remote-gpg-import",
        w.pubkey.to_str().unwrap(),
        "--remote-sign-verify-summary",
    ]);
    succeeded(install, "stratum install");
    let remotes: serde_json::Value =
        serde_json::from_str(&ok(w.env.stratum(&["remote", "list", "--json"]))).unwrap();
    assert_eq!(
        remotes,
        serde_json::json!([{"name": "pub", "url": server.url(), "sign-verify": true,
                            "sign-verify-summary": true}])
    );
    assert_eq!(w.env.checksums(), vec![v1.clone()]);

    // v2 changes a few bytes of the big library. A build composed in between but never
    // published (v2-pre) is v2's parent: publishing v2 makes deltas from v2-pre (the nearest
    // ancestor) and from v1 (what the published ref held, what clients run).
    let mut big2 = big1.clone();
    big2[4096..4104].copy_from_slice(b"CHANGED!");
    let pre = w.compose("2-pre", &big1);
    let v2 = w.compose("2", &big2);
    let p2 = w.publish(&["--deltas", "1"]);
    assert_eq!(
        deltas(&p2),
        vec![
            (Some(pre.clone()), v2.clone()),
            (Some(v1.clone()), v2.clone())
        ],
        "{p2}"
    );
    assert_eq!(p2["previous"], v1.as_str(), "{p2}");
    let delta_bytes = p2["deltas"][1]["bytes"].as_u64().unwrap();
    assert!(delta_bytes > 0, "{p2}");

    server.take_log();
    let out = w.env.stratum(&["upgrade", "--apply-now"]);
    let stderr = ok_stderr(out);
    let log = server.take_log();
    assert_eq!(w.env.checksums(), vec![v2.clone(), v1.clone()], "{stderr}");
    let fetched: Vec<&str> = log
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.path.as_str())
        .collect();
    assert!(
        fetched.iter().any(|p| p.starts_with("/deltas/")),
        "the upgrade fetched no static delta: {fetched:?}"
    );
    assert!(
        fetched.contains(&"/summary.sig"),
        "the summary's signature was not fetched: {fetched:?}"
    );
    let big_object = content_object(&w.published, &v2, &format!("/{BIG}"));
    let changed = format!("/objects/{}/{}.filez", &big_object[..2], &big_object[2..]);
    assert!(
        !fetched.iter().any(|p| p.ends_with(".filez")),
        "the upgrade fetched content objects ({changed} is the changed library) as well \
         as the delta: {fetched:?}"
    );
    assert!(
        stderr.contains(&format!(
            "Fetching the static delta {}..{}",
            &v1[..12],
            &v2[..12]
        )),
        "the upgrade did not say it fetched the delta from v1: {stderr}"
    );
    let upgrade_bytes = total(&log);

    // The same update as an object pull (what a remote without deltas costs), with
    // libostree's own client: v1's objects present, static deltas disabled.
    let cmp = w.env.dir.path().join("cmp-repo");
    let ostree = |args: &[&str]| common::ostree(&cmp, args);
    ostree(&["init", "--mode=archive"]);
    ostree(&["pull-local", w.published.to_str().unwrap(), &v1]);
    ostree(&["remote", "add", "--no-gpg-verify", "pub", &server.url()]);
    server.take_log();
    ostree(&["pull", "--disable-static-deltas", "pub", "os/x"]);
    let object_log = server.take_log();
    assert!(
        object_log.iter().any(|r| r.path == changed),
        "the object pull did not fetch the changed library {changed}"
    );
    let object_bytes = total(&object_log);
    eprintln!(
        "v1 -> v2 over HTTP: {upgrade_bytes} bytes with the static delta ({delta_bytes} bytes \
         of delta), {object_bytes} bytes as an object pull"
    );
    assert!(
        upgrade_bytes * 4 < object_bytes,
        "the delta pull ({upgrade_bytes} bytes) is not much smaller than the object pull \
         ({object_bytes} bytes)"
    );

    // v3, published, then its summary altered on the server: the pull must fail on the
    // summary's signature and deploy nothing.
    let mut big3 = big2.clone();
    big3[9000..9005].copy_from_slice(b"three");
    let v3 = w.compose("3", &big3);
    w.publish(&[]);
    let summary = w.published.join("summary");
    let good = std::fs::read(&summary).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 0x55;
    std::fs::write(&summary, &bad).unwrap();
    let e = err(w.env.stratum(&["upgrade", "--apply-now"]));
    assert!(
        e.contains("summary of remote pub is not signed by a key trusted for it"),
        "the error does not say the summary failed verification: {e}"
    );
    assert_eq!(
        w.env.checksums(),
        vec![v2.clone(), v1.clone()],
        "an altered summary let an upgrade through: {e}"
    );

    // Put back, the signed summary verifies and v3 arrives through its delta from v2, from
    // the remote's `contenturl` (a second server of the same files), as libostree fetches
    // content: the summary still comes from `url`.
    std::fs::write(&summary, &good).unwrap();
    let content = Server::start(&w.published);
    common::ostree(
        &w.env.sysroot.join("ostree/repo"),
        &["config", "set", "remote \"pub\".contenturl", &content.url()],
    );
    server.take_log();
    ok(w.env.stratum(&["upgrade", "--apply-now"]));
    assert_eq!(w.env.checksums(), vec![v3.clone(), v2]);
    let main_log = server.take_log();
    assert!(
        main_log.iter().any(|r| r.path == "/summary"),
        "the summary was not fetched from the remote's url: {main_log:?}"
    );
    assert!(
        !main_log.iter().any(|r| r.path.starts_with("/deltas/")),
        "the delta came from url, not contenturl: {main_log:?}"
    );
    assert!(content
        .take_log()
        .iter()
        .any(|r| r.status == 200 && r.path.starts_with("/deltas/")));

    // v4's delta damaged on the server (its part no longer matches the superblock): the
    // upgrade says so and pulls the objects instead (from contenturl too).
    let mut big4 = big3.clone();
    big4[20000..20004].copy_from_slice(b"four");
    let v4 = w.compose("4", &big4);
    let p4 = w.publish(&[]);
    assert_eq!(deltas(&p4), vec![(Some(v3.clone()), v4.clone())], "{p4}");
    let part = w.published.join(delta_dir(&v3, &v4)).join("0");
    let mut data = std::fs::read(&part).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    std::fs::write(&part, &data).unwrap();
    content.take_log();
    let stderr = ok_stderr(w.env.stratum(&["upgrade", "--apply-now"]));
    assert!(
        stderr.contains("could not be used, pulling objects instead"),
        "the damaged delta was not reported: {stderr}"
    );
    assert_eq!(w.env.checksums(), vec![v4, v3]);
    assert!(
        content
            .take_log()
            .iter()
            .any(|r| r.path.ends_with(".filez")),
        "the objects were not pulled after the delta failed"
    );
}

/// libostree's directory of the delta `from` -> `to` in a repository (its modified base64).
fn delta_dir(from: &str, to: &str) -> PathBuf {
    let b64 = |c: &str| {
        let out = Command::new("python3")
            .args([
                "-c",
                "import base64,sys; print(base64.b64encode(bytes.fromhex(sys.argv[1]))\
                 .decode().rstrip('=').replace('/', '_'))",
                c,
            ])
            .output()
            .unwrap();
        succeeded(out, "python3 base64").trim().to_string()
    };
    let name = format!("{}-{}", b64(from), b64(to));
    Path::new("deltas").join(&name[..2]).join(&name[2..])
}

/// A bare repository cannot be served over HTTP: publishing into one is refused.
#[test]
fn publishing_needs_an_archive_repository() {
    let env = Env::new();
    env.compose_fake_os("1", &[], &[]);
    let out = Command::new(env!("CARGO_BIN_EXE_stratum"))
        .args(["compose", "publish", "--ref", "os/x", "--repo"])
        .arg(&env.src)
        .arg("--to")
        .arg(&env.src)
        .output()
        .unwrap();
    let e = err(out);
    assert!(e.contains("archive repository"), "{e}");
}
