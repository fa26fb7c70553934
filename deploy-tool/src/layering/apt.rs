//! APT, isolated: the resolver and downloader of package layering.
//!
//! apt-get runs with a configuration of its own (`APT_CONFIG`) in which every path is set:
//! the repositories are the deployment's `/etc/apt/sources.list.d` (deb822 `.sources` and
//! one-line `.list` files, with `Signed-By` keys read from the deployment), the package
//! database is a copy of the new base's `status` with every base package on hold, indexes and
//! downloads live in Stratum's cache. Nothing of the running system's APT state is read or
//! written, so resolving for a new base never depends on what happens to be installed here.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::debian::deb822::{self, Paragraph};
use crate::debian::dpkgdb::{self, PackageId};
use crate::progress::{self, Phase, Unit};

/// Where APT's isolated state lives, and the configuration it reads.
#[derive(Debug, Clone)]
pub struct Apt {
    /// The deployment whose `/etc/apt` names the repositories (its root).
    pub config_root: PathBuf,
    /// The deployment's `/etc`.
    pub etc: PathBuf,
    /// Indexes and downloads (`/var/cache/stratum/apt` of the stateroot).
    pub cache: PathBuf,
    /// A private scratch directory.
    pub scratch: PathBuf,
    /// Copies of keys whose paths APT cannot take (see [`Apt::resolve_key`]).
    pub keys: std::sync::Arc<tempfile::TempDir>,
}

/// A directory for [`Apt::keys`] whose path holds no `,` or whitespace.
pub fn keys_dir() -> Result<tempfile::TempDir> {
    let tmp = std::env::temp_dir();
    let tmp = if plain_path(&tmp.to_string_lossy()) {
        tmp
    } else {
        PathBuf::from("/tmp")
    };
    tempfile::Builder::new()
        .prefix("stratum-apt-keys-")
        .tempdir_in(&tmp)
        .with_context(|| format!("creating a directory in {}", tmp.display()))
}

/// Whether APT reads `p` as one path in `Signed-By` (which also takes a list of
/// fingerprints, separated by `,` or whitespace).
fn plain_path(p: &str) -> bool {
    !p.contains(|c: char| c == ',' || c.is_whitespace())
}

/// What apt decided for a request.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// Packages to install, in apt's unpack order (Pre-Depends first).
    pub install: Vec<PackageId>,
    /// Installed packages apt would replace: (name, installed version, new version).
    pub changed: Vec<(String, String, String)>,
    /// Packages apt would remove.
    pub remove: Vec<String>,
}

/// A request to resolve.
#[derive(Debug, Default, Clone)]
pub struct Request<'a> {
    /// Package names (or `name=version`) to install.
    pub install: Vec<String>,
    /// Base packages to remove.
    pub remove: Vec<String>,
    /// Status paragraphs of packages already chosen (local `.deb` files), treated as
    /// installed so apt resolves their dependencies.
    pub preinstalled: Vec<&'a Paragraph>,
    /// Base packages that may change (overridden).
    pub unlocked: Vec<String>,
}

impl Apt {
    fn lists(&self) -> PathBuf {
        self.cache.join("lists")
    }

