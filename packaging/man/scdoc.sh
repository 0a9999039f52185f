#!/bin/sh
# Runs scdoc on one page, then keeps names and options whole for groff.
#
#   scdoc.sh SCDOC INPUT OUTPUT
#
# scdoc 1.11 writes .nh before .TH, and .TH turns hyphenation back on: names
# such as DATABASE_URL would break across lines as DATA-BASE_URL, and a
# search of the page for them would miss.  So .nh again right after .TH,
# and .cflags 0 - so that no line breaks after the hyphen of an option
# either (--encrypt-/values).
set -eu

scdoc=$1
input=$2
output=$3

"$scdoc" <"$input" >"$output.tmp"
sed '/^\.TH /a\
.nh\
.cflags 0 -' "$output.tmp" >"$output"
rm -f "$output.tmp"
grep -q '^\.TH ' "$output"
