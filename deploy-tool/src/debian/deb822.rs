//! Debian control-file paragraphs (deb822): `Field: value` lines, continuation lines starting
//! with a space or tab, paragraphs separated by blank lines. The format of `DEBIAN/control`,
//! dpkg's `status` file, APT indexes and `.sources` files.
//!
//! Fields keep their order and their exact text, so a paragraph is written back as it was
//! read, except where a field is set.

use anyhow::{bail, Result};

/// One paragraph: fields in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paragraph {
    fields: Vec<(String, String)>,
}

impl Paragraph {
    /// The value of `name` (case-insensitive, as in deb822), continuation lines included.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Sets `name`, in place when present, else after `after` (or at the end).
    pub fn set(&mut self, name: &str, value: &str, after: Option<&str>) {
        if let Some(f) = self
            .fields
            .iter_mut()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            f.1 = value.to_string();
            return;
        }
        let at = after
            .and_then(|a| {
                self.fields
                    .iter()
                    .position(|(k, _)| k.eq_ignore_ascii_case(a))
            })
            .map(|i| i + 1)
            .unwrap_or(self.fields.len());
        self.fields
            .insert(at, (name.to_string(), value.to_string()));
    }

    /// Removes `name` if present.
    pub fn remove(&mut self, name: &str) {
        self.fields.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
    }

    /// The paragraph as text, ending with a newline (no blank line).
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for (k, v) in &self.fields {
            s.push_str(k);
            s.push(':');
            if !v.starts_with('\n') && !v.is_empty() {
                s.push(' ');
            }
            s.push_str(v);
            s.push('\n');
        }
        s
    }
}

/// Parses every paragraph of `text`. Comment lines (`#`) are skipped, as APT does in
/// `.sources` files.
pub fn parse(text: &str) -> Result<Vec<Paragraph>> {
    let mut out = Vec::new();
    let mut cur = Paragraph::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            if !cur.fields.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        if line.starts_with([' ', '\t']) {
            let Some(last) = cur.fields.last_mut() else {
                bail!("line {}: continuation line without a field", i + 1);
            };
            last.1.push('\n');
            last.1.push_str(line);
            continue;
        }
        let Some((k, v)) = line.split_once(':') else {
            let line = crate::excerpt::line(line);
            bail!("line {}: expected `Field: value`, got {line:?}", i + 1);
        };
        if k.is_empty() || k.contains(char::is_whitespace) {
            let k = crate::excerpt::line(k);
            bail!("line {}: invalid field name {k:?}", i + 1);
        }
        cur.fields.push((k.to_string(), v.trim_start().to_string()));
    }
    if !cur.fields.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

/// Parses text that must hold exactly one paragraph.
pub fn parse_one(text: &str) -> Result<Paragraph> {
    let mut all = parse(text)?;
    if all.len() != 1 {
        bail!("expected one paragraph, found {}", all.len());
    }
    Ok(all.remove(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_continuations() {
        let text = "Package: a\nDescription: short\n long\n .\n more\nVersion: 1\n\nPackage: b\n";
        let p = parse(text).unwrap();
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].get("description"), Some("short\n long\n .\n more"));
        assert_eq!(
            p[0].to_text(),
            "Package: a\nDescription: short\n long\n .\n more\nVersion: 1\n"
        );
        let mut q = p[0].clone();
        q.set("Status", "install ok unpacked", Some("Package"));
        assert!(q
            .to_text()
            .starts_with("Package: a\nStatus: install ok unpacked\n"));
    }

    #[test]
    fn multiline_field_starting_empty() {
        let p = parse_one("Conffiles:\n /etc/a 0123\nPackage: x\n").unwrap();
        assert_eq!(p.get("Conffiles"), Some("\n /etc/a 0123"));
        assert_eq!(p.to_text(), "Conffiles:\n /etc/a 0123\nPackage: x\n");
    }

    #[test]
    fn malformed_is_an_error_with_line() {
        let e = parse("Package: a\nnot a field\n").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        assert!(parse(" lone continuation\n").is_err());
    }
}
