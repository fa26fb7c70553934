//! Plans of fake roots: what they hold, that the image is built from them alone, and that
//! their digest follows every input and nothing else.

use super::*;
use crate::options::apply_args;
use crate::spec::BuildOptions;
use crate::testutil::{fake_root, KVER};

fn spec_in(t: &Path) -> BuildSpec {
    let root = t.join("root");
    if !root.exists() {
        fake_root(&root);
    }
    BuildSpec::from(BuildOptions::new(&root, KVER))
}

#[test]
fn holds_what_the_image_is_made_from() {
    let t = tempfile::tempdir().unwrap();
    let spec = spec_in(t.path());
    let root = spec.options.root.clone();
    let dir = root.join("usr/lib/modules").join(KVER);
    let p = resolve(&spec).unwrap();
    assert_eq!(p.modules_dir, dir);
    assert_eq!(p.vmlinuz, None);
    assert!(p.config_files.is_empty());
    assert_eq!(p.init.path, root.join(prepare_root_path()));
    assert_eq!(p.init.data, b"#!fake init\n");
    assert!(p.index.get("modules.softdep").is_some());
    assert_eq!(p.index.get("modules.builtin.modinfo"), None);
    let names: Vec<&str> = p.modules.iter().map(|m| m.module.name.as_str()).collect();
    let resolved: Vec<&str> = p
        .resolution
        .modules
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    assert_eq!(names, resolved);
    let blk = p
        .modules
        .iter()
        .find(|m| m.module.name == "virtio_blk")
        .unwrap();
    assert_eq!(blk.module.path, "kernel/drivers/block/virtio_blk.ko.zst");
    assert_eq!(blk.data, b"MOD virtio_blk", "stored decompressed");
    assert!(!p.load_always.contains(&"virtio_pci".to_string()));
    assert!(p.load_always.contains(&"ext4".to_string()));
    assert!(p.host.is_none() && p.firmware.is_empty() && p.includes.is_empty());

    // The kernel next to the modules, else Debian's /boot/vmlinuz-<kver>.
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join(format!("boot/vmlinuz-{KVER}")), "k").unwrap();
    let boot = resolve(&spec).unwrap().vmlinuz;
    assert_eq!(boot, Some(root.join(format!("boot/vmlinuz-{KVER}"))));
    std::fs::write(dir.join("vmlinuz"), "k").unwrap();
    assert_eq!(resolve(&spec).unwrap().vmlinuz, Some(dir.join("vmlinuz")));
}

#[test]
fn includes_are_read_as_trees() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = spec_in(t.path());
    let root = spec.options.root.clone();
    std::fs::create_dir_all(root.join("etc/keys/sub")).unwrap();
    std::fs::write(root.join("etc/keys/sub/a.pem"), b"A").unwrap();
    std::os::unix::fs::symlink("sub/a.pem", root.join("etc/keys/link")).unwrap();
    spec.includes = vec!["/etc/keys:/k".parse().unwrap()];
    let p = resolve(&spec).unwrap();
    let inc = &p.includes[0];
    assert_eq!(inc.source, root.join("etc/keys"));
    let got: Vec<(&str, &TreeNode)> = inc
        .entries
        .iter()
        .map(|e| (e.path.as_str(), &e.node))
        .collect();
    assert_eq!(
        got,
        [
            ("/k", &TreeNode::Dir),
            ("/k/link", &TreeNode::Symlink("sub/a.pem".into())),
            ("/k/sub", &TreeNode::Dir),
            ("/k/sub/a.pem", &TreeNode::File(b"A".to_vec())),
        ]
    );
}

#[test]
fn image_is_built_from_the_plan_alone() {
    let t = tempfile::tempdir().unwrap();
    let spec = spec_in(t.path());
    let p = resolve(&spec).unwrap();
    // The root changes after the plan is made: the image is still the plan's.
    let init = spec.options.root.join(prepare_root_path());
    std::fs::write(&init, "changed").unwrap();
    let a = t.path().join("a.img");
    crate::image::build_plan(&p, &a).unwrap();
    std::fs::write(&init, "#!fake init\n").unwrap();
    let b = t.path().join("b.img");
    crate::image::build_spec(&spec, &b).unwrap();
    assert!(std::fs::read(a).unwrap() == std::fs::read(b).unwrap());
}

