/*
 * Unit test of agent/layers.c, built from its source with short writer
 * limits (LAYERS_UNCLOSED_MAX_MS, LAYERS_UNCLOSED_STABLE_MS) so that the
 * rules about files still being written run in a fraction of a second:
 *
 * - only regular files are opened: a FIFO, a socket, a directory, a
 *   device (directly or behind a symlink) is an error naming its type, and
 *   nothing blocks (a watchdog alarm fails the test if anything does);
 * - content a writer still has open is not used (the kernel's read lease
 *   says so even when the caller's inotify flag does not), until the
 *   writer closes it, or until the content has stayed the same long
 *   enough after the writer had its time;
 * - a read that fails for a reason that may pass (EMFILE) asks for a
 *   recheck with backoff and recovers;
 * - who may read what (layers.h): a file anyone may write expands no name
 *   from a file only its owner may write, nor from the environment, and
 *   opens no enc: value; a chmod alone (the same text) is judged again;
 *   a re-parse after a change below keeps the last good parse and says
 *   why; layers_walk() follows names through files, and only those that
 *   land in the region asked for;
 * - a layer defines again a name of a lower layer (or of the environment)
 *   only when its writers could write that one; a layer whose kept parse
 *   predates the lower definition loses the name at once;
 * - the log lines a file's versions cause are limited, the rest counted,
 *   and the line saying it is good again goes out;
 * - writers_of_path() (common/util.c), which those rules stand on, and
 *   key_path_check().
 */
#include <fcntl.h>
#include <ftw.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <sys/un.h>

#include "agent/keys.h"
#include "agent/layers.h"
#include "check.h"
#include "common/crypto.h"
#include "common/util.h"

static char root[] = "/tmp/test-layers.XXXXXX";

static void path_in(char *out, const char *name)
{
	snprintf(out, 512, "%s/%s", root, name);
}

static void write_text(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

	CHECK(fd >= 0);
	CHECK(write(fd, text, strlen(text)) == (ssize_t)strlen(text));
	CHECK(close(fd) == 0);
}

/* A layers set of the one file at path. */
static void layers_of(struct layers *l, const char *path)
{
	char *paths[] = { (char *)path };

	CHECK(layers_init(l, paths, 1, NULL) == 0);
}

static int reload(struct layers *l, bool writer_open, int64_t *recheck)
{
	static uint64_t seq;

	return layers_reload(l, 0, ++seq, writer_open, recheck);
}

static void expect_refused(const char *path, const char *type)
{
	struct layers l;
	int64_t recheck;

	layers_of(&l, path);
	CHECK_INT(reload(&l, false, &recheck), ==, 0);
	CHECK_INT(l.files[0].state, ==, LAYER_ERROR);
	CHECK(l.files[0].error && strstr(l.files[0].error, type));
	CHECK(l.files[0].error && strstr(l.files[0].error, path));
	/* Nothing to retry: a new file at the path is seen by the watcher. */
	CHECK_INT(recheck, ==, -1);
	layers_fini(&l);
}

static void test_special_files(void)
{
	char fifo[512], dir[512], sock[512], dev[512], to_fifo[512];
	struct sockaddr_un addr = { .sun_family = AF_UNIX };
	int s;

	path_in(fifo, "fifo.env");
	CHECK(mkfifo(fifo, 0600) == 0);
	expect_refused(fifo, "a FIFO (named pipe), not a regular file");
	path_in(to_fifo, "to-fifo.env");
	CHECK(symlink(fifo, to_fifo) == 0);
	expect_refused(to_fifo, "a FIFO");

	path_in(dir, "dir.env");
	CHECK(mkdir(dir, 0700) == 0);
	expect_refused(dir, "a directory");

	path_in(sock, "sock.env");
	CHECK(strlen(sock) < sizeof(addr.sun_path));
	memcpy(addr.sun_path, sock, strlen(sock) + 1);
	s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	CHECK(s >= 0 && bind(s, (struct sockaddr *)&addr, sizeof(addr)) == 0);
	expect_refused(sock, "a socket");
	close(s);

	path_in(dev, "dev.env");
	CHECK(symlink("/dev/null", dev) == 0);
	expect_refused(dev, "a character device");
}

