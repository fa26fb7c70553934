//! The newc ("070701") cpio format, the only archive format the kernel unpacks into its
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! This module is the only code that knows the format: a streaming [`Writer`] that gives every
//! member uid/gid 0, sequential inode numbers and no hardlinks (so output is reproducible), and
//! a [`Reader`] that also accepts the "070702" (crc) variant GNU cpio can write.

use std::io::{self, Read, Write};

/// Magic of a newc header.
pub const MAGIC: &[u8; 6] = b"070701";
/// Magic of the newc variant with a checksum field ("crc" format); read, never written.
pub const MAGIC_CRC: &[u8; 6] = b"070702";
/// Name of the member that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// Length of a newc header: the magic and 13 fields of 8 hex digits.
pub const HEADER_LEN: usize = 110;
/// Longest member name the reader accepts (the kernel's own limit is PATH_MAX).
const MAX_NAME: usize = 4096;

const S_IFMT: u32 = 0o170000;

/// The type of an archive member, as encoded in the high bits of its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link; its data is the target.
    Symlink,
    /// Character device.
    Char,
    /// Block device.
    Block,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl Kind {
    /// The `S_IFMT` bits for this kind.
    pub fn type_bits(self) -> u32 {
        match self {
            Kind::File => 0o100000,
            Kind::Dir => 0o040000,
            Kind::Symlink => 0o120000,
            Kind::Char => 0o020000,
            Kind::Block => 0o060000,
            Kind::Fifo => 0o010000,
            Kind::Socket => 0o140000,
        }
    }

    /// The kind encoded in a full mode, if it is a known one.
    pub fn from_mode(mode: u32) -> Option<Kind> {
        Some(match mode & S_IFMT {
            0o100000 => Kind::File,
            0o040000 => Kind::Dir,
            0o120000 => Kind::Symlink,
            0o020000 => Kind::Char,
            0o060000 => Kind::Block,
            0o010000 => Kind::Fifo,
            0o140000 => Kind::Socket,
            _ => return None,
        })
    }
}

/// A decoded newc header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Member name as stored (normally relative, without a leading `/`).
    pub name: String,
    /// Inode number.
    pub ino: u32,
    /// Full mode: type bits and permissions.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Length of the data that follows the header.
    pub filesize: u32,
    /// Device the member lived on (major, minor).
    pub dev: (u32, u32),
    /// Device number of a character or block device (major, minor).
    pub rdev: (u32, u32),
}

impl Header {
    /// The member's kind, if its mode has a known type.
    pub fn kind(&self) -> Option<Kind> {
        Kind::from_mode(self.mode)
    }
}

/// Errors of the newc writer and reader.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Input or output failed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// A header does not start with a newc magic.
    #[error("not a newc cpio header at offset {offset} (magic {magic:?})")]
    BadMagic {
        /// Offset of the header in the archive.
        offset: u64,
        /// The bytes found instead.
        magic: String,
    },
    /// A header or name is malformed.
    #[error("corrupt cpio header at offset {offset}: {what}")]
    Corrupt {
        /// Offset of the header in the archive.
        offset: u64,
        /// What is wrong.
        what: String,
    },
    /// A value does not fit the format (32-bit sizes and times).
    #[error("{name}: {what} does not fit in a newc header")]
    TooLarge {
        /// Member name.
        name: String,
        /// Which field.
        what: &'static str,
    },
    /// A member's data is larger than the caller is willing to hold in memory.
    #[error("cpio member {name:?} has {size} bytes of data, more than the {limit} read")]
    DataTooLarge {
        /// Member name.
        name: String,
        /// Its data size.
        size: u64,
        /// The most the caller reads.
        limit: u64,
    },
}

/// Bytes of zero padding that bring `n` to a multiple of 4.
fn pad4(n: u64) -> usize {
    ((4 - (n % 4)) % 4) as usize
}

/// Streams newc members into `W`.
///
/// Inode numbers are assigned sequentially from 1 in write order; uid, gid and the `dev` field
/// are always 0; directories have nlink 2, everything else 1.
pub struct Writer<W: Write> {
    inner: W,
    offset: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    /// A writer at the start of an archive.
    pub fn new(inner: W) -> Self {
        Writer {
            inner,
            offset: 0,
            next_ino: 1,
        }
    }

