//! Client-side regeneration of the initramfs for new deployments (`stratum initramfs`).
//!
//! The setting lives in the origin with rpm-ostree's keys (`[rpmostree] regenerate-initramfs`,
//! `initramfs-args`, `initramfs-etc`) plus `[stratum] initramfs-generator`, so it follows
//! every later deployment made from that origin. Turning it on or off makes a new deployment
//! of the same commit, as rpm-ostree does.
//!
//! A deployment's `/usr` is a hardlink checkout of the repository, so the image's own
//! `usr/lib/modules/<kver>/initramfs.img` must never be written to. rpm-ostree commits the
//! regenerated image into a new local commit; Stratum does the equivalent without a commit:
//! the new image is renamed over the *directory entry* in the deployment's own checkout
//! (directories are per deployment, only files are shared), which drops that deployment's
//! hardlink and leaves the repository object untouched. The boot checksum is then computed
//! over the new image, so the bootloader writer copies it into its own `/boot` directory.
//!
//! Images are cached in the stateroot's `/var/cache/stratum/initramfs/<digest>.img`, keyed by a
//! BLAKE3 digest of everything the build reads: kernel, the module files it resolves (and
//! their firmware), the module index files, the configuration files, included files, the
//! deployment's `stratum-prepare-root`, the generator and its version, and the arguments.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use ostree::glib;
use stratum_initramfs::{config, firmware, hostonly, modinfo, modules, sets, BuildSpec, Mode};

use crate::fsutil;
use crate::state::origin::Origin;
use crate::sysroot::{Deployment, Sysroot};

const RPMOSTREE: &str = "rpmostree";
const STRATUM: &str = "stratum";
/// Cached images kept per stateroot (the newest by modification time).
const CACHE_KEEP: usize = 4;
/// The cache directory relative to the stateroot directory.
pub const CACHE_DIR: &str = "var/cache/stratum/initramfs";

/// Which program builds the image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Generator {
    /// `stratum-initramfs` (the library): `/init` is the deployment's stratum-prepare-root.
    #[default]
    Native,
    /// The deployment's `dracut`, with Stratum's `stratum` module.
    Dracut,
}

impl Generator {
    pub fn name(self) -> &'static str {
        match self {
            Generator::Native => "native",
            Generator::Dracut => "dracut",
        }
    }
}

/// The initramfs settings of an origin.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Settings {
    /// `[rpmostree] regenerate-initramfs`.
    pub regenerate: bool,
    /// `[stratum] initramfs-generator`.
    pub generator: Generator,
    /// `[rpmostree] initramfs-args`.
    pub args: Vec<String>,
    /// `[rpmostree] initramfs-etc`: tracked `/etc` files.
    pub etc: Vec<String>,
}

impl Settings {
    /// Reads the settings from an origin.
    pub fn from_origin(o: &Origin) -> Result<Settings> {
        let kf = keyfile(&o.to_text())?;
        let list = |k: &str| {
            kf.string_list(RPMOSTREE, k)
                .map(|l| l.iter().map(|s| s.to_string()).collect())
                .unwrap_or_default()
        };
        let generator = match kf.string(STRATUM, "initramfs-generator") {
            Ok(g) if g == "dracut" => Generator::Dracut,
            Ok(g) if g == "native" => Generator::Native,
            Ok(g) => bail!("origin: unknown [stratum] initramfs-generator={g}"),
            Err(_) => Generator::Native,
        };
        Ok(Settings {
            regenerate: kf
                .boolean(RPMOSTREE, "regenerate-initramfs")
                .unwrap_or(false),
            generator,
            args: list("initramfs-args"),
            etc: list("initramfs-etc"),
        })
    }

