//! prepare-root's parsers: the kernel command line, `root=`, `ostree=` resolution, GPT and
//! superblocks, mountinfo.

use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use stratum_prepare_root::cmdline::Cmdline;
use stratum_prepare_root::confine::{resolve_deployment, resolve_in_root};
use stratum_prepare_root::params::BootParams;
use stratum_prepare_root::probe::{probe_filesystem, read_gpt, DeviceIds, FsInfo, RootSpec};
use stratum_prepare_root::{initrd, mountinfo as mi};

use super::text;

/// Keys whose lookups are exercised on every command line.
const KEYS: &[&str] = &[
    "root",
    "ro",
    "rw",
    "ostree",
    "init",
    "stratum.debug",
    "a-b",
    "a_b",
];

/// The command line parses, prints and parses back to the same thing; boot parameters and
/// every `root=` form are derived from it without panicking.
pub fn cmdline(data: &[u8]) {
    let s = text(data);
    let c = Cmdline::parse(&s);
    let printed = c.to_string();
    // By the kernel's own rules a `"` inside a key, or one that does not open a value or an
    // argument, is text: such command lines have no printed form that parses back the same.
    // Those without quotes round-trip.
    let plain = !s.contains('"');
    if plain {
        assert_eq!(Cmdline::parse(&printed), c, "{s:?} printed as {printed:?}");
    }
    for k in KEYS {
        let _ = (c.get(k), c.has(k), c.values(k), c.flag(k));
    }
    let p = BootParams::from_cmdline(&c);
    if let Some(spec) = &p.root_spec {
        names_its_device(spec);
    }
    // The input itself as a root= value, so every byte reaches the udev unescaping.
    names_its_device(&RootSpec::parse(&s));
}

/// A `root=` spec matches a device that has the identifier it names.
fn names_its_device(spec: &RootSpec) {
    let mut dev = DeviceIds::default();
    let fs = |uuid: Option<&String>, label: Option<&String>| FsInfo {
        fstype: "ext4".into(),
        uuid: uuid.cloned(),
        label: label.cloned(),
    };
    match spec {
        RootSpec::Path(p) => dev.devnode = p.clone(),
        RootSpec::Uuid(u) => dev.fs = Some(fs(Some(u), None)),
        RootSpec::Label(l) => dev.fs = Some(fs(None, Some(l))),
        RootSpec::PartUuid(u) => dev.partuuid = Some(u.clone()),
        RootSpec::PartLabel(l) => dev.partlabel = Some(l.clone()),
    }
    assert!(spec.matches(&dev), "{spec:?} does not match {dev:?}");
}

/// How far the simulated device reaches: past every offset the probes read at.
const DEVICE_LEN: u64 = 4 << 20;

/// A block device of [`DEVICE_LEN`] bytes whose content is the input repeated, so that a
/// small input reaches the btrfs superblock at 64 KiB and GPT entries at any LBA.
struct Device<'a> {
    data: &'a [u8],
    pos: u64,
}

impl Read for Device<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.data.is_empty() || self.pos >= DEVICE_LEN {
            return Ok(0);
        }
        let n = buf.len().min((DEVICE_LEN - self.pos) as usize);
        let mut done = 0;
        while done < n {
            // Copied a repetition at a time: GPT tables are read megabytes at once.
            let at = ((self.pos + done as u64) % self.data.len() as u64) as usize;
            let k = (n - done).min(self.data.len() - at);
            buf[done..done + k].copy_from_slice(&self.data[at..at + k]);
            done += k;
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for Device<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.pos = match to {
            SeekFrom::Start(o) => o,
            SeekFrom::End(d) => DEVICE_LEN.saturating_add_signed(d),
            SeekFrom::Current(d) => self.pos.saturating_add_signed(d),
        };
        Ok(self.pos)
    }
}

/// GPT and superblock probing of a device holding the input.
pub fn probe(data: &[u8]) {
    if let Ok(Some(parts)) = read_gpt(&mut Device { data, pos: 0 }) {
        assert!(parts.len() <= 4096);
        for p in &parts {
            assert_eq!(p.partuuid.len(), 36);
        }
    }
    if let Ok(Some(fs)) = probe_filesystem(&mut Device { data, pos: 0 }) {
        if let Some(u) = &fs.uuid {
            assert!(u.is_ascii(), "{u:?}");
        }
    }
}