    /// Bytes written so far (the uncompressed archive size after [`Writer::finish`]).
    pub fn offset(&self) -> u64 {
        self.offset
    }

    fn write_raw(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let n = pad4(self.offset);
        self.write_raw(&[0u8; 3][..n])
    }

    /// Write one header, its name and its data, each padded to 4 bytes.
    fn write_member(&mut self, hdr: &Header, data: &[u8]) -> Result<(), Error> {
        let namesize = hdr.name.len() + 1;
        let mut buf = Vec::with_capacity(HEADER_LEN + namesize + 3);
        buf.extend_from_slice(MAGIC);
        let fields = [
            hdr.ino,
            hdr.mode,
            hdr.uid,
            hdr.gid,
            hdr.nlink,
            hdr.mtime,
            hdr.filesize,
            hdr.dev.0,
            hdr.dev.1,
            hdr.rdev.0,
            hdr.rdev.1,
            namesize as u32,
            0, // check: only meaningful in the 070702 format
        ];
        for f in fields {
            buf.extend_from_slice(format!("{f:08X}").as_bytes());
        }
        buf.extend_from_slice(hdr.name.as_bytes());
        buf.push(0);
        self.write_raw(&buf)?;
        self.pad()?;
        self.write_raw(data)?;
        self.pad()?;
        Ok(())
    }

    /// Append a member. `name` may start with `/`; it is stored relative (as GNU cpio and the
    /// kernel expect). `perm` holds the permission bits; `rdev` only matters for devices.
    pub fn append(
        &mut self,
        name: &str,
        kind: Kind,
        perm: u32,
        mtime: u64,
        rdev: (u32, u32),
        data: &[u8],
    ) -> Result<(), Error> {
        let name = name.trim_start_matches('/');
        let too_large = |what| Error::TooLarge {
            name: name.to_string(),
            what,
        };
        let mtime = u32::try_from(mtime).map_err(|_| too_large("mtime"))?;
        let filesize = u32::try_from(data.len()).map_err(|_| too_large("size"))?;
        if name.is_empty() || name.len() >= MAX_NAME || name.contains('\0') {
            return Err(Error::Corrupt {
                offset: self.offset,
                what: format!("invalid member name {name:?}"),
            });
        }
        let hdr = Header {
            name: name.to_string(),
            ino: self.next_ino,
            mode: kind.type_bits() | (perm & 0o7777),
            uid: 0,
            gid: 0,
            nlink: if kind == Kind::Dir { 2 } else { 1 },
            mtime,
            filesize,
            dev: (0, 0),
            rdev,
        };
        self.next_ino += 1;
        self.write_member(&hdr, data)
    }

    /// Give back the inner writer.
    pub fn into_inner(self) -> W {
        self.inner
    }

    /// Write the trailer that ends the archive; [`Writer::offset`] is then the archive's size.
    pub fn finish(&mut self) -> Result<(), Error> {
        let hdr = Header {
            name: TRAILER.to_string(),
            ino: 0,
            mode: 0,
            uid: 0,
            gid: 0,
            nlink: 1,
            mtime: 0,
            filesize: 0,
            dev: (0, 0),
            rdev: (0, 0),
        };
        self.write_member(&hdr, &[])
    }
}

/// Reads newc members from `R`, up to and including the trailer.
///
/// Members stream: [`Reader::next_header`] gives a header, [`Reader::data`] reads as much of
/// its data as the caller wants, and the next call skips the rest in small chunks, so an
/// archive is read in bounded memory whatever sizes its headers claim.
pub struct Reader<R: Read> {
    inner: R,
    offset: u64,
    done: bool,
    /// The member whose data is being read: its name, and how much data is left.
    current: Option<(String, u64)>,
}

fn parse_hex(field: &[u8], offset: u64) -> Result<u32, Error> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|s| u32::from_str_radix(s, 16).ok())
        .ok_or_else(|| Error::Corrupt {
            offset,
            what: format!("bad hex field {:?}", String::from_utf8_lossy(field)),
        })
}

fn truncated(name: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("cpio member {name:?} truncated"),
    )
}

