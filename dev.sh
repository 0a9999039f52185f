#!/bin/sh
# Set-up for a fresh Debian 12 machine, in one command each:
#
#   ./dev.sh demo   install what is missing, build, run the live demo
#   ./dev.sh test   install what is missing, build, run every test
#   ./dev.sh deb    install what is missing, build the .debs, lint them (./build-deb)
#   ./dev.sh bench [rotation|pool|failover] [args]
#                   build, run a benchmark (default rotation; it prints
#                   tables; failover takes --rounds N and --no-hang)
#
# Installing needs root or sudo; everything else runs as the caller.  The
# build goes to ./build (override with BUILDDIR).  Extra arguments after
# "test" go to meson test (e.g. ./dev.sh test --suite unit).
set -eu
cd "$(dirname "$0")"

# Every package the project needs, to build and to test.  A new dependency
# goes here in the same commit that starts using it.
DEPS="gcc meson ninja-build pkg-config
      libpq-dev libsystemd-dev libmsgpack-dev libsodium-dev
      postgresql-15 postgresql-client-15 python3 python3-msgpack
      systemd scdoc debhelper dpkg-dev fakeroot lintian"

BUILDDIR=${BUILDDIR:-build}

install_deps() {
	missing=""
	for p in $DEPS; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q "install ok installed" || missing="$missing $p"
	done
	[ -z "$missing" ] && return 0
	echo "dev.sh: installing:$missing"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	$sudo apt-get update -qq
	# The tests and the demo start throwaway clusters of their own on free
	# ports; a system cluster the server package may create is not used.
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends $missing
}

build() {
	if [ ! -f "$BUILDDIR/build.ninja" ]; then
		meson setup "$BUILDDIR" ${MESON_SETUP_ARGS:-}
	fi
	ninja -C "$BUILDDIR"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
demo)
	install_deps
	build
	DBSWAPD="$BUILDDIR/agent/dbswapd" \
	DBSWAPCTL="$BUILDDIR/client-lib/dbswapctl" \
	DBSWAP_TEST_SUBSCRIBER="$BUILDDIR/tests/subscriber" \
	PYTHONPATH=tests/integration PYTHONDONTWRITEBYTECODE=1 \
		exec /usr/bin/python3 tests/demo.py "$@"
	;;
bench)
	which=${1:-rotation}
	[ $# -gt 0 ] && shift
	case "$which" in
	rotation | pool | failover) ;;
	*) echo "usage: ./dev.sh bench [rotation|pool|failover]" >&2; exit 2 ;;
	esac
	install_deps
	build
	DBSWAPD="$BUILDDIR/agent/dbswapd" \
	DBSWAPCTL="$BUILDDIR/client-lib/dbswapctl" \
	DBSWAP_TEST_SUBSCRIBER="$BUILDDIR/tests/subscriber" \
	DBSWAP_CONNECT_FLOOR="$BUILDDIR/tests/connect-floor" \
	DBSWAP_POOL_LOAD="$BUILDDIR/tests/pool-load" \
	DBSWAP_POOL_BENCH="$BUILDDIR/tests/pool-bench" \
	PYTHONPATH=tests/integration PYTHONDONTWRITEBYTECODE=1 \
		exec /usr/bin/python3 "tests/bench/$which.py" "$@"
	;;
test)
	install_deps
	build
	exec meson test -C "$BUILDDIR" --print-errorlogs "$@"
	;;
deb)
	install_deps
	exec packaging/build-deb.sh "$@"
	;;
*)
	echo "usage: ./dev.sh demo | test [meson test args] | bench [rotation|pool|failover] | deb" >&2
	exit 2
	;;
esac
