//! Compose manifests: the TOML files `stratum compose tree` builds an image from
//! (docs/compose.md documents every key).
//!
//! A manifest may `include` others, by paths relative to itself. Included files are read
//! first, in order, and the including file last: a scalar set by a later file overrides an
//! earlier one, lists are concatenated, and the `[units]`, `[initramfs]` and `[config]` tables
//! merge key by key. Each file is parsed on its own, so a syntax error, an unknown key or a
//! value of the wrong type is reported with that file's name and line.

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
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct User {
    pub name: String,
    pub uid: Option<u32>,
    #[serde(default)]
    pub gecos: Option<String>,
    pub home: Option<String>,
    pub shell: Option<String>,
    /// Supplementary groups (each declared or already in the root).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A system group, as `sysusers.d` declares it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
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
    version: Option<String>,
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
    groups: Option<Vec<Group>>,
    users: Option<Vec<User>>,
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
        self.path.parent().unwrap_or(Path::new(".")).join(p)
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
        if f.version.is_some() {
            self.version = f.version;
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
            crate::kargs::check_settable(k.get_ref()).with_context(|| {
                format!("{}: kernel argument {:?}", src.at(k.span()), k.get_ref())
            })?;
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
        self.groups.extend(f.groups.unwrap_or_default());
        self.users.extend(f.users.unwrap_or_default());
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
        for u in &self.users {
            check_sysusers_name(&u.name).with_context(|| format!("manifest {name}: user"))?;
        }
        for g in &self.groups {
            check_sysusers_name(&g.name).with_context(|| format!("manifest {name}: group"))?;
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
            let p = src.relative(s.get_ref());
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
                bail!("{}: {name:?} is not a systemd unit name", src.at(u.span()));
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
        bail!("{name:?} is not a Debian package name");
    }
    Ok(())
}

fn check_ref(r: &str) -> Result<()> {
    let ok = !r.is_empty()
        && !r.starts_with('/')
        && !r.ends_with('/')
        && !r.contains("..")
        && !r.contains("//")
        && r.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-".contains(&b));
    if !ok {
        bail!("{r:?} is not a ref name (letters, digits, . _ - and / between parts)");
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

fn check_sysusers_name(n: &str) -> Result<()> {
    let ok = !n.is_empty()
        && n.len() <= 31
        && !n.as_bytes()[0].is_ascii_digit()
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b));
    if !ok {
        bail!("{n:?} is not a user or group name (lower case letters, digits, _ and -)");
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
