//! Parser for the kernel command line (`/proc/cmdline`), following the kernel's own rules.
//!
//! Parameters are separated by whitespace; double quotes group text containing spaces and may
//! start in the middle of a word (`foo="a b"`); they are removed from the result. A bare `--`
//! ends the kernel's parameters: everything after it belongs to init. Keys may repeat, values
//! may contain `=` (the split is at the first one), and `-` and `_` are equivalent in keys, as
//! the kernel treats them in parameter names.

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

/// Compares parameter names the way the kernel does: `-` and `_` are the same character.
fn key_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes().zip(b.bytes()).all(|(x, y)| {
            let n = |c: u8| if c == b'-' { b'_' } else { c };
            n(x) == n(y)
        })
}

/// Splits `s` into words, honouring double quotes; returns (word, was_quoted_anywhere).
fn split_words(s: &str) -> Vec<(String, bool)> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut in_quote = false;
    let mut quoted = false;
    for c in s.chars() {
        if c == '"' {
            in_quote = !in_quote;
            in_word = true;
            quoted = true;
        } else if c.is_whitespace() && !in_quote {
            if in_word {
                words.push((std::mem::take(&mut cur), quoted));
            }
            in_word = false;
            quoted = false;
        } else {
            cur.push(c);
            in_word = true;
        }
    }
    if in_word {
        words.push((cur, quoted));
    }
    words
}

impl Cmdline {
    /// Parses a command line; never fails (the kernel accepts anything too).
    pub fn parse(s: &str) -> Cmdline {
        let mut out = Cmdline::default();
        let mut words = split_words(s).into_iter();
        for (word, quoted) in words.by_ref() {
            if word == "--" && !quoted {
                break;
            }
            let param = match word.split_once('=') {
                Some((k, v)) => Param {
                    key: k.to_string(),
                    value: Some(v.to_string()),
                },
                None => Param {
                    key: word,
                    value: None,
                },
            };
            out.params.push(param);
        }
        out.init_args = words.map(|(w, _)| w).collect();
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

/// Quotes a word if it contains whitespace or is empty, so that parsing it again gives it back.
fn quote(s: &str) -> String {
    if s.is_empty() || s == "--" || s.chars().any(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s.to_string()
    }
}

impl fmt::Display for Param {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            None => f.write_str(&quote(&self.key)),
            // `key=` already means an empty value; no quotes needed.
            Some(v) if v.is_empty() => write!(f, "{}=", quote(&self.key)),
            Some(v) => write!(f, "{}={}", quote(&self.key), quote(v)),
        }
    }
}

impl fmt::Display for Cmdline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut words: Vec<String> = self.params.iter().map(|p| p.to_string()).collect();
        if !self.init_args.is_empty() {
            words.push("--".to_string());
            words.extend(self.init_args.iter().map(|a| quote(a)));
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

    #[test]
    fn quotes() {
        let c = Cmdline::parse(r#""foo=a b" bar="c d e" x=y"z w"v"#);
        assert_eq!(c.get("foo"), Some("a b"));
        assert_eq!(c.get("bar"), Some("c d e"));
        assert_eq!(c.get("x"), Some("yz wv"));
        assert_eq!(c.iter().count(), 3);
    }

    #[test]
    fn double_dash_and_init_args() {
        let c = Cmdline::parse("root=/dev/vda3 -- single \"a b\" x=1");
        assert_eq!(c.iter().count(), 1);
        assert_eq!(c.init_args(), &["single", "a b", "x=1"]);
        assert!(!c.has("x"));
        // A quoted "--" is a normal parameter.
        let c = Cmdline::parse("\"--\" a");
        assert_eq!(c.iter().count(), 2);
        assert!(c.init_args().is_empty());
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
            r#"root=UUID=x foo="a b" "k k"=v ro -- single "c d""#,
            "a=  b=\"\" \"--\" -- --",
            "x=1=2 y",
        ] {
            let c = Cmdline::parse(s);
            let again = Cmdline::parse(&c.to_string());
            assert_eq!(c, again, "{s} -> {c}");
        }
        let c = Cmdline::parse("foo=\"a b\" e=");
        assert_eq!(c.to_string(), "foo=\"a b\" e=");
    }
}
