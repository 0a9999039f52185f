/*
 * Connection plans; see connplan.h.
 *
 * libpq's rules followed here (fe-connect.c, connectOptions2()): the
 * number of hosts is the length of the hostaddr list if one is given,
 * else of the host list, else 1; a host list must then be as long; a port
 * list has one element (for all) or one per host; lists are split at every
 * comma, no escapes.  An entry with a hostaddr is connected to by that
 * address; an empty host means the default socket directory; a host
 * starting with '/' or '@' is a Unix socket (a path, or Linux's abstract
 * namespace).  A PG* variable applies only to a keyword the value does not
 * mention at all (conninfo_add_defaults()).
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/util.h"
#include "connplan.h"

struct connplan_host {
	char *host;       /* as written, "" when none */
	char *addr;       /* hostaddr to pass when no lookup: the value's,
			   * or host itself when numeric; "" when none */
	const char *port; /* this entry's port, "" for libpq's default */
	bool nameable;    /* messages may quote host (connplan_label()) */
	enum connplan_state state;
	char *addrs[CONNPLAN_ADDRS_MAX]; /* found by the lookup */
	size_t n_addrs;
	size_t first; /* the addresses before it were given up */
};

struct connplan {
	PQconninfoOption *opts;
	struct connplan_host hosts[CONNPLAN_HOSTS_MAX];
	size_t n_hosts;
	char *ports[CONNPLAN_HOSTS_MAX];
	size_t n_ports;
	bool gss_default; /* put gssencmode=disable first */
	/* Built by connplan_params(). */
	char *host_list, *addr_list, *port_list;
	const char **keys, **vals;
};

/* The value's setting of keyword: NULL when the value does not mention
 * it ("" when it sets it empty). */
static const char *connplan_opt(const struct connplan *plan,
				const char *keyword)
{
	for (const PQconninfoOption *o = plan->opts; o->keyword; o++)
		if (streq(o->keyword, keyword))
			return o->val;
	return NULL;
}

/* The setting libpq would use: the value's, else the variable's. */
static const char *connplan_setting(const struct connplan *plan,
				    const char *keyword, const char *envvar)
{
	const char *v = connplan_opt(plan, keyword);

	return v ? v : getenv(envvar);
}

static size_t connplan_count(const char *list)
{
	size_t n = 1;

	for (; *list; list++)
		n += *list == ',';
	return n;
}

/* Splits list into at most max elements of out (the caller checked the
 * count).  Returns 0 or -ENOMEM. */
static int connplan_split(const char *list, char **out, size_t max)
{
	size_t i = 0;

	for (const char *s = list; i < max; i++) {
		const char *e = strchr(s, ',');
		size_t len = e ? (size_t)(e - s) : strlen(s);
		out[i] = strndup(s, len);
		if (!out[i])
			return -ENOMEM;
		if (!e)
			break;
		s = e + 1;
	}
	return 0;
}

static bool connplan_is_socket(const char *host)
{
	return host[0] == '/' || host[0] == '@';
}

/* Whether host is a numeric address, by the rule libpq applies to
 * hostaddr (getaddrinfo() with AI_NUMERICHOST parses, never looks up). */
static bool connplan_is_numeric(const char *host)
{
	struct addrinfo hints = {
		.ai_flags = AI_NUMERICHOST,
		.ai_socktype = SOCK_STREAM,
	};
	struct addrinfo *ai = NULL;

	if (getaddrinfo(host, NULL, &hints, &ai) != 0)
		return false;
	freeaddrinfo(ai);
	return true;
}

static const char *connplan_file_type(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFIFO: return "FIFO";
	case S_IFSOCK: return "socket";
	case S_IFCHR: return "character device";
	case S_IFBLK: return "block device";
	case S_IFDIR: return "directory";
	}
	return "special file";
}