impl<R: Read> Reader<R> {
    /// A reader positioned at a header (offset 0 for alignment purposes).
    pub fn new(inner: R) -> Self {
        Reader {
            inner,
            offset: 0,
            done: false,
            current: None,
        }
    }

    /// Give back the inner reader (positioned just after the trailer's padding once
    /// [`Reader::next_header`] has returned `None`).
    pub fn into_inner(self) -> R {
        self.inner
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.inner.read_exact(buf)?;
        self.offset += buf.len() as u64;
        Ok(())
    }

    fn skip_pad(&mut self) -> io::Result<()> {
        let mut pad = [0u8; 3];
        let n = pad4(self.offset);
        self.read_exact(&mut pad[..n])
    }

    /// Skip what is left of the current member's data, and its padding.
    fn finish_member(&mut self) -> io::Result<()> {
        let Some((name, left)) = self.current.take() else {
            return Ok(());
        };
        let skipped = io::copy(&mut (&mut self.inner).take(left), &mut io::sink())?;
        self.offset += skipped;
        if skipped != left {
            return Err(truncated(&name));
        }
        self.skip_pad()
    }

    /// The next member's header, after skipping what was not read of the previous member's
    /// data; `None` after the trailer.
    pub fn next_header(&mut self) -> Result<Option<Header>, Error> {
        if self.done {
            return Ok(None);
        }
        self.finish_member()?;
        let start = self.offset;
        let mut raw = [0u8; HEADER_LEN];
        self.read_exact(&mut raw)?;
        if &raw[..6] != MAGIC && &raw[..6] != MAGIC_CRC {
            return Err(Error::BadMagic {
                offset: start,
                magic: String::from_utf8_lossy(&raw[..6]).into_owned(),
            });
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            *v = parse_hex(&raw[6 + i * 8..14 + i * 8], start)?;
        }
        let namesize = f[11] as usize;
        if namesize == 0 || namesize > MAX_NAME {
            return Err(Error::Corrupt {
                offset: start,
                what: format!("name size {namesize}"),
            });
        }
        let mut name = vec![0u8; namesize];
        self.read_exact(&mut name)?;
        if name.pop() != Some(0) {
            return Err(Error::Corrupt {
                offset: start,
                what: "name is not NUL-terminated".into(),
            });
        }
        let name = String::from_utf8(name).map_err(|_| Error::Corrupt {
            offset: start,
            what: "name is not UTF-8".into(),
        })?;
        self.skip_pad()?;
        let filesize = f[6];
        self.current = Some((name.clone(), u64::from(filesize)));
        if name == TRAILER {
            self.finish_member()?;
            self.done = true;
            return Ok(None);
        }
        Ok(Some(Header {
            name,
            ino: f[0],
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            filesize,
            dev: (f[7], f[8]),
            rdev: (f[9], f[10]),
        }))
    }

    /// The data of the member [`Reader::next_header`] returned last, or what is left of it.
    /// Reading past its end gives end of file; an archive that ends before it is an error.
    pub fn data(&mut self) -> Data<'_, R> {
        Data(self)
    }

    /// The current member's data, whole, if it has at most `limit` bytes.
    pub fn read_data(&mut self, limit: u64) -> Result<Vec<u8>, Error> {
        let (name, left) = self.current.as_ref().map_or(("", 0), |(n, l)| (n, *l));
        if left > limit {
            return Err(Error::DataTooLarge {
                name: name.to_string(),
                size: left,
                limit,
            });
        }
        // Grown as data arrives: a header's claim is not reason enough to allocate.
        let mut data = Vec::new();
        self.data().read_to_end(&mut data)?;
        Ok(data)
    }

    /// The next member and all its data; `None` after the trailer. For archives this program
    /// wrote: an untrusted archive is read with [`Reader::next_header`] and [`Reader::data`].
    pub fn next_member(&mut self) -> Result<Option<(Header, Vec<u8>)>, Error> {
        let Some(hdr) = self.next_header()? else {
            return Ok(None);
        };
        let data = self.read_data(u64::from(u32::MAX))?;
        Ok(Some((hdr, data)))
    }
}

/// Reads the data of one member; see [`Reader::data`].
pub struct Data<'a, R: Read>(&'a mut Reader<R>);

