//! `make bench` (package layering): what layering costs on a real Debian system (the layering
//! tests' fixture), measured in one run, medians of BENCH_RUNS runs (default 3):
//!
//! 1. `stratum install PKG --apply-now` of a small package already in the package cache,
//!    against the naive way to the same result: a full copy of the deployment (`cp -a`),
//!    `apt-get install` of the same .deb in a chroot of the copy, the copy put in image layout
//!    (its `/etc` as `/usr/etc`), `ostree commit` of it into the sysroot's repository and
//!    `stratum deploy --apply-now` of that commit. Target: stratum/naive <= 0.3.
//! 2. A second package while one is layered, against the first. Target: second/first <= 1.2.
//! 3. `stratum upgrade --apply-now` to a new base commit with N = 0, 1, 5, 10 small packages
//!    layered, each replayed from the cache (the pull is included; N = 0 is the plain upgrade).
//!
//! Every figure is a wall-clock time and a CPU time (user + system, child processes
//! included): on a machine shared with other work the wall-clock time also holds waits for the
//! CPU and the disk, the CPU time does not. Where `stratum`'s time goes is printed too: the
//! time from each line of its stderr (progress, and its log with `RUST_LOG=debug`) to the
//! next, and the same install staged (no boot set written).
//!
//! The table is printed and written to target/bench-layering.txt.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::debian::{Deb, Debian};
use common::{ok, succeeded};

/// Numbers of packages replayed on a new base.
const REPLAY_COUNTS: &[usize] = &[0, 1, 5, 10];
/// Target ratios: stratum/naive for one package, second/first package.
const TARGET_FIRST: f64 = 0.3;
const TARGET_SECOND: f64 = 1.2;

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// A small package: a program and its copyright file, no maintainer scripts.
fn small(name: &str) -> Deb<'static> {
    let name = leak(name.to_string());
    Deb {
        name,
        version: "1.0-1",
        files: Box::leak(Box::new([
            (
                leak(format!("usr/bin/{name}")),
                leak(format!("#!/bin/sh\necho {name}\n")),
            ),
            (
                leak(format!("usr/share/doc/{name}/copyright")),
                "Public domain.\n",
            ),
        ])),
        ..Default::default()
    }
}

fn replay_name(i: usize) -> String {
    format!("t-replay{i}")
}

/// Wall-clock and CPU time (user + system, the children's included) of one piece of work.
#[derive(Debug, Default, Clone, Copy)]
struct Cost {
    wall: Duration,
    cpu: Duration,
}

impl std::ops::Add for Cost {
    type Output = Cost;
    fn add(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall + o.wall,
            cpu: self.cpu + o.cpu,
        }
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, o: Cost) -> Cost {
        Cost {
            wall: self.wall.saturating_sub(o.wall),
            cpu: self.cpu.saturating_sub(o.cpu),
        }
    }
}

/// CPU time from `/proc/PID/stat`: the process's own (`utime`, `stime`) and, with
/// `children`, that of the children it waited for (`cutime`, `cstime`). Linux reports them in
/// USER_HZ, 100 per second.
fn proc_cpu(pid: &str, children: bool) -> Duration {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Duration::ZERO;
    };
    // Fields after the command name, which is in parentheses: state is field 3.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    let field = |n: usize| f.get(n - 3).copied().unwrap_or(0);
    let mut ticks = field(14) + field(15);
    if children {
        ticks += field(16) + field(17);
    }
    Duration::from_millis(ticks * 10)
}

/// The CPU time of the children this process has waited for so far.
fn children_cpu() -> Duration {
    proc_cpu("self", true).saturating_sub(proc_cpu("self", false))
}

fn timed<T>(f: impl FnOnce() -> T) -> (Cost, T) {
    let (t, c) = (Instant::now(), children_cpu());
    let r = f();
    let cost = Cost {
        wall: t.elapsed(),
        cpu: children_cpu().saturating_sub(c),
    };
    (cost, r)
}

/// A sysroot and the run directory its `stratum` commands use.
struct Target<'a> {
    sysroot: &'a Path,
    run: &'a Path,
}

