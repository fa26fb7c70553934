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

use anyhow::{bail, Context, Result};
use ostree::glib;
use stratum_initramfs::digest::InputHasher;
use stratum_initramfs::dracut::{self, DracutRun};
use stratum_initramfs::plan::{self, Plan};
use stratum_initramfs::{config, BuildSpec};

use crate::fsutil;
use crate::progress::{self, Unit};
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
    let phase = progress::Phase::start("initramfs", Unit::Time);
    let root = sysroot.path.join(dep.relpath());
    let moddir = root.join("usr/lib/modules").join(&dep.kver);
    let cache = sysroot.stateroot_dir(&dep.stateroot).join(CACHE_DIR);
    fs::create_dir_all(&cache).with_context(|| format!("creating {}", cache.display()))?;
    let plan = match s.generator {
        Generator::Native => Some(plan::resolve(&native_spec(&root, &dep.kver, &s.args)?)?),
        Generator::Dracut => None,
    };
    let digest = match &plan {
        Some(p) => native_digest(p, s)?,
        None => dracut_digest(&root, &dep.kver, &dep.checksum, s)?,
    };
    let image = cache.join(format!("{digest}.img"));
    let cache_hit = image.is_file();
    // The phase's line, `initramfs: cache hit|regenerated DIGEST (GENERATOR) in T s`, is
    // what tests and admins read the input digest from.
    let summary = if cache_hit {
        format!("cache hit {digest} ({})", s.generator.name())
    } else {
        phase
            .meter()
            .set_message(format!("building with {}", s.generator.name()));
        let tmp = cache.join(format!(".{digest}.img.tmp-{}", std::process::id()));
        fsutil::remove_any(&tmp)?;
        let built = match plan {
            Some(mut plan) => {
                plan.spec.input_digest = Some(digest.clone());
                stratum_initramfs::build_plan(&plan, &tmp)
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
        format!("regenerated {digest} ({})", s.generator.name())
    };
    // Replace the checkout's directory entry (never the shared inode): copy, then rename over.
    let dest = moddir.join("initramfs.img");
    let tmp = moddir.join(".initramfs.img.stratum-tmp");
    fsutil::remove_any(&tmp)?;
    fsutil::copy_file_durable(&image, &tmp)?;
    fs::rename(&tmp, &dest).with_context(|| format!("replacing {}", dest.display()))?;
    fsutil::fsync_dir(&moddir)?;
    dep.bootcsum = super::checkout::boot_checksum(&moddir)?;
    prune_cache(&cache, &image)?;
    phase.finish(&summary);
    Ok(Regenerated {
        digest,
        cache_hit,
        image,
    })
}

/// The digest of a native build: the plan's, with the generator and the words as given.
pub fn native_digest(plan: &Plan, s: &Settings) -> Result<String> {
    let mut extra: Vec<(&str, &[u8])> = vec![("generator", s.generator.name().as_bytes())];
    extra.extend(s.args.iter().map(|a| ("arg", a.as_bytes())));
    plan.input_digest(&extra)
}

/// The digest of a dracut build: dracut reads much of the image, so it is keyed on the
/// commit, plus dracut's configuration in the deployment's (merged) /etc.
pub fn dracut_digest(root: &Path, kver: &str, commit: &str, s: &Settings) -> Result<String> {
    let mut d = InputHasher::new();
    let generator = format!("stratum-initramfs/{}/dracut", env!("CARGO_PKG_VERSION"));
    d.field("generator", generator.as_bytes());
    for a in &s.args {
        d.field("arg", a.as_bytes());
    }
    d.field("kver", kver.as_bytes());
    d.file(
        "vmlinuz",
        &root.join("usr/lib/modules").join(kver).join("vmlinuz"),
    )?;
    d.field("commit", commit.as_bytes());
    d.optional_file("dracut.conf", &root.join("etc/dracut.conf"))?;
    let confd = root.join("etc/dracut.conf.d");
    if confd.is_dir() {
        d.tree("dracut.conf.d", &confd)?;
    }
    Ok(d.finish())
}

/// Runs the deployment's dracut ([`dracut::run`]) writing `out`, with the manifest carrying
/// the input digest included as `/etc/stratum/initramfs.json`, so `boot.json` records it as
/// for native images.
fn run_dracut(
    root: &Path,
    kver: &str,
    args: &[String],
    cache: &Path,
    out: &Path,
    digest: &str,
) -> Result<()> {
    let json = cache.join(format!(".{digest}.json"));
    let manifest = serde_json::json!({
        "generator": "dracut",
        "kver": kver,
        "input_digest": digest,
    });
    fs::write(&json, manifest.to_string())
        .with_context(|| format!("writing {}", json.display()))?;
    let mut run = DracutRun::new(root, kver, out);
    run.add_modules = vec!["stratum".into()];
    run.includes = vec![(json.clone(), "/etc/stratum/initramfs.json".into())];
    run.args = args.to_vec();
    // dracut does not report the modules it includes when told to be quiet.
    run.check_included = !args.iter().any(|a| a == "-q" || a == "--quiet");
    let r = dracut::run(&run)
        .map(|_| ())
        .context("running dracut in the deployment (is dracut installed in the image?)");
    let _ = fs::remove_file(&json);
    r
}

/// The native build of `root`: its configuration (the merged `/etc` of the new deployment,
/// which carries the admin's files), then the arguments.
fn native_spec(root: &Path, kver: &str, args: &[String]) -> Result<BuildSpec> {
    let cfg = config::load(root)?;
    let mut spec = BuildSpec::from_config(root, kver, &cfg)?;
    spec.options.source_date_epoch = 0;
    stratum_initramfs::apply_args(args, &mut spec)?;
    Ok(spec)
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
            native_digest(&plan::resolve(&spec).unwrap(), s).unwrap()
        };
        let d0 = digest(&s);
        assert_eq!(d0, digest(&s), "stable");
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
