/*
 * Access control: see access.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "access.h"
#include "common/util.h"

/* Groups of a peer looked at before asking for the full list: the
 * supplementary groups of a service account are usually a handful. */
#define ACCESS_PEER_GROUPS_FIRST 32

/* The peer's supplementary groups at connect time (SO_PEERGROUPS, Linux
 * 4.13): the kernel's copy, so neither a lookup of the user in the group
 * database (which may block on NSS, and misses groups a process dropped or
 * was given) nor /proc/PID/status (the pid may be reused by the time it
 * is read).  On failure the peer keeps no supplementary group: access
 * then fails closed. */
static void access_peer_groups(struct access_peer *p, int fd)
{
	gid_t first[ACCESS_PEER_GROUPS_FIRST];
	socklen_t len = sizeof(first);
	gid_t *g;

	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, first, &len) == 0) {
		g = len ? malloc(len) : NULL;
		if (!g)
			return;
		memcpy(g, first, len);
	} else if (errno == ERANGE && len > sizeof(first)) {
		g = malloc(len);
		if (!g || getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, g,
				     &len) < 0) {
			free(g);
			return;
		}
	} else {
		return;
	}
	p->groups = g;
	p->n_groups = len / sizeof(gid_t);
}

void access_peer_get(struct access_peer *p, int fd)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		cred = (struct ucred){ .pid = 0, .uid = (uid_t)-1,
				       .gid = (gid_t)-1 };
	*p = (struct access_peer){
		.pid = cred.pid, .uid = cred.uid, .gid = cred.gid,
	};
	access_peer_groups(p, fd);
}

void access_peer_fini(struct access_peer *p)
{
	free(p->groups);
	p->groups = NULL;
	p->n_groups = 0;
}

/* Whether p's uid is one of who's uids, or its primary or a supplementary
 * group one of who's groups.  All as the kernel saw them at connect. */
static bool access_is(const struct access_peer *p,
		      const struct access_principal *who, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (!who[i].group) {
			if (p->uid == who[i].id)
				return true;
			continue;
		}
		if (p->gid == who[i].id)
			return true;
		for (size_t j = 0; j < p->n_groups; j++)
			if (p->groups[j] == who[i].id)
				return true;
	}
	return false;
}

bool access_is_owner(const struct access_rules *r,
		     const struct access_peer *p)
{
	return p->uid == 0 || p->uid == r->self_uid;
}

bool access_may_subscribe(const struct access_rules *r,
			  const struct access_peer *p, const char *target)
{
	if (access_is_owner(r, p))
		return true;
	if (r->n_allow == 0) {
		struct access_principal g = { .group = true,
					      .id = r->default_gid };
		return r->default_gid != (gid_t)-1 && access_is(p, &g, 1);
	}
	for (size_t i = 0; i < r->n_allow; i++) {
		const struct access_allow *a = &r->allow[i];
		if ((streq(a->target, "*") || streq(a->target, target)) &&
		    access_is(p, a->who, a->n_who))
			return true;
	}
	return false;
}

bool access_is_admin(const struct access_rules *r,
		     const struct access_peer *p)
{
	return access_is_owner(r, p) || access_is(p, r->admin, r->n_admin);
}
