#!/usr/bin/env python3
"""The driver of `make test`: times its phases, runs every test binary on a fixed number of
workers, and reports where the time went.

  tests/run.py begin                       forget the times of an earlier run
  tests/run.py phase NAME -- COMMAND...    run COMMAND as the phase NAME, timed
  tests/run.py tests [OPTIONS] -- CARGO_TEST_ARGS...
                                           build every test binary with one `cargo test
                                           --no-run CARGO_TEST_ARGS` and run them
  tests/run.py report                      print the phase table and the slowest tests, and
                                           save them as target/test-times.txt
  tests/run.py durations                   print the remembered durations of the jobs that
                                           take 5 s or more: tests/durations.tsv's contents

`tests` runs each test of a libtest binary in its own process, and the binaries of the
packages named by --whole (the VM scenarios, whose trials share the images they build) whole,
with --test-threads=1. Jobs start longest first, by the durations of earlier runs kept in
$STRATUM_CACHE/test-durations.tsv (or, for a job that file lacks, tests/durations.tsv: those
measured on two cores, so that a run on an empty cache is balanced too), on --jobs workers that each take the next job when they
are free: the VM scenarios start as soon as the binaries exist and the host tests fill the
other worker's time. A VM binary records the time of each of its trials in the file named by
STRATUM_TEST_TIMES.

Everything this run measured is under target/test-times/: phases.tsv (name, start, seconds,
exit status), tests.tsv (test, seconds, result, worker) and trials.tsv (the VM binaries').
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIMES = ROOT / "target" / "test-times"
REPORT = ROOT / "target" / "test-times.txt"
SEED = ROOT / "tests" / "durations.tsv"
# Jobs shorter than this are left out of tests/durations.tsv (their order hardly matters).
SEED_MIN_SECONDS = 5.0
SLOWEST = 15
# Expected seconds of a job never seen before: a VM binary boots several machines.
GUESS_WHOLE = 600.0
GUESS_TEST = 1.0


def cache_dir():
    c = os.environ.get("STRATUM_CACHE")
    return Path(c) if c else Path.home() / ".cache" / "stratum"


def history_path():
    return cache_dir() / "test-durations.tsv"


def append(name, fields):
    TIMES.mkdir(parents=True, exist_ok=True)
    with open(TIMES / name, "a", encoding="utf-8") as f:
        f.write("\t".join(str(x) for x in fields) + "\n")


def read_tsv(path):
    try:
        with open(path, encoding="utf-8") as f:
            return [line.rstrip("\n").split("\t") for line in f if line.strip()]
    except FileNotFoundError:
        return []


def duration(seconds):
    s = int(round(seconds))
    if s < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{s} s"
    return f"{s // 60} min {s % 60:02d} s"


# --- begin, phase ---------------------------------------------------------------------------


def cmd_begin(_args):
    if TIMES.is_dir():
        for f in TIMES.iterdir():
            f.unlink()
    append("phases.tsv", ["begin", f"{time.time():.3f}", "0", "0"])
    return 0


def cmd_phase(args):
    if len(args) < 3 or args[1] != "--":
        return usage()
    name, command = args[0], args[2:]
    start = time.time()
    print(f"==> {name}: {' '.join(command)}", flush=True)
    rc = subprocess.call(command)
    seconds = time.time() - start
    append("phases.tsv", [name, f"{start:.3f}", f"{seconds:.3f}", rc])
    print(f"==> {name}: {'done' if rc == 0 else f'FAILED (exit {rc})'} in {duration(seconds)}",
          flush=True)
    return rc


# --- tests ----------------------------------------------------------------------------------


class Binary:
    """A test executable from cargo's build messages."""

    def __init__(self, package, target, kind, executable, manifest_dir):
        self.package = package
        self.target = target
        self.kind = kind
        self.executable = executable
        self.manifest_dir = manifest_dir

    @property
    def name(self):
        """The package, and the target when it is not the library's unit tests."""
        if self.kind == "lib":
            return self.package
        return f"{self.package}:{self.target}"

    def env(self):
        # What cargo sets for a test it runs (the tests read files of their package).
        e = dict(os.environ)
        e["CARGO_MANIFEST_DIR"] = self.manifest_dir
        e["CARGO_PKG_NAME"] = self.package
        e["CARGO_CRATE_NAME"] = self.target.replace("-", "_")
        return e


class Job:
    def __init__(self, binary, test=None):
        self.binary = binary
        self.test = test

    @property
    def whole(self):
        return self.test is None

    @property
    def id(self):
        return self.binary.name if self.whole else f"{self.binary.name}::{self.test}"

    def command(self):
        if self.whole:
            return [self.binary.executable, "--test-threads=1"]
        return [self.binary.executable, "--exact", self.test, "--test-threads=1"]


