#!/bin/sh
# Builds the Debian packages with build-deb.sh (which fails on a lintian
# error) and checks what they hold, without installing them: dpkg-deb
# lists and unpacks each into a temporary directory.
#
#   check-deb.sh SOURCE-DIR BUILD-DIR
#
# BUILD-DIR is a configured meson build of the same tree: the man pages it
# installs are the ones the packages must ship.  Exit 77 (skip) when
# dpkg-buildpackage or a build dependency is missing.
set -u
src=$1 builddir=$2

for tool in dpkg-buildpackage dpkg-deb dpkg-architecture fakeroot; do
	if ! command -v "$tool" >/dev/null; then
		echo "check-deb: $tool not found: skipped"
		exit 77
	fi
done
if ! (cd "$src/packaging" && dpkg-checkbuilddeps debian/control) 2>/dev/null; then
	(cd "$src/packaging" && dpkg-checkbuilddeps debian/control)
	echo "check-deb: build dependencies missing: skipped"
	exit 77
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/dbswap-check-deb.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
out="$tmp/out"
failures=0
fail() {
	echo "FAIL: $*" >&2
	failures=$((failures + 1))
}

start=$(date +%s)
if ! "$src/packaging/build-deb.sh" "$out"; then
	echo "check-deb: build-deb.sh failed" >&2
	exit 1
fi
echo "check-deb: built and linted in $(($(date +%s) - start)) s"

version=$(dpkg-parsechangelog -l "$src/packaging/debian/changelog" -S Version)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)

# The man pages the meson build installs, as SECTION/NAME (man8/dbswapd.8).
man_pages=$("${MESON:-meson}" introspect --installed "$builddir" 2>/dev/null |
	grep -o '/man/man[0-9][^/"]*/[^"]*' | sed 's|^/man/||')

# has PACKAGE PATH [TYPE]: PATH is in PACKAGE's data; TYPE f, l or d.
has() {
	line=$(grep -E "^.{10} [^ ]+ +[0-9]+ [0-9-]+ [0-9:]+ \\.$2( -> .*)?\$" \
		"$tmp/$1.list")
	if [ -z "$line" ]; then
		fail "$1: no $2"
		return
	fi
	case ${3:-f}:$line in
	f:-* | l:l* | d:d*) ;;
	*) fail "$1: $2 is not of type ${3:-f}: $line" ;;
	esac
}

for pkg in dbswapd libdbswap0 libdbswap-dev; do
	deb="$out/${pkg}_${version}_${arch}.deb"
	if [ ! -f "$deb" ]; then
		fail "no $deb"
		continue
	fi
	dpkg-deb -c "$deb" >"$tmp/$pkg.list"
	mkdir "$tmp/$pkg"
	dpkg-deb -x "$deb" "$tmp/$pkg/root"
	dpkg-deb -e "$deb" "$tmp/$pkg/DEBIAN"
	echo "== $pkg: $(grep -c '' "$tmp/$pkg.list") entries"
	awk '{ print "   " $1, $6, $7, $8 }' "$tmp/$pkg.list" |
		grep -v '/$'
done
[ "$failures" -eq 0 ] || exit 1

# dbswapd: the agent, the CLI, the units, the user, the directory, the
# defaults file; its maintainer scripts make the user and enable the
# socket, and never start the service itself.
has dbswapd /usr/sbin/dbswapd
has dbswapd /usr/bin/dbswapctl
has dbswapd /lib/systemd/system/dbswapd.service
has dbswapd /lib/systemd/system/dbswapd.socket
has dbswapd /usr/lib/sysusers.d/dbswap.conf
has dbswapd /usr/lib/tmpfiles.d/dbswap.conf
has dbswapd /etc/default/dbswapd
has dbswapd /lib/systemd/system/dbswap-rotate@.service
has dbswapd /lib/systemd/system/dbswap-rotate@.timer
has dbswapd /usr/share/bash-completion/completions/dbswapctl
grep -qx /etc/default/dbswapd "$tmp/dbswapd/DEBIAN/conffiles" ||
	fail "dbswapd: /etc/default/dbswapd is not a conffile"
grep -Eq '^-rw------- root/root .* \./etc/default/dbswapd$' "$tmp/dbswapd.list" ||
	fail "dbswapd: /etc/default/dbswapd is not 0600 root: $(grep ' ./etc/default/dbswapd$' "$tmp/dbswapd.list")"
