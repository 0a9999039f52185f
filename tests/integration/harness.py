"""
Integration-test harness for dbswap: everything a test needs to drive the
real binaries against a real PostgreSQL.

  PgCluster   a throwaway PostgreSQL cluster (initdb + pg_ctl, scram auth);
              pause() hangs it (SIGSTOP), resume() lets it go on
  Agent       dbswapd, found through $DBSWAPD (set by meson)
  Client      the wire protocol written again in Python, from the
              specification: it also proves a non-C client can speak it
  Subscriber  the libdbswap test subscriber, found through
              $DBSWAP_TEST_SUBSCRIBER
  UpdateRecorder  a Client of its own that subscribes, records every
              update with the time it came, and acks it at once
  write_*     the ways programs replace a file, which the agent must survive
  k8s_*       the Kubernetes AtomicWriter layout (..data symlink swaps)

Everything this module starts is cleaned up on every path out: by the
context managers and close() methods, then by an atexit hook and a SIGTERM
handler, and last by a watchdog process in its own session that notices
when this process dies (even by SIGKILL) and stops what it left behind.

Timeouts are in seconds and are multiplied by $DBSWAP_TEST_TIMEOUT_SCALE
(default 1), for slow runs such as valgrind.  $DBSWAP_TEST_WRAPPER, when
set, is split like a shell command and put in front of the C binaries
(e.g. "valgrind -q --error-exitcode=99").

Secrets never go into a command line: psql gets passwords through its
environment and SQL through stdin.

Only the Python standard library and msgpack (Debian's python3-msgpack).
"""

import atexit
import collections
import functools
import glob
import grp
import json
import os
import pwd
import random
import re
import secrets
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

import msgpack

__all__ = [
    'FRAME_MAX', 'PROTOCOL_VERSION', 'PROTOCOL_VERSION_MIN',
    'TIMEOUT_SCALE', 'SESSION',
    'HarnessError', 'ProtocolError', 'ConnectionClosed', 'ProcessError',
    'PgError',
    'PgCluster', 'Agent', 'Client', 'Subscriber', 'UpdateRecorder',
    'target_status', 'file_status', 'wait_for', 'cleanup_all',
    'can_connect', 'last_connect_error', 'parse_conninfo', 'quote_ident',
    'quote_literal', 'encode_frame', 'frame_bytes',
    'write_inplace', 'write_truncate', 'write_rename',
    'write_delete_recreate', 'write_slow', 'k8s_setup', 'k8s_update',
]

# Must agree with ipc/protocol.h.
PROTOCOL_VERSION = 2  # IPC_PROTOCOL_VERSION
PROTOCOL_VERSION_MIN = 1  # IPC_PROTOCOL_VERSION_MIN
FRAME_HEADER = 4      # IPC_FRAME_HEADER
FRAME_MAX = 65536     # IPC_FRAME_MAX: largest body either side accepts

DEFAULT_TIMEOUT = 5.0


def _scale_from_env():
    try:
        scale = float(os.environ.get('DBSWAP_TEST_TIMEOUT_SCALE') or 1)
    except ValueError:
        scale = 1.0
    return scale if scale > 0 else 1.0


TIMEOUT_SCALE = _scale_from_env()


def _deadline(timeout):
    return time.monotonic() + timeout * TIMEOUT_SCALE


def _left(deadline):
    return deadline - time.monotonic()


class HarnessError(Exception):
    """Base of the errors this module raises (besides TimeoutError)."""


class ProtocolError(HarnessError):
    """The peer sent something the protocol does not allow."""


class ConnectionClosed(HarnessError):
    """The peer closed the connection."""


class ProcessError(HarnessError):
    """A process failed to start or exited when it should not have."""


class PgError(HarnessError):
    """initdb, pg_ctl or psql failed."""


# --------------------------------------------------------------------------
# Cleanup: a registry of live resources, atexit, SIGTERM, and a watchdog.

_lock = threading.RLock()
_live = {}  # key -> close callable, in creation order
_keys = iter(range(1, 1 << 62))


def _register(close):
    with _lock:
        key = next(_keys)
        _live[key] = close
        return key


def _unregister(key):
    with _lock:
        _live.pop(key, None)


def cleanup_all():
    """Closes everything still open, newest first.  Safe to call twice."""
    with _lock:
        items = list(_live.items())
    for key, close in reversed(items):
        try:
            close()
        except Exception as e:  # keep going: the rest must go too
            print(f'harness: cleanup failed: {e!r}', file=sys.stderr)
        _unregister(key)


# The watchdog outlives this process: it reads a list of things to clean
# from a pipe, and when the pipe reaches EOF (this process exited, maybe
# killed) it cleans whatever is still listed.  It runs in its own session so
# that a signal to our process group does not take it down with us.
_WATCHDOG_SRC = r'''
import json, os, shutil, signal, subprocess, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
signal.signal(signal.SIGHUP, signal.SIG_IGN)

def starttime(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            return int(f.read().rpartition(')')[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None

def kill_pid(m):
    if starttime(m['pid']) == m['start']:
        os.kill(m['pid'], signal.SIGKILL)

def descendants(pid):
    children = {}
    for d in os.listdir('/proc'):
        if d.isdigit():
            try:
                with open('/proc/%s/stat' % d) as f:
                    ppid = int(f.read().rpartition(')')[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for c in children.get(p, ()):
            out.append(c)
            todo.append(c)
    return out

def resume_pg(datadir):
    # A cluster left paused (SIGSTOP) would never see pg_ctl's signal,
    # and its children would stay stopped after the postmaster's SIGKILL.
    try:
        with open(os.path.join(datadir, 'postmaster.pid')) as f:
            pid = int(f.readline())
        with open('/proc/%d/cmdline' % pid, 'rb') as f:
            if os.fsencode(datadir) not in f.read():
                return
    except (OSError, ValueError):
        return
    for p in [pid] + descendants(pid):
        try:
            os.kill(p, signal.SIGCONT)
        except OSError:
            pass

def stop_pg(m):
    resume_pg(m['datadir'])
    kw = {}
    if m.get('uid') is not None:
        kw = dict(user=m['uid'], group=m['gid'], extra_groups=[])
    try:
        subprocess.run([m['pg_ctl'], '-D', m['datadir'], '-m', 'immediate',
                        '-w', '-t', '20', 'stop'], cwd='/',
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, **kw)
    except Exception:
        pass
    try:
        with open(os.path.join(m['datadir'], 'postmaster.pid')) as f:
            pid = int(f.readline())
        os.kill(pid, signal.SIGKILL)
    except (OSError, ValueError):
        pass

def rm_dir(m):
    shutil.rmtree(m['path'], ignore_errors=True)

def del_group(m):
    subprocess.run(['groupdel', m['name']], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30)

def del_user(m):
    subprocess.run(['pkill', '-KILL', '-u', m['name']], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    subprocess.run(['userdel', m['name']], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=30)

live = {}
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get('op') == 'add':
        live[m['key']] = m
    elif m.get('op') == 'del':
        live.pop(m['key'], None)
for m in reversed(list(live.values())):
    try:
        {'pid': kill_pid, 'pg': stop_pg, 'dir': rm_dir,
         'user': del_user, 'group': del_group}[m['kind']](m)
    except Exception:
        pass
'''

_watchdog = None


def _watchdog_send(msg):
    global _watchdog
    with _lock:
        if _watchdog is None:
            if msg['op'] != 'add':
                return
            _watchdog = subprocess.Popen(
                [sys.executable, '-I', '-c', _WATCHDOG_SRC],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, cwd='/', start_new_session=True)
        try:
            _watchdog.stdin.write(json.dumps(msg).encode() + b'\n')
            _watchdog.stdin.flush()
        except (OSError, ValueError):
            pass  # watchdog gone: the other safety nets remain


def _watch(kind, **fields):
    """Lists something for the watchdog; returns a key for _unwatch()."""
    key = next(_keys)
    _watchdog_send(dict(op='add', key=key, kind=kind, **fields))
    return key


def _unwatch(key):
    if key is not None:
        _watchdog_send(dict(op='del', key=key))


