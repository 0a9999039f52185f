/*
 * Access control: who may do what, as functions of a peer's credentials
 * and the rules the agent was started with.  Nothing here knows of
 * clients, connections or the server; see ipc/PROTOCOL.md, "Access
 * control".
 *
 * The peer's uid, gid and supplementary groups are taken from the socket
 * when it connects (SO_PEERCRED, SO_PEERGROUPS), so they are the kernel's
 * word at connect time, with no lookup in the user database and no race
 * on the pid.  Root and the agent's own uid may do everything.  Others
 * may subscribe to a target when a rule allows it, and send reload,
 * reconnect, failover and failback when they are admins.
 */
#ifndef DBSWAP_AGENT_ACCESS_H
#define DBSWAP_AGENT_ACCESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One peer a rule names: a uid, or a gid matched against the peer's
 * primary and supplementary groups. */
struct access_principal {
	bool group;
	uint32_t id;
};

/* Peers allowed to subscribe to target ("*": every target). */
struct access_allow {
	const char *target;
	const struct access_principal *who;
	size_t n_who;
};

/* The rules in force; the arrays (and strings) are the caller's. */
struct access_rules {
	/* None: root, the agent's uid and default_gid may subscribe to
	 * every target.  Any: root, the agent's uid and the peers of the
	 * rules naming the target or "*", no one else. */
	const struct access_allow *allow;
	size_t n_allow;
	/* Besides root and the agent's uid, who may send reload, reconnect,
	 * failover and failback. */
	const struct access_principal *admin;
	size_t n_admin;
	uid_t self_uid;    /* the agent's own */
	gid_t default_gid; /* the socket's group; (gid_t)-1 if unknown */
};

/* A peer as the kernel saw it when it connected. */
struct access_peer {
	pid_t pid;
	uid_t uid;
	gid_t gid;
	gid_t *groups; /* supplementary groups (SO_PEERGROUPS) */
	size_t n_groups;
};

/* Fills p from the connected socket fd.  Never fails: credentials it
 * cannot read are left as no one's (uid and gid (uid_t)-1, no
 * supplementary group), so that access fails closed.  Does not block. */
void access_peer_get(struct access_peer *p, int fd);
void access_peer_fini(struct access_peer *p);

/* Root and the agent's own uid: they can read its memory or its files
 * anyway. */
bool access_is_owner(const struct access_rules *r,
		     const struct access_peer *p);

/* Whether p may subscribe to (and so see in full) the target named
 * target. */
bool access_may_subscribe(const struct access_rules *r,
			  const struct access_peer *p, const char *target);

/* Whether p may send reload, reconnect, failover and failback: they
 * change what every app on the host uses. */
bool access_is_admin(const struct access_rules *r,
		     const struct access_peer *p);

#endif
