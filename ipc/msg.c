/*
 * Message decoding and validation, and msgpack body writing; see msg.h.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "common/util.h"
#include "msg.h"

static const char *const ipc_type_names[IPC_TYPE_COUNT] = {
	[IPC_HELLO] = "hello",	 [IPC_SUBSCRIBE] = "subscribe",
	[IPC_UPDATE] = "update", [IPC_ACK] = "ack",
	[IPC_STATUS] = "status", [IPC_RELOAD] = "reload",
	[IPC_ERROR] = "error",	 [IPC_OK] = "ok",
	[IPC_NACK] = "nack",	 [IPC_SETTINGS] = "settings",
	[IPC_FAILOVER] = "failover", [IPC_FAILBACK] = "failback",
	[IPC_RECONNECT] = "reconnect", [IPC_PING] = "ping",
	[IPC_METRICS] = "metrics",
};

const char *ipc_type_name(enum ipc_type type)
{
	if (type <= IPC_INVALID || type >= IPC_TYPE_COUNT)
		return "invalid";
	return ipc_type_names[type];
}

enum ipc_type ipc_type_from_name(const char *name)
{
	for (int t = IPC_INVALID + 1; t < IPC_TYPE_COUNT; t++)
		if (streq(name, ipc_type_names[t]))
			return (enum ipc_type)t;
	return IPC_INVALID;
}

/* msgpack structure walk (see ipc_msgpack_check) */

static int be(const uint8_t **p, const uint8_t *end, unsigned n, uint64_t *v)
{
	if ((size_t)(end - *p) < n)
		return -EPROTO;
	*v = 0;
	for (unsigned i = 0; i < n; i++)
		*v = *v << 8 | (*p)[i];
	*p += n;
	return 0;
}

static int ipc_walk(const uint8_t **pp, const uint8_t *end, unsigned depth)
{
	const uint8_t *p = *pp;
	uint64_t n = 0, skip = 0;
	int container = 0; /* 1 array, 2 map */
	uint8_t b;

	if (p >= end)
		return -EPROTO;
	b = *p++;
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
		skip = 0;
	} else if (b <= 0x8f) {
		container = 2, n = b & 0x0f;
	} else if (b <= 0x9f) {
		container = 1, n = b & 0x0f;
	} else if (b <= 0xbf) {
		skip = b & 0x1f;
	} else {
		int r = 0;
		switch (b) {
		case 0xc4: case 0xd9: r = be(&p, end, 1, &skip); break;
		case 0xc5: case 0xda: r = be(&p, end, 2, &skip); break;
		case 0xc6: case 0xdb: r = be(&p, end, 4, &skip); break;
		case 0xc7: r = be(&p, end, 1, &skip), skip++; break;
		case 0xc8: r = be(&p, end, 2, &skip), skip++; break;
		case 0xc9: r = be(&p, end, 4, &skip), skip++; break;
		case 0xcc: case 0xd0: skip = 1; break;
		case 0xcd: case 0xd1: skip = 2; break;
		case 0xca: case 0xce: case 0xd2: skip = 4; break;
		case 0xcb: case 0xcf: case 0xd3: skip = 8; break;
		case 0xd4: skip = 2; break;
		case 0xd5: skip = 3; break;
		case 0xd6: skip = 5; break;
		case 0xd7: skip = 9; break;
		case 0xd8: skip = 17; break;
		case 0xdc: container = 1, r = be(&p, end, 2, &n); break;
		case 0xdd: container = 1, r = be(&p, end, 4, &n); break;
		case 0xde: container = 2, r = be(&p, end, 2, &n); break;
		case 0xdf: container = 2, r = be(&p, end, 4, &n); break;
		default: return -EPROTO; /* 0xc1 is never used */
		}
		if (r < 0)
			return r;
	}
	if (container) {
		if (depth >= IPC_DEPTH_MAX)
			return -EPROTO;
		if (container == 2)
			n *= 2;
		/* Every element takes at least one byte. */
		if (n > (uint64_t)(end - p))
			return -EPROTO;
		for (uint64_t i = 0; i < n; i++) {
			int r = ipc_walk(&p, end, depth + 1);
			if (r < 0)
				return r;
		}
	} else {
		if (skip > (uint64_t)(end - p))
			return -EPROTO;
		p += skip;
	}
	*pp = p;
	return 0;
}