def _proc_starttime(pid):
    try:
        with open(f'/proc/{pid}/stat') as f:
            return int(f.read().rpartition(')')[2].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _watch_pid(pid):
    return _watch('pid', pid=pid, start=_proc_starttime(pid))


def _proc_stat_fields(pid):
    """The fields of /proc/PID/stat after the command name (state, ppid,
    ...), or None when the process is gone."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rpartition(')')[2].split()
    except OSError:
        return None


def _proc_state(pid):
    """The one-letter state of pid ('T' when stopped), None if gone."""
    fields = _proc_stat_fields(pid)
    return fields[0] if fields else None


def _shm_attached(shmid):
    """How many processes are attached to SysV shared memory segment shmid
    (0 when it is gone, or None)."""
    if shmid is None:
        return 0
    try:
        with open('/proc/sysvipc/shm') as f:
            next(f)
            for line in f:
                fields = line.split()
                if int(fields[1]) == shmid:
                    return int(fields[6])
    except (OSError, ValueError, IndexError, StopIteration):
        pass
    return 0


def _descendants(pid):
    """The pids of pid's children, their children, and so on."""
    children = {}
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        fields = _proc_stat_fields(d)
        try:
            ppid = int(fields[1]) if fields else None
        except (ValueError, IndexError):
            ppid = None
        if ppid is not None:
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            out.append(c)
            todo.append(c)
    return out


def _at_exit():
    global _watchdog
    cleanup_all()
    _drop_template()
    with _lock:
        w, _watchdog = _watchdog, None
    if w is not None:
        try:
            w.stdin.close()  # EOF: the watchdog cleans nothing and exits
            w.wait(timeout=10)
        except Exception:
            pass


atexit.register(_at_exit)


def _on_sigterm(signum, frame):
    # Raising here would be caught by unittest's bare except and the run
    # would go on; clean up, then die of the signal as if unhandled.
    try:
        _at_exit()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)


if threading.current_thread() is threading.main_thread():
    try:
        if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:
        pass


def _mkdtemp(prefix):
    path = tempfile.mkdtemp(prefix=prefix)
    return path, _watch('dir', path=path)


def _rmtree(path, watch_key):
    if path:
        shutil.rmtree(path, ignore_errors=True)
    _unwatch(watch_key)