#[test]
fn digest_follows_inputs() {
    let t = tempfile::tempdir().unwrap();
    let spec = spec_in(t.path());
    let root = spec.options.root.clone();
    let dir = root.join("usr/lib/modules").join(KVER);
    let digest = |s: &BuildSpec| resolve(s).unwrap().input_digest(&[]).unwrap();
    let d0 = digest(&spec);
    assert_eq!(d0, digest(&spec), "stable");
    assert_eq!(d0.len(), 64);
    // What does not change the image does not change the digest.
    let mut same = spec.clone();
    same.jobs = 3;
    same.zstd_threads = 2;
    same.input_digest = Some("x".into());
    assert_eq!(d0, digest(&same));
    // The caller's fields count.
    let p = resolve(&spec).unwrap();
    let extra = p.input_digest(&[("arg", b"--generic")]).unwrap();
    assert_ne!(d0, extra);
    assert_ne!(extra, p.input_digest(&[("arg", b"--hostonly")]).unwrap());

    let mut changed = Vec::new();
    let mut note = |what: &str, d: String| {
        assert!(!changed.iter().any(|(_, x)| *x == d), "{what}: seen before");
        changed.push((what.to_string(), d));
    };
    note("start", d0);
    for words in [&["--no-firmware"][..], &["--generic"], &["--zstd-level=9"]] {
        let mut s = spec.clone();
        let words: Vec<String> = words.iter().map(|w| w.to_string()).collect();
        apply_args(&words, &mut s).unwrap();
        note(&words[0], digest(&s));
    }
    let mut s = spec.clone();
    s.options.source_date_epoch = 1;
    note("epoch", digest(&s));
    let mut s = spec.clone();
    s.omit_modules = vec!["nothing_needs_this".into()];
    note("omit", digest(&s));

    std::fs::write(root.join(prepare_root_path()), "init2").unwrap();
    note("init", digest(&spec));
    std::fs::create_dir_all(root.join("etc/stratum")).unwrap();
    std::fs::write(root.join("etc/stratum/initramfs.toml"), "firmware = true\n").unwrap();
    note("config", digest(&spec));
    std::fs::write(dir.join("vmlinuz"), "k1").unwrap();
    note("kernel appears", digest(&spec));
    std::fs::write(dir.join("vmlinuz"), "k2").unwrap();
    note("kernel", digest(&spec));
    std::fs::write(dir.join("kernel/fs/ext4/ext4.ko"), "MOD ext4 v2").unwrap();
    note("module", digest(&spec));
    std::fs::write(dir.join("modules.builtin.modinfo"), "").unwrap();
    note("index", digest(&spec));
    std::fs::write(root.join("etc/hostname"), "a").unwrap();
    let mut inc = spec.clone();
    inc.includes = vec!["/etc/hostname".parse().unwrap()];
    note("include", digest(&inc));
    std::fs::write(root.join("etc/hostname"), "b").unwrap();
    note("included contents", digest(&inc));
}

#[test]
fn digest_follows_firmware() {
    let t = tempfile::tempdir().unwrap();
    let mut spec = spec_in(t.path());
    let root = spec.options.root.clone();
    let dir = root.join("usr/lib/modules").join(KVER);
    let Some(ko) = crate::modinfo::tests::fake_module(t.path(), "acme", &["firmware=acme/a.bin"])
    else {
        eprintln!("note: gcc not installed; skipping");
        return;
    };
    std::fs::write(dir.join("kernel/acme.ko"), ko).unwrap();
    let dep = std::fs::read_to_string(dir.join("modules.dep")).unwrap() + "kernel/acme.ko:\n";
    std::fs::write(dir.join("modules.dep"), dep).unwrap();
    spec.add_modules = vec!["acme".into()];
    let p = resolve(&spec).unwrap();
    assert_eq!(p.firmware[0].name, "acme/a.bin");
    assert_eq!(p.firmware[0].data, None);
    let missing = p.input_digest(&[]).unwrap();
    let fw = root.join("usr/lib/firmware/acme");
    std::fs::create_dir_all(&fw).unwrap();
    std::fs::write(fw.join("a.bin"), "A").unwrap();
    let present = resolve(&spec).unwrap().input_digest(&[]).unwrap();
    assert_ne!(missing, present);
    std::fs::write(fw.join("a.bin"), "B").unwrap();
    assert_ne!(present, resolve(&spec).unwrap().input_digest(&[]).unwrap());
}