    /// `o` with these settings (other keys kept; empty settings leave no keys behind).
    pub fn apply(&self, o: &Origin) -> Result<Origin> {
        let kf = keyfile(&o.to_text())?;
        let set_list = |k: &str, v: &[String]| {
            if v.is_empty() {
                let _ = kf.remove_key(RPMOSTREE, k);
            } else {
                kf.set_value(RPMOSTREE, k, &string_list_value(v));
            }
        };
        if self.regenerate {
            kf.set_boolean(RPMOSTREE, "regenerate-initramfs", true);
        } else {
            let _ = kf.remove_key(RPMOSTREE, "regenerate-initramfs");
        }
        set_list("initramfs-args", &self.args);
        set_list("initramfs-etc", &self.etc);
        if self.generator == Generator::Native {
            let _ = kf.remove_key(STRATUM, "initramfs-generator");
        } else {
            kf.set_string(STRATUM, "initramfs-generator", self.generator.name());
        }
        for g in [RPMOSTREE, STRATUM] {
            if kf.keys(g).map(|k| k.is_empty()).unwrap_or(false) {
                let _ = kf.remove_group(g);
            }
        }
        Origin::parse(&kf.to_data())
    }
}

/// A GLib key-file string list as `g_key_file_set_string_list` writes it: every element
/// escaped and followed by `;`.
fn string_list_value(v: &[String]) -> String {
    let mut out = String::new();
    for item in v {
        for (i, c) in item.chars().enumerate() {
            match c {
                '\\' => out.push_str("\\\\"),
                ';' => out.push_str("\\;"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                ' ' if i == 0 => out.push_str("\\s"),
                c => out.push(c),
            }
        }
        out.push(';');
    }
    out
}

fn keyfile(text: &str) -> Result<glib::KeyFile> {
    let kf = glib::KeyFile::new();
    kf.load_from_data(text, glib::KeyFileFlags::KEEP_COMMENTS)
        .context("parsing origin key file")?;
    Ok(kf)
}

/// Reads a deployment's initramfs settings from its origin file.
pub fn settings_of(sysroot: &Sysroot, d: &Deployment) -> Result<Settings> {
    let p = sysroot.path.join(d.origin_relpath());
    let text = fs::read_to_string(&p).with_context(|| format!("reading origin {}", p.display()))?;
    Settings::from_origin(&Origin::parse(&text)?)
        .with_context(|| format!("origin file {}", p.display()))
}

/// What a regeneration did.
#[derive(Debug, Clone)]
pub struct Regenerated {
    pub digest: String,
    pub cache_hit: bool,
    pub image: PathBuf,
}

/// Puts the initramfs for `dep`'s inputs into its checkout (from the cache, or built) and
/// recomputes its boot checksum.
pub fn regenerate(sysroot: &Sysroot, dep: &mut Deployment, s: &Settings) -> Result<Regenerated> {
    let t = Instant::now();
    let root = sysroot.path.join(dep.relpath());
    let moddir = root.join("usr/lib/modules").join(&dep.kver);
    let cache = sysroot.stateroot_dir(&dep.stateroot).join(CACHE_DIR);
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let spec = match s.generator {
        Generator::Native => Some(native_spec(&root, &dep.kver, &s.args)?),
        Generator::Dracut => None,
    };
    let digest = input_digest(&root, &dep.kver, &dep.checksum, s, spec.as_ref())?;
    let image = cache.join(format!("{digest}.img"));
    let cache_hit = image.is_file();
    if cache_hit {
        eprintln!(
            "initramfs: cache hit {digest} ({}) in {:.2} s",
            s.generator.name(),
            t.elapsed().as_secs_f64()
        );
    } else {
        let tmp = cache.join(format!(".{digest}.img.tmp-{}", std::process::id()));
        fsutil::remove_any(&tmp)?;
        let built = match spec {
            Some(mut spec) => {
                spec.input_digest = Some(digest.clone());
                stratum_initramfs::build_spec(&spec, &tmp)
                    .map(|_| ())
                    .with_context(|| format!("building the initramfs for {}", dep.kver))
            }
            None => run_dracut(&root, &dep.kver, &s.args, &cache, &tmp, &digest),
        };
        if let Err(e) = built {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .with_context(|| format!("syncing {}", tmp.display()))?;
        fs::rename(&tmp, &image).with_context(|| format!("renaming to {}", image.display()))?;
        fsutil::fsync_dir(&cache)?;
        eprintln!(
            "initramfs: regenerated {digest} ({}) in {:.2} s",
            s.generator.name(),
            t.elapsed().as_secs_f64()
        );
    }
    // Replace the checkout's directory entry (never the shared inode): copy, then rename over.
    let dest = moddir.join("initramfs.img");
    let tmp = moddir.join(".initramfs.img.stratum-tmp");
    fsutil::remove_any(&tmp)?;
    fsutil::copy_file_durable(&image, &tmp)?;
    fs::rename(&tmp, &dest).with_context(|| format!("replacing {}", dest.display()))?;
    fsutil::fsync_dir(&moddir)?;
    dep.bootcsum = super::checkout::boot_checksum(&moddir)?;
    prune_cache(&cache, &image)?;
    Ok(Regenerated {
        digest,
        cache_hit,
        image,
    })
}

/// The native build of `root`: its configuration (the merged `/etc` of the new deployment,
/// which carries the admin's files), then the arguments.
fn native_spec(root: &Path, kver: &str, args: &[String]) -> Result<BuildSpec> {
    let cfg = config::load(root)?;
    let mut spec = BuildSpec::from_config(root, kver, &cfg)?;
    spec.options.source_date_epoch = 0;
    native_args(args, &mut spec)?;
    Ok(spec)
}

/// Applies `stratum-initramfs build` options given with `--arg` to `spec`.
pub fn native_args(args: &[String], spec: &mut BuildSpec) -> Result<()> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let (opt, inline) = match a.split_once('=') {
            Some((o, v)) => (o, Some(v.to_string())),
            None => (a.as_str(), None),
        };
        let mut value = || -> Result<String> {
            match &inline {
                Some(v) => Ok(v.clone()),
                None => it
                    .next()
                    .cloned()
                    .with_context(|| format!("initramfs argument {opt} needs a value")),
            }
        };
        match opt {
            "--add-module" => spec.add_modules.push(value()?),
            "--omit-module" => spec.omit_modules.push(value()?),
            "--include" => spec
                .includes
                .push(value()?.parse().map_err(anyhow::Error::msg)?),
            "--mode" => spec.mode = value()?.parse().map_err(anyhow::Error::msg)?,
            "--generic" => spec.mode = Mode::Generic,
            "--hostonly" => spec.mode = Mode::Hostonly,
            "--no-firmware" => spec.firmware = false,
            "--zstd-level" => {
                spec.options.zstd_level = value()?.parse().context("--zstd-level")?;
            }
            _ => bail!(
                "unknown initramfs argument {a:?} for the native generator; known: --add-module, \
                 --omit-module, --include, --mode, --generic, --hostonly, --no-firmware, --zstd-level"
            ),
        }
    }
    Ok(())
}

