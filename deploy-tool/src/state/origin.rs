//! Origin files (`<csum>.<serial>.origin`): what a deployment was made from.
//!
//! They are GLib key files, read and written with GLib's own parser exactly as OSTree and
//! rpm-ostree do, so each tool understands the other's origins. Keys are those of OSTree and
//! rpm-ostree where the concept is shared: `[origin] refspec`, `[libostree-transient] pinned`.
//! Groups and keys Stratum does not know survive a read/modify/write cycle.

use anyhow::{Context, Result};
use ostree::glib;

const PIN_GROUP: &str = "libostree-transient";

/// A deployment's origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// `[origin] refspec`: `REMOTE:REF` or a local `REF`.
    pub refspec: Option<String>,
    /// `[libostree-transient] pinned`: kept by cleanups.
    pub pinned: bool,
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
        Ok(Origin {
            refspec,
            pinned,
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
        let mut kf = self
            .raw
            .as_deref()
            .and_then(|t| load(t).ok())
            .unwrap_or_default();
        if let Some(r) = &self.refspec {
            kf.set_string("origin", "refspec", r);
        }
        if self.pinned {
            kf.set_boolean(PIN_GROUP, "pinned", true);
        } else if kf.has_group(PIN_GROUP) {
            // A key written twice (by hand, or in a repeated group) is kept twice by GLib,
            // which reads the last and removes only that one: remove, write and read again
            // until no copy is left.
            while kf.has_key(PIN_GROUP, "pinned").unwrap_or(false) {
                let _ = kf.remove_key(PIN_GROUP, "pinned");
                match load(&kf.to_data()) {
                    Ok(again) => kf = again,
                    Err(_) => break,
                }
            }
            if kf.keys(PIN_GROUP).map(|k| k.is_empty()).unwrap_or(true) {
                let _ = kf.remove_group(PIN_GROUP);
            }
        }
        kf.to_data().to_string()
    }
}

fn load(text: &str) -> Result<glib::KeyFile> {
    // The glib binding passes the text as a C string and panics on a NUL inside it.
    if text.contains('\0') {
        anyhow::bail!("parsing origin key file: it contains a NUL byte");
    }
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

    /// Unpinning an origin whose pin is written twice left the first copy, so the
    /// deployment stayed pinned (found by the `origin` fuzz target).
    #[test]
    fn unpinning_removes_every_copy_of_the_pin() {
        for text in [
            "[libostree-transient]\npinned=true\n[x]\na=1\n[libostree-transient]\npinned=true\n",
            "[origin]\nrefspec=r\n[libostree-transient]\npinned=true\npinned=true\nkeep=1\n",
        ] {
            let mut o = Origin::parse(text).unwrap();
            assert!(o.pinned);
            o.pinned = false;
            let t = o.to_text();
            assert!(!Origin::parse(&t).unwrap().pinned, "{text:?} -> {t:?}");
        }
    }

    #[test]
    fn corrupt_origin_is_an_error() {
        assert!(Origin::parse("refspec=x\n[[[").is_err());
        // A NUL byte made the glib binding panic (found by the `origin` fuzz target).
        let nul = "[origin]\nrefspec=stratum:stratum/x86_sie\0\0\u{b0}nt]\npinned=true\n";
        assert!(Origin::parse(nul).is_err());
    }
}
