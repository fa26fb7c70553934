#!/bin/bash
# The Debian package against `make install`: run by `make test-deb`, after `make deb`.
#
#   tests/deb.sh TARGET_DIR/deb/stratum_VERSION_amd64.deb
#
# Checks that the package holds exactly what `make install DESTDIR=…` installs (paths, modes,
# symlink targets; everything owned by root), with the man pages compressed and /usr/share/doc/stratum added
# as Debian policy wants; that its control fields name the workspace version and the shared
# libraries the programs link; that it has no maintainer scripts (units are enabled by
# symlinks in /usr) and marks the grub.d script a conffile; that the packaged programs run;
# that apt can install it on this system; and that lintian finds no error or warning.
set -euo pipefail

deb=$(realpath "$1")
changes=${deb%.deb}.changes
cd "$(dirname "$0")/.."
umask 022
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# One line per entry: mode, path (directories end in /), and a symlink's target.
listing_of_deb() {
	dpkg-deb -c "$1" | awk '{ line = $1 " " $6; if ($7 == "->") line = line " -> " $8; print line }' | sort
}
listing_of_tree() {
	(cd "$1" && find . \( -type d -printf '%M %p/\n' \) -o \( -type l -printf '%M %p -> %l\n' \) \
		-o -printf '%M %p\n') | sort
}

# What `make install` installs, as the package must hold it: man pages gzipped, and an alias
# page (one `.so manN/PAGE` line) a symlink to its page, as Debian policy prefers.
"${MAKE:-make}" -s install DESTDIR="$work/root" >"$work/install.log" 2>&1 ||
	{ cat "$work/install.log" >&2; fail "make install"; }
{
	listing_of_tree "$work/root" | grep -vE '^-\S* \./usr/share/man/man[0-9]/'
	cd "$work/root" && for page in usr/share/man/man[0-9]/*; do
		alias_of=$(sed -n '1s|^\.so man[0-9]/\(.*\)$|\1|p' "$page")
		if [ -n "$alias_of" ] && [ "$(wc -l <"$page")" = 1 ]; then
			echo "lrwxrwxrwx ./$page.gz -> $alias_of.gz"
		else
			echo "$(stat -c %A "$page") ./$page.gz"
		fi
	done
} | sort >"$work/expected"
listing_of_deb "$deb" >"$work/package"
grep -q ' \./usr/bin/stratum$' "$work/expected" || fail "make install installed no /usr/bin/stratum"

# The package's own additions, checked apart: /usr/share/doc/stratum and the lintian
# overrides (with their parent directories).
extra='^\S+ \./usr/share/(doc|lintian)/'
grep -E "$extra" "$work/package" >"$work/extra" || fail "no /usr/share/doc/stratum"
grep -vE "$extra" "$work/package" >"$work/package-without-extra" || true
if ! diff -u "$work/expected" "$work/package-without-extra"; then
	fail "the package differs from make install (- make install, + package)"
fi
grep -qx -- '-rw-r--r-- ./usr/share/lintian/overrides/stratum' "$work/extra" ||
	fail "the lintian overrides are missing"
for f in copyright changelog.gz $(cd docs && ls *.md); do
	grep -qE "^-rw-r--r-- \./usr/share/doc/stratum/$f(\.gz)?$" "$work/extra" ||
		fail "/usr/share/doc/stratum/$f is missing"
done
echo "contents: $(wc -l <"$work/expected") entries as make install, plus $(wc -l <"$work/extra") in /usr/share/doc and lintian"

# Control fields.
version=$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
field() { dpkg-deb -f "$deb" "$1"; }
[ "$(field Package)" = stratum ] || fail "Package: $(field Package)"
[ "$(field Version)" = "$version" ] || fail "Version: $(field Version), Cargo.toml has $version"
[ "$(field Architecture)" = amd64 ] || fail "Architecture: $(field Architecture)"
[ "$(basename "$deb")" = "stratum_${version}_amd64.deb" ] || fail "file name $(basename "$deb")"
for dep in libostree-1-1 libc6; do
	field Depends | grep -qE "(^|, )$dep( |,|$)" || fail "Depends lacks $dep: $(field Depends)"
done
for rec in apt bubblewrap systemd; do
	field Recommends | grep -qE "(^|, )$rec( |,|$)" || fail "Recommends lacks $rec: $(field Recommends)"
done

# Control members: no maintainer scripts, the grub.d script a conffile.
dpkg-deb -e "$deb" "$work/control"
members=$(cd "$work/control" && ls | sort | tr '\n' ' ')
[ "$members" = "conffiles control md5sums " ] || fail "control members: $members"
[ "$(cat "$work/control/conffiles")" = /etc/grub.d/10_stratum ] ||
	fail "conffiles: $(cat "$work/control/conffiles")"

# The packaged (stripped) programs run and name the version.
dpkg-deb -x "$deb" "$work/unpacked"
for prog in usr/bin/stratum usr/bin/stratum-initramfs usr/lib/stratum/stratum-prepare-root; do
	out=$("$work/unpacked/$prog" --version)
	[ "$out" = "$(basename "$prog") $version" ] || fail "$prog --version: $out"
done
file "$work/unpacked/usr/lib/stratum/stratum-prepare-root" | grep -q 'static-pie linked' ||
	fail "stratum-prepare-root is not static"

# apt resolves its dependencies from this system's sources (a simulation: nothing installed).
apt-get install --simulate --no-install-recommends "$deb" >"$work/apt.log" 2>&1 ||
	{ cat "$work/apt.log" >&2; fail "apt-get install --simulate"; }
grep -q '^Inst stratum ' "$work/apt.log" || { cat "$work/apt.log" >&2; fail "apt would not install it"; }

# lintian: errors and warnings fail; debian/stratum.lintian-overrides gives the reasons for
# the tags that are by design.
lintian --fail-on error,warning --display-info "$changes" ||
	fail "lintian"
echo "PASS: $(basename "$deb")"