impl Target<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_stratum"));
        c.arg("--sysroot")
            .arg(self.sysroot)
            .args(args)
            .env("STRATUM_RUN_DIR", self.run);
        c
    }

    /// `stratum ARGS`, which must succeed; its stdout.
    fn stratum(&self, args: &[&str]) -> String {
        ok(self.command(args).output().unwrap())
    }

    /// `stratum ARGS` timed, with its debug log on: each line of its stderr with the time and
    /// the CPU time used up to its arrival.
    fn traced(&self, args: &[&str]) -> Trace {
        let (t, c) = (Instant::now(), children_cpu());
        let mut child = self
            .command(args)
            .env("RUST_LOG", "debug")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id().to_string();
        let mut lines = Vec::new();
        for line in BufReader::new(child.stderr.take().unwrap()).lines() {
            let at = Cost {
                wall: t.elapsed(),
                cpu: proc_cpu(&pid, true),
            };
            lines.push((at, line.unwrap()));
        }
        let status = child.wait().unwrap();
        let total = Cost {
            wall: t.elapsed(),
            cpu: children_cpu().saturating_sub(c),
        };
        let text: Vec<&str> = lines.iter().map(|(_, l)| l.as_str()).collect();
        assert!(
            status.success(),
            "stratum {args:?}: {status}\n{}",
            text.join("\n")
        );
        Trace { total, lines }
    }

    fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.stratum(&["status", "--json"])).unwrap()
    }

    /// The root of the deployment that boots next.
    fn default_root(&self) -> PathBuf {
        let s = self.status();
        let d = &s["deployments"][0];
        self.sysroot.join(format!(
            "ostree/deploy/default/deploy/{}.{}",
            d["checksum"].as_str().unwrap(),
            d["serial"]
        ))
    }

    fn layered_count(&self) -> usize {
        self.status()["deployments"][0]["layered-packages"]
            .as_array()
            .map_or(0, Vec::len)
    }
}

/// One timed `stratum` run: its cost and its stderr lines with what had been spent when
/// each arrived.
struct Trace {
    total: Cost,
    lines: Vec<(Cost, String)>,
}

impl Trace {
    /// The cost from each line to the next (the first step from the start), by the line's
    /// text made comparable between runs (see [`step_label`]).
    fn steps(&self) -> Vec<(String, Cost)> {
        let mut out = vec![];
        let mut label = "start-up: state, lock".to_string();
        let mut at = Cost::default();
        for (t, line) in &self.lines {
            out.push((label, *t - at));
            label = step_label(line);
            at = *t;
        }
        out.push((label, self.total - at));
        out
    }
}

