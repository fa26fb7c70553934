//! Writing a compressed cpio archive to its final path atomically.
//!
//! The archive goes to a temporary file in the destination's directory, which is fsynced,
//! renamed over the destination, and the directory fsynced: after a crash the destination holds
//! either the old image or the complete new one, never a torn one the kernel would half-unpack.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::newc;

/// Sizes and digest of a written archive.
#[derive(Debug, Clone)]
pub struct Written {
    /// Bytes in the output file.
    pub compressed_size: u64,
    /// Bytes of cpio before compression.
    pub uncompressed_size: u64,
    /// BLAKE3 digest (hex) of the output file.
    pub blake3: String,
}

/// Counts and hashes what passes through to the file.
struct HashWriter<W: Write> {
    inner: W,
    hasher: blake3::Hasher,
    count: u64,
}

impl<W: Write> Write for HashWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write `path` atomically with the contents `fill` writes into the temporary file.
pub fn atomic_write<T>(path: &Path, fill: impl FnOnce(&mut File) -> Result<T>) -> Result<T> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("output path {} has no file name", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let res = fill(&mut file).and_then(|v| {
        file.sync_all()
            .with_context(|| format!("syncing {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
        Ok(v)
    });
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let v = res?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing directory {}", dir.display()))?;
    Ok(v)
}

/// Write a newc archive produced by `fill` as one zstd frame (with checksum) to `path`,
/// atomically. With `threads` > 0, zstd compresses on that many worker threads; its output then
/// depends only on the input and `level`, not on the number of workers (zstd guarantees this for
/// any count ≥ 1), though it differs from the single-threaded (`threads` = 0) output.
pub fn write_zstd_cpio(
    path: &Path,
    level: i32,
    threads: u32,
    fill: impl FnOnce(&mut newc::Writer<&mut dyn Write>) -> Result<()>,
) -> Result<Written> {
    atomic_write(path, |file| {
        let sink = HashWriter {
            inner: BufWriter::new(file),
            hasher: blake3::Hasher::new(),
            count: 0,
        };
        let mut enc = zstd::Encoder::new(sink, level)
            .with_context(|| format!("starting zstd at level {level}"))?;
        if threads > 0 {
            enc.multithread(threads)
                .with_context(|| format!("starting {threads} zstd worker threads"))?;
        }
        enc.include_checksum(true)
            .context("enabling the zstd checksum")?;
        let mut w = newc::Writer::new(&mut enc as &mut dyn Write);
        fill(&mut w)?;
        w.finish().context("writing the cpio trailer")?;
        let uncompressed_size = w.offset();
        let mut sink = enc.finish().context("finishing the zstd frame")?;
        sink.flush().context("writing the image")?;
        Ok(Written {
            compressed_size: sink.count,
            uncompressed_size,
            blake3: sink.hasher.finalize().to_hex().to_string(),
        })
    })
}