int ipc_msgpack_check(const uint8_t *buf, size_t len)
{
	const uint8_t *p, *end;
	int r;

	if (len == 0) /* no object; and buf may be NULL */
		return -EPROTO;
	p = buf;
	end = buf + len;
	r = ipc_walk(&p, end, 0);

	if (r < 0)
		return r;
	return p == end ? 0 : -EPROTO;
}

/* decoding */

/* The string fields, F_NAME to F_MESSAGE, stay contiguous: nil reads as
 * an absent optional string for exactly those (field_is_str). */
enum ipc_field {
	F_ID, F_VERSION, F_PID, F_GENERATION, F_VALID, F_NAME, F_TARGET,
	F_CONNINFO, F_REASON, F_SERVER, F_INSTANCE, F_CODE, F_MESSAGE,
	F_TARGETS,
	F_POOL_MAX, F_POOL_MIN, F_POOL_TIMEOUT_MS, F_POOL_IDLE_TIMEOUT_MS,
	F_STANDBY, F_FORCE,
};

static bool field_is_str(enum ipc_field f)
{
	return f >= F_NAME && f <= F_MESSAGE;
}

#define BIT(f) (1u << (f))

/* Fields each message type must carry (besides "type"). */
static const unsigned ipc_required[IPC_TYPE_COUNT] = {
	[IPC_HELLO] = BIT(F_VERSION) | BIT(F_NAME) | BIT(F_PID),
	[IPC_SUBSCRIBE] = BIT(F_TARGETS),
	[IPC_UPDATE] = BIT(F_TARGET) | BIT(F_GENERATION) | BIT(F_CONNINFO),
	[IPC_ACK] = BIT(F_TARGET) | BIT(F_GENERATION),
	[IPC_ERROR] = BIT(F_CODE) | BIT(F_MESSAGE),
	[IPC_NACK] = BIT(F_TARGET) | BIT(F_GENERATION) | BIT(F_MESSAGE),
	[IPC_SETTINGS] = BIT(F_TARGET),
	[IPC_FAILOVER] = BIT(F_TARGET),
	[IPC_FAILBACK] = BIT(F_TARGET),
};

static const struct {
	const char *key;
	enum ipc_field field;
} ipc_keys[] = {
	{ "id", F_ID },		    { "version", F_VERSION },
	{ "pid", F_PID },	    { "generation", F_GENERATION },
	{ "valid", F_VALID },	    { "name", F_NAME },
	{ "target", F_TARGET },	    { "conninfo", F_CONNINFO },
	{ "reason", F_REASON },	    { "server", F_SERVER },
	{ "standby", F_STANDBY },   { "code", F_CODE },
	{ "message", F_MESSAGE },   { "targets", F_TARGETS },
	{ "pool_max", F_POOL_MAX }, { "pool_min", F_POOL_MIN },
	{ "pool_timeout_ms", F_POOL_TIMEOUT_MS },
	{ "pool_idle_timeout_ms", F_POOL_IDLE_TIMEOUT_MS },
	{ "instance", F_INSTANCE }, { "force", F_FORCE },
};

PRINTF(3, 4)
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EPROTO;
}

static bool key_is(const msgpack_object *k, const char *s)
{
	size_t n = strlen(s);
	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	       memcmp(k->via.str.ptr, s, n) == 0;
}

const msgpack_object *ipc_map_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++)
		if (key_is(&map->via.map.ptr[i].key, key))
			return &map->via.map.ptr[i].val;
	return NULL;
}