/// A progress or log line without what varies between runs: the log's time stamp and level,
/// numbers, checksums, paths and what follows a colon in a progress line.
fn step_label(line: &str) -> String {
    let mut words: Vec<&str> = line.split_whitespace().collect();
    let logged = words
        .first()
        .is_some_and(|w| w.len() > 20 && w.ends_with('Z') && w.contains('T'));
    if logged {
        // time stamp, level, target:
        words.drain(..words.len().min(3));
    }
    let mut out = vec![];
    for w in words {
        let varying = w.contains('/') || w.chars().filter(char::is_ascii_digit).count() > 0;
        if varying {
            continue;
        }
        out.push(w.trim_matches('"'));
        if !logged && w.ends_with(':') {
            break;
        }
    }
    let label = out.join(" ");
    if label.chars().count() > 58 {
        label.chars().take(55).collect::<String>() + "..."
    } else {
        label
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The median wall-clock and the median CPU time.
fn median_cost(v: impl IntoIterator<Item = Cost>) -> Cost {
    let v: Vec<Cost> = v.into_iter().collect();
    Cost {
        wall: median(v.iter().map(|c| c.wall).collect()),
        cpu: median(v.iter().map(|c| c.cpu).collect()),
    }
}

/// Medians per step over traces, in the order the steps first appear.
fn step_medians(traces: &[Trace]) -> Vec<(String, Cost)> {
    let mut order: Vec<String> = vec![];
    let mut by: BTreeMap<String, Vec<Cost>> = BTreeMap::new();
    for t in traces {
        let mut seen: BTreeMap<String, Cost> = BTreeMap::new();
        for (label, d) in t.steps() {
            if !order.contains(&label) {
                order.push(label.clone());
            }
            let e = seen.entry(label).or_default();
            *e = *e + d;
        }
        for label in &order {
            by.entry(label.clone())
                .or_default()
                .push(seen.get(label).copied().unwrap_or_default());
        }
    }
    order
        .into_iter()
        .map(|l| {
            let m = median_cost(by.remove(&l).unwrap_or_default());
            (l, m)
        })
        .collect()
}

fn sh(script: &str, args: &[&Path]) -> String {
    succeeded(
        Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("sh")
            .args(args)
            .output()
            .unwrap(),
        script,
    )
}

/// The naive way's steps, timed.
#[derive(Default)]
struct Naive {
    copy: Cost,
    apt: Cost,
    commit: Cost,
    deploy: Cost,
}

impl Naive {
    fn total(&self) -> Cost {
        self.copy + self.apt + self.commit + self.deploy
    }
}

/// Layers `deb` the naive way on `target`'s default deployment; `work` is scratch space.
fn naive_install(target: &Target, deb: &Path, work: &Path) -> Naive {
    let copy = work.join("copy");
    let mut n = Naive::default();
    let from = target.default_root();
    (n.copy, _) = timed(|| {
        sh("cp -a --no-target-directory \"$1\" \"$2\"", &[&from, &copy]);
    });
    (n.apt, _) = timed(|| {
        // What the deployment's /var has at boot (the dpkg database's link), and the package.
        sh(
            "set -e; r=$1; f=$r/usr/share/factory/var; \
             if [ -d \"$f\" ]; then cp -a \"$f/.\" \"$r/var/\"; fi; \
             mkdir -p \"$r/var/lib\" \"$r/tmp\"; \
             [ -L \"$r/var/lib/dpkg\" ] || ln -s ../../usr/lib/sysimage/dpkg \"$r/var/lib/dpkg\"; \
             cp \"$2\" \"$r/tmp/pkg.deb\"; \
             unshare --mount --propagation private sh -c 'set -e; \
               mount --rbind /dev \"$1/dev\"; mount -t proc proc \"$1/proc\"; \
               exec chroot \"$1\" /usr/bin/env -i PATH=/usr/sbin:/usr/bin \
                 DEBIAN_FRONTEND=noninteractive \
                 apt-get install -y -q --no-install-recommends /tmp/pkg.deb' sh \"$r\" >/dev/null",
            &[&copy, deb],
        );
    });
    let csum;
    (n.commit, csum) = timed(|| {
        // Image layout: the image's /etc is /usr/etc; /var and /tmp ship nothing.
        sh(
            "set -e; r=$1; rm -rf \"$r/usr/etc\"; mv \"$r/etc\" \"$r/usr/etc\"; \
             find \"$r/var\" \"$r/tmp\" -mindepth 1 -delete; \
             ostree commit --repo=\"$2/ostree/repo\" --orphan --no-bindings --bootable \
               --subject='naive layering' --tree=dir=\"$r\"",
            &[&copy, target.sysroot],
        )
    });
    let csum = csum.trim().to_string();
    (n.deploy, _) = timed(|| target.stratum(&["deploy", &csum, "--apply-now"]));
    let layered = target.default_root().join("usr/bin/t-small");
    assert!(layered.is_file(), "the naive way did not install t-small");
    sh("rm -rf \"$1\"", &[&copy]);
    n
}

/// Commits a new base: the current one with one more file, as `os/x` in `src`.
fn new_base(src: &Path, work: &Path, serial: usize) -> String {
    let mark = work.join(format!("mark-{serial}"));
    let file = mark.join("usr/share/stratum-bench/base");
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, format!("{serial}\n")).unwrap();
    let out = sh(
        &format!(
            "ostree commit --repo=\"$1\" --branch=os/x --bootable --subject='base {serial}' \
             --add-metadata-string=version=2.{serial} --tree=ref=os/x --tree=dir=\"$2\""
        ),
        &[src, &mark],
    );
    out.trim().to_string()
}

fn verdict(ratio: f64, target: f64) -> &'static str {
    if ratio <= target {
        "met"
    } else {
        "MISSED"
    }
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let load_before = fs::read_to_string("/proc/loadavg").unwrap_or_default();

    eprintln!("layering bench: composing the Debian system");
    let mut debs = vec![small("t-small"), small("t-second")];
    let max_replay = REPLAY_COUNTS.iter().copied().max().unwrap_or(0);
    debs.extend((1..=max_replay).map(|i| small(&replay_name(i))));
    let d = Debian::new(&debs, &[]);
    let work = d.env.dir.path().join("bench");
    fs::create_dir_all(&work).unwrap();
    let s = Target {
        sysroot: &d.env.sysroot,
        run: &d.env.run,
    };
    let files = sh(
        "find \"$1\" -xdev | wc -l",
        &[&d.env.dir.path().join("root")],
    );

    // The packages in the cache and the indexes fetched, as after any earlier layering.
    s.stratum(&["install", "t-small", "t-second", "--apply-now"]);
    s.stratum(&["uninstall", "--all", "--apply-now"]);

    // The naive way works on a sysroot of its own with the same base deployed twice, so that
    // each of its deploys drops a deployment, as each `stratum install` does.
    let naive_sysroot = d.env.dir.path().join("naive-sysroot");
    let naive_run = d.env.dir.path().join("naive-run");
    ok(Command::new(env!("CARGO_BIN_EXE_stratum"))
        .args([
            "install",
            "to-filesystem",
            "--karg",
            "root=UUID=1234",
            "--ref",
            "os/x",
            "--repo",
        ])
        .arg(&d.env.src)
        .arg(&naive_sysroot)
        .output()
        .unwrap());
    let n = Target {
        sysroot: &naive_sysroot,
        run: &naive_run,
    };
    n.stratum(&["deploy", &d.base, "--apply-now"]);
    let deb = d.debs.join("t-small_1.0-1_amd64.deb");

    let (mut first, mut second, mut staged, mut naive) = (vec![], vec![], vec![], vec![]);
    for i in 0..runs {
        eprintln!("layering bench: run {}/{runs}: stratum install", i + 1);
        first.push(s.traced(&["install", "t-small", "--apply-now"]));
        assert!(d.installed().contains_key("t-small"));
        second.push(s.traced(&["install", "t-second", "--apply-now"]));
        assert!(d.installed().contains_key("t-second"));
        assert_eq!(s.layered_count(), 2);
        s.stratum(&["uninstall", "--all", "--apply-now"]);
        staged.push(s.traced(&["install", "t-small", "--stage"]));
        s.stratum(&["cleanup", "-p"]);
        assert_eq!(s.layered_count(), 0);

        eprintln!("layering bench: run {}/{runs}: the naive way", i + 1);
        naive.push(naive_install(&n, &deb, &work));
        n.stratum(&["deploy", &d.base, "--apply-now"]);
    }

    // Replays on new bases, following the source repository as a remote.
    let url = format!("file://{}", d.env.src.display());
    s.stratum(&["remote", "add", "src", &url, "--no-sign-verify"]);
    s.stratum(&["rebase", "src:os/x", "--apply-now"]);
    let mut replays = vec![];
    let mut layered = 0;
    let mut serial = 0;
    for &count in REPLAY_COUNTS {
        if count > layered {
            let names: Vec<String> = (layered + 1..=count).map(replay_name).collect();
            let mut args = vec!["install"];
            args.extend(names.iter().map(String::as_str));
            args.push("--apply-now");
            s.stratum(&args);
            layered = count;
        }
        eprintln!("layering bench: replaying {count} package(s) on new bases");
        let mut traces = vec![];
        for _ in 0..runs {
            serial += 1;
            let base = new_base(&d.env.src, &work, serial);
            traces.push(s.traced(&["upgrade", "--apply-now"]));
            let st = s.status();
            let dep = &st["deployments"][0];
            let deployed = if count == 0 {
                dep["checksum"].as_str()
            } else {
                dep["base-checksum"].as_str()
            };
            assert_eq!(
                deployed,
                Some(base.as_str()),
                "upgrade did not deploy {base}"
            );
            assert_eq!(s.layered_count(), count);
        }
        replays.push((count, traces));
    }

    let load_after = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let report = table(&Results {
        runs,
        files: files.trim(),
        load: [load_before.trim(), load_after.trim()],
        first: &first,
        second: &second,
        staged: &staged,
        naive: &naive,
        replays: &replays,
    });
    print!("{report}");
    let target_dir = top.join("target");
    fs::create_dir_all(&target_dir).unwrap();
    fs::write(target_dir.join("bench-layering.txt"), &report).unwrap();
    eprintln!("layering bench: saved as target/bench-layering.txt");
}

