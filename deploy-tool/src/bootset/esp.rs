//! The boot set as systemd-boot reads it: entries and boot files on a FAT partition (the
//! ESP, or an XBOOTLDR partition), where there are no symlinks to swap.
//!
//! Layout, relative to the partition's root:
//! - `loader/entries/<name>[+LEFT[-DONE]].conf`: one type #1 entry per deployment
//!   ([`super::sdboot`] for the counters);
//! - `stratum/<stateroot>-<bootcsum>/…`: the boot files the entries name.
//!
//! systemd-boot boots the entry that sorts first: every Stratum entry has the same
//! `sort-key`, so their `version` decides ([`entry_version`]). Each boot set is a new
//! generation G ([`next_generation`]); its entries are named `stratum-G-I` ([`entry_name`],
//! never reused with other contents). The default's version is `G`, which sorts before every
//! entry of earlier generations; the others' is `0.G.(N-I)`, which sorts after every default
//! and in boot-set order among themselves. The write order then keeps a bootable default at
//! every moment, so a crash anywhere leaves the old default or the new one in charge, with
//! every file it names:
//! 1. boot files the new entries need, each under a temporary name, fsynced, renamed;
//! 2. the new entries, the default last: each written under a name systemd-boot ignores,
//!    fsynced and renamed to `*.conf`; the others sort after the old default, and the new
//!    default takes over the moment it appears;
//! 3. the old entries, removed;
//! 4. boot files no entry names, removed.
//!
//! An entry whose tries are spent (`+0-DONE`) sorts last: the next, the previous default,
//! boots.
//!
//! Each step is durable (files and directories fsynced, then the filesystem synced) before
//! the next.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use super::sdboot::EntryName;
use crate::fsutil;

/// Where entries live.
pub const ENTRIES: &str = "loader/entries";
/// Where boot files live.
pub const FILES: &str = "stratum";

/// The `sort-key` of every Stratum entry: among them, `version` decides.
pub const SORT_KEY: &str = "stratum";
/// The file in a `/boot/loader.N` generation that names the ESP generation written with it.
pub const GENERATION_FILE: &str = "esp-generation";

/// The prefix of Stratum's entry names.
const PREFIX: &str = "stratum-";

/// The name of entry `index` (0: the default) of generation `gen`, on trial with `tries`
/// tries (0: not counted).
pub fn entry_name(gen: u64, index: usize, tries: u32) -> EntryName {
    EntryName::new(&format!("{PREFIX}{gen}-{index}"), tries)
}

/// The `version` of entry `index` of `count` in generation `gen` (see the module
/// documentation).
pub fn entry_version(gen: u64, index: usize, count: usize) -> String {
    if index == 0 {
        gen.to_string()
    } else {
        format!("0.{gen}.{}", count - index)
    }
}

/// The generation after every one on the partition (1 on an empty one).
pub fn next_generation(esp: &Path) -> Result<u64> {
    Ok(present_entries(esp)?
        .iter()
        .filter_map(generation_index)
        .map(|(gen, _)| gen)
        .max()
        .map_or(1, |g| g + 1))
}

/// Where the boot file at `boot_path` (relative to `/boot`, as an entry names it:
/// `/ostree/DIR/FILE`) goes on the ESP: `stratum/DIR/FILE`.
pub fn file_path(boot_path: &str) -> Result<String> {
    let rest = boot_path
        .strip_prefix("/ostree/")
        .with_context(|| format!("boot file {boot_path:?} is not under /ostree"))?;
    let path = format!("{FILES}/{rest}");
    check_file_path(&path)?;
    Ok(path)
}

/// Where Debian's `systemd-boot-efi` puts systemd-boot, relative to a root.
pub const SYSTEMD_BOOT_EFI: &str = "usr/lib/systemd/boot/efi/systemd-bootx64.efi";

/// `loader/loader.conf`: no menu unless a key is held, no entries but Stratum's and the
/// firmware's own boot options; the default is the entry that sorts first.
const LOADER_CONF: &str = "timeout 0\neditor no\nauto-entries no\nauto-firmware no\n";