/// Feeds length-prefixed fields into a hasher, so no two field sequences collide.
struct Digest(blake3::Hasher);

impl Digest {
    fn field(&mut self, name: &str, data: &[u8]) {
        for part in [name.as_bytes(), data] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
    }

    fn file(&mut self, name: &str, path: &Path) -> Result<()> {
        let data = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.field(name, &data);
        Ok(())
    }

    fn optional_file(&mut self, name: &str, path: &Path) -> Result<()> {
        if path.exists() {
            self.file(name, path)
        } else {
            self.field(name, b"<missing>");
            Ok(())
        }
    }

    /// A file or directory tree (names, types, permissions, contents).
    fn tree(&mut self, name: &str, path: &Path) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let m =
            fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
        let mode = m.permissions().mode().to_string();
        self.field(&format!("{name}:mode"), mode.as_bytes());
        if m.is_symlink() {
            let t = fs::read_link(path)?;
            self.field(name, t.as_os_str().as_encoded_bytes());
        } else if m.is_dir() {
            let mut names: Vec<_> = fs::read_dir(path)?
                .map(|e| e.map(|e| e.file_name()))
                .collect::<std::io::Result<_>>()?;
            names.sort();
            for n in names {
                self.tree(&format!("{name}/{}", n.to_string_lossy()), &path.join(&n))?;
            }
        } else {
            self.file(name, path)?;
        }
        Ok(())
    }
}