/* Whether a URI's text can be read two ways: libpq ends the user info at
 * the first '@' before any '/' (a '?' does not stop it), a human at the
 * last '@'.  A password's raw '@' or '/' then puts its tail into the host
 * or the database name, where libpq's and the server's messages quote it,
 * and the password libpq sends is not the one written.  Such a value is
 * refused, in words that quote nothing of it. */
static bool connplan_uri_ambiguous(const char *conninfo)
{
	static const char *const schemes[] = { "postgresql://", "postgres://" };
	const char *p = NULL, *at, *end;

	for (size_t i = 0; i < ARRAY_SIZE(schemes) && !p; i++)
		if (strncmp(conninfo, schemes[i], strlen(schemes[i])) == 0)
			p = conninfo + strlen(schemes[i]);
	if (!p)
		return false;
	/* libpq's user info: up to the first '@' before any '/'. */
	end = p + strcspn(p, "@/");
	at = *end == '@' ? end : NULL;
	/* A '?' in it: the '@' sat in a query value ("db?password=a@b"). */
	if (at && memchr(p, '?', (size_t)(at - p)))
		return true;
	/* Any other '@' before the query: a human's user info ends there. */
	p = at ? at + 1 : p;
	end = p + strcspn(p, "?");
	return memchr(p, '@', (size_t)(end - p)) != NULL;
}

/* Whether a message may quote host as written: a DNS name, an IP
 * literal or a socket path of plain characters, that holds no password
 * of the value and is held by none (a value "host=${DB_PASSWORD}" by
 * mistake).  Otherwise messages say "host 2 of 3". */
static bool connplan_host_nameable(const struct connplan *plan,
				   const char *host)
{
	static const char *const secrets[] = { "password", "sslpassword" };
	const char *extra = connplan_is_socket(host) ? "/@.-_+" : ".-_:[]%";

	if (!*host || strlen(host) > 255)
		return false;
	for (const char *c = host; *c; c++)
		if (!isalnum((unsigned char)*c) && !strchr(extra, *c))
			return false;
	for (size_t i = 0; i < ARRAY_SIZE(secrets); i++) {
		const char *pw = connplan_opt(plan, secrets[i]);
		if (pw && *pw && (strstr(host, pw) ||
				  (strlen(host) >= 4 && strstr(pw, host))))
			return false;
	}
	return true;
}

/* A decimal integer as libpq's parse_int_param() reads it (blanks around
 * it allowed), within [min, max]. */
static bool connplan_is_int(const char *s, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (end == s || errno)
		return false;
	while (isspace((unsigned char)*end))
		end++;
	return *end == '\0' && v >= min && v <= max;
}

/* The settings libpq checks only when it connects, checked here first so
 * that the error names the setting and never quotes it: libpq's own
 * messages ("invalid integer value \"...\" for connection option
 * \"port\"") echo the value, which in a mistyped value may be a password
 * ("postgresql://app:PASSWORD/db" reads as port PASSWORD). */