/// Puts systemd-boot on the ESP with its `loader.conf`. When the image (`root`, the
/// deployment) ships shim and Debian's signed systemd-boot, those form the signed chain
/// ([`super::efichain`]): shim as the removable-media loader `EFI/BOOT/BOOTX64.EFI` (found
/// without an EFI boot variable), systemd-boot beside it as its second stage. Otherwise
/// systemd-boot itself is the removable-media loader (and at its own path), from the image
/// when it ships one, else from the running system; it then boots only with Secure Boot off.
pub fn install_loader(esp: &Path, root: &Path) -> Result<()> {
    use super::efichain::{self, SecondStage};
    if efichain::missing_packages(root, SecondStage::SystemdBoot).is_empty() {
        efichain::copy_signed(esp, root, SecondStage::SystemdBoot)?;
        return write_loader_conf(esp);
    }
    let source = [
        root.join(SYSTEMD_BOOT_EFI),
        Path::new("/").join(SYSTEMD_BOOT_EFI),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .with_context(|| {
        format!(
            "systemd-boot is missing: neither the image nor this system has /{SYSTEMD_BOOT_EFI} \
                 (Debian: apt-get install systemd-boot-efi)"
        )
    })?;
    for dest in ["EFI/BOOT/BOOTX64.EFI", "EFI/systemd/systemd-bootx64.efi"] {
        efichain::copy_into(&source, &esp.join(dest))?;
    }
    write_loader_conf(esp)
}

fn write_loader_conf(esp: &Path) -> Result<()> {
    let loader = esp.join("loader");
    std::fs::create_dir_all(&loader).with_context(|| format!("creating {}", loader.display()))?;
    fsutil::atomic_write(&loader.join("loader.conf"), LOADER_CONF.as_bytes(), 0o644)
}

/// One entry of a boot set.
#[derive(Debug, Clone)]
pub struct Entry {
    pub name: EntryName,
    /// The entry file's text.
    pub text: String,
}

/// A boot file to put on the partition.
#[derive(Debug, Clone)]
pub struct BootFile {
    /// Relative to the partition's root, under [`FILES`].
    pub path: String,
    /// Where its contents are now.
    pub source: PathBuf,
}

/// A boot set: entries (default first) and the boot files they name.
#[derive(Debug, Clone, Default)]
pub struct BootSet {
    pub entries: Vec<Entry>,
    pub files: Vec<BootFile>,
}

/// One change of the partition, in the order [`plan`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Copy a boot file (`source` to `path`).
    AddFile { path: String, source: PathBuf },
    /// Write an entry file.
    AddEntry { file: String, text: String },
    /// Remove an entry file.
    RemoveEntry { file: String },
    /// Remove a boot file directory under [`FILES`].
    RemoveFiles { dir: String },
}

/// The steps that turn what `esp` holds into `set`: nothing for what is already there (an
/// entry of the same name, whatever its counter now says: it keeps its tries).
pub fn plan(esp: &Path, set: &BootSet) -> Result<Vec<Step>> {
    for f in &set.files {
        check_file_path(&f.path)?;
    }
    let present = present_entries(esp)?;
    let wanted: BTreeSet<&str> = set.entries.iter().map(|e| e.name.name.as_str()).collect();
    if wanted.len() != set.entries.len() {
        bail!("two entries of the new boot set have the same name");
    }
    let mut steps = Vec::new();
    for f in &set.files {
        // Present with the source's size: paths are named by content, so the same path holds
        // the same bytes, unless a cut left a renamed file empty (see [`bless`]).
        if !same_size(&esp.join(&f.path), &f.source) {
            steps.push(Step::AddFile {
                path: f.path.clone(),
                source: f.source.clone(),
            });
        }
    }
    let have: BTreeSet<&str> = present.iter().map(|e| e.name.as_str()).collect();
    // The default last, so that it appears when the rest of its boot set is there.
    for e in set.entries.iter().rev() {
        if !have.contains(e.name.name.as_str()) {
            steps.push(Step::AddEntry {
                file: e.name.to_string(),
                text: e.text.clone(),
            });
        }
    }
    // Only Stratum's own: an entry an administrator added stays.
    for e in present.iter().filter(|e| generation_index(e).is_some()) {
        if !wanted.contains(e.name.as_str()) {
            steps.push(Step::RemoveEntry {
                file: e.to_string(),
            });
        }
    }
    // What a write cut short left under its temporary name (never read by systemd-boot).
    for (file, _) in fsutil::dir_entries(&esp.join(ENTRIES))? {
        if file.starts_with('.') && file.ends_with(".tmp") {
            steps.push(Step::RemoveEntry { file });
        }
    }
    let used: BTreeSet<&str> = set.files.iter().filter_map(|f| file_dir(&f.path)).collect();
    for (dir, _) in fsutil::dir_entries(&esp.join(FILES))? {
        if !used.contains(dir.as_str()) {
            steps.push(Step::RemoveFiles { dir });
        }
    }
    Ok(steps)
}