static void test_writer_open(void)
{
	char path[512];
	struct layers l;
	int64_t recheck;
	int fd;

	path_in(path, "writer.env");
	write_text(path, "A=1\n");
	layers_of(&l, path);
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "A"), "1");

	/* A writer has it open with half a new version.  Our inotify flag
	 * says nothing; the lease knows. */
	fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK(write(fd, "A=2", 3) == 3);
	CHECK_INT(reload(&l, false, &recheck), ==, 0);
	CHECK_INT(l.files[0].state, ==, LAYER_WRITING);
	CHECK(l.files[0].error && strstr(l.files[0].error,
					 "open for writing"));
	CHECK(recheck > 0 && recheck <= LAYERS_UNCLOSED_RECHECK_MS);
	CHECK_STR(layers_get(&l, "A"), "1");

	/* It keeps writing: still put off, even past the writer's time. */
	for (int i = 0; i < 6; i++) {
		usleep(LAYERS_UNCLOSED_STABLE_MS * 1000 / 2);
		CHECK(write(fd, "2", 1) == 1);
		CHECK_INT(reload(&l, false, &recheck), ==, 0);
		CHECK_INT(l.files[0].state, ==, LAYER_WRITING);
	}
	CHECK_STR(layers_get(&l, "A"), "1");

	/* Closed: used at once. */
	CHECK(write(fd, "\n", 1) == 1);
	CHECK(close(fd) == 0);
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	CHECK_INT(l.files[0].state, ==, LAYER_OK);
	CHECK_INT(recheck, ==, -1);
	CHECK_STR(layers_get(&l, "A"), "2222222");

	/* Opened for writing but not changed: nothing to wait for. */
	fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_INT(reload(&l, true, &recheck), ==, 0);
	CHECK_INT(l.files[0].state, ==, LAYER_OK);
	CHECK_INT(recheck, ==, -1);

	/* A writer that never closes: once it had its time and the content
	 * stayed the same long enough, the content is used. */
	CHECK(write(fd, "B=3\n", 4) == 4);
	int64_t start = now_ms();
	int r;
	while ((r = reload(&l, true, &recheck)) == 0 &&
	       l.files[0].state == LAYER_WRITING &&
	       now_ms() - start < 10 * LAYERS_UNCLOSED_MAX_MS) {
		CHECK(recheck > 0);
		usleep((useconds_t)recheck * 1000);
	}
	CHECK_INT(r, ==, 1);
	CHECK_INT(l.files[0].state, ==, LAYER_OK);
	CHECK(now_ms() - start >= LAYERS_UNCLOSED_MAX_MS);
	CHECK_STR(layers_get(&l, "B"), "3");
	CHECK(close(fd) == 0);
	layers_fini(&l);
}

/* Out of descriptors: the read is retried with backoff and recovers. */
static void test_emfile(void)
{
	char path[512];
	struct layers l;
	struct rlimit old, low;
	int64_t recheck, first;
	int spare;

	path_in(path, "emfile.env");
	write_text(path, "A=1\n");
	layers_of(&l, path);
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	write_text(path, "A=2\n");

	/* Every descriptor up to a limit just above the highest in use. */
	spare = dup(0);
	CHECK(spare >= 0);
	CHECK(getrlimit(RLIMIT_NOFILE, &old) == 0);
	low = old;
	low.rlim_cur = (rlim_t)spare + 1;
	CHECK(setrlimit(RLIMIT_NOFILE, &low) == 0);
	CHECK_INT(reload(&l, false, &recheck), ==, 0);
	first = recheck;
	CHECK(first >= LAYERS_RETRY_FIRST_MS / 2 &&
	      first <= LAYERS_RETRY_FIRST_MS);
	CHECK_INT(l.files[0].state, ==, LAYER_ERROR);
	CHECK(l.files[0].error &&
	      strstr(l.files[0].error, "Too many open files; retrying in"));
	CHECK_INT(reload(&l, false, &recheck), ==, 0);
	CHECK(recheck >= LAYERS_RETRY_FIRST_MS); /* backing off */
	CHECK_STR(layers_get(&l, "A"), "1");

	CHECK(setrlimit(RLIMIT_NOFILE, &old) == 0);
	close(spare);
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	CHECK_INT(recheck, ==, -1);
	CHECK_INT(l.files[0].state, ==, LAYER_OK);
	CHECK_STR(layers_get(&l, "A"), "2");
	layers_fini(&l);
}

