//! The VM test harness: builds real disk images with the real `stratum`, boots them in QEMU
//! (OVMF + GRUB, TCG unless told otherwise), and reads back what happened.
//!
//! - The Debian root is built once from a manifest of `images/` by `stratum compose
//!   install` and cached under `$STRATUM_CACHE` (default `~/.cache/stratum`), keyed by its
//!   inputs.
//! - A guest is that root plus Stratum installed with `make install DESTDIR=…` plus a small
//!   systemd unit that runs a scenario script from a second virtio disk (label
//!   `STRATUMTEST`) at the end of each boot and writes its observations back to that disk.
//! - QEMU runs with `-nic none`, its serial console captured to a file; every run has a hard
//!   timeout; the harness waits for QEMU to exit (the guest powers off), never for a fixed
//!   time. Console logs of failed tests are kept under `target/vm-artifacts/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

pub mod aptrepo;
pub mod cut;
mod qemu;
pub use qemu::{Boot, CutReport, Firmware, PowerCut, Qemu, QemuOutcome};

/// Paths of the project and its build outputs.
#[derive(Debug, Clone)]
pub struct Project {
    pub root: PathBuf,
    /// Cargo's target directory: `$CARGO_TARGET_DIR` when set (as for cargo and the
    /// Makefile), else `target/` in the project.
    pub target: PathBuf,
    pub cache: PathBuf,
    pub artifacts: PathBuf,
    /// The manifest of `images/` whose root the guests are made from (`vm`: bookworm).
    pub manifest: &'static str,
    /// Whether guests boot with Secure Boot enforced where their ESP allows it (see
    /// [`firmware_for`]).
    pub secure_boot: bool,
}

