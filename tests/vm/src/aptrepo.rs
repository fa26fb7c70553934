//! A local APT repository for the layering scenarios: real Debian packages (the requested
//! ones plus exactly the dependencies a base root lacks), indexed as a flat repository and
//! signed with a throwaway key, the way a machine would see a real one.
//!
//! - What to download is decided by the host's apt against the base root's own dpkg status
//!   (`apt-get --simulate install`, no recommends, as Stratum resolves), so the set is the
//!   guest's missing dependencies and nothing else. The host's package indexes must be current
//!   (`apt-get update`); a set that would upgrade a base package means the indexes and the
//!   cached root disagree, and is an error.
//! - The `.deb` files are cached under `$STRATUM_CACHE/aptrepo-<key>`, keyed by the exact
//!   names, versions and architectures, so a run downloads only when the archive moved on.
//! - The repository (`Packages`, `Release`, `InRelease`, `Release.gpg`, `pool/`) is signed by a
//!   key made in a temporary `GNUPGHOME`; its public half is exported for `Signed-By`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{run, run_output, Project};

/// A package as apt names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pkg {
    pub name: String,
    pub version: String,
    pub arch: String,
}

/// A signed flat repository (`Suites: ./`) and its public key.
#[derive(Debug, Clone)]
pub struct AptRepo {
    /// The repository's root (`Packages`, `InRelease`, `pool/`).
    pub dir: PathBuf,
    /// The public key, an OpenPGP keyring in binary form (for `Signed-By`).
    pub key: PathBuf,
    /// What the repository holds.
    pub packages: Vec<Pkg>,
}