const CSUM: &str = "5f2b3c0a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a";

/// Symlinks whose targets come from the input, relative to the sysroot.
const LINKS: &[&str] = &[
    "ostree/boot.0.0/os/b/0",
    "ostree/boot.0.0/os/b/1",
    "ostree/boot.1",
    "ostree/deploy/os/deploy/l",
];

/// A sysroot laid out as `ostree admin deploy` leaves it, with a file where a deployment
/// could be and an `etc` outside the deployments; made once per process.
fn sysroot() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let d = tempfile::Builder::new()
            .prefix("stratum-fuzz-sysroot.")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        let mk = |p: &str| std::fs::create_dir_all(d.join(p)).expect("a directory");
        mk(&format!("ostree/deploy/os/deploy/{CSUM}.0/usr"));
        mk("ostree/deploy/os/var");
        mk("ostree/boot.0.0/os/b");
        mk("etc");
        std::fs::write(d.join(format!("ostree/deploy/os/deploy/{CSUM}.1")), "x").expect("file");
        symlink("boot.0.0", d.join("ostree/boot.0")).expect("symlink");
        d
    })
}

/// `ostree=` resolution: the first line is the argument, the next lines the targets of
/// [`LINKS`]. A deployment found must be a real directory exactly at
/// `ostree/deploy/<stateroot>/deploy/<csum>.<serial>` below the sysroot, reached without a
/// symlink; anything resolved must stay below the sysroot.
pub fn ostree(data: &[u8]) {
    let root = sysroot();
    let s = text(data);
    let mut lines = s.split('\n');
    let arg = lines.next().unwrap_or_default();
    for link in LINKS {
        let p = root.join(link);
        let _ = std::fs::remove_file(&p);
        let target = lines.next().filter(|t| !t.is_empty() && !t.contains('\0'));
        if target.is_some_and(|t| symlink(t, &p).is_err()) {
            return;
        }
    }
    let real_root = root.canonicalize().expect("the sysroot exists");
    if !arg.contains('\0') {
        if let Ok(rel) = resolve_in_root(root, Path::new(arg)) {
            assert!(rel.is_relative(), "{arg:?} -> {rel:?}");
            // No component of a resolved path is a symlink, so it is where it says it is.
            if let Ok(real) = root.join(&rel).canonicalize() {
                assert_eq!(real, real_root.join(&rel), "{arg:?} -> {rel:?}");
            }
        }
    }
    if let Ok(dep) = resolve_deployment(root, arg) {
        let parts: Vec<&str> = dep.relpath.iter().filter_map(|c| c.to_str()).collect();
        assert_eq!(
            parts,
            ["ostree", "deploy", &dep.stateroot, "deploy", &dep.name],
            "{arg:?}"
        );
        assert_eq!(
            dep.name,
            format!("{}.{}", dep.checksum, dep.serial),
            "{arg:?}"
        );
        let real = root.join(&dep.relpath).canonicalize().expect("it exists");
        assert_eq!(real, real_root.join(&dep.relpath), "{arg:?}");
        assert!(real.is_dir(), "{arg:?}");
    }
}

/// How the kernel escapes a mountinfo path field (proc(5)).
fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            ' ' => out.push_str("\\040"),
            '\t' => out.push_str("\\011"),
            '\n' => out.push_str("\\012"),
            '\\' => out.push_str("\\134"),
            c => out.push(c),
        }
    }
    out
}

/// mountinfo fields unescape to what the kernel escaped; whole tables parse.
pub fn mountinfo(data: &[u8]) {
    let s = text(data);
    assert_eq!(mi::unescape(&escape(&s)), s);
    let _ = mi::unescape(&s);
    let mounts = stratum_initramfs::hostonly::parse_mountinfo(&s);
    let _ = stratum_initramfs::hostonly::mount_for(&mounts, Path::new("/"));
    let _ = initrd::mount_source(&s, Path::new("/sysroot"));
}
