#!/bin/sh
# Set-up for a fresh Debian 12 machine, in one command each:
#
#   ./dev.sh demo   install what the demo needs (DEPS_BUILD, DEPS_DEMO)
#                   when missing, build, run the live demo
#   ./dev.sh test   install what is missing (Go from bookworm-backports
#                   when there is no Go 1.23 or later; the Go module's
#                   dependencies by go mod download; the Python package's
#                   test venv, ./build/py-venv, by pip), build, run every
#                   test (the Node.js package's unit tests by npm test,
#                   then meson's suites, among them the Node, Go and
#                   Python packages' unit and integration suites); then
#                   the agent's suites again under valgrind, the whole
#                   suite but Go's and Python's as an ASan+UBSan build
#                   (./build-asan), and the
#                   unit, pool and failover suites as a ThreadSanitizer
#                   build (./build-tsan), all by tests/sanitize.sh
#                   (SANITIZE=0 to skip), then every fuzz
#                   target for 30 s (FUZZ_SECONDS=N to change, 0 to skip),
#                   then the benchmarks in quick mode into a temp dir, to
#                   check that they run (BENCH=0 to skip)
#   ./dev.sh deb    install what is missing, build the .debs, lint them (./build-deb)
#   ./dev.sh lab [--only CHECK,...] [--drop-in FILE.conf] [--keep]
#                   the .debs (built into $BUILDDIR/lab-debs when the
#                   tree changed) installed by apt on a Debian 12 root
#                   booted under systemd-nspawn, and checked under systemd
#                   as PID 1 (tests/lab/lab.py; the root is debootstrapped
#                   once and cached in /var/cache/dbswap-lab); "test" runs
#                   it after meson's suites (LAB=0 to skip)
#   ./dev.sh bench [--quick] [--out DIR] [--only SECTION,...]
#                   build, run every benchmark with its peers (PgBouncer,
#                   libpq multi-host, restarts), write bench/results/:
#                   results.md, results.json, PNG plots (tests/bench/run.py;
#                   --quick: a few minutes, the default: about 21)
#   ./dev.sh fuzz [SECONDS]
#                   build the libFuzzer targets with clang, ASan and UBSan
#                   (./build-fuzz), run each for SECONDS (default 60), one
#                   per core at a time, from its seed corpus in
#                   tests/fuzz/corpus (new inputs go to a temp dir); fails
#                   on any crash, leak or sanitizer report and prints the
#                   reproducer (./build-fuzz/artifacts)
#
# Installing needs root or sudo; everything else runs as the caller.  The
# build goes to ./build (override with BUILDDIR).  Extra arguments after
# "test" go to meson test (e.g. ./dev.sh test --suite unit).
set -eu
cd "$(dirname "$0")"

# The packages the project needs, by what needs them.  A new dependency
# goes into its list in the same commit that starts using it.  The demo
# installs DEPS_BUILD and DEPS_DEMO only; every other command what it runs
# (test: all of them, since it also builds the packages and runs the
# benchmarks in quick mode).
#   DEPS_BUILD   compile dbswapd, libdbswap, dbswapctl and the test helpers
#                (man pages by scdoc, the unit directory from systemd.pc)
#   DEPS_DEMO    run tests/demo.py: PostgreSQL for its clusters, the Python
#                harness it shares with the integration tests
#   DEPS_TEST    the test suites: the harness's venv, sanitizers, fuzzing,
#                the leak and exposure tests' tools
#   DEPS_DEB     ./dev.sh deb: build and lint the .debs
#   DEPS_BENCH   the benchmarks' peers and plots
DEPS_BUILD="gcc meson ninja-build pkg-config scdoc systemd
      libpq-dev libsystemd-dev libmsgpack-dev libsodium-dev libc-ares-dev
      libmicrohttpd-dev"
DEPS_DEMO="postgresql-15 postgresql-client-15 python3 python3-msgpack"
DEPS_TEST="python3-venv clang libclang-rt-14-dev valgrind strace uidmap
      curl"
DEPS_LAB="systemd-container debootstrap zstd"	# (test) the systemd lab
DEPS_TEST="$DEPS_TEST $DEPS_LAB"
DEPS_DEB="debhelper dpkg-dev fakeroot lintian"
DEPS_BENCH="pgbouncer gnuplot-nox"
DEPS="$DEPS_BUILD $DEPS_DEMO $DEPS_TEST $DEPS_DEB $DEPS_BENCH"

# Node.js for the npm package (client-lib/node): Debian's nodejs (18) and
# npm (9) when there is no node at all.  Checked by command, not package:
# a node from elsewhere (NodeSource's nodejs, which brings its own npm and
# conflicts with Debian's) is used as it is.
NODE_MIN_MAJOR=18
NODE_PKG=client-lib/node