    /// Writes the isolated configuration for a resolution against `status` (a path).
    fn configure(&self, status: &Path) -> Result<PathBuf> {
        let conf_dir = self.scratch.join("apt");
        let parts = conf_dir.join("sources.list.d");
        let _ = fs::remove_dir_all(&conf_dir);
        for d in [
            parts.clone(),
            conf_dir.join("apt.conf.d"),
            conf_dir.join("preferences.d"),
            conf_dir.join("log"),
            self.lists().join("partial"),
            self.cache.join("archives/partial"),
        ] {
            fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        let sources = self.write_sources(&parts)?;
        if sources == 0 {
            bail!(
                "no package repositories are configured: add a deb822 .sources file to \
                 /etc/apt/sources.list.d (see docs/layering.md)"
            );
        }
        let trusted = self.etc.join("apt/trusted.gpg.d");
        let arch = native_arch()?;
        let conf = format!(
            "Dir \"/\";\n\
             Dir::State \"{state}/\";\n\
             Dir::State::lists \"{lists}/\";\n\
             Dir::State::status \"{status}\";\n\
             Dir::State::extended_states \"{conf}/extended_states\";\n\
             Dir::Cache \"{cache}/\";\n\
             Dir::Cache::archives \"{cache}/archives/\";\n\
             Dir::Cache::pkgcache \"\";\n\
             Dir::Cache::srcpkgcache \"\";\n\
             Dir::Etc \"{conf}/\";\n\
             Dir::Etc::main \"/dev/null\";\n\
             Dir::Etc::parts \"{conf}/apt.conf.d/\";\n\
             Dir::Etc::sourcelist \"/dev/null\";\n\
             Dir::Etc::sourceparts \"{conf}/sources.list.d/\";\n\
             Dir::Etc::preferences \"/dev/null\";\n\
             Dir::Etc::preferencesparts \"{conf}/preferences.d/\";\n\
             Dir::Etc::trusted \"{trusted_main}\";\n\
             Dir::Etc::trustedparts \"{trusted}/\";\n\
             Dir::Log \"{conf}/log/\";\n\
             APT::Architecture \"{arch}\";\n\
             APT::Architectures {{ \"{arch}\"; }};\n\
             APT::Install-Recommends \"false\";\n\
             APT::Install-Suggests \"false\";\n\
             APT::Get::Assume-Yes \"true\";\n\
             APT::Sandbox::User \"root\";\n\
             Acquire::Languages \"none\";\n\
             Acquire::Retries \"0\";\n\
             Acquire::http::Timeout \"30\";\n\
             Debug::NoLocking \"true\";\n\
             DPkg::Path \"/usr/sbin:/usr/bin:/sbin:/bin\";\n",
            state = self.cache.display(),
            lists = self.lists().display(),
            status = status.display(),
            conf = conf_dir.display(),
            cache = self.cache.display(),
            trusted_main = self.etc.join("apt/trusted.gpg").display(),
            trusted = trusted.display(),
        );
        let path = conf_dir.join("apt.conf");
        fs::write(&path, conf)?;
        Ok(path)
    }

    /// Copies the deployment's sources into `parts`, with key paths resolved inside the
    /// deployment; returns how many files there were.
    fn write_sources(&self, parts: &Path) -> Result<usize> {
        let dir = self.etc.join("apt/sources.list.d");
        let mut n = 0;
        let Ok(rd) = fs::read_dir(&dir) else {
            return Ok(0);
        };
        let mut files: Vec<_> = rd.collect::<std::io::Result<_>>()?;
        files.sort_by_key(|e| e.file_name());
        for e in files {
            let name = e.file_name().to_string_lossy().into_owned();
            let text = fs::read_to_string(e.path())
                .with_context(|| format!("reading {}", e.path().display()))?;
            let out = if name.ends_with(".sources") {
                let mut paras = deb822::parse(&text)
                    .with_context(|| format!("parsing {}", e.path().display()))?;
                for p in &mut paras {
                    if let Some(k) = p.get("Signed-By").map(str::to_string) {
                        if !k.contains('\n') {
                            let resolved = k
                                .split_whitespace()
                                .map(|path| self.resolve_key(path))
                                .collect::<Result<Vec<_>>>()?
                                .join(" ");
                            p.set("Signed-By", &resolved, None);
                        }
                    }
                }
                paras
                    .iter()
                    .map(Paragraph::to_text)
                    .collect::<Vec<_>>()
                    .join("\n")
            } else if name.ends_with(".list") {
                self.rewrite_list(&text)?
            } else {
                continue;
            };
            fs::write(parts.join(&name), out)?;
            n += 1;
        }
        Ok(n)
    }

    /// `signed-by=` options of one-line sources, resolved like `Signed-By`.
    fn rewrite_list(&self, text: &str) -> Result<String> {
        let mut out = String::new();
        for line in text.lines() {
            let mut l = line.to_string();
            if let Some(i) = l.find("signed-by=") {
                let start = i + "signed-by=".len();
                let end = l[start..]
                    .find([' ', ']'])
                    .map(|e| start + e)
                    .unwrap_or(l.len());
                let resolved = self.resolve_key(&l[start..end])?;
                l.replace_range(start..end, &resolved);
            }
            out.push_str(&l);
            out.push('\n');
        }
        Ok(out)
    }

    /// A key path as seen from the deployment: `/etc/…` in its `/etc`, others in its root.
    /// APT splits `Signed-By` at `,` and whitespace: a key whose resolved path (the sysroot's,
    /// really) holds one is read from a copy in [`Apt::keys`].
    fn resolve_key(&self, path: &str) -> Result<String> {
        let Some(rel) = path.strip_prefix('/') else {
            return Ok(path.to_string());
        };
        let p = match rel.strip_prefix("etc/") {
            Some(r) => self.etc.join(r),
            None => self.config_root.join(rel),
        };
        if !p.exists() {
            return Ok(path.to_string());
        }
        let resolved = p.to_string_lossy().into_owned();
        if plain_path(&resolved) {
            return Ok(resolved);
        }
        use sha2::{Digest, Sha256};
        // The extension tells APT the key's format (`.asc` armored, `.gpg` binary).
        let ext = p.extension().and_then(|e| e.to_str()).unwrap_or("gpg");
        let ext: String = ext.chars().filter(char::is_ascii_alphanumeric).collect();
        let name = format!(
            "{}.{ext}",
            &hex::encode(Sha256::digest(resolved.as_bytes()))[..16]
        );
        let copy = self.keys.path().join(name);
        fs::copy(&p, &copy).with_context(|| format!("copying the key {}", p.display()))?;
        Ok(copy.to_string_lossy().into_owned())
    }

    fn apt_get(&self, conf: &Path) -> Command {
        let mut c = Command::new("apt-get");
        c.env("APT_CONFIG", conf)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .env("LC_ALL", "C.UTF-8")
            .arg("-q");
        c
    }

    /// Fetches the repositories' indexes (`refresh-md`).
    pub fn refresh(&self, status: &Path) -> Result<()> {
        let conf = self.configure(status)?;
        let phase = Phase::start("apt-get update", Unit::Time);
        let out = self
            .apt_get(&conf)
            .arg("update")
            .output()
            .context("running apt-get update")?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // apt-get update exits 0 with W:/E: lines for a repository it could not use.
        let problems: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("E:") || l.starts_with("Err:") || l.starts_with("W:"))
            .collect();
        if !out.status.success() || problems.iter().any(|l| !l.starts_with("W:")) {
            bail!(
                "fetching package indexes failed:\n{}\nCheck /etc/apt/sources.list.d (URIs, \
                 Signed-By keys; an unsigned repository needs `Trusted: yes`)",
                problems.join("\n")
            );
        }
        phase.finish("done");
        for w in problems {
            eprintln!("{w}");
        }
        Ok(())
    }