/// The BLAKE3 digest of everything an image of `root`/`kver` is built from.
pub fn input_digest(
    root: &Path,
    kver: &str,
    commit: &str,
    s: &Settings,
    spec: Option<&BuildSpec>,
) -> Result<String> {
    let mut d = Digest(blake3::Hasher::new());
    d.field(
        "generator",
        format!(
            "stratum-initramfs/{}/{}",
            env!("CARGO_PKG_VERSION"),
            s.generator.name()
        )
        .as_bytes(),
    );
    for a in &s.args {
        d.field("arg", a.as_bytes());
    }
    d.field("kver", kver.as_bytes());
    let moddir = root.join("usr/lib/modules").join(kver);
    d.file("vmlinuz", &moddir.join("vmlinuz"))?;
    let Some(spec) = spec else {
        // dracut reads much of the image: key on the commit, plus dracut's configuration in
        // the deployment's (merged) /etc.
        d.field("commit", commit.as_bytes());
        d.optional_file("dracut.conf", &root.join("etc/dracut.conf"))?;
        let confd = root.join("etc/dracut.conf.d");
        if confd.is_dir() {
            d.tree("dracut.conf.d", &confd)?;
        }
        return Ok(d.0.finalize().to_hex().to_string());
    };
    for p in config::files(root)? {
        let rel = p
            .strip_prefix(root)
            .unwrap_or(&p)
            .to_string_lossy()
            .into_owned();
        d.file(&format!("config:{rel}"), &p)?;
    }
    d.file(
        "init",
        &stratum_initramfs::rootfs::resolve(
            root,
            Path::new(stratum_initramfs::image::PREPARE_ROOT_PATH),
        )?,
    )?;
    for inc in &spec.includes {
        let src = stratum_initramfs::rootfs::resolve(root, Path::new(&inc.src))?;
        d.tree(&format!("include:{}:{}", inc.src, inc.dest), &src)?;
    }
    let dir = modules::find_modules_dir(root, kver)?;
    for idx in [
        "modules.dep",
        "modules.alias",
        "modules.softdep",
        "modules.builtin",
        "modules.builtin.modinfo",
    ] {
        d.optional_file(idx, &dir.join(idx))?;
    }
    let db = modules::ModuleDb::load(&dir)?;
    let mut required: Vec<String> = Vec::new();
    let mut optional: Vec<String> = Vec::new();
    match spec.mode {
        Mode::Default => required.extend(spec.options.modules.iter().cloned()),
        Mode::Generic => optional.extend(sets::generic_modules().iter().map(|s| s.to_string())),
        Mode::Hostonly => {
            let host = hostonly::scan(&spec.host).context("--hostonly")?;
            optional.extend(hostonly::module_names(&db, &host));
        }
    }
    required.extend(spec.add_modules.iter().cloned());
    let omit: Vec<&String> = spec
        .omit_modules
        .iter()
        .filter(|o| {
            !spec
                .add_modules
                .iter()
                .any(|a| modules::normalize(a) == modules::normalize(o))
        })
        .collect();
    let resolved = db.resolve_with(&required, &optional, &omit)?;
    for m in &resolved.modules {
        let path = dir.join(&m.path);
        let data = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        d.field(&format!("module:{}", m.path), &data);
        if spec.firmware {
            // Firmware is declared in the (decompressed) module's .modinfo.
            let plain = modules::read_module(&path).unwrap_or(data);
            for fw in modinfo::firmware(&plain).unwrap_or_default() {
                match firmware::find(root, kver, &fw)? {
                    Some((_, data)) => d.field(&format!("firmware:{fw}"), &data),
                    None => d.field(&format!("firmware:{fw}"), b"<missing>"),
                }
            }
        }
    }
    Ok(d.0.finalize().to_hex().to_string())
}