/* Each enc: value costs a public-key operation: a file asking for more
 * than LAYERS_DECODES_MAX is refused, whether they are written out or
 * come from one double-sealed value referenced again and again. */
static void test_decode_budget(void)
{
	char path[512], *once, *twice, *v;
	struct crypt_key *key;
	struct keys keys = { 0 };
	struct layers l;
	int64_t recheck, t0;
	FILE *f;

	CHECK(crypt_key_generate(&key) == 0);
	keys.held = &key;
	keys.n_held = 1;
	path_in(path, "sealed.env");
	char *paths[] = { path };

	/* LAYERS_DECODES_MAX values: fine. */
	f = fopen(path, "w");
	CHECK(f != NULL);
	for (int i = 0; i < LAYERS_DECODES_MAX; i++) {
		CHECK(crypt_seal_value(crypt_key_public(key), "x", &v) == 0);
		fprintf(f, "A%d=%s\n", i, v);
		free(v);
	}
	fclose(f);
	CHECK(layers_init(&l, paths, 1, &keys) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "A0"), "x");
	/* One more: refused, naming the limit. */
	f = fopen(path, "a");
	CHECK(f != NULL);
	CHECK(crypt_seal_value(crypt_key_public(key), "y", &v) == 0);
	fprintf(f, "B=%s\n", v);
	free(v);
	fclose(f);
	CHECK_INT(layers_reload(&l, 0, 2, false, &recheck), ==, 0);
	CHECK_INT(l.files[0].state, ==, LAYER_ERROR);
	CHECK(l.files[0].error &&
	      strstr(l.files[0].error, "more than 256 encrypted values"));
	layers_fini(&l);

	/* A decrypted value holding a CR is refused like a CR in the text
	 * (dbswapctl set --encrypt-values refuses to write one). */
	CHECK(crypt_seal_value(crypt_key_public(key), "a\rb", &v) == 0);
	f = fopen(path, "w");
	CHECK(f != NULL);
	fprintf(f, "C=%s\n", v);
	free(v);
	fclose(f);
	CHECK(layers_init(&l, paths, 1, &keys) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 0);
	CHECK(l.files[0].error &&
	      strstr(l.files[0].error, "C: decrypted value holds a carriage "
					"return"));
	layers_fini(&l);

	/* V is sealed twice: each ${V} opens once more.  A 256 KiB file of
	 * them stops at the limit, in a few tens of ms. */
	CHECK(crypt_seal_value(crypt_key_public(key), "secret", &once) == 0);
	CHECK(crypt_seal_value(crypt_key_public(key), once, &twice) == 0);
	f = fopen(path, "w");
	CHECK(f != NULL);
	fprintf(f, "V=%s\n", twice);
	while (ftell(f) < ENV_FILE_MAX - 16)
		fputs("A=${V}\n", f);
	fclose(f);
	CHECK(layers_init(&l, paths, 1, &keys) == 0);
	t0 = now_ms();
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 0);
	CHECK(now_ms() - t0 < 2000); /* a broken design takes seconds */
	CHECK(l.files[0].error &&
	      strstr(l.files[0].error, "more than 256 encrypted values"));
	layers_fini(&l);
	free(once);
	free(twice);
	crypt_key_free(key);
}

