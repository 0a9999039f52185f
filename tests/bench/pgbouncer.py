"""Debian's PgBouncer (/usr/sbin/pgbouncer) in a temp dir on a free loopback
port, in front of a harness PgCluster: the peer the benchmarks rotate a
password through the PgBouncer way (new password in the ini, RELOAD).

    with PgBouncer(pg, role, password) as pgb:
        app_conninfo = pgb.conninfo()      # no password in it
        pg.set_password(role, new)
        pgb.set_password(new)              # rewrite the ini, RELOAD
        pgb.reconnect()                    # optional: RECONNECT

Choices, and why:

- pool_mode = transaction: what PgBouncer is mostly deployed for, and the
  mode in which a server connection goes back to the pool after every
  transaction.  PgBouncer closes a server connection that RECONNECT (or a
  changed host/port/user) tagged only when it is released; in session mode
  an app with persistent connections never releases one, so nothing could
  ever move it to a new password short of a restart of the app.
- Clients log in to PgBouncer with auth_type = trust (user names from an
  auth_file, no passwords): the credential being rotated is the one
  PgBouncer uses towards PostgreSQL, which sits in [databases] (user= and
  password=), so apps keep one password-free conninfo through a rotation,
  as they would with PgBouncer in production.  A client password to
  PgBouncer would be a second, separate secret that this benchmark does
  not rotate; leaving it out keeps a SCRAM exchange out of the numbers.
  PgBouncer listens on 127.0.0.1 only, in a throwaway set-up.
- An admin user (admin_users) for the console: RELOAD, RECONNECT, SHOW.
- Everything else at PgBouncer's defaults, server_lifetime (3600 s)
  included: that is what a rotation meets in the field.

PgBouncer refuses to run as root: it runs as the user the harness runs
PostgreSQL as.  It runs in the foreground, its log to a file in the temp
dir (it never logs the ini's passwords); the process and the dir are
registered with the harness's cleanup and its watchdog, so they go on
every path out.  The ini file is 0600 and holds the password; it is
replaced atomically (temp file, rename) on every change.  The admin
console is reached with psql (SQL on stdin, nothing secret involved): one
session kept open for the timed commands (RELOAD, RECONNECT), so that
their time is PgBouncer's and not a psql start and login."""

import os
import subprocess
import tempfile
import time

import harness as h

PGBOUNCER = '/usr/sbin/pgbouncer'
ADMIN_USER = 'pgb_admin'
DB_ALIAS = 'bench'


def _quote(value):
    """A value in PgBouncer's [databases] connect string: single-quoted,
    a quote doubled."""
    if any(c in value for c in '\0\n\r'):
        raise ValueError('control character in a PgBouncer setting')
    return "'" + value.replace("'", "''") + "'"


def _libpq_quote(value):
    """A value in a libpq key=value conninfo."""
    return "'" + value.replace('\\', '\\\\').replace("'", "\\'") + "'"