    /// Whether indexes have been fetched.
    pub fn has_indexes(&self) -> bool {
        fs::read_dir(self.lists())
            .map(|rd| {
                rd.flatten()
                    .any(|e| e.file_name().to_string_lossy().ends_with("Packages"))
            })
            .unwrap_or(false)
    }

    /// Resolves `req` against the base package database `base_status` (text).
    ///
    /// Base packages are held, so apt looks for a solution that leaves them as they are; when
    /// there is none, apt is asked again without holds to name the base package the request
    /// would change, and why.
    pub fn resolve(&self, base_status: &str, req: &Request) -> Result<Resolution> {
        let base = dpkgdb::installed(base_status)?;
        let held = self.status_copy(base_status, req, true)?;
        match self.simulate(&held, req) {
            Ok(r) => {
                check_base_lock(&base, &r, req)?;
                self.check_requests_kept(&held, &r, req)?;
                Ok(r)
            }
            Err(held_err) => {
                let free = self.status_copy(base_status, req, false)?;
                match self.simulate(&free, req) {
                    Ok(r) => {
                        check_base_lock(&base, &r, req)?;
                        Err(held_err)
                    }
                    Err(e) => Err(e),
                }
            }
        }
    }

    /// Fails when apt's way out is to take a requested package out again (a local package
    /// that conflicts with or breaks a held base package is removed by `--fix-broken`),
    /// naming the unmet relations `apt-get check` reports for the held state.
    fn check_requests_kept(&self, held: &Path, r: &Resolution, req: &Request) -> Result<()> {
        let dropped = dropped_requests(r, req);
        if dropped.is_empty() {
            return Ok(());
        }
        let conf = self.configure(held)?;
        let out = self
            .apt_get(&conf)
            .arg("check")
            .output()
            .context("running apt-get check")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let unmet: Vec<&str> = stdout.lines().filter(|l| is_unmet_line(l)).collect();
        bail!(
            "cannot layer {}: it cannot be installed with the base image's packages, which are \
             locked to the image's versions{}",
            dropped.join(" "),
            if unmet.is_empty() {
                String::new()
            } else {
                format!(". apt reports:\n{}", unmet.join("\n"))
            }
        )
    }

