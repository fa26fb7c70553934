//! Compose manifests: the TOML files `stratum compose tree` builds an image from
//! (docs/compose.md documents every key).
//!
//! A manifest may `include` others, by paths relative to itself. Included files are read
//! first, in order, and the including file last: a scalar set by a later file overrides an
//! earlier one, lists are concatenated, and the `[units]`, `[initramfs]` and `[config]` tables
//! merge key by key. Each file is parsed on its own, so a syntax error, an unknown key or a
//! value of the wrong type is reported with that file's name and line.
//!
//! What every client would refuse is refused here, at the line that says it, rather than
//! after a build or on the machines: a version a boot entry title cannot hold, kernel
//! arguments that are the machine's own (`root=`, `init=`, `ostree=`) or too long for the
//! command line ([`crate::bootset::entry::check_image_kargs_fit`]), a `[[files]] source`
//! outside the manifest's directory (the build host's files must not reach the image by
//! accident), and user or group fields that would break their `sysusers.d` line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use toml::Spanned;

/// How deep includes may nest (a cycle is reported before this is reached).
const MAX_INCLUDE_DEPTH: usize = 16;

/// mmdebstrap's package-set variants that make a bootable system.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// `Essential: yes` packages and apt.
    #[default]
    Minbase,
    /// Adds `Priority: required`.
    Required,
    /// Adds `Priority: important`.
    Important,
    /// Adds `Priority: standard`.
    Standard,
}

impl Variant {
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::Minbase => "minbase",
            Variant::Required => "required",
            Variant::Important => "important",
            Variant::Standard => "standard",
        }
    }
}

/// How the image's initramfs is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum InitramfsMode {
    /// `stratum-initramfs`: the kernel modules to find the root, and stratum-prepare-root.
    #[default]
    Stratum,
    /// dracut with Stratum's module, run in the new root (the manifest installs dracut).
    Dracut,
    /// The root's own initramfs, made by a package or a postprocess script.
    Keep,
}

/// An APT repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Repository {
    pub url: String,
    pub suite: String,
    pub components: Vec<String>,
    /// The OpenPGP keyring (binary `.gpg` or armored `.asc`) that signs its `Release` file;
    /// none for Debian's own archive, whose keyring apt trusts already.
    #[serde(skip)]
    pub key: Option<PathBuf>,
    /// The key's contents, for the digest.
    pub key_sha256: Option<String>,
    /// No signature check (apt's `trusted=yes`): only for a local repository one built.
    pub trusted: bool,
}

/// A file the image gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FileSpec {
    /// Absolute, under `/etc` or `/usr`.
    pub path: String,
    #[serde(skip)]
    pub content: Vec<u8>,
    pub content_sha256: String,
    pub mode: u32,
}

/// A system user, as `sysusers.d` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    pub gecos: Option<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    /// Supplementary groups (each declared or already in the root).
    pub groups: Vec<String>,
}

/// A system group, as `sysusers.d` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Group {
    pub name: String,
    pub gid: Option<u32>,
}

/// A postprocess script, run with `/bin/sh -e` in a sandbox whose root is the new root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Script {
    /// Where it was written: `FILE:LINE`, or the script file's path.
    #[serde(skip)]
    pub origin: String,
    pub script: String,
}

/// The `[initramfs]` table, merged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Default)]
pub struct Initramfs {
    pub mode: InitramfsMode,
    /// Kernel modules added to stratum-initramfs's defaults.
    pub modules: Vec<String>,
    /// Arguments added to dracut's command line.
    pub dracut_args: Vec<String>,
}

/// A manifest with its includes resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Manifest {
    #[serde(rename = "ref")]
    pub refname: String,
    /// The version template: `{date}` is the build day (UTC, `YYYYMMDD`), `{serial}` counts
    /// builds of the same day from 0.
    pub version: Option<String>,
    pub suite: String,
    pub variant: Variant,
    pub repositories: Vec<Repository>,
    pub packages: Vec<String>,
    pub exclude_packages: Vec<String>,
    /// The kernel package (also installed).
    pub kernel: String,
    pub units_enable: Vec<String>,
    pub units_mask: Vec<String>,
    pub kargs: Vec<String>,
    pub initramfs: Initramfs,
    pub files: Vec<FileSpec>,
    pub groups: Vec<Group>,
    pub users: Vec<User>,
    pub postprocess: Vec<Script>,
    /// `stratum.toml` settings the image ships (boot-tries, health checks, updates).
    pub config: toml::Table,
    /// Every file read, the top one first.
    #[serde(skip)]
    pub sources: Vec<PathBuf>,
}

