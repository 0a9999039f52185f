#!/bin/sh
# The test suite again, checked for memory errors (run by ./dev.sh test):
#
#   tests/sanitize.sh asan BUILDDIR
#       an ASan+UBSan build of everything in BUILDDIR, then every suite but
#       packaging (the .debs are built without sanitizers anyway)
#   tests/sanitize.sh valgrind BUILDDIR
#       the agent's integration suites with dbswapd under valgrind, from
#       an ordinary build in BUILDDIR (the load generators run at full
#       speed); the pool suite is left out, its agent only serves a load
#
# Any report fails the run, also one from a process whose test passed:
# the harness deletes its temp dirs, so reports go to files of their own,
# which are checked after the run and printed.
set -eu
mode=${1:?usage: tests/sanitize.sh asan|valgrind BUILDDIR}
builddir=${2:?usage: tests/sanitize.sh asan|valgrind BUILDDIR}
src=$(cd "$(dirname "$0")/.." && pwd)
logs=$(mktemp -d /tmp/dbswap-sanitize.XXXXXX)
trap 'rm -rf "$logs"' EXIT

case "$mode" in
asan)
	if [ ! -f "$builddir/build.ninja" ]; then
		meson setup "$builddir" "$src" \
			-Db_sanitize=address,undefined -Db_lundef=false
	fi
	ninja -C "$builddir"
	status=0
	ASAN_OPTIONS="halt_on_error=1:detect_leaks=1:log_path=$logs/asan" \
	UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$logs/ubsan" \
		meson test -C "$builddir" --no-rebuild --no-suite packaging \
		--print-errorlogs || status=$?
	;;
valgrind)
	ninja -C "$builddir"
	status=0
	DBSWAP_TEST_AGENT_WRAPPER="valgrind -q --error-exitcode=99 \
--leak-check=full --errors-for-leak-kinds=definite \
--show-leak-kinds=definite --log-file=$logs/valgrind.%p" \
	DBSWAP_TEST_TIMEOUT_SCALE=10 \
		meson test -C "$builddir" --no-rebuild --print-errorlogs \
		rotation write_patterns faults restart protocol encryption \
		failover systemd hostile dns leaks trust || status=$?
	;;
*)
	echo "usage: tests/sanitize.sh asan|valgrind BUILDDIR" >&2
	exit 2
	;;
esac

reports=$(find "$logs" -type f -size +0 | sort)
if [ -n "$reports" ]; then
	for f in $reports; do
		echo "== $f"
		head -60 "$f"
	done
	echo "sanitize.sh $mode: $(echo "$reports" | wc -l) report(s)" >&2
	exit 1
fi
[ "$status" -eq 0 ] || exit "$status"
echo "sanitize.sh $mode: no report"
