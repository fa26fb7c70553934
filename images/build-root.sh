#!/usr/bin/env bash
# Builds (or reuses) the root of a manifest of images/, for the VM tests, the host tests
# that need a real Debian root, the benchmarks and the demo.
#
# Usage: images/build-root.sh STRATUM CACHE_DIR [NAME]
# STRATUM is the stratum program to build with; NAME the manifest images/NAME.toml (default
# vm). Prints the path of the finished root on stdout. The root is built by `stratum compose
# install` and cached as CACHE_DIR/root-NAME-<key>, where <key> digests every file of
# images/ and the kernel package the host's APT lists resolve linux-image-cloud-amd64 to, so
# a change to any builds it again; a half-built root is never used. Downloaded packages are
# kept in CACHE_DIR/debs. The manifests install Stratum from the package `make deb` builds.
set -euo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:$PATH

stratum=${1:?usage: build-root.sh STRATUM CACHE_DIR [NAME]}
cache=${2:?usage: build-root.sh STRATUM CACHE_DIR [NAME]}
name=${3:-vm}
case $name in
    *[!a-z0-9-]*) echo "build-root.sh: bad manifest name '$name'" >&2; exit 2 ;;
esac
images=$(cd "$(dirname "$0")" && pwd)
manifest=$images/$name.toml
[ -f "$manifest" ] || { echo "build-root.sh: no manifest $manifest" >&2; exit 2; }
mkdir -p "$cache"
# One build at a time: the VM test lanes of `make test` start together on an empty cache.
exec 9>"$cache/.build-root.lock"
flock 9

kernel=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
[ -n "$kernel" ] || { echo "cannot resolve linux-image-cloud-amd64 (run apt-get update)" >&2; exit 1; }
key=$( { echo "$name $kernel"; cd "$images" && find . -type f | LC_ALL=C sort | while read -r f; do
    echo "$f"; cat "$f"; done; } | sha256sum | cut -c1-16)
root=$cache/root-$name-$key
if [ -f "$root.complete" ]; then
    echo "$root"
    exit 0
fi
rm -rf "$root"
echo "building the root of images/$name.toml with $kernel (a minute or two)" >&2
"$stratum" compose install "$manifest" "$root" --cachedir "$cache/debs" >/dev/null
touch "$root.complete"
echo "$root"
