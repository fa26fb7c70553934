//! The names a package chooses for itself, checked against Debian policy before any path,
//! ref or command line is built from them: `Package`, `Version`, `Architecture`, the members
//! of its control archive and the triggers it declares.
//!
//! A package is hostile until its tree is in the repository (docs/security.md). These names
//! end up in `info/<package>.<member>`, `triggers/<name>`, OSTree refs and `dpkg` argument
//! lists, so the rules here are the only thing between a control field and a path: no `/`,
//! no `..`, no whitespace or control characters, nothing dpkg itself would refuse.

use anyhow::{bail, Result};

/// Longest name accepted (dpkg has no limit; nothing real comes close).
const MAX: usize = 256;

fn check(what: &str, s: &str, ok: impl Fn(usize, u8) -> bool) -> Result<()> {
    if s.is_empty() {
        bail!("empty {what}");
    }
    if s.len() > MAX {
        bail!(
            "{what} {:?}… is longer than {MAX} bytes",
            s.chars().take(40).collect::<String>()
        );
    }
    if let Some((i, c)) = s.bytes().enumerate().find(|&(i, c)| !ok(i, c)) {
        bail!(
            "invalid {what} {s:?}: character {:?} at {} is not allowed (Debian policy)",
            c as char,
            i + 1
        );
    }
    Ok(())
}

/// A package name (Debian policy 5.6.1): lowercase letters, digits, `+ - .`, at least two
/// characters, starting with a letter or digit.
pub fn package(s: &str) -> Result<()> {
    check("package name", s, |i, c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && b"+-.".contains(&c))
    })?;
    if s.len() < 2 {
        bail!("invalid package name {s:?}: at least two characters (Debian policy)");
    }
    Ok(())
}

/// A version (Debian policy 5.6.12): `[epoch:]upstream[-revision]`, epoch digits, the rest
/// letters, digits and `. + ~ -`, upstream starting with a digit.
pub fn version(s: &str) -> Result<()> {
    let (epoch, rest) = match s.split_once(':') {
        Some((e, r)) => (Some(e), r),
        None => (None, s),
    };
    if let Some(e) = epoch {
        check("version epoch", e, |_, c| c.is_ascii_digit())?;
    }
    check("version", rest, |i, c| {
        c.is_ascii_alphanumeric() || (i > 0 && b".+~-".contains(&c))
    })?;
    if !rest.as_bytes()[0].is_ascii_digit() {
        bail!("invalid version {s:?}: it must start with a digit (Debian policy)");
    }
    if rest.ends_with('-') {
        bail!("invalid version {s:?}: empty revision");
    }
    Ok(())
}

/// An architecture name (`amd64`, `all`, `linux-any`…): lowercase letters, digits and `-`.
pub fn architecture(s: &str) -> Result<()> {
    check("architecture", s, |i, c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && c == b'-')
    })
}

/// A member of a package's control archive (`postinst`, `md5sums`, `conffiles`…): it
/// becomes `info/<package>.<member>`.
pub fn control_member(s: &str) -> Result<()> {
    check("control member", s, |i, c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || (i > 0 && b"_.+-".contains(&c))
    })
}

/// Files dpkg keeps in `triggers/` beside the named triggers' files.
const TRIGGER_FILES: &[&str] = &["File", "Lock", "Unincorp"];

/// A trigger name from a `triggers` control file: a file trigger is an absolute path; a named
/// trigger is printable ASCII without `/` (it is a file name in `triggers/`) and not one of
/// dpkg's own files there.
pub fn trigger(s: &str) -> Result<()> {
    check("trigger name", s, |_, c| c.is_ascii_graphic())?;
    if let Some(path) = s.strip_prefix('/') {
        if path.split('/').any(|c| c == "..") {
            bail!("invalid file trigger {s:?}: `..` in the path");
        }
        return Ok(());
    }
    if s.contains('/') || s == "." || s == ".." || TRIGGER_FILES.contains(&s) {
        bail!("invalid trigger name {s:?}: it names a file of dpkg's triggers directory");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names() {
        for ok in [
            "libc6",
            "g++",
            "libstdc++6",
            "x11-common",
            "0ad",
            "python3.11",
        ] {
            package(ok).unwrap();
        }
        for bad in [
            "",
            "a",
            "../../etc",
            "Foo",
            "-x",
            "a b",
            "a/b",
            "a\nb",
            "a_b",
            "a:b",
        ] {
            assert!(package(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions() {
        for ok in ["1.0", "1:2.36-9+deb12u4", "2.0~rc1-1", "0.1", "6.1.0-28"] {
            version(ok).unwrap();
        }
        for bad in [
            "", "a1", "1.0/../x", "1 0", "1_0", "x:1", "1.0-", "1\n", ":1", "1:",
        ] {
            assert!(version(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn architectures_members_and_triggers() {
        architecture("amd64").unwrap();
        architecture("all").unwrap();
        assert!(architecture("../x").is_err());
        assert!(architecture("").is_err());
        for ok in ["postinst", "md5sums", "conffiles", "shlibs", "triggers"] {
            control_member(ok).unwrap();
        }
        for bad in ["../sh", "a/b", ".hidden", "Post", "x y"] {
            assert!(control_member(bad).is_err(), "{bad:?}");
        }
        for ok in ["ldconfig", "/usr/share/man", "update-mime-database"] {
            trigger(ok).unwrap();
        }
        for bad in [
            "../../etc/cron.d/x",
            "a/b",
            "File",
            "..",
            "a b",
            "/usr/../etc",
            "",
        ] {
            assert!(trigger(bad).is_err(), "{bad:?}");
        }
    }
}