class LocalUser:
    """A throwaway local account for attack tests (needs root): a system
    user with its own group, no home and no login shell, named
    dbswap-t-XXXXXX.  Removed (its processes killed first) by close(), at
    exit, or by the watchdog if this process dies.  Attributes: name, uid,
    gid.  run(argv, **kw) runs a command as it (subprocess.run's
    arguments; its supplementary groups are only its own unless groups=
    is given)."""

    def __init__(self, tag=None):
        if os.geteuid() != 0:
            raise unittest.SkipTest('making local users needs root')
        self.name = 'dbswap-t-' + (tag or secrets.token_hex(3))
        self._watch = _watch('user', name=self.name)
        r = subprocess.run(['useradd', '--system', '--user-group',
                            '--no-create-home', '--home-dir', '/nonexistent',
                            '--shell', '/usr/sbin/nologin', self.name],
                           capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            _unwatch(self._watch)
            raise HarnessError(f'useradd {self.name}: {r.stderr.strip()}')
        pw = pwd.getpwnam(self.name)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        self._key = _register(self.close)

    def run(self, argv, groups=(), **kw):
        kw.setdefault('capture_output', True)
        kw.setdefault('text', True)
        kw.setdefault('timeout', 30)
        kw.setdefault('stdin', subprocess.DEVNULL)
        return subprocess.run(argv, user=self.uid, group=self.gid,
                              extra_groups=list(groups), **kw)

    def popen(self, argv, groups=(), **kw):
        return subprocess.Popen(argv, user=self.uid, group=self.gid,
                                extra_groups=list(groups), **kw)

    def close(self):
        if self.name is None:
            return
        subprocess.run(['pkill', '-KILL', '-u', self.name],
                       capture_output=True, timeout=30)
        subprocess.run(['userdel', self.name], capture_output=True,
                       timeout=30)
        _unregister(self._key)
        _unwatch(self._watch)
        self.name = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def local_group(tag=None):
    """A throwaway group (name, gid), removed at exit; see LocalUser."""
    name = 'dbswap-g-' + (tag or secrets.token_hex(3))
    r = subprocess.run(['groupadd', '--system', name], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0:
        raise HarnessError(f'groupadd {name}: {r.stderr.strip()}')
    gid = grp.getgrnam(name).gr_gid
    key = _watch('group', name=name)

    def close():
        subprocess.run(['groupdel', name], capture_output=True, timeout=30)
        _unwatch(key)
    _register(close)
    return name, gid


def _read_text(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')
    except FileNotFoundError:
        return ''


def _tail(text, n=40):
    return '\n'.join(text.splitlines()[-n:])


def _wrapper(agent=False):
    """The command the tests run binaries under: $DBSWAP_TEST_WRAPPER for
    every binary, then $DBSWAP_TEST_AGENT_WRAPPER for dbswapd alone (so a
    valgrind run can leave the load generators at full speed)."""
    w = os.environ.get('DBSWAP_TEST_WRAPPER', '')
    if agent:
        w += ' ' + os.environ.get('DBSWAP_TEST_AGENT_WRAPPER', '')
    return shlex.split(w)


def _binary(binary, envvar):
    if binary is None:
        binary = os.environ.get(envvar)
        if not binary:
            raise HarnessError(f'${envvar} is not set (meson test sets it)')
    return [binary] if isinstance(binary, str) else list(binary)


def _stop_process(proc, timeout):
    """SIGTERM, wait, SIGKILL.  Returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout * TIMEOUT_SCALE)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


# --------------------------------------------------------------------------
# PostgreSQL

@functools.lru_cache(maxsize=None)
def _pg_bindir():
    try:
        out = subprocess.run(['pg_config', '--bindir'], capture_output=True,
                             text=True, timeout=10)
        d = out.stdout.strip()
        if out.returncode == 0 and os.path.exists(os.path.join(d, 'initdb')):
            return d
    except (OSError, subprocess.TimeoutExpired):
        pass
    found = sorted(glob.glob('/usr/lib/postgresql/*/bin/initdb'),
                   key=lambda p: int(p.split('/')[-3]))
    if not found:
        raise PgError('no PostgreSQL server binaries (pg_config --bindir)')
    return os.path.dirname(found[-1])


def _pg_bin(name):
    return os.path.join(_pg_bindir(), name)


@functools.lru_cache(maxsize=None)
def _psql():
    p = _pg_bin('psql')
    return p if os.path.exists(p) else '/usr/bin/psql'


def _pg_clean_env():
    """Our environment without PG* variables, which would change what psql
    and the server do."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('PG')}
    env['PGPASSFILE'] = '/nonexistent/dbswap-test-pgpass'
    env['PGSERVICEFILE'] = '/nonexistent/dbswap-test-pgservice'
    return env


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def quote_ident(name):
    if '\0' in name:
        raise ValueError('NUL in identifier')
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value):
    if '\0' in value:
        raise ValueError('NUL in literal')
    return "'" + value.replace("'", "''") + "'"


# libpq connection keywords and the variables psql reads them from.
_PG_ENV = {
    'host': 'PGHOST', 'hostaddr': 'PGHOSTADDR', 'port': 'PGPORT',
    'dbname': 'PGDATABASE', 'user': 'PGUSER', 'password': 'PGPASSWORD',
    'passfile': 'PGPASSFILE', 'channel_binding': 'PGCHANNELBINDING',
    'connect_timeout': 'PGCONNECT_TIMEOUT', 'options': 'PGOPTIONS',
    'application_name': 'PGAPPNAME', 'sslmode': 'PGSSLMODE',
    'sslcert': 'PGSSLCERT', 'sslkey': 'PGSSLKEY',
    'sslrootcert': 'PGSSLROOTCERT', 'sslcrl': 'PGSSLCRL',
    'requirepeer': 'PGREQUIREPEER', 'gssencmode': 'PGGSSENCMODE',
    'target_session_attrs': 'PGTARGETSESSIONATTRS',
    'client_encoding': 'PGCLIENTENCODING', 'service': 'PGSERVICE',
    'krbsrvname': 'PGKRBSRVNAME', 'gsslib': 'PGGSSLIB',
    'sslcompression': 'PGSSLCOMPRESSION', 'sslsni': 'PGSSLSNI',
    'ssl_min_protocol_version': 'PGSSLMINPROTOCOLVERSION',
    'ssl_max_protocol_version': 'PGSSLMAXPROTOCOLVERSION',
}


def _parse_kv(s):
    """libpq key=value syntax: values bare or single-quoted, backslash
    escapes in both."""
    out, i, n = {}, 0, len(s)
    while True:
        while i < n and s[i].isspace():
            i += 1
        if i >= n:
            return out
        j = i
        while j < n and s[j] != '=' and not s[j].isspace():
            j += 1
        key = s[i:j]
        while j < n and s[j].isspace():
            j += 1
        if not key or j >= n or s[j] != '=':
            raise ValueError(f'conninfo: missing "=" after {key!r}')
        j += 1
        while j < n and s[j].isspace():
            j += 1
        val = []
        if j < n and s[j] == "'":
            j += 1
            while True:
                if j >= n:
                    raise ValueError('conninfo: unterminated quoted string')
                c = s[j]
                if c == '\\' and j + 1 < n:
                    val.append(s[j + 1])
                    j += 2
                elif c == "'":
                    j += 1
                    break
                else:
                    val.append(c)
                    j += 1
        else:
            while j < n and not s[j].isspace():
                if s[j] == '\\' and j + 1 < n:
                    j += 1
                val.append(s[j])
                j += 1
        out[key] = ''.join(val)
        i = j


def _parse_url(s):
    rest = s.split('://', 1)[1]
    rest, _, query = rest.partition('?')
    netloc, slash, path = rest.partition('/')
    out = {}
    if '@' in netloc:
        userinfo, _, netloc = netloc.rpartition('@')
        user, colon, password = userinfo.partition(':')
        if user:
            out['user'] = urllib.parse.unquote(user)
        if colon:
            out['password'] = urllib.parse.unquote(password)
    hosts, ports = [], []
    for hp in netloc.split(',') if netloc else []:
        if hp.startswith('['):
            host, _, port = hp[1:].partition(']')
            port = port[1:] if port.startswith(':') else ''
        else:
            host, _, port = hp.partition(':')
        hosts.append(urllib.parse.unquote(host))
        ports.append(port)
    if any(hosts):
        out['host'] = ','.join(hosts)
    if any(ports):
        out['port'] = ','.join(ports)
    if slash and path:
        out['dbname'] = urllib.parse.unquote(path)
    for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True):
        out[k] = v
    return out


def parse_conninfo(conninfo):
    """A libpq conninfo (URL or key=value) as a dict of keywords."""
    if conninfo.startswith(('postgresql://', 'postgres://')):
        return _parse_url(conninfo)
    return _parse_kv(conninfo)


def _conninfo_env(conninfo):
    env = _pg_clean_env()
    for k, v in parse_conninfo(conninfo).items():
        if k not in _PG_ENV:
            raise ValueError(f'conninfo keyword {k!r} unknown to the harness')
        env[_PG_ENV[k]] = v
    return env


_last_connect_error = None


def can_connect(conninfo, timeout=DEFAULT_TIMEOUT):
    """True when psql can log in with conninfo and run a query.  The
    conninfo goes to psql through PG* variables, never argv.  On False the
    reason is in harness.last_connect_error()."""
    global _last_connect_error
    env = _conninfo_env(conninfo)
    env.setdefault('PGCONNECT_TIMEOUT', str(max(2, int(timeout))))
    try:
        r = subprocess.run([_psql(), '-X', '-w', '-q', '-A', '-t',
                            '-c', 'select 1'], env=env, capture_output=True,
                           text=True, stdin=subprocess.DEVNULL,
                           timeout=timeout * TIMEOUT_SCALE + 5)
    except subprocess.TimeoutExpired:
        _last_connect_error = 'psql timed out'
        return False
    ok = r.returncode == 0 and r.stdout.strip() == '1'
    _last_connect_error = None if ok else r.stderr.strip()
    return ok


def last_connect_error():
    """psql's stderr from the last can_connect() that returned False."""
    return _last_connect_error


def _server_user():
    """subprocess arguments that run a server binary as postgres when we are
    root (the server refuses to run as root); none otherwise."""
    if os.geteuid() != 0:
        return {}
    pw = pwd.getpwnam('postgres')
    return dict(user=pw.pw_uid, group=pw.pw_gid, extra_groups=[])


def _chown_server(path):
    run_as = _server_user()
    if run_as:
        os.chown(path, run_as['user'], run_as['group'])


def _server_cmd(argv, cwd, timeout=60):
    env = _pg_clean_env()
    env['LC_ALL'] = 'C'
    try:
        return subprocess.run(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=timeout,
                              **_server_user())
    except subprocess.TimeoutExpired as e:
        raise PgError(f'{os.path.basename(argv[0])} timed out') from e


def _initdb(parent, password):
    """initdb into parent/data, superuser postgres with password."""
    pwfile = os.path.join(parent, 'pwfile')
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(password + '\n')
    _chown_server(pwfile)
    try:
        r = _server_cmd([_pg_bin('initdb'), '-A', 'scram-sha-256',
                         '--pwfile=' + pwfile, '-U', PgCluster.superuser,
                         '--no-sync', '--no-instructions', '-E', 'UTF8',
                         '--locale=C', '-D', os.path.join(parent, 'data')],
                        cwd=parent)
    finally:
        os.unlink(pwfile)
    if r.returncode != 0:
        raise PgError(f'initdb failed:\n{r.stdout}{r.stderr}')


# initdb takes about a second; copying its result a fraction of that.  One
# template per process, made on first use, removed at exit.
_template = None  # (dir, superuser password, watchdog key)
_template_lock = threading.Lock()


def _pg_template():
    global _template
    with _template_lock:
        if _template is None:
            d, key = _mkdtemp('dbswap-pgtpl-')
            try:
                _chown_server(d)
                password = secrets.token_urlsafe(24)
                _initdb(d, password)
            except BaseException:
                _rmtree(d, key)
                raise
            _template = (d, password, key)
        return _template[:2]


def _drop_template():
    global _template
    with _template_lock:
        if _template is not None:
            _rmtree(_template[0], _template[2])
            _template = None


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_CRC32C = _crc32c_table()


def _crc32c(data):
    """CRC-32C (Castagnoli), as PostgreSQL's pg_control uses."""
    c = 0xFFFFFFFF
    for b in data:
        c = _CRC32C[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class PgCluster:
    """A PostgreSQL cluster in a temp dir, listening on 127.0.0.1 at a free
    port and on a unix socket in sockdir, password (scram) auth everywhere.

    Use as a context manager, or call close().  Attributes: dir, datadir,
    sockdir, host, port, superuser, superuser_password, postmaster_pid.
    """

    host = '127.0.0.1'
    superuser = 'postgres'

    def __init__(self, settings=None, start_attempts=5, template=True,
                 replica_of=None):
        """settings: extra server settings ({'log_connections': 'on'}).
        template: copy a data dir initdb'd once per process (the superuser
        password is then shared by this process's clusters) rather than
        run initdb again.  Each copy gets a system identifier of its own
        (_new_system_identifier()): clusters made apart are independent
        databases, as real ones are, and the agent tells a replicated pair
        from an independent one by that identifier.
        replica_of: a running PgCluster to make a streaming replica of
        (pg_basebackup -R, see replica()); template is then ignored."""
        self.settings = dict(settings or {})
        self.replica_of = replica_of
        self.dir = None
        self.port = None
        self.postmaster_pid = None
        self._dir_key = self._pg_key = None
        self._running = False
        self._paused = None     # {pid: start time} of what pause() stopped
        self._pause_key = None
        self._key = _register(self.close)
        try:
            self._setup(start_attempts, template)
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _server_cmd(self, argv, timeout=60):
        return _server_cmd(argv, self.dir, timeout)

    def _setup(self, attempts, template):
        self.dir, self._dir_key = _mkdtemp('dbswap-pg-')
        os.chmod(self.dir, 0o755)  # lets non-root clients reach sockdir
        _chown_server(self.dir)
        self.datadir = os.path.join(self.dir, 'data')
        self.sockdir = os.path.join(self.dir, 'sock')
        self.logfile = os.path.join(self.dir, 'postgres.log')
        os.mkdir(self.sockdir, 0o755)
        _chown_server(self.sockdir)

        if self.replica_of is not None:
            self._base_backup(self.replica_of)
        elif template:
            tpl, self.superuser_password = _pg_template()
            r = self._server_cmd(['cp', '-a', os.path.join(tpl, 'data'),
                                  self.datadir])
            if r.returncode != 0:
                raise PgError(f'copying the template failed: {r.stderr}')
            self._new_system_identifier()
        else:
            self.superuser_password = secrets.token_urlsafe(24)
            _initdb(self.dir, self.superuser_password)

        run_as = _server_user()
        self._pg_key = _watch('pg', pg_ctl=_pg_bin('pg_ctl'),
                              datadir=self.datadir, uid=run_as.get('user'),
                              gid=run_as.get('group'))
        err = None
        for _ in range(attempts):
            self.port = _free_port()
            try:
                self.start()
                return
            except PgError as e:
                err = e  # most likely the port was taken meanwhile
        raise err

    def start(self):
        """Starts the server (again) on self.port; waits until it accepts
        connections."""
        if self._running:
            return
        opts = {'listen_addresses': self.host, 'fsync': 'off',
                'max_connections': '200', 'full_page_writes': 'off',
                'synchronous_commit': 'off'}
        opts.update(self.settings)
        o = f'-p {self.port} -k {shlex.quote(self.sockdir)}'
        for k, v in opts.items():
            o += ' -c ' + shlex.quote(f'{k}={v}')
        r = self._server_cmd([_pg_bin('pg_ctl'), '-w', '-t', '30',
                              '-D', self.datadir, '-l', self.logfile,
                              '-o', o, 'start'])
        if r.returncode != 0:
            raise PgError(f'pg_ctl start failed on port {self.port}:\n'
                          f'{r.stdout}{r.stderr}\n{_tail(self.log(), 15)}')
        self._running = True
        with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
            self.postmaster_pid = int(f.readline())

    def stop(self, mode='immediate'):
        """Stops the server (mode: smart, fast or immediate).  A paused
        server is resumed first: stopped, it would not see the signal."""
        self.resume()
        if not self._running:
            return
        r = self._server_cmd([_pg_bin('pg_ctl'), '-w', '-t', '30',
                              '-D', self.datadir, '-m', mode, 'stop'])
        if r.returncode != 0:
            raise PgError(f'pg_ctl stop failed:\n{r.stdout}{r.stderr}')
        self._running = False

    def kill_postmaster(self, timeout=DEFAULT_TIMEOUT):
        """SIGKILL to the postmaster alone, as `kill -9` or the OOM killer
        would: its backends and helpers are left to notice the death of
        their parent and exit by themselves (PostgreSQL's postmaster death
        check).  Waits until they have and the stale lock files are gone,
        so that start() works again; returns the monotonic time of the
        kill.  A child still there after timeout is killed too."""
        self.resume()
        pid = self._verified_postmaster()
        if not self._running or pid is None:
            raise HarnessError('kill_postmaster: the cluster is not running')
        shmid = self._shmem_id()
        # Listed before the kill: once the postmaster is gone its children
        # belong to init and _descendants() no longer finds them.  One
        # forked in between is caught by the shared memory's count below.
        procs = {p: _proc_starttime(p) for p in [pid] + _descendants(pid)}
        killed = time.monotonic()
        os.kill(pid, signal.SIGKILL)
        self._running = False
        self.postmaster_pid = None

        def left():
            # A zombie has exited (init, or whoever adopted it, reaps it).
            return [p for p, start in procs.items()
                    if start is not None and _proc_starttime(p) == start and
                    _proc_state(p) not in ('Z', 'X', None)]

        def settled():
            # The postmaster's own test before it starts over a crash: no
            # process still attached to the old segment.
            return not left() and not _shm_attached(shmid)
        deadline, forced = _deadline(timeout), False
        while not settled():
            if _left(deadline) <= 0:
                if forced:
                    raise HarnessError(
                        f'kill_postmaster: processes {left()} or attaches '
                        f'to shared memory segment {shmid} still there')
                for p in left():
                    try:
                        os.kill(p, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                deadline, forced = _deadline(DEFAULT_TIMEOUT), True
            time.sleep(0.005)
        # The pid in a stale lock file may be reused by now by a process
        # the new postmaster cannot tell from a live one.
        for lock in (os.path.join(self.datadir, 'postmaster.pid'),
                     os.path.join(self.sockdir, f'.s.PGSQL.{self.port}.lock')):
            try:
                os.unlink(lock)
            except FileNotFoundError:
                pass
        return killed

    def _shmem_id(self):
        # postmaster.pid's 7th line: the SysV segment's key and id (the
        # small segment that tells whether old processes are still around).
        try:
            with open(os.path.join(self.datadir, 'postmaster.pid')) as f:
                lines = f.read().splitlines()
            return int(lines[6].split()[1])
        except (OSError, ValueError, IndexError):
            return None

    @property
    def running(self):
        return self._running

    @property
    def paused(self):
        return self._paused is not None

    def processes(self):
        """The postmaster's pid and those of all its descendants (the
        backends, the checkpointer, ...); [] when it is not running."""
        pid = self._verified_postmaster()
        return [pid] + _descendants(pid) if pid else []

    def _verified_postmaster(self):
        # The pid file's postmaster, if it really is ours.
        datadir = getattr(self, 'datadir', None)
        try:
            with open(os.path.join(datadir, 'postmaster.pid')) as f:
                pid = int(f.readline())
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if os.fsencode(datadir) in f.read():
                    return pid
        except (OSError, ValueError, TypeError):
            pass
        return None

    def pause(self, timeout=DEFAULT_TIMEOUT):
        """Hangs the server as a frozen host would: SIGSTOP to the
        postmaster, then to every descendant (backends included, so open
        connections hang too), until a scan finds none left running.  The
        kernel still accepts TCP connections on the listening socket; no
        one answers them.  Returns once every process is stopped ('T').

        resume() undoes it; it is registered with the cleanup (which runs
        it before stop or close), stop() and close() call it, and the
        watchdog sends SIGCONT before it stops a cluster, so no postgres
        process stays stopped after the test whatever way it ends."""
        if self._paused is not None:
            return
        pid = self._verified_postmaster()
        if not self._running or pid is None:
            raise HarnessError('pause: the cluster is not running')
        self._paused = {}
        self._pause_key = _register(self.resume)
        deadline = _deadline(timeout)

        def stop_one(p):
            start = _proc_starttime(p)
            if start is None:
                return
            self._paused[p] = start
            try:
                os.kill(p, signal.SIGSTOP)
            except ProcessLookupError:
                pass

        stop_one(pid)
        # The postmaster must be stopped before its children are listed,
        # or it could fork a new one after the scan.
        while True:
            running = [p for p in self._paused
                       if _proc_state(p) not in ('T', 't', 'Z', 'X', None)]
            new = [p for p in _descendants(pid) if p not in self._paused]
            for p in new:
                stop_one(p)
            if not running and not new:
                return
            if _left(deadline) <= 0:
                raise HarnessError(f'pause: processes {running + new} did '
                                   f'not stop within {timeout} s')
            time.sleep(0.005)

    def resume(self):
        """SIGCONT to everything pause() stopped (a pid that has been
        reused since is left alone) and to the postmaster's descendants.
        Does nothing if the cluster is not paused."""
        if self._paused is None:
            return
        try:
            pid = self._verified_postmaster()
            pids = dict(self._paused)
            for p in _descendants(pid) if pid else ():
                pids.setdefault(p, _proc_starttime(p))
            for p, start in pids.items():
                if _proc_starttime(p) == start:
                    try:
                        os.kill(p, signal.SIGCONT)
                    except ProcessLookupError:
                        pass
        finally:
            self._paused = None
            key, self._pause_key = self._pause_key, None
            if key is not None:
                _unregister(key)

    def close(self):
        """Stops the server and removes the directory.  Idempotent."""
        try:
            self.resume()
            datadir = getattr(self, 'datadir', None)
            if self._running or (datadir and os.path.exists(
                    os.path.join(datadir, 'postmaster.pid'))):
                self._running = True  # a start that timed out may have run
                try:
                    self.stop('immediate')
                except Exception:
                    pass
                self._kill_stuck_postmaster(datadir)
                self._running = False
            _unwatch(self._pg_key)
            self._pg_key = None
            _rmtree(self.dir, self._dir_key)
            self._dir_key = None
        finally:
            _unregister(self._key)

    @staticmethod
    def _kill_stuck_postmaster(datadir):
        # A postmaster that survived pg_ctl stop still has its pid file;
        # kill it only if that pid really is a postgres on this datadir.
        try:
            with open(os.path.join(datadir, 'postmaster.pid')) as f:
                pid = int(f.readline())
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                if os.fsencode(datadir) not in f.read():
                    return
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError):
            pass

    # -- replicas (issue 16: a promoted replica and its old primary)

    REPLICATION_ROLE = 'replicator'

    def _replication_password(self):
        """Creates the replication role on this cluster once; returns its
        password.  initdb -A scram-sha-256 writes pg_hba lines for
        replication from local sockets and 127.0.0.1 (scram), and the
        defaults (wal_level replica, max_wal_senders 10) allow a base
        backup and streaming: nothing else to configure."""
        if getattr(self, '_repl_password', None) is None:
            pw = secrets.token_urlsafe(24)
            self.durable_sql(f'CREATE ROLE {self.REPLICATION_ROLE} '
                             f'REPLICATION LOGIN PASSWORD {quote_literal(pw)}')
            self._repl_password = pw
        return self._repl_password

    def _base_backup(self, primary):
        # As the server user, into datadir (which pg_basebackup creates),
        # over primary's unix socket; -R writes standby.signal and a
        # primary_conninfo (with the password: a test's throwaway role) into
        # postgresql.auto.conf.  The superuser and its password come with
        # the copy.
        if not primary.running:
            raise PgError('replica_of: the primary is not running')
        self.superuser_password = primary.superuser_password
        env = _pg_clean_env()
        env.update(LC_ALL='C', PGPASSWORD=primary._replication_password())
        argv = [_pg_bin('pg_basebackup'), '-D', self.datadir, '-R',
                '-X', 'stream', '-c', 'fast', '--no-sync',
                '-h', primary.sockdir, '-p', str(primary.port),
                '-U', self.REPLICATION_ROLE, '-w']
        try:
            r = subprocess.run(argv, cwd=self.dir, env=env,
                               stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=120, **_server_user())
        except subprocess.TimeoutExpired as e:
            raise PgError('pg_basebackup timed out') from e
        if r.returncode != 0:
            raise PgError(f'pg_basebackup failed:\n{r.stdout}{r.stderr}')

    def replica(self, settings=None):
        """A new PgCluster streaming from this one (a hot standby: in
        recovery, read-only, same system identifier), started on a free
        port; returns once it accepts connections.  Close it like any
        cluster."""
        return PgCluster(settings=settings, replica_of=self)

    def in_recovery(self):
        return self.sql('SELECT pg_is_in_recovery()') == 't'

    def promote(self, timeout=DEFAULT_TIMEOUT):
        """pg_ctl promote; returns once pg_is_in_recovery() is false (the
        server takes writes, on a new timeline)."""
        r = self._server_cmd([_pg_bin('pg_ctl'), '-w', '-t', '30',
                              '-D', self.datadir, 'promote'])
        if r.returncode != 0:
            raise PgError(f'pg_ctl promote failed:\n{r.stdout}{r.stderr}')
        wait_for(lambda: not self.in_recovery(), timeout,
                 what='the promoted server out of recovery')

    def system_identifier(self):
        """pg_control_system()'s system_identifier, as an int: the same
        for a cluster and its replicas, different for clusters made
        apart."""
        return int(self.sql('SELECT system_identifier '
                            'FROM pg_control_system()'))

    def checkpoint_timeline(self):
        """pg_control_checkpoint()'s timeline_id: the timeline of the last
        checkpoint (restartpoint on a standby).  On a promoted server it
        moves to the new timeline only when the end-of-recovery
        checkpoint, which promotion requests but does not wait for, is
        done: see timeline()."""
        return int(self.sql('SELECT timeline_id FROM pg_control_checkpoint()'))

    def timeline(self):
        """The timeline the server is on now.  A server out of recovery
        writes WAL on it: the first 8 hex digits of the name of the WAL
        file it writes (pg_walfile_name(pg_current_wal_lsn())), which moves
        the moment promotion ends.  A standby has no WAL of its own (both
        functions refuse in recovery): the timeline it replays, which is
        its checkpoint's (restartpoint's) unless one came in since."""
        return int(self.sql(
            'SELECT CASE WHEN pg_is_in_recovery() '
            'THEN (SELECT timeline_id FROM pg_control_checkpoint()) '
            "ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), "
            '1, 8))::bit(32)::int END'))

    def _new_system_identifier(self):
        """Gives a copy of the template a system identifier of its own:
        writes a new one into global/pg_control (and its CRC), then lets
        pg_resetwal write a fresh WAL segment bearing it (a WAL page whose
        identifier differs from pg_control's is refused at startup).  The
        copy is a cleanly shut down cluster, so pg_resetwal loses
        nothing."""
        path = os.path.join(self.datadir, 'global', 'pg_control')
        with open(path, 'rb') as f:
            data = bytearray(f.read())
        # The CRC (CRC-32C) follows the fields it covers; its offset is
        # version-dependent, so find it: the 4-byte-aligned place where
        # the CRC of everything before it is stored.
        at = next((i for i in range(8, 1024, 4)
                   if struct.unpack_from('<I', data, i)[0]
                   == _crc32c(bytes(data[:i]))), None)
        if at is None:
            raise PgError('pg_control: no CRC found')
        sysid = (int(time.time()) << 32) | secrets.randbits(32)
        struct.pack_into('<Q', data, 0, sysid)
        struct.pack_into('<I', data, at, _crc32c(bytes(data[:at])))
        with open(path, 'r+b') as f:
            f.write(data)
        r = self._server_cmd([_pg_bin('pg_resetwal'), '-D', self.datadir])
        if r.returncode != 0:
            raise PgError(f'pg_resetwal failed:\n{r.stdout}{r.stderr}')

    def log(self):
        """The server log so far."""
        return _read_text(self.logfile) if self.dir else ''

    def sql(self, query, dbname='postgres', timeout=30):
        """Runs query as the superuser over the unix socket (SQL on stdin,
        password in the environment).  Returns stdout stripped, in psql's
        unaligned tuples-only format; raises PgError on failure."""
        env = _pg_clean_env()
        env.update(PGHOST=self.sockdir, PGPORT=str(self.port),
                   PGUSER=self.superuser, PGDATABASE=dbname,
                   PGPASSWORD=self.superuser_password)
        try:
            r = subprocess.run([_psql(), '-X', '-w', '-q', '-A', '-t',
                                '-v', 'ON_ERROR_STOP=1', '-f', '-'],
                               input=query, env=env, capture_output=True,
                               text=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise PgError('psql timed out') from e
        if r.returncode != 0:
            raise PgError(f'psql failed ({r.returncode}): {r.stderr.strip()}')
        return r.stdout.strip()

    def durable_sql(self, query, dbname='postgres', timeout=30):
        """sql(), committed to the WAL before it returns.  The clusters
        run with synchronous_commit off for speed, and an immediate stop
        (a crash, which the failover tests cause on purpose) would lose
        what was committed just before: a role, a password.  fsync stays
        off: a stopped process does not lose what it wrote."""
        return self.sql('SET synchronous_commit = on;\n' + query, dbname,
                        timeout)

    def create_role(self, name, password, login=True):
        pw = 'NULL' if password is None else quote_literal(password)
        self.durable_sql(f'CREATE ROLE {quote_ident(name)} '
                         f'{"LOGIN" if login else "NOLOGIN"} PASSWORD {pw}')

    def set_password(self, name, password):
        pw = 'NULL' if password is None else quote_literal(password)
        self.durable_sql(f'ALTER ROLE {quote_ident(name)} PASSWORD {pw}')

    def create_database(self, name, owner=None):
        own = f' OWNER {quote_ident(owner)}' if owner else ''
        self.sql(f'CREATE DATABASE {quote_ident(name)}{own}')

    def sessions(self, user):
        """Number of backends logged in as user."""
        return int(self.sql('SELECT count(*) FROM pg_stat_activity '
                            f'WHERE usename = {quote_literal(user)}'))

    def terminate_sessions(self, user):
        """Ends every session of user; returns how many there were."""
        return int(self.sql(
            'SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity '
            f'WHERE usename = {quote_literal(user)}') or 0)

    def url(self, user, password, dbname='postgres'):
        q = functools.partial(urllib.parse.quote, safe='')
        return (f'postgresql://{q(user)}:{q(password)}@{self.host}:'
                f'{self.port}/{q(dbname)}')

    def keyvalue(self, user, password, dbname='postgres'):
        """The same as url(), in key=value syntax."""
        def q(v):
            return "'" + v.replace('\\', '\\\\').replace("'", "\\'") + "'"
        return (f'host={self.host} port={self.port} user={q(user)} '
                f'password={q(password)} dbname={q(dbname)}')

    def can_connect(self, conninfo, timeout=DEFAULT_TIMEOUT):
        """See the module-level can_connect()."""
        return can_connect(conninfo, timeout)


# --------------------------------------------------------------------------
# The wire protocol

def frame_bytes(body):
    """Header + body, without any check: for sending broken frames."""
    return struct.pack('>I', len(body)) + body


def encode_frame(obj):
    """One msgpack frame; ProtocolError when the body is over FRAME_MAX."""
    body = msgpack.packb(obj, use_bin_type=True)
    if len(body) > FRAME_MAX:
        raise ProtocolError(f'frame body of {len(body)} bytes is over '
                            f'{FRAME_MAX}')
    return frame_bytes(body)


def _strict_map(pairs):
    # PROTOCOL.md: keys are strings and appear once per map.
    out = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ValueError(f'map key {k!r} is not a string')
        if k in out:
            raise ValueError(f'duplicate map key {k!r}')
        out[k] = v
    return out


def _decode_body(body):
    try:
        msg = msgpack.unpackb(body, raw=False, object_pairs_hook=_strict_map)
    except Exception as e:
        raise ProtocolError(f'bad msgpack body: {e}') from e
    if not isinstance(msg, dict) or not isinstance(msg.get('type'), str):
        raise ProtocolError(f'body is not a map with a "type": {msg!r:.200}')
    return msg


# ack()/nack() default: the instance of the agent this session said hello
# to (none in a version-1 session, or before hello).
SESSION = object()


class Client:
    """A protocol client over a unix stream socket.  Every blocking call
    takes a timeout (default 5 s) and raises TimeoutError rather than hang.
    Messages read while waiting for something else (updates that arrive
    before a reply) are queued and handed out by later calls.

    After hello, `version` is the session's protocol version and
    `instance` the agent instance from the agent's hello (None if it sent
    none); ack() and nack() send that instance unless told otherwise."""

    def __init__(self, path, timeout=DEFAULT_TIMEOUT):
        self.path = path
        self.timeout = timeout
        self.version = None
        self.instance = None
        self._buf = bytearray()
        self._queue = collections.deque()
        self._next_id = 1
        self._broken = None  # the error that made the stream unusable
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(timeout * TIMEOUT_SCALE)
            self.sock.connect(path)
        except BaseException:
            self.sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def fileno(self):
        return self.sock.fileno()

    # -- sending

    def send_raw(self, data, timeout=None):
        """Sends bytes as they are."""
        self.sock.settimeout((timeout or self.timeout) * TIMEOUT_SCALE)
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError) as e:
            raise ConnectionClosed(f'peer closed: {e}') from e

    def send(self, msg, timeout=None):
        """Sends one message (a dict) with no reply expected."""
        self.send_raw(encode_frame(msg), timeout)

    # -- receiving

    def _fill(self, deadline):
        left = _left(deadline)
        if left <= 0:
            raise TimeoutError('timed out waiting for the agent')
        self.sock.settimeout(left)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError('timed out waiting for the agent') from None
        except ConnectionResetError:
            data = b''
        if not data:
            self._broken = ConnectionClosed('peer closed the connection')
            raise self._broken
        self._buf += data

    def _read_frame(self, deadline):
        if self._broken:
            raise self._broken
        while len(self._buf) < FRAME_HEADER:
            self._fill(deadline)
        (n,) = struct.unpack('>I', self._buf[:FRAME_HEADER])
        if n > FRAME_MAX:
            # Refused on the header alone, like the C reader: nothing is
            # read or kept for such a frame, and the stream is dead.
            self._broken = ProtocolError(
                f'peer announced a {n}-byte frame, over the {FRAME_MAX} limit')
            self.sock.close()
            raise self._broken
        while len(self._buf) < FRAME_HEADER + n:
            self._fill(deadline)
        body = bytes(self._buf[FRAME_HEADER:FRAME_HEADER + n])
        del self._buf[:FRAME_HEADER + n]
        return _decode_body(body)

    def _wait(self, match, timeout, what):
        for i, m in enumerate(self._queue):
            if match(m):
                del self._queue[i]
                return m
        deadline = _deadline(self.timeout if timeout is None else timeout)
        while True:
            try:
                m = self._read_frame(deadline)
            except TimeoutError:
                raise TimeoutError(f'timed out waiting for {what}; queued: '
                                   f'{list(self._queue)!r:.500}') from None
            except ConnectionClosed as e:
                raise ConnectionClosed(f'{e} while waiting for {what}; '
                                       f'queued: {list(self._queue)!r:.500}'
                                       ) from None
            if match(m):
                return m
            self._queue.append(m)

    def recv(self, timeout=None):
        """The next message of any type (queued ones first)."""
        if self._queue:
            return self._queue.popleft()
        return self._wait(lambda m: True, timeout, 'a message')

    def pending(self):
        """Messages read but not yet handed out, without blocking."""
        return list(self._queue)

    def wait_closed(self, timeout=None):
        """Waits for the peer to close; returns the messages that came
        first (queued ones included).  TimeoutError if it stays open."""
        got = list(self._queue)
        self._queue.clear()
        deadline = _deadline(self.timeout if timeout is None else timeout)
        while True:
            try:
                got.append(self._read_frame(deadline))
            except ConnectionClosed:
                return got
            except TimeoutError:
                raise TimeoutError(f'peer did not close; got {got!r:.500}'
                                   ) from None

    # -- requests

    def request(self, msg, timeout=None):
        """Sends msg with a fresh "id"; returns the reply with that id."""
        msg = dict(msg)
        rid = msg['id'] = self._next_id
        self._next_id += 1
        self.send(msg, timeout)
        return self._wait(lambda m: m.get('id') == rid, timeout,
                          f'the reply to {msg.get("type")} id {rid}')

    def hello(self, name='pytest', pid=None, version=PROTOCOL_VERSION,
              timeout=None, **extra):
        """Sends hello; returns the agent's hello or error reply."""
        msg = {'type': 'hello', 'version': version, 'name': name,
               'pid': os.getpid() if pid is None else pid}
        msg.update(extra)
        self.send(msg, timeout)
        r = self._wait(lambda m: m['type'] in ('hello', 'error'), timeout,
                       'the hello reply')
        if r['type'] == 'hello':
            self.version = r.get('version')
            self.instance = r.get('instance')
        return r

    def subscribe(self, targets, timeout=None):
        """Subscribes; returns the ok/error reply.  The initial updates sent
        before it are queued for next_update()."""
        if isinstance(targets, str):
            targets = [targets]
        return self.request({'type': 'subscribe', 'targets': list(targets)},
                            timeout)

    def next_update(self, timeout=None, target=None):
        """The next update (for target, if given); TimeoutError if none."""
        return self._wait(lambda m: m['type'] == 'update' and
                          (target is None or m.get('target') == target),
                          timeout, f'an update for {target or "any target"}')

    def expect_no_update(self, within=0.3, target=None):
        """Fails if an update (for target) arrives within `within` s."""
        try:
            u = self.next_update(within, target)
        except TimeoutError:
            return
        raise AssertionError(f'unexpected update: {_masked(u)}')

    def _with_instance(self, msg, instance):
        if instance is SESSION:
            instance = self.instance
        if instance is not None:
            msg['instance'] = instance
        return msg

    def ack(self, target, generation, timeout=None, instance=SESSION):
        """Sends an ack (no reply on success).  instance: SESSION for the
        instance from hello, None to send none, or a string to send."""
        self.send(self._with_instance({'type': 'ack', 'target': target,
                                       'generation': generation}, instance),
                  timeout)

    def nack(self, target, generation, message, timeout=None,
             instance=SESSION):
        """Sends a nack (no reply on success); instance as for ack()."""
        self.send(self._with_instance({'type': 'nack', 'target': target,
                                       'generation': generation,
                                       'message': message}, instance),
                  timeout)

    def ping(self, timeout=None):
        """Returns the agent's reply to ping: ok with the same id."""
        return self.request({'type': 'ping'}, timeout)

    def status(self, timeout=None):
        return self.request({'type': 'status'}, timeout)

    def reload(self, timeout=None):
        return self.request({'type': 'reload'}, timeout)

    def failover(self, target, timeout=None):
        """Asks for a switch to the secondary; returns ok or error."""
        return self.request({'type': 'failover', 'target': target}, timeout)

    def failback(self, target, timeout=None):
        """Asks for a switch to the primary; returns ok or error."""
        return self.request({'type': 'failback', 'target': target}, timeout)

    def reconnect(self, target=None, timeout=None):
        """Asks for the value to be published again; returns the reply."""
        msg = {'type': 'reconnect'}
        if target is not None:
            msg['target'] = target
        return self.request(msg, timeout)


def _masked(update):
    u = dict(update)
    if 'conninfo' in u:
        u['conninfo'] = '(hidden)'
    return u


def _status(source, timeout):
    if isinstance(source, dict):
        st = source
    elif isinstance(source, Client):
        st = source.status(timeout)
    elif isinstance(source, Agent):
        with source.client(timeout=timeout) as c:
            st = c.status(timeout)
    else:
        raise TypeError(f'expected a Client, Agent or status dict: {source!r}')
    if st.get('type') != 'status':
        raise HarnessError(f'status request failed: {st!r}')
    return st


def target_status(source, name, timeout=None):
    """The status entry of target name, from a Client, an Agent (a new
    connection each call) or a status reply.  KeyError if absent."""
    for t in _status(source, timeout).get('targets', []):
        if t.get('name') == name:
            return t
    raise KeyError(f'no target {name!r} in status')


def file_status(source, path, timeout=None):
    """The status entry of an env file (compared by realpath too)."""
    files = _status(source, timeout).get('files', [])
    for f in files:
        if f.get('path') == path:
            return f
    for f in files:
        if os.path.realpath(f.get('path', '')) == os.path.realpath(path):
            return f
    raise KeyError(f'no file {path!r} in status')


def wait_for(predicate, timeout=DEFAULT_TIMEOUT, interval=0.01,
             what='condition'):
    """Polls predicate() until it returns something true, and returns that.
    An exception from predicate counts as "not yet" (the last one is shown).
    Raises AssertionError naming `what` on timeout."""
    deadline = _deadline(timeout)
    last_exc = None
    while True:
        try:
            v = predicate()
            if v:
                return v
        except Exception as e:
            last_exc = e
        if _left(deadline) <= 0:
            msg = f'timed out after {timeout * TIMEOUT_SCALE:g} s ' \
                  f'waiting for {what}'
            if last_exc is not None:
                msg += f' (last error: {last_exc!r})'
            raise AssertionError(msg) from last_exc
        time.sleep(interval)


class UpdateRecorder:
    """A Client of its own, subscribed to targets, whose thread records
    every update with the monotonic time it was read and, unless ack=False,
    acks it at once: a subscriber that holds no connection and so is
    always done with the old value.  Its updates show the fields a library
    hides (reason, server, standby).  Closed on every path out, like the
    processes.  Updates hold secrets: describe() masks them."""

    def __init__(self, sock, targets=('DATABASE_URL',), ack=True,
                 name='pytest-updates', timeout=DEFAULT_TIMEOUT):
        self._cond = threading.Condition()
        self._log = []  # [(monotonic time, update)]
        self._error = None
        self._closing = False
        self._thread = None
        self.client = None
        self.ack = ack
        self._key = _register(self.close)
        try:
            self.client = Client(sock, timeout)
            r = self.client.hello(name=name)
            if r.get('type') != 'hello':
                raise HarnessError(f'hello refused: {r!r}')
            r = self.client.subscribe(list(targets) if not
                                      isinstance(targets, str) else targets)
            if r.get('type') != 'ok':
                raise HarnessError(f'subscribe refused: {r!r}')
            self._thread = threading.Thread(target=self._run, daemon=True,
                                            name='update-recorder')
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _run(self):
        while not self._closing:
            try:
                u = self.client.next_update(timeout=0.1 / TIMEOUT_SCALE)
            except TimeoutError:
                continue
            except Exception as e:  # closed, broken: record and end
                with self._cond:
                    if not self._closing:
                        self._error = e
                    self._cond.notify_all()
                return
            with self._cond:
                self._log.append((time.monotonic(), u))
                self._cond.notify_all()
            if self.ack:
                try:
                    self.client.ack(u['target'], u['generation'])
                except Exception as e:
                    with self._cond:
                        self._error = e
                        self._cond.notify_all()
                    return

    def log(self):
        """[(time, update)] so far, in order."""
        with self._cond:
            return list(self._log)

    def updates(self):
        return [u for _, u in self.log()]

    def mark(self):
        """An index for wait(since=...): only updates read from now on."""
        with self._cond:
            return len(self._log)

    def describe(self, last=8):
        with self._cond:
            tail = [(round(t, 3), _masked(u)) for t, u in self._log[-last:]]
            err = self._error
        return f'updates (last {last}): {tail!r}' + \
            (f'; recorder stopped: {err!r}' if err else '')

    def wait(self, predicate=lambda u: True, timeout=DEFAULT_TIMEOUT,
             since=0, what='an update'):
        """Waits for an update, at index since or later, for which
        predicate(update) is true; returns (index, time, update).
        AssertionError naming `what` if none comes in time."""
        deadline = _deadline(timeout)
        with self._cond:
            i = since
            while True:
                while i < len(self._log):
                    t, u = self._log[i]
                    if predicate(u):
                        return i, t, u
                    i += 1
                left = _left(deadline)
                if self._error is not None or left <= 0:
                    raise AssertionError(
                        f'no {what} within {timeout * TIMEOUT_SCALE:g} s; '
                        f'{self.describe()}')
                self._cond.wait(left)

    def close(self):
        try:
            self._closing = True
            if self._thread is not None:
                self._thread.join(5)
            if self.client is not None:
                self.client.close()
        finally:
            _unregister(self._key)


# --------------------------------------------------------------------------
# Processes

def _search_from(pattern, text, start):
    return re.compile(pattern, re.M).search(text, start)


class Agent:
    """dbswapd, run as
    dbswapd --socket SOCK --env FILE... [--target NAME...] [args...]
    with stdout and stderr in files of a temp dir (kept across restarts).

    wait_log() searches from a cursor that each match moves past, so a
    sequence of waits follows the log in order; since=0 searches it all,
    mark() moves the cursor to the end."""

    def __init__(self, env_files=(), targets=(), args=(), env=None, sock=None,
                 binary=None, start=True, timeout=DEFAULT_TIMEOUT):
        self.binary = _binary(binary, 'DBSWAPD')
        self.env_files = [env_files] if isinstance(env_files, str) \
            else list(env_files)
        self.targets = [targets] if isinstance(targets, str) else list(targets)
        self.args = list(args)
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.proc = None
        self.returncode = None
        self._cursor = 0
        self._pid_key = None
        self.dir = self._dir_key = None
        self._key = _register(self.close)
        self.dir, self._dir_key = _mkdtemp('dbswap-agent-')
        self.sock = sock or os.path.join(self.dir, 'dbswapd.sock')
        if len(os.fsencode(self.sock)) >= 108:  # sizeof(sun_path)
            self.close()
            raise HarnessError(f'socket path too long: {self.sock}')
        self.stdout_path = os.path.join(self.dir, 'stdout')
        self.stderr_path = os.path.join(self.dir, 'stderr')
        if start:
            try:
                self.start(timeout)
            except BaseException:
                self.close()
                raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def argv(self):
        argv = _wrapper(agent=True) + self.binary + ['--socket', self.sock]
        for f in self.env_files:
            argv += ['--env', f]
        for t in self.targets:
            argv += ['--target', t]
        return argv + self.args

    def start(self, timeout=DEFAULT_TIMEOUT):
        """Starts the agent; returns once its socket accepts a connection."""
        if self.running:
            raise HarnessError('agent already running')
        with open(self.stdout_path, 'ab') as out, \
                open(self.stderr_path, 'ab') as err:
            self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=err, env=self.env)
        self.returncode = None
        self._pid_key = _watch_pid(self.proc.pid)
        deadline = _deadline(timeout)
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self._reap()
                raise ProcessError(f'dbswapd exited with status {rc} before '
                                   f'listening; stderr:\n{_tail(self.log())}')
            if os.path.exists(self.sock):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.settimeout(1)
                    s.connect(self.sock)
                    return
                except OSError:
                    pass  # not listening yet, or a stale socket file
                finally:
                    s.close()
            if _left(deadline) <= 0:
                self.kill()
                raise ProcessError(f'dbswapd did not listen on {self.sock} '
                                   f'within {timeout} s; stderr:\n'
                                   f'{_tail(self.log())}')
            time.sleep(0.01)

    def _reap(self):
        self.returncode = self.proc.wait()
        _unwatch(self._pid_key)
        self._pid_key = None
        return self.returncode

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM, then SIGKILL after timeout.  Returns the exit status
        (negative: killed by that signal)."""
        if self.proc is None:
            return None
        _stop_process(self.proc, timeout)
        return self._reap()

    def kill(self):
        """SIGKILL; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.kill()
        return self._reap()

    def restart(self, timeout=DEFAULT_TIMEOUT, kill=False):
        """Stops (or kills) the agent and starts it again, same arguments."""
        self.kill() if kill else self.stop(timeout)
        self.start(timeout)

    def send_signal(self, sig):
        self.proc.send_signal(sig)

    def close(self):
        """Stops the agent and removes its temp dir.  Idempotent."""
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.stop()
            elif self.proc is not None:
                self._reap()
            _rmtree(self.dir, self._dir_key)
            self._dir_key = None
        finally:
            _unregister(self._key)

    def log(self):
        """The agent's stderr so far (all runs)."""
        return _read_text(self.stderr_path)

    def stdout(self):
        return _read_text(self.stdout_path)

    def mark(self):
        """Makes later wait_log() calls ignore everything logged so far."""
        self._cursor = len(self.log())
        return self._cursor

    def wait_log(self, regex, timeout=DEFAULT_TIMEOUT, since=None):
        """Waits for a line matching regex (re.M) in the log; returns the
        match.  TimeoutError if none comes; ProcessError if the agent has
        exited and the log does not have it."""
        start = self._cursor if since is None else since
        deadline = _deadline(timeout)
        while True:
            dead = self.proc is None or self.proc.poll() is not None
            text = self.log()
            m = _search_from(regex, text, start)
            if m:
                if since is None:
                    self._cursor = m.end()
                return m
            if dead:
                raise ProcessError(f'dbswapd is not running and its log has '
                                   f'no {regex!r}; log:\n{_tail(text)}')
            if _left(deadline) <= 0:
                raise TimeoutError(f'no {regex!r} in the dbswapd log within '
                                   f'{timeout} s; log:\n{_tail(text)}')
            time.sleep(0.01)

    def client(self, hello=True, timeout=DEFAULT_TIMEOUT, name='pytest'):
        """A Client connected to this agent, after a successful hello."""
        c = Client(self.sock, timeout=timeout or DEFAULT_TIMEOUT)
        if hello:
            try:
                r = c.hello(name=name)
                if r.get('type') != 'hello':
                    raise HarnessError(f'hello refused: {r!r}')
            except BaseException:
                c.close()
                raise
        return c


class Subscriber:
    """The libdbswap test subscriber: subscriber --socket SOCK TARGET.
    Its stdout lines are collected by a thread.  wait_line() searches from
    a cursor that each match moves past (since=0: all lines)."""

    _UPDATE = re.compile(r'^update (\S+) (\d+) ?(.*)$')
    _CONNECT = re.compile(r'^connect (\d+) (ok|fail) ?(.*)$')

    def __init__(self, sock, target, args=(), env=None, binary=None):
        self.target = target
        self._lines = []
        self._cond = threading.Condition()
        self._eof = False
        self._cursor = 0
        self._pid_key = None
        self.proc = None
        self.returncode = None
        self._key = _register(self.close)
        try:
            self.dir, self._dir_key = _mkdtemp('dbswap-sub-')
            self.stderr_path = os.path.join(self.dir, 'stderr')
            full_env = dict(os.environ)
            full_env.update(env or {})
            argv = _wrapper() + _binary(binary, 'DBSWAP_TEST_SUBSCRIBER') + \
                ['--socket', sock] + list(args) + [target]
            with open(self.stderr_path, 'ab') as err:
                self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                                             stdout=subprocess.PIPE,
                                             stderr=err, env=full_env)
            self._pid_key = _watch_pid(self.proc.pid)
            self._thread = threading.Thread(target=self._reader, daemon=True,
                                            name=f'subscriber-{target}')
            self._thread.start()
        except BaseException:
            self.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def pid(self):
        return self.proc.pid

    def _reader(self):
        for raw in iter(self.proc.stdout.readline, b''):
            line = raw.decode('utf-8', 'replace').rstrip('\n')
            with self._cond:
                self._lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self._eof = True
            self._cond.notify_all()

    def lines(self):
        with self._cond:
            return list(self._lines)

    def stderr(self):
        return _read_text(self.stderr_path)

    def mark(self):
        with self._cond:
            self._cursor = len(self._lines)
            return self._cursor

    def wait_line(self, regex, timeout=DEFAULT_TIMEOUT, since=None):
        """Waits for a stdout line matching regex; returns the match.
        TimeoutError if none comes, ProcessError if stdout ends first."""
        pat = re.compile(regex)
        deadline = _deadline(timeout)
        with self._cond:
            i = self._cursor if since is None else since
            while True:
                while i < len(self._lines):
                    m = pat.search(self._lines[i])
                    i += 1
                    if m:
                        if since is None:
                            self._cursor = i
                        return m
                if self._eof:
                    raise ProcessError(
                        f'subscriber ended without {regex!r}; lines: '
                        f'{self._lines[-20:]!r}; stderr:\n'
                        f'{_tail(self.stderr())}')
                left = _left(deadline)
                if left <= 0:
                    raise TimeoutError(
                        f'subscriber printed no {regex!r} within {timeout} s;'
                        f' lines: {self._lines[-20:]!r}; stderr:\n'
                        f'{_tail(self.stderr())}')
                self._cond.wait(left)

    def updates(self):
        """[(generation, conninfo)] for every update line so far."""
        return [(int(m.group(2)), m.group(3)) for m in
                map(self._UPDATE.match, self.lines()) if m]

    def connects(self):
        """[(generation, ok, message)] for every connect line so far."""
        return [(int(m.group(1)), m.group(2) == 'ok', m.group(3)) for m in
                map(self._CONNECT.match, self.lines()) if m]

    def stop(self, timeout=DEFAULT_TIMEOUT):
        """SIGTERM, then SIGKILL after timeout; returns the exit status."""
        if self.proc is None:
            return None
        if self.returncode is None:
            _stop_process(self.proc, timeout)
            self.returncode = self.proc.wait()
            _unwatch(self._pid_key)
            self._pid_key = None
            self._thread.join(timeout)
            self.proc.stdout.close()
        return self.returncode

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
        return self.stop()

    def close(self):
        try:
            self.stop()
            _rmtree(getattr(self, 'dir', None), getattr(self, '_dir_key', None))
            self._dir_key = None
        finally:
            _unregister(self._key)