unit="$tmp/dbswapd/root/lib/systemd/system/dbswapd.service"
grep -q '^ExecStart=/usr/sbin/dbswapd --env /etc/dbswap/dbswap.env ' "$unit" ||
	fail "dbswapd.service: ExecStart is $(grep '^ExecStart=' "$unit")"
postinst="$tmp/dbswapd/DEBIAN/postinst"
grep -q 'systemd-sysusers' "$postinst" ||
	fail "dbswapd postinst does not run systemd-sysusers"
grep -q 'systemd-tmpfiles' "$postinst" ||
	fail "dbswapd postinst does not run systemd-tmpfiles"
grep -q 'deb-systemd-helper enable .*dbswapd.socket' "$postinst" ||
	fail "dbswapd postinst does not enable dbswapd.socket"
grep 'deb-systemd-invoke \$_dh_action\|deb-systemd-invoke start' "$postinst" |
	grep -q 'dbswapd.socket' ||
	fail "dbswapd postinst does not start dbswapd.socket"
# The service: never started by the scripts, and enabled only where the
# admin had enabled it before (an upgrade keeps that choice).
if grep 'deb-systemd-invoke' "$postinst" | grep -q 'dbswapd.service'; then
	fail "dbswapd postinst starts dbswapd.service"
fi
if grep -q "deb-systemd-helper enable 'dbswapd.service'" "$postinst" &&
	! grep -B3 "deb-systemd-helper enable 'dbswapd.service'" "$postinst" |
	grep -q "was-enabled 'dbswapd.service'"; then
	fail "dbswapd postinst enables dbswapd.service on a fresh install"
fi
# Two groups: the socket's (apps) is never the one that reads the env
# files (the agent's).
socket_unit="$tmp/dbswapd/root/lib/systemd/system/dbswapd.socket"
grep -qx 'SocketGroup=dbswap-clients' "$socket_unit" ||
	fail "dbswapd.socket: $(grep '^SocketGroup=' "$socket_unit" || echo 'no SocketGroup=')"
grep -qx 'SocketMode=0660' "$socket_unit" ||
	fail "dbswapd.socket: $(grep '^SocketMode=' "$socket_unit" || echo 'no SocketMode=')"
grep -qx 'Group=dbswap' "$unit" ||
	fail "dbswapd.service: $(grep '^Group=' "$unit" || echo 'no Group=')"
grep -q '^g dbswap-clients ' "$tmp/dbswapd/root/usr/lib/sysusers.d/dbswap.conf" ||
	fail "dbswapd: sysusers.d makes no group dbswap-clients"
if grep -q '^PrivateUsers=yes' "$unit"; then
	fail "dbswapd.service: PrivateUsers=yes hides the peers' uids from --allow"
fi
grep -q 'getent group dbswap' "$postinst" ||
	fail "dbswapd postinst does not warn about members of group dbswap"
# sysusers before anything starts the socket (SocketGroup=dbswap-clients).
sysusers_line=$(grep -n 'systemd-sysusers' "$postinst" | head -n 1 | cut -d: -f1)
socket_line=$(grep -n 'deb-systemd-invoke.*dbswapd.socket' "$postinst" | head -n 1 | cut -d: -f1)
if [ -n "$sysusers_line" ] && [ -n "$socket_line" ] &&
	[ "$sysusers_line" -gt "$socket_line" ]; then
	fail "dbswapd postinst starts the socket before it creates the user"
fi

# libdbswap0: the library under its SONAME, and its symbols file.
has libdbswap0 "/usr/lib/$multiarch/libdbswap.so.0" l
has libdbswap0 "/usr/lib/$multiarch/libdbswap.so.0.1.0"
grep -q '^libdbswap 0 libdbswap0 ' "$tmp/libdbswap0/DEBIAN/shlibs" ||
	fail "libdbswap0: no shlibs entry for libdbswap.so.0"
grep -q '^ dbswap_client_new@DBSWAP_0.1 ' "$tmp/libdbswap0/DEBIAN/symbols" ||
	fail "libdbswap0: no symbols file (or dbswap_client_new missing from it)"