def package_name(manifest):
    with open(manifest, "rb") as f:
        return tomllib.load(f)["package"]["name"]


def build_binaries(cargo_args):
    """One `cargo test --no-run` for every test binary; returns them."""
    start = time.time()
    command = ["cargo", "test", "--no-run", "--message-format=json-render-diagnostics",
               *cargo_args]
    print(f"==> test binaries: {' '.join(command)}", flush=True)
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    binaries = []
    for line in proc.stdout:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
            continue
        if not msg.get("profile", {}).get("test"):
            continue
        target = msg["target"]
        kind = target["kind"][0]
        manifest = Path(msg["manifest_path"])
        package = package_name(manifest)
        binaries.append(Binary(package, target["name"], kind, msg["executable"],
                               str(manifest.parent)))
    rc = proc.wait()
    seconds = time.time() - start
    append("phases.tsv", ["test binaries", f"{start:.3f}", f"{seconds:.3f}", rc])
    if rc != 0:
        print(f"==> test binaries: FAILED (exit {rc})", flush=True)
        return None
    print(f"==> test binaries: {len(binaries)} in {duration(seconds)}", flush=True)
    return binaries


def list_tests(binary):
    out = subprocess.run([binary.executable, "--list", "--format", "terse"],
                         cwd=binary.manifest_dir, env=binary.env(), capture_output=True,
                         text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{binary.name}: --list failed: {out.stderr.strip()}")
    tests = []
    for line in out.stdout.splitlines():
        name, sep, kind = line.rpartition(": ")
        if sep and kind == "test":
            tests.append(name)
    return tests


class Runner:
    def __init__(self, jobs, workers, history):
        self.pending = queue.Queue()
        for j in sorted(jobs, key=lambda j: -self.expected(j, history)):
            self.pending.put(j)
        self.workers = workers
        self.lock = threading.Lock()
        self.failed = []
        self.children = set()
        self.stopping = False
        self.count = len(jobs)
        self.done = 0

    @staticmethod
    def expected(job, history):
        if job.id in history:
            return history[job.id]
        return GUESS_WHOLE if job.whole else GUESS_TEST

    def say(self, text):
        with self.lock:
            print(text, flush=True)

    def run(self):
        threads = [threading.Thread(target=self.worker, args=(w,), daemon=True)
                   for w in range(1, self.workers + 1)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(0.5)
        return self.failed

    def stop(self):
        with self.lock:
            self.stopping = True
            children = list(self.children)
        for c in children:
            try:
                os.killpg(c.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def worker(self, number):
        while not self.stopping:
            try:
                job = self.pending.get_nowait()
            except queue.Empty:
                return
            self.run_job(job, number)

    def spawn(self, job, **kw):
        env = job.binary.env()
        if job.whole:
            env["STRATUM_TEST_TIMES"] = str(TIMES / "trials.tsv")
        child = subprocess.Popen(job.command(), cwd=job.binary.manifest_dir, env=env,
                                 stdin=subprocess.DEVNULL, start_new_session=True, text=True,
                                 errors="replace", **kw)
        with self.lock:
            self.children.add(child)
        return child

    def run_job(self, job, worker):
        start = time.time()
        if job.whole:
            # Long: its output is shown as it comes, each line prefixed with its name.
            self.say(f"[{job.id}] started on worker {worker}")
            child = self.spawn(job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            for line in child.stdout:
                self.say(f"[{job.id}] {line.rstrip()}")
            rc = child.wait()
            output = ""
        else:
            child = self.spawn(job, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            output, _ = child.communicate()
            rc = child.returncode
        seconds = time.time() - start
        with self.lock:
            self.children.discard(child)
            self.done += 1
            done = self.done
        result = "ok" if rc == 0 else "FAILED"
        append("tests.tsv", [job.id, f"{seconds:.3f}", result, worker, f"{start:.3f}",
                             "whole" if job.whole else "test"])
        width = len(str(self.count))
        line = f"{result:6} {duration(seconds):>12}  [{done:>{width}}/{self.count}] {job.id}"
        if rc != 0:
            with self.lock:
                self.failed.append(job.id)
            if output:
                line += "\n" + "\n".join(f"    {l}" for l in output.rstrip().splitlines())
        self.say(line)


def read_durations(path):
    durations = {}
    for row in read_tsv(path):
        if len(row) == 2:
            try:
                durations[row[0]] = float(row[1])
            except ValueError:
                pass
    return durations


def read_history():
    history = read_durations(SEED)
    history.update(read_durations(history_path()))
    return history


def cmd_durations(_args):
    for name, seconds in sorted(read_durations(history_path()).items()):
        if seconds >= SEED_MIN_SECONDS:
            print(f"{name}\t{seconds:.0f}")
    return 0


def save_history(history):
    for row in read_tsv(TIMES / "tests.tsv"):
        if row[2] == "ok":
            history[row[0]] = float(row[1])
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for k in sorted(history):
            f.write(f"{k}\t{history[k]:.3f}\n")
    os.replace(tmp, path)


def cmd_tests(args):
    jobs_n = 2
    whole = []
    only = None
    while args and args[0] != "--":
        opt = args.pop(0)
        if opt == "--jobs" and args:
            jobs_n = int(args.pop(0))
        elif opt == "--whole" and args:
            whole.append(args.pop(0))
        elif opt in ("--only-whole", "--skip-whole"):
            only = opt
        else:
            return usage()
    if not args:
        return usage()
    binaries = build_binaries(args[1:])
    if binaries is None:
        return 1
    start = time.time()
    jobs = []
    for b in binaries:
        is_whole = b.package in whole and b.kind == "test"
        if (only == "--only-whole" and not is_whole) or (only == "--skip-whole" and is_whole):
            continue
        if is_whole:
            jobs.append(Job(b))
        else:
            jobs.extend(Job(b, t) for t in list_tests(b))
    history = read_history()
    runner = Runner(jobs, jobs_n, history)
    print(f"==> running {len(jobs)} jobs on {jobs_n} workers, longest first", flush=True)

    def interrupted(signum, _frame):
        runner.stop()
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGINT, interrupted)
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    failed = runner.run()
    seconds = time.time() - start
    append("phases.tsv", ["tests", f"{start:.3f}", f"{seconds:.3f}", 1 if failed else 0])
    save_history(history)
    if failed:
        print(f"==> {len(failed)} of {len(jobs)} failed:", flush=True)
        for f in failed:
            print(f"    {f}")
        return 1
    print(f"==> all {len(jobs)} passed in {duration(seconds)}", flush=True)
    return 0


# --- report ---------------------------------------------------------------------------------


def cmd_report(_args):
    phases = read_tsv(TIMES / "phases.tsv")
    tests = read_tsv(TIMES / "tests.tsv")
    trials = read_tsv(TIMES / "trials.tsv")
    begin = next((float(p[1]) for p in phases if p[0] == "begin"), None)
    lines = []
    if begin is not None:
        total = time.time() - begin
        when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(begin))
        lines.append(f"make test: {duration(total)}, started {when}")
    lines.append("")
    lines.append(f"{'phase':<40} {'time':>12}  result")
    for p in phases:
        if p[0] == "begin":
            continue
        result = "ok" if p[3] == "0" else f"exit {p[3]}"
        lines.append(f"{p[0]:<40} {duration(float(p[2])):>12}  {result}")
    # Each worker's share of the tests phase: what it ran and how long it was busy.
    workers = {}
    for t in tests:
        w = workers.setdefault(t[3], {"busy": 0.0, "whole": [], "tests": 0})
        w["busy"] += float(t[1])
        if t[5] == "whole":
            w["whole"].append(t[0])
        else:
            w["tests"] += 1
    for number in sorted(workers, key=int):
        w = workers[number]
        what = ", ".join(x.split(":")[-1] for x in w["whole"])
        if w["tests"]:
            what = f"{what} + {w['tests']} host tests" if what else f"{w['tests']} host tests"
        lines.append(f"  worker {number}: {duration(w['busy'])} busy: {what}")
    # The slowest tests: a VM binary's trials stand for it; host tests as they ran.
    timed = [(float(t[1]), t[0], t[2]) for t in tests if t[5] == "test"]
    timed += [(float(t[2]), f"{t[0]}::{t[1]}", t[3]) for t in trials]
    timed.sort(reverse=True)
    lines.append("")
    lines.append(f"the {min(SLOWEST, len(timed))} slowest of {len(timed)} tests")
    for seconds, name, result in timed[:SLOWEST]:
        lines.append(f"  {duration(seconds):>12}  {result:6}  {name}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(text, encoding="utf-8")
    print(f"(saved as {REPORT.relative_to(ROOT)})")
    return 0


def usage():
    print(__doc__.strip(), file=sys.stderr)
    return 2


def main(argv):
    commands = {"begin": cmd_begin, "phase": cmd_phase, "tests": cmd_tests,
                "report": cmd_report, "durations": cmd_durations}
    if not argv or argv[0] not in commands:
        return usage()
    return commands[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
