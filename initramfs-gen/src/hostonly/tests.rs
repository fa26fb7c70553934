//! `--hostonly` on fake sysfs trees: a SATA disk, and the same disk under dm-crypt.

use super::*;
use std::os::unix::fs::symlink;

const PCI: &str = "devices/pci0000:00/0000:00:1f.2";
const SCSI: &str = "ata1/host0/target0:0:0/0:0:0:0";

/// A sysfs with an AHCI controller, a SCSI disk `sda` with partition `sda2`, and a dm-crypt
/// device `dm-0` on top of `sda2`.
fn fake_sysfs(sys: &Path) {
    let pci = sys.join(PCI);
    let scsi = pci.join(SCSI);
    let sda2 = scsi.join("block/sda/sda2");
    std::fs::create_dir_all(&sda2).unwrap();
    std::fs::write(
        pci.join("modalias"),
        "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01\n",
    )
    .unwrap();
    std::fs::write(scsi.join("modalias"), "scsi:t-0x00\n").unwrap();
    std::fs::write(sda2.join("partition"), "2\n").unwrap();
    for (drv, module) in [("pci/drivers/ahci", "ahci"), ("scsi/drivers/sd", "sd_mod")] {
        let d = sys.join("bus").join(drv);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::create_dir_all(sys.join("module").join(module)).unwrap();
        symlink(sys.join("module").join(module), d.join("module")).unwrap();
    }
    symlink(sys.join("bus/pci/drivers/ahci"), pci.join("driver")).unwrap();
    symlink(sys.join("bus/scsi/drivers/sd"), scsi.join("driver")).unwrap();
    let dm = sys.join("devices/virtual/block/dm-0");
    std::fs::create_dir_all(dm.join("slaves")).unwrap();
    std::fs::create_dir_all(dm.join("dm")).unwrap();
    std::fs::write(dm.join("dm/uuid"), "CRYPT-LUKS2-0123-root\n").unwrap();
    symlink(&sda2, dm.join("slaves/sda2")).unwrap();
    std::fs::create_dir_all(sys.join("dev/block")).unwrap();
    std::fs::create_dir_all(sys.join("class/block")).unwrap();
    symlink(&sda2, sys.join("dev/block/8:2")).unwrap();
    symlink(&dm, sys.join("dev/block/253:0")).unwrap();
    symlink(&dm, sys.join("class/block/dm-0")).unwrap();
}

fn db() -> ModuleDb {
    ModuleDb::parse(
        Path::new("/fake"),
        "ahci.ko: libahci.ko\nlibahci.ko:\nsd_mod.ko:\nxfs.ko:\nvirtio_pci.ko:\n",
        "",
        "",
        "alias pci:v*d*sv*sd*bc01sc06i01* ahci\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n\
         alias scsi:t-0x00* sd_mod\nalias fs-xfs xfs\n",
    )
}

fn source(t: &Path, mountinfo: &str, root: &str) -> HostSource {
    let mi = t.join("mountinfo");
    std::fs::write(&mi, mountinfo).unwrap();
    HostSource {
        sysfs: t.join("sys"),
        mountinfo: mi,
        root_path: root.into(),
    }
}

#[test]
fn sata_disk() {
    let t = tempfile::tempdir().unwrap();
    fake_sysfs(&t.path().join("sys"));
    let src = source(
        t.path(),
        "21 1 0:20 / /proc rw - proc proc rw\n\
         25 1 8:2 / / rw,relatime shared:1 - xfs /dev/sda2 rw\n\
         30 25 0:25 / /run rw - tmpfs tmpfs rw\n",
        "/",
    );
    let host = scan(&src).unwrap();
    assert_eq!(host.fstype, "xfs");
    assert_eq!(host.devices, ["sda2"]);
    assert_eq!(host.drivers.iter().collect::<Vec<_>>(), ["ahci", "sd_mod"]);
    assert_eq!(host.modaliases.len(), 2);
    // The disk's own drivers, matched by alias (the virtio pattern must not match Intel's AHCI).
    assert_eq!(module_names(&db(), &host), ["ahci", "sd_mod", "xfs"]);
}

#[test]
fn dm_crypt_on_sata_and_errors() {
    let t = tempfile::tempdir().unwrap();
    fake_sysfs(&t.path().join("sys"));
    // The root is /srv's filesystem, a dm device named by source only (device number 0:x).
    let src = source(
        t.path(),
        "25 1 8:2 / / rw - ext4 /dev/sda2 rw\n26 25 0:40 / /srv rw - btrfs /dev/dm-0 rw\n",
        "/srv/data",
    );
    let host = scan(&src).unwrap();
    assert_eq!(host.fstype, "btrfs");
    assert_eq!(host.devices, ["dm-0", "sda2"]);
    for m in ["dm_mod", "dm_crypt", "ahci", "sd_mod"] {
        assert!(host.drivers.contains(m), "{m}: {host:?}");
    }
    // An overlay root (a container) has no block device: say so and what to do instead.
    let src = source(t.path(), "25 1 0:50 / / rw - overlay overlay rw\n", "/");
    let e = format!("{:#}", scan(&src).unwrap_err());
    assert!(e.contains("overlay") && e.contains("--generic"), "{e}");
}

#[test]
fn mountinfo_parsing() {
    let m = parse_mountinfo(
        "36 35 98:0 /mnt1 /mnt\\040two rw,noatime master:1 - ext3 /dev/root rw,errors=continue\nbad line\n",
    );
    assert_eq!(
        m,
        [MountEntry {
            mount_point: "/mnt two".into(),
            dev: (98, 0),
            fstype: "ext3".into(),
            source: "/dev/root".into()
        }]
    );
    let stacked =
        parse_mountinfo("1 0 8:1 / / rw - ext4 /dev/a rw\n2 1 8:2 / / rw - xfs /dev/b rw\n");
    assert_eq!(mount_for(&stacked, Path::new("/x")).unwrap().fstype, "xfs");
    assert!(mount_for(&stacked[..0], Path::new("/")).is_none());
}
