//! Reading any initramfs: plain newc cpio, or compressed with zstd, gzip or xz, and several
//! archives concatenated (an uncompressed early-microcode cpio followed by the compressed main
//! one, as dracut and Debian's initramfs-tools write them, or extra initrds appended).
//!
//! Between archives the kernel skips zero padding and detects each archive's compression from
//! its magic bytes; this reader does the same.
//!
//! Images may be hostile (a few kilobytes of zstd can claim a gigabyte-sized member), so
//! reading takes bounded memory whatever the input: members stream past one at a time and their
//! data is skipped in small chunks, except what is kept, each with a bound (a symlink's target,
//! at most [`MAX_TARGET`]; Stratum's manifest, at most [`MAX_MANIFEST`]). Decoders are held to
//! 128 MiB (zstd's default window limit, the same for xz). Member names may hold any character
//! but NUL: text output escapes control characters ([`escape`]).

use std::borrow::Cow;
use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::ops::ControlFlow;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use xz2::stream::{Action, Status};

use crate::newc::{self, Kind};

/// One member of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Absolute path inside the initramfs (`/init`).
    pub path: String,
    /// File type.
    pub kind: Kind,
    /// Permission bits (without the type).
    pub mode: u32,
    /// Data size in bytes.
    pub size: u64,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Target of a symlink.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Device number (major, minor) of a character or block device.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rdev: Option<(u32, u32)>,
    /// Which of the concatenated archives holds the member, counting from 0.
    pub archive: usize,
}

impl fmt::Display for Entry {
    /// An `ls -l` style line: type and permissions, owner, size (or device number), path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = match self.kind {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Char => 'c',
            Kind::Block => 'b',
            Kind::Fifo => 'p',
            Kind::Socket => 's',
        };
        let mut perms = String::with_capacity(9);
        for (i, c) in "rwxrwxrwx".chars().enumerate() {
            perms.push(if self.mode & (0o400 >> i) != 0 {
                c
            } else {
                '-'
            });
        }
        let size = match self.rdev {
            Some((ma, mi)) => format!("{ma}, {mi}"),
            None => self.size.to_string(),
        };
        write!(
            f,
            "{t}{perms} {:>4} {:>4} {size:>10} {}",
            self.uid,
            self.gid,
            escape(&self.path)
        )?;
        if let Some(target) = &self.target {
            write!(f, " -> {}", escape(target))?;
        }
        Ok(())
    }
}

/// `s` with backslashes and control characters escaped (`\\`, `\n`, `\t`, `\r`, else `\xNN`,
/// or `\u{NN}` beyond ASCII), so that a name read from an image prints as one line and cannot
/// send commands to a terminal.
pub fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| c == '\\' || c.is_control()) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_ascii_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Compression formats recognised by their magic bytes, as the kernel's `decompress_method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Cpio,
    Zstd,
    Gzip,
    Xz,
    Unsupported(&'static str),
}

fn detect(magic: &[u8]) -> Option<Format> {
    const TABLE: &[(&[u8], Format)] = &[
        (newc::MAGIC, Format::Cpio),
        (newc::MAGIC_CRC, Format::Cpio),
        (b"070707", Format::Unsupported("odc (old ASCII) cpio")),
        (&[0x28, 0xb5, 0x2f, 0xfd], Format::Zstd),
        (&[0x1f, 0x8b], Format::Gzip),
        (&[0x1f, 0x9e], Format::Gzip),
        (&[0xfd, b'7', b'z', b'X', b'Z', 0], Format::Xz),
        (b"BZh", Format::Unsupported("bzip2")),
        (&[0x5d, 0, 0], Format::Unsupported("lzma")),
        (&[0x89, b'L', b'Z', b'O'], Format::Unsupported("lzo")),
        (&[0x02, 0x21, 0x4c, 0x18], Format::Unsupported("lz4")),
    ];
    TABLE
        .iter()
        .find(|(m, _)| magic.starts_with(m))
        .map(|(_, f)| *f)
}

/// Compressed streams nested inside compressed streams this deep are refused.
const MAX_DEPTH: usize = 4;

/// Longest symlink target read (`PATH_MAX`, as the kernel).
pub const MAX_TARGET: u64 = 4096;

