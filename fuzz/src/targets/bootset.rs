//! deploy-tool's parsers: BLS entries, grubenv, origins, `stratum.toml`, kernel arguments and
//! `kargs.d`.

use std::path::PathBuf;
use std::sync::OnceLock;

use stratum::bootset::grubenv::{self, GrubEnv};
use stratum::bootset::{bls, entry};
use stratum::config::Config;
use stratum::deployment::kargsd;
use stratum::kargs::{self, Edit, Kargs};
use stratum::state::origin::Origin;
use stratum::sysroot::Sysroot;

use super::text;

/// A sysroot with one bootlink, `ostree/boot.0/os/b/0`, for entries to be followed into.
fn sysroot() -> &'static Sysroot {
    static ROOT: OnceLock<Sysroot> = OnceLock::new();
    ROOT.get_or_init(|| {
        let d: PathBuf = tempfile::Builder::new()
            .prefix("stratum-fuzz-bls.")
            .tempdir()
            .expect("a temporary directory")
            .keep();
        std::fs::create_dir_all(d.join("ostree/boot.0.0/os/b")).expect("a directory");
        std::os::unix::fs::symlink("boot.0.0", d.join("ostree/boot.0")).expect("symlink");
        let target = format!("../../../deploy/os/deploy/{}.0", "c".repeat(64));
        std::os::unix::fs::symlink(target, d.join("ostree/boot.0.0/os/b/0")).expect("symlink");
        Sysroot::new(d)
    })
}

/// An entry parses, prints and parses back to the same entry; the deployment it names is
/// read back through its bootlink.
pub fn bls(data: &[u8]) {
    let s = text(data);
    let Ok(e) = bls::Entry::parse(&s) else {
        return;
    };
    let printed = e.to_string();
    let again = bls::Entry::parse(&printed).expect("a printed entry parses");
    assert_eq!(again, e, "{s:?} printed as {printed:?}");
    let _ = e.sort_version();
    let _ = e.all("initrd").count();
    if let Some(o) = e.get("options") {
        for w in o.split_whitespace() {
            if let Some(v) = w.strip_prefix("ostree=") {
                let _ = entry::parse_bootlink(v);
            }
        }
    }
    if let Ok(d) = entry::from_entry(sysroot(), &e) {
        // What is read back can be written again, unless a check refuses it.
        let _ = entry::to_entry(&d, 0, "t", 1);
    }
}

/// A block parses like GRUB reads it; what Stratum writes of a parsed block parses back to
/// the same variables. The input is tried as a whole block and as the variables of one.
pub fn grubenv(data: &[u8]) {
    let mut block = b"# GRUB Environment Block\n".to_vec();
    block.extend_from_slice(data);
    block.resize(grubenv::SIZE, b'#');
    for b in [data, &block[..]] {
        if let Ok(env) = GrubEnv::parse(b) {
            let _ = env.get("boot_counter");
            if let Ok(bytes) = env.to_bytes() {
                assert_eq!(bytes.len(), grubenv::SIZE);
                assert_eq!(GrubEnv::parse(&bytes), Ok(env), "{b:?}");
            }
        }
    }
}

/// An origin parses, and what Stratum writes of it parses back to the same refspec and pin.
pub fn origin(data: &[u8]) {
    let s = text(data);
    let Ok(mut o) = Origin::parse(&s) else {
        return;
    };
    let _ = o.remote_and_ref();
    for pin in [o.pinned, !o.pinned] {
        o.pinned = pin;
        let t = o.to_text();
        let back = Origin::parse(&t).expect("a written origin parses");
        assert_eq!(
            (back.refspec.as_deref(), back.pinned),
            (o.refspec.as_deref(), o.pinned),
            "{s:?} written as {t:?}"
        );
    }
}

/// `stratum.toml` text applies over the defaults or is refused with an error.
pub fn config(data: &[u8]) {
    let mut c = Config::default();
    if c.apply("stratum.toml", &text(data)).is_ok() {
        assert!(c.boot_tries <= stratum::config::MAX_BOOT_TRIES);
    }
}

/// A `kargs.d` file parses; what it yields are settable arguments.
pub fn kargsd(data: &[u8]) {
    if let Ok(list) = kargsd::parse_file("f.toml", &text(data), "x86_64") {
        for a in &list {
            kargs::check_settable(a).expect("kargs.d yields settable arguments");
        }
        let _ = kargsd::apply_diff(&list, &list[..list.len() / 2], &list[list.len() / 2..]);
    }
}

/// What the writer stores of `k` reads back as `k`, both as a list and as one line.
fn reads_back(k: &Kargs, from: &str) {
    let line = k.to_string();
    let again = Kargs::parse(&line).expect("printed arguments parse");
    assert_eq!(&again, k, "{from:?} printed as {line:?}");
    let list = k.to_list();
    let again = Kargs::from_list(&list);
    assert_eq!(&again, k, "{from:?} stored as {list:?}");
}

/// Kernel arguments: the first line is a command line, each further line an edit (`d ARG`
/// delete, `r` replace, `a` append, `m` append if missing, `p` delete if present, `e` a line
/// of editor text). Every successful parse and edit gives arguments that read back the same.
pub fn kargs(data: &[u8]) {
    let s = text(data);
    let mut lines = s.split('\n');
    let first = lines.next().unwrap_or_default();
    let _ = entry::validate_karg(first);
    let _ = kargs::parse_one(first);
    let Ok(mut k) = Kargs::parse(first) else {
        return;
    };
    reads_back(&k, first);
    let mut editor = String::new();
    for line in lines {
        let (op, arg) = line.split_once(' ').unwrap_or((line, ""));
        let edit = match op {
            "d" => Edit::Delete(arg.into()),
            "r" => Edit::Replace(arg.into()),
            "a" => Edit::Append(arg.into()),
            "m" => Edit::AppendIfMissing(arg.into()),
            "p" => Edit::DeleteIfPresent(arg.into()),
            "e" => {
                editor.push_str(arg);
                editor.push('\n');
                continue;
            }
            _ => continue,
        };
        let before = k.clone();
        if k.apply(&edit).is_ok() {
            reads_back(&k, line);
            let _ = before.check_result(&k);
        } else {
            assert_eq!(k, before, "a failed edit {edit:?} changed the arguments");
        }
    }
    if let Ok(e) = kargs::parse_editor_text(&editor) {
        reads_back(&e, &editor);
    }
    if !k.is_empty() {
        let t = kargs::editor_text(&k);
        let back = kargs::parse_editor_text(&t).expect("the editor's text parses");
        assert_eq!(back, k, "{t:?}");
    }
}