static int str_cmp(const msgpack_object *x, const msgpack_object *y)
{
	if (x->via.str.size != y->via.str.size)
		return x->via.str.size < y->via.str.size ? -1 : 1;
	if (!x->via.str.size)
		return 0;
	return memcmp(x->via.str.ptr, y->via.str.ptr, x->via.str.size);
}

static int key_cmp(const void *a, const void *b)
{
	return str_cmp(*(const msgpack_object *const *)a,
		       *(const msgpack_object *const *)b);
}

/* Whether a map of string keys names one twice.  Small maps (all our
 * messages) are compared pairwise; large ones are sorted, so a hostile
 * frame of thousands of keys costs n log n, not n^2. */
static int map_has_duplicate(const msgpack_object *o)
{
	uint32_t n = o->via.map.size;
	const msgpack_object **keys;
	bool dup = false;

	if (n <= 32) {
		for (uint32_t i = 0; i < n; i++)
			for (uint32_t j = i + 1; j < n; j++)
				if (str_cmp(&o->via.map.ptr[i].key,
					    &o->via.map.ptr[j].key) == 0)
					return 1;
		return 0;
	}
	keys = malloc(n * sizeof(*keys));
	if (!keys)
		return -ENOMEM;
	for (uint32_t i = 0; i < n; i++)
		keys[i] = &o->via.map.ptr[i].key;
	qsort(keys, n, sizeof(*keys), key_cmp);
	for (uint32_t i = 1; i < n && !dup; i++)
		dup = str_cmp(keys[i - 1], keys[i]) == 0;
	free(keys);
	return dup;
}

/* The rules for every map and string in a body, nested or not, known field
 * or not (PROTOCOL.md): keys are strings, no key twice in one map, no NUL
 * in a string.  Returns 0, -EPROTO with *why set, or -ENOMEM.  Recursion
 * is bounded by IPC_DEPTH_MAX (ipc_msgpack_check ran first). */
static int ipc_check_tree(const msgpack_object *o, const char **why)
{
	int r;

	switch (o->type) {
	case MSGPACK_OBJECT_STR:
		if (o->via.str.size &&
		    memchr(o->via.str.ptr, '\0', o->via.str.size)) {
			*why = "a string holds a NUL byte";
			return -EPROTO;
		}
		return 0;
	case MSGPACK_OBJECT_ARRAY:
		for (uint32_t i = 0; i < o->via.array.size; i++)
			if ((r = ipc_check_tree(&o->via.array.ptr[i], why)) < 0)
				return r;
		return 0;
	case MSGPACK_OBJECT_MAP:
		for (uint32_t i = 0; i < o->via.map.size; i++) {
			const msgpack_object_kv *kv = &o->via.map.ptr[i];
			if (kv->key.type != MSGPACK_OBJECT_STR) {
				*why = "a map has a key that is not a string";
				return -EPROTO;
			}
			if ((r = ipc_check_tree(&kv->key, why)) < 0 ||
			    (r = ipc_check_tree(&kv->val, why)) < 0)
				return r;
		}
		r = map_has_duplicate(o);
		if (r < 0)
			return r;
		if (r) {
			*why = "a map has the same key twice";
			return -EPROTO;
		}
		return 0;
	default:
		return 0;
	}
}

/* Copies a msgpack str into a NUL-terminated string, refusing NUL bytes and
 * strings over max. */
static int copy_str(const msgpack_object *o, size_t max, char **out)
{
	char *s;

	if (o->type != MSGPACK_OBJECT_STR)
		return -EPROTO;
	if (o->via.str.size > max ||
	    memchr(o->via.str.ptr, '\0', o->via.str.size))
		return -EPROTO;
	s = malloc(o->via.str.size + 1);
	if (!s)
		return -ENOMEM;
	memcpy(s, o->via.str.ptr, o->via.str.size);
	s[o->via.str.size] = '\0';
	*out = s;
	return 0;
}