/// What the table is made of.
struct Results<'a> {
    runs: usize,
    files: &'a str,
    /// /proc/loadavg before and after.
    load: [&'a str; 2],
    first: &'a [Trace],
    second: &'a [Trace],
    staged: &'a [Trace],
    naive: &'a [Naive],
    replays: &'a [(usize, Vec<Trace>)],
}

/// `  label ...   wall ms   cpu ms`
fn row(w: &mut String, label: &str, c: Cost) {
    let _ = writeln!(
        w,
        "  {label:<60} {:>8.0} {:>8.0}",
        c.wall.as_secs_f64() * 1e3,
        c.cpu.as_secs_f64() * 1e3
    );
}

fn ratio_row(w: &mut String, label: &str, a: Cost, b: Cost, target: f64) {
    let wall = a.wall.as_secs_f64() / b.wall.as_secs_f64();
    let cpu = a.cpu.as_secs_f64() / b.cpu.as_secs_f64().max(1e-3);
    let _ = writeln!(
        w,
        "  {label:<60} {wall:>8.2} {cpu:>8.2}   target <= {target}: wall {}, cpu {}",
        verdict(wall, target),
        verdict(cpu, target)
    );
}

fn steps(w: &mut String, traces: &[Trace]) {
    for (label, c) in step_medians(traces) {
        row(w, &format!("  {label}"), c);
    }
}

