/*
 * Unit tests of agent/access.c: root and the agent's uid own the agent;
 * with no rule, the socket's group (primary or supplementary) may follow
 * every target, and nobody when that group is unknown; with rules, only
 * the peers a rule for the target or "*" names, by uid or by group; admins
 * by uid or group, never by a subscribe rule; and the credentials of a
 * real socket (socketpair: this process's own).
 */
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/access.h"
#include "tests/unit/check.h"

#define SELF 1000
#define SOCKET_GID 2000

static struct access_peer peer(uid_t uid, gid_t gid, gid_t *groups,
			       size_t n_groups)
{
	return (struct access_peer){ .pid = 1, .uid = uid, .gid = gid,
				     .groups = groups, .n_groups = n_groups };
}

static void test_owner(void)
{
	struct access_rules r = { .self_uid = SELF, .default_gid = (gid_t)-1 };
	struct access_peer root = peer(0, 0, NULL, 0);
	struct access_peer self = peer(SELF, 5, NULL, 0);
	struct access_peer other = peer(SELF + 1, 5, NULL, 0);

	CHECK(access_is_owner(&r, &root));
	CHECK(access_is_owner(&r, &self));
	CHECK(!access_is_owner(&r, &other));
	/* Owners may do everything, whatever the rules say. */
	CHECK(access_may_subscribe(&r, &root, "db"));
	CHECK(access_may_subscribe(&r, &self, "db"));
	CHECK(access_is_admin(&r, &self));
	CHECK(!access_may_subscribe(&r, &other, "db"));
	CHECK(!access_is_admin(&r, &other));
}

static void test_default_group(void)
{
	struct access_rules r = { .self_uid = SELF, .default_gid = SOCKET_GID };
	gid_t sup[] = { 7, SOCKET_GID };
	struct access_peer primary = peer(3000, SOCKET_GID, NULL, 0);
	struct access_peer supplementary = peer(3001, 7, sup, 2);
	struct access_peer stranger = peer(3002, 7, sup, 1);

	CHECK(access_may_subscribe(&r, &primary, "db"));
	CHECK(access_may_subscribe(&r, &supplementary, "anything"));
	CHECK(!access_may_subscribe(&r, &stranger, "db"));
	/* The socket's group follows targets; it is no admin. */
	CHECK(!access_is_admin(&r, &primary));
	/* A group that cannot be told lets no one but the owners in, not
	 * the peers whose gid happens to be (gid_t)-1. */
	r.default_gid = (gid_t)-1;
	struct access_peer nogroup = peer(3003, (gid_t)-1, NULL, 0);
	CHECK(!access_may_subscribe(&r, &nogroup, "db"));
	CHECK(!access_may_subscribe(&r, &primary, "db"));
}

static void test_rules(void)
{
	static const struct access_principal app[] = { { false, 3000 } };
	static const struct access_principal ops[] = { { true, 4000 } };
	static const struct access_principal admins[] = { { false, 3001 },
							  { true, 5000 } };
	const struct access_allow allow[] = {
		{ "db", app, 1 },
		{ "*", ops, 1 },
	};
	struct access_rules r = {
		.allow = allow, .n_allow = 2,
		.admin = admins, .n_admin = 2,
		.self_uid = SELF, .default_gid = SOCKET_GID,
	};
	gid_t sup_ops[] = { 4000 };
	gid_t sup_admin[] = { 9, 5000 };
	struct access_peer a = peer(3000, 1, NULL, 0);
	struct access_peer o = peer(3002, 1, sup_ops, 1);
	struct access_peer g = peer(3003, SOCKET_GID, NULL, 0);
	struct access_peer u = peer(3001, 1, NULL, 0);
	struct access_peer s = peer(3004, 1, sup_admin, 2);

	CHECK(access_may_subscribe(&r, &a, "db"));
	CHECK(!access_may_subscribe(&r, &a, "db2"));
	CHECK(access_may_subscribe(&r, &o, "db"));
	CHECK(access_may_subscribe(&r, &o, "db2"));
	/* With rules, the socket's group alone no longer allows anything. */
	CHECK(!access_may_subscribe(&r, &g, "db"));
	/* Admins by uid and by supplementary group; subscribe rules make
	 * no admin, and admin rules no subscriber. */
	CHECK(access_is_admin(&r, &u));
	CHECK(access_is_admin(&r, &s));
	CHECK(!access_is_admin(&r, &a));
	CHECK(!access_is_admin(&r, &o));
	CHECK(!access_may_subscribe(&r, &u, "db"));
}

static void test_socket(void)
{
	struct access_peer p;
	int sv[2];

	CHECK(socketpair(AF_UNIX, SOCK_STREAM, 0, sv) == 0);
	access_peer_get(&p, sv[0]);
	CHECK_INT(p.pid, ==, getpid());
	CHECK_INT(p.uid, ==, geteuid());
	CHECK_INT(p.gid, ==, getegid());
	CHECK_INT(p.n_groups, ==, getgroups(0, NULL));
	access_peer_fini(&p);
	CHECK(p.groups == NULL && p.n_groups == 0);
	close(sv[0]);
	close(sv[1]);

	/* Not a socket: no one's credentials, so access fails closed. */
	access_peer_get(&p, -1);
	CHECK_INT(p.uid, ==, (uid_t)-1);
	CHECK_INT(p.gid, ==, (gid_t)-1);
	CHECK_INT(p.n_groups, ==, 0);
	access_peer_fini(&p);
}

int main(void)
{
	test_owner();
	test_default_group();
	test_rules();
	test_socket();
	return check_exit();
}