static int connplan_check_settings(const struct connplan *plan, char *err,
				   size_t err_size)
{
	static const char *const ints[] = {
		"connect_timeout", "keepalives", "keepalives_idle",
		"keepalives_interval", "keepalives_count", "tcp_user_timeout",
	};
	static const struct {
		const char *keyword;
		const char *values[7]; /* NULL-terminated */
	} enums[] = {
		{ "sslmode", { "disable", "allow", "prefer", "require",
			       "verify-ca", "verify-full" } },
		{ "gssencmode", { "disable", "prefer", "require" } },
		{ "channel_binding", { "disable", "prefer", "require" } },
		{ "target_session_attrs", { "any", "read-write", "read-only",
					    "primary", "standby",
					    "prefer-standby" } },
		{ "ssl_min_protocol_version", { "", "TLSv1", "TLSv1.1",
						"TLSv1.2", "TLSv1.3" } },
		{ "ssl_max_protocol_version", { "", "TLSv1", "TLSv1.1",
						"TLSv1.2", "TLSv1.3" } },
	};

	for (size_t i = 0; i < plan->n_ports; i++) {
		if (!*plan->ports[i] || connplan_is_int(plan->ports[i], 1, 65535))
			continue;
		snprintf(err, err_size, "port %zu of %zu is not a number from 1 "
			 "to 65535 (not shown: a mistyped value can put a "
			 "password there)", i + 1, plan->n_ports);
		return -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(ints); i++) {
		const char *v = connplan_opt(plan, ints[i]);
		if (!v || !*v || connplan_is_int(v, INT_MIN, INT_MAX))
			continue;
		snprintf(err, err_size, "%s is not a whole number (not shown)",
			 ints[i]);
		return -EINVAL;
	}
	for (size_t i = 0; i < ARRAY_SIZE(enums); i++) {
		const char *v = connplan_opt(plan, enums[i].keyword);
		bool known = !v;
		size_t o;
		for (size_t j = 0; !known && enums[i].values[j]; j++)
			known = streq(v, enums[i].values[j]);
		if (known)
			continue;
		o = (size_t)snprintf(err, err_size, "%s is not one of",
				     enums[i].keyword);
		for (size_t j = 0, n = 0; enums[i].values[j] && o < err_size;
		     j++)
			if (*enums[i].values[j])
				o += (size_t)snprintf(err + o, err_size - o,
						      "%s %s", n++ ? "," : "",
						      enums[i].values[j]);
		if (o < err_size)
			snprintf(err + o, err_size - o, " (not shown)");
		return -EINVAL;
	}
	return 0;
}

/* The agent's own passwd entry, looked up once by connplan_init(): a
 * lookup through NSS may go to the network (sssd, LDAP), and libpq makes
 * one for the default user name of a value without one. */
static char connplan_self_user[256];
static char connplan_self_home[512];

void connplan_init(void)
{
	struct passwd pw, *res = NULL;
	char buf[4096];

	if (getpwuid_r(geteuid(), &pw, buf, sizeof(buf), &res) != 0 || !res)
		return;
	if (strlen(res->pw_name) < sizeof(connplan_self_user))
		strcpy(connplan_self_user, res->pw_name);
	if (strlen(res->pw_dir) < sizeof(connplan_self_home))
		strcpy(connplan_self_home, res->pw_dir);
}

/* The home directory as libpq 15 finds it: $HOME, else the passwd
 * entry. */
static bool connplan_home(char *buf, size_t size)
{
	const char *home = getenv("HOME");

	if (!home || !*home)
		home = connplan_self_home;
	return *home && (size_t)snprintf(buf, size, "%s", home) < size;
}

/* The files libpq or OpenSSL would open while connecting.  Each must be
 * a regular file if it exists: open() on a FIFO blocks until a writer
 * comes, inside the loop. */
static int connplan_check_files(const struct connplan *plan, char *err,
				size_t err_size)
{
	static const struct {
		const char *keyword, *envvar, *home_file;
	} files[] = {
		{ "sslcert", "PGSSLCERT", ".postgresql/postgresql.crt" },
		{ "sslkey", "PGSSLKEY", ".postgresql/postgresql.key" },
		{ "sslrootcert", "PGSSLROOTCERT", ".postgresql/root.crt" },
		{ "sslcrl", "PGSSLCRL", ".postgresql/root.crl" },
		{ "passfile", "PGPASSFILE", ".pgpass" },
	};
	char home[512], path[1024];
	bool have_home = connplan_home(home, sizeof(home));
	struct stat st;

	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		const char *p = connplan_setting(plan, files[i].keyword,
						 files[i].envvar);
		if (!p || !*p) {
			if (!have_home)
				continue;
			snprintf(path, sizeof(path), "%s/%s", home,
				 files[i].home_file);
			p = path;
		}
		if (stat(p, &st) < 0 || S_ISREG(st.st_mode))
			continue;
		snprintf(err, err_size, "%s \"%s\" is a %s, not a regular file "
			 "(opening it could block the agent)", files[i].keyword,
			 p, connplan_file_type(st.st_mode));
		return -EINVAL;
	}
	return 0;
}