    /// Writes the status file apt resolves against: the base's, with base packages held
    /// (when `hold`) and the preinstalled paragraphs added.
    fn status_copy(&self, base_status: &str, req: &Request, hold: bool) -> Result<PathBuf> {
        let mut text = String::new();
        let replaced: Vec<&str> = req
            .preinstalled
            .iter()
            .filter_map(|p| p.get("Package"))
            .collect();
        for mut p in deb822::parse(base_status)? {
            let name = p.get("Package").unwrap_or_default().to_string();
            if replaced.contains(&name.as_str()) {
                continue;
            }
            if hold
                && dpkgdb::is_installed(&p)
                && !req.remove.contains(&name)
                && !req.unlocked.contains(&name)
            {
                p.set("Status", "hold ok installed", None);
            }
            text.push_str(&p.to_text());
            text.push('\n');
        }
        for p in &req.preinstalled {
            let mut p = (*p).clone();
            p.set("Status", "install ok installed", Some("Package"));
            text.push_str(&p.to_text());
            text.push('\n');
        }
        let path = self
            .scratch
            .join(if hold { "status.held" } else { "status.free" });
        fs::write(&path, text)?;
        Ok(path)
    }

    fn simulate(&self, status: &Path, req: &Request) -> Result<Resolution> {
        let conf = self.configure(status)?;
        let mut cmd = self.apt_get(&conf);
        cmd.args(["--simulate", "--fix-broken", "install"]);
        cmd.args(&req.install);
        cmd.args(req.remove.iter().map(|r| format!("{r}-")));
        let out = cmd.output().context("running apt-get")?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() {
            bail!(
                "{}",
                explain_failure(&stdout, &String::from_utf8_lossy(&out.stderr))
            );
        }
        parse_simulation(&stdout)
    }

    /// Downloads `ids` into `into` (checked against the signed indexes by apt), as a phase
    /// whose bar follows apt's own account of the bytes fetched (`APT::Status-Fd` lines).
    pub fn download(&self, base_status: &Path, ids: &[PackageId], into: &Path) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let conf = self.configure(base_status)?;
        let phase = Phase::start("apt-get download", Unit::Percent);
        let meter = phase.meter();
        meter.set_total(100);
        let mut child = self
            .apt_get(&conf)
            .args(["-o", "APT::Status-Fd=1", "download"])
            .args(
                ids.iter()
                    .map(|i| format!("{}:{}={}", i.name, i.arch, i.version)),
            )
            .current_dir(into)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running apt-get download")?;
        // stderr is read on the side, so neither pipe can fill up and stall apt.
        let mut stderr = child.stderr.take().context("apt-get's stderr")?;
        let errors = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = stderr.read_to_string(&mut text);
            text
        });
        let stdout = child.stdout.take().context("apt-get's stdout")?;
        for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if let Some((percent, message)) = parse_dlstatus(&line) {
                meter.set_done(percent);
                meter.set_message(message);
            }
        }
        let status = child.wait().context("waiting for apt-get download")?;
        let errors = errors.join().unwrap_or_default();
        if !status.success() {
            bail!("downloading packages failed:\n{}", errors.trim());
        }
        let size: u64 = fs::read_dir(into)
            .with_context(|| format!("reading {}", into.display()))?
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".deb"))
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        phase.finish(&format!(
            "{} packages, {}",
            ids.len(),
            progress::bytes(size)
        ));
        Ok(())
    }

    /// `apt-cache search` in the configured repositories: (name, summary).
    pub fn search(&self, status: &Path, terms: &[String]) -> Result<Vec<(String, String)>> {
        let conf = self.configure(status)?;
        let out = Command::new("apt-cache")
            .env("APT_CONFIG", &conf)
            .arg("search")
            .args(terms)
            .output()
            .context("running apt-cache search")?;
        if !out.status.success() {
            bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_once(" - "))
            .map(|(n, s)| (n.to_string(), s.to_string()))
            .collect())
    }
}

/// The machine's dpkg architecture.
pub fn native_arch() -> Result<String> {
    Ok(
        crate::cmd::output(Command::new("dpkg").arg("--print-architecture"))?
            .trim()
            .to_string(),
    )
}