/// One file as written; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ManifestFile {
    include: Option<Vec<Spanned<String>>>,
    #[serde(rename = "ref")]
    refname: Option<Spanned<String>>,
    version: Option<Spanned<String>>,
    suite: Option<String>,
    variant: Option<Variant>,
    repositories: Option<Vec<RepositoryFile>>,
    packages: Option<Vec<Spanned<String>>>,
    exclude_packages: Option<Vec<Spanned<String>>>,
    kernel: Option<Spanned<String>>,
    units: Option<UnitsFile>,
    kargs: Option<Vec<Spanned<String>>>,
    initramfs: Option<InitramfsFile>,
    files: Option<Vec<FileFile>>,
    groups: Option<Vec<GroupFile>>,
    users: Option<Vec<UserFile>>,
    postprocess: Option<Vec<ScriptFile>>,
    config: Option<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct RepositoryFile {
    url: Option<Spanned<String>>,
    /// A local repository directory, relative to the manifest.
    path: Option<Spanned<String>>,
    suite: Option<String>,
    components: Option<Vec<String>>,
    key: Option<Spanned<String>>,
    #[serde(default)]
    trusted: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct UnitsFile {
    enable: Option<Vec<Spanned<String>>>,
    mask: Option<Vec<Spanned<String>>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct InitramfsFile {
    mode: Option<InitramfsMode>,
    modules: Option<Vec<String>>,
    dracut_args: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileFile {
    path: Spanned<String>,
    content: Option<String>,
    source: Option<Spanned<String>>,
    mode: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct UserFile {
    name: Spanned<String>,
    uid: Option<u32>,
    gecos: Option<Spanned<String>>,
    home: Option<Spanned<String>>,
    shell: Option<Spanned<String>>,
    #[serde(default)]
    groups: Vec<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct GroupFile {
    name: Spanned<String>,
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct ScriptFile {
    script: Option<Spanned<String>>,
    source: Option<Spanned<String>>,
}

/// A file being read: its path and text, for error positions.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    /// `FILE:LINE` of a span's start.
    fn at(&self, span: std::ops::Range<usize>) -> String {
        let line = self.text[..span.start.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1;
        format!("{}:{line}", self.path.display())
    }

    /// A path written in this file, relative to its directory.
    fn relative(&self, p: &str) -> PathBuf {
        self.dir().join(p)
    }

    fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        }
    }

    /// A file named in this file that must lie inside its directory: relative, without `..`,
    /// and not a symlink (or under one) that leads out. Returns its resolved path.
    fn inside(&self, p: &str) -> Result<PathBuf> {
        let dir = self.dir();
        let top = dir
            .canonicalize()
            .with_context(|| format!("reading {}", dir.display()))?;
        let rel = Path::new(p);
        if rel.is_absolute()
            || rel
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            bail!(
                "{p:?} is outside the manifest's directory {}: give a path relative to it, \
                 without `..` (copy the file next to the manifest)",
                top.display()
            );
        }
        let joined = dir.join(rel);
        let real = joined
            .canonicalize()
            .with_context(|| format!("reading {}", joined.display()))?;
        if !real.starts_with(&top) {
            bail!(
                "{p:?} leads out of the manifest's directory {} through a symlink (to {}): \
                 copy the file next to the manifest",
                top.display(),
                real.display()
            );
        }
        Ok(real)
    }
}

/// Accumulates files in include order.
#[derive(Default)]
struct Builder {
    refname: Option<String>,
    version: Option<String>,
    suite: Option<String>,
    variant: Option<Variant>,
    repositories: Vec<Repository>,
    packages: Vec<String>,
    exclude_packages: Vec<String>,
    kernel: Option<String>,
    units_enable: Vec<String>,
    units_mask: Vec<String>,
    kargs: Vec<String>,
    /// `kargs` as the kernel receives them, for the length of the command line.
    canonical_kargs: Vec<String>,
    initramfs: Initramfs,
    files: BTreeMap<String, FileSpec>,
    groups: Vec<Group>,
    users: Vec<User>,
    postprocess: Vec<Script>,
    config: toml::Table,
    sources: Vec<PathBuf>,
}

impl Manifest {
    /// Reads the manifest at `path` and everything it includes.
    pub fn load(path: &Path) -> Result<Manifest> {
        let mut b = Builder::default();
        b.read(path, &mut Vec::new())?;
        b.finish(path)
    }

    /// The digest of everything the manifest says, including the contents of the files,
    /// keys and scripts it names: equal digests build the same image from the same packages.
    pub fn digest(&self) -> String {
        let json = serde_json::to_vec(self).expect("a manifest serializes");
        hex(&Sha256::digest(json))
    }

    /// Every package to install: the list, then the kernel.
    pub fn install_set(&self) -> Vec<String> {
        let mut v = self.packages.clone();
        if !v.contains(&self.kernel) {
            v.push(self.kernel.clone());
        }
        v
    }
}

impl Builder {
    fn read(&mut self, path: &Path, stack: &mut Vec<PathBuf>) -> Result<()> {
        let canonical = path
            .canonicalize()
            .with_context(|| format!("reading manifest {}", path.display()))?;
        if stack.contains(&canonical) {
            bail!(
                "manifest {} includes itself (through {})",
                path.display(),
                stack
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" -> ")
            );
        }
        if stack.len() >= MAX_INCLUDE_DEPTH {
            bail!(
                "manifest {}: includes nest deeper than {MAX_INCLUDE_DEPTH}",
                path.display()
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading manifest {}", path.display()))?;
        let f: ManifestFile = toml::from_str(&text)
            .map_err(crate::excerpt::error)
            .with_context(|| format!("manifest {}", path.display()))?;
        let src = Source { path, text: &text };
        stack.push(canonical);
        for inc in f.include.iter().flatten() {
            let p = src.relative(inc.get_ref());
            if !p.is_file() {
                bail!(
                    "{}: included manifest {} does not exist",
                    src.at(inc.span()),
                    p.display()
                );
            }
            self.read(&p, stack)
                .with_context(|| format!("included from {}", src.at(inc.span())))?;
        }
        stack.pop();
        self.sources.push(path.to_path_buf());
        self.merge(&src, f)
    }

    fn merge(&mut self, src: &Source, f: ManifestFile) -> Result<()> {
        if let Some(r) = f.refname {
            check_ref(r.get_ref()).with_context(|| src.at(r.span()))?;
            self.refname = Some(r.into_inner());
        }
        if let Some(v) = f.version {
            super::check_version(v.get_ref()).with_context(|| src.at(v.span()))?;
            self.version = Some(v.into_inner());
        }
        if f.suite.is_some() {
            self.suite = f.suite;
        }
        if f.variant.is_some() {
            self.variant = f.variant;
        }
        for r in f.repositories.into_iter().flatten() {
            self.repositories.push(repository(src, r)?);
        }
        self.packages.extend(package_names(src, f.packages)?);
        self.exclude_packages
            .extend(package_names(src, f.exclude_packages)?);
        if let Some(k) = f.kernel {
            check_package_name(k.get_ref()).with_context(|| src.at(k.span()))?;
            self.kernel = Some(k.into_inner());
        }
        if let Some(u) = f.units {
            self.units_enable.extend(unit_names(src, u.enable)?);
            self.units_mask.extend(unit_names(src, u.mask)?);
        }
        for k in f.kargs.into_iter().flatten() {
            let at = || {
                format!(
                    "{}: kernel argument {:?}",
                    src.at(k.span()),
                    crate::excerpt::line(k.get_ref())
                )
            };
            let canonical = crate::kargs::check_image_default(k.get_ref()).with_context(at)?;
            self.canonical_kargs.push(canonical.to_string());
            crate::bootset::entry::check_image_kargs_fit(&self.canonical_kargs).with_context(at)?;
            self.kargs.push(k.into_inner());
        }
        if let Some(i) = f.initramfs {
            if let Some(m) = i.mode {
                self.initramfs.mode = m;
            }
            self.initramfs.modules.extend(i.modules.unwrap_or_default());
            self.initramfs
                .dracut_args
                .extend(i.dracut_args.unwrap_or_default());
        }
        for file in f.files.into_iter().flatten() {
            let spec = file_spec(src, file)?;
            self.files.insert(spec.path.clone(), spec);
        }
        for g in f.groups.into_iter().flatten() {
            self.groups.push(group(src, g)?);
        }
        for u in f.users.into_iter().flatten() {
            self.users.push(user(src, u)?);
        }
        for s in f.postprocess.into_iter().flatten() {
            self.postprocess.push(script(src, s)?);
        }
        if let Some(c) = f.config {
            merge_table(&mut self.config, c);
        }
        Ok(())
    }

    fn finish(self, path: &Path) -> Result<Manifest> {
        let name = path.display();
        let refname = self
            .refname
            .with_context(|| format!("manifest {name}: no `ref` (the ref to commit on)"))?;
        let kernel = self.kernel.with_context(|| {
            format!("manifest {name}: no `kernel` (the kernel package, e.g. linux-image-amd64)")
        })?;
        let suite = self.suite.unwrap_or_else(|| "bookworm".to_string());
        if !self.config.is_empty() {
            let text = toml::to_string(&self.config)?;
            crate::config::Config::default().apply(&format!("manifest {name}: [config]"), &text)?;
        }
        for p in &self.exclude_packages {
            if self.packages.contains(p) || *p == kernel {
                bail!("manifest {name}: package {p} is both included and excluded");
            }
        }
        let repositories = self
            .repositories
            .into_iter()
            .map(|mut r| {
                if r.suite.is_empty() {
                    r.suite = suite.clone();
                }
                r
            })
            .collect();
        Ok(Manifest {
            refname,
            version: self.version,
            suite,
            variant: self.variant.unwrap_or_default(),
            repositories,
            packages: dedup(self.packages),
            exclude_packages: dedup(self.exclude_packages),
            kernel,
            units_enable: dedup(self.units_enable),
            units_mask: dedup(self.units_mask),
            kargs: self.kargs,
            initramfs: self.initramfs,
            files: self.files.into_values().collect(),
            groups: self.groups,
            users: self.users,
            postprocess: self.postprocess,
            config: self.config,
            sources: self.sources,
        })
    }
}

fn repository(src: &Source, r: RepositoryFile) -> Result<Repository> {
    let (at, url) = match (r.url, r.path) {
        (Some(u), None) => {
            let at = src.at(u.span());
            let url = u.into_inner();
            crate::remote::validate_url(&url).with_context(|| format!("{at}: repository"))?;
            (at, url)
        }
        (None, Some(p)) => {
            let at = src.at(p.span());
            let dir = src.relative(p.get_ref());
            let dir = dir.canonicalize().with_context(|| {
                format!(
                    "{at}: repository directory {} does not exist",
                    dir.display()
                )
            })?;
            let dir = dir
                .to_str()
                .filter(|d| !d.contains(char::is_whitespace))
                .with_context(|| {
                    format!("{at}: repository directory {dir:?}: no spaces allowed")
                })?;
            (at, format!("file://{dir}"))
        }
        _ => bail!(
            "manifest {}: each [[repositories]] has exactly one of `url` and `path`",
            src.path.display()
        ),
    };
    if r.trusted && r.key.is_some() {
        bail!("{at}: repository {url} has both `key` and `trusted = true`: pick one");
    }
    let (key, key_sha256) = match r.key {
        Some(k) => {
            let p = src.relative(k.get_ref());
            let bytes = std::fs::read(&p)
                .with_context(|| format!("{}: reading key {}", src.at(k.span()), p.display()))?;
            (Some(p), Some(hex(&Sha256::digest(bytes))))
        }
        None => (None, None),
    };
    let suite = r.suite.unwrap_or_default();
    if !suite.is_empty() && !is_word(&suite) {
        bail!("{at}: repository {url}: suite {suite:?} is not a suite name");
    }
    // A flat repository ("deb URL ./") has a directory for a suite and no components.
    let flat = suite.ends_with('/');
    let components = r.components.unwrap_or_else(|| {
        if flat {
            vec![]
        } else {
            vec!["main".to_string()]
        }
    });
    if flat != components.is_empty() || components.iter().any(|c| !is_word(c)) {
        bail!(
            "{at}: repository {url}: components must be words such as main (none for a flat \
             repository, whose suite is a directory such as \"./\")"
        );
    }
    Ok(Repository {
        url,
        suite,
        components,
        key,
        key_sha256,
        trusted: r.trusted,
    })
}

fn file_spec(src: &Source, f: FileFile) -> Result<FileSpec> {
    let at = src.at(f.path.span());
    let path = f.path.into_inner();
    check_image_path(&path).with_context(|| format!("{at}: file {path:?}"))?;
    let (content, default_mode) = match (f.content, f.source) {
        (Some(c), None) => (c.into_bytes(), 0o644),
        (None, Some(s)) => {
            let p = src
                .inside(s.get_ref())
                .with_context(|| format!("{}: file {path}: source", src.at(s.span())))?;
            let bytes = std::fs::read(&p)
                .with_context(|| format!("{}: reading {}", src.at(s.span()), p.display()))?;
            let exec = std::fs::metadata(&p)
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0)
                .unwrap_or(false);
            (bytes, if exec { 0o755 } else { 0o644 })
        }
        _ => bail!("{at}: file {path}: give exactly one of `content` and `source`"),
    };
    let mode = match f.mode {
        Some(m) => u32::from_str_radix(m.get_ref(), 8)
            .ok()
            .filter(|v| *v <= 0o7777)
            .with_context(|| {
                format!(
                    "{}: mode {:?} is not an octal mode such as \"0644\"",
                    src.at(m.span()),
                    m.get_ref()
                )
            })?,
        None => default_mode,
    };
    Ok(FileSpec {
        path,
        content_sha256: hex(&Sha256::digest(&content)),
        content,
        mode,
    })
}

fn script(src: &Source, s: ScriptFile) -> Result<Script> {
    match (s.script, s.source) {
        (Some(text), None) => Ok(Script {
            origin: src.at(text.span()),
            script: text.into_inner(),
        }),
        (None, Some(file)) => {
            let p = src.relative(file.get_ref());
            let script = std::fs::read_to_string(&p)
                .with_context(|| format!("{}: reading {}", src.at(file.span()), p.display()))?;
            Ok(Script {
                origin: p.display().to_string(),
                script,
            })
        }
        _ => bail!(
            "manifest {}: each [[postprocess]] has exactly one of `script` and `source`",
            src.path.display()
        ),
    }
}

fn package_names(src: &Source, v: Option<Vec<Spanned<String>>>) -> Result<Vec<String>> {
    v.into_iter()
        .flatten()
        .map(|p| {
            check_package_name(p.get_ref()).with_context(|| src.at(p.span()))?;
            Ok(p.into_inner())
        })
        .collect()
}

fn unit_names(src: &Source, v: Option<Vec<Spanned<String>>>) -> Result<Vec<String>> {
    v.into_iter()
        .flatten()
        .map(|u| {
            let name = u.get_ref();
            let ok = name.contains('.')
                && !name.starts_with('.')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"@.-_:\\".contains(&b));
            if !ok {
                bail!(
                    "{}: {:?} is not a systemd unit name",
                    src.at(u.span()),
                    crate::excerpt::line(name)
                );
            }
            Ok(u.into_inner())
        })
        .collect()
}

/// Debian package names (policy 5.6.1): lower case letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit.
pub fn check_package_name(name: &str) -> Result<()> {
    let ok = name.len() >= 2
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !ok {
        bail!(
            "{:?} is not a Debian package name",
            crate::excerpt::line(name)
        );
    }
    Ok(())
}

/// A ref name: the manifest's `ref`, and `compose rootfs --ref`.
pub fn check_ref(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.contains("..")
        && !r.contains("//")
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if !ok {
        bail!(
            "{:?} is not a ref name (letters, digits, . _ - and / between parts)",
            crate::excerpt::line(r)
        );
    }
    Ok(())
}

/// A path the image may carry a manifest file at: absolute, normal, under `/etc` or `/usr`
/// (`/var` is the machine's, made at boot from the factory copy or tmpfiles.d).
fn check_image_path(p: &str) -> Result<()> {
    let path = Path::new(p);
    let normal = path.is_absolute()
        && path
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_)))
        && !p.ends_with('/');
    if !normal {
        bail!("must be an absolute path without . or .. parts");
    }
    if !(p.starts_with("/etc/") || p.starts_with("/usr/")) {
        bail!("only files under /etc and /usr can be added (use tmpfiles.d for /var)");
    }
    Ok(())
}