/* Entry i of the host list: as written, or "" without a list. */
static int connplan_entry(struct connplan_host *e, char *host, char *hostaddr)
{
	e->state = CONNPLAN_READY;
	e->host = host ? host : strdup("");
	if (!e->host) {
		free(hostaddr);
		return -ENOMEM;
	}
	if (hostaddr && *hostaddr) {
		e->addr = hostaddr;
		return 0;
	}
	free(hostaddr);
	if (*e->host && !connplan_is_socket(e->host)) {
		if (connplan_is_numeric(e->host))
			return (e->addr = strdup(e->host)) ? 0 : -ENOMEM;
		e->state = CONNPLAN_LOOKUP;
	}
	return (e->addr = strdup("")) ? 0 : -ENOMEM;
}

/* The host entries, from the host, hostaddr and port settings. */
static int connplan_hosts_parse(struct connplan *plan, char *err,
				size_t err_size)
{
	const char *host = connplan_setting(plan, "host", "PGHOST");
	const char *hostaddr = connplan_setting(plan, "hostaddr", "PGHOSTADDR");
	const char *port = connplan_setting(plan, "port", "PGPORT");
	char *hosts[CONNPLAN_HOSTS_MAX] = { 0 };
	char *addrs[CONNPLAN_HOSTS_MAX] = { 0 };
	size_t n = 1, i = 0;
	int r = 0;

	if (hostaddr && *hostaddr)
		n = connplan_count(hostaddr);
	else if (host && *host)
		n = connplan_count(host);
	if (n > CONNPLAN_HOSTS_MAX) {
		snprintf(err, err_size, "%zu hosts in one value, the agent "
			 "takes at most %d", n, CONNPLAN_HOSTS_MAX);
		return -EINVAL;
	}
	if (hostaddr && *hostaddr && host && *host &&
	    connplan_count(host) != n) {
		snprintf(err, err_size, "%zu host names for %zu hostaddr "
			 "values", connplan_count(host), n);
		return -EINVAL;
	}
	if (port && *port) {
		size_t n_ports = connplan_count(port);
		if (n_ports != 1 && n_ports != n) {
			snprintf(err, err_size, "%zu port numbers for %zu hosts",
				 n_ports, n);
			return -EINVAL;
		}
		plan->n_ports = n_ports;
		r = connplan_split(port, plan->ports, n_ports);
		if (r < 0)
			return r;
	}
	if (host && *host)
		r = connplan_split(host, hosts, n);
	if (r == 0 && hostaddr && *hostaddr)
		r = connplan_split(hostaddr, addrs, n);
	if (r < 0)
		goto err_lists;
	/* From here each entry owns its strings, connplan_free() frees. */
	plan->n_hosts = n;
	for (; i < n; i++) {
		struct connplan_host *e = &plan->hosts[i];
		e->port = plan->n_ports == 0 ? ""
			  : plan->ports[plan->n_ports == 1 ? 0 : i];
		r = connplan_entry(e, hosts[i], addrs[i]);
		if (r < 0) {
			i++;
			goto err_lists;
		}
		e->nameable = connplan_host_nameable(plan, e->host);
		/* libpq's "could not parse network address" quotes it. */
		if (*e->addr && !connplan_is_numeric(e->addr)) {
			snprintf(err, err_size, "hostaddr %zu of %zu is not a "
				 "numeric address (not shown)", i + 1, n);
			i++;
			r = -EINVAL;
			goto err_lists;
		}
	}
	return 0;

err_lists:
	for (; i < n; i++) {
		free(hosts[i]);
		free(addrs[i]);
	}
	return r;
}

