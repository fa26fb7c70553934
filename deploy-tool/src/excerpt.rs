//! Outside text quoted in error messages (a child process's output, a line of a file being
//! parsed, a parser's own message that echoes its input), cut to a size a person can read.
//!
//! Such text is not ours: one line of it can be 20 MB (a minified file, a binary, a runaway
//! loop), and an error that quotes it whole floods the terminal and the journal. Every
//! quoted line goes through [`line`]: at most [`MAX_LINE_CHARS`] characters, then how long it
//! really was, so the message still says what went wrong and where.

use std::borrow::Cow;
use std::fmt::Display;

/// The longest line, in characters, that an error message quotes whole.
pub const MAX_LINE_CHARS: usize = 200;

/// `s` as an error quotes it: itself when short, else its first [`MAX_LINE_CHARS`]
/// characters followed by `… (N bytes)`, N being its whole length.
pub fn line(s: &str) -> Cow<'_, str> {
    match s.char_indices().nth(MAX_LINE_CHARS) {
        None => Cow::Borrowed(s),
        Some((cut, _)) => Cow::Owned(format!("{}… ({} bytes)", &s[..cut], s.len())),
    }
}

/// Every line of `text` cut by [`line`], joined by newlines.
pub fn lines(text: &str) -> String {
    text.lines().map(line).collect::<Vec<_>>().join("\n")
}

/// An error whose message is `e`'s with every line cut by [`line`]: for parsers (TOML) whose
/// messages quote the offending line of their input.
pub fn error(e: impl Display) -> anyhow::Error {
    anyhow::anyhow!("{}", lines(e.to_string().trim_end()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lines_are_cut_with_their_length() {
        assert_eq!(line("short"), "short");
        let exact = "x".repeat(MAX_LINE_CHARS);
        assert_eq!(line(&exact), exact);
        let big = "y".repeat(20 << 20);
        let cut = line(&big);
        assert_eq!(
            cut,
            format!("{}… ({} bytes)", "y".repeat(MAX_LINE_CHARS), 20 << 20)
        );
        // Cut at a character, not inside one.
        let wide = "é".repeat(MAX_LINE_CHARS + 1);
        assert!(line(&wide).starts_with(&"é".repeat(MAX_LINE_CHARS)));
        assert!(line(&wide).ends_with(&format!("({} bytes)", wide.len())));
    }

    #[test]
    fn tail_keeps_the_last_lines_each_cut() {
        let tail = crate::cmd::tail;
        let text = format!("first\n{}\nlast\n", "z".repeat(5000));
        assert_eq!(tail(&text, 1), "last");
        let two = tail(&text, 2);
        assert!(two.len() < 300 && two.contains("(5000 bytes)") && two.ends_with("\nlast"));
        assert_eq!(tail("", 3), "");
    }

    /// A failing program that prints a 20 MB line: its error quotes a readable part of it.
    #[test]
    fn a_program_s_huge_output_is_cut_in_its_error() {
        let e = crate::cmd::output(std::process::Command::new("sh").args([
            "-c",
            "echo first >&2; head -c 20000000 /dev/zero | tr '\\0' x >&2; echo >&2; exit 3",
        ]))
        .unwrap_err();
        let text = format!("{e:#}");
        assert!(text.len() < 1000, "an error of {} bytes", text.len());
        assert!(
            text.contains("first") && text.contains("(20000000 bytes)"),
            "{text}"
        );
    }

    #[test]
    fn parser_errors_are_cut() {
        let e = error(format!("at line 1\n1 | {}\n  | ^\n", "q".repeat(100_000)));
        let text = e.to_string();
        assert!(text.len() < 400, "{}", text.len());
        assert!(
            text.starts_with("at line 1\n") && text.ends_with("  | ^"),
            "{text}"
        );
    }
}
