//! Module loading with a recording loader on fake sysfs trees (never the real kernel).

use super::*;

#[test]
fn list_parsing_and_missing_file() {
    let l = parse_list("/lib/modules/a.ko\n\n # comment\n  /lib/modules/b.ko  \n");
    assert_eq!(l, vec!["/lib/modules/a.ko", "/lib/modules/b.ko"]);
    let d = tempfile::tempdir().unwrap();
    assert_eq!(load_modules(&d.path().join("none")), LoadReport::default());
    let list = d.path().join("modules.load");
    std::fs::write(&list, format!("{}/missing.ko\n", d.path().display())).unwrap();
    let r = load_modules(&list);
    assert!(r.loaded.is_empty());
    assert_eq!(r.warnings.len(), 1);
    assert!(r.warnings[0].contains("missing.ko"), "{:?}", r.warnings);
    assert_eq!(module_name("/x/virtio-blk.ko"), "virtio_blk");
}

const ALIAS: &str = "\
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v00008086d*sv*sd*bc01sc06i01* ahci
alias scsi:t-0x00* sd_mod
alias usb:v*p*d*dc*dsc*dp*ic08isc06ip50in* usb_storage
";
const DEP: &str = "\
kernel/virtio_ring.ko:
kernel/virtio.ko: kernel/virtio_ring.ko
kernel/virtio_pci.ko: kernel/virtio.ko kernel/virtio_ring.ko
kernel/virtio_blk.ko: kernel/virtio.ko kernel/virtio_ring.ko
kernel/sd_mod.ko:
kernel/usb_storage.ko:
";

/// Records loads; loading `virtio_pci` binds the PCI device and makes a virtio disk appear,
/// as the kernel would.
struct Fake {
    sys: PathBuf,
    loaded: Vec<String>,
    fail: &'static str,
}

impl Loader for Fake {
    fn load(&mut self, path: &str) -> Result<(), String> {
        let name = module_name(path);
        if name == self.fail {
            return Err(format!("cannot load module {path}: Invalid argument"));
        }
        if name == "virtio_pci" {
            let pci = self.sys.join("devices/pci0000:00/0000:00:04.0");
            std::fs::write(pci.join("driver"), "").unwrap();
            fake_device(
                &self.sys,
                "virtio",
                "pci0000:00/0000:00:04.0/virtio0",
                "virtio:d00000002v00001AF4",
            );
        }
        self.loaded.push(name);
        Ok(())
    }
}

/// A device at `/sys/devices/REL` with `alias`, listed in `/sys/bus/BUS/devices` as the
/// kernel lists it (a symlink to the device directory).
fn fake_device(sys: &Path, bus: &str, rel: &str, alias: &str) -> PathBuf {
    let d = sys.join("devices").join(rel);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("modalias"), format!("{alias}\n")).unwrap();
    let list = sys.join("bus").join(bus).join("devices");
    std::fs::create_dir_all(&list).unwrap();
    let name = rel.rsplit('/').next().unwrap();
    std::os::unix::fs::symlink(&d, list.join(name)).unwrap();
    d
}

fn fake(t: &Path) -> Layout {
    let sys = t.join("sys");
    fake_device(
        &sys,
        "pci",
        "pci0000:00/0000:00:04.0",
        "pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00",
    );
    // Already bound: its matching module (ahci, not in the image anyway) is not wanted.
    let ahci = fake_device(
        &sys,
        "pci",
        "pci0000:00/0000:00:1f.2",
        "pci:v00008086d00002922sv0sd0bc01sc06i01",
    );
    std::os::unix::fs::symlink("/nowhere", ahci.join("driver")).unwrap();
    // No module in the image for this one.
    fake_device(
        &sys,
        "platform",
        "platform/serial8250",
        "platform:serial8250",
    );
    // A SCSI disk whose driver (sd_mod) is already in /sys/module: nothing to do.
    fake_device(
        &sys,
        "scsi",
        "pci0000:00/0000:00:05.0/host0/0:0:0:0",
        "scsi:t-0x00",
    );
    // A bus device without a modalias, and a bus without a device list: both skipped.
    std::fs::create_dir_all(sys.join("devices/system/cpu/cpu0")).unwrap();
    let cpus = sys.join("bus/cpu/devices");
    std::fs::create_dir_all(&cpus).unwrap();
    std::os::unix::fs::symlink(sys.join("devices/system/cpu/cpu0"), cpus.join("cpu0")).unwrap();
    std::fs::create_dir_all(sys.join("bus/empty")).unwrap();
    std::fs::create_dir_all(sys.join("module/sd_mod")).unwrap();
    let moddir = t.join("usr/lib/modules/6.1");
    std::fs::create_dir_all(&moddir).unwrap();
    std::fs::write(moddir.join("modules.alias"), ALIAS).unwrap();
    std::fs::write(moddir.join("modules.dep"), DEP).unwrap();
    Layout {
        sys_bus: sys.join("bus"),
        sys_module: sys.join("module"),
        moddir,
    }
}

