# Vault Agent writes the env file; dbswap validates each value it writes,
# pushes it to the apps, and proves they all switched.
#
#   vault agent -config=/etc/vault/agent.hcl      (as root)
#   install -d -m 2750 -g dbswap /etc/dbswap/vault
#   echo 'DBSWAPD_OPTS="--env /etc/dbswap/vault/db.env"' >>/etc/default/dbswapd
#
# The directory is setgid dbswap, so the file Vault Agent renders there
# (a temp file renamed into place) is group dbswap: the agent reads it,
# no app does (apps get the value over the socket).  It is its own
# directory: systemd-tmpfiles resets /etc/dbswap's mode at boot.
#
# What each side does:
# - Vault Agent renders the template below whenever the secret changes:
#   a new lease of a dynamic role (database/creds/...: a new user each
#   time) or a new password of a static role (database/static-creds/...:
#   Vault runs ALTER ROLE on its schedule).  It writes to a temp file and
#   renames it into place; dbswapd also copes with a writer that rewrites
#   the file in place (it waits for the close).
# - dbswapd opens a real connection with the new value before anything
#   sees it.  A value that does not work yet (a static role's password
#   written before the server has it, a lease whose user is not created on
#   a replica yet) is retried with backoff and never replaces the value in
#   force; apps keep working on the old one meanwhile.
# - Apps get the new value and ack it when their pool uses it: the agent
#   logs "generation N acked by all K subscriber(s)", and status shows
#   each subscriber.  That is the proof Vault itself cannot have: keep the
#   old credentials valid until then.
#
# Dynamic roles: the old lease must outlive the switch.  Give the role a
# default_ttl comfortably longer than the agent's worst case (a few
# validations plus the apps' drain, DATABASE_POOL_DRAIN_TIMEOUT), and let
# Vault revoke the old lease when it expires, not at renewal.
#
# The exec block runs a command after each render (older Vault Agents
# take command = "..." instead); the script below waits until every
# subscriber acked what the agent read, and fails loudly (so Vault Agent
# logs it) when a value was rejected.

pid_file = "/run/vault-agent.pid"

auto_auth {
  method "approle" {
    config = {
      role_id_file_path   = "/etc/vault/role-id"
      secret_id_file_path = "/etc/vault/secret-id"
    }
  }
}

template_config {
  # Re-render static-role secrets soon after Vault rotates them.
  static_secret_render_interval = "1m"
}

template {
  destination = "/etc/dbswap/vault/db.env"
  perms       = "0640"
  contents = <<-EOT
  {{- with secret "database/static-creds/app" -}}
  DATABASE_URL=postgresql://{{ .Data.username }}:{{ .Data.password | urlquery }}@db.internal:5432/app?sslmode=verify-full
  {{- end }}
  EOT

  exec {
    command = ["/usr/local/sbin/dbswap-converged",
               "/etc/dbswap/vault/db.env", "DATABASE_URL", "60"]
    timeout = "90s"
  }
}

# /usr/local/sbin/dbswap-converged, for the exec block above (needs jq):
#
#   #!/bin/sh
#   # dbswap-converged FILE TARGET SECONDS: waits until the agent read the
#   # version of FILE now in place (its identity in status, PROTOCOL.md
#   # "status"), and, when that read changed TARGET, until the new value is
#   # published and acked by every subscriber.  Exit 1 when the agent gave
#   # up on the value (the reason on stderr), 2 on timeout.
#   set -eu
#   file=$1 target=$2 left=$3
#   mtime=$(stat -c %.9Y "$file" | tr -d .)
#   want="$(stat -c %d:%i:%s "$file"):$mtime"
#   while [ "$left" -gt 0 ]; do
#       st=$(dbswapctl status --json)
#       seq=$(echo "$st" | jq -r --arg f "$file" --arg id "$want" \
#           '.files[] | select(.path == $f and .identity == $id) | .seq')
#       t=$(echo "$st" | jq -c --arg t "$target" '.targets[] | select(.name == $t)')
#       if [ -n "$seq" ]; then
#           # not changed by this version: nothing to wait for
#           echo "$t" | jq -e --argjson s "$seq" '.value_seq != $s' >/dev/null &&
#               exit 0
#           if echo "$t" | jq -e '.gave_up' >/dev/null; then
#               echo "$target: $(echo "$t" | jq -r .error)" >&2
#               exit 1
#           fi
#           echo "$t" | jq -e --argjson s "$seq" \
#               '.published_seq >= $s and .acked == .subscribers' >/dev/null &&
#               exit 0
#       fi
#       sleep 1
#       left=$((left - 1))
#   done
#   echo "$target: not converged in time: state $(echo "$t" | jq -r .state)," \
#        "error $(echo "$t" | jq -r '.error // "none"')," \
#        "lagging $(echo "$t" | jq -c '[.lagging[] | {pid, name}]')" >&2
#   exit 2