int connplan_new(const char *conninfo, struct connplan **out, char *err,
		 size_t err_size)
{
	struct connplan *plan;
	char *errmsg = NULL;
	const char *service, *dbname;
	int r;

	*out = NULL;
	err[0] = '\0';
	plan = zalloc(sizeof(*plan));
	if (!plan)
		return -ENOMEM;
	/* libpq's own parse errors quote the offending text, which may be a
	 * password: report parse failures in our own words. */
	plan->opts = PQconninfoParse(conninfo, &errmsg);
	PQfreemem(errmsg);
	if (!plan->opts) {
		snprintf(err, err_size, "not a valid libpq connection string "
			 "or URI");
		r = -EINVAL;
		goto err_plan;
	}
	if (connplan_uri_ambiguous(conninfo)) {
		snprintf(err, err_size, "the URI's user info is ambiguous: "
			 "write '@', '/' and '?' in a user name or password as "
			 "%%40, %%2F and %%3F (libpq would take the text after "
			 "a raw '@' or '/' for the host or the database)");
		r = -EINVAL;
		goto err_plan;
	}
	service = connplan_opt(plan, "service");
	if (service && *service) {
		/* Not quoted: only the host may be named (connplan.h). */
		snprintf(err, err_size, "service is set: the agent does not "
			 "use connection service files (libpq would read the "
			 "file, or LDAP, and resolve its hosts inside the "
			 "agent's loop): write the settings into the value");
		r = -EINVAL;
		goto err_plan;
	}
	/* libpq expands such a dbname into settings of its own when a
	 * program passes it with expand_dbname (psql's \connect, tools that
	 * rebuild keyword arrays from a parsed value): such a program would
	 * connect with settings the agent never checked, and a server quotes
	 * the dbname in its errors ("database ... does not exist"), password
	 * and all.  Same rule as mask.c's. */
	dbname = connplan_opt(plan, "dbname");
	if (dbname && (strchr(dbname, '=') || strstr(dbname, "://"))) {
		snprintf(err, err_size, "dbname is a connection string of its "
			 "own (it holds '=' or \"://\"; not shown): a program "
			 "that passes it to libpq with expand_dbname would "
			 "connect with its settings, not the ones the agent "
			 "checked: write them into the value");
		r = -EINVAL;
		goto err_plan;
	}
	if (!service && (service = getenv("PGSERVICE")) && *service) {
		snprintf(err, err_size, "PGSERVICE is set in the agent's "
			 "environment: the agent does not use connection "
			 "service files (libpq would read the file, or LDAP, "
			 "and resolve its hosts inside the agent's loop)");
		r = -EINVAL;
		goto err_plan;
	}
	r = connplan_hosts_parse(plan, err, err_size);
	if (r < 0)
		goto err_plan;
	r = connplan_check_settings(plan, err, err_size);
	if (r < 0)
		goto err_plan;
	r = connplan_check_files(plan, err, err_size);
	if (r < 0)
		goto err_plan;
	plan->gss_default = !connplan_opt(plan, "gssencmode") &&
			    !getenv("PGGSSENCMODE");
	*out = plan;
	return 0;

err_plan:
	if (r == -ENOMEM)
		snprintf(err, err_size, "out of memory");
	connplan_free(plan);
	return r;
}

static void connplan_free_params(struct connplan *plan)
{
	free(plan->host_list);
	free(plan->addr_list);
	free(plan->port_list);
	free(plan->keys);
	free(plan->vals);
	plan->host_list = plan->addr_list = plan->port_list = NULL;
	plan->keys = plan->vals = NULL;
}

void connplan_free(struct connplan *plan)
{
	if (!plan)
		return;
	connplan_free_params(plan);
	for (size_t i = 0; i < plan->n_hosts; i++) {
		struct connplan_host *e = &plan->hosts[i];
		free_secret(e->host);
		free(e->addr);
		for (size_t j = 0; j < e->n_addrs; j++)
			free(e->addrs[j]);
	}
	for (size_t i = 0; i < plan->n_ports; i++)
		free(plan->ports[i]);
	if (plan->opts) {
		for (PQconninfoOption *o = plan->opts; o->keyword; o++)
			if (o->val)
				explicit_bzero(o->val, strlen(o->val));
		PQconninfoFree(plan->opts);
	}
	free(plan);
}

