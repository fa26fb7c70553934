//! Origin files (`<csum>.<serial>.origin`): what a deployment was made from.
//!
//! They are GLib key files, read and written with GLib's own parser exactly as OSTree and
//! rpm-ostree do, so each tool understands the other's origins. Stratum uses the keys of
//! rpm-ostree where the concept is shared (`[origin] refspec`, `[rpmostree] …`).

use anyhow::{Context, Result};
use ostree::glib;

/// A deployment's origin.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Origin {
    /// `[origin] refspec`: `REMOTE:REF` or a local `REF`.
    pub refspec: Option<String>,
}

impl Origin {
    /// An origin that follows `refspec`.
    pub fn for_refspec(refspec: &str) -> Origin {
        Origin {
            refspec: Some(refspec.to_string()),
        }
    }

    /// Parses an origin file's contents; a corrupt file is an error naming what is wrong.
    pub fn parse(text: &str) -> Result<Origin> {
        let kf = glib::KeyFile::new();
        kf.load_from_data(text, glib::KeyFileFlags::KEEP_COMMENTS)
            .context("parsing origin key file")?;
        let refspec = kf.string("origin", "refspec").ok().map(|s| s.to_string());
        Ok(Origin { refspec })
    }

    /// Serializes to key-file text.
    pub fn to_text(&self) -> String {
        let kf = glib::KeyFile::new();
        if let Some(r) = &self.refspec {
            kf.set_string("origin", "refspec", r);
        }
        kf.to_data().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_ostree_format() {
        let o = Origin::for_refspec("stratum/x86_64/stable");
        let text = o.to_text();
        assert_eq!(text, "[origin]\nrefspec=stratum/x86_64/stable\n");
        assert_eq!(Origin::parse(&text).unwrap(), o);
    }

    #[test]
    fn corrupt_origin_is_an_error() {
        assert!(Origin::parse("refspec=x\n[[[").is_err());
    }
}