/// `steps` (as [`plan`] orders them) split into what adds to the partition (boot files,
/// then entries: the new default last) and what removes the old boot set.
pub fn split_additions(steps: Vec<Step>) -> (Vec<Step>, Vec<Step>) {
    steps
        .into_iter()
        .partition(|s| matches!(s, Step::AddFile { .. } | Step::AddEntry { .. }))
}

impl Step {
    /// The failpoint after the last step of this kind (crash tests).
    fn failpoint(&self) -> &'static str {
        match self {
            Step::AddFile { .. } => "esp::after-files",
            Step::AddEntry { .. } => "esp::after-entries",
            Step::RemoveEntry { .. } => "esp::after-old-entries",
            Step::RemoveFiles { .. } => "esp::after-old-files",
        }
    }
}

/// Carries out `steps` on `esp` (in [`plan`]'s order), each kind of step made durable
/// before the next kind; a failpoint follows each kind ([`Step::failpoint`]).
pub fn apply(esp: &Path, steps: &[Step]) -> Result<()> {
    for (i, step) in steps.iter().enumerate() {
        apply_one(esp, step)?;
        let last_of_kind = steps
            .get(i + 1)
            .is_none_or(|next| std::mem::discriminant(next) != std::mem::discriminant(step));
        if last_of_kind {
            super::durability::syncfs(esp)?;
            crate::failpoint(step.failpoint())?;
        }
    }
    Ok(())
}

fn apply_one(esp: &Path, step: &Step) -> Result<()> {
    match step {
        Step::AddFile { path, source } => {
            let dst = esp.join(path);
            let dir = dst.parent().expect("under FILES");
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            fsutil::copy_file_durable(source, &dst)?;
            fsutil::fsync_dir(dir)
        }
        Step::AddEntry { file, text } => {
            let dir = esp.join(ENTRIES);
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            // FAT keeps no modes; 0644 where it does.
            fsutil::atomic_write(&dir.join(file), text.as_bytes(), 0o644)
        }
        Step::RemoveEntry { file } => {
            let dir = esp.join(ENTRIES);
            fsutil::remove_any(&dir.join(file))?;
            fsutil::fsync_dir(&dir)
        }
        Step::RemoveFiles { dir } => {
            let files = esp.join(FILES);
            fsutil::remove_any(&files.join(dir))?;
            fsutil::fsync_dir(&files)
        }
    }
}