# Go for the Go module (client-lib/go): go.mod asks for 1.23 or later.
# The first go found of $DBSWAP_GO, go on PATH, /usr/local/go's (the
# official tarball's place) and Debian's golang-1.23 is used; when none
# is new enough, Debian's golang-1.23-go is installed from
# bookworm-backports (bookworm's own golang-go is 1.19).
GO_MIN_MINOR=23
GO_MODULE=client-lib/go
GO_BACKPORT=/usr/lib/go-1.23/bin/go

# The Python package (client-lib/python): its tests and adapters run from
# a venv of Debian's /usr/bin/python3 (the one the harness runs on) with
# the exact versions of its requirements-test.txt.
PY_PACKAGE=client-lib/python

BUILDDIR=${BUILDDIR:-build}
PY_VENV=$BUILDDIR/py-venv

# Prints the go command to use, or nothing.
find_go() {
	for g in "${DBSWAP_GO:-}" "$(command -v go 2>/dev/null || :)" \
		 /usr/local/go/bin/go "$GO_BACKPORT"; do
		[ -n "$g" ] && [ -x "$g" ] || continue
		v=$(GOTOOLCHAIN=local "$g" env GOVERSION 2>/dev/null) || continue
		v=${v#go}
		major=${v%%.*}
		minor=$(echo "${v#*.}" | sed 's/[^0-9].*//')
		case "$major$minor" in *[!0-9]*|'') continue ;; esac
		if [ "$major" -gt 1 ] || [ "${minor:-0}" -ge "$GO_MIN_MINOR" ]
		then
			echo "$g"
			return 0
		fi
	done
}

# install_deps PACKAGES [node-go]: installs those of PACKAGES that are
# missing, and with node-go Node.js and Go too (above) when there are
# none.  Only what is missing, without its recommends, and nothing that
# is installed is upgraded (--no-upgrade: a package already installed
# stays at its version even when named; a dependency that needs a newer
# version of an installed package would still upgrade it, which none of
# the demo's does on Debian 12).
install_deps() {
	want=$1
	langs=${2:-}
	missing=""
	for p in $want; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
			grep -q "install ok installed" || missing="$missing $p"
	done
	backports=""
	if [ "$langs" = node-go ]; then
		command -v node >/dev/null 2>&1 || missing="$missing nodejs npm"
		if command -v node >/dev/null 2>&1 &&
		   ! command -v npm >/dev/null 2>&1; then
			missing="$missing npm"
		fi
		[ -n "$(find_go)" ] || backports=golang-1.23-go
	fi
	[ -z "$missing$backports" ] && return 0
	echo "dev.sh: installing:$missing $backports"
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	if [ -n "$backports" ] && ! grep -rqs bookworm-backports \
		/etc/apt/sources.list /etc/apt/sources.list.d; then
		echo "deb http://deb.debian.org/debian bookworm-backports main" |
			$sudo tee /etc/apt/sources.list.d/bookworm-backports.list \
			>/dev/null
	fi
	$sudo apt-get update -qq
	if [ -n "$backports" ]; then
		$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends --no-upgrade \
			-t bookworm-backports $backports
	fi
	[ -z "$missing" ] && return 0
	# The tests and the demo start throwaway clusters of their own on free
	# ports; a system cluster the server package may create is not used.
	$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
		--no-install-recommends --no-upgrade $missing $(perl_pin "$missing")
}

# PostgreSQL's scripts need perl, which must be the version of the
# installed perl-base (Essential): apt would take the newest perl and
# upgrade perl-base with it.  When perl is missing and the archive still
# has perl-base's version of it, that version is asked for instead.
perl_pin() {
	case "$1" in *postgresql*) ;; *) return 0 ;; esac
	dpkg-query -W -f='${Status}' perl 2>/dev/null |
		grep -q "install ok installed" && return 0
	v=$(dpkg-query -W -f='${Version}' perl-base 2>/dev/null) || return 0
	apt-cache madison perl | grep -qF "| $v |" || return 0
	abi=$(echo "$v" | cut -d. -f1,2)
	echo "perl=$v perl-modules-$abi=$v libperl$abi=$v"
}

