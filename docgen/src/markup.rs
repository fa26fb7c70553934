//! The written parts of the man pages: a small plain-text markup, turned into roff.
//!
//! ```text
//! # name - one line saying what it is      (standalone pages only: the NAME section)
//! ## HEADING                               a section
//! A paragraph: lines up to a blank line.   `code` is set in bold
//! term                                     a definition (.TP): a line, then lines
//!   its description                        indented by two spaces
//!     verbatim text                        lines indented by four spaces (examples)
//! ```
//!
//! `@NAME@` is replaced by a value from the code (a default, an exit status), so the pages
//! quote what the program does; an unknown name is an error.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use clap_mangen::roff::{bold, roman, Inline, Roff};

/// Marks a line of a definition's body (indented by two spaces) once the source is read.
const INDENT: char = '\u{1}';

/// A parsed text file: the NAME line, if any, and its sections in order.
#[derive(Debug, Default)]
pub struct Text {
    /// `# name - what it is`: the NAME line of a standalone page.
    pub name_line: Option<String>,
    /// `(HEADING, blocks)` in the order written.
    pub sections: Vec<(String, Vec<Block>)>,
}

/// One block of a section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    Paragraph(String),
    Definition(String, String),
    Verbatim(Vec<String>),
}

impl Text {
    /// Parses `source` (named `what` in errors), replacing `@NAME@` from `values`.
    pub fn parse(what: &str, source: &str, values: &BTreeMap<&str, String>) -> Result<Text> {
        let source = substitute(what, source, values)?;
        let mut text = Text::default();
        let mut lines = source.lines().peekable();
        while let Some(line) = lines.next() {
            if line.trim().is_empty() {
                continue;
            }
            if let Some(h) = line.strip_prefix("## ") {
                text.sections.push((h.trim().to_uppercase(), Vec::new()));
                continue;
            }
            if let Some(n) = line.strip_prefix("# ") {
                text.name_line = Some(n.trim().to_string());
                continue;
            }
            let Some((_, blocks)) = text.sections.last_mut() else {
                bail!("{what}: text before the first `## HEADING`: {line:?}");
            };
            if let Some(v) = line.strip_prefix("    ") {
                let mut verbatim = vec![v.to_string()];
                while let Some(next) = lines.peek() {
                    match next.strip_prefix("    ") {
                        Some(v) => verbatim.push(v.to_string()),
                        None if next.trim().is_empty() => verbatim.push(String::new()),
                        None => break,
                    }
                    lines.next();
                }
                while verbatim.last().is_some_and(|l| l.is_empty()) {
                    verbatim.pop();
                }
                blocks.push(Block::Verbatim(verbatim));
                continue;
            }
            let mut body = Vec::new();
            let is_definition = lines.peek().is_some_and(|l| l.starts_with(INDENT));
            while let Some(next) = lines.peek() {
                // A definition's body is its indented lines; the next term starts a new one.
                if next.trim().is_empty()
                    || next.starts_with("    ")
                    || (is_definition && !next.starts_with(INDENT))
                {
                    break;
                }
                body.push(next.trim().to_string());
                lines.next();
            }
            let body: Vec<&str> = body.iter().map(|l| l.trim_start_matches(INDENT)).collect();
            if is_definition {
                blocks.push(Block::Definition(line.trim().to_string(), body.join(" ")));
            } else {
                let mut all = vec![line.trim()];
                all.extend(body);
                blocks.push(Block::Paragraph(all.join(" ")));
            }
        }
        Ok(text)
    }

    /// The blocks of section `heading`, if written.
    pub fn section(&self, heading: &str) -> Option<&[Block]> {
        self.sections
            .iter()
            .find(|(h, _)| h == heading)
            .map(|(_, b)| b.as_slice())
    }
}

/// Replaces each `@NAME@` with its value.
fn substitute(what: &str, source: &str, values: &BTreeMap<&str, String>) -> Result<String> {
    let mut out = String::with_capacity(source.len());
    let mut rest = source;
    while let Some(start) = rest.find('@') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('@') {
            let name = &after[..name_len];
            let Some(v) = values.get(name) else {
                bail!("{what}: unknown placeholder @{name}@");
            };
            out.push_str(v);
            rest = &after[name_len + 1..];
        } else {
            out.push('@');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(mark_indent(&out))
}

/// Marks the lines indented by exactly two spaces (a definition's body) with [`INDENT`].
fn mark_indent(source: &str) -> String {
    source
        .lines()
        .map(|l| match l.strip_prefix("  ") {
            Some(rest) if !rest.starts_with(' ') && !rest.is_empty() => format!("{INDENT}{rest}"),
            _ => l.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `text` with `code` spans in bold.
fn inline(text: &str) -> Vec<Inline> {
    let mut out = Vec::new();
    for (i, part) in text.split('`').enumerate() {
        if part.is_empty() {
            continue;
        }
        out.push(if i % 2 == 1 { bold(part) } else { roman(part) });
    }
    out
}

/// Appends `blocks` to `roff`.
pub fn render(roff: &mut Roff, blocks: &[Block]) {
    for b in blocks {
        match b {
            Block::Paragraph(p) => {
                roff.control("PP", []);
                roff.text(inline(p));
            }
            Block::Definition(term, body) => {
                roff.control("TP", []);
                roff.text(inline(&format!("`{term}`")));
                roff.text(inline(body));
            }
            Block::Verbatim(lines) => {
                roff.control("PP", []);
                roff.control("RS", ["4"]);
                roff.control("nf", []);
                for l in lines {
                    roff.text([roman(l.as_str())]);
                }
                roff.control("fi", []);
                roff.control("RE", []);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Text {
        let mut v = BTreeMap::new();
        v.insert("N", "3".to_string());
        Text::parse("t", s, &v).unwrap()
    }

    #[test]
    fn blocks() {
        let t = parse(
            "# x - a thing\n## Files\nA para\ngoes on, default @N@.\n\n/etc/x\n  \
             what it is\n  and more\n/etc/y\n  another\n\n    $ stratum status\n    ok\n",
        );
        assert_eq!(t.name_line.as_deref(), Some("x - a thing"));
        assert_eq!(
            t.section("FILES").unwrap(),
            [
                Block::Paragraph("A para goes on, default 3.".into()),
                Block::Definition("/etc/x".into(), "what it is and more".into()),
                Block::Definition("/etc/y".into(), "another".into()),
                Block::Verbatim(vec!["$ stratum status".into(), "ok".into()]),
            ]
        );
        let mut roff = Roff::new();
        render(&mut roff, t.section("FILES").unwrap());
        let r = roff.to_roff();
        assert!(
            r.contains(".TP\n\\fB/etc/x\\fR\nwhat it is and more"),
            "{r}"
        );
        assert!(r.contains(".nf\n$ stratum status\nok\n.fi"), "{r}");
    }

    #[test]
    fn placeholders() {
        let v = BTreeMap::new();
        let e = Text::parse("t", "## A\n@NOPE@\n", &v).unwrap_err();
        assert!(format!("{e}").contains("@NOPE@"), "{e}");
        // An address or a lone @ is text.
        let t = parse("## A\nmail root@example.com @ home\n");
        assert_eq!(
            t.section("A").unwrap(),
            [Block::Paragraph("mail root@example.com @ home".into())]
        );
        assert!(Text::parse("t", "text first\n", &v).is_err());
    }
}
