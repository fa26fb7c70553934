//! GUID Partition Table reader: the header at LBA 1 and its partition entries, enough to
//! resolve `PARTUUID=` and `PARTLABEL=` without udev.

use super::read_at;
use serde::{Deserialize, Serialize};
use std::io::{self, Read, Seek};

/// One used GPT partition entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GptPartition {
    /// 1-based entry index; the kernel's partition number (`vda3` is number 3).
    pub number: u32,
    /// Unique partition GUID, lowercase text.
    pub partuuid: String,
    /// Partition name (UTF-16LE on disk).
    pub partlabel: String,
    /// Partition type GUID, lowercase text.
    pub type_guid: String,
    /// First sector (inclusive).
    pub first_lba: u64,
    /// Last sector (inclusive).
    pub last_lba: u64,
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn le64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// GPT stores GUIDs mixed-endian: the first three fields little-endian, the rest as bytes.
fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

/// The name field: up to 36 UTF-16LE code units, NUL-terminated.
fn name_text(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    String::from_utf16_lossy(&units)
}

/// Reads the partition table; `Ok(None)` if there is no GPT header (at 512 or 4096-byte
/// sectors). Unused entries (zero type GUID) are skipped. CRCs are not verified: a wrong
/// match is caught later when the filesystem does not mount.
pub fn read_gpt(r: &mut (impl Read + Seek)) -> io::Result<Option<Vec<GptPartition>>> {
    for sector in [512u64, 4096] {
        let hdr = read_at(r, sector, 92)?;
        if hdr.len() < 92 || &hdr[0..8] != b"EFI PART" {
            continue;
        }
        let entries_lba = le64(&hdr, 0x48);
        let count = le32(&hdr, 0x50);
        let entry_size = le32(&hdr, 0x54) as usize;
        if !(128..=4096).contains(&entry_size) || count > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("implausible GPT header: {count} entries of {entry_size} bytes"),
            ));
        }
        let table = read_at(
            r,
            entries_lba.saturating_mul(sector),
            count as usize * entry_size,
        )?;
        let mut parts = Vec::new();
        for (i, e) in table.chunks_exact(entry_size).enumerate() {
            if e[0..16].iter().all(|&x| x == 0) {
                continue;
            }
            parts.push(GptPartition {
                number: i as u32 + 1,
                type_guid: guid_text(&e[0..16]),
                partuuid: guid_text(&e[16..32]),
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
                partlabel: name_text(&e[56..128]),
            });
        }
        return Ok(Some(parts));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn guid_mixed_endian() {
        let b = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid_text(&b), "c12a7328-f81f-11d2-ba4b-00a0c93ec93b");
    }

    #[test]
    fn no_gpt() {
        assert_eq!(read_gpt(&mut Cursor::new(vec![0u8; 8192])).unwrap(), None);
        assert_eq!(read_gpt(&mut Cursor::new(vec![0u8; 10])).unwrap(), None);
    }
}