# The npm package's dependencies, exactly as its committed lockfile says
# (npm ci, from npm's cache when it has them), again only when the
# lockfile or node changed since.  Nothing to do before the package has a
# lockfile.
node_deps() {
	if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1
	then
		echo "dev.sh: node and npm are needed (install_deps failed?)" >&2
		return 1
	fi
	major=$(node -p 'process.versions.node.split(".")[0]')
	if [ "$major" -lt "$NODE_MIN_MAJOR" ]; then
		echo "dev.sh: node $(node --version) is too old:" \
		     "the package needs $NODE_MIN_MAJOR or later" >&2
		return 1
	fi
	[ -f "$NODE_PKG/package-lock.json" ] || return 0
	stamp="$NODE_PKG/node_modules/.dbswap-npm-ci"
	want="$(sha256sum <"$NODE_PKG/package-lock.json") $(node --version)"
	[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
	echo "dev.sh: npm ci in $NODE_PKG"
	# --ignore-scripts: no dependency needs one, and prisma's would
	# download engines from a host this machine may not reach.
	(cd "$NODE_PKG" && npm ci --prefer-offline --no-audit --no-fund --ignore-scripts)
	echo "$want" >"$stamp"
}

# The Go module's dependencies, exactly as go.sum says, into the module
# cache (from the Go module proxy when they are not there yet); again only
# when go.sum or the toolchain changed since.
go_deps() {
	go=$(find_go)
	if [ -z "$go" ]; then
		echo "dev.sh: Go 1.$GO_MIN_MINOR or later is needed" \
		     "(install_deps failed?)" >&2
		return 1
	fi
	stamp="$BUILDDIR/.dbswap-go-mod"
	want="$(sha256sum <"$GO_MODULE/go.sum") $("$go" env GOVERSION)"
	[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
	echo "dev.sh: go mod download in $GO_MODULE ($go)"
	(cd "$GO_MODULE" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly \
		"$go" mod download)
	mkdir -p "$BUILDDIR"
	echo "$want" >"$stamp"
}

# The Python package's test venv, $BUILDDIR/py-venv, with exactly the
# versions of requirements-test.txt (from PyPI when pip's cache does not
# have them); again only when that file changed since.
py_deps() {
	stamp="$PY_VENV/.dbswap-requirements"
	want=$(sha256sum <"$PY_PACKAGE/requirements-test.txt")
	[ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && return 0
	echo "dev.sh: making $PY_VENV from $PY_PACKAGE/requirements-test.txt"
	rm -rf "$PY_VENV"
	/usr/bin/python3 -m venv "$PY_VENV"
	"$PY_VENV/bin/pip" install -q --disable-pip-version-check \
		--require-virtualenv -r "$PY_PACKAGE/requirements-test.txt"
	echo "$want" >"$stamp"
}

# Where the Go and Python suites (tests and benchmarks) find their
# toolchain and venv, whichever build dir runs them.
package_env() {
	DBSWAP_GO=$(find_go)
	DBSWAP_PY_VENV=$(pwd)/$PY_VENV
	export DBSWAP_GO DBSWAP_PY_VENV
}

build() {
	if [ ! -f "$BUILDDIR/build.ninja" ]; then
		meson setup "$BUILDDIR" ${MESON_SETUP_ARGS:-}
	fi
	ninja -C "$BUILDDIR"
}

# The systemd lab (tests/lab/lab.py): needs root for debootstrap, nspawn
# and cgroups; skips (exit 77) where it cannot run, which is no failure.
lab() {
	sudo=""
	[ "$(id -u)" -eq 0 ] || sudo=sudo
	rc=0
	$sudo /usr/bin/python3 tests/lab/lab.py \
		--build-debs "$BUILDDIR/lab-debs" "$@" || rc=$?
	[ "$rc" -eq 77 ] && rc=0
	return "$rc"
}

bench() {
	DBSWAPD="$BUILDDIR/agent/dbswapd" \
	DBSWAPCTL="$BUILDDIR/client-lib/ctl/dbswapctl" \
	DBSWAP_TEST_SUBSCRIBER="$BUILDDIR/tests/subscriber" \
	DBSWAP_CONNECT_FLOOR="$BUILDDIR/tests/connect-floor" \
	DBSWAP_POOL_LOAD="$BUILDDIR/tests/pool-load" \
	DBSWAP_POOL_BENCH="$BUILDDIR/tests/pool-bench" \
	DBSWAP_ENV_BENCH="$BUILDDIR/tests/env-bench" \
	DBSWAP_LIBPQ_LOAD="$BUILDDIR/tests/libpq-load" \
	DBSWAP_FANOUT="$BUILDDIR/tests/fanout" \
	PYTHONPATH=tests/bench:tests/integration PYTHONDONTWRITEBYTECODE=1 \
		/usr/bin/python3 tests/bench/run.py "$@"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
demo)
	install_deps "$DEPS_BUILD $DEPS_DEMO"
	build
	DBSWAPD="$BUILDDIR/agent/dbswapd" \
	DBSWAPCTL="$BUILDDIR/client-lib/ctl/dbswapctl" \
	DBSWAP_POOL_LOAD="$BUILDDIR/tests/pool-load" \
	PYTHONPATH=tests/integration PYTHONDONTWRITEBYTECODE=1 \
		exec /usr/bin/python3 tests/demo.py "$@"
	;;
bench)
	install_deps "$DEPS_BUILD $DEPS_DEMO python3-venv $DEPS_BENCH" node-go
	build
	node_deps
	go_deps
	py_deps
	package_env
	bench "$@"
	;;
test)
	install_deps "$DEPS" node-go
	build
	node_deps
	go_deps
	py_deps
	package_env
	if [ -f "$NODE_PKG/package.json" ]; then
		echo "dev.sh: npm test in $NODE_PKG"
		(cd "$NODE_PKG" && npm test)
	fi
	meson test -C "$BUILDDIR" --print-errorlogs "$@"
	[ "${LAB:-1}" -eq 0 ] || lab
	if [ "${SANITIZE:-1}" -ne 0 ]; then
		tests/sanitize.sh valgrind "$BUILDDIR"
		tests/sanitize.sh asan "${BUILDDIR}-asan"
		tests/sanitize.sh tsan "${BUILDDIR}-tsan"
	fi
	[ "${FUZZ_SECONDS:-30}" -eq 0 ] || "$0" fuzz "${FUZZ_SECONDS:-30}"
	if [ "${BENCH:-1}" -ne 0 ]; then
		out=$(mktemp -d "${TMPDIR:-/tmp}/dbswap-bench.XXXXXX")
		bench --quick --out "$out"
		rm -rf "$out"
	fi
	;;
fuzz)
	secs=${1:-60}
	fuzzdir=build-fuzz
	install_deps "$DEPS_BUILD clang libclang-rt-14-dev"
	if [ ! -f "$fuzzdir/build.ninja" ]; then
		# The libraries get the coverage instrumentation too
		# (fuzzer-no-link), or libFuzzer would fuzz them blind.  No
		# -Werror: gcc's build enforces warnings; clang's may differ.
		CC=clang meson setup "$fuzzdir" -Dfuzz=true \
			-Db_sanitize=address,undefined -Db_lundef=false \
			-Dc_args=-fsanitize=fuzzer-no-link -Dwerror=false
	fi
	targets="env frame crypto mask authguard"
	ninja -C "$fuzzdir" $(for t in $targets; do echo tests/fuzz/fuzz-$t; done)
	work=$(mktemp -d "${TMPDIR:-/tmp}/dbswap-fuzz.XXXXXX")
	trap 'rm -rf "$work"' EXIT
	artifacts="$(pwd)/$fuzzdir/artifacts"
	# One target per core at a time: each fuzzer is one process.
	jobs=$(nproc 2>/dev/null || echo 1)
	running=0
	for t in $targets; do
		mkdir -p "$work/$t" "$artifacts/$t"
		cp tests/fuzz/corpus/$t/* "$work/$t/"
		echo "dev.sh: fuzz-$t for ${secs}s"
		(
			ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:abort_on_error=1 \
			UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
			"$fuzzdir/tests/fuzz/fuzz-$t" -max_len=65536 -timeout=10 \
				-max_total_time="$secs" -print_final_stats=1 \
				-artifact_prefix="$artifacts/$t/" \
				"$work/$t" >"$work/$t.log" 2>&1
			echo $? >"$work/$t.rc"
		) &
		running=$((running + 1))
		if [ "$running" -ge "$jobs" ]; then
			wait
			running=0
		fi
	done
	wait
	failed=""
	for t in $targets; do
		if [ "$(cat "$work/$t.rc" 2>/dev/null)" = 0 ]; then
			printf 'fuzz-%s: ' "$t"
			grep -E '^stat::number_of_executed_units' "$work/$t.log" || :
		else
			tail -n 60 "$work/$t.log" >&2
			grep -o 'Test unit written to .*' "$work/$t.log" |
				sed "s|^Test unit written to |dev.sh: reproduce: $fuzzdir/tests/fuzz/fuzz-$t |" >&2 || :
			failed="$failed $t"
		fi
	done
	if [ -n "$failed" ]; then
		echo "dev.sh: fuzzing failed:$failed" >&2
		exit 1
	fi
	;;
deb)
	install_deps "$DEPS_BUILD $DEPS_DEB"
	exec packaging/build-deb.sh "$@"
	;;
lab)
	install_deps "$DEPS_BUILD $DEPS_DEB $DEPS_LAB"
	lab "$@"
	;;
*)
	echo "usage: ./dev.sh demo | test [meson test args] | fuzz [SECONDS] | bench [--quick] [--only S,...] | deb | lab [--only C,...]" >&2
	exit 2
	;;
esac
