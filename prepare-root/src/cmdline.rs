//! Parser for the kernel command line (`/proc/cmdline`), following the kernel's own rules
//! (`next_arg` in its `lib/cmdline.c`, `parse_args` in `kernel/params.c`), byte for byte.
//!
//! - Parameters are separated by the bytes the kernel's `isspace` accepts: ASCII whitespace
//!   and 0xA0 (Latin-1 no-break space, which is also the second byte of UTF-8 characters such
//!   as `à` = C3 A0).
//! - A double quote switches quoting on or off wherever it is, and a space inside quotes does
//!   not separate. The kernel removes only a quote that opens the parameter (`"foo=a b"`) or
//!   its value (`foo="a b"`), each with the parameter's last byte when that is a quote too;
//!   any other quote stays in the value. There are no escapes: a backslash is an ordinary
//!   byte.
//! - A bare `--` (also written `"--"`) ends the kernel's parameters: everything after it
//!   belongs to init. Keys may repeat, values may contain `=` (the split is at the first one),
//!   and `-` and `_` are equivalent in keys, as the kernel treats them in parameter names.

use std::fmt;

/// One `key` or `key=value` parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    /// The name as written (dashes/underscores preserved).
    pub key: String,
    /// `None` for a flag such as `ro`; `Some("")` for `key=`.
    pub value: Option<String>,
}

/// A parsed kernel command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cmdline {
    params: Vec<Param>,
    init_args: Vec<String>,
}

/// Whether the kernel's `isspace` accepts `b` (its `lib/ctype.c` table): ASCII whitespace and
/// 0xA0.
pub fn is_kernel_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0xa0)
}

/// Compares parameter names the way the kernel does: `-` and `_` are the same character.
fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'-' { b'_' } else { c };
            n(x) == n(y)
        })
}

/// The kernel's `next_arg`: splits the parameter at the start of `s` (no leading spaces) into
/// its key and value, with the kernel's quote removal. Returns the rest of `s`, spaces skipped.
fn next_arg(s: &[u8]) -> (&[u8], Option<&[u8]>, &[u8]) {
    let (mut arg, quoted) = match s.strip_prefix(b"\"") {
        Some(rest) => (rest, true),
        None => (s, false),
    };
    let mut in_quote = quoted;
    let mut equals = None;
    let mut end = arg.len();
    for (i, &b) in arg.iter().enumerate() {
        if is_kernel_space(b) && !in_quote {
            end = i;
            break;
        }
        if b == b'=' && equals.is_none() {
            equals = Some(i);
        }
        if b == b'"' {
            in_quote = !in_quote;
        }
    }
    let rest = arg.get(end + 1..).unwrap_or_default();
    arg = &arg[..end];
    // The kernel cuts the parameter's last byte when it is a quote and the value or the whole
    // parameter opened with one; it does so once even when both did.
    let mut cut_last = quoted;
    let (key, value) = match equals {
        None => (arg, None),
        Some(e) => {
            let mut v = &arg[e + 1..];
            if let Some(unquoted) = v.strip_prefix(b"\"") {
                v = unquoted;
                cut_last = true;
            }
            (&arg[..e], Some(v))
        }
    };
    let cut = |x: &'_ [u8]| -> usize {
        if cut_last && arg.last() == Some(&b'"') && !x.is_empty() {
            x.len() - 1
        } else {
            x.len()
        }
    };
    let (key, value) = match value {
        // The last byte is the value's (or, for `k="`, the opening quote already removed).
        Some(v) if !v.is_empty() => (key, Some(&v[..cut(v)])),
        Some(v) => (key, Some(v)),
        None => (&key[..cut(key)], None),
    };
    let skip = rest
        .iter()
        .position(|&b| !is_kernel_space(b))
        .unwrap_or(rest.len());
    (key, value, &rest[skip..])
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Cmdline {
    /// Parses a command line as the kernel does; never fails (the kernel accepts anything
    /// too). Bytes that are not UTF-8 become U+FFFD.
    pub fn parse(s: &str) -> Cmdline {
        let mut out = Cmdline::default();
        let mut rest = s.as_bytes();
        let skip = rest
            .iter()
            .position(|&b| !is_kernel_space(b))
            .unwrap_or(rest.len());
        rest = &rest[skip..];
        let mut after_dashes = false;
        while !rest.is_empty() {
            let (key, value, next) = next_arg(rest);
            rest = next;
            if after_dashes {
                out.init_args.push(match value {
                    Some(v) => format!("{}={}", text(key), text(v)),
                    None => text(key),
                });
                continue;
            }
            if key == b"--" && value.is_none() {
                after_dashes = true;
                continue;
            }
            out.params.push(Param {
                key: text(key),
                value: value.map(text),
            });
        }
        out
    }

    /// The value of the last `key=…`; `None` if absent or if the last occurrence is a bare flag.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|p| key_eq(&p.key, key))
            .and_then(|p| p.value.as_deref())
    }

    /// Whether `key` appears at all, with or without a value.
    pub fn has(&self, key: &str) -> bool {
        self.params.iter().any(|p| key_eq(&p.key, key))
    }

    /// All values given for `key`, in order (bare flags are skipped).
    pub fn values(&self, key: &str) -> Vec<&str> {
        self.params
            .iter()
            .filter(|p| key_eq(&p.key, key))
            .filter_map(|p| p.value.as_deref())
            .collect()
    }

    /// A boolean option: a bare flag is true; `0`, `no`, `false`, `off` are false.
    pub fn flag(&self, key: &str) -> bool {
        match self.params.iter().rev().find(|p| key_eq(&p.key, key)) {
            None => false,
            Some(Param { value: None, .. }) => true,
            Some(Param { value: Some(v), .. }) => !matches!(
                v.to_ascii_lowercase().as_str(),
                "0" | "no" | "false" | "off"
            ),
        }
    }

    /// All parameters before `--`, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Param> {
        self.params.iter()
    }

    /// The words after `--`, which the kernel passes to init.
    pub fn init_args(&self) -> &[String] {
        &self.init_args
    }
}

