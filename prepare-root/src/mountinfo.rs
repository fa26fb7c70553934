//! `/proc/self/mountinfo` fields (proc(5)): the one decoder of its escapes, shared by the
//! systemd-initrd mode (which mount is `/sysroot`) and the initramfs generator's host-only
//! scan (which device backs `/`).

/// Decodes a mountinfo path field: the kernel writes space, tab, newline and backslash as
/// three-digit octal escapes (`\040`, `\011`, `\012`, `\134`). Anything else is kept as it is.
pub fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .and_then(|d| {
                let v = u32::from(d[0] - b'0') * 64
                    + u32::from(d[1] - b'0') * 8
                    + u32::from(d[2] - b'0');
                u8::try_from(v).ok()
            });
        match (b[i], oct) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(unescape("/mnt\\040two"), "/mnt two");
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
        assert_eq!(unescape("\\011\\012"), "\t\n");
        // Not an escape: kept as written.
        assert_eq!(unescape("\\08x"), "\\08x");
        assert_eq!(unescape("\\400"), "\\400");
        assert_eq!(unescape("\\04"), "\\04");
    }
}
