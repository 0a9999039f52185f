/*
 * The last good values on disk; see state.h.
 */
#include <fcntl.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent.h"
#include "common/crypto.h"
#include "common/log.h"
#include "common/loop.h"
#include "common/util.h"
#include "ipc/msg.h"
#include "state.h"
#include "target.h"

#define STATE_FORMAT 1

struct state {
	struct agent *agent;
	struct loop_timer *save; /* a save due */
	char *dir;
	char *path;	/* dir/STATE_FILE */
	char *tmp;	/* dir/.STATE_FILE.tmp */

	pthread_t thread;
	pthread_mutex_t lock;
	pthread_cond_t wake;
	/* Guarded by lock: the snapshot to write next (secret), the thread
	 * told to finish, and the last error. */
	uint8_t *pending;
	size_t pending_len;
	bool stop;
	char error[512];
};

/* Keeps why for status and logs it; from either thread. */
PRINTF(2, 3)
static void state_fail(struct state *s, const char *fmt, ...)
{
	char why[sizeof(s->error)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	pthread_mutex_lock(&s->lock);
	memcpy(s->error, why, sizeof(why));
	pthread_mutex_unlock(&s->lock);
	log_warning("%s", why);
}

static void state_ok(struct state *s)
{
	pthread_mutex_lock(&s->lock);
	s->error[0] = '\0';
	pthread_mutex_unlock(&s->lock);
}

static void bytes_free(uint8_t *p, size_t len)
{
	if (p)
		explicit_bzero(p, len);
	free(p);
}

/* Writes one snapshot durably: temp file, fsync, rename, fsync of the
 * directory.  On the writer thread. */
static int state_write(struct state *s, const uint8_t *buf, size_t len)
{
	int fd, dfd, r;

	/* A new file each time, made by us with mode 0600: whatever was at
	 * the temp name (left by a crash, or put there) is not written
	 * into. */
	if (unlink(s->tmp) < 0 && errno != ENOENT) {
		r = neg_errno();
		state_fail(s, "state: cannot remove %s: %s", s->tmp,
			   strerror(-r));
		return r;
	}
	fd = open(s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0) {
		r = neg_errno();
		state_fail(s, "state: cannot create %s: %s", s->tmp,
			   strerror(-r));
		return r;
	}
	r = 0;
	if (fchmod(fd, 0600) < 0 || (r = fd_write_all(fd, buf, len)) < 0 ||
	    fsync(fd) < 0) {
		r = r < 0 ? r : neg_errno();
		close(fd);
		unlink(s->tmp);
		state_fail(s, "state: cannot write %s: %s", s->tmp,
			   strerror(-r));
		return r;
	}
	close(fd);
	if (rename(s->tmp, s->path) < 0) {
		r = neg_errno();
		unlink(s->tmp);
		state_fail(s, "state: cannot rename %s to %s: %s", s->tmp,
			   s->path, strerror(-r));
		return r;
	}
	dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	state_ok(s);
	return 0;
}

static void *state_thread(void *data)
{
	struct state *s = data;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		while (!s->pending && !s->stop)
			pthread_cond_wait(&s->wake, &s->lock);
		if (!s->pending)
			break; /* stopping, nothing left to write */
		uint8_t *buf = s->pending;
		size_t len = s->pending_len;
		s->pending = NULL;
		pthread_mutex_unlock(&s->lock);
		(void)state_write(s, buf, len);
		bytes_free(buf, len);
		pthread_mutex_lock(&s->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

/* The directory must be the agent's alone: whoever else could write in
 * it could swap the saved values for their own, or watch them being
 * written. */
static int state_check_dir(const char *dir)
{
	struct stat st;

	if (stat(dir, &st) < 0) {
		int r = neg_errno();
		log_error("state: %s: %s", dir, strerror(-r));
		return r;
	}
	if (!S_ISDIR(st.st_mode)) {
		log_error("state: %s is %s, not a directory", dir,
			  file_type_name(st.st_mode));
		return -ENOTDIR;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 022) != 0) {
		log_error("state: %s must be owned by uid %u and writable by no "
			  "one else (it is uid %u, mode %04o)", dir,
			  (unsigned)geteuid(), (unsigned)st.st_uid,
			  (unsigned)(st.st_mode & 07777));
		return -EPERM;
	}
	return 0;
}

static char *path_join(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);

	if (p)
		snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static void state_save_now(struct loop_timer *t, void *data);

static void state_observe(const struct change *c, void *data)
{
	if (c->kind == CHANGE_ACCEPTED)
		state_save(data);
}

int state_new(const char *dir, struct agent *a, struct state **out)
{
	struct state *s;
	int r;

	*out = NULL;
	if (!dir)
		return 0;
	if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
		r = neg_errno();
		log_error("state: cannot create %s: %s", dir, strerror(-r));
		return r;
	}
	r = state_check_dir(dir);
	if (r < 0)
		return r;
	s = zalloc(sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->agent = a;
	s->save = loop_timer_new(a->loop, state_save_now, s);
	s->dir = strdup(dir);
	s->path = path_join(dir, STATE_FILE);
	s->tmp = path_join(dir, "." STATE_FILE ".tmp");
	if (!s->save || !s->dir || !s->path || !s->tmp) {
		r = -ENOMEM;
		goto err_state;
	}
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->wake, NULL);
	r = -pthread_create(&s->thread, NULL, state_thread, s);
	if (r < 0) {
		log_error("state: cannot start the writer thread: %s",
			  strerror(-r));
		pthread_cond_destroy(&s->wake);
		pthread_mutex_destroy(&s->lock);
		goto err_state;
	}
	r = changes_observe(&a->changes, state_observe, s);
	if (r < 0) {
		state_free(s);
		return r;
	}
	*out = s;
	return 0;

err_state:
	loop_timer_free(s->save);
	free(s->tmp);
	free(s->path);
	free(s->dir);
	free(s);
	return r;
}

void state_free(struct state *s)
{
	if (!s)
		return;
	changes_forget(&s->agent->changes, state_observe, s);
	if (loop_timer_armed(s->save))
		state_save_now(s->save, s);
	loop_timer_free(s->save);
	pthread_mutex_lock(&s->lock);
	s->stop = true;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
	pthread_join(s->thread, NULL);
	bytes_free(s->pending, s->pending_len);
	pthread_cond_destroy(&s->wake);
	pthread_mutex_destroy(&s->lock);
	free(s->tmp);
	free(s->path);
	free(s->dir);
	free(s);
}

const char *state_dir(const struct state *s)
{
	return s ? s->dir : NULL;
}

bool state_error(struct state *s, char *buf, size_t size)
{
	bool any;

	if (!s)
		return false;
	pthread_mutex_lock(&s->lock);
	any = s->error[0] != '\0';
	snprintf(buf, size, "%s", s->error);
	pthread_mutex_unlock(&s->lock);
	return any;
}

/* What to keep of src: the value in force, else the one saved before the
 * restart that is not needed yet (a value whose first validation is still
 * under way must not be forgotten by a save that another target
 * caused). */
static const char *state_value(const struct source *src)
{
	return src->value ? src->value : src->saved;
}

/* The snapshot as msgpack (format in state.h), in w. */
static void state_pack(struct agent *a, struct ipc_writer *w)
{
	size_t n = 0;

	for (size_t i = 0; i < a->n_targets; i++)
		for (int r = 0; r < ROLE_COUNT; r++)
			n += state_value(&a->targets[i]->src[r]) != NULL;
	msgpack_pack_map(&w->pk, 2);
	ipc_pack_kv_u64(w, "format", STATE_FORMAT);
	ipc_pack_key(w, "values");
	msgpack_pack_array(&w->pk, n);
	for (size_t i = 0; i < a->n_targets; i++) {
		const struct target *t = a->targets[i];
		for (int r = 0; r < ROLE_COUNT; r++) {
			const struct source *src = &t->src[r];
			const char *v = state_value(src);
			if (!v)
				continue;
			msgpack_pack_map(&w->pk, 5);
			ipc_pack_kv_str(w, "target", t->name);
			ipc_pack_kv_str(w, "role",
					target_role_name((enum target_role)r));
			ipc_pack_kv_str(w, "conninfo", v);
			ipc_pack_kv_bool(w, "standby", src->value ?
					 src->value_standby : src->saved_standby);
			ipc_pack_kv_i64(w, "validated", src->value ?
					src->validated_wall : src->saved_wall);
		}
	}
}

void state_save(struct state *s)
{
	if (s && !loop_timer_armed(s->save))
		loop_timer_arm_in(s->save, STATE_SAVE_DELAY_MS);
}

static void state_save_now(struct loop_timer *t, void *data)
{
	struct state *s = data;
	struct agent *a = s->agent;
	struct ipc_writer w;
	uint8_t *buf;
	size_t len;
	int r;

	loop_timer_disarm(t);
	ipc_writer_init_plain(&w);
	state_pack(a, &w);
	if (w.failed) {
		ipc_writer_fini(&w);
		state_fail(s, "state: out of memory");
		return;
	}
	if (a->keys.n_held > 0) {
		r = crypt_seal_file(crypt_key_public(a->keys.held[0]),
				    (const uint8_t *)w.buf, w.len, &buf, &len);
		ipc_writer_fini(&w);
		if (r < 0) {
			state_fail(s, "state: cannot seal the saved values: %s",
				   strerror(-r));
			return;
		}
	} else {
		buf = malloc(w.len ? w.len : 1);
		len = w.len;
		if (buf)
			memcpy(buf, w.buf, w.len);
		ipc_writer_fini(&w);
		if (!buf) {
			state_fail(s, "state: out of memory");
			return;
		}
	}
	pthread_mutex_lock(&s->lock);
	bytes_free(s->pending, s->pending_len); /* superseded */
	s->pending = buf;
	s->pending_len = len;
	pthread_cond_signal(&s->wake);
	pthread_mutex_unlock(&s->lock);
}

/* The string at key of map m, or NULL if absent or not a string; copied
 * into a malloc'ed NUL-terminated string (NULL also for a NUL inside). */
static char *map_str(const msgpack_object *m, const char *key)
{
	const msgpack_object *o = ipc_map_get(m, key);

	if (!o || o->type != MSGPACK_OBJECT_STR ||
	    memchr(o->via.str.ptr, '\0', o->via.str.size))
		return NULL;
	return strndup(o->via.str.ptr, o->via.str.size);
}

/* Hands each saved value to its target.  Returns 0, or -EINVAL with why
 * in err. */
static int state_apply(struct agent *a, const uint8_t *buf, size_t len,
		       char *err, size_t errlen)
{
	msgpack_unpacked u;
	const msgpack_object *fmt, *values;
	size_t off = 0;
	int r = -EINVAL;

	if (ipc_msgpack_check(buf, len) < 0) {
		snprintf(err, errlen, "not a saved-values file");
		return -EINVAL;
	}
	msgpack_unpacked_init(&u);
	if (msgpack_unpack_next(&u, (const char *)buf, len, &off) !=
	    MSGPACK_UNPACK_SUCCESS || u.data.type != MSGPACK_OBJECT_MAP) {
		snprintf(err, errlen, "not a saved-values file");
		goto out;
	}
	fmt = ipc_map_get(&u.data, "format");
	values = ipc_map_get(&u.data, "values");
	if (!fmt || fmt->type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
	    fmt->via.u64 != STATE_FORMAT) {
		snprintf(err, errlen, "format %s, this agent reads %d",
			 fmt && fmt->type == MSGPACK_OBJECT_POSITIVE_INTEGER
				 ? "newer" : "unknown", STATE_FORMAT);
		goto out;
	}
	if (!values || values->type != MSGPACK_OBJECT_ARRAY) {
		snprintf(err, errlen, "no list of values");
		goto out;
	}
	for (uint32_t i = 0; i < values->via.array.size; i++) {
		const msgpack_object *v = &values->via.array.ptr[i];
		const msgpack_object *sb, *at;
		char *target = NULL, *role = NULL, *conninfo = NULL;
		struct target *t;

		if (v->type != MSGPACK_OBJECT_MAP)
			continue;
		target = map_str(v, "target");
		role = map_str(v, "role");
		conninfo = map_str(v, "conninfo");
		sb = ipc_map_get(v, "standby");
		at = ipc_map_get(v, "validated");
		t = target ? target_find(a, target) : NULL;
		/* A target this agent no longer has is dropped at the next
		 * save. */
		if (t && role && conninfo && *conninfo) {
			enum target_role rl = streq(role, "primary")
						      ? ROLE_PRIMARY
					      : streq(role, "secondary")
						      ? ROLE_SECONDARY
						      : ROLE_NONE;
			if (rl != ROLE_NONE)
				target_set_saved(
					t, rl, conninfo,
					sb && sb->type == MSGPACK_OBJECT_BOOLEAN &&
						sb->via.boolean,
					at && at->type ==
						MSGPACK_OBJECT_POSITIVE_INTEGER
						? (int64_t)at->via.u64 : 0);
		}
		free(target);
		free(role);
		free_secret(conninfo);
	}
	r = 0;
out:
	msgpack_unpacked_destroy(&u);
	return r;
}

void state_load(struct state *s, struct agent *a)
{
	struct stat st;
	uint8_t *buf = NULL, *plain = NULL;
	size_t len = 0, plain_len = 0;
	char err[256];
	struct writers w;
	char why[256] = "";
	int fd, r;

	if (!s)
		return;
	fd = file_open_regular(s->path, &st);
	if (fd == -ENOENT)
		return;
	if (fd < 0) {
		state_fail(s, "state: %s: %s", s->path,
			   fd == -EINVAL || fd == -EISDIR
				   ? file_type_name(st.st_mode) : strerror(-fd));
		return;
	}
	if (st.st_uid != geteuid() || (st.st_mode & 077) != 0) {
		state_fail(s, "state: %s is ignored: it must be owned by uid %u "
			   "and not accessible by group or others (it is uid "
			   "%u, mode %04o)", s->path, (unsigned)geteuid(),
			   (unsigned)st.st_uid, (unsigned)(st.st_mode & 07777));
		goto out;
	}
	/* Nor may anyone else be able to put another file in its place
	 * (a directory on the way that others can write): its values are
	 * published as the last good ones. */
	if (writers_of_path(s->path, fd, &w, why, sizeof(why)) < 0 ||
	    !writers_private(&w)) {
		state_fail(s, "state: %s is ignored: others than root and this "
			   "user can replace it (%s)", s->path, why);
		goto out;
	}
	if (st.st_size > STATE_FILE_MAX) {
		state_fail(s, "state: %s is ignored: over %d bytes", s->path,
			   STATE_FILE_MAX);
		goto out;
	}
	buf = malloc((size_t)st.st_size + 1);
	if (!buf) {
		state_fail(s, "state: out of memory");
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, (size_t)st.st_size + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			state_fail(s, "state: cannot read %s: %s", s->path,
				   strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > (size_t)st.st_size) {
			state_fail(s, "state: %s changed while read", s->path);
			goto out;
		}
	}
	if (crypt_is_sealed_file(buf, len)) {
		r = crypt_open_file(a->keys.held, a->keys.n_held, buf, len,
				    &plain, &plain_len, err, sizeof(err));
		if (r < 0) {
			state_fail(s, "state: %s is ignored: %s", s->path, err);
			goto out;
		}
	}
	r = plain ? state_apply(a, plain, plain_len, err, sizeof(err))
		  : state_apply(a, buf, len, err, sizeof(err));
	if (r < 0)
		state_fail(s, "state: %s is ignored: %s", s->path, err);
	else
		log_info("state: read the last good values from %s", s->path);
out:
	crypt_free_plain(plain, plain_len);
	bytes_free(buf, len);
	close(fd);
}
