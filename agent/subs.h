/*
 * Subscriptions: which clients follow which target, the generation each
 * acked or nacked, and the push of a target's value and pool settings to
 * the clients that follow it.  The server hands it the subscribe, ack and
 * nack requests, which it answers (clients.h); it reports subscribers
 * coming, acking and going to the target (target_subscribed() and the
 * like), which counts them and completes the rotation.
 *
 * All of it runs on the agent's loop thread.
 */
#ifndef DBSWAP_AGENT_SUBS_H
#define DBSWAP_AGENT_SUBS_H

#include <stdbool.h>
#include <stdint.h>

struct access_rules;
struct agent;
struct client;
struct clients;
struct ipc_msg;
struct target;

/* One target a client follows (client.subs). */
struct subscription {
	struct target *target;
	uint64_t acked;  /* last generation acked, 0 for none */
	uint64_t nacked; /* last generation nacked and not acked since, or 0 */
	char *nack_msg;  /* its message, from the client: untrusted text */
};

/* What subscriptions need of the server; it owns every part. */
struct subs {
	struct agent *agent;
	struct clients *clients;
	const struct access_rules *access; /* who may subscribe to what */
	/* This run of the agent (PROTOCOL.md, "Agent instance"): in
	 * updates; acks for another instance are stale. */
	const char *instance;
	int64_t oversize_log_ms; /* last log line about an update too long */
};

/* c's subscription to t, or NULL. */
struct subscription *subs_find(const struct client *c,
			       const struct target *t);

/* Whether a subscriber has yet to ack t's current value; before the first
 * value nobody lags (and nobody has acked). */
bool subs_lags(const struct target *t, const struct subscription *sub);

/* The requests, answered to c: subscribe (every target named, or none),
 * ack and nack. */
void subs_subscribe(struct subs *ss, struct client *c,
		    const struct ipc_msg *m);
void subs_ack(struct subs *ss, struct client *c, const struct ipc_msg *m);
void subs_nack(struct subs *ss, struct client *c, const struct ipc_msg *m);

/* Sends t's current value to every subscriber of t. */
void subs_publish(struct subs *ss, struct target *t);
/* Sends t's pool settings in force to every subscriber of t. */
void subs_send_settings(struct subs *ss, struct target *t);

/* c is out of service: its subscriptions no longer count (the last
 * straggler leaving may complete a rotation). */
void subs_gone(struct client *c);
/* Frees c's subscriptions. */
void subs_free(struct client *c);

#endif
