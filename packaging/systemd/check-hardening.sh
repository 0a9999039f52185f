#!/bin/sh
# Scores the sandbox of a service unit file with systemd-analyze security,
# offline (no running systemd needed), and fails when the overall exposure
# is above MAX (0.0 to 10.0, lower is better), or when a setting costs
# something that ACCEPTED (a file: one setting a line, as systemd-analyze
# names it, then the reason; # comments) does not list.
#
#   check-hardening.sh SYSTEMD-ANALYZE UNIT-FILE MAX [ACCEPTED]
#
# Prints the overall score and each setting that adds to it.
set -u
analyze=$1 unit=$2 max=$3 accepted=${4:-}

# --threshold takes tenths: 2.0 -> 20.
threshold=$(printf '%s\n' "$max" | awk '{ printf "%d", $1 * 10 + 0.5 }')
out=$("$analyze" security --offline=true --threshold="$threshold" "$unit" 2>&1)
status=$?
# The settings that cost something: a non-empty last column.
costs=$(printf '%s\n' "$out" | awk '$NF ~ /^[0-9]+\.[0-9]+$/')
printf '%s\n' "$costs"
unaccepted=0
if [ -n "$accepted" ]; then
	for setting in $(printf '%s\n' "$costs" | awk '{ print $2 }'); do
		if ! grep -v '^#' "$accepted" | awk '{ print $1 }' |
			grep -qxF -- "$setting"; then
			echo "check-hardening: $setting costs, and $(basename "$accepted") does not say why" >&2
			unaccepted=$((unaccepted + 1))
		fi
	done
fi
score=$(printf '%s\n' "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
	printf '%s\n' "$out" >&2
	echo "check-hardening: no overall exposure level in the output" >&2
	exit 1
fi
echo "overall exposure of $(basename "$unit"): $score (at most $max)"
if [ "$status" -ne 0 ]; then
	echo "check-hardening: $score is above $max" >&2
	exit 1
fi
[ "$unaccepted" -eq 0 ] || exit 1