/* An agent instance id: exactly IPC_INSTANCE_LEN lowercase hex digits,
 * so that comparing two is comparing strings. */
static int get_instance(const msgpack_object *o, char **out)
{
	if (o->type != MSGPACK_OBJECT_STR ||
	    o->via.str.size != IPC_INSTANCE_LEN)
		return -EPROTO;
	for (uint32_t i = 0; i < o->via.str.size; i++) {
		char ch = o->via.str.ptr[i];
		if (!(ch >= '0' && ch <= '9') && !(ch >= 'a' && ch <= 'f'))
			return -EPROTO;
	}
	return copy_str(o, IPC_INSTANCE_LEN, out);
}

static int get_u64(const msgpack_object *o, uint64_t *v)
{
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
		return -EPROTO;
	*v = o->via.u64;
	return 0;
}

static int get_i64(const msgpack_object *o, int64_t *v)
{
	if (o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER) {
		*v = o->via.i64;
		return 0;
	}
	if (o->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    o->via.u64 > INT64_MAX)
		return -EPROTO;
	*v = (int64_t)o->via.u64;
	return 0;
}

/* A uint within [min, max]: the bounds a pool setting has on the wire
 * (protocol.h), so that a client can size its pool from it unchecked. */
static int get_u64_in(const msgpack_object *o, uint64_t min, uint64_t max,
		      bool *has, uint64_t *v)
{
	int r = get_u64(o, v);

	if (r < 0)
		return r;
	if (*v < min || *v > max)
		return -EPROTO;
	*has = true;
	return 0;
}

static int decode_targets(struct ipc_msg *m, const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_ARRAY ||
	    o->via.array.size > IPC_SUBSCRIBE_MAX)
		return -EPROTO;
	m->targets = calloc(o->via.array.size + 1, sizeof(char *));
	if (!m->targets)
		return -ENOMEM;
	for (uint32_t i = 0; i < o->via.array.size; i++) {
		int r = copy_str(&o->via.array.ptr[i], IPC_NAME_MAX,
				 &m->targets[i]);
		if (r < 0)
			return r;
		m->n_targets++;
	}
	return 0;
}

static int decode_field(struct ipc_msg *m, enum ipc_field f,
			const msgpack_object *v)
{
	/* nil stands for an absent optional string */
	if (v->type == MSGPACK_OBJECT_NIL && field_is_str(f))
		return 0;
	switch (f) {
	case F_ID:
		m->has_id = true;
		return get_u64(v, &m->id);
	case F_VERSION:
		m->has_version = true;
		return get_u64(v, &m->version);
	case F_PID:
		m->has_pid = true;
		return get_i64(v, &m->pid);
	case F_GENERATION:
		m->has_generation = true;
		return get_u64(v, &m->generation);
	case F_VALID:
		if (v->type != MSGPACK_OBJECT_BOOLEAN)
			return -EPROTO;
		m->has_valid = true;
		m->valid = v->via.boolean;
		return 0;
	case F_FORCE:
		if (v->type != MSGPACK_OBJECT_BOOLEAN)
			return -EPROTO;
		m->force = v->via.boolean;
		return 0;
	case F_STANDBY:
		if (v->type != MSGPACK_OBJECT_BOOLEAN)
			return -EPROTO;
		m->standby = v->via.boolean;
		return 0;
	case F_NAME:
		return copy_str(v, IPC_NAME_MAX, &m->name);
	case F_TARGET:
		return copy_str(v, IPC_NAME_MAX, &m->target);
	case F_CONNINFO:
		return copy_str(v, IPC_FRAME_MAX, &m->conninfo);
	case F_REASON:
		return copy_str(v, IPC_NAME_MAX, &m->reason);
	case F_SERVER:
		return copy_str(v, IPC_NAME_MAX, &m->server);
	case F_INSTANCE:
		return get_instance(v, &m->instance);
	case F_CODE:
		return copy_str(v, IPC_NAME_MAX, &m->code);
	case F_MESSAGE:
		/* A nack's text comes from a client and lands in the log and
		 * in status: bounded.  An error's is bounded by the frame. */
		return copy_str(v, m->type == IPC_NACK ? IPC_NACK_MESSAGE_MAX
						       : IPC_FRAME_MAX,
				&m->message);
	case F_TARGETS:
		return decode_targets(m, v);
	case F_POOL_MAX:
		return get_u64_in(v, 1, IPC_POOL_SIZE_MAX, &m->has_pool_max,
				  &m->pool_max);
	case F_POOL_MIN:
		return get_u64_in(v, 0, IPC_POOL_SIZE_MAX, &m->has_pool_min,
				  &m->pool_min);
	case F_POOL_TIMEOUT_MS:
		return get_u64_in(v, 0, IPC_POOL_TIMEOUT_MAX_MS,
				  &m->has_pool_timeout_ms, &m->pool_timeout_ms);
	case F_POOL_IDLE_TIMEOUT_MS:
		return get_u64_in(v, 0, IPC_POOL_TIMEOUT_MAX_MS,
				  &m->has_pool_idle_timeout_ms,
				  &m->pool_idle_timeout_ms);
	}
	return -EPROTO;
}

