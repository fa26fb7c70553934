//! A real Debian system for the layering tests: the Debian root the VM tests boot (cached by
//! images/build-root.sh), composed into a source repository and installed into a sysroot,
//! with a local APT repository of test packages built by `dpkg-deb`, indexed by
//! `dpkg-scanpackages`/`apt-ftparchive` and signed with a throwaway key.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::{ok, Env};

/// A test package: control fields, files and maintainer scripts.
#[derive(Default, Clone)]
pub struct Deb<'a> {
    pub name: &'a str,
    pub version: &'a str,
    /// Extra control lines (`Depends: …`).
    pub control: &'a str,
    /// (path without leading /, contents)
    pub files: &'a [(&'a str, &'a str)],
    /// (script name, body after `#!/bin/sh\nset -e\n`)
    pub scripts: &'a [(&'a str, &'a str)],
    /// Conffiles (absolute paths).
    pub conffiles: &'a [&'a str],
}

/// Builds `deb` into `dir` with dpkg-deb; returns the .deb path.
pub fn build_deb(dir: &Path, deb: &Deb) -> PathBuf {
    let tree = dir.join(format!("build-{}-{}", deb.name, deb.version));
    let _ = fs::remove_dir_all(&tree);
    let ctl = tree.join("DEBIAN");
    fs::create_dir_all(&ctl).unwrap();
    fs::write(
        ctl.join("control"),
        format!(
            "Package: {}\nVersion: {}\nArchitecture: amd64\nMaintainer: Stratum tests \
             <tests@example.invalid>\nPriority: optional\nSection: misc\n{}Description: {} \
             test package\n",
            deb.name,
            deb.version,
            if deb.control.is_empty() {
                String::new()
            } else {
                format!("{}\n", deb.control.trim_end())
            },
            deb.name
        ),
    )
    .unwrap();
    for (p, c) in deb.files {
        let f = tree.join(p);
        fs::create_dir_all(f.parent().unwrap()).unwrap();
        fs::write(&f, c).unwrap();
        if p.contains("bin/") {
            fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for (name, body) in deb.scripts {
        let f = ctl.join(name);
        fs::write(&f, format!("#!/bin/sh\nset -e\n{body}\n")).unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o755)).unwrap();
    }
    if !deb.conffiles.is_empty() {
        fs::write(ctl.join("conffiles"), deb.conffiles.join("\n") + "\n").unwrap();
    }
    let out = dir.join(format!("{}_{}_amd64.deb", deb.name, deb.version));
    ok(Command::new("dpkg-deb")
        .args(["--root-owner-group", "-Zgzip", "--build"])
        .arg(&tree)
        .arg(&out)
        .output()
        .unwrap());
    fs::remove_dir_all(&tree).unwrap();
    out
}