const char *connplan_label(const struct connplan *plan, size_t i, char *buf,
			   size_t size)
{
	const struct connplan_host *e = &plan->hosts[i];

	if (e->nameable)
		snprintf(buf, size, "\"%s\"", e->host);
	else if (!*e->host)
		snprintf(buf, size, "the default host");
	else
		snprintf(buf, size, "host %zu of %zu", i + 1, plan->n_hosts);
	return buf;
}

const char *connplan_keyword_in(const struct connplan *plan,
				const char *text)
{
	char pat[64];

	for (const PQconninfoOption *o = plan->opts; o->keyword; o++) {
		snprintf(pat, sizeof(pat), "\"%s\"", o->keyword);
		if (strstr(text, pat))
			return o->keyword;
		snprintf(pat, sizeof(pat), "invalid %s value", o->keyword);
		if (strstr(text, pat))
			return o->keyword;
		snprintf(pat, sizeof(pat), "%s value \"", o->keyword);
		if (strstr(text, pat))
			return o->keyword;
	}
	return NULL;
}

bool connplan_nameable(const struct connplan *plan, size_t i)
{
	return plan->hosts[i].nameable || !*plan->hosts[i].host;
}

size_t connplan_hosts(const struct connplan *plan)
{
	return plan->n_hosts;
}

enum connplan_state connplan_state(const struct connplan *plan, size_t i)
{
	return plan->hosts[i].state;
}

const char *connplan_host(const struct connplan *plan, size_t i)
{
	return plan->hosts[i].host;
}

int connplan_set_addrs(struct connplan *plan, size_t i,
		       const char *const *addrs, size_t n)
{
	struct connplan_host *e = &plan->hosts[i];

	if (e->state != CONNPLAN_LOOKUP || n == 0)
		return -EINVAL;
	n = MIN(n, (size_t)CONNPLAN_ADDRS_MAX);
	for (size_t j = 0; j < n; j++) {
		e->addrs[j] = strdup(addrs[j]);
		if (!e->addrs[j]) {
			while (j > 0)
				free(e->addrs[--j]);
			return -ENOMEM;
		}
	}
	e->n_addrs = n;
	e->state = CONNPLAN_READY;
	return 0;
}

void connplan_fail(struct connplan *plan, size_t i)
{
	plan->hosts[i].state = CONNPLAN_FAILED;
}

size_t connplan_addrs(const struct connplan *plan, size_t i)
{
	const struct connplan_host *e = &plan->hosts[i];

	if (e->state != CONNPLAN_READY)
		return 0;
	return e->n_addrs ? e->n_addrs : 1;
}

/* Address j of a ready entry: one its lookup found, or the one it has. */
static const char *connplan_addr(const struct connplan_host *e, size_t j)
{
	return e->n_addrs ? e->addrs[j] : e->addr;
}

void connplan_skip(struct connplan *plan, size_t i, size_t addr)
{
	struct connplan_host *e = &plan->hosts[i];

	if (e->state != CONNPLAN_READY)
		return;
	e->first = MAX(e->first, addr);
	if (e->first >= connplan_addrs(plan, i))
		e->state = CONNPLAN_FAILED;
}

/* libpq reports the address it connects to as getnameinfo() writes it,
 * which need not be how the value or the lookup wrote it. */
static bool connplan_same_addr(const char *a, const char *b)
{
	static const int families[] = { AF_INET, AF_INET6 };
	unsigned char x[sizeof(struct in6_addr)], y[sizeof(struct in6_addr)];

	for (size_t i = 0; i < ARRAY_SIZE(families); i++)
		if (inet_pton(families[i], a, x) == 1 &&
		    inet_pton(families[i], b, y) == 1)
			return memcmp(x, y, families[i] == AF_INET
						    ? sizeof(struct in_addr)
						    : sizeof(struct in6_addr)) == 0;
	return streq(a, b);
}

