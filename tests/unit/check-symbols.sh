#!/bin/sh
# Compares the symbols libdbswap.so exports with client-lib/c/libdbswap.sym
# and with the functions dbswap.h declares: all three lists must agree, so
# nothing private leaks out and nothing public is forgotten.
set -eu
lib=$1 map=$2 header=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' |
	sort -u >"$tmp/exported"
sed -n 's/^[[:space:]]*\(dbswap_[a-z_0-9]*\);$/\1/p' "$map" | sort -u >"$tmp/map"
grep -o '\bdbswap_[a-z_0-9]*(' "$header" | tr -d '(' | grep -v '_fn$' |
	sort -u >"$tmp/header"

status=0
if ! diff -u "$tmp/map" "$tmp/exported"; then
	echo "check-symbols: the library's exports differ from $map" >&2
	status=1
fi
if ! diff -u "$tmp/header" "$tmp/map"; then
	echo "check-symbols: $header and $map declare different functions" >&2
	status=1
fi
[ $status -eq 0 ] && echo "check-symbols: $(wc -l <"$tmp/exported") symbols agree"
exit $status
