#!/usr/bin/env bash
# Builds (or reuses) the Debian bookworm root that the demo and the VM tests boot.
#
# Usage: build-rootfs.sh CACHE_DIR [EXTRA_PKGS]
# EXTRA_PKGS is a comma-separated list of Debian packages added to the base set (for example
# `dracut`), giving a second, separately cached root.
# Prints the path of the finished root directory on stdout. The root is cached under
# CACHE_DIR/rootfs-<key>, where <key> digests this script, the package list and the exact
# kernel package version, so a change to any rebuilds it; a half-built root is never reused.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

cache=${1:?usage: build-rootfs.sh CACHE_DIR [EXTRA_PKGS]}
extra=${2:-}
case $extra in
    *[!a-z0-9.+,-]*) echo "build-rootfs.sh: bad package list '$extra'" >&2; exit 2 ;;
esac
suite=bookworm
mirror=${STRATUM_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# bubblewrap: Stratum runs maintainer scripts of layered packages in it (apt, dpkg, gpgv and
# util-linux, which layering needs as well, are in minbase). nano: a leaf package that the
# layering scenario takes out of the base with `stratum override remove`.
include=systemd-sysv,udev,kmod,libostree-1-1,e2fsprogs,util-linux,bubblewrap,nano${extra:+,$extra}
mkdir -p "$cache"
# One build at a time: the VM test lanes of `make test` start together on an empty cache.
exec 9>"$cache/.build-rootfs.lock"
flock 9

# Resolve the cloud kernel metapackage to the versioned kernel package it depends on.
kpkg=$(apt-cache depends linux-image-cloud-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kpkg" ] || { echo "cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
kver=${kpkg#linux-image-}
kdeb_version=$(apt-cache show "$kpkg" | awk '/^Version:/ {print $2; exit}')

key=$( { cat "$0"; echo "$suite $mirror $include $kpkg $kdeb_version"; } | sha256sum | cut -c1-16)
root="$cache/rootfs-$key"
if [ -f "$root.complete" ]; then
    echo "$root"
    exit 0
fi

debs="$cache/debs"
mkdir -p "$debs"
if ! ls "$debs/${kpkg}_"*.deb >/dev/null 2>&1; then
    echo "downloading $kpkg $kdeb_version" >&2
    (cd "$debs" && apt-get download -q "$kpkg" >&2)
fi

tmp="$root.tmp"
rm -rf "$tmp"
echo "debootstrap $suite into $tmp (about a minute)" >&2
debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" >&2

echo "unpacking kernel $kver" >&2
# --keep-directory-symlink: the root is merged-/usr, /lib must stay a symlink to usr/lib.
dpkg-deb --fsys-tarfile "$debs/${kpkg}_"*.deb | tar -x --keep-directory-symlink -C "$tmp"
chroot "$tmp" /sbin/depmod "$kver"

# No password, no network: the guest is driven through its serial console and a data disk.
echo stratum > "$tmp/etc/hostname"
sed -i 's/^root:[^:]*:/root::/' "$tmp/etc/shadow"
rm -f "$tmp/etc/machine-id" && touch "$tmp/etc/machine-id"
apt-get clean -o RootDir="$tmp" >/dev/null 2>&1 || true
rm -rf "$tmp/var/cache/apt/"*.bin "$tmp/var/lib/apt/lists/"*_Packages

rm -rf "$root" "$root.complete"
mv "$tmp" "$root"
touch "$root.complete"
echo "$root"