/// Fails when `r` would change a base package that no override unlocks, naming it and why.
fn check_base_lock(
    base: &BTreeMap<String, PackageId>,
    r: &Resolution,
    req: &Request,
) -> Result<()> {
    let mut problems = Vec::new();
    for (name, from, to) in &r.changed {
        if base.contains_key(name) && !req.unlocked.contains(name) {
            let how = if crate::debian::version::compare(to, from).is_gt() {
                "upgrade"
            } else {
                "downgrade"
            };
            problems.push(format!(
                "it would {how} the base package {name} ({from} -> {to})"
            ));
        }
    }
    for name in &r.remove {
        if base.contains_key(name) && !req.remove.contains(name) {
            problems.push(format!(
                "it would remove the base package {name} (a requested package conflicts with \
                 it or breaks it)"
            ));
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    bail!(
        "cannot layer {}: {}. Base packages are locked to the image's versions; to change one \
         on purpose, use `stratum override remove` or `stratum override replace`",
        if req.install.is_empty() {
            "this request".to_string()
        } else {
            req.install.join(" ")
        },
        problems.join("; ")
    )
}

/// The requested packages (local or by name) that a resolution removes.
fn dropped_requests(r: &Resolution, req: &Request) -> Vec<String> {
    let requested: Vec<&str> = req
        .preinstalled
        .iter()
        .filter_map(|p| p.get("Package"))
        .chain(
            req.install
                .iter()
                .map(|i| i.split(['=', ':']).next().unwrap_or(i)),
        )
        .collect();
    r.remove
        .iter()
        .filter(|n| requested.contains(&n.as_str()))
        .cloned()
        .collect()
}

/// A line in which apt names an unmet relation.
fn is_unmet_line(l: &str) -> bool {
    l.contains("Depends:") || l.contains("Conflicts:") || l.contains("Breaks:")
}

/// Turns apt's error output into a message that says what to do.
fn explain_failure(stdout: &str, stderr: &str) -> String {
    let mut lines: Vec<String> = Vec::new();
    for l in stderr.lines().filter(|l| l.starts_with("E:")) {
        if let Some(p) = l.strip_prefix("E: Unable to locate package ").or_else(|| {
            l.strip_prefix("E: Package '")
                .and_then(|r| r.split('\'').next())
        }) {
            lines.push(format!(
                "package {p} was not found in the configured repositories; check the name \
                 (`stratum search`) or fetch current indexes (`stratum refresh-md`)"
            ));
        } else {
            lines.push(l.trim_start_matches("E: ").to_string());
        }
    }
    // apt lists unmet dependencies on stdout.
    let unmet: Vec<&str> = stdout.lines().filter(|l| is_unmet_line(l)).collect();
    if !unmet.is_empty() {
        lines.push(format!("apt reports:\n{}", unmet.join("\n")));
    }
    if lines.is_empty() {
        lines.push(format!("apt-get failed:\n{}", stderr.trim()));
    }
    lines.join("\n")
}

/// Parses apt's download status line `dlstatus:ITEM:PERCENT:MESSAGE` (written to
/// `APT::Status-Fd`): the percent of the bytes fetched (whole) and apt's message.
fn parse_dlstatus(line: &str) -> Option<(u64, &str)> {
    let mut fields = line.strip_prefix("dlstatus:")?.splitn(3, ':');
    let _item = fields.next()?;
    let percent: f64 = fields.next()?.parse().ok()?;
    Some((
        percent.clamp(0.0, 100.0) as u64,
        fields.next().unwrap_or(""),
    ))
}

/// Parses the `Inst`/`Remv` lines of `apt-get --simulate`.
pub fn parse_simulation(out: &str) -> Result<Resolution> {
    let mut r = Resolution::default();
    for line in out.lines() {
        let mut t = line.split_whitespace();
        match t.next() {
            Some("Inst") => {
                let name = t.next().context("Inst line without a package")?;
                let rest: Vec<&str> = t.collect();
                let mut i = 0;
                let old = match rest.first() {
                    Some(s) if s.starts_with('[') => {
                        i = 1;
                        Some(s.trim_matches(|c| c == '[' || c == ']').to_string())
                    }
                    _ => None,
                };
                let version = rest
                    .get(i)
                    .and_then(|s| s.strip_prefix('('))
                    .with_context(|| format!("cannot parse apt's line {line:?}"))?;
                let arch = rest
                    .iter()
                    .rev()
                    .find_map(|s| s.strip_prefix('[').and_then(|s| s.strip_suffix("])")))
                    .with_context(|| format!("no architecture in apt's line {line:?}"))?;
                let name = name.split(':').next().unwrap_or(name);
                if let Some(old) = old {
                    r.changed.push((name.to_string(), old, version.to_string()));
                }
                r.install.push(
                    PackageId::new(name, version, arch)
                        .with_context(|| format!("apt's line {line:?}"))?,
                );
            }
            Some("Remv") => {
                let name = t.next().context("Remv line without a package")?;
                r.remove
                    .push(name.split(':').next().unwrap_or(name).to_string());
            }
            _ => {}
        }
    }
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_download_status() {
        assert_eq!(
            parse_dlstatus("dlstatus:2:45.5:Retrieving file 2 of 3 (1s remaining)"),
            Some((45, "Retrieving file 2 of 3 (1s remaining)"))
        );
        assert_eq!(parse_dlstatus("dlstatus:1:0:"), Some((0, "")));
        assert_eq!(parse_dlstatus("dlstatus:1:nan?:x"), None);
        assert_eq!(parse_dlstatus("pmstatus:htop:10:Unpacking"), None);
        assert_eq!(parse_dlstatus("Get:1 file:/srv htop 3.2.2-2"), None);
    }

    #[test]
    fn parses_simulation_lines() {
        let out = "NOTE: This is only a simulation!\n\
            Inst libnl-3-200 (3.7.0-0.2+b1 Debian:12.12/oldstable [amd64])\n\
            Inst htop (3.2.2-2 local [amd64])\n\
            Inst libc6 [2.36-9] (2.36-9+deb12u4 Debian:12.12/oldstable [amd64])\n\
            Remv mawk [1.3.4.20200120-3.1]\n\
            Conf htop (3.2.2-2 local [amd64])\n";
        let r = parse_simulation(out).unwrap();
        assert_eq!(r.install.len(), 3);
        assert_eq!(r.install[1].version, "3.2.2-2");
        assert_eq!(r.install[1].arch, "amd64");
        assert_eq!(
            r.changed,
            vec![("libc6".into(), "2.36-9".into(), "2.36-9+deb12u4".into())]
        );
        assert_eq!(r.remove, vec!["mawk"]);
    }

    #[test]
    fn base_lock_names_package_and_reason() {
        let base = dpkgdb::installed(
            "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\nArchitecture: amd64\n\n\
             Package: mawk\nStatus: install ok installed\nVersion: 1\nArchitecture: amd64\n",
        )
        .unwrap();
        let r = Resolution {
            install: vec![],
            changed: vec![("libc6".into(), "2.36-9".into(), "2.36-10".into())],
            remove: vec!["mawk".into()],
        };
        let req = Request {
            install: vec!["foo".into()],
            ..Default::default()
        };
        let e = check_base_lock(&base, &r, &req).unwrap_err().to_string();
        assert!(
            e.contains("upgrade the base package libc6 (2.36-9 -> 2.36-10)"),
            "{e}"
        );
        assert!(e.contains("remove the base package mawk"), "{e}");
        let req = Request {
            install: vec!["foo".into()],
            remove: vec!["mawk".into()],
            unlocked: vec!["libc6".into()],
            ..Default::default()
        };
        check_base_lock(&base, &r, &req).unwrap();
    }

    #[test]
    fn a_request_apt_takes_out_again_is_dropped() {
        let local =
            deb822::parse("Package: conflicting\nVersion: 1\nArchitecture: all\nConflicts: mawk\n")
                .unwrap();
        let req = Request {
            install: vec!["htop=3.2.2-2".into()],
            preinstalled: vec![&local[0]],
            ..Default::default()
        };
        let r = parse_simulation("Remv conflicting [1]\nRemv htop [3.2.2-2]\nRemv other [1]\n")
            .unwrap();
        assert_eq!(dropped_requests(&r, &req), vec!["conflicting", "htop"]);
        assert!(dropped_requests(&Resolution::default(), &req).is_empty());
    }

    #[test]
    fn explains_missing_package() {
        let m = explain_failure("", "E: Unable to locate package nosuchpkg\n");
        assert!(m.contains("package nosuchpkg was not found"), "{m}");
    }
}
