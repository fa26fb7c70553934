//! Fuzz targets over every parser of outside input in Stratum, and the two drivers that run
//! them (see `docs/security.md`, "Fuzzing").
//!
//! A target is a function from bytes to nothing that feeds the bytes to one parser (or to a
//! few parsers of the same format) and checks what must hold for any input: it returns, it
//! does not panic, and where a format has a writer, what the writer makes of a parsed value
//! reads back as the same value. A target panics when a check fails; both drivers treat a
//! panic (or an abort) as a found bug and keep the input.
//!
//! - `make fuzz` runs each target under libFuzzer (`src/bin/stratum-fuzz.rs`), built with
//!   rustc's sanitizer-coverage instrumentation so that mutation is guided by coverage, with a
//!   memory cap and a per-input time limit (`fuzz/run.sh`).
//! - `make test` runs [`smoke`]: each target on its seeds and a fixed number of mutations of
//!   them from a fixed random seed, in a plain test build.

pub mod seeds;
pub mod smoke;
mod targets;

/// One fuzz target.
pub struct Target {
    /// The name `make fuzz` and the drivers use.
    pub name: &'static str,
    /// What it feeds, for people.
    pub about: &'static str,
    /// Runs one input; panics on a failed check.
    pub run: fn(&[u8]),
    /// The longest input worth generating (libFuzzer's `-max_len`).
    pub max_len: usize,
}

/// Every target, in the order `make fuzz` runs them.
pub const TARGETS: &[Target] = &[
    Target {
        name: "cmdline",
        about: "kernel command line (prepare-root's Cmdline, boot parameters, root= forms)",
        run: targets::boot::cmdline,
        max_len: 4096,
    },
    Target {
        name: "ostree",
        about: "ostree= resolution inside a sysroot of hostile symlinks (prepare-root's confine)",
        run: targets::boot::ostree,
        max_len: 1024,
    },
    Target {
        name: "probe",
        about: "GPT and filesystem superblock probing (prepare-root's probe)",
        run: targets::boot::probe,
        max_len: 20 << 10,
    },
    Target {
        name: "mountinfo",
        about: "mountinfo unescaping and mount tables (prepare-root, host-only scan)",
        run: targets::boot::mountinfo,
        max_len: 8192,
    },
    Target {
        name: "bls",
        about: "BLS entries and their ostree= bootlinks (bootset/bls.rs, bootset/entry.rs)",
        run: targets::bootset::bls,
        max_len: 4096,
    },
    Target {
        name: "grubenv",
        about: "GRUB environment blocks (bootset/grubenv.rs)",
        run: targets::bootset::grubenv,
        max_len: 1024,
    },
    Target {
        name: "origin",
        about: "origin key files (state/origin.rs)",
        run: targets::bootset::origin,
        max_len: 4096,
    },
    Target {
        name: "config",
        about: "stratum.toml and its drop-ins (config.rs)",
        run: targets::bootset::config,
        max_len: 4096,
    },
    Target {
        name: "kargs",
        about: "kernel argument parsing and editing (kargs.rs, entry.rs's checks)",
        run: targets::bootset::kargs,
        max_len: 4096,
    },
    Target {
        name: "kargsd",
        about: "kargs.d files (deployment/kargsd.rs)",
        run: targets::bootset::kargsd,
        max_len: 4096,
    },
    Target {
        name: "control",
        about: "Debian control paragraphs and the package names built into paths (debian/)",
        run: targets::debian::control,
        max_len: 4096,
    },
    Target {
        name: "triggers",
        about: "a package's triggers file and the trigger and member name rules (debian/names.rs)",
        run: targets::debian::triggers,
        max_len: 2048,
    },
    Target {
        name: "cpio",
        about: "newc cpio reader (initramfs-gen's newc)",
        run: targets::initramfs::cpio,
        max_len: 64 << 10,
    },
    Target {
        name: "archive",
        about: "initramfs images: concatenated, zstd/gzip/xz compressed archives (inspect)",
        run: targets::initramfs::archive,
        max_len: 64 << 10,
    },
    Target {
        name: "modules",
        about: "modules.dep, modules.alias, modules.softdep, modules.builtin(.modinfo)",
        run: targets::initramfs::modules,
        max_len: 16 << 10,
    },
    Target {
        name: "modinfo",
        about: "a kernel module's ELF .modinfo section (initramfs-gen's modinfo)",
        run: targets::initramfs::modinfo,
        max_len: 16 << 10,
    },
];

/// The target called `name`.
pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}