fn group(src: &Source, g: GroupFile) -> Result<Group> {
    check_sysusers_name(g.name.get_ref())
        .with_context(|| format!("{}: group", src.at(g.name.span())))?;
    Ok(Group {
        name: g.name.into_inner(),
        gid: g.gid,
    })
}

/// A user, checked so that it stays one `u` line (and its `m` lines) of `sysusers.d` and
/// one line of `/etc/passwd`.
fn user(src: &Source, u: UserFile) -> Result<User> {
    check_sysusers_name(u.name.get_ref())
        .with_context(|| format!("{}: user", src.at(u.name.span())))?;
    let name = u.name.into_inner();
    let field = |what: &str, v: Option<Spanned<String>>| -> Result<Option<String>> {
        let Some(v) = v else { return Ok(None) };
        check_passwd_field(v.get_ref())
            .with_context(|| format!("{}: user {name}: {what}", src.at(v.span())))?;
        Ok(Some(v.into_inner()))
    };
    let gecos = field("gecos", u.gecos)?;
    let home = field("home", u.home)?;
    let shell = field("shell", u.shell)?;
    let groups = u
        .groups
        .into_iter()
        .map(|g| {
            check_sysusers_name(g.get_ref())
                .with_context(|| format!("{}: user {name}: group", src.at(g.span())))?;
            Ok(g.into_inner())
        })
        .collect::<Result<_>>()?;
    Ok(User {
        name,
        uid: u.uid,
        gecos,
        home,
        shell,
        groups,
    })
}