int ipc_msg_decode(struct ipc_msg *m, const uint8_t *body, size_t len,
		   char *err, size_t errlen)
{
	const msgpack_object *root, *type = NULL;
	const char *why = NULL;
	unsigned seen = 0;
	size_t off = 0;
	char *copy;
	int r;

	*m = (struct ipc_msg){ 0 };
	if (len > IPC_FRAME_MAX)
		return fail(err, errlen, "frame of %zu bytes is over the limit",
			    len);
	if (ipc_msgpack_check(body, len) < 0)
		return fail(err, errlen, "frame is not one msgpack object");
	/* Decode from a private copy: the tree points into it and must stay
	 * valid as long as m does. */
	copy = malloc(len ? len : 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, body, len);
	m->body = copy;
	m->body_len = len;
	msgpack_unpacked_init(&m->root);
	m->has_root = true;
	if (msgpack_unpack_next(&m->root, copy, len, &off) !=
		    MSGPACK_UNPACK_SUCCESS ||
	    off != len)
		return fail(err, errlen, "frame is not one msgpack object");
	root = &m->root.data;
	if (root->type != MSGPACK_OBJECT_MAP)
		return fail(err, errlen, "message is not a map");
	r = ipc_check_tree(root, &why);
	if (r == -ENOMEM)
		return r;
	if (r < 0)
		return fail(err, errlen, "message is malformed: %s", why);

	/* The type first: it decides how some keys read ("targets" is a
	 * list of names in a subscribe, a tree in a status reply).  Keys are
	 * strings and unique by now (ipc_check_tree). */
	type = ipc_map_get(root, "type");
	if (!type)
		return fail(err, errlen, "message has no \"type\" field");
	if (copy_str(type, IPC_NAME_MAX, &m->type_name) < 0)
		return fail(err, errlen, "field \"type\" is not a short string");
	m->type = ipc_type_from_name(m->type_name);

	for (uint32_t i = 0; i < root->via.map.size; i++) {
		const msgpack_object *k = &root->via.map.ptr[i].key;
		const msgpack_object *v = &root->via.map.ptr[i].val;

		for (size_t j = 0; j < ARRAY_SIZE(ipc_keys); j++) {
			if (!key_is(k, ipc_keys[j].key))
				continue;
			/* Anywhere but in a subscribe, "targets" is read
			 * from the tree (status reply). */
			if (ipc_keys[j].field == F_TARGETS &&
			    m->type != IPC_SUBSCRIBE)
				break;
			seen |= BIT(ipc_keys[j].field);
			r = decode_field(m, ipc_keys[j].field, v);
			if (r == -ENOMEM)
				return r;
			if (r < 0)
				return fail(err, errlen,
					    "field \"%s\" has the wrong type, "
					    "size or content",
					    ipc_keys[j].key);
			break;
		}
		/* Unknown keys are ignored: newer peers may add fields. */
	}
	if (m->type == IPC_INVALID)
		return 0;
	for (size_t j = 0; j < ARRAY_SIZE(ipc_keys); j++) {
		unsigned bit = BIT(ipc_keys[j].field);
		if ((ipc_required[m->type] & bit) && !(seen & bit))
			return fail(err, errlen,
				    "%s message lacks field \"%s\"",
				    m->type_name, ipc_keys[j].key);
	}
	/* A nil required string counts as missing. */
	if (m->type == IPC_UPDATE && !m->conninfo)
		return fail(err, errlen, "update message lacks a conninfo");
	if ((ipc_required[m->type] & BIT(F_TARGET)) && !m->target)
		return fail(err, errlen, "%s message lacks a target",
			    m->type_name);
	if (m->type == IPC_HELLO && !m->name)
		return fail(err, errlen, "hello message lacks a name");
	if (m->type == IPC_ERROR && (!m->code || !m->message))
		return fail(err, errlen, "error message lacks code or message");
	if (m->type == IPC_NACK && !m->message)
		return fail(err, errlen, "nack message lacks a message");
	/* Each setting is within its bounds already; together they must
	 * make a pool that can exist. */
	if (m->type == IPC_SETTINGS && m->has_pool_min && m->has_pool_max &&
	    m->pool_min > m->pool_max)
		return fail(err, errlen,
			    "settings message has pool_min %llu over pool_max "
			    "%llu",
			    (unsigned long long)m->pool_min,
			    (unsigned long long)m->pool_max);
	return 0;
}