fn has_kernel_space(s: &str) -> bool {
    s.bytes().any(is_kernel_space)
}

/// The text of a parameter as the kernel reads it back: as it is, or in double quotes as a
/// whole (`"key=a b"`) when it contains a space. The quotes go around the whole parameter, not
/// the value, because that is the only form GRUB's `linux` command produces.
impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let quote = self.key.is_empty()
            || self.key == "--"
            || has_kernel_space(&self.key)
            || self.value.as_deref().is_some_and(has_kernel_space);
        let q = if quote { "\"" } else { "" };
        match &self.value {
            None => write!(f, "{q}{}{q}", self.key),
            Some(v) => write!(f, "{q}{}={v}{q}", self.key),
        }
    }
}

impl fmt::Display for Cmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = self.params.iter().map(|p| p.to_string()).collect();
        if !self.init_args.is_empty() {
            words.push("--".to_string());
            words.extend(self.init_args.iter().map(|a| {
                match a.split_once('=') {
                    Some((k, v)) => Param {
                        key: k.to_string(),
                        value: Some(v.to_string()),
                    }
                    .to_string(),
                    None => Param {
                        key: a.clone(),
                        value: None,
                    }
                    .to_string(),
                }
            }));
        }
        f.write_str(&words.join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_and_trailing_newline() {
        let c = Cmdline::parse("BOOT_IMAGE=/vmlinuz root=UUID=abc ro quiet\n");
        assert_eq!(c.get("root"), Some("UUID=abc"));
        assert_eq!(c.get("BOOT_IMAGE"), Some("/vmlinuz"));
        assert!(c.has("ro"));
        assert_eq!(c.get("ro"), None);
        assert!(!c.has("rw"));
        assert_eq!(c.iter().count(), 4);
    }

    #[test]
    fn empty() {
        for s in ["", "   ", "\n", " \t \n"] {
            let c = Cmdline::parse(s);
            assert_eq!(c.iter().count(), 0);
            assert!(c.init_args().is_empty());
            assert_eq!(c.to_string(), "");
        }
    }

    /// What the kernel's `next_arg` makes of each input: (key, value) per parameter.
    #[test]
    fn quotes_as_the_kernel_removes_them() {
        type Want<'a> = &'a [(&'a str, Option<&'a str>)];
        let table: &[(&str, Want)] = &[
            (r#""foo=a b""#, &[("foo", Some("a b"))]),
            (r#"bar="c d e""#, &[("bar", Some("c d e"))]),
            // Quotes elsewhere group but stay in the value.
            (r#"x=y"z w"v"#, &[("x", Some(r#"y"z w"v"#))]),
            (r#"k="a"b"#, &[("k", Some(r#"a"b"#))]),
            (r#""k="v"""#, &[("k", Some(r#"v""#))]),
            (r#""k""#, &[("k", None)]),
            (r#"k="""#, &[("k", Some(""))]),
            (r#"k=""#, &[("k", Some(""))]),
            (r#""k k"=v"#, &[(r#"k k""#, Some("v"))]),
            // No escapes: a backslash is a byte like any other, and \" still toggles quoting.
            (
                r#"k=a\"b c\"d e"#,
                &[("k", Some(r#"a\"b c\"d"#)), ("e", None)],
            ),
            (r"k=C:\\x\'y", &[("k", Some(r"C:\\x\'y"))]),
            // An odd quote swallows the rest of the line.
            (r#"a=" b c"#, &[("a", Some(" b c"))]),
            // 0xA0 separates, as ASCII whitespace does; inside quotes it does not.
            ("k=voilà z", &[("k", Some("voil\u{FFFD}")), ("z", None)]),
            ("\"k=voilà z\"", &[("k", Some("voilà z"))]),
            (" \t a \n", &[("a", None)]),
        ];
        for (input, want) in table {
            let c = Cmdline::parse(input);
            let got: Vec<(&str, Option<&str>)> = c
                .iter()
                .map(|p| (p.key.as_str(), p.value.as_deref()))
                .collect();
            assert_eq!(&got, want, "{input:?}");
        }
    }

    #[test]
    fn double_dash_and_init_args() {
        let c = Cmdline::parse("root=/dev/vda3 -- single \"a b\" x=1");
        assert_eq!(c.iter().count(), 1);
        assert_eq!(c.init_args(), &["single", "a b", "x=1"]);
        assert!(!c.has("x"));
        // The kernel removes the quotes before it compares with "--".
        let c = Cmdline::parse("\"--\" a");
        assert_eq!(c.iter().count(), 0);
        assert_eq!(c.init_args(), &["a"]);
        // "--=x" is a parameter.
        assert_eq!(Cmdline::parse("--=x").iter().count(), 1);
    }

    #[test]
    fn repeated_keys_last_wins() {
        let c = Cmdline::parse("console=tty0 console=ttyS0,115200 foo=1 foo");
        assert_eq!(c.get("console"), Some("ttyS0,115200"));
        assert_eq!(c.values("console"), vec!["tty0", "ttyS0,115200"]);
        assert_eq!(c.get("foo"), None);
        assert!(c.has("foo"));
        assert!(c.flag("foo"));
    }

    #[test]
    fn equals_in_value() {
        let c = Cmdline::parse("root=PARTUUID=a-b=c rootflags=data=ordered,x=y k=");
        assert_eq!(c.get("root"), Some("PARTUUID=a-b=c"));
        assert_eq!(c.get("rootflags"), Some("data=ordered,x=y"));
        assert_eq!(c.get("k"), Some(""));
    }

    #[test]
    fn dash_underscore() {
        let c = Cmdline::parse("stratum.root_timeout=5 stratum.reboot-delay=0");
        assert_eq!(c.get("stratum.root-timeout"), Some("5"));
        assert_eq!(c.get("stratum.reboot_delay"), Some("0"));
        assert!(!c.has("stratum.rootXtimeout"));
    }

    #[test]
    fn flags() {
        let c = Cmdline::parse("a b=0 c=yes d=off");
        assert!(c.flag("a"));
        assert!(!c.flag("b"));
        assert!(c.flag("c"));
        assert!(!c.flag("d"));
        assert!(!c.flag("e"));
    }

    #[test]
    fn round_trip() {
        for s in [
            r#"root=UUID=x foo="a b" "k k=v" ro -- single "c d""#,
            "a=  b=\"\" -- --",
            "x=1=2 y",
            r#"q=\"a\" "w=\"x\" y" z=C:\\d"#,
        ] {
            let c = Cmdline::parse(s);
            let again = Cmdline::parse(&c.to_string());
            assert_eq!(c, again, "{s} -> {c}");
        }
        // Spaces are quoted around the whole parameter, as GRUB writes it.
        let c = Cmdline::parse("foo=\"a b\" e= \"g=h\"");
        assert_eq!(c.to_string(), "\"foo=a b\" e= g=h");
    }
}
