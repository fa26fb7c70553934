//! Firmware files that modules declare, taken from the OS root's `/usr/lib/firmware`.
//!
//! The kernel's direct loader looks in `/lib/firmware/updates/<kver>`, `/lib/firmware/updates`,
//! `/lib/firmware/<kver>` and `/lib/firmware`, in that order; the same order is searched here,
//! each with the `.zst` and `.xz` variants Debian's `linux-firmware` may ship. Files are stored
//! decompressed at `/usr/lib/firmware/<name>` (the image's `/lib` points to `usr/lib`), so any
//! kernel can load them whether or not it was built with compressed-firmware support.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::rootfs;

/// Where firmware lives in the image (and in the root).
pub const FIRMWARE_DIR: &str = "/usr/lib/firmware";

/// Find firmware `name` in `root` for kernel `kver`: the host path and its decompressed data,
/// `None` when no variant exists.
pub fn find(root: &Path, kver: &str, name: &str) -> Result<Option<(PathBuf, Vec<u8>)>> {
    if name.contains("..") || name.starts_with('/') {
        return Ok(None); // a module cannot ask for files outside the firmware directory
    }
    for sub in [
        format!("updates/{kver}/"),
        "updates/".into(),
        format!("{kver}/"),
        String::new(),
    ] {
        for suffix in ["", ".zst", ".xz"] {
            let rel = format!("{FIRMWARE_DIR}/{sub}{name}{suffix}");
            let path = rootfs::resolve(root, Path::new(&rel))?;
            if !path.is_file() {
                continue;
            }
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening firmware {}", path.display()))?;
            let mut data = Vec::new();
            let res = match suffix {
                ".zst" => zstd::stream::read::Decoder::new(file)
                    .and_then(|mut d| d.read_to_end(&mut data)),
                ".xz" => xz2::read::XzDecoder::new(file).read_to_end(&mut data),
                _ => {
                    let mut file = file;
                    file.read_to_end(&mut data)
                }
            };
            res.with_context(|| format!("reading firmware {}", path.display()))?;
            return Ok(Some((path, data)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_order_and_compression() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path();
        let fw = root.join("usr/lib/firmware");
        std::fs::create_dir_all(fw.join("acme")).unwrap();
        std::fs::create_dir_all(fw.join("updates/acme")).unwrap();
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::write(fw.join("acme/a.bin"), b"plain").unwrap();
        std::fs::write(
            fw.join("updates/acme/a.bin.zst"),
            zstd::encode_all(&b"update"[..], 3).unwrap(),
        )
        .unwrap();
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
        std::io::Write::write_all(&mut xz, b"xz data").unwrap();
        std::fs::write(fw.join("acme/b.bin.xz"), xz.finish().unwrap()).unwrap();
        let got = |n: &str| find(root, "6.1", n).unwrap().map(|(_, d)| d);
        assert_eq!(got("acme/a.bin").unwrap(), b"update");
        assert_eq!(got("acme/b.bin").unwrap(), b"xz data");
        assert!(got("acme/c.bin").is_none());
        assert!(got("../../etc/shadow").is_none());
    }
}