fn table(r: &Results) -> String {
    let totals = |v: &[Trace]| median_cost(v.iter().map(|t| t.total));
    let (first, second) = (totals(r.first), totals(r.second));
    let naive = median_cost(r.naive.iter().map(Naive::total));
    let step = |f: fn(&Naive) -> Cost| median_cost(r.naive.iter().map(f));
    let mut o = String::new();
    let w = &mut o;
    let _ = writeln!(
        w,
        "Package layering on a Debian bookworm root ({} files): medians of {} runs,\n\
         wall-clock and CPU time (user + system, child processes included), in ms.\n\
         Load average before: {}; after: {}",
        r.files, r.runs, r.load[0], r.load[1]
    );
    let _ = writeln!(w, "\n  {:<60} {:>8} {:>8}", "", "wall", "cpu");
    let _ = writeln!(w, "1. One small package, already in the package cache");
    row(w, "stratum install t-small --apply-now", first);
    row(w, "naive way, total", naive);
    row(w, "  cp -a of the deployment", step(|n| n.copy));
    row(
        w,
        "  apt-get install of the .deb in a chroot",
        step(|n| n.apt),
    );
    row(w, "  /etc to /usr/etc, ostree commit", step(|n| n.commit));
    row(
        w,
        "  stratum deploy --apply-now of that commit",
        step(|n| n.deploy),
    );
    ratio_row(w, "ratio stratum/naive", first, naive, TARGET_FIRST);
    let _ = writeln!(w, "\n2. A second package while one is layered");
    row(w, "first: install t-small", first);
    row(w, "second: install t-second (t-small layered)", second);
    ratio_row(w, "ratio second/first", second, first, TARGET_SECOND);
    let _ = writeln!(
        w,
        "\n3. stratum upgrade --apply-now to a new base, requests replayed (pull included)"
    );
    let none = r
        .replays
        .iter()
        .find(|(c, _)| *c == 0)
        .map(|(_, t)| totals(t));
    for (count, traces) in r.replays {
        let m = totals(traces);
        row(w, &format!("{count} layered package(s)"), m);
        if let Some(none) = none.filter(|_| *count > 0) {
            row(w, "  over the plain upgrade", m - none);
        }
    }
    let _ = writeln!(
        w,
        "\nWhere the time goes: from each progress or log line (RUST_LOG=debug) to the next"
    );
    let _ = writeln!(w, "stratum install t-small --apply-now:");
    steps(w, r.first);
    row(
        w,
        "the same install staged (--stage: boot set not written)",
        totals(r.staged),
    );
    let _ = writeln!(w, "stratum install t-second (t-small layered) --apply-now:");
    steps(w, r.second);
    if let Some((count, traces)) = r.replays.last() {
        let _ = writeln!(
            w,
            "stratum upgrade --apply-now with {count} layered packages:"
        );
        steps(w, traces);
    }
    o
}