static void test_trust(void)
{
	char low[512], high[512], *paths[] = { low, high }, *v;
	struct crypt_key *key;
	struct keys keys = { 0 };
	struct layers l;
	int64_t recheck;
	FILE *f;

	path_in(low, "low.env");
	path_in(high, "high.env");
	write_text(low, "PASS=secret\nHOST=db\n");
	write_text(high, "URL=postgresql://u:${PASS}@${HOST}/d\n");
	CHECK(layers_init(&l, paths, 2, NULL) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 1, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "URL"), "postgresql://u:secret@db/d");

	/* Anyone may write it now: the same text is refused, the last good
	 * parse stays. */
	CHECK(chmod(high, 0666) == 0);
	CHECK_INT(layers_reload(&l, 1, 2, false, &recheck), ==, 0);
	CHECK_INT(l.files[1].state, ==, LAYER_ERROR);
	CHECK(l.files[1].error && strstr(l.files[1].error, ":1:20: ${PASS} is "
					 "defined in "));
	CHECK(strstr(l.files[1].error, "which anyone (who can write this "
					"file) cannot write"));
	CHECK(!strstr(l.files[1].error, "secret"));
	CHECK_STR(layers_get(&l, "URL"), "postgresql://u:secret@db/d");
	/* The lower file open to anyone as well: allowed. */
	CHECK(chmod(low, 0666) == 0);
	CHECK_INT(layers_reload(&l, 0, 3, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 3, false, &recheck), ==, 1);
	CHECK_INT(l.files[1].state, ==, LAYER_OK);
	/* Closed again with new content: the file above, re-parsed with the
	 * writers of its text, is refused; the reason says so. */
	CHECK(chmod(low, 0600) == 0);
	write_text(low, "PASS=other\nHOST=db\n");
	CHECK_INT(layers_reload(&l, 0, 4, false, &recheck), ==, 1);
	CHECK_INT(l.files[1].state, ==, LAYER_ERROR);
	CHECK(l.files[1].error && strstr(l.files[1].error, "after a change "
					 "below it"));
	CHECK_STR(layers_get(&l, "URL"), "postgresql://u:secret@db/d");
	/* The environment is root's and the agent's. */
	setenv("TEST_LAYERS_ENV", "x", 1);
	write_text(high, "E=${TEST_LAYERS_ENV}\n");
	CHECK_INT(layers_reload(&l, 1, 5, false, &recheck), ==, 0);
	CHECK(l.files[1].error && strstr(l.files[1].error, "${TEST_LAYERS_ENV} "
					 "comes from the agent's environment"));
	/* A name defined nowhere gives "" whoever writes the file. */
	write_text(high, "E=${TEST_LAYERS_NOWHERE}\n");
	CHECK_INT(layers_reload(&l, 1, 6, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "E"), "");
	layers_fini(&l);

	/* enc: values open only in files no one else may write. */
	CHECK(crypt_key_generate(&key) == 0);
	keys.held = &key;
	keys.n_held = 1;
	CHECK(crypt_seal_value(crypt_key_public(key), "x", &v) == 0);
	f = fopen(high, "w");
	CHECK(f != NULL);
	fprintf(f, "C=%s\n", v);
	fclose(f);
	free(v);
	CHECK(chmod(high, 0600) == 0);
	CHECK(layers_init(&l, paths + 1, 1, &keys) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "C"), "x");
	CHECK(chmod(high, 0620) == 0);
	CHECK_INT(layers_reload(&l, 0, 2, false, &recheck), ==, 0);
	CHECK(l.files[0].error && strstr(l.files[0].error, "C: encrypted values "
					 "are opened only in files that no one "
					 "but root"));
	CHECK(strstr(l.files[0].error, "is writable by group"));
	layers_fini(&l);
	crypt_key_free(key);
}