/// The dpkg status file of a root: under `/usr` in a root composed by Stratum, in `/var` in
/// the debootstrap root.
pub fn dpkg_status(root: &Path) -> Result<PathBuf> {
    ["usr/lib/sysimage/dpkg/status", "var/lib/dpkg/status"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .with_context(|| format!("{} has no dpkg status file", root.display()))
}

/// What apt would install for `want` on top of the root whose status file is `status`.
pub fn missing_packages(status: &Path, want: &[&str]) -> Result<Vec<Pkg>> {
    let out = Command::new("apt-get")
        .env("LC_ALL", "C")
        .args(["--simulate", "-q", "-o"])
        .arg(format!("Dir::State::status={}", status.display()))
        .args([
            "-o",
            "APT::Install-Recommends=false",
            "-o",
            "Debug::NoLocking=true",
            "install",
        ])
        .args(want)
        .output()
        .context("running apt-get on the host")?;
    if !out.status.success() {
        bail!(
            "apt-get --simulate install {} against {} failed (run `apt-get update` on the \
             host):\n{}",
            want.join(" "),
            status.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut pkgs = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(rest) = line.strip_prefix("Inst ") else {
            continue;
        };
        let mut w = rest.split_whitespace();
        let name = w.next().context("Inst line without a name")?;
        let next = w.next().unwrap_or_default();
        if next.starts_with('[') {
            bail!(
                "the host's package indexes would upgrade the base package {name} ({line}); \
                 rebuild the cached root or update the host's indexes so that they agree"
            );
        }
        let version = next
            .strip_prefix('(')
            .with_context(|| format!("cannot parse apt's line {line:?}"))?;
        let arch = rest
            .rsplit_once('[')
            .and_then(|(_, a)| a.strip_suffix("])"))
            .with_context(|| format!("no architecture in apt's line {line:?}"))?;
        pkgs.push(Pkg {
            name: name.to_string(),
            version: version.to_string(),
            arch: arch.to_string(),
        });
    }
    pkgs.sort();
    Ok(pkgs)
}

impl Project {
    /// Builds the signed repository at `out` with `want` and the dependencies that `base`
    /// (a root directory) lacks, plus the local `.deb` files `extra`.
    pub fn apt_repo(
        &self,
        base: &Path,
        want: &[&str],
        extra: &[PathBuf],
        out: &Path,
    ) -> Result<AptRepo> {
        let packages = missing_packages(&dpkg_status(base)?, want)?;
        let debs = self.cached_debs(&packages)?;
        let _ = fs::remove_dir_all(out);
        let pool = out.join("pool");
        fs::create_dir_all(&pool)?;
        for f in debs.iter().chain(extra) {
            let name = f.file_name().context("deb file name")?;
            fs::hard_link(f, pool.join(name))
                .or_else(|_| fs::copy(f, pool.join(name)).map(drop))?;
        }
        let index = run_output(
            Command::new("dpkg-scanpackages")
                .args(["--multiversion", "pool", "/dev/null"])
                .current_dir(out),
        )?;
        fs::write(out.join("Packages"), index)?;
        // Written outside first: apt-ftparchive must not list a half-written Release.
        let release = run_output(
            Command::new("apt-ftparchive")
                .args([
                    "-o",
                    "APT::FTPArchive::Release::Origin=stratum-test",
                    "release",
                    ".",
                ])
                .current_dir(out),
        )?;
        fs::write(out.join("Release"), release)?;
        let key = out.with_extension("gpg");
        sign(out, &key)?;
        Ok(AptRepo {
            dir: out.to_path_buf(),
            key,
            packages,
        })
    }

    /// The `.deb` files of `pkgs`, downloaded by the host's apt once per exact set.
    fn cached_debs(&self, pkgs: &[Pkg]) -> Result<Vec<PathBuf>> {
        let list: String = pkgs
            .iter()
            .map(|p| format!("{} {} {}\n", p.name, p.version, p.arch))
            .collect();
        let dir = self
            .cache
            .join(format!("aptrepo-{}", digest(list.as_bytes())?));
        let files = |dir: &Path| -> Vec<PathBuf> {
            pkgs.iter()
                .map(|p| {
                    dir.join(format!(
                        "{}_{}_{}.deb",
                        p.name,
                        p.version.replace(':', "%3a"),
                        p.arch
                    ))
                })
                .collect()
        };
        let done = dir.with_extension("complete");
        if !done.exists() {
            let tmp = dir.with_extension("tmp");
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp)?;
            eprintln!(
                "downloading {} package(s) for the test repository",
                pkgs.len()
            );
            run(Command::new("apt-get")
                .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
                .args(
                    pkgs.iter()
                        .map(|p| format!("{}:{}={}", p.name, p.arch, p.version)),
                )
                .current_dir(&tmp))?;
            for f in files(&tmp) {
                if !f.is_file() {
                    bail!("apt-get download did not produce {}", f.display());
                }
            }
            let _ = fs::remove_dir_all(&dir);
            fs::rename(&tmp, &dir)?;
            fs::write(&done, list)?;
        }
        Ok(files(&dir))
    }
}

/// The first 16 hex digits of the SHA-256 of `data` (a cache key).
fn digest(data: &[u8]) -> Result<String> {
    use std::io::Write;
    let mut child = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running sha256sum")?;
    child.stdin.take().context("stdin")?.write_all(data)?;
    let out = child.wait_with_output()?;
    let hex = String::from_utf8_lossy(&out.stdout);
    match hex.get(..16) {
        Some(k) if out.status.success() => Ok(k.to_string()),
        _ => bail!("sha256sum failed"),
    }
}

/// Signs `repo/Release` (as `InRelease` and `Release.gpg`) with a new key made in a temporary
/// `GNUPGHOME`, and writes its public key to `key`.
fn sign(repo: &Path, key: &Path) -> Result<()> {
    let home = tempfile::Builder::new()
        .prefix("stratum-gpg-")
        .tempdir()
        .context("creating GNUPGHOME")?;
    // gpg wants its home private.
    fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )?;
    let gpg = |args: &[&str]| -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", home.path())
            .args([
                "--batch",
                "--quiet",
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
            ])
            .args(args);
        c
    };
    let r = (|| -> Result<()> {
        run(&mut gpg(&[
            "--quick-generate-key",
            "Stratum test repository <test@stratum.invalid>",
            "ed25519",
            "sign",
            "never",
        ]))?;
        let release = repo.join("Release");
        let release = release.to_str().context("repository path")?;
        let inrelease = repo.join("InRelease");
        let detached = repo.join("Release.gpg");
        run(gpg(&["--yes", "--clearsign", "--output"])
            .arg(&inrelease)
            .arg(release))?;
        run(gpg(&["--yes", "--armor", "--detach-sign", "--output"])
            .arg(&detached)
            .arg(release))?;
        let public = Command::new("gpg")
            .env("GNUPGHOME", home.path())
            .args(["--batch", "--export"])
            .output()
            .context("exporting the public key")?;
        if !public.status.success() || public.stdout.is_empty() {
            bail!("gpg --export: {}", String::from_utf8_lossy(&public.stderr));
        }
        fs::write(key, public.stdout)?;
        Ok(())
    })();
    // The agent gpg started for this home ends with it.
    let _ = Command::new("gpgconf")
        .env("GNUPGHOME", home.path())
        .args(["--kill", "gpg-agent"])
        .status();
    r
}

/// Builds a minimal `.deb` (no files) in `dir` whose control file has the extra `fields`
/// (e.g. `("Conflicts", "nano")`); returns its path.
pub fn build_test_deb(
    dir: &Path,
    name: &str,
    version: &str,
    fields: &[(&str, &str)],
) -> Result<PathBuf> {
    let tree = dir.join(format!("{name}.tree"));
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(tree.join("DEBIAN"))?;
    let mut control = format!(
        "Package: {name}\nVersion: {version}\nArchitecture: all\n\
         Maintainer: Stratum tests <test@stratum.invalid>\n"
    );
    for (k, v) in fields {
        control.push_str(&format!("{k}: {v}\n"));
    }
    control.push_str(&format!("Description: {name}, made by the VM tests\n"));
    fs::write(tree.join("DEBIAN/control"), control)?;
    let deb = dir.join(format!("{name}_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zxz", "--build"])
        .arg(&tree)
        .arg(&deb))?;
    fs::remove_dir_all(&tree)?;
    Ok(deb)
}
