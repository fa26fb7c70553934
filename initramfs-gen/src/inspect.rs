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
    /// Compression of each archive, in order.
    compression: Vec<&'static str>,
    /// The last `/etc/stratum/initramfs.json` seen (later archives win when unpacked).
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
    st: &mut State,
    depth: usize,
    compression: &'static str,
) -> Result<()> {
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
            Format::Cpio => read_cpio(r, st, compression)?,
            Format::Zstd => {
                let d = zstd::stream::read::Decoder::with_buffer(&mut *r)?.single_frame();
                read_stream(&mut BufReader::new(d), st, depth + 1, "zstd")
                    .context("in zstd data")?;
            }
            Format::Gzip => {
                let d = flate2::bufread::GzDecoder::new(&mut *r);
                read_stream(&mut BufReader::new(d), st, depth + 1, "gzip")
                    .context("in gzip data")?;
            }
            Format::Xz => {
                let d = XzReader::new(&mut *r)?;
                read_stream(&mut BufReader::new(d), st, depth + 1, "xz").context("in xz data")?;
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

fn read_cpio(r: &mut dyn BufRead, st: &mut State, compression: &'static str) -> Result<()> {
    let mut reader = newc::Reader::new(r);
    while let Some((h, data)) = reader
        .next_member()
        .with_context(|| format!("reading archive {}", st.archive))?
    {
        let kind = h
            .kind()
            .with_context(|| format!("{}: unknown file type in mode {:o}", h.name, h.mode))?;
        let name = h.name.trim_start_matches("./").trim_start_matches('/');
        if kind == Kind::File && name == MANIFEST.trim_start_matches('/') {
            st.manifest = Some(data.clone());
        }
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
    st.compression.push(compression);
    Ok(())
}

fn read_state(r: &mut dyn BufRead) -> Result<State> {
    let mut st = State {
        entries: Vec::new(),
        archive: 0,
        compression: Vec::new(),
        manifest: None,
    };
    read_stream(r, &mut st, 0, "none")?;
    Ok(st)
}

/// Read all members of all archives in `r`, in archive order.
pub fn read_all(r: &mut dyn BufRead) -> Result<Vec<Entry>> {
    Ok(read_state(r)?.entries)
}

/// Where Stratum's generator describes an image.
const MANIFEST: &str = "/etc/stratum/initramfs.json";

/// One of the concatenated archives of an initramfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveSummary {
    /// Position, counting from 0.
    pub index: usize,
    /// `none`, `zstd`, `gzip` or `xz`.
    pub compression: &'static str,
    /// Members, without the trailer.
    pub members: usize,
    /// Regular files.
    pub files: usize,
    /// Directories.
    pub dirs: usize,
    /// Symbolic links.
    pub symlinks: usize,
    /// Device nodes, fifos, sockets.
    pub other: usize,
    /// Bytes of file data.
    pub file_bytes: u64,
    /// Whether it is an early-microcode archive (only `kernel/x86/microcode/...` files).
    pub early_microcode: bool,
}

/// What `stratum-initramfs inspect` reports.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// Size of the file.
    pub size: u64,
    /// The archives, in order.
    pub archives: Vec<ArchiveSummary>,
    /// Members in all archives.
    pub members: usize,
    /// Whether some archive has `/init`.
    pub has_init: bool,
    /// Kernel versions with a modules directory (`/usr/lib/modules/<kver>` or `/lib/modules/...`).
    pub kernel_versions: Vec<String>,
    /// Kernel module files (`*.ko*`).
    pub module_files: usize,
    /// `/etc/stratum/initramfs.json`, when the image is Stratum's.
    pub stratum: Option<serde_json::Value>,
}

/// Summarise the initramfs at `path`.
pub fn inspect(path: &Path) -> Result<Summary> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let size = file
        .metadata()
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let st = read_state(&mut BufReader::new(file))
        .with_context(|| format!("reading {}", path.display()))?;
    let mut archives: Vec<ArchiveSummary> = st
        .compression
        .iter()
        .enumerate()
        .map(|(index, compression)| ArchiveSummary {
            index,
            compression,
            members: 0,
            files: 0,
            dirs: 0,
            symlinks: 0,
            other: 0,
            file_bytes: 0,
            early_microcode: true,
        })
        .collect();
    let mut kvers = std::collections::BTreeSet::new();
    let mut module_files = 0;
    for e in &st.entries {
        let a = &mut archives[e.archive];
        a.members += 1;
        match e.kind {
            Kind::File => {
                a.files += 1;
                a.file_bytes += e.size;
                a.early_microcode &= e.path.starts_with("/kernel/x86/microcode/");
            }
            Kind::Dir => a.dirs += 1,
            Kind::Symlink => a.symlinks += 1,
            _ => a.other += 1,
        }
        for base in ["/usr/lib/modules/", "/lib/modules/"] {
            if let Some(rest) = e.path.strip_prefix(base) {
                if let Some((kver, _)) = rest.split_once('/') {
                    kvers.insert(kver.to_string());
                }
            }
        }
        let name = e.path.rsplit('/').next().unwrap_or_default();
        if e.kind == Kind::File
            && [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
                .iter()
                .any(|s| name.ends_with(s))
        {
            module_files += 1;
        }
    }
    for a in &mut archives {
        a.early_microcode &= a.files > 0;
    }
    let stratum = st
        .manifest
        .as_deref()
        .and_then(|d| serde_json::from_slice(d).ok());
    Ok(Summary {
        size,
        members: st.entries.len(),
        has_init: st.entries.iter().any(|e| e.path == "/init"),
        archives,
        kernel_versions: kvers.into_iter().collect(),
        module_files,
        stratum,
    })
}

impl fmt::Display for Summary {
    /// The human summary `inspect` prints.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "size: {} bytes, {} archive(s), {} members",
            self.size,
            self.archives.len(),
            self.members
        )?;
        for a in &self.archives {
            write!(
                f,
                "archive {}: {}, {} members ({} files, {} dirs, {} symlinks, {} other), {} bytes of data",
                a.index, a.compression, a.members, a.files, a.dirs, a.symlinks, a.other, a.file_bytes
            )?;
            if a.early_microcode {
                write!(f, " [early microcode]")?;
            }
            writeln!(f)?;
        }
        writeln!(f, "init: {}", if self.has_init { "/init" } else { "none" })?;
        if !self.kernel_versions.is_empty() {
            writeln!(
                f,
                "kernel modules: {} files for {}",
                self.module_files,
                self.kernel_versions.join(", ")
            )?;
        }
        if let Some(m) = &self.stratum {
            let field = |k: &str| m.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            writeln!(
                f,
                "generator: {} {}, kver {}, mode {}",
                field("generator"),
                field("version"),
                field("kver"),
                field("mode")
            )?;
            let list = |k: &str| -> String {
                m.get(k)
                    .and_then(|v| v.as_array())
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str())
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_default()
            };
            writeln!(f, "modules: {}", list("modules"))?;
            let fw = list("firmware");
            if !fw.is_empty() {
                writeln!(f, "firmware: {fw}")?;
            }
        }
        Ok(())
    }
}

/// List the members of the initramfs at `path`.
pub fn list(path: &Path) -> Result<Vec<Entry>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_all(&mut BufReader::new(file)).with_context(|| format!("reading {}", path.display()))
}

#[cfg(test)]
mod tests;