static void test_redefine(void)
{
	char low[512], high[512], *paths[] = { low, high };
	struct layers l;
	int64_t recheck;

	path_in(low, "rlow.env");
	path_in(high, "rhigh.env");
	write_text(low, "URL=a\n");
	write_text(high, "N=1\nURL=b\n");
	CHECK(layers_init(&l, paths, 2, NULL) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 1, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "URL"), "b");

	/* Anyone may write the file above: refused, naming file, line,
	 * name, the file below and the writer; its last good parse (root's)
	 * stays. */
	CHECK(chmod(high, 0666) == 0);
	CHECK_INT(layers_reload(&l, 1, 2, false, &recheck), ==, 0);
	CHECK_INT(l.files[1].state, ==, LAYER_ERROR);
	CHECK(l.files[1].error && strstr(l.files[1].error, ":2:1: URL is "
					 "defined in "));
	CHECK(strstr(l.files[1].error, low));
	CHECK(strstr(l.files[1].error, "which anyone (who can write this "
					"file) cannot write"));
	CHECK_STR(layers_get(&l, "URL"), "b");
	/* The file below open to anyone too: allowed. */
	CHECK(chmod(low, 0666) == 0);
	CHECK_INT(layers_reload(&l, 0, 3, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 3, false, &recheck), ==, 1);
	CHECK_INT(l.files[1].state, ==, LAYER_OK);
	CHECK_STR(layers_get(&l, "URL"), "b");
	/* Closed again: the name is the lower file's at once, though the
	 * file above keeps its parse (and says why it fails). */
	CHECK(chmod(low, 0600) == 0);
	write_text(low, "URL=c\n");
	CHECK_INT(layers_reload(&l, 0, 4, false, &recheck), ==, 1);
	CHECK_INT(l.files[1].state, ==, LAYER_ERROR);
	CHECK(l.files[1].error && strstr(l.files[1].error, "URL is defined in"));
	CHECK(strstr(l.files[1].error, "after a change below it"));
	CHECK_STR(layers_get(&l, "URL"), "c");
	CHECK_STR(layers_get(&l, "N"), "1");
	/* Where the value comes from agrees with the value: the walk the
	 * trust rules make, error messages and the origin follow the file
	 * below, not the definition passed over. */
	{
		const char *path = NULL;
		unsigned line = 0;
		size_t origin = SIZE_MAX;
		CHECK(layers_where(&l, "URL", &path, &line));
		CHECK_STR(path, low);
		CHECK(layers_origin(&l, "URL", &origin));
		CHECK_INT(origin, ==, 0);
	}
	/* The environment is root's and the agent's. */
	setenv("TEST_LAYERS_REDEF", "x", 1);
	write_text(high, "TEST_LAYERS_REDEF=y\n");
	CHECK_INT(layers_reload(&l, 1, 5, false, &recheck), ==, 0);
	CHECK(l.files[1].error && strstr(l.files[1].error, "TEST_LAYERS_REDEF "
					 "is set in the agent's environment"));
	CHECK_STR(layers_get(&l, "TEST_LAYERS_REDEF"), "x");
	/* Root's file above a file anyone may write may define its names:
	 * root can write everything. */
	CHECK(chmod(low, 0666) == 0);
	CHECK(chmod(high, 0600) == 0);
	write_text(high, "URL=r\n");
	CHECK_INT(layers_reload(&l, 0, 6, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 6, false, &recheck), ==, 1);
	CHECK_INT(l.files[1].state, ==, LAYER_OK);
	CHECK_STR(layers_get(&l, "URL"), "r");
	layers_fini(&l);
	unsetenv("TEST_LAYERS_REDEF");
}

