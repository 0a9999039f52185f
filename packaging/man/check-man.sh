#!/bin/sh
# Renders a man page and fails on any warning: formatters exit 0 after a
# warning, so anything on stderr counts as a failure.
#
#   check-man.sh PAGE COMMAND [ARG...]     runs COMMAND ARG... PAGE
#
# e.g. check-man.sh dbswapd.8 man --warnings -l -E UTF-8
set -u

page=$1
shift
errors=$("$@" "$page" 2>&1 >/dev/null)
status=$?
if [ "$status" -ne 0 ] || [ -n "$errors" ]; then
	printf '%s: exit status %d\n%s\n' "$page" "$status" "$errors" >&2
	exit 1
fi