/// Largest `/etc/stratum/initramfs.json` read.
pub const MAX_MANIFEST: u64 = 4 << 20;

/// Memory the xz decoder may use: enough for `xz -9` (a 64 MiB dictionary).
const XZ_MEMLIMIT: u64 = 128 << 20;

/// Where Stratum's generator describes an image.
const MANIFEST: &str = "/etc/stratum/initramfs.json";

/// What a walk over an image hands to its caller, and the little it keeps.
struct Walk<'v> {
    visit: &'v mut dyn FnMut(&Entry) -> Result<ControlFlow<()>>,
    /// The caller asked to stop.
    stopped: bool,
    archive: usize,
    /// Compression of each archive, in order.
    compression: Vec<&'static str>,
    /// The last `/etc/stratum/initramfs.json` seen (later archives win when unpacked).
    manifest: Option<Vec<u8>>,
}

/// What is known of an image once every member has been seen.
struct Walked {
    /// Compression of each archive, in order.
    compression: Vec<&'static str>,
    /// The last `/etc/stratum/initramfs.json` seen.
    manifest: Option<Vec<u8>>,
}

/// Skip zero padding; `false` at the end of the stream.
fn skip_zeros(r: &mut dyn BufRead) -> Result<bool> {
    loop {
        let buf = r.fill_buf()?;
        if buf.is_empty() {
            return Ok(false);
        }
        let zeros = buf.iter().take_while(|b| **b == 0).count();
        let more = zeros < buf.len();
        r.consume(zeros);
        if more {
            return Ok(true);
        }
    }
}

/// Read every archive in `r` (compressed with `compression`) until it ends.
fn read_stream(
    r: &mut dyn BufRead,
    w: &mut Walk,
    depth: usize,
    compression: &'static str,
) -> Result<()> {
    while !w.stopped && skip_zeros(r)? {
        let buf = r.fill_buf()?;
        let format = detect(buf).with_context(|| {
            format!(
                "unknown data after archive {} (starts with {:02x?})",
                w.archive,
                &buf[..buf.len().min(8)]
            )
        })?;
        if format != Format::Cpio && depth >= MAX_DEPTH {
            bail!("compressed data nested more than {MAX_DEPTH} levels deep");
        }
        match format {
            Format::Cpio => read_cpio(r, w, compression)?,
            Format::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(&mut *r)?.single_frame();
                read_stream(&mut BufReader::new(d), w, depth + 1, "zstd")
                    .context("in zstd data")?;
            }
            Format::Gzip => {
                let d = flate2::bufread::GzDecoder::new(&mut *r);
                read_stream(&mut BufReader::new(d), w, depth + 1, "gzip")
                    .context("in gzip data")?;
            }
            Format::Xz => {
                let d = XzReader::new(&mut *r)?;
                read_stream(&mut BufReader::new(d), w, depth + 1, "xz").context("in xz data")?;
            }
            Format::Unsupported(name) => bail!("{name} compressed archives are not supported"),
        }
    }
    Ok(())
}

/// Decodes one xz stream from a `BufRead` and stops at its end, leaving what follows (zero
/// padding, another archive) unread. `xz2::bufread::XzDecoder` instead reports "corrupt xz
/// stream" when more data follows the stream's end.
struct XzReader<R: BufRead> {
    inner: R,
    stream: xz2::stream::Stream,
    done: bool,
}

impl<R: BufRead> XzReader<R> {
    fn new(inner: R) -> Result<Self> {
        let stream = xz2::stream::Stream::new_stream_decoder(XZ_MEMLIMIT, 0)
            .context("starting the xz decoder")?;
        Ok(XzReader {
            inner,
            stream,
            done: false,
        })
    }
}

impl<R: BufRead> Read for XzReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while !self.done && !buf.is_empty() {
            let input = self.inner.fill_buf()?;
            let eof = input.is_empty();
            let (in0, out0) = (self.stream.total_in(), self.stream.total_out());
            let action = if eof { Action::Finish } else { Action::Run };
            let status = self
                .stream
                .process(input, buf, action)
                .map_err(|e| match e {
                    xz2::stream::Error::MemLimit => std::io::Error::other(format!(
                        "the xz data needs more than {} MiB of memory to decode",
                        XZ_MEMLIMIT >> 20
                    )),
                    e => std::io::Error::other(e),
                })?;
            let consumed = (self.stream.total_in() - in0) as usize;
            let produced = (self.stream.total_out() - out0) as usize;
            self.inner.consume(consumed);
            self.done = status == Status::StreamEnd;
            if produced > 0 {
                return Ok(produced);
            }
            if eof && !self.done {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(0)
    }
}