impl<R: Read> Read for Data<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let r = &mut *self.0;
        let Some((name, left)) = r.current.as_mut() else {
            return Ok(0);
        };
        let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
        if want == 0 {
            return Ok(0);
        }
        let n = r.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(truncated(name));
        }
        *left -= n as u64;
        r.offset += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_alignment() {
        let mut w = Writer::new(Vec::new());
        w.append("/dev", Kind::Dir, 0o755, 7, (0, 0), &[]).unwrap();
        w.append("/dev/console", Kind::Char, 0o600, 7, (5, 1), &[])
            .unwrap();
        w.append("/a", Kind::File, 0o644, 7, (0, 0), b"hello")
            .unwrap();
        w.append("/l", Kind::Symlink, 0o777, 7, (0, 0), b"a")
            .unwrap();
        w.finish().unwrap();
        let out = w.into_inner();
        assert_eq!(out.len() % 4, 0);
        assert_eq!(&out[..6], MAGIC);
        let mut r = Reader::new(&out[..]);
        let mut got = Vec::new();
        while let Some((h, d)) = r.next_member().unwrap() {
            got.push((h.name.clone(), h.kind().unwrap(), h.ino, h.rdev, d));
        }
        assert_eq!(
            got,
            vec![
                ("dev".into(), Kind::Dir, 1, (0, 0), vec![]),
                ("dev/console".into(), Kind::Char, 2, (5, 1), vec![]),
                ("a".into(), Kind::File, 3, (0, 0), b"hello".to_vec()),
                ("l".into(), Kind::Symlink, 4, (0, 0), b"a".to_vec()),
            ]
        );
    }

    #[test]
    fn rejects_garbage_and_oversized_values() {
        let mut r = Reader::new(&b"not a cpio archive at all, certainly not 110 bytes long.........................................................."[..]);
        assert!(matches!(r.next_member(), Err(Error::BadMagic { .. })));
        let mut w = Writer::new(Vec::new());
        let e = w.append("x", Kind::File, 0o644, 1 << 33, (0, 0), &[]);
        assert!(matches!(e, Err(Error::TooLarge { what: "mtime", .. })));
    }

    #[test]
    fn streams_data_and_skips_what_is_not_read() {
        let mut w = Writer::new(Vec::new());
        w.append("a", Kind::File, 0o644, 0, (0, 0), b"hello")
            .unwrap();
        w.append("b", Kind::File, 0o644, 0, (0, 0), b"world!")
            .unwrap();
        w.finish().unwrap();
        let out = w.into_inner();
        let mut r = Reader::new(&out[..]);
        assert_eq!(r.next_header().unwrap().unwrap().name, "a");
        let mut two = [0u8; 2];
        r.data().read_exact(&mut two).unwrap();
        assert_eq!(&two, b"he");
        let b = r.next_header().unwrap().unwrap();
        assert_eq!((b.name.as_str(), b.filesize), ("b", 6));
        assert!(matches!(
            r.read_data(5),
            Err(Error::DataTooLarge {
                size: 6,
                limit: 5,
                ..
            })
        ));
        assert_eq!(r.read_data(6).unwrap(), b"world!");
        assert!(r.next_header().unwrap().is_none());
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn a_size_claim_is_not_trusted() {
        // A header claiming 4 GiB of data, followed by a few bytes.
        let mut w = Writer::new(Vec::new());
        w.append("big", Kind::File, 0o644, 0, (0, 0), b"abcd")
            .unwrap();
        let mut out = w.into_inner();
        let size = 6 + 6 * 8; // the filesize field: after the magic and six fields
        out[size..size + 8].copy_from_slice(b"FFFFFFFF");
        let mut r = Reader::new(&out[..]);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.filesize, u32::MAX);
        assert!(matches!(
            r.read_data(1 << 20),
            Err(Error::DataTooLarge { .. })
        ));
        let e = r.next_header().unwrap_err();
        assert!(e.to_string().contains("\"big\" truncated"), "{e}");
        let mut r = Reader::new(&out[..]);
        r.next_header().unwrap();
        let mut data = Vec::new();
        let e = r.data().read_to_end(&mut data).unwrap_err();
        assert_eq!(
            (e.kind(), &data[..]),
            (io::ErrorKind::UnexpectedEof, &b"abcd"[..])
        );
    }
}