/// The entries on the partition (files that parse as entry names).
pub fn present_entries(esp: &Path) -> Result<Vec<EntryName>> {
    let mut out: Vec<EntryName> = fsutil::dir_entries(&esp.join(ENTRIES))?
        .iter()
        .filter_map(|(file, _)| EntryName::parse(file))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// The generation and index of one of Stratum's entries (`stratum-G-I`).
fn generation_index(e: &EntryName) -> Option<(u64, usize)> {
    let (gen, index) = e.name.strip_prefix(PREFIX)?.split_once('-')?;
    Some((gen.parse().ok()?, index.parse().ok()?))
}

/// The default entry of the newest generation on the partition (what systemd-boot boots
/// unless its tries are spent), whatever its counter says.
pub fn default_entry(esp: &Path) -> Result<Option<EntryName>> {
    Ok(present_entries(esp)?
        .into_iter()
        .filter_map(|e| generation_index(&e).map(|gi| (gi, e)))
        .filter(|((_, index), _)| *index == 0)
        .max_by_key(|((gen, _), _)| *gen)
        .map(|(_, e)| e))
}

/// The generation of one of Stratum's entries.
pub fn generation_of(e: &EntryName) -> Option<u64> {
    generation_index(e).map(|(gen, _)| gen)
}

/// What a write of generation `gen` that a crash cut short left behind: Stratum's entries
/// of other generations, entries under a temporary name, and boot-file directories no entry
/// of `gen` names. Nothing while `gen`'s default is not on the partition.
pub fn leftovers(esp: &Path, gen: u64) -> Result<Vec<Step>> {
    let present = present_entries(esp)?;
    if !present
        .iter()
        .any(|e| generation_index(e) == Some((gen, 0)))
    {
        return Ok(Vec::new());
    }
    let mut used = BTreeSet::new();
    let mut steps = Vec::new();
    for e in &present {
        // A blessing cut short: the counted file and the blessed copy. The copy stays when it
        // is complete, else the counted file does.
        if e.counter.is_some()
            && present
                .iter()
                .any(|b| b.counter.is_none() && b.name == e.name)
        {
            let copy_complete = !read_entry(esp, &e.blessed())?.trim().is_empty();
            let remove = if copy_complete {
                e.clone()
            } else {
                e.blessed()
            };
            steps.push(Step::RemoveEntry {
                file: remove.to_string(),
            });
            if copy_complete {
                continue;
            }
        }
        match generation_of(e) {
            Some(g) if g == gen => {
                for line in read_entry(esp, e)?.lines() {
                    let path = line
                        .strip_prefix("linux ")
                        .or_else(|| line.strip_prefix("initrd "));
                    if let Some(d) = path.and_then(|p| file_dir(p.trim().trim_start_matches('/'))) {
                        used.insert(d.to_string());
                    }
                }
            }
            Some(_) => steps.push(Step::RemoveEntry {
                file: e.to_string(),
            }),
            None => {}
        }
    }
    for (file, _) in fsutil::dir_entries(&esp.join(ENTRIES))? {
        if file.starts_with('.') && file.ends_with(".tmp") {
            steps.push(Step::RemoveEntry { file });
        }
    }
    for (dir, _) in fsutil::dir_entries(&esp.join(FILES))? {
        if !used.contains(&dir) {
            steps.push(Step::RemoveFiles { dir });
        }
    }
    Ok(steps)
}

/// The text of the entry `e`.
pub fn read_entry(esp: &Path, e: &EntryName) -> Result<String> {
    let path = esp.join(ENTRIES).join(e.to_string());
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Blesses the entry `e`: the same text under the name without the counter, as
/// `systemd-bless-boot` does, then the counted file removed; the partition synced after each.
///
/// Not a rename: on FAT (Linux's vfat) a rename writes the new directory entry with size 0
/// and no first cluster, and fills them in only when the file's inode is written back; a
/// power cut in between leaves an empty entry, which systemd-boot skips, and the previous
/// deployment boots. Written as a new file first, a cut leaves two complete entries for the
/// same deployment (or an empty blessed one beside the counted one), which [`leftovers`]
/// resolves.
pub fn bless(esp: &Path, e: &EntryName) -> Result<()> {
    if e.counter.is_none() {
        return Ok(());
    }
    let dir = esp.join(ENTRIES);
    let text = read_entry(esp, e)?;
    fsutil::atomic_write(&dir.join(e.blessed().to_string()), text.as_bytes(), 0o644)?;
    super::durability::syncfs(esp)?;
    crate::failpoint("esp::after-blessed-entry")?;
    fsutil::remove_any(&dir.join(e.to_string()))?;
    fsutil::fsync_dir(&dir)?;
    super::durability::syncfs(esp)
}

/// Whether `a` is a file of `b`'s size.
fn same_size(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.is_file() && a.len() == b.len(),
        _ => false,
    }
}

/// `stratum/DIR/FILE` → `DIR`.
fn file_dir(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(FILES)?.strip_prefix('/')?;
    rest.split_once('/').map(|(d, _)| d)
}

/// Boot files go to `stratum/DIR/FILE`, nothing else: no `..`, no deeper paths.
fn check_file_path(path: &str) -> Result<()> {
    let ok = file_dir(path).is_some_and(|d| !d.is_empty() && d != "." && d != "..")
        && path
            .rsplit('/')
            .next()
            .is_some_and(|f| !f.is_empty() && f != "." && f != "..")
        && path.matches('/').count() == 2;
    if !ok {
        bail!("boot file path {path:?} is not {FILES}/DIR/FILE");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// systemd-boot's version order for Stratum's versions (dot-separated numbers).
    fn version_key(text: &str) -> Vec<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix("version "))
            .unwrap()
            .split('.')
            .map(|p| p.parse().unwrap())
            .collect()
    }

    /// What systemd-boot would boot: of the entries present, the first in its order (bad
    /// ones last; then by `version`, highest first, every entry having the same `sort-key`),
    /// as its title, and whether every file it names is there.
    fn default_boots(esp: &Path) -> Option<(String, bool)> {
        let mut entries: Vec<(bool, Vec<u64>, String)> = present_entries(esp)
            .unwrap()
            .into_iter()
            .map(|n| {
                let text = std::fs::read_to_string(esp.join(ENTRIES).join(n.to_string())).unwrap();
                (n.is_bad(), version_key(&text), text)
            })
            .collect();
        entries.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        let (_, _, text) = entries.into_iter().next()?;
        let title = text.lines().find_map(|l| l.strip_prefix("title ")).unwrap();
        let whole = text
            .lines()
            .filter_map(|l| {
                l.strip_prefix("linux ")
                    .or_else(|| l.strip_prefix("initrd "))
            })
            .all(|p| esp.join(p.trim_start_matches('/')).is_file());
        Some((title.to_string(), whole))
    }

    /// The next boot set on `esp`: `deployments` (default first), each with its own kernel
    /// directory, the default on trial.
    fn set(esp: &Path, src: &Path, deployments: &[&str]) -> BootSet {
        let gen = next_generation(esp).unwrap();
        let mut s = BootSet::default();
        let n = deployments.len();
        for (i, d) in deployments.iter().enumerate() {
            let kernel = src.join(format!("vmlinuz-{d}"));
            std::fs::write(&kernel, format!("kernel {d}")).unwrap();
            let path = format!("{FILES}/default-{d}/vmlinuz");
            s.files.push(BootFile {
                path: path.clone(),
                source: kernel,
            });
            s.entries.push(Entry {
                name: entry_name(gen, i, if i == 0 { 3 } else { 0 }),
                text: format!(
                    "title {d}\nsort-key stratum\nversion {}\nlinux /{path}\n",
                    entry_version(gen, i, n)
                ),
            });
        }
        s
    }

    /// Blessing writes the blessed copy, then removes the counted file; a cut in between
    /// (two files), or one that left the copy empty (FAT's rename), is resolved by
    /// [`leftovers`] without losing the complete entry.
    #[test]
    fn blessing_and_its_leftovers() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let esp = d.path().join("esp");
        let s = set(&esp, &src, &["a"]);
        apply(&esp, &plan(&esp, &s).unwrap()).unwrap();
        let counted = s.entries[0].name.clone();
        let text = read_entry(&esp, &counted).unwrap();
        bless(&esp, &counted).unwrap();
        assert_eq!(present_entries(&esp).unwrap(), vec![counted.blessed()]);
        assert_eq!(read_entry(&esp, &counted.blessed()).unwrap(), text);
        assert!(leftovers(&esp, 1).unwrap().is_empty());

        let dir = esp.join(ENTRIES);
        for (copy, keeps) in [(text.as_str(), counted.blessed()), ("", counted.clone())] {
            std::fs::write(dir.join(counted.to_string()), &text).unwrap();
            std::fs::write(dir.join(counted.blessed().to_string()), copy).unwrap();
            apply(&esp, &leftovers(&esp, 1).unwrap()).unwrap();
            assert_eq!(
                present_entries(&esp).unwrap(),
                vec![keeps.clone()],
                "copy {copy:?}"
            );
            assert_eq!(read_entry(&esp, &keeps).unwrap(), text);
            std::fs::remove_file(dir.join(keeps.to_string())).unwrap();
            std::fs::write(dir.join(counted.blessed().to_string()), &text).unwrap();
        }
        // A boot file left empty under its name is copied again.
        let file = esp.join(&s.files[0].path);
        std::fs::write(&file, "").unwrap();
        let steps = plan(&esp, &s).unwrap();
        assert!(
            steps
                .iter()
                .any(|st| matches!(st, Step::AddFile { path, .. } if *path == s.files[0].path)),
            "{steps:?}"
        );
    }

    /// Every prefix of the steps from one boot set to the next leaves a default whose files
    /// are all there: the old default until the new one appears, then the new one; never
    /// another deployment of either set.
    #[test]
    fn every_crash_point_boots_old_or_new() {
        let d = tempfile::tempdir().unwrap();
        let src = d.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        let sets: [&[&str]; 5] = [&["a"], &["b", "a"], &["c", "a", "b"], &["a", "c"], &["d"]];
        // Each set written whole after the one before, from an empty partition.
        let build = |esp: &Path, upto: usize| {
            for s in &sets[..upto] {
                let s = set(esp, &src, s);
                apply(esp, &plan(esp, &s).unwrap()).unwrap();
            }
        };
        for k in 1..sets.len() {
            let (old, new) = (sets[k - 1][0], sets[k][0]);
            let probe = d.path().join(format!("probe-{k}"));
            build(&probe, k);
            let next = set(&probe, &src, sets[k]);
            let steps = plan(&probe, &next).unwrap();
            let new_default = next.entries[0].name.to_string();
            for cut in 0..=steps.len() {
                let esp = d.path().join(format!("esp-{k}-{cut}"));
                build(&esp, k);
                apply(&esp, &steps[..cut]).unwrap();
                let (title, whole) = default_boots(&esp).expect("an entry");
                assert!(whole, "set {k}, after {cut} steps: {title} misses files");
                let appeared = steps[..cut]
                    .iter()
                    .any(|s| matches!(s, Step::AddEntry { file, .. } if *file == new_default));
                let expected = if appeared { new } else { old };
                assert_eq!(title, expected, "set {k}, after {cut} of {steps:?}");
            }
            let done = d.path().join(format!("esp-{k}-{}", steps.len()));
            assert!(plan(&done, &next).unwrap().is_empty());
            assert_eq!(present_entries(&done).unwrap().len(), sets[k].len());
        }
    }

    #[test]
    fn entries_keep_their_tries_and_bad_ones_fall_back() {
        let d = tempfile::tempdir().unwrap();
        let (src, esp) = (d.path().join("src"), d.path().join("esp"));
        std::fs::create_dir_all(&src).unwrap();
        let s = set(&esp, &src, &["b", "a"]);
        apply(&esp, &plan(&esp, &s).unwrap()).unwrap();
        assert_eq!(default_boots(&esp).unwrap().0, "b");
        // systemd-boot counted every try down to +0: the entry is bad and the previous
        // deployment boots.
        let entries = esp.join(ENTRIES);
        std::fs::rename(
            entries.join("stratum-1-0+3.conf"),
            entries.join("stratum-1-0+0-3.conf"),
        )
        .unwrap();
        assert_eq!(default_boots(&esp).unwrap().0, "a");
        assert_eq!(next_generation(&esp).unwrap(), 2);
        // The same set written again changes nothing: the counter stays as systemd-boot left it.
        assert_eq!(plan(&esp, &s).unwrap(), vec![]);
    }

    #[test]
    fn leftovers_of_a_cut_write_go() {
        let d = tempfile::tempdir().unwrap();
        let (src, esp) = (d.path().join("src"), d.path().join("esp"));
        std::fs::create_dir_all(&src).unwrap();
        let s = set(&esp, &src, &["a"]);
        apply(&esp, &plan(&esp, &s).unwrap()).unwrap();
        let stray = esp.join(ENTRIES).join(".stratum-9-0+3.conf.tmp");
        std::fs::write(&stray, "title half\n").unwrap();
        let steps = plan(&esp, &s).unwrap();
        assert_eq!(
            steps,
            vec![Step::RemoveEntry {
                file: ".stratum-9-0+3.conf.tmp".into()
            }]
        );
        apply(&esp, &steps).unwrap();
        assert!(!stray.exists());
    }

    #[test]
    fn bad_boot_file_paths_are_refused() {
        let d = tempfile::tempdir().unwrap();
        for bad in [
            "stratum/x",
            "stratum/../x/y",
            "other/x/y",
            "stratum/a/b/c",
            "stratum//x",
        ] {
            let s = BootSet {
                entries: vec![],
                files: vec![BootFile {
                    path: bad.to_string(),
                    source: PathBuf::from("/dev/null"),
                }],
            };
            assert!(plan(d.path(), &s).is_err(), "{bad}");
        }
    }
}
