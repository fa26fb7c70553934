//! Fake OS roots with a small, hand-written depmod index, shared by the unit tests.

use std::path::Path;

/// Kernel version of the fake root.
pub const KVER: &str = "6.1.0-test";

const DEP: &str = "\
kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko
kernel/lib/crc16.ko:
kernel/fs/mbcache.ko:
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/block/virtio_blk.ko.zst: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/arch/x86/crypto/crc32c-intel.ko:
kernel/drivers/scsi/virtio_scsi.ko.xz: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
";
const BUILTIN: &str = "kernel/crypto/crc32c_generic.ko\nkernel/drivers/scsi/sd_mod.ko\n";
const SOFTDEP: &str = "# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crc32c post: nowhere\n";
const ALIAS: &str = "alias crc32c crc32c_intel\nalias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci\n";

/// Write a merged-/usr root (`lib -> usr/lib`) with modules, an index and an init binary.
pub fn fake_root(root: &Path) {
    let dir = root.join("usr/lib/modules").join(KVER);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::symlink("usr/lib", root.join("lib")).unwrap();
    for (name, text) in [
        ("modules.dep", DEP),
        ("modules.builtin", BUILTIN),
        ("modules.softdep", SOFTDEP),
        ("modules.alias", ALIAS),
    ] {
        std::fs::write(dir.join(name), text).unwrap();
    }
    for line in DEP.lines() {
        let path = line.split(':').next().unwrap();
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let body = format!("MOD {}", crate::modules::name_from_path(path));
        let data = if path.ends_with(".zst") {
            zstd::encode_all(body.as_bytes(), 3).unwrap()
        } else if path.ends_with(".xz") {
            let mut xz = xz2::write::XzEncoder::new(Vec::new(), 6);
            std::io::Write::write_all(&mut xz, body.as_bytes()).unwrap();
            xz.finish().unwrap()
        } else {
            body.into_bytes()
        };
        std::fs::write(file, data).unwrap();
    }
    let init = root.join("usr/lib/stratum/stratum-prepare-root");
    std::fs::create_dir_all(init.parent().unwrap()).unwrap();
    std::fs::write(init, b"#!fake init\n").unwrap();
}
