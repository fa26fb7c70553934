//! Reading any initramfs: plain newc cpio, or compressed with zstd, gzip or xz, and several
//! archives concatenated (an uncompressed early-microcode cpio followed by the compressed main
//! one, as dracut and Debian's initramfs-tools write them, or extra initrds appended).
//!
//! Between archives the kernel skips zero padding and detects each archive's compression from
//! its magic bytes; this reader does the same.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
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
            self.uid, self.gid, self.path
        )?;
        if let Some(target) = &self.target {
            write!(f, " -> {target}")?;
        }
        Ok(())
    }
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

struct State {
    entries: Vec<Entry>,
    archive: usize,
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

/// Read every archive in `r` until it ends.
fn read_stream(r: &mut dyn BufRead, st: &mut State, depth: usize) -> Result<()> {
    while skip_zeros(r)? {
        let buf = r.fill_buf()?;
        let format = detect(buf).with_context(|| {
            format!(
                "unknown data after archive {} (starts with {:02x?})",
                st.archive,
                &buf[..buf.len().min(8)]
            )
        })?;
        if format != Format::Cpio && depth >= MAX_DEPTH {
            bail!("compressed data nested more than {MAX_DEPTH} levels deep");
        }
        match format {
            Format::Cpio => read_cpio(r, st)?,
            Format::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(&mut *r)?.single_frame();
                read_stream(&mut BufReader::new(d), st, depth + 1).context("in zstd data")?;
            }
            Format::Gzip => {
                let d = flate2::bufread::GzDecoder::new(&mut *r);
                read_stream(&mut BufReader::new(d), st, depth + 1).context("in gzip data")?;
            }
            Format::Xz => {
                let d = XzReader::new(&mut *r)?;
                read_stream(&mut BufReader::new(d), st, depth + 1).context("in xz data")?;
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
        let stream = xz2::stream::Stream::new_stream_decoder(u64::MAX, 0)
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
                .map_err(std::io::Error::other)?;
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

fn read_cpio(r: &mut dyn BufRead, st: &mut State) -> Result<()> {
    let mut reader = newc::Reader::new(r);
    while let Some((h, data)) = reader
        .next_member()
        .with_context(|| format!("reading archive {}", st.archive))?
    {
        let kind = h
            .kind()
            .with_context(|| format!("{}: unknown file type in mode {:o}", h.name, h.mode))?;
        let name = h.name.trim_start_matches("./").trim_start_matches('/');
        let target = (kind == Kind::Symlink).then(|| String::from_utf8_lossy(&data).into_owned());
        let rdev = matches!(kind, Kind::Char | Kind::Block).then_some(h.rdev);
        st.entries.push(Entry {
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
            archive: st.archive,
        });
    }
    st.archive += 1;
    Ok(())
}

/// Read all members of all archives in `r`, in archive order.
pub fn read_all(r: &mut dyn BufRead) -> Result<Vec<Entry>> {
    let mut st = State {
        entries: Vec::new(),
        archive: 0,
    };
    read_stream(r, &mut st, 0)?;
    Ok(st.entries)
}

/// List the members of the initramfs at `path`.
pub fn list(path: &Path) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_all(&mut BufReader::new(file)).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests;
