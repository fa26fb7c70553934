//! The module sets of the `default` and `generic` modes.
//!
//! Names a kernel does not have (not built, or a different architecture) are skipped in these
//! sets, and names compiled into the kernel need nothing; only modules named by the admin
//! (`--add-module`, `add-modules`) must exist.

/// `default` mode: a QEMU guest with a virtio (blk or scsi) disk and an ext4 root. On Debian 12's
/// 6.1 cloud kernel ext4 (with jbd2, mbcache, crc16) and crc32c_generic are built in, while
/// virtio_pci, virtio_blk, virtio_scsi and sd_mod are modules (pulling in virtio, virtio_ring,
/// virtio_pci_{modern,legacy}_dev, scsi_mod, scsi_common). The drivers load at boot when a
/// device's modalias asks for them, the rest always.
pub const DEFAULT_MODULES: &[&str] = &[
    "virtio_pci",
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",
    "ext4",
    "crc32c_generic",
];

/// `generic` mode, device drivers: loaded at boot only when a device's modalias matches.
pub const GENERIC_DRIVERS: &[&str] = &[
    // virtio (QEMU/KVM, most clouds)
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "virtio_scsi",
    // NVMe
    "nvme",
    // AHCI/SATA and legacy IDE-mode SATA
    "ahci",
    "ata_piix",
    "ata_generic",
    // SCSI disks and common virtual/cloud HBAs
    "sd_mod",
    "sr_mod",
    "vmw_pvscsi",
    "hv_storvsc",
    "xen_blkfront",
    "mptspi",
    "megaraid_sas",
    // USB storage (host controllers, then the storage class)
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "usb_storage",
    "uas",
    // SD/MMC
    "sdhci_pci",
    "mmc_block",
];

/// `generic` mode, always loaded: filesystems and device-mapper, which no device announces.
pub const GENERIC_ALWAYS: &[&str] = &[
    "ext4",
    "xfs",
    "btrfs",
    "vfat",
    "nls_cp437",
    "nls_iso8859_1",
    "overlay",
    "erofs",
    "dm_mod",
    "crc32c_generic",
];

/// Every name of the `generic` set.
pub fn generic_modules() -> Vec<&'static str> {
    GENERIC_DRIVERS
        .iter()
        .chain(GENERIC_ALWAYS)
        .copied()
        .collect()
}