impl Project {
    /// Finds the project from this crate's location.
    pub fn locate() -> Result<Project> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../..")
            .canonicalize()?;
        let cache = match std::env::var_os("STRATUM_CACHE") {
            Some(c) => PathBuf::from(c),
            None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
                .join(".cache/stratum"),
        };
        let target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(t) => root.join(t),
            None => root.join("target"),
        };
        let artifacts = root.join("target/vm-artifacts");
        fs::create_dir_all(&artifacts)?;
        fs::create_dir_all(&cache)?;
        Ok(Project {
            root,
            target,
            cache,
            artifacts,
            manifest: "vm",
            secure_boot: true,
        })
    }

    /// The `stratum` binary built by `make build`.
    pub fn stratum(&self) -> PathBuf {
        self.target.join("release/stratum")
    }

    /// `stratum` built with the `failpoints` feature by `make build-failpoints`: the only build
    /// that honours `FAILPOINTS` (the one `make install` ships ignores it).
    pub fn stratum_failpoints(&self) -> PathBuf {
        self.target.join("release/examples/stratum-failpoints")
    }

    /// Replaces `/usr/bin/stratum` in a guest root by the failpoints build, for scenarios that
    /// crash it at a failpoint inside the guest (a `customize` step of
    /// [`Project::build_image_with`]).
    pub fn install_failpoints(&self, root: &Path) -> Result<()> {
        let bin = self.stratum_failpoints();
        if !bin.is_file() {
            bail!(
                "{} is missing: build it with `make build-failpoints`",
                bin.display()
            );
        }
        copy_new(&bin, &root.join("usr/bin/stratum"))
    }

    /// The same project, its guests made from `images/<manifest>.toml` (`vm-trixie`: Debian
    /// 13).
    pub fn on(self, manifest: &'static str) -> Project {
        Project { manifest, ..self }
    }

    /// The same project, its guests booting without Secure Boot: for scenarios that prove
    /// something else and boot often, as Secure Boot costs 8–12 s a boot under TCG (SMM and
    /// shim's hashing of the kernel). The signed chain on their ESP boots all the same.
    pub fn without_secure_boot(self) -> Project {
        Project {
            secure_boot: false,
            ..self
        }
    }

    /// The cached root of the project's manifest (built when missing).
    pub fn debian_root(&self) -> Result<PathBuf> {
        self.debian_root_from(self.manifest)
    }

    /// The cached root of the manifest `images/<name>.toml`, built by
    /// `images/build-root.sh` (`stratum compose install`) when missing.
    pub fn debian_root_from(&self, name: &str) -> Result<PathBuf> {
        let out = Command::new("bash")
            .arg(self.root.join("images/build-root.sh"))
            .arg(self.stratum())
            .arg(&self.cache)
            .arg(name)
            .stderr(Stdio::inherit())
            .output()
            .context("running images/build-root.sh")?;
        if !out.status.success() {
            bail!("building the root of images/{name}.toml failed");
        }
        Ok(PathBuf::from(String::from_utf8(out.stdout)?.trim()))
    }

    /// A scratch directory for one test, emptied first.
    pub fn workdir(&self, name: &str) -> Result<PathBuf> {
        let dir = self.root.join("target/vm-work").join(name);
        remove_tree(&dir)?;
        fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    /// Makes a guest root in `dir` from the Debian root: Stratum installed, the scenario
    /// unit enabled. `customize` may add files (write new files only: the copy shares
    /// inodes with the cache).
    pub fn guest_root(
        &self,
        dir: &Path,
        customize: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        self.guest_root_from(&self.debian_root()?, dir, customize)
    }

    /// [`Project::guest_root`] from another cached root (see [`Project::debian_root_from`]).
    pub fn guest_root_from(
        &self,
        base: &Path,
        dir: &Path,
        customize: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<PathBuf> {
        let root = dir.join("rootfs");
        run(Command::new("cp")
            .args(["-a", "--link"])
            .arg(base)
            .arg(&root))?;
        run(Command::new("make")
            .arg("-s")
            .arg("-C")
            .arg(&self.root)
            .arg("install")
            .arg(format!("DESTDIR={}", root.display())))?;
        let guest = self.root.join("tests/vm/guest");
        let lib = root.join("usr/lib/stratum-test");
        fs::create_dir_all(&lib)?;
        copy_new(&guest.join("run-scenario"), &lib.join("run-scenario"))?;
        let unit = root.join("usr/lib/systemd/system/stratum-test-scenario.service");
        copy_new(&guest.join("stratum-test-scenario.service"), &unit)?;
        let wants = root.join("etc/systemd/system/multi-user.target.wants");
        fs::create_dir_all(&wants)?;
        let link = wants.join("stratum-test-scenario.service");
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink(
            "/usr/lib/systemd/system/stratum-test-scenario.service",
            &link,
        )?;
        customize(&root)?;
        Ok(root)
    }

    /// `stratum compose rootfs` of `rootfs` into `repo` on `refname`.
    pub fn compose(
        &self,
        rootfs: &Path,
        repo: &Path,
        refname: &str,
        version: &str,
    ) -> Result<String> {
        self.compose_with(rootfs, repo, refname, version, &[])
    }

    /// [`Project::compose`] with extra options (e.g. `--keep-initramfs`).
    pub fn compose_with(
        &self,
        rootfs: &Path,
        repo: &Path,
        refname: &str,
        version: &str,
        options: &[&str],
    ) -> Result<String> {
        let out = run_output(
            Command::new(self.stratum())
                .args(["compose", "rootfs"])
                .arg(rootfs)
                .arg("--repo")
                .arg(repo)
                .args(["--ref", refname, "--version", version])
                .args(options),
        )?;
        Ok(out.trim().to_string())
    }

    /// `stratum install to-disk` with `bootloader` (`grub`, `grub-unsigned`, `systemd-boot`); returns the
    /// parsed JSON result.
    pub fn install_disk(
        &self,
        repo: &Path,
        refname: &str,
        image: &Path,
        workdir: &Path,
        kargs: &[&str],
        bootloader: &str,
    ) -> Result<serde_json::Value> {
        // `grub-unsigned`: GRUB built on this host, which only boots without Secure Boot.
        let (bootloader, unsigned) = match bootloader {
            "grub-unsigned" => ("grub", true),
            b => (b, false),
        };
        let mut cmd = Command::new(self.stratum());
        // The installed system follows the test disk's repository for updates; its commits
        // are not signed.
        cmd.args([
            "install",
            "to-disk",
            "--json",
            "--size",
            "3G",
            "--remote",
            TEST_REMOTE,
            "--no-sign-verify",
            "--bootloader",
            bootloader,
        ])
        .arg("--repo")
        .arg(repo)
        .args(["--ref", refname])
        .arg("--image")
        .arg(image)
        .arg("--workdir")
        .arg(workdir);
        for k in kargs {
            cmd.arg("--karg").arg(k);
        }
        if unsigned {
            cmd.arg("--unsigned-grub");
        }
        Ok(serde_json::from_str(&run_output(&mut cmd)?)?)
    }
}

/// The second disk: carries `scenario.sh` in, and the guest's observations out.
pub struct TestDisk {
    pub image: PathBuf,
    /// The firmware the guest booted with, once known: [`TestDisk::results`] then checks that
    /// every boot saw it (Secure Boot state and kernel lockdown).
    pub firmware: Option<Firmware>,
}

impl TestDisk {
    /// Makes the test disk with `scenario` (a bash script defining `boot_1`, `boot_2`, …) and
    /// any extra files (path in the disk, contents).
    pub fn create(dir: &Path, scenario: &str, extra: &[(&str, &[u8])]) -> Result<TestDisk> {
        let tree = dir.join("testdisk");
        remove_tree(&tree)?;
        fs::create_dir_all(&tree)?;
        Self::create_in(dir, &tree, scenario, extra)
    }

    fn create_in(
        dir: &Path,
        tree: &Path,
        scenario: &str,
        extra: &[(&str, &[u8])],
    ) -> Result<TestDisk> {
        let tree = tree.to_path_buf();
        fs::create_dir_all(tree.join("out"))?;
        fs::write(tree.join("scenario.sh"), scenario)?;
        for (p, data) in extra {
            let path = tree.join(p);
            fs::create_dir_all(path.parent().context("parent")?)?;
            fs::write(path, data)?;
        }
        let image = dir.join("testdisk.img");
        let f = fs::File::create(&image)?;
        // Room for what it carries (an update repository can be large) plus the results.
        f.set_len((256 << 20) + 2 * tree_size(&tree)?)?;
        drop(f);
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "STRATUMTEST", "-d"])
            .arg(&tree)
            .arg(&image))?;
        Ok(TestDisk {
            image,
            firmware: None,
        })
    }

    /// Like [`TestDisk::create`], also carrying directory trees (path in the disk, source).
    pub fn create_with_tree(
        dir: &Path,
        scenario: &str,
        trees: &[(&str, &Path)],
    ) -> Result<TestDisk> {
        let tree = dir.join("testdisk");
        remove_tree(&tree)?;
        fs::create_dir_all(&tree)?;
        for (dest, src) in trees {
            run(Command::new("cp").arg("-al").arg(src).arg(tree.join(dest)))?;
        }
        Self::create_in(dir, &tree, scenario, &[])
    }

    /// Reads back `out/` from the disk after the VM stopped.
    pub fn results(&self, into: &Path) -> Result<Results> {
        remove_tree(into)?;
        fs::create_dir_all(into)?;
        let out = Command::new("debugfs")
            .arg("-R")
            .arg(format!("rdump /out {}", into.display()))
            .arg(&self.image)
            .output()
            .context("running debugfs")?;
        if !out.status.success() {
            bail!("debugfs: {}", String::from_utf8_lossy(&out.stderr));
        }
        let r = Results {
            dir: into.join("out"),
        };
        if let Some(f) = self.firmware {
            r.expect_firmware(f)?;
        }
        Ok(r)
    }
}