/// Runs dracut inside the deployment root (a private mount namespace with /dev, /proc, /sys
/// and tmpfs scratch space), writing straight into the cache directory bound at
/// `/run/stratum-initramfs`. The manifest with the input digest goes in as
/// `/etc/stratum/initramfs.json`, so `boot.json` records it as for native images.
fn run_dracut(
    root: &Path,
    kver: &str,
    args: &[String],
    cache: &Path,
    out: &Path,
    digest: &str,
) -> Result<()> {
    const SCRIPT: &str = r#"
r=$1 cache=$2 out=$3 json=$4 k=$5; shift 5
mount --rbind /dev "$r/dev"
mount -t proc proc "$r/proc"
mount -t sysfs sysfs "$r/sys"
mount -t tmpfs tmpfs "$r/tmp"
mount -t tmpfs tmpfs "$r/var"
mkdir "$r/var/tmp"
mount -t tmpfs tmpfs "$r/run"
mkdir "$r/run/stratum-initramfs"
mount --bind "$cache" "$r/run/stratum-initramfs"
exec chroot "$r" dracut --no-hostonly --add stratum --kver "$k" --force --tmpdir /tmp \
    --include "/run/stratum-initramfs/$json" /etc/stratum/initramfs.json "$@" \
    "/run/stratum-initramfs/$out"
"#;
    let json_name = format!(".{digest}.json");
    let manifest = serde_json::json!({
        "generator": "dracut",
        "kver": kver,
        "input_digest": digest,
    });
    fs::write(cache.join(&json_name), manifest.to_string())?;
    let out_name = out
        .file_name()
        .context("output name")?
        .to_string_lossy()
        .into_owned();
    let r = crate::cmd::run(
        std::process::Command::new("unshare")
            .args([
                "--mount",
                "--propagation",
                "private",
                "--",
                "sh",
                "-ec",
                SCRIPT,
                "sh",
            ])
            .arg(root)
            .arg(cache)
            .arg(&out_name)
            .arg(&json_name)
            .arg(kver)
            .args(args),
    )
    .context("running dracut in the deployment (is dracut installed in the image?)");
    let _ = fs::remove_file(cache.join(&json_name));
    r
}