void ipc_msg_fini(struct ipc_msg *m)
{
	free(m->type_name);
	free(m->name);
	free(m->target);
	free_secret(m->conninfo);
	free(m->reason);
	free(m->server);
	free(m->instance);
	free(m->code);
	free(m->message);
	for (size_t i = 0; i < m->n_targets; i++)
		free(m->targets[i]);
	free(m->targets);
	if (m->has_root)
		msgpack_unpacked_destroy(&m->root);
	if (m->body)
		explicit_bzero(m->body, m->body_len);
	free(m->body);
	*m = (struct ipc_msg){ 0 };
}

/* text */

size_t ipc_utf8_char(const char *s, size_t n, uint32_t *cp)
{
	const unsigned char *u = (const unsigned char *)s;
	size_t len;
	uint32_t c;

	if (n == 0)
		return 0;
	if (u[0] < 0x80) {
		*cp = u[0];
		return 1;
	}
	if (u[0] >= 0xc2 && u[0] <= 0xdf)
		len = 2, c = u[0] & 0x1f;
	else if (u[0] >= 0xe0 && u[0] <= 0xef)
		len = 3, c = u[0] & 0x0f;
	else if (u[0] >= 0xf0 && u[0] <= 0xf4)
		len = 4, c = u[0] & 0x07;
	else
		return 0;
	if (n < len)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((u[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (u[i] & 0x3f);
	}
	/* Overlong forms, surrogates, past U+10FFFF. */
	if ((len == 3 && c < 0x800) || (len == 4 && c < 0x10000) ||
	    (c >= 0xd800 && c <= 0xdfff) || c > 0x10ffff)
		return 0;
	*cp = c;
	return len;
}

bool ipc_char_printable(uint32_t cp)
{
	return !(cp < 0x20 || (cp >= 0x7f && cp <= 0x9f) ||
		 cp == 0x061c || cp == 0x200e || cp == 0x200f ||
		 (cp >= 0x2028 && cp <= 0x202e) ||
		 (cp >= 0x2066 && cp <= 0x2069));
}

bool ipc_text_is_clean(const char *s, size_t n)
{
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t len = ipc_utf8_char(s + i, n - i, &cp);
		if (len == 0 || !ipc_char_printable(cp))
			return false;
		i += len;
	}
	return true;
}

char *ipc_text_clean(const char *src, size_t n, size_t max, bool *cut)
{
	/* Each byte in gives at most 3 out (U+FFFD for an invalid one). */
	size_t cap = MIN(max, n * 3), o = 0, i = 0;
	char *out = malloc(cap + 1);

	if (!out)
		return NULL;
	while (i < n) {
		uint32_t cp;
		size_t len = ipc_utf8_char(src + i, n - i, &cp);
		const char *piece = src + i;
		size_t plen = len;

		if (len == 0) {
			piece = "\xef\xbf\xbd"; /* U+FFFD */
			plen = 3;
			len = 1;
		} else if (!ipc_char_printable(cp)) {
			piece = "?";
			plen = 1;
		}
		if (o + plen > cap)
			break;
		memcpy(out + o, piece, plen);
		o += plen;
		i += len;
	}
	out[o] = '\0';
	if (cut)
		*cut = i < n;
	return out;
}

/* writing */

static int ipc_writer_write(void *data, const char *buf, size_t len)
{
	struct ipc_writer *w = data;

	if (w->failed)
		return -1;
	if (w->len + len > w->cap) {
		size_t cap = w->cap ? w->cap : 256;
		char *nbuf;
		while (cap < w->len + len)
			cap *= 2;
		nbuf = secret_grow(w->buf, w->len, w->cap, cap);
		if (!nbuf) {
			w->failed = true;
			return -1;
		}
		w->buf = nbuf;
		w->cap = cap;
	}
	memcpy(w->buf + w->len, buf, len);
	w->len += len;
	return 0;
}

void ipc_writer_init(struct ipc_writer *w, enum ipc_type type, size_t n)
{
	*w = (struct ipc_writer){ 0 };
	msgpack_packer_init(&w->pk, w, ipc_writer_write);
	msgpack_pack_map(&w->pk, n);
	ipc_pack_kv_str(w, "type", ipc_type_name(type));
}

void ipc_writer_init_plain(struct ipc_writer *w)
{
	*w = (struct ipc_writer){ 0 };
	msgpack_packer_init(&w->pk, w, ipc_writer_write);
}

void ipc_writer_fini(struct ipc_writer *w)
{
	if (w->buf)
		explicit_bzero(w->buf, w->cap);
	free(w->buf);
	*w = (struct ipc_writer){ 0 };
}

void ipc_pack_str(struct ipc_writer *w, const char *s)
{
	if (!s) {
		msgpack_pack_nil(&w->pk);
		return;
	}
	size_t n = strlen(s);
	msgpack_pack_str(&w->pk, n);
	msgpack_pack_str_body(&w->pk, s, n);
}

void ipc_pack_key(struct ipc_writer *w, const char *key)
{
	ipc_pack_str(w, key);
}

void ipc_pack_kv_str(struct ipc_writer *w, const char *key, const char *s)
{
	ipc_pack_key(w, key);
	ipc_pack_str(w, s);
}

void ipc_pack_kv_u64(struct ipc_writer *w, const char *key, uint64_t v)
{
	ipc_pack_key(w, key);
	msgpack_pack_uint64(&w->pk, v);
}

void ipc_pack_kv_i64(struct ipc_writer *w, const char *key, int64_t v)
{
	ipc_pack_key(w, key);
	msgpack_pack_int64(&w->pk, v);
}

void ipc_pack_kv_bool(struct ipc_writer *w, const char *key, bool v)
{
	ipc_pack_key(w, key);
	if (v)
		msgpack_pack_true(&w->pk);
	else
		msgpack_pack_false(&w->pk);
}
