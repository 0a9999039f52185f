#!/bin/sh
# Builds the Debian packages (dbswapd, libdbswap0, libdbswap-dev) from this
# source tree and checks them with lintian.
#
#   packaging/build-deb.sh [OUTDIR]        (default OUTDIR: ./build-deb)
#
# dpkg-buildpackage wants debian/ at the top of the source tree, so the
# tree is copied (the files git knows, committed or not, else everything
# but build directories) into a temporary directory with packaging/debian
# as debian/.  The package build runs no tests (nocheck: the test suite
# starts PostgreSQL clusters) and needs no network.  The .debs, .changes
# and .buildinfo land in OUTDIR; lintian's report goes to
# OUTDIR/lintian.txt.  Exit status: 0, or 1 when the build fails or
# lintian reports an error (warnings are printed, not fatal).
#
# Environment: DEB_BUILD_PROFILES=nodoc builds without man pages (no
# scdoc); DEB_BUILD_OPTIONS is passed on, with nocheck added;
# DBSWAP_NO_LINTIAN=1 skips lintian; DEBFULLNAME and DEBEMAIL, when both
# are set, name the maintainer.
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-build-deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
tmp=$(mktemp -d "${TMPDIR:-/tmp}/dbswap-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
tree="$tmp/dbswap-${version%-*}"
mkdir "$tree"

# The source: what git tracks or would track (so new files count before
# they are committed), else a plain copy without build output.
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
	(cd "$src" && git ls-files -z --cached --others --exclude-standard |
		xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh |
		tar --null -T - -cf -) | tar -xf - -C "$tree"
else
	(cd "$src" && find . \( -name .git -o -name 'build*' -o -name '.build*' \
		-o -name __pycache__ \) -prune -o \( -type f -o -type l \) -print0 |
		tar --null -T - -cf -) | tar -xf - -C "$tree"
fi
rm -rf "$tree/debian"
cp -a "$src/packaging/debian" "$tree/debian"
rm -rf "$tree/debian/.debhelper"
# Who builds the packages answers for them: DEBFULLNAME and DEBEMAIL (as
# dch(1) reads them) become the Maintainer and the changelog's signature.
# Unset, the packages name the upstream authors.
if [ -n "${DEBFULLNAME:-}" ] && [ -n "${DEBEMAIL:-}" ]; then
	maint="$DEBFULLNAME <$DEBEMAIL>"
	case $maint in *'|'*|*'
'*) echo "build-deb: DEBFULLNAME/DEBEMAIL: no | or newline" >&2; exit 2 ;; esac
	sed -i "s|^Maintainer: .*|Maintainer: $maint|" "$tree/debian/control"
	sed -i "s|^ -- [^>]*>| -- $maint|" "$tree/debian/changelog"
	echo "build-deb: maintainer: $maint"
fi

export DEB_BUILD_OPTIONS="nocheck ${DEB_BUILD_OPTIONS:-}"
# Reproducible dates: the changelog's, not the build time.
SOURCE_DATE_EPOCH=$(dpkg-parsechangelog -l "$tree/debian/changelog" -S Timestamp)
export SOURCE_DATE_EPOCH
echo "build-deb: building dbswap $version in $tree"
start=$(date +%s)
if ! (cd "$tree" && dpkg-buildpackage -us -uc -b >"$tmp/build.log" 2>&1); then
	tail -n 60 "$tmp/build.log" >&2
	cp "$tmp/build.log" "$out/build.log"
	echo "build-deb: dpkg-buildpackage failed (log: $out/build.log)" >&2
	exit 1
fi
cp "$tmp/build.log" "$out/build.log"
echo "build-deb: built in $(($(date +%s) - start)) s"

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
changes="dbswap_${version}_${arch}.changes"
# The files the .changes lists, and the .changes itself.
files=$(sed -n '/^Files:/,/^[^ ]/s/^ [0-9a-f]\{32\} [0-9]* [^ ]* [^ ]* //p' \
	"$tmp/$changes")
for f in $changes $files; do
	cp "$tmp/$f" "$out/"
done
for f in $files; do
	case $f in *.deb) echo "build-deb: $out/$f" ;; esac
done

[ "${DBSWAP_NO_LINTIAN:-0}" = 1 ] && exit 0
if ! command -v lintian >/dev/null; then
	echo "build-deb: lintian not found: packages not checked" >&2
	exit 0
fi
# Errors fail (lintian's default --fail-on error); warnings and the info
# tags are printed, and so are the overridden tags (O:), each with its
# reason in packaging/debian/*.lintian-overrides: a clean report shows what
# it accepted, not nothing.
status=0
lintian --display-info --pedantic --show-overrides --tag-display-limit 0 \
	"$out/$changes" >"$out/lintian.txt" 2>&1 || status=$?
grep -v '^N: ' "$out/lintian.txt" | grep -v 'running with root privileges' || true
if [ "$status" -ne 0 ]; then
	echo "build-deb: lintian reports errors (status $status)" >&2
	exit 1
fi
echo "build-deb: lintian: $(grep -c '^E: ' "$out/lintian.txt" || true) error(s)," \
	"$(grep -c '^W: ' "$out/lintian.txt" || true) warning(s)," \
	"$(grep -c '^[IP]: ' "$out/lintian.txt" || true) info/pedantic," \
	"$(grep -c '^O: ' "$out/lintian.txt" || true) overridden (report: $out/lintian.txt)"