/// What the guest wrote: `boots`, `boot-N.log`, `boot-N.rc`, `boot-N.<name>`.
pub struct Results {
    pub dir: PathBuf,
}

impl Results {
    /// How many boots ran the scenario.
    pub fn boots(&self) -> u32 {
        fs::read_to_string(self.dir.join("boots"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    }

    /// An observation of boot `n`, trimmed; empty when absent.
    pub fn get(&self, n: u32, name: &str) -> String {
        fs::read_to_string(self.dir.join(format!("boot-{n}.{name}")))
            .unwrap_or_default()
            .trim()
            .to_string()
    }

    /// Fails unless observation `name` of boot `n` is `expected`, saying what it was.
    pub fn expect(&self, n: u32, name: &str, expected: &str) -> Result<()> {
        let got = self.get(n, name);
        if got != expected {
            bail!("boot {n}: {name} is {got:?}, expected {expected:?}");
        }
        Ok(())
    }

    /// Fails unless boot `n` ran `running` and its status (observations `status_text`, the
    /// text, and `status`, the JSON) reports the fallback from `failed` after `tries` boots:
    /// `running` the default, `failed` kept and marked.
    pub fn expect_fallback(&self, n: u32, failed: &str, running: &str, tries: usize) -> Result<()> {
        let booted = self.get(n, "booted");
        if booted != running {
            bail!("boot {n}: after the fallback {running} should run, booted {booted:?}");
        }
        let text = self.get(n, "status_text");
        if !(text.contains("Fell back from")
            && text.contains(&format!("after {tries} failed boots")))
        {
            bail!("boot {n}: status does not report the fallback:\n{text}");
        }
        let st: serde_json::Value = serde_json::from_str(&self.get(n, "status"))?;
        if !(st["fallback"]["from"]
            .as_str()
            .is_some_and(|f| f.contains(failed))
            && st["deployments"][0]["checksum"] == running
            && st["deployments"][1]["checksum"] == failed
            && st["deployments"][1]["failed"] == true)
        {
            bail!(
                "boot {n}: after the fallback {running} must be the default and {failed} kept, \
                 marked failed: {st}"
            );
        }
        Ok(())
    }

    /// Fails unless every boot saw `firmware`: with Secure Boot, the firmware's `SecureBoot`
    /// variable says enabled and the kernel runs locked down (Debian's kernels lock down
    /// under Secure Boot); without it, the variable says disabled. A boot that recorded
    /// `stratum status --json` (observation `status`) must report the same state there.
    pub fn expect_firmware(&self, firmware: Firmware) -> Result<()> {
        for n in 1..=self.boots() {
            let (sb, lockdown) = (self.get(n, "secureboot"), self.get(n, "lockdown"));
            if firmware.secure_boot() {
                if sb != "1"
                    || !(lockdown.contains("[integrity]") || lockdown.contains("[confidentiality]"))
                {
                    bail!(
                        "boot {n} ran with Secure Boot {sb:?} and lockdown {lockdown:?}: expected \
                         Secure Boot enabled (1) and the kernel locked down"
                    );
                }
            } else if sb != "0" {
                bail!("boot {n} ran with Secure Boot {sb:?}: expected disabled (0)");
            }
            // `stratum status --json`, where the boot recorded it, says the same.
            if let Ok(st) = serde_json::from_str::<serde_json::Value>(&self.get(n, "status")) {
                let want = if firmware.secure_boot() {
                    "enabled"
                } else {
                    "disabled"
                };
                if st["secure-boot"] != want {
                    bail!(
                        "boot {n}: stratum status says secure-boot {}, expected {want}",
                        st["secure-boot"]
                    );
                }
            }
        }
        Ok(())
    }

    /// Fails unless the command recorded as exit status `rc` (`result RC $?`) of boot `n`
    /// succeeded, with its stderr (observation `err`) in the message.
    pub fn expect_success(&self, n: u32, rc: &str, err: &str, what: &str) -> Result<()> {
        let status = self.get(n, rc);
        if status != "0" {
            bail!(
                "boot {n}: {what} failed (exit status {status:?}):\n{}",
                self.get(n, err)
            );
        }
        Ok(())
    }
}

pub(crate) fn tree_size(dir: &Path) -> Result<u64> {
    let out = run_output(Command::new("du").args(["-sb", "--"]).arg(dir))?;
    Ok(out
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// Runs a command, failing with its output when it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    run_output(cmd).map(|_| ())
}

/// Runs a command and returns its stdout (stderr passes through to the test's output).
pub fn run_output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", out.status);
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn copy_new(src: &Path, dst: &Path) -> Result<()> {
    let _ = fs::remove_file(dst);
    fs::copy(src, dst)
        .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    Ok(())
}

/// The only kernel version in `root`, by the initramfs generator's rule (a modules
/// directory with `modules.dep`).
pub fn kernel_version(root: &Path) -> Result<String> {
    stratum_initramfs::modules::only_kernel_version(root)
}

/// Runs `dracut --no-hostonly --add MODULE` inside `root` ([`stratum_initramfs::dracut::run`]:
/// chrooted in a private mount namespace, so nothing leaks onto the host even if it fails),
/// output where `stratum compose rootfs --keep-initramfs` takes it from. dracut's output goes
/// to `log`; it is an error when dracut did not include `module`.
pub fn run_dracut(root: &Path, kver: &str, module: &str, log: &Path) -> Result<PathBuf> {
    let output = root.join(format!("usr/lib/modules/{kver}/initramfs.img"));
    let mut run = stratum_initramfs::dracut::DracutRun::new(root, kver, &output);
    run.add_modules = vec![module.to_string()];
    run.log = Some(log.to_path_buf());
    stratum_initramfs::dracut::run(&run)?;
    Ok(output)
}

/// Removes a tree, clearing immutable flags that deployments carry.
pub fn remove_tree(dir: &Path) -> Result<()> {
    if !dir.exists() {
        return Ok(());
    }
    if fs::remove_dir_all(dir).is_err() {
        let _ = Command::new("chattr")
            .arg("-R")
            .arg("-i")
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    Ok(())
}

/// Seconds elapsed since `t`, for progress lines.
/// The median of `v` (the mean of the middle two for an even count); for benchmarks.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn secs(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}

/// The default hard timeout of one VM run (all its boots).
pub fn default_timeout() -> Duration {
    let secs = std::env::var("STRATUM_VM_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    Duration::from_secs(secs)
}

/// Shell helpers for scenarios: `booted` prints the checksum of the booted deployment.
pub const SCENARIO_HELPERS: &str = r#"
booted() { stratum status --booted --json | sed -n 's/.*"checksum": "\([0-9a-f]*\)".*/\1/p' | head -1; }
"#;

/// Scenario function `boot_1` that runs `stratum initramfs --enable ARGS` (timed: `enable_ms`;
/// exit code `enable_rc`, stderr `enable_err`, then `initramfs --json` as `state`), keeps
/// the boot's `boot.json` and reboots into the result.
pub fn initramfs_enable_boot_1(args: &str) -> String {
    format!(
        r#"
boot_1() {{
    cp /run/stratum/boot.json "$out/boot-1.boot_json"
    t0=$(date +%s%N)
    stratum initramfs --enable {args} 2> "$out/boot-1.enable_err"; result enable_rc $?
    result enable_ms $(( ($(date +%s%N) - t0) / 1000000 ))
    cat "$out/boot-1.enable_err"
    stratum initramfs --json > "$out/boot-1.state" 2>&1
    request_reboot
}}
"#
    )
}

/// The input digest `stratum initramfs` reports on a `initramfs: WHAT DIGEST …` line
/// (`regenerated`, `cache hit`) in `stderr`.
pub fn initramfs_digest(stderr: &str, what: &str) -> Option<String> {
    stderr
        .lines()
        .find_map(|l| l.strip_prefix(&format!("initramfs: {what} ")))
        .and_then(|r| r.split_whitespace().next())
        .map(str::to_string)
}

/// Keeps the console log of `out` as the artefact `<name>.console.log`; its path.
pub fn keep_console(name: &str, out: &QemuOutcome) -> PathBuf {
    let p = Project::locate()
        .expect("locating the project")
        .artifacts
        .join(format!("{name}.console.log"));
    let _ = fs::write(&p, &out.console);
    p
}

/// Runs the checks `f` on a finished VM run (a timeout fails without them); on failure the
/// console log is kept (see [`keep_console`]) and named in the error.
pub fn check(name: &str, out: &QemuOutcome, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let r = if out.timed_out {
        Err(anyhow::anyhow!("the VM did not finish within its timeout"))
    } else {
        f()
    };
    r.map_err(|e| {
        let log = keep_console(name, out);
        anyhow::anyhow!("{e:#}\nconsole log: {}", log.display())
    })
}

/// A libtest-mimic trial of a scenario function; its error chain is the failure message.
/// Its wall time is appended to the file `STRATUM_TEST_TIMES` names, when set (the report of
/// `make test`, tests/run.py): a line `BINARY<TAB>TRIAL<TAB>SECONDS<TAB>ok|FAILED`.
pub fn trial(
    name: &'static str,
    f: impl FnOnce() -> Result<()> + Send + 'static,
) -> libtest_mimic::Trial {
    libtest_mimic::Trial::test(name, move || {
        let start = Instant::now();
        let r = f();
        record_trial(name, start.elapsed(), r.is_ok());
        r.map_err(|e| libtest_mimic::Failed::from(format!("{e:#}")))
    })
}

/// Appends one trial's time to `$STRATUM_TEST_TIMES` (see [`trial`]); a failure to write is
/// reported, not fatal: the time is for the report, the result is the test's.
fn record_trial(name: &str, took: Duration, ok: bool) {
    use std::io::Write;
    let Some(path) = std::env::var_os("STRATUM_TEST_TIMES") else {
        return;
    };
    // The test binary's name without cargo's hash: `…/deps/fallback-0123abcd` → `fallback`.
    let binary = std::env::args()
        .next()
        .and_then(|a| {
            Path::new(&a)
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
        })
        .map(|n| match n.rsplit_once('-') {
            Some((stem, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => stem.to_string(),
            _ => n,
        })
        .unwrap_or_default();
    let line = format!(
        "{binary}\t{name}\t{:.3}\t{}\n",
        took.as_secs_f64(),
        if ok { "ok" } else { "FAILED" }
    );
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!(
            "recording the time of {name} in {}: {e}",
            Path::new(&path).display()
        );
    }
}

/// The firmware a disk installed with `bootloader` from the guest `root` boots with: Secure
/// Boot enforced, with the keys every PC ships, when the ESP gets shim and a signed second
/// stage (GRUB always, unless built on the host: `grub-unsigned`; systemd-boot when the image
/// ships Debian's signed one, from Debian 13); else no Secure Boot.
pub fn firmware_for(bootloader: &str, root: &Path) -> Firmware {
    let signed = match bootloader {
        "grub" => true,
        "systemd-boot" => root
            .join("usr/lib/systemd/boot/efi/systemd-bootx64.efi.signed")
            .is_file(),
        _ => false,
    };
    if signed {
        Firmware::SecureBoot
    } else {
        Firmware::Plain
    }
}

/// The `root=` argument in the JSON of `stratum install to-disk --json`.
pub fn root_karg_of(install: &serde_json::Value) -> Option<String> {
    install["kargs"]
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str())
        .find(|k| k.starts_with("root="))
        .map(str::to_string)
}

/// A composed and installed guest image.
#[derive(Debug, Clone)]
pub struct Image {
    pub dir: PathBuf,
    pub repo: PathBuf,
    pub refname: String,
    pub commit: String,
    pub disk: PathBuf,
    /// The staged sysroot that went into the disk (kept for inspection).
    pub sysroot: PathBuf,
    pub install: serde_json::Value,
    /// What it was installed with: `grub`, `grub-unsigned` or `systemd-boot`.
    pub bootloader: String,
    /// The firmware it boots with (see [`Image::firmware`]).
    pub firmware: Firmware,
}

/// The ref the tests and the demo compose to.
pub const TEST_REF: &str = "debian/12/x86_64/stratum";
/// The remote installed images follow: the repository on the test disk (`repo/`).
pub const TEST_REMOTE: &str = "updates=file:///run/stratum-test/repo";

impl Project {
    /// Builds the guest root, composes it as `version` and installs it to a disk image in
    /// `target/vm-work/<name>`, printing progress.
    pub fn build_image(&self, name: &str, version: &str) -> Result<Image> {
        self.build_image_with(name, version, |_| Ok(()), &["console=ttyS0"])
    }

    /// Like [`Project::build_image`], with a customized guest root (new files only) and the
    /// kernel arguments to install with.
    pub fn build_image_with(
        &self,
        name: &str,
        version: &str,
        customize: impl FnOnce(&Path) -> Result<()>,
        kargs: &[&str],
    ) -> Result<Image> {
        self.build_image_for("grub", name, version, customize, kargs)
    }

    /// A v1 image for boot-counting scenarios: `boot-tries = TRIES` in
    /// `/etc/stratum/stratum.toml`, installed with `bootloader` and `kargs`.
    pub fn build_trial_image(
        &self,
        bootloader: &str,
        name: &str,
        tries: usize,
        kargs: &[&str],
    ) -> Result<Image> {
        self.build_image_for(
            bootloader,
            name,
            "1.0",
            |root| {
                let d = root.join("etc/stratum");
                fs::create_dir_all(&d)?;
                fs::write(d.join("stratum.toml"), format!("boot-tries = {tries}\n"))?;
                Ok(())
            },
            kargs,
        )
    }

    /// Like [`Project::build_image_with`], installed with `bootloader` (`grub`,
    /// `systemd-boot`).
    pub fn build_image_for(
        &self,
        bootloader: &str,
        name: &str,
        version: &str,
        customize: impl FnOnce(&Path) -> Result<()>,
        kargs: &[&str],
    ) -> Result<Image> {
        let t = Instant::now();
        let dir = self.workdir(name)?;
        eprintln!(
            "[{name}] preparing the guest root (images/{}.toml + Stratum)",
            self.manifest
        );
        let root = self.guest_root(&dir, customize)?;
        let firmware = if self.secure_boot {
            firmware_for(bootloader, &root)
        } else {
            Firmware::Plain
        };
        let repo = dir.join("repo");
        eprintln!("[{name}] stratum compose rootfs → {} ({version})", TEST_REF);
        let commit = self.compose(&root, &repo, TEST_REF, version)?;
        let disk = dir.join("disk.img");
        let stage = dir.join("install");
        eprintln!(
            "[{name}] stratum install to-disk --bootloader {bootloader} → {}",
            disk.display()
        );
        let install = self.install_disk(&repo, TEST_REF, &disk, &stage, kargs, bootloader)?;
        eprintln!("[{name}] image ready in {:.0} s: commit {commit}", secs(t));
        Ok(Image {
            dir,
            repo,
            refname: TEST_REF.to_string(),
            commit,
            disk,
            sysroot: stage.join("sysroot"),
            install,
            bootloader: bootloader.to_string(),
            firmware,
        })
    }
}

impl Image {
    /// Composes the next version of the image into its repository: the guest root plus the
    /// files `add` (path relative to the root, contents; new files only). Returns the commit.
    pub fn compose_update(
        &self,
        p: &Project,
        version: &str,
        add: &[(&str, &str)],
    ) -> Result<String> {
        let files: Vec<(&str, &[u8], u32)> =
            add.iter().map(|(p, c)| (*p, c.as_bytes(), 0o644)).collect();
        self.compose_update_with(p, version, &files, &[])
    }

    /// Like [`Image::compose_update`], with file modes and extra `compose rootfs` arguments.
    /// The files are removed from the guest root again afterwards, so later versions start
    /// from the same base.
    pub fn compose_update_with(
        &self,
        p: &Project,
        version: &str,
        add: &[(&str, &[u8], u32)],
        args: &[&str],
    ) -> Result<String> {
        use std::os::unix::fs::PermissionsExt;
        let root = self.dir.join("rootfs");
        // A file the root has is set aside, out of the root (renamed: the root shares inodes
        // with the cache), and put back after the compose.
        let aside = |path: &str| self.dir.join("aside").join(path);
        for (path, contents, mode) in add {
            let f = root.join(path);
            fs::create_dir_all(f.parent().context("parent")?)?;
            if f.exists() {
                fs::create_dir_all(aside(path).parent().context("parent")?)?;
                fs::rename(&f, aside(path))?;
            }
            fs::write(&f, contents)?;
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode))?;
        }
        let out = run_output(
            Command::new(p.stratum())
                .args(["compose", "rootfs"])
                .arg(&root)
                .arg("--repo")
                .arg(&self.repo)
                .args(["--ref", &self.refname, "--version", version])
                .args(args),
        );
        for (path, _, _) in add {
            let _ = fs::remove_file(root.join(path));
            if aside(path).exists() {
                fs::rename(aside(path), root.join(path))?;
            }
        }
        Ok(out?.trim().to_string())
    }

    /// Composes two failing versions: `unbootable`, whose initramfs the kernel cannot unpack
    /// (it panics), then `unhealthy`, whose required health check fails. Returns their
    /// commits.
    pub fn compose_failing_updates(
        &self,
        p: &Project,
        unbootable: &str,
        unhealthy: &str,
    ) -> Result<(String, String)> {
        // The bad initramfs goes where the distribution keeps one, for the image's kernel.
        let (kernel, _) = self.boot_files()?;
        let kver = kernel
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .trim_start_matches("vmlinuz-")
            .to_string();
        let bad = self.compose_update_with(
            p,
            unbootable,
            &[(
                &format!("boot/initrd.img-{kver}"),
                b"this is not an initramfs",
                0o644,
            )],
            &["--keep-initramfs"],
        )?;
        let failing = b"#!/bin/sh\necho the service is not healthy\nexit 1\n";
        let unhealthy = self.compose_update_with(
            p,
            unhealthy,
            &[("etc/stratum/health.d/required.d/50-fail", failing, 0o755)],
            &[],
        )?;
        Ok((bad, unhealthy))
    }

    /// The firmware the image boots with.
    pub fn firmware(&self) -> Firmware {
        self.firmware
    }

    /// A machine that boots the image's firmware, its console at `console`; the caller adds
    /// the disks.
    pub fn machine(&self, console: PathBuf) -> Qemu {
        let mut q = Qemu::new(console);
        q.boot = Boot::Uefi(self.firmware());
        q
    }

    /// A fresh copy of the disk (sparse), so each test boots a pristine machine.
    pub fn copy_disk(&self, to: &Path) -> Result<PathBuf> {
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(&self.disk)
            .arg(to))?;
        Ok(to.to_path_buf())
    }

    /// The same image with a repository of its own in `target/vm-work/<name>` (a hardlinked
    /// copy, which later composes do not share): scenarios that each publish their own next
    /// version share one image build. The guest root stays shared, so the forks of one image
    /// compose one at a time.
    pub fn fork(&self, p: &Project, name: &str) -> Result<Image> {
        let dir = p.workdir(name)?;
        let repo = self.link_repo(&dir.join("repo"))?;
        Ok(Image {
            repo,
            ..self.clone()
        })
    }

    /// A hardlinked copy of the image's repository at `to` (to travel on a test disk).
    pub fn link_repo(&self, to: &Path) -> Result<PathBuf> {
        run(Command::new("cp").arg("-al").arg(&self.repo).arg(to))?;
        Ok(to.to_path_buf())
    }

    /// Publishes the image's ref into a new archive repository at `to` (to travel on a test
    /// disk) with `stratum compose publish --deltas N`: the deltas from the N previous
    /// commits, as an update server has them. Returns the publish's JSON.
    pub fn publish_repo(&self, p: &Project, to: &Path, deltas: u32) -> Result<serde_json::Value> {
        let out = run_output(
            Command::new(p.stratum())
                .args(["compose", "publish", "--json", "--repo"])
                .arg(&self.repo)
                .arg("--to")
                .arg(to)
                .args(["--ref", &self.refname, "--deltas", &deltas.to_string()]),
        )?;
        Ok(serde_json::from_str(&out)?)
    }

    /// Boots a fresh copy of the disk in `dir` with a test disk carrying `scenario` and the
    /// directory `trees` (see [`TestDisk::create_with_tree`]); `configure` adjusts the
    /// machine before it runs.
    pub fn boot_scenario(
        &self,
        dir: &Path,
        scenario: &str,
        trees: &[(&str, &Path)],
        configure: impl FnOnce(&mut Qemu),
    ) -> Result<(QemuOutcome, TestDisk)> {
        let disk = self.copy_disk(&dir.join("disk.img"))?;
        let mut test = TestDisk::create_with_tree(dir, scenario, trees)?;
        test.firmware = Some(self.firmware());
        let mut q = self.machine(dir.join("console.log"));
        q.disks = vec![disk, test.image.clone()];
        configure(&mut q);
        let out = q.run()?;
        Ok((out, test))
    }

    /// Boots a fresh copy of the disk in `target/vm-work/<name>` with `scenario` (after
    /// [`SCENARIO_HELPERS`]) and the image's repository on the test disk (`repo/`). Returns
    /// the outcome, the test disk and the work directory.
    pub fn boot_with_repo(
        &self,
        p: &Project,
        name: &str,
        scenario: &str,
    ) -> Result<(QemuOutcome, TestDisk, PathBuf)> {
        let dir = p.workdir(name)?;
        let repo = self.link_repo(&dir.join("repo"))?;
        let (out, test) = self.boot_scenario(
            &dir,
            &format!("{SCENARIO_HELPERS}{scenario}"),
            &[("repo", repo.as_path())],
            |_| (),
        )?;
        eprintln!("{name}: {:.0} s", out.elapsed.as_secs_f64());
        Ok((out, test, dir))
    }

    /// The root filesystem's `root=` argument as installed.
    pub fn root_karg(&self) -> Option<String> {
        root_karg_of(&self.install)
    }

    /// Boot files of the installed deployment on the staged sysroot (kernel, initramfs).
    pub fn boot_files(&self) -> Result<(PathBuf, PathBuf)> {
        let bootcsum = self.install["bootcsum"].as_str().context("bootcsum")?;
        let dir = fs::read_dir(self.sysroot.join("boot/ostree"))?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with(bootcsum))
            .context("boot files of the deployment")?;
        let mut kernel = None;
        let mut initrd = None;
        for e in fs::read_dir(&dir)? {
            let p = e?.path();
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            if n.starts_with("vmlinuz-") {
                kernel = Some(p);
            } else if n.starts_with("initramfs-") {
                initrd = Some(p);
            }
        }
        Ok((kernel.context("vmlinuz")?, initrd.context("initramfs")?))
    }
}
