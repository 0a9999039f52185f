/*
 * Small helpers shared by every part of dbswap; see util.h.
 */
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <unistd.h>

#include "util.h"

void *zalloc(size_t size)
{
	return calloc(1, size);
}

void *secret_grow(void *old, size_t used, size_t old_cap, size_t new_cap)
{
	void *p = malloc(new_cap);

	if (!p)
		return NULL;
	if (old) {
		memcpy(p, old, used);
		explicit_bzero(old, old_cap);
		free(old);
	}
	return p;
}

int fd_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return neg_errno();
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

int file_open_regular(const char *path, struct stat *st)
{
	char proc[64];
	struct stat st2;
	int pfd, fd, r;

	pfd = open(path, O_PATH | O_CLOEXEC);
	if (pfd < 0)
		return neg_errno();
	if (fstat(pfd, st) < 0) {
		r = neg_errno();
		goto err_pfd;
	}
	if (!S_ISREG(st->st_mode)) {
		r = S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
		goto err_pfd;
	}
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", pfd);
	fd = open(proc, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		/* No /proc here: open the path again and make sure it is
		 * still the file checked. */
		fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC);
		if (fd >= 0 && (fstat(fd, &st2) < 0 || st2.st_dev != st->st_dev ||
				st2.st_ino != st->st_ino)) {
			close(fd);
			r = -EAGAIN;
			goto err_pfd;
		}
	}
	if (fd < 0) {
		r = neg_errno();
		goto err_pfd;
	}
	close(pfd);
	return fd;

err_pfd:
	close(pfd);
	return r;
}

const char *file_type_name(unsigned mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return "a regular file";
	case S_IFDIR: return "a directory";
	case S_IFIFO: return "a FIFO (named pipe)";
	case S_IFSOCK: return "a socket";
	case S_IFCHR: return "a character device";
	case S_IFBLK: return "a block device";
	case S_IFLNK: return "a symbolic link";
	}
	return "a file of unknown type";
}

void file_identity(const struct stat *st, char out[FILE_IDENTITY_MAX])
{
	snprintf(out, FILE_IDENTITY_MAX, "%llu:%llu:%lld:%lld",
		 (unsigned long long)st->st_dev,
		 (unsigned long long)st->st_ino, (long long)st->st_size,
		 (long long)st->st_mtim.tv_sec * 1000000000LL +
			 st->st_mtim.tv_nsec);
}

char *xstrdup(const char *s)
{
	return s ? strdup(s) : NULL;
}

void free_secret(char *s)
{
	if (!s)
		return;
	/* explicit_bzero is not optimised away like a plain memset. */
	explicit_bzero(s, strlen(s));
	free(s);
}

int64_t backoff_ms(unsigned attempt, int64_t first, int64_t max)
{
	int64_t base = first;
	uint32_t r = 0;

	while (attempt-- > 0 && base < max)
		base *= 2;
	if (base > max)
		base = max;
	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != sizeof(r))
		r = (uint32_t)now_us();
	return base / 2 + (int64_t)(r % (uint32_t)(base / 2 + 1));
}

int parse_uint(const char *s, uint64_t min, uint64_t max, uint64_t *out)
{
	uint64_t v = 0;

	if (!*s)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(*s - '0');
		/* max is far below UINT64_MAX / 10: no overflow before this. */
		if (v > max)
			return -EINVAL;
	}
	if (v < min)
		return -EINVAL;
	*out = v;
	return 0;
}

void append_reason(char *buf, size_t size, const char *fmt, ...)
{
	size_t len = strlen(buf);
	va_list ap;

	if (len && len + 2 < size) {
		memcpy(buf + len, "; ", 3);
		len += 2;
	}
	if (len + 1 >= size)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + len, size - len, fmt, ap);
	va_end(ap);
}

void set_strf(char **dst, const char *fmt, ...)
{
	char buf[1024];
	va_list ap;

	free(*dst);
	*dst = NULL;
	if (!fmt)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	*dst = strdup(buf);
}