class PgBouncer:
    """PgBouncer in front of cluster, logging in to it as role with
    password.  Attributes: host, port, dir, log_path, proc."""

    host = '127.0.0.1'

    def __init__(self, cluster, role, password, dbname='postgres',
                 settings=None, start=True, timeout=10):
        """settings: extra [pgbouncer] settings ({'server_lifetime': 60})."""
        self.cluster = cluster
        self.role = role
        self.dbname = dbname
        self.settings = dict(settings or {})
        self.proc = None
        self.port = None
        self._console = self._console_key = self._console_err = None
        self._password = password
        self._pid_key = self._dir_key = None
        self._key = h._register(self.close)
        try:
            self.dir, self._dir_key = h._mkdtemp('dbswap-pgbouncer-')
            os.chmod(self.dir, 0o700)
            h._chown_server(self.dir)
            self.ini_path = os.path.join(self.dir, 'pgbouncer.ini')
            self.users_path = os.path.join(self.dir, 'userlist.txt')
            self.log_path = os.path.join(self.dir, 'pgbouncer.log')
            self._write(self.users_path,
                        f'"{role}" ""\n"{ADMIN_USER}" ""\n')
            if start:
                self.start(timeout)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- files

    def _write(self, path, text):
        """Atomic replace, 0600, owned by the server user."""
        fd, tmp = tempfile.mkstemp(prefix='.tmp-', dir=self.dir)
        try:
            with os.fdopen(fd, 'w') as f:
                f.write(text)
            os.chmod(tmp, 0o600)
            h._chown_server(tmp)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

    def _ini(self):
        c = self.cluster
        settings = {
            'listen_addr': self.host,
            'listen_port': self.port,
            'unix_socket_dir': '',
            'auth_type': 'trust',
            'auth_file': self.users_path,
            'admin_users': ADMIN_USER,
            'pool_mode': 'transaction',
            'max_client_conn': 1000,
            'default_pool_size': 20,
            'log_stats': 0,
        }
        settings.update(self.settings)
        lines = ['[databases]',
                 f'{DB_ALIAS} = host={c.host} port={c.port} '
                 f'dbname={_quote(self.dbname)} user={_quote(self.role)} '
                 f'password={_quote(self._password)}',
                 '', '[pgbouncer]']
        lines += [f'{k} = {v}' for k, v in settings.items()]
        return '\n'.join(lines) + '\n'

    # -------------------------------------------------------------- process

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout=10, attempts=5):
        """Starts PgBouncer on a free port; returns once its admin console
        answers."""
        if self.running:
            raise h.HarnessError('pgbouncer already running')
        err = None
        for _ in range(attempts):
            self.port = h._free_port()
            self._write(self.ini_path, self._ini())
            with open(self.log_path, 'ab') as log:
                self.proc = subprocess.Popen(
                    [PGBOUNCER, self.ini_path], cwd=self.dir,
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    env=h._pg_clean_env(), **h._server_user())
            self._pid_key = h._watch_pid(self.proc.pid)
            deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
            while self.proc.poll() is None and time.monotonic() < deadline:
                try:
                    self.console('SHOW VERSION', timeout=2)
                    return
                except h.PgError as e:
                    err = e
                    time.sleep(0.05)
            self.stop()  # most likely the port was taken meanwhile
            err = h.ProcessError(f'pgbouncer did not start on port '
                                 f'{self.port}: {err}; log:\n'
                                 f'{h._tail(self.log(), 15)}')
        raise err

    def stop(self, timeout=5):
        """SIGTERM, SIGKILL after timeout.  Returns the exit status."""
        self._close_console()
        if self.proc is None:
            return None
        # SIGTERM is PgBouncer's immediate shutdown (SIGINT waits for
        # clients to leave).
        rc = h._stop_process(self.proc, timeout)
        h._unwatch(self._pid_key)
        self._pid_key = None
        return rc

    def close(self):
        """Stops PgBouncer and removes its dir.  Idempotent."""
        try:
            self.stop()
            h._rmtree(getattr(self, 'dir', None),
                      getattr(self, '_dir_key', None))
            self._dir_key = None
        finally:
            h._unregister(self._key)

    def log(self):
        return h._read_text(self.log_path)

    # -------------------------------------------------------------- console

    def _console_env(self, timeout):
        env = h._pg_clean_env()
        env.update(PGHOST=self.host, PGPORT=str(self.port),
                   PGUSER=ADMIN_USER, PGDATABASE='pgbouncer',
                   PGCONNECT_TIMEOUT=str(max(2, int(timeout))))
        return env

    def admin(self, command, timeout=10, header=False):
        """Runs one admin console command (RELOAD, RECONNECT, SHOW ...) in
        a psql of its own; returns psql's unaligned output, the column
        names first if header."""
        argv = [h._psql(), '-X', '-w', '-q', '-A', '-P', 'footer=off',
                '-v', 'ON_ERROR_STOP=1', '-f', '-']
        if not header:
            argv.append('-t')
        try:
            r = subprocess.run(argv, input=command.rstrip(';') + ';\n',
                               env=self._console_env(timeout),
                               capture_output=True, text=True,
                               timeout=timeout * h.TIMEOUT_SCALE)
        except subprocess.TimeoutExpired as e:
            raise h.PgError(f'pgbouncer console: {command} timed out') from e
        if r.returncode != 0:
            raise h.PgError(f'pgbouncer console: {command} failed: '
                            f'{r.stderr.strip()}')
        return r.stdout.strip()

    def console(self, command, timeout=10):
        """Runs one admin console command in a psql session kept open
        across calls (opened on first use): a command costs a round trip,
        not a new process and login, so a timed RELOAD measures PgBouncer.
        Returns the output lines (tuples only)."""
        if self._console is None or self._console.poll() is not None:
            self._close_console()
            self._console_err = open(os.path.join(self.dir, 'console.err'),
                                     'w+')
            self._console = subprocess.Popen(
                [h._psql(), '-X', '-w', '-q', '-A', '-t', '-v',
                 'ON_ERROR_STOP=1', '-f', '-'], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self._console_err,
                env=self._console_env(timeout), text=True, bufsize=1)
            self._console_key = h._watch_pid(self._console.pid)
        marker = f'--done-{time.monotonic_ns()}--'
        p = self._console
        p.stdin.write(f'{command.rstrip(";")};\n\\echo {marker}\n')
        p.stdin.flush()
        out = []
        while True:  # PgBouncer answers at once, or psql exits on error
            line = p.stdout.readline()
            if not line:
                p.wait()
                self._console_err.seek(0)
                err = self._console_err.read().strip()
                self._close_console()
                raise h.PgError(f'pgbouncer console: {command} failed: '
                                f'{err}')
            if line.rstrip('\n') == marker:
                return out
            out.append(line.rstrip('\n'))

    def _close_console(self):
        p, self._console = self._console, None
        if self._console_err is not None:
            self._console_err.close()
            self._console_err = None
        if p is None:
            return
        try:
            if p.poll() is None:
                p.stdin.close()
                try:
                    p.wait(2)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        except OSError:
            p.kill()
            p.wait()
        finally:
            p.stdout.close()
            h._unwatch(self._console_key)
            self._console_key = None

    def set_password(self, password):
        """The PgBouncer way to rotate: the new password in [databases],
        then RELOAD.  Returns the monotonic time RELOAD was acknowledged.
        Server connections already open keep their old login (PgBouncer
        does not tag a database dirty for a password change)."""
        self._password = password
        self._write(self.ini_path, self._ini())
        self.console('RELOAD')
        return time.monotonic()

    def reconnect(self):
        """RECONNECT: every server connection is closed once released (in
        transaction mode, after its current transaction).  Returns the
        monotonic time it was acknowledged."""
        self.console('RECONNECT')
        return time.monotonic()

    def servers(self):
        """SHOW SERVERS as a list of dicts (type, user, database, state,
        connect_time, ...)."""
        lines = self.admin('SHOW SERVERS', header=True).splitlines()
        if not lines:
            return []
        cols = lines[0].split('|')
        return [dict(zip(cols, line.split('|'))) for line in lines[1:]
                if line]

    def setting(self, name):
        """A setting's value from SHOW CONFIG, as a string (None if there
        is no such setting)."""
        for line in self.admin('SHOW CONFIG').splitlines():
            parts = line.split('|')
            if parts[0] == name:
                return parts[1]
        return None

    def conninfo(self, application_name=None):
        """What an app connects with: no password (auth_type = trust)."""
        s = (f'host={self.host} port={self.port} dbname={DB_ALIAS} '
             f'user={_libpq_quote(self.role)}')
        if application_name:
            s += f' application_name={_libpq_quote(application_name)}'
        return s
