//! Debian's formats as packages bring them (deploy-tool's `debian/`).

use stratum::debian::{deb822, dpkgdb::PackageId, names};

use super::text;

/// A `DEBIAN/control` (or status) paragraph: what parses writes back the same, and a package
/// id it yields is safe to build a path from.
pub fn control(data: &[u8]) {
    let s = text(data);
    let Ok(paras) = deb822::parse(&s) else {
        return;
    };
    for p in paras {
        let t = p.to_text();
        let back = deb822::parse_one(&t).expect("a written paragraph parses");
        assert_eq!(back.to_text(), t, "{s:?}");
        if let Ok(id) = PackageId::of(&p) {
            for part in [&id.name, &id.version, &id.arch] {
                // No `/`, so only a whole `.` or `..` could walk: none may be one.
                assert!(!part.contains('/') && part != "." && part != "..", "{id:?}");
                assert!(
                    !part.chars().any(|c| c.is_whitespace() || c.is_control()),
                    "{id:?}"
                );
            }
            assert_eq!(PackageId::parse_nva(&id.nva()).expect("nva parses"), id);
        }
    }
}

/// A `triggers` control file: every name the rules accept stays a plain name or an absolute
/// path without `..`.
pub fn triggers(data: &[u8]) {
    let s = text(data);
    for line in s.lines() {
        let mut w = line.split_whitespace();
        let (Some(_), Some(arg)) = (w.next(), w.next()) else {
            continue;
        };
        if names::trigger(arg).is_ok() {
            assert!(!arg.split('/').any(|c| c == ".."), "{arg:?}");
            assert!(arg.starts_with('/') || !arg.contains('/'), "{arg:?}");
        }
        let _ = names::control_member(arg).map(|()| assert!(!arg.contains('/')));
    }
}