#[test]
fn loads_by_modalias_until_no_new_devices() {
    let t = tempfile::tempdir().unwrap();
    let layout = fake(t.path());
    let mut loader = Fake {
        sys: t.path().join("sys"),
        loaded: Vec::new(),
        fail: "",
    };
    // virtio_ring came from modules.load already.
    let mut report = LoadReport {
        loaded: vec![layout
            .moddir
            .join("kernel/virtio_ring.ko")
            .display()
            .to_string()],
        ..LoadReport::default()
    };
    load_by_modalias(&layout, &mut loader, &mut report);
    assert_eq!(loader.loaded, ["virtio", "virtio_pci", "virtio_blk"]);
    assert_eq!(report.by_modalias.len(), 3);
    assert_eq!(report.loaded.len(), 4);
    assert!(report.by_modalias[2].ends_with("kernel/virtio_blk.ko"));
    assert!(report.warnings.is_empty(), "{:?}", report.warnings);
    // Pass 1 loads virtio_pci, pass 2 finds the virtio disk, pass 3 finds nothing new.
    assert_eq!(report.modalias_passes, 3);
}

#[test]
fn failures_are_warnings_and_not_retried() {
    let t = tempfile::tempdir().unwrap();
    let layout = fake(t.path());
    let mut loader = Fake {
        sys: t.path().join("sys"),
        loaded: Vec::new(),
        fail: "virtio",
    };
    let mut report = LoadReport::default();
    load_by_modalias(&layout, &mut loader, &mut report);
    assert_eq!(loader.loaded, ["virtio_ring"]);
    assert_eq!(report.warnings.len(), 1, "{:?}", report.warnings);
    assert!(report.warnings[0].contains("virtio.ko"));
    assert_eq!(report.modalias_passes, 2);
    // An image without an alias index: nothing happens.
    let mut r = LoadReport::default();
    let none = Layout {
        moddir: t.path().join("none"),
        ..layout
    };
    load_by_modalias(&none, &mut loader, &mut r);
    assert_eq!(r, LoadReport::default());
}

#[test]
fn index_matching() {
    let idx = ModIndex::parse(ALIAS, DEP);
    assert_eq!(
        idx.matches("usb:v0781p5567d0100dc00dsc00dp00ic08isc06ip50in00"),
        ["usb_storage"]
    );
    assert!(idx
        .matches("pci:v00001234d0001sv0sd0bc00sc00i00")
        .is_empty());
}

#[test]
fn refused_signatures_are_explained_naming_the_module() {
    let p = "/usr/lib/modules/6.12/kernel/fs/x.ko";
    for e in [Errno::EKEYREJECTED, Errno::EBADMSG, Errno::ENOKEY] {
        let m = refusal(p, e, false);
        assert!(m.contains(p) && m.contains("signature"), "{m}");
    }
    let m = refusal(p, Errno::EPERM, true);
    assert!(m.contains(p) && m.contains("locked down"), "{m}");
    // Not locked down, EPERM is only what it says.
    let m = refusal(p, Errno::EPERM, false);
    assert!(!m.contains("locked down"), "{m}");
    assert!(m.contains(p), "{m}");
}