# libdbswap-dev: header, link-time symlink, pkg-config file.
has libdbswap-dev /usr/include/dbswap.h
has libdbswap-dev "/usr/lib/$multiarch/libdbswap.so" l
has libdbswap-dev "/usr/lib/$multiarch/pkgconfig/dbswap.pc"
grep -q '^libdir=${prefix}/lib/'"$multiarch"'$\|^libdir=/usr/lib/'"$multiarch"'$' \
	"$tmp/libdbswap-dev/root/usr/lib/$multiarch/pkgconfig/dbswap.pc" ||
	fail "dbswap.pc: libdir is $(grep '^libdir=' "$tmp/libdbswap-dev/root/usr/lib/$multiarch/pkgconfig/dbswap.pc")"

# Only what dbswap.h needs: libpq.  msgpack is the library's own business
# (libmsgpack-dev would pull in ~145 MB of Boost headers).
pc="$tmp/libdbswap-dev/root/usr/lib/$multiarch/pkgconfig/dbswap.pc"
if grep -q 'msgpack' "$pc"; then
	fail "dbswap.pc names msgpack: $(grep msgpack "$pc")"
fi
if grep '^Depends:' "$tmp/libdbswap-dev/DEBIAN/control" | grep -q msgpack; then
	fail "libdbswap-dev: $(grep '^Depends:' "$tmp/libdbswap-dev/DEBIAN/control")"
fi
grep -q "^prefix=\${pcfiledir}/" "$pc" ||
	fail "dbswap.pc: not relocatable: $(grep '^prefix=' "$pc")"
has libdbswap-dev /usr/share/doc/libdbswap-dev/examples/pool-example.c

# Man pages: each one meson installs, compressed, in the package it
# documents (section 3 in libdbswap-dev, the others in dbswapd).
case " ${DEB_BUILD_PROFILES:-} ${DEB_BUILD_OPTIONS:-} " in
*" nodoc "*) man_pages="" ;;
esac
for page in $man_pages; do
	case $page in
	man3/*) pkg=libdbswap-dev ;;
	*) pkg=dbswapd ;;
	esac
	has "$pkg" "/usr/share/man/$page.gz"
done
[ -n "$man_pages" ] && echo "man pages:" $man_pages
case " ${DEB_BUILD_PROFILES:-} ${DEB_BUILD_OPTIONS:-} " in
*" nodoc "*) ;;
*) has dbswapd /usr/share/doc/dbswapd/examples/dbswap.env.example
   has dbswapd /usr/share/doc/dbswapd/examples/kubernetes-sidecar.yaml
   has dbswapd /usr/share/doc/dbswapd/examples/app-after-dbswapd.conf ;;
esac

# The README and the protocol, for whoever has the package alone.
grep -Eq ' \./usr/share/doc/dbswapd/README\.md(\.gz)?$' "$tmp/dbswapd.list" ||
	fail "dbswapd: no README in /usr/share/doc/dbswapd"
grep -Eq ' \./usr/share/doc/dbswapd/PROTOCOL\.md(\.gz)?$' "$tmp/dbswapd.list" ||
	fail "dbswapd: no PROTOCOL.md in /usr/share/doc/dbswapd"
# Reload without procps (its /bin/kill is not on a minimal system), and
# "systemctl enable dbswapd" that survives a reboot.
if grep '^ExecReload=' "$unit" | grep -q '/bin/kill'; then
	fail "dbswapd.service: $(grep '^ExecReload=' "$unit") needs procps"
fi
grep -qx 'WantedBy=multi-user.target' "$unit" ||
	fail "dbswapd.service: no WantedBy=multi-user.target: enable would not start it at boot"
grep -q 'rmdir.*/run/dbswap' "$tmp/dbswapd/DEBIAN/postrm" ||
	fail "dbswapd postrm leaves /run/dbswap"
grep -q 'rm -rf.*/var/lib/dbswap' "$tmp/dbswapd/DEBIAN/postrm" ||
	fail "dbswapd postrm leaves the last good values in /var/lib/dbswap on purge"

# The unit as packaged still scores as hardened.  (The status of the
# check itself, not of a pipe's last command: it once went unseen.)
if command -v systemd-analyze >/dev/null; then
	if "$src/packaging/systemd/check-hardening.sh" \
		"$(command -v systemd-analyze)" "$unit" 2.0 \
		"$src/packaging/systemd/hardening-accepted" >"$tmp/hardening" 2>&1; then
		tail -n 1 "$tmp/hardening"
	else
		cat "$tmp/hardening" >&2
		fail "the packaged dbswapd.service: hardening"
	fi
fi

if [ "$failures" -ne 0 ]; then
	echo "check-deb: $failures failure(s)" >&2
	exit 1
fi
echo "check-deb: OK in $(($(date +%s) - start)) s"