# --------------------------------------------------------------------------
# Writing files the ways real programs do

def _bytes(text):
    return text.encode() if isinstance(text, str) else bytes(text)


def _write_all(fd, data):
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def write_inplace(path, text, mode=0o600):
    """Overwrites in place: open without O_TRUNC, write, ftruncate to the
    new length.  A reader may briefly see new bytes over the old tail."""
    data = _bytes(text)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


def write_truncate(path, text, mode=0o600):
    """open(path, 'w'): truncate to empty, then write."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, _bytes(text))
    finally:
        os.close(fd)


def write_rename(path, text, mode=0o600):
    """Atomic replace: a temp file in the same dir, fsync, rename over."""
    d, base = os.path.split(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f'.{base}.', dir=d)
    try:
        os.fchmod(fd, mode)
        _write_all(fd, _bytes(text))
        os.fsync(fd)
        os.close(fd)
        fd = -1
        os.rename(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def write_delete_recreate(path, text, mode=0o600, gap=0.0):
    """unlink, (sleep gap), then create anew: a new file, though it may
    well get the freed inode number back (ext4 and tmpfs reuse it at once),
    so st_ino alone cannot tell that the file was replaced."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    if gap:
        time.sleep(gap)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        _write_all(fd, _bytes(text))
    finally:
        os.close(fd)


