//! The `.modinfo` section of a kernel module (an ELF relocatable object): NUL-separated
//! `key=value` strings such as `firmware=`, `alias=`, `depends=`, as `modinfo(8)` shows them.
//!
//! Only the section headers are read, for 32- and 64-bit ELF of either byte order, with every
//! offset bounds-checked: a truncated or foreign file yields an error, never a panic.

use thiserror::Error;

/// Why a module's `.modinfo` could not be read.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ModinfoError {
    /// Not an ELF file.
    #[error("not an ELF file")]
    NotElf,
    /// A header or section lies outside the file.
    #[error("truncated or corrupt ELF file")]
    Truncated,
}

struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    le: bool,
}

impl<'a> Elf<'a> {
    fn bytes(&self, off: usize, len: usize) -> Result<&'a [u8], ModinfoError> {
        off.checked_add(len)
            .and_then(|end| self.data.get(off..end))
            .ok_or(ModinfoError::Truncated)
    }

    fn uint(&self, off: usize, len: usize) -> Result<u64, ModinfoError> {
        let b = self.bytes(off, len)?;
        let fold = |a: u64, x: &u8| a << 8 | u64::from(*x);
        Ok(if self.le {
            b.iter().rev().fold(0, fold)
        } else {
            b.iter().fold(0, fold)
        })
    }

    /// A word-sized field: 8 bytes in ELF64, 4 in ELF32, at the respective offsets.
    fn word(&self, off64: usize, off32: usize) -> Result<usize, ModinfoError> {
        let v = if self.is64 {
            self.uint(off64, 8)?
        } else {
            self.uint(off32, 4)?
        };
        usize::try_from(v).map_err(|_| ModinfoError::Truncated)
    }
}

/// The raw `.modinfo` section of the ELF file `data`, or `None` if it has none.
pub fn section(data: &[u8]) -> Result<Option<&[u8]>, ModinfoError> {
    if data.len() < 52 || &data[..4] != b"\x7fELF" {
        return Err(ModinfoError::NotElf);
    }
    let elf = Elf {
        data,
        is64: data[4] == 2,
        le: data[5] == 1,
    };
    let shoff = elf.word(0x28, 0x20)?;
    let (entsize, num, strndx) = if elf.is64 {
        (elf.uint(0x3a, 2)?, elf.uint(0x3c, 2)?, elf.uint(0x3e, 2)?)
    } else {
        (elf.uint(0x2e, 2)?, elf.uint(0x30, 2)?, elf.uint(0x32, 2)?)
    };
    let (entsize, num, strndx) = (entsize as usize, num as usize, strndx as usize);
    if shoff == 0 || num == 0 {
        return Ok(None);
    }
    // Section header fields: name, offset, size (64-bit offsets / 32-bit offsets).
    let header = |i: usize| -> Result<(usize, usize, usize), ModinfoError> {
        let base = shoff
            .checked_add(i.checked_mul(entsize).ok_or(ModinfoError::Truncated)?)
            .ok_or(ModinfoError::Truncated)?;
        let name = elf.uint(base, 4)? as usize;
        let off = elf.word(base + 0x18, base + 0x10)?;
        let size = elf.word(base + 0x20, base + 0x14)?;
        Ok((name, off, size))
    };
    if strndx >= num {
        return Err(ModinfoError::Truncated);
    }
    let (_, str_off, str_size) = header(strndx)?;
    let names = elf.bytes(str_off, str_size)?;
    for i in 0..num {
        let (name, off, size) = header(i)?;
        let rest = names.get(name..).ok_or(ModinfoError::Truncated)?;
        let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
        if &rest[..end] == b".modinfo" {
            return elf.bytes(off, size).map(Some);
        }
    }
    Ok(None)
}

/// The `key=value` pairs of a module's `.modinfo`, in section order.
pub fn fields(data: &[u8]) -> Result<Vec<(String, String)>, ModinfoError> {
    let Some(sec) = section(data)? else {
        return Ok(Vec::new());
    };
    Ok(sec
        .split(|b| *b == 0)
        .filter_map(|s| {
            let s = std::str::from_utf8(s).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

/// The firmware files a module declares (`MODULE_FIRMWARE`), in section order.
pub fn firmware(data: &[u8]) -> Result<Vec<String>, ModinfoError> {
    Ok(fields(data)?
        .into_iter()
        .filter(|(k, v)| k == "firmware" && !v.is_empty())
        .map(|(_, v)| v)
        .collect())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::path::Path;
    use std::process::Command;

    /// Compile a tiny object with a `.modinfo` section holding `records` (as `MODULE_INFO`
    /// does), or `None` when no C compiler is installed.
    pub(crate) fn fake_module(dir: &Path, name: &str, records: &[&str]) -> Option<Vec<u8>> {
        let src = dir.join(format!("{name}.c"));
        let mut c = String::from("int stratum_dummy(void) { return 0; }\n");
        for (i, r) in records.iter().enumerate() {
            c += &format!(
                "static const char info{i}[] __attribute__((used, section(\".modinfo\"), aligned(1))) = {r:?};\n"
            );
        }
        std::fs::write(&src, c).unwrap();
        let obj = dir.join(format!("{name}.ko"));
        match Command::new("gcc")
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status()
        {
            Ok(s) if s.success() => Some(std::fs::read(obj).unwrap()),
            _ => None,
        }
    }

    #[test]
    fn reads_modinfo_of_a_compiled_object() {
        let d = tempfile::tempdir().unwrap();
        let Some(ko) = fake_module(
            d.path(),
            "fw",
            &[
                "license=GPL",
                "firmware=acme/fw-1.bin",
                "firmware=acme/fw-2.bin",
                "alias=pci:v1d*",
            ],
        ) else {
            eprintln!("note: gcc not installed; skipping");
            return;
        };
        assert_eq!(firmware(&ko).unwrap(), ["acme/fw-1.bin", "acme/fw-2.bin"]);
        let f = fields(&ko).unwrap();
        assert!(f.contains(&("alias".into(), "pci:v1d*".into())), "{f:?}");
        let plain = fake_module(d.path(), "plain", &[]).unwrap();
        assert!(firmware(&plain).unwrap().is_empty());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert_eq!(section(b"MOD x"), Err(ModinfoError::NotElf));
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x28] = 0xff; // section headers past the end
        elf[0x3a] = 64;
        elf[0x3c] = 3;
        assert_eq!(section(&elf), Err(ModinfoError::Truncated));
        elf[0x28] = 0;
        assert_eq!(section(&elf), Ok(None));
    }
}