int connplan_locate(const struct connplan *plan, size_t to, const char *host,
		    const char *hostaddr, const char *port, size_t *entry,
		    size_t *addr)
{
	host = host ? host : "";
	hostaddr = hostaddr ? hostaddr : "";
	port = port ? port : "";
	for (size_t i = *entry; i < to && i < plan->n_hosts; i++) {
		const struct connplan_host *e = &plan->hosts[i];
		size_t j = MAX(e->first, i == *entry ? *addr : 0);
		if ((*e->host && !streq(e->host, host)) ||
		    (*e->port && !streq(e->port, port)))
			continue;
		for (; j < connplan_addrs(plan, i); j++) {
			if (!connplan_same_addr(connplan_addr(e, j), hostaddr))
				continue;
			*entry = i;
			*addr = j;
			return 0;
		}
	}
	return -ENOENT;
}

/* Appends ",s" (or "s" first) to the list being built in *buf. */
static int connplan_append(char **buf, size_t *len, size_t *cap,
			   bool first, const char *s)
{
	size_t need = *len + strlen(s) + 2;

	if (need > *cap) {
		size_t cap2 = MAX(need, *cap * 2);
		char *b = realloc(*buf, cap2);
		if (!b)
			return -ENOMEM;
		*buf = b;
		*cap = cap2;
	}
	*len += (size_t)sprintf(*buf + *len, "%s%s", first ? "" : ",", s);
	return 0;
}

int connplan_params(struct connplan *plan, size_t from, size_t to,
		    const char *const *extra_keys,
		    const char *const *extra_vals, const char *const **keys,
		    const char *const **vals)
{
	struct {
		char *buf;
		size_t len, cap;
	} l[3] = { { 0 } }; /* host, hostaddr, port */
	size_t n_entries = 0, n_opts = 0, n_extra = 0, k = 0;
	bool any_addr = false, any_port = false;
	int r = 0;

	connplan_free_params(plan);
	if (to > plan->n_hosts || from > to)
		return -EINVAL;
	for (size_t i = from; i < to && r == 0; i++) {
		const struct connplan_host *e = &plan->hosts[i];
		size_t n = e->n_addrs ? e->n_addrs : 1;
		if (e->state == CONNPLAN_FAILED)
			continue;
		if (e->state != CONNPLAN_READY) {
			r = -EINVAL;
			break;
		}
		for (size_t j = e->first; j < n && r == 0; j++) {
			const char *addr = connplan_addr(e, j);
			bool first = n_entries++ == 0;
			any_addr |= *addr != '\0';
			any_port |= *e->port != '\0';
			r = connplan_append(&l[0].buf, &l[0].len, &l[0].cap,
					    first, e->host);
			if (r == 0)
				r = connplan_append(&l[1].buf, &l[1].len,
						    &l[1].cap, first, addr);
			if (r == 0)
				r = connplan_append(&l[2].buf, &l[2].len,
						    &l[2].cap, first, e->port);
		}
	}
	if (r == 0 && n_entries == 0)
		r = -ENOENT;
	if (r < 0)
		goto err_lists;
	plan->host_list = l[0].buf;
	plan->addr_list = l[1].buf;
	plan->port_list = l[2].buf;

	for (const PQconninfoOption *o = plan->opts; o->keyword; o++)
		n_opts++;
	while (extra_keys && extra_keys[n_extra])
		n_extra++;
	/* gssencmode, user, the value's options, three lists, extras,
	 * NULL. */
	plan->keys = calloc(n_opts + n_extra + 6, sizeof(*plan->keys));
	plan->vals = calloc(n_opts + n_extra + 6, sizeof(*plan->vals));
	if (!plan->keys || !plan->vals) {
		connplan_free_params(plan);
		return -ENOMEM;
	}
	if (plan->gss_default) {
		plan->keys[k] = "gssencmode";
		plan->vals[k++] = "disable";
	}
	/* The default user libpq would look up (NSS) in the loop: given
	 * from the start-up lookup instead. */
	if (!connplan_opt(plan, "user") && !getenv("PGUSER") &&
	    connplan_self_user[0]) {
		plan->keys[k] = "user";
		plan->vals[k++] = connplan_self_user;
	}
	for (const PQconninfoOption *o = plan->opts; o->keyword; o++) {
		if (!o->val || streq(o->keyword, "host") ||
		    streq(o->keyword, "hostaddr") || streq(o->keyword, "port"))
			continue;
		plan->keys[k] = o->keyword;
		plan->vals[k++] = o->val;
	}
	/* An empty value counts as unset in these arrays: a single empty
	 * element is left out rather than passed. */
	if (*plan->host_list) {
		plan->keys[k] = "host";
		plan->vals[k++] = plan->host_list;
	}
	if (any_addr) {
		plan->keys[k] = "hostaddr";
		plan->vals[k++] = plan->addr_list;
	}
	if (any_port) {
		plan->keys[k] = "port";
		plan->vals[k++] = plan->port_list;
	}
	for (size_t i = 0; i < n_extra; i++) {
		plan->keys[k] = extra_keys[i];
		plan->vals[k++] = extra_vals[i];
	}
	*keys = plan->keys;
	*vals = plan->vals;
	return 0;

err_lists:
	for (size_t i = 0; i < ARRAY_SIZE(l); i++)
		free(l[i].buf);
	return r;
}

