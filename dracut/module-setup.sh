#!/bin/bash
# Stratum dracut module: runs `stratum-prepare-root initrd-setup /sysroot` in a systemd
# initramfs, after sysroot.mount and before initrd-root-fs.target, so that /sysroot is the
# deployment named by ostree= when systemd switches root. See docs/dracut.md.
#
# Installed by `make install` to /usr/lib/dracut/modules.d/50stratum/.

# Only on request (`--add stratum`, or add_dracutmodules+=" stratum " in dracut.conf.d), as
# OSTree's module does: a host that merely has Stratum installed keeps its usual initramfs.
# Refused when the static binary or systemd is missing.
check() {
    require_binaries /usr/lib/stratum/stratum-prepare-root || return 1
    require_binaries "$systemdutildir"/systemd || return 1
    return 255
}

# systemd-initrd provides initrd-root-fs.target and initrd-switch-root (and needs systemd).
depends() {
    echo systemd-initrd
    return 0
}

install() {
    # A static binary: no libraries to resolve.
    inst_simple /usr/lib/stratum/stratum-prepare-root
    inst_simple "$moddir/stratum-prepare-root.service" \
        "$systemdsystemunitdir/stratum-prepare-root.service"
    # inst_simple keeps the source's mode, and systemd warns about executable unit files:
    # `make install` installs it 0644, but a module copied by hand may not.
    chmod 0644 "$initdir$systemdsystemunitdir/stratum-prepare-root.service"
    mkdir -p "$initdir$systemdsystemunitdir/initrd-root-fs.target.wants"
    ln_r "$systemdsystemunitdir/stratum-prepare-root.service" \
        "$systemdsystemunitdir/initrd-root-fs.target.wants/stratum-prepare-root.service"
}