def write_slow(path, text, mode=0o600, delay=0.05):
    """Truncate, write the first half, flush, sleep, write the rest: a
    reader in between sees a half-written file."""
    data = _bytes(text)
    half = len(data) // 2
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        _write_all(fd, data[:half])
        time.sleep(delay)
        _write_all(fd, data[half:])
    finally:
        os.close(fd)


def _k8s_write(d, files, mode):
    data_link = os.path.join(d, '..data')
    old = os.readlink(data_link) if os.path.islink(data_link) else None
    old_names = set(os.listdir(os.path.join(d, old))) if old else set()
    for name in files:
        if not name or '/' in name or name.startswith('..'):
            raise ValueError(f'bad k8s file name {name!r}')
    # ..2026_04_01_12_00_00.123456789, as Go's os.MkdirTemp names it
    stamp = time.strftime('..%Y_%m_%d_%H_%M_%S.', time.gmtime())
    while True:
        ts = stamp + str(random.randrange(10 ** 8, 10 ** 9))
        try:
            os.mkdir(os.path.join(d, ts), 0o755)
            break
        except FileExistsError:
            continue
    for name, text in files.items():
        write_truncate(os.path.join(d, ts, name), text, mode)
    tmp = os.path.join(d, '..data_tmp')
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(ts, tmp)
    os.rename(tmp, data_link)
    for name in files:
        link = os.path.join(d, name)
        if not os.path.lexists(link):
            os.symlink(os.path.join('..data', name), link)
    for name in old_names - set(files):
        os.unlink(os.path.join(d, name))
    if old:
        shutil.rmtree(os.path.join(d, old))
    return os.path.join(d, ts)


def k8s_setup(d, files, mode=0o644):
    """A fresh Kubernetes AtomicWriter volume in d: files {name: text} in
    ..<timestamp>/, ..data -> ..<timestamp>, name -> ..data/name.
    Returns the timestamped dir."""
    os.makedirs(d, exist_ok=True)
    if os.path.lexists(os.path.join(d, '..data')):
        raise HarnessError(f'{d} already has a ..data link')
    return _k8s_write(d, files, mode)


def k8s_update(d, files, mode=0o644):
    """An AtomicWriter update: a new timestamped dir, ..data_tmp renamed
    over ..data, links for new names, links of dropped names removed, the
    old dir removed.  Returns the new timestamped dir."""
    if not os.path.islink(os.path.join(d, '..data')):
        raise HarnessError(f'{d} has no ..data link: call k8s_setup first')
    return _k8s_write(d, files, mode)
