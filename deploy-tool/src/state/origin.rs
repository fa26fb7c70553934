//! Origin files (`<csum>.<serial>.origin`): what a deployment was made from.
//!
//! They are GLib key files, read and written with GLib's own parser exactly as OSTree and
//! rpm-ostree do, so each tool understands the other's origins. Keys are those of OSTree and
//! rpm-ostree where the concept is shared: `[origin] refspec`, `[libostree-transient] pinned`.
//! Groups and keys Stratum does not know survive a read/modify/write cycle.
//!
//! Package requests use rpm-ostree's groups and keys: `[packages] requested=` (names),
//! `requested-local=` (`SHA256:NAME_VERSION_ARCH` of local `.deb` files); `[overrides]
//! remove=` (base packages), `replace-local=` (local `.deb` files replacing base packages).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use ostree::glib;

const PIN_GROUP: &str = "libostree-transient";

/// What the administrator asked to change in the image's packages; replayed on every new
/// base.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Packages {
    /// `[packages] requested`: packages from repositories, by name.
    pub requested: BTreeSet<String>,
    /// `[packages] requested-local`: local `.deb` files, SHA-256 -> `NAME_VERSION_ARCH`.
    pub requested_local: BTreeMap<String, String>,
    /// `[overrides] remove`: base packages taken out.
    pub remove: BTreeSet<String>,
    /// `[overrides] replace-local`: local `.deb` files replacing base packages, SHA-256 ->
    /// `NAME_VERSION_ARCH`.
    pub replace_local: BTreeMap<String, String>,
}

impl Packages {
    /// No request at all: the deployment is the base image.
    pub fn is_empty(&self) -> bool {
        self.requested.is_empty()
            && self.requested_local.is_empty()
            && self.remove.is_empty()
            && self.replace_local.is_empty()
    }

    /// The package name of a local entry (`NAME_VERSION_ARCH`).
    pub fn local_name(nva: &str) -> &str {
        nva.split('_').next().unwrap_or(nva)
    }
}

/// The keys of [`Packages`]: (group, key).
const PACKAGE_KEYS: [(&str, &str); 4] = [
    ("packages", "requested"),
    ("packages", "requested-local"),
    ("overrides", "remove"),
    ("overrides", "replace-local"),
];

/// A deployment's origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// `[origin] refspec`: `REMOTE:REF` or a local `REF`.
    pub refspec: Option<String>,
    /// `[libostree-transient] pinned`: kept by cleanups.
    pub pinned: bool,
    /// Package requests.
    pub packages: Packages,
    /// The text this origin was parsed from, so unknown keys are kept.
    raw: Option<String>,
}

impl Origin {
    /// An origin that follows `refspec`.
    pub fn for_refspec(refspec: &str) -> Origin {
        Origin {
            refspec: Some(refspec.to_string()),
            ..Default::default()
        }
    }

    /// Parses an origin file's contents; a corrupt file is an error naming what is wrong.
    pub fn parse(text: &str) -> Result<Origin> {
        let kf = load(text)?;
        let refspec = kf.string("origin", "refspec").ok().map(|s| s.to_string());
        let pinned = kf.boolean(PIN_GROUP, "pinned").unwrap_or(false);
        let list = |g: &str, k: &str| -> Vec<String> {
            kf.string_list(g, k)
                .map(|l| {
                    l.iter()
                        .map(|s| s.to_string())
                        .filter(|s| !s.is_empty())
                        .collect()
                })
                .unwrap_or_default()
        };
        let local = |g: &str, k: &str| -> Result<BTreeMap<String, String>> {
            list(g, k)
                .into_iter()
                .map(|e| match e.split_once(':') {
                    Some((sha, nva)) if sha.len() == 64 && !nva.is_empty() => {
                        Ok((sha.to_string(), nva.to_string()))
                    }
                    _ => bail!("origin: [{g}] {k}: {e:?} is not SHA256:NAME_VERSION_ARCH"),
                })
                .collect()
        };
        let packages = Packages {
            requested: list("packages", "requested").into_iter().collect(),
            requested_local: local("packages", "requested-local")?,
            remove: list("overrides", "remove").into_iter().collect(),
            replace_local: local("overrides", "replace-local")?,
        };
        Ok(Origin {
            refspec,
            pinned,
            packages,
            raw: Some(text.to_string()),
        })
    }

    /// Splits the refspec into remote (if any) and ref.
    pub fn remote_and_ref(&self) -> Option<(Option<&str>, &str)> {
        let r = self.refspec.as_deref()?;
        Some(match r.split_once(':') {
            Some((remote, rf)) => (Some(remote), rf),
            None => (None, r),
        })
    }

