//! The targets, grouped by the crate whose parsers they feed.

pub mod boot;
pub mod bootset;
pub mod debian;
pub mod initramfs;

use std::borrow::Cow;

/// The input as text: parsers of text formats are fed every input, invalid UTF-8 replaced.
fn text(data: &[u8]) -> Cow<'_, str> {
    String::from_utf8_lossy(data)
}

/// Splits an input of several files at NUL bytes into at most `n` parts (missing ones empty).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut v: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    v.resize(n, &[]);
    v
}