/// A signed flat APT repository (`Suites: ./`) at `dir` holding `debs`; returns the public
/// key file.
pub fn make_repo(dir: &Path, debs: &[PathBuf], gnupg: &Path) -> PathBuf {
    fs::create_dir_all(dir).unwrap();
    for d in debs {
        fs::copy(d, dir.join(d.file_name().unwrap())).unwrap();
    }
    let sh = |script: &str| {
        ok(Command::new("sh")
            .arg("-c")
            .arg(script)
            .current_dir(dir)
            .env("GNUPGHOME", gnupg)
            .output()
            .unwrap())
    };
    if !gnupg.exists() {
        fs::create_dir_all(gnupg).unwrap();
        fs::set_permissions(gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        sh(
            "gpg --batch --quiet --passphrase '' --quick-gen-key 'Stratum test repository \
            <repo@example.invalid>' ed25519 sign never",
        );
    }
    sh(
        "dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null \
        && apt-ftparchive release . > Release \
        && rm -f InRelease && gpg --batch --yes --clearsign -o InRelease Release \
        && gpg --batch --yes --export > ../repo-key.gpg",
    );
    dir.parent().unwrap().join("repo-key.gpg")
}

/// Where downloads and built roots are cached: `$STRATUM_CACHE`, by default
/// `~/.cache/stratum`.
pub fn cache_dir() -> String {
    std::env::var("STRATUM_CACHE")
        .unwrap_or_else(|_| format!("{}/.cache/stratum", std::env::var("HOME").unwrap()))
}

/// The cached Debian root (built by the VM tests' script when missing).
pub fn debian_root() -> PathBuf {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cache = cache_dir();
    let out = Command::new("bash")
        .arg(top.join("images/build-root.sh"))
        .arg(env!("CARGO_BIN_EXE_stratum"))
        .arg(&cache)
        .stderr(std::process::Stdio::inherit())
        .output()
        .unwrap();
    assert!(out.status.success(), "building the Debian root");
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

/// The Debian system of a layering test.
pub struct Debian {
    pub env: Env,
    /// Where test packages are built.
    pub debs: PathBuf,
    /// The APT repository the system's sources name.
    pub repo: PathBuf,
    pub gnupg: PathBuf,
    pub base: String,
}

impl Debian {
    /// Composes the Debian root (with `base_debs` installed into it by dpkg, and sources
    /// naming the test repository) as `os/x` version 1 and installs it into the sysroot.
    pub fn new(repo_debs: &[Deb], base_debs: &[Deb]) -> Debian {
        Debian::in_env(Env::new(), repo_debs, base_debs)
    }

    /// [`Debian::new`] in `env`.
    pub fn in_env(env: Env, repo_debs: &[Deb], base_debs: &[Deb]) -> Debian {
        let d = env.dir.path().to_path_buf();
        let debs = d.join("debs");
        fs::create_dir_all(&debs).unwrap();
        let gnupg = d.join("gnupg");
        let repo = d.join("aptrepo");
        let built: Vec<PathBuf> = repo_debs.iter().map(|x| build_deb(&debs, x)).collect();
        let key = make_repo(&repo, &built, &gnupg);
        let root = d.join("root");
        ok(Command::new("cp")
            .args(["-a", "--link"])
            .arg(debian_root())
            .arg(&root)
            .output()
            .unwrap());
        for b in base_debs {
            let f = build_deb(&debs, b);
            ok(Command::new("dpkg")
                .arg("--root")
                .arg(&root)
                .arg("--force-script-chrootless")
                .arg("-i")
                .arg(&f)
                .output()
                .unwrap());
        }
        let kver = fs::read_dir(root.join("usr/lib/modules"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name()
            .to_string_lossy()
            .into_owned();
        // A stand-in initramfs: these systems are never booted.
        fs::write(root.join(format!("boot/initrd.img-{kver}")), "initrd\n").unwrap();
        let keyrings = root.join("etc/apt/keyrings");
        fs::create_dir_all(&keyrings).unwrap();
        let _ = fs::remove_file(keyrings.join("stratum-test.gpg"));
        fs::copy(&key, keyrings.join("stratum-test.gpg")).unwrap();
        fs::write(
            root.join("etc/apt/sources.list.d/stratum-test.sources"),
            format!(
                "Types: deb\nURIs: file:{}\nSuites: ./\nSigned-By: /etc/apt/keyrings/stratum-test.gpg\n",
                repo.display()
            ),
        )
        .unwrap();
        let base = env.compose_root(&root, Some("1"));
        ok(env.install_to_filesystem(["--karg", "root=UUID=1234", "--ref", "os/x"]));
        Debian {
            env,
            debs,
            repo,
            gnupg,
            base,
        }
    }

    /// Adds packages to the repository (re-signed).
    pub fn publish(&self, debs: &[Deb]) {
        let built: Vec<PathBuf> = debs.iter().map(|x| build_deb(&self.debs, x)).collect();
        make_repo(&self.repo, &built, &self.gnupg);
    }

    /// The deployment that boots next (the default).
    pub fn default_root(&self) -> PathBuf {
        let s = self.env.status();
        let d = &s["deployments"][0];
        self.env.sysroot.join(format!(
            "ostree/deploy/default/deploy/{}.{}",
            d["checksum"].as_str().unwrap(),
            d["serial"]
        ))
    }

    /// The installed packages (name -> version) of the default deployment, from its dpkg
    /// database.
    pub fn installed(&self) -> std::collections::BTreeMap<String, String> {
        let status =
            fs::read_to_string(self.default_root().join("usr/lib/sysimage/dpkg/status")).unwrap();
        let mut out = std::collections::BTreeMap::new();
        for para in status.split("\n\n") {
            let field = |k: &str| {
                para.lines()
                    .find_map(|l| l.strip_prefix(&format!("{k}: ")))
                    .map(str::to_string)
            };
            if let (Some(n), Some(v), Some(s)) =
                (field("Package"), field("Version"), field("Status"))
            {
                if s.ends_with(" installed") {
                    out.insert(n, v);
                }
            }
        }
        out
    }
}