/// Keeps the newest [`CACHE_KEEP`] images (and always `current`).
fn prune_cache(cache: &Path, current: &Path) -> Result<()> {
    let mut imgs: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for e in fs::read_dir(cache).with_context(|| format!("reading {}", cache.display()))? {
        let e = e?;
        let p = e.path();
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".img") || p == current {
            continue;
        }
        imgs.push((e.metadata()?.modified()?, p));
    }
    imgs.sort_by_key(|e| std::cmp::Reverse(e.0));
    for (_, p) in imgs.into_iter().skip(CACHE_KEEP.saturating_sub(1)) {
        fsutil::remove_any(&p)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_round_trip_with_rpm_ostree_keys() {
        let o = Origin::parse("[origin]\nrefspec=r:x\n\n[rpmostree]\nfoo=bar\n").unwrap();
        assert_eq!(Settings::from_origin(&o).unwrap(), Settings::default());
        let s = Settings {
            regenerate: true,
            generator: Generator::Dracut,
            args: vec!["--add-module=nvme".into(), "-I".into()],
            etc: vec!["/etc/crypttab".into()],
        };
        let o2 = s.apply(&o).unwrap();
        let t = o2.to_text();
        assert!(t.contains("regenerate-initramfs=true"), "{t}");
        assert!(t.contains("initramfs-args=--add-module=nvme;-I;"), "{t}");
        assert!(t.contains("initramfs-etc=/etc/crypttab;"), "{t}");
        let odd = Settings {
            args: vec!["a;b".into(), " c\\d".into()],
            ..s.clone()
        };
        assert_eq!(Settings::from_origin(&odd.apply(&o).unwrap()).unwrap(), odd);
        assert!(t.contains("[stratum]\ninitramfs-generator=dracut"), "{t}");
        assert!(t.contains("foo=bar") && t.contains("refspec=r:x"), "{t}");
        assert_eq!(Settings::from_origin(&o2).unwrap(), s);
        // Back to nothing: no keys left, other keys kept.
        let t = Settings::default().apply(&o2).unwrap().to_text();
        assert!(!t.contains("initramfs") && !t.contains("[stratum]"), "{t}");
        assert!(t.contains("foo=bar"), "{t}");
    }

    #[test]
    fn native_arguments() {
        let mut spec = BuildSpec::from(stratum_initramfs::BuildOptions::new("/", "k"));
        let args: Vec<String> = ["--add-module=nvme", "--omit-module", "btrfs", "--generic"]
            .map(String::from)
            .to_vec();
        native_args(&args, &mut spec).unwrap();
        assert_eq!(spec.add_modules, ["nvme"]);
        assert_eq!(spec.omit_modules, ["btrfs"]);
        assert_eq!(spec.mode, Mode::Generic);
        for bad in [
            &["--frobnicate"][..],
            &["--add-module"][..],
            &["--mode=all"][..],
        ] {
            let bad: Vec<String> = bad.iter().map(|s| s.to_string()).collect();
            assert!(native_args(&bad, &mut spec).is_err(), "{bad:?}");
        }
    }

    fn fake_root(dir: &Path) -> PathBuf {
        let root = dir.join("root");
        let m = root.join("usr/lib/modules/6.1.0-1-amd64");
        fs::create_dir_all(&m).unwrap();
        fs::create_dir_all(root.join("usr/lib/stratum")).unwrap();
        fs::write(m.join("vmlinuz"), "kernel").unwrap();
        fs::write(m.join("modules.dep"), "").unwrap();
        fs::write(root.join("usr/lib/stratum/stratum-prepare-root"), "init").unwrap();
        root
    }

    #[test]
    fn digest_follows_inputs() {
        let t = tempfile::tempdir().unwrap();
        let root = fake_root(t.path());
        let s = Settings {
            regenerate: true,
            args: vec!["--generic".into()],
            ..Default::default()
        };
        let digest = |s: &Settings| {
            let spec = native_spec(&root, "6.1.0-1-amd64", &s.args).unwrap();
            input_digest(&root, "6.1.0-1-amd64", "c", s, Some(&spec)).unwrap()
        };
        let d0 = digest(&s);
        assert_eq!(d0, digest(&s), "stable");
        // The commit alone does not matter to a native build.
        let spec = native_spec(&root, "6.1.0-1-amd64", &s.args).unwrap();
        assert_eq!(
            d0,
            input_digest(&root, "6.1.0-1-amd64", "other", &s, Some(&spec)).unwrap()
        );
        let mut s2 = s.clone();
        s2.args.push("--no-firmware".into());
        assert_ne!(d0, digest(&s2), "arguments");
        fs::write(root.join("usr/lib/stratum/stratum-prepare-root"), "init2").unwrap();
        let d1 = digest(&s);
        assert_ne!(d0, d1, "init binary");
        fs::create_dir_all(root.join("etc/stratum")).unwrap();
        fs::write(root.join("etc/stratum/initramfs.toml"), "firmware = true\n").unwrap();
        let d2 = digest(&s);
        assert_ne!(d1, d2, "configuration");
        fs::write(root.join("usr/lib/modules/6.1.0-1-amd64/vmlinuz"), "k2").unwrap();
        assert_ne!(d2, digest(&s), "kernel");
    }
}
