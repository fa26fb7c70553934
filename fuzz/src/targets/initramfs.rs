//! initramfs-gen's parsers (and prepare-root's module index): newc cpio, compressed and
//! concatenated images, depmod's index files, a module's `.modinfo`.

use std::io::Read;
use std::path::Path;

use stratum_initramfs::modules::{name_from_path, ModuleDb};
use stratum_initramfs::newc::{self, Kind};
use stratum_initramfs::{inspect, modinfo};
use stratum_prepare_root::kmod::ModIndex;

use super::{parts, text};

/// Members read back whole, for the write/read round trip.
type Member = (String, Kind, u32, u32, (u32, u32), Vec<u8>);

/// The newc reader, driven the three ways callers use it (whole data, part of it, none);
/// the members of an archive it reads are written again and read back the same.
pub fn cpio(data: &[u8]) {
    let mut r = newc::Reader::new(data);
    let mut members: Vec<Member> = Vec::new();
    let mut n = 0;
    while let Ok(Some(h)) = r.next_header() {
        n += 1;
        assert!(
            n * newc::HEADER_LEN <= data.len(),
            "more headers than bytes"
        );
        match (n % 3, h.kind()) {
            (0, _) => {
                let mut buf = [0u8; 7];
                let _ = r.data().read(&mut buf);
            }
            (1, Some(kind)) => {
                if let Ok(d) = r.read_data(1 << 20) {
                    let name = h.name.trim_start_matches('/').to_string();
                    members.push((name, kind, h.mode & 0o7777, h.mtime, h.rdev, d));
                }
            }
            _ => {}
        }
    }
    let mut w = newc::Writer::new(Vec::new());
    members.retain(|(name, kind, perm, mtime, rdev, d)| {
        w.append(name, *kind, *perm, u64::from(*mtime), *rdev, d)
            .is_ok()
    });
    w.finish().expect("writing to memory");
    let out = w.into_inner();
    let mut r = newc::Reader::new(&out[..]);
    for m in &members {
        let (h, d) = r
            .next_member()
            .expect("a written archive reads")
            .expect("a member");
        let kind = h.kind().expect("a kind");
        let got = (h.name, kind, h.mode & 0o7777, h.mtime, h.rdev, d);
        assert_eq!(&got, m);
    }
    assert!(r.next_member().expect("the trailer").is_none());
}

/// A whole initramfs image, as `stratum-initramfs inspect` reads one: counts add up.
pub fn archive(data: &[u8]) {
    if let Ok(s) = inspect::summarize(&mut &data[..], data.len() as u64) {
        assert_eq!(
            s.members,
            s.archives.iter().map(|a| a.members).sum::<usize>()
        );
        assert!(s.kernel_versions.len() <= inspect::MAX_KERNEL_VERSIONS);
    }
}

/// Modaliases every module index is matched against, besides its own patterns.
const MODALIASES: &[&str] = &[
    "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
    "virtio:d00000002v00001AF4",
    "scsi:t-0x00",
    "fs-ext4",
];

/// depmod's index files (the input's NUL-separated parts: `modules.dep`, `.builtin`,
/// `.softdep`, `.alias`, `.builtin.modinfo`), or, when the input starts with `0xff`, a chain
/// of as many modules as its next 10 bits say, each needing the next. A
/// resolution lists every module once, after the modules it needs.
pub fn modules(data: &[u8]) {
    let chain;
    let p = match data {
        [0xff, hi, lo, ..] => {
            let n = usize::from(*hi & 0x03) << 8 | usize::from(*lo);
            chain = (0..n)
                .map(|i| format!("m{i}.ko: m{}.ko\n", i + 1))
                .collect::<String>()
                + &format!("m{n}.ko:\n");
            vec![chain.as_bytes(), &[], &[], &[], &[]]
        }
        _ => parts(data, 5),
    };
    let (dep, builtin, softdep, alias) = (text(p[0]), text(p[1]), text(p[2]), text(p[3]));
    let mut db = ModuleDb::parse(Path::new("/m"), &dep, &builtin, &softdep, &alias);
    db.add_builtin_modinfo(p[4]);
    let names: Vec<String> = dep
        .lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(path, _)| name_from_path(path))
        .chain(
            alias
                .lines()
                .filter_map(|l| l.split_whitespace().nth(1).map(str::to_string)),
        )
        .take(16)
        .collect();
    let (required, optional) = names.split_at(names.len() / 2);
    let omit: Vec<&String> = names.iter().skip(3).step_by(5).collect();
    if let Ok(r) = db.resolve_with(required, optional, &omit) {
        let mut seen = std::collections::BTreeSet::new();
        for line in db.dep_lines(&r) {
            let (path, deps) = line.split_once(':').expect("path: deps");
            for d in deps.split_whitespace() {
                assert!(
                    seen.contains(&name_from_path(d)),
                    "{d} after its user in {line}"
                );
            }
            assert!(seen.insert(name_from_path(path)), "{path} twice");
        }
        let _ = db.alias_lines(&r);
    }
    let patterns: Vec<String> = alias
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .map(|p| p.chars().take(256).collect())
        .take(4)
        .collect();
    let index = ModIndex::parse(&alias, &dep);
    for m in MODALIASES
        .iter()
        .copied()
        .chain(patterns.iter().map(String::as_str))
    {
        let _ = db.match_modalias(m);
        let _ = index.matches(m);
    }
    for n in &names {
        let _ = (db.has_module(n), db.is_builtin(n), db.has_device_alias(n));
    }
}

/// A module's `.modinfo`: what is found lies inside the file.
pub fn modinfo(data: &[u8]) {
    if let Ok(Some(sec)) = modinfo::section(data) {
        let range = data.as_ptr_range();
        assert!(range.contains(&sec.as_ptr()) || sec.is_empty());
        assert!(sec.as_ptr_range().end <= range.end);
    }
    let _ = modinfo::fields(data);
    let _ = modinfo::firmware(data);
}
