//! Shell-style pattern matching as kmod applies it to `modules.alias` (`fnmatch(3)` without
//! flags). Shared with `stratum-initramfs`, which resolves the same aliases when it builds an
//! image (prepare-root depends on no other Stratum crate; the others may use it).
//!
//! `*` matches any run of characters (including none), `?` one character, `[...]` one character
//! of a set with ranges, negated by a leading `!` or `^`.
//!
//! Device modaliases are ASCII (`pci:v00001AF4d00001001sv...`), so this works on bytes.

/// Whether `text` matches the whole of `pattern`.
pub fn fnmatch(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Where to resume after the last `*`: pattern index after it, and text index it covers to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        let step = match p.get(pi) {
            Some(b'*') => {
                star = Some((pi + 1, ti));
                pi += 1;
                continue;
            }
            Some(b'?') => Some(pi + 1),
            Some(b'[') => match class(p, pi, t[ti]) {
                Some((true, next)) => Some(next),
                Some((false, _)) => None,
                // An unterminated `[` is a literal, as in fnmatch.
                None => (t[ti] == b'[').then_some(pi + 1),
            },
            Some(c) if *c == t[ti] => Some(pi + 1),
            _ => None,
        };
        match (step, star) {
            (Some(next), _) => {
                pi = next;
                ti += 1;
            }
            (None, Some((sp, st))) => {
                // Let the last `*` swallow one more character and retry.
                pi = sp;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            (None, None) => return false,
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

/// Match `c` against the bracket expression starting at `p[start] == b'['`: whether it matched
/// and the index after the closing `]`, or `None` if there is no closing bracket.
fn class(p: &[u8], start: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|h| *h != b']') {
            let hi = p[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// Whether `s` contains any pattern metacharacter.
pub fn is_pattern(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        let virtio = "pci:v00001AF4d*sv*sd*bc*sc*i*";
        assert!(fnmatch(
            virtio,
            "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(!fnmatch(
            virtio,
            "pci:v00008086d00001001sv00001AF4sd00000002bc01sc00i00"
        ));
        assert!(fnmatch("virtio:d00000002v*", "virtio:d00000002v00001AF4"));
        assert!(!fnmatch("virtio:d00000002v*", "virtio:d00000012v00001AF4"));
        assert!(fnmatch("a?c", "abc") && !fnmatch("a?c", "ac"));
        assert!(fnmatch("*", "") && fnmatch("**x*", "aaxbb") && !fnmatch("*x", "xa"));
        assert!(
            fnmatch("scsi:t-0x0[0e]*", "scsi:t-0x0e") && !fnmatch("scsi:t-0x0[0e]*", "scsi:t-0x05")
        );
        assert!(fnmatch("x[!0-9]", "xa") && !fnmatch("x[!0-9]", "x5"));
        assert!(fnmatch("x[^a-c]y", "xdy") && !fnmatch("x[a-c]y", "xdy"));
        assert!(fnmatch("[]]", "]") && fnmatch("a[", "a["));
        assert!(fnmatch(
            "usb:v*p*d*dc*dsc*dp*ic08isc06ip50in*",
            "usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"
        ));
    }
}