/// A passwd field (gecos, home, shell): a control character would start another
/// `sysusers.d` line (another user, uid 0 included), a `:` another passwd field.
fn check_passwd_field(v: &str) -> Result<()> {
    if let Some(c) = v.chars().find(|c| c.is_control() || *c == ':') {
        bail!(
            "{:?} contains {c:?}: passwd fields cannot hold control characters or `:`",
            crate::excerpt::line(v)
        );
    }
    Ok(())
}

fn check_sysusers_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 31
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if !ok {
        bail!(
            "{:?} is not a user or group name (lower case letters, digits, _ and -)",
            crate::excerpt::line(n)
        );
    }
    Ok(())
}

fn is_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b))
        && !s.contains("..")
}

/// Merges `over` into `base` key by key (tables recursively; other values replace).
fn merge_table(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_table(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

fn dedup(v: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::BTreeSet::new();
    v.into_iter().filter(|x| seen.insert(x.clone())).collect()
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Expands the version template for a build on `day` (`YYYYMMDD`), given the versions of
/// earlier builds on the ref (newest first): `{serial}` is one more than the highest serial
/// an earlier version of the same template and day has, or 0.
pub fn expand_version(template: &str, day: &str, earlier: &[String]) -> Result<String> {
    for part in template.split('{').skip(1) {
        let name = part.split('}').next().unwrap_or_default();
        if name != "date" && name != "serial" {
            bail!("version template {template:?}: unknown field {{{name}}} (known: {{date}}, {{serial}})");
        }
    }
    let dated = template.replace("{date}", day);
    if !dated.contains("{serial}") {
        return Ok(dated);
    }
    let (prefix, suffix) = dated.split_once("{serial}").expect("contains {serial}");
    let next = earlier
        .iter()
        .filter_map(|v| {
            v.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()
        })
        .max()
        .map_or(0, |n| n + 1);
    Ok(dated.replacen("{serial}", &next.to_string(), 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn includes_merge_in_order() {
        let d = tempfile::tempdir().unwrap();
        write(
            d.path(),
            "base.toml",
            "ref = \"base/ref\"\nkernel = \"linux-image-amd64\"\npackages = [\"systemd-sysv\"]\n\
             [units]\nenable = [\"a.service\"]\n[config]\nboot-tries = 2\n",
        );
        let top = write(
            d.path(),
            "top.toml",
            "include = [\"base.toml\"]\nref = \"top/ref\"\npackages = [\"nano\", \"systemd-sysv\"]\n\
             [units]\nmask = [\"b.timer\"]\n[config]\non-failure = \"none\"\n",
        );
        let m = Manifest::load(&top).unwrap();
        assert_eq!(m.refname, "top/ref");
        assert_eq!(m.packages, ["systemd-sysv", "nano"]);
        assert_eq!(
            m.install_set(),
            ["systemd-sysv", "nano", "linux-image-amd64"]
        );
        assert_eq!(m.units_enable, ["a.service"]);
        assert_eq!(m.units_mask, ["b.timer"]);
        assert_eq!(m.config.len(), 2);
        assert_eq!(m.suite, "bookworm");
        assert_eq!(m.sources.len(), 2);
    }

    #[test]
    fn errors_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let inc = write(
            d.path(),
            "inc.toml",
            "kernel = \"k1\"\n\npackagez = [\"a\"]\n",
        );
        let top = write(
            d.path(),
            "top.toml",
            "ref = \"r\"\ninclude = [\"inc.toml\"]\n",
        );
        let e = format!("{:#}", Manifest::load(&top).unwrap_err());
        assert!(e.contains(&format!("{}", inc.display())), "{e}");
        assert!(e.contains("line 3"), "{e}");
        assert!(e.contains("packagez"), "{e}");
        assert!(e.contains("top.toml:2"), "{e}");

        let bad = write(
            d.path(),
            "bad.toml",
            "ref = \"r\"\nkernel = \"k1\"\npackages = [\n  \"ok\",\n  \"Bad_Name\",\n]\n",
        );
        let e = format!("{:#}", Manifest::load(&bad).unwrap_err());
        assert!(e.contains("bad.toml:5"), "{e}");

        let file = write(
            d.path(),
            "file.toml",
            "ref = \"r\"\nkernel = \"k1\"\n[[files]]\npath = \"/var/x\"\ncontent = \"\"\n",
        );
        let e = format!("{:#}", Manifest::load(&file).unwrap_err());
        assert!(e.contains("file.toml:4") && e.contains("tmpfiles.d"), "{e}");

        let karg = write(
            d.path(),
            "karg.toml",
            "ref = \"r\"\nkernel = \"k1\"\nkargs = [\"ostree=/x\"]\n",
        );
        let e = format!("{:#}", Manifest::load(&karg).unwrap_err());
        assert!(e.contains("karg.toml:3"), "{e}");

        let cfg = write(
            d.path(),
            "cfg.toml",
            "ref = \"r\"\nkernel = \"k1\"\n[config]\nboot-tries = 99\n",
        );
        let e = format!("{:#}", Manifest::load(&cfg).unwrap_err());
        assert!(e.contains("cfg.toml") && e.contains("boot-tries"), "{e}");

        let cycle = write(d.path(), "cycle.toml", "include = [\"cycle.toml\"]\n");
        let e = format!("{:#}", Manifest::load(&cycle).unwrap_err());
        assert!(e.contains("includes itself"), "{e}");

        let missing = write(d.path(), "missing.toml", "kernel = \"k1\"\n");
        let e = format!("{:#}", Manifest::load(&missing).unwrap_err());
        assert!(e.contains("no `ref`"), "{e}");
    }

    /// The error of loading `text` as a manifest named `name` in `dir`.
    fn refused(dir: &Path, name: &str, text: &str) -> String {
        let p = write(dir, name, text);
        format!("{:#}", Manifest::load(&p).unwrap_err())
    }

    const HEAD: &str = "ref = \"r\"\nkernel = \"k1\"\n";

    #[test]
    fn versions_clients_cannot_show_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (i, v) in ["1\\n2", "1\\u001b[2J", "1\\t2", "1\\r"].iter().enumerate() {
            let name = format!("v{i}.toml");
            let e = refused(d.path(), &name, &format!("{HEAD}version = \"{v}\"\n"));
            assert!(
                e.contains(&format!("{name}:3")) && e.contains("control character"),
                "{v}: {e}"
            );
        }
        let ok = write(
            d.path(),
            "ok.toml",
            &format!("{HEAD}version = \"12.{{date}}\"\n"),
        );
        assert!(Manifest::load(&ok).is_ok());
    }

    #[test]
    fn kernel_arguments_of_the_machine_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for (i, k) in ["root=UUID=1", "root=/dev/sda1", "init=/bin/sh", "ostree=/x"]
            .iter()
            .enumerate()
        {
            let name = format!("k{i}.toml");
            let e = refused(
                d.path(),
                &name,
                &format!("{HEAD}kargs = [\n  \"quiet\",\n  \"{k}\",\n]\n"),
            );
            assert!(e.contains(&format!("{name}:5")), "{k}: {e}");
        }
    }

    /// Arguments every machine would refuse as too long, counted across includes: the line
    /// that crosses the limit is named.
    #[test]
    fn kernel_arguments_too_long_for_every_machine_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let half = format!("a={}", "x".repeat(900));
        write(d.path(), "base.toml", &format!("kargs = [\"{half}\"]\n"));
        let top = format!("include = [\"base.toml\"]\n{HEAD}kargs = [\"b=1\", \"{half}\"]\n");
        assert!(Manifest::load(&write(d.path(), "fits.toml", &top)).is_ok());
        let e = refused(
            d.path(),
            "long.toml",
            &format!(
                "include = [\"fits.toml\"]\nkargs = [\n  \"c={}\",\n]\n",
                "y".repeat(300)
            ),
        );
        assert!(
            e.contains("long.toml:3")
                && e.contains(&crate::bootset::entry::MAX_CMDLINE.to_string()),
            "{e}"
        );
    }

    #[test]
    fn file_sources_stay_in_the_manifest_s_directory() {
        let d = tempfile::tempdir().unwrap();
        let m = d.path().join("m");
        std::fs::create_dir_all(m.join("files")).unwrap();
        write(d.path(), "secret", "host secret\n");
        write(&m, "files/motd", "hello\n");
        std::os::unix::fs::symlink("../../secret", m.join("files/out")).unwrap();
        std::os::unix::fs::symlink("../secret", m.join("up")).unwrap();
        std::os::unix::fs::symlink("motd", m.join("files/in")).unwrap();
        let file = |source: &str| {
            format!("{HEAD}[[files]]\npath = \"/etc/motd\"\nsource = \"{source}\"\n")
        };
        let secret = d.path().join("secret");
        for source in [
            secret.to_str().unwrap(),
            "../secret",
            "files/../../secret",
            "files/out",
            "up",
        ] {
            let e = refused(&m, "f.toml", &file(source));
            assert!(
                e.contains("f.toml:5") && (e.contains("outside") || e.contains("leads out")),
                "{source}: {e}"
            );
        }
        for source in ["files/motd", "files/in", "./files/motd"] {
            let p = write(&m, "f.toml", &file(source));
            assert_eq!(
                Manifest::load(&p).unwrap().files[0].content,
                b"hello\n",
                "{source}"
            );
        }
    }

    /// A user's fields stay on its `sysusers.d` line: no field can start a second line (a
    /// second user, with uid 0) or a second passwd field.
    #[test]
    fn user_fields_cannot_add_sysusers_lines() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            ("name = \"app\\nu evil 0\"", 4),
            ("name = \"app:x\"", 4),
            (
                "name = \"app\"\nhome = \"/var/lib/app\\nu evil 0 - /root /bin/sh\"",
                5,
            ),
            ("name = \"app\"\nshell = \"/bin/sh\\r\"", 5),
            ("name = \"app\"\nshell = \"/bin/sh:x\"", 5),
            ("name = \"app\"\nhome = \"/a:b\"", 5),
            ("name = \"app\"\ngecos = \"The app\\nu evil 0\"", 5),
            ("name = \"app\"\ngroups = [\"ops\\nu evil 0\"]", 5),
        ];
        for (i, (fields, line)) in cases.iter().enumerate() {
            let name = format!("u{i}.toml");
            let e = refused(d.path(), &name, &format!("{HEAD}[[users]]\n{fields}\n"));
            assert!(e.contains(&format!("{name}:{line}")), "{fields}: {e}");
        }
        let e = refused(
            d.path(),
            "g.toml",
            &format!("{HEAD}[[groups]]\nname = \"o\\nps\"\n"),
        );
        assert!(e.contains("g.toml:4"), "{e}");
    }

    /// A parse error quotes the offending line of the file: cut, however long it is.
    #[test]
    fn parse_errors_quote_long_lines_cut() {
        let d = tempfile::tempdir().unwrap();
        let e = refused(
            d.path(),
            "huge.toml",
            &format!("{HEAD}packages = [{}]\n", "\"a\" ".repeat(5_000_000)),
        );
        assert!(e.len() < 2000, "an error of {} bytes", e.len());
        assert!(e.contains("huge.toml") && e.contains("line 3"), "{e}");
    }

    #[test]
    fn digest_covers_file_contents() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "motd", "hello\n");
        let top = write(
            d.path(),
            "m.toml",
            "ref = \"r\"\nkernel = \"k1\"\n[[files]]\npath = \"/etc/motd\"\nsource = \"motd\"\n",
        );
        let a = Manifest::load(&top).unwrap();
        assert_eq!(a.files[0].mode, 0o644);
        assert_eq!(a.files[0].content, b"hello\n");
        write(d.path(), "motd", "hello again\n");
        let b = Manifest::load(&top).unwrap();
        assert_ne!(a.digest(), b.digest());
        assert_eq!(b.digest(), Manifest::load(&top).unwrap().digest());
    }

    #[test]
    fn version_template() {
        assert_eq!(
            expand_version("12.{date}", "20261202", &[]).unwrap(),
            "12.20261202"
        );
        assert_eq!(
            expand_version("12.{date}.{serial}", "20261202", &[]).unwrap(),
            "12.20261202.0"
        );
        let earlier = ["12.20261202.1".to_string(), "12.20261201.7".to_string()];
        assert_eq!(
            expand_version("12.{date}.{serial}", "20261202", &earlier).unwrap(),
            "12.20261202.2"
        );
        assert!(expand_version("{day}", "20261202", &[]).is_err());
    }
}
