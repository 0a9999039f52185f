#!/bin/sh
# dbswapd --on-event hook: posts each event to a chat webhook (Slack,
# Mattermost, Rocket.Chat, Teams' incoming webhooks: a JSON body with a
# "text" field; Discord reads "content", sent too).
#
#   dbswapd ... --on-event /usr/local/libexec/dbswap/on-event-webhook.sh
#
# The webhook's URL is a secret (whoever has it can post to the channel),
# so it is neither in this script nor on curl's command line, where every
# local user could read it in /proc: it is in a curl config file readable
# by the agent's user only:
#
#   install -m 0600 -o dbswap -g dbswap /dev/null /etc/dbswap/webhook.curl
#   echo 'url = "https://hooks.example.com/services/T000/B000/XXXX"' \
#       > /etc/dbswap/webhook.curl
#
# The agent runs this without a shell's environment: only PATH and the
# DBSWAP_* variables (see dbswapd(8), "Metrics, health and events"), each
# made of [A-Za-z0-9._:+-] by the agent, so they need no JSON escaping.
# It must finish within --on-event-timeout (10 s by default): curl gives
# up after 5.
set -eu

CONF=/etc/dbswap/webhook.curl

event=${DBSWAP_EVENT:-unknown}
target=${DBSWAP_TARGET:-?}
gen=${DBSWAP_GENERATION:-0}
server=${DBSWAP_SERVER:-none}
reason=${DBSWAP_REASON:-}

case $event in
failover)     what="failed over to the $server ($reason)" ;;
failback)     what="is back on the $server ($reason)" ;;
unavailable)  what="has no server available: apps were told to stop using it" ;;
rejected)     what="has a new value the $server refused ($reason); retrying" ;;
gave-up)      what="has a new value the $server refused 6 times; gave up until it changes" ;;
split-brain)  what="was not switched: it would leave two writable servers ($reason)" ;;
rotation-complete)
	# Every rotation: too chatty for most channels.  Uncomment to post.
	# what="generation $gen is in use by every subscriber ($reason)"
	exit 0 ;;
*)            what="$event ($reason)" ;;
esac

text="dbswap on $(uname -n): $target $what [generation $gen, ${DBSWAP_TIME:-}]"
printf '{"text":"%s","content":"%s"}\n' "$text" "$text" |
	curl --config "$CONF" --silent --show-error --fail --max-time 5 \
		--header 'Content-Type: application/json' --data-binary @- \
		--output /dev/null