fn read_cpio(r: &mut dyn BufRead, w: &mut Walk, compression: &'static str) -> Result<()> {
    let mut reader = newc::Reader::new(r);
    let archive = w.archive;
    while let Some(h) = reader
        .next_header()
        .with_context(|| format!("reading archive {archive}"))?
    {
        let kind = h.kind().with_context(|| {
            format!(
                "{}: unknown file type in mode {:o}",
                escape(&h.name),
                h.mode
            )
        })?;
        let name = h.name.trim_start_matches("./").trim_start_matches('/');
        if kind == Kind::File && name == MANIFEST.trim_start_matches('/') {
            w.manifest = Some(
                reader
                    .read_data(MAX_MANIFEST)
                    .with_context(|| format!("reading {MANIFEST} in archive {archive}"))?,
            );
        }
        let target = match kind {
            Kind::Symlink => {
                let data = reader.read_data(MAX_TARGET).with_context(|| {
                    format!(
                        "reading the target of {} in archive {archive}",
                        escape(name)
                    )
                })?;
                Some(String::from_utf8_lossy(&data).into_owned())
            }
            _ => None,
        };
        let rdev = matches!(kind, Kind::Char | Kind::Block).then_some(h.rdev);
        let entry = Entry {
            path: if name == "." {
                "/".into()
            } else {
                format!("/{name}")
            },
            kind,
            mode: h.mode & 0o7777,
            size: u64::from(h.filesize),
            uid: h.uid,
            gid: h.gid,
            mtime: u64::from(h.mtime),
            target,
            rdev,
            archive,
        };
        if (w.visit)(&entry)?.is_break() {
            w.stopped = true;
            return Ok(());
        }
    }
    w.archive += 1;
    w.compression.push(compression);
    Ok(())
}

/// Hand each member of the image in `r` to `visit`, in archive order, keeping none of them;
/// `visit` can stop the walk. An empty input, one of only zero bytes, and one whose compressed
/// data holds no archive are errors.
fn walk(
    r: &mut dyn BufRead,
    visit: &mut dyn FnMut(&Entry) -> Result<ControlFlow<()>>,
) -> Result<Walked> {
    if r.fill_buf()?.is_empty() {
        bail!("empty file");
    }
    if !skip_zeros(r)? {
        bail!("not an initramfs: all zero bytes");
    }
    let mut w = Walk {
        visit,
        stopped: false,
        archive: 0,
        compression: Vec::new(),
        manifest: None,
    };
    read_stream(r, &mut w, 0, "none")?;
    if w.compression.is_empty() && !w.stopped {
        bail!("not an initramfs: no cpio archive in the compressed data");
    }
    Ok(Walked {
        compression: w.compression,
        manifest: w.manifest,
    })
}

/// Read all members of all archives in `r`, in archive order, into memory (for images known to
/// be small; [`for_each_member`] hands them over one at a time).
pub fn read_all(r: &mut dyn BufRead) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    walk(r, &mut |e| {
        entries.push(e.clone());
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(entries)
}

/// Hand each member of the initramfs at `path` to `visit`, in archive order, until it returns
/// [`ControlFlow::Break`]; memory use does not grow with the image.
pub fn for_each_member(
    path: &Path,
    mut visit: impl FnMut(&Entry) -> Result<ControlFlow<()>>,
) -> Result<()> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    walk(&mut BufReader::new(file), &mut visit)
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(())
}

/// List the members of the initramfs at `path`, all in memory (see [`read_all`]).
pub fn list(path: &Path) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for_each_member(path, |e| {
        entries.push(e.clone());
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(entries)
}

mod summary;
pub use summary::{inspect, summarize, ArchiveSummary, Summary, MAX_KERNEL_VERSIONS};

#[cfg(test)]
mod tests;