    /// Serializes to key-file text.
    pub fn to_text(&self) -> String {
        let kf = self
            .raw
            .as_deref()
            .and_then(|t| load(t).ok())
            .unwrap_or_default();
        if let Some(r) = &self.refspec {
            kf.set_string("origin", "refspec", r);
        }
        let p = &self.packages;
        let local = |m: &BTreeMap<String, String>| -> Vec<String> {
            m.iter().map(|(sha, nva)| format!("{sha}:{nva}")).collect()
        };
        let values: [Vec<String>; 4] = [
            p.requested.iter().cloned().collect(),
            local(&p.requested_local),
            p.remove.iter().cloned().collect(),
            local(&p.replace_local),
        ];
        for ((group, key), v) in PACKAGE_KEYS.iter().zip(values) {
            if v.is_empty() {
                let _ = kf.remove_key(group, key);
                if kf.keys(group).map(|k| k.is_empty()).unwrap_or(false) {
                    let _ = kf.remove_group(group);
                }
            } else {
                kf.set_value(group, key, &list_value(&v));
            }
        }
        if self.pinned {
            kf.set_boolean(PIN_GROUP, "pinned", true);
        } else if kf.has_group(PIN_GROUP) {
            let _ = kf.remove_key(PIN_GROUP, "pinned");
            if kf.keys(PIN_GROUP).map(|k| k.is_empty()).unwrap_or(true) {
                let _ = kf.remove_group(PIN_GROUP);
            }
        }
        kf.to_data().to_string()
    }
}

/// A key-file string list as GLib writes it: items escaped, each followed by `;`.
fn list_value(items: &[String]) -> String {
    let mut out = String::new();
    for i in items {
        for c in i.chars() {
            match c {
                '\\' => out.push_str("\\\\"),
                ';' => out.push_str("\\;"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c => out.push(c),
            }
        }
        out.push(';');
    }
    out
}

fn load(text: &str) -> Result<glib::KeyFile> {
    let kf = glib::KeyFile::new();
    kf.load_from_data(text, glib::KeyFileFlags::KEEP_COMMENTS)
        .context("parsing origin key file")?;
    Ok(kf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_ostree_format() {
        let o = Origin::for_refspec("stratum/x86_64/stable");
        let text = o.to_text();
        assert_eq!(text, "[origin]\nrefspec=stratum/x86_64/stable\n");
        let back = Origin::parse(&text).unwrap();
        assert_eq!(back.refspec, o.refspec);
        assert!(!back.pinned);
    }

    #[test]
    fn pinning_uses_ostree_key_and_keeps_unknown_keys() {
        let mut o = Origin::parse("[origin]\nrefspec=r:x\n\n[rpmostree]\nfoo=bar\n").unwrap();
        assert_eq!(o.remote_and_ref(), Some((Some("r"), "x")));
        o.pinned = true;
        let t = o.to_text();
        assert!(t.contains("[libostree-transient]\npinned=true"), "{t}");
        assert!(t.contains("foo=bar"), "{t}");
        let mut o = Origin::parse(&t).unwrap();
        assert!(o.pinned);
        o.pinned = false;
        assert!(!o.to_text().contains("libostree-transient"));
    }

    #[test]
    fn package_requests_round_trip_in_rpm_ostree_keys() {
        let sha = "a".repeat(64);
        let mut o = Origin::for_refspec("r:x");
        o.packages
            .requested
            .extend(["htop".to_string(), "openssh-server".to_string()]);
        o.packages
            .requested_local
            .insert(sha.clone(), "foo_1.0-1_amd64".into());
        o.packages.remove.insert("nano".into());
        o.packages
            .replace_local
            .insert("b".repeat(64), "less_590-2_amd64".into());
        let t = o.to_text();
        assert!(
            t.contains("[packages]\nrequested=htop;openssh-server;\n"),
            "{t}"
        );
        assert!(
            t.contains(&format!("requested-local={sha}:foo_1.0-1_amd64;")),
            "{t}"
        );
        assert!(t.contains("[overrides]\nremove=nano;\n"), "{t}");
        let back = Origin::parse(&t).unwrap();
        assert_eq!(back.packages, o.packages);
        // Emptied requests leave no empty groups behind.
        let mut none = back.clone();
        none.packages = Packages::default();
        assert_eq!(none.to_text().trim_end(), "[origin]\nrefspec=r:x");
        // A malformed local entry is an error naming the key.
        let e = Origin::parse("[packages]\nrequested-local=nocolon;\n").unwrap_err();
        assert!(e.to_string().contains("requested-local"), "{e}");
    }

    #[test]
    fn corrupt_origin_is_an_error() {
        assert!(Origin::parse("refspec=x\n[[[").is_err());
    }
}