static void test_log_limit(void)
{
	char path[512], text[128];
	struct layers l;
	struct layer *f;
	int64_t recheck = -1;
	unsigned n = LAYERS_LOG_BURST + 10;

	path_in(path, "flood.env");
	write_text(path, "A=1\n");
	layers_of(&l, path);
	f = &l.files[0];
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	/* Versions of different sizes (so no two share an identity), each
	 * rejected: the burst is logged, the rest counted, a summary goes
	 * out at once (the first) and the next is asked for. */
	for (unsigned k = 0; k < n; k++) {
		snprintf(text, sizeof(text), "A=1\n%.*s\n", (int)k + 1,
			 "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
		write_text(path, text);
		CHECK_INT(reload(&l, false, &recheck), ==, 0);
		CHECK_INT(f->state, ==, LAYER_ERROR);
	}
	CHECK(f->log_said_bad);
	CHECK_INT(f->log_suppressed, >=, 1);
	CHECK_INT(f->log_suppressed, <, 10);
	CHECK_INT(recheck, >, 0);
	CHECK_INT(recheck, <=, LAYERS_LOG_SUMMARY_MS);
	/* The same version read again logs nothing and counts nothing. */
	unsigned before = f->log_suppressed;
	CHECK_INT(reload(&l, false, &recheck), ==, 0);
	CHECK_INT(f->log_suppressed, ==, before);
	/* Good again: said though the budget is spent; the status is the
	 * file's, whatever the log left out. */
	write_text(path, "A=2\n");
	CHECK_INT(reload(&l, false, &recheck), ==, 1);
	CHECK_INT(f->state, ==, LAYER_OK);
	CHECK(f->error == NULL);
	CHECK(!f->log_said_bad);
	CHECK_INT(f->log_suppressed, ==, before);
	layers_fini(&l);
}

/* writers_of_path() (common/util.c), which the rules above stand on:
 * directories, sticky ones, symlinks on the way, "..", relative paths,
 * link loops. */
static void test_writers(void)
{
	char dir[512], open_dir[512], file[600], link[600], via[600];
	char why[512], cwd[4096];
	struct writers w;
	int fd;

	path_in(dir, "private");
	CHECK(mkdir(dir, 0700) == 0);
	snprintf(file, sizeof(file), "%s/f.env", dir);
	write_text(file, "A=1\n");
	fd = open(file, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0);
	CHECK_INT(writers_of_path(file, fd, &w, why, sizeof(why)), ==, 0);
	CHECK(writers_private(&w) && !w.anyone && why[0] == '\0');
	/* Through "..", and relative to the working directory. */
	snprintf(via, sizeof(via), "%.500s/../private/f.env", dir);
	CHECK_INT(writers_of_path(via, fd, &w, why, sizeof(why)), ==, 0);
	CHECK(getcwd(cwd, sizeof(cwd)) && chdir(dir) == 0);
	CHECK_INT(writers_of_path("f.env", fd, &w, why, sizeof(why)), ==, 0);
	CHECK(chdir(cwd) == 0);
	/* Another file at the path than the one opened: -EAGAIN. */
	snprintf(via, sizeof(via), "%s/new.env", dir);
	write_text(via, "A=2\n");
	CHECK(rename(via, file) == 0);
	CHECK_INT(writers_of_path(file, fd, &w, why, sizeof(why)), ==, -EAGAIN);
	close(fd);

	/* The directory open to anyone, then sticky (as /tmp): only the
	 * entry's owner, us, may replace the file then. */
	CHECK(chmod(dir, 0777) == 0);
	CHECK_INT(writers_of_path(file, -1, &w, why, sizeof(why)), ==, 0);
	CHECK(w.anyone && !writers_private(&w));
	CHECK(strstr(why, "directory ") && strstr(why, "private is writable by "
						   "anyone"));
	CHECK(chmod(dir, 01777) == 0);
	CHECK_INT(writers_of_path(file, -1, &w, why, sizeof(why)), ==, 0);
	CHECK(writers_private(&w));
	CHECK(chmod(dir, 0700) == 0);

	/* A symlink in a directory anyone may write, to the private file:
	 * whoever can replace the link can change what the path names. */
	path_in(open_dir, "open");
	CHECK(mkdir(open_dir, 0700) == 0);
	CHECK(chmod(open_dir, 0777) == 0);
	snprintf(link, sizeof(link), "%s/l.env", open_dir);
	CHECK(symlink(file, link) == 0);
	CHECK_INT(writers_of_path(link, -1, &w, why, sizeof(why)), ==, 0);
	CHECK(w.anyone);
	/* A relative link from a private directory into it is fine. */
	snprintf(via, sizeof(via), "%s/rel.env", dir);
	CHECK(symlink("f.env", via) == 0);
	CHECK_INT(writers_of_path(via, -1, &w, why, sizeof(why)), ==, 0);
	CHECK(writers_private(&w));
	/* A loop. */
	snprintf(via, sizeof(via), "%s/loop", dir);
	CHECK(symlink("loop", via) == 0);
	CHECK_INT(writers_of_path(via, -1, &w, why, sizeof(why)), ==, -ELOOP);
	CHECK(strstr(why, "more than 40 symlinks"));
	/* An ACL with more entries than the walk reads at once (81 named
	 * users, the last may write): not read is not none; counted as
	 * anyone.  Skipped where the file system has no ACLs. */
	{
		uint8_t acl[4 + 85 * 8];
		size_t n = 0;
		int afd;

		snprintf(via, sizeof(via), "%s/acl.env", dir);
		write_text(via, "A=1\n");
#define ACL_PUT(tag, perm, id)                                              \
	do {                                                                \
		uint32_t id_ = (id);                                        \
		uint8_t *e = acl + 4 + 8 * n++;                             \
		e[0] = (tag), e[1] = 0, e[2] = (perm), e[3] = 0;            \
		e[4] = (uint8_t)id_, e[5] = (uint8_t)(id_ >> 8);            \
		e[6] = (uint8_t)(id_ >> 16), e[7] = (uint8_t)(id_ >> 24);   \
	} while (0)
		acl[0] = 2, acl[1] = acl[2] = acl[3] = 0;
		ACL_PUT(0x01, 6, 0xffffffffu);
		for (uint32_t id = 20000; id <= 20080; id++)
			ACL_PUT(0x02, id == 20080 ? 6 : 4, id);
		ACL_PUT(0x04, 4, 0xffffffffu);
		ACL_PUT(0x10, 6, 0xffffffffu);
		ACL_PUT(0x20, 4, 0xffffffffu);
#undef ACL_PUT
		if (setxattr(via, "system.posix_acl_access", acl, 4 + 8 * n,
			     0) == 0) {
			afd = open(via, O_RDONLY | O_CLOEXEC);
			CHECK(afd >= 0);
			CHECK_INT(writers_of_path(via, afd, &w, why, sizeof(why)),
				  ==, 0);
			CHECK(w.anyone);
			CHECK(strstr(why, "ACL too large to read"));
			close(afd);
		} else {
			CHECK(errno == ENOTSUP);
		}
	}
	/* A key there is refused, naming the directory. */
	snprintf(via, sizeof(via), "%s/k.key", open_dir);
	write_text(via, "x\n");
	CHECK_INT(key_path_check(via, why, sizeof(why)), ==, -EPERM);
	CHECK(strstr(why, "open is writable by anyone"));
	CHECK(strstr(why, "(as ssh requires)"));
}

/* layers_walk(): collects names into a string. */
static int walk_collect(const char *name, size_t layer, bool literal,
			void *data)
{
	char *out = data;

	if (literal)
		return 0;
	if (!strstr(out, name)) {
		strcat(out, name);
		strcat(out, " ");
	}
	return 0;
}

/* layers_walk(): collects where written-out text came from. */
static int walk_literal(const char *name, size_t layer, bool literal,
			void *data)
{
	char *out = data;

	if (literal)
		sprintf(out + strlen(out), "%s@%zu ", name, layer);
	return 0;
}

static void test_walk(void)
{
	char low[512], high[512], *paths[] = { low, high }, got[256];
	struct layers l;
	int64_t recheck;

	path_in(low, "walk-low.env");
	path_in(high, "walk-high.env");
	write_text(low, "P1=ab\nP2=cd\nPASS=${P1}${P2}\nHOST=h\n");
	write_text(high, "BASE=postgresql://u:${PASS}@${HOST}\n"
			 "URL=${BASE}/db\nD=${NONE:-${HOST}}\n");
	CHECK(layers_init(&l, paths, 2, NULL) == 0);
	CHECK_INT(layers_reload(&l, 0, 1, false, &recheck), ==, 1);
	CHECK_INT(layers_reload(&l, 1, 1, false, &recheck), ==, 1);
	CHECK_STR(layers_get(&l, "URL"), "postgresql://u:abcd@h/db");
	/* All of it. */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "URL", 0, SIZE_MAX, walk_collect, got), ==, 0);
	CHECK_STR(got, "BASE PASS P1 P2 HOST ");
	/* The password, bytes 15..19: not HOST. */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "URL", 15, 4, walk_collect, got), ==, 0);
	CHECK_STR(got, "BASE PASS P1 P2 ");
	/* Its second half: P2 alone. */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "URL", 17, 2, walk_collect, got), ==, 0);
	CHECK_STR(got, "BASE PASS P2 ");
	/* Written-out text: of the password, only the low file's... */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "URL", 15, 4, walk_literal, got), ==, 0);
	CHECK_STR(got, "P1@0 P2@0 ");
	/* ...of all of it, the high file's too. */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "URL", 0, SIZE_MAX, walk_literal, got), ==, 0);
	CHECK_STR(got, "P1@0 P2@0 HOST@0 BASE@1 URL@1 ");
	/* Through a default: the name in it; NONE, defined nowhere, gave
	 * nothing. */
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "D", 0, SIZE_MAX, walk_collect, got), ==, 0);
	CHECK_STR(got, "HOST ");
	/* A default's own text is written out in D. */
	write_text(high, "D=${NONE:-<${HOST}>}\n");
	CHECK_INT(layers_reload(&l, 1, 2, false, &recheck), ==, 1);
	got[0] = '\0';
	CHECK_INT(layers_walk(&l, "D", 0, SIZE_MAX, walk_literal, got), ==, 0);
	CHECK_STR(got, "HOST@0 D@1 ");
	layers_fini(&l);
}

static int remove_entry(const char *path, const struct stat *st, int type,
			struct FTW *ftw)
{
	return remove(path);
}

int main(void)
{
	check_watchdog(60);
	signal(SIGIO, SIG_IGN); /* as dbswapd: a lease break sends it */
	CHECK(crypt_init() == 0);
	CHECK(mkdtemp(root) != NULL);
	RUN(test_special_files);
	RUN(test_writer_open);
	RUN(test_emfile);
	RUN(test_decode_budget);
	RUN(test_trust);
	RUN(test_redefine);
	RUN(test_log_limit);
	RUN(test_walk);
	RUN(test_writers);
	nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return check_exit();
}