/* The entry whose host name address addr of the range stands for, or
 * SIZE_MAX when none or not just one name. */
static size_t connplan_name_of(const struct connplan *plan, size_t from,
			       size_t to, const char *addr, size_t len)
{
	size_t found = SIZE_MAX;

	for (size_t i = from; i < to && i < plan->n_hosts; i++) {
		const struct connplan_host *e = &plan->hosts[i];
		if (e->state != CONNPLAN_READY)
			continue;
		if (e->n_addrs == 0) {
			/* libpq shows this one's address too. */
			if (strlen(e->addr) == len &&
			    memcmp(e->addr, addr, len) == 0)
				return SIZE_MAX;
			continue;
		}
		for (size_t j = 0; j < e->n_addrs; j++) {
			if (strlen(e->addrs[j]) != len ||
			    memcmp(e->addrs[j], addr, len) != 0)
				continue;
			if (found != SIZE_MAX &&
			    !streq(plan->hosts[found].host, e->host))
				return SIZE_MAX;
			if (found == SIZE_MAX)
				found = i;
		}
	}
	return found;
}

void connplan_name_hosts(const struct connplan *plan, size_t from,
			 size_t to, const char *msg, char *out, size_t size)
{
	static const char at[] = "server at \"";
	size_t o = 0;

	if (size == 0)
		return;
	while (*msg && o + 1 < size) {
		const char *q, *end;
		char label[300];
		size_t n, i;

		q = strstr(msg, at);
		if (!q)
			q = msg + strlen(msg);
		else
			q += sizeof(at) - 1;
		/* Up to and with the opening quote, as it is. */
		n = MIN((size_t)(q - msg), size - 1 - o);
		memcpy(out + o, msg, n);
		o += n;
		msg = q;
		if (!*msg || !(end = strchr(msg, '"')) ||
		    strncmp(end, "\", port ", 8) != 0)
			continue;
		i = connplan_name_of(plan, from, to, msg, (size_t)(end - msg));
		if (i == SIZE_MAX)
			continue;
		/* The label brings its own quotes, or none ("host 2 of
		 * 3"): the opening quote written above goes. */
		o--;
		connplan_label(plan, i, label, sizeof(label));
		o += (size_t)snprintf(out + o, size - o, "%s (%.*s)", label,
				      (int)(end - msg), msg);
		if (o >= size) {
			o = size - 1;
			break;
		}
		msg = end + 1;
	}
	out[o] = '\0';
}
