"""dbswapd under systemd, with systemd's own pieces where they run without
PID 1: socket activation through systemd-socket-activate, the sd_notify
protocol (a datagram socket in NOTIFY_SOCKET, played by the test), the
watchdog, SIGHUP and SIGTERM with subscribers attached, the socket's group,
and structured journal entries (the journal's native socket, played by the
test when no journald runs here)."""

import grp
import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time

import harness as h
from common import ClusterTest, fresh_password, main
from test_log import (DROPPED, LINE, StderrAgent, churn, percentile,
                      read_all, status_latencies)


class NotifySocket:
    """A datagram socket standing in for systemd's NOTIFY_SOCKET (or the
    journal's): collects (monotonic time, datagram) pairs."""

    def __init__(self, path):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.sock.settimeout(0.1)
        self._msgs = []
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._reader, daemon=True,
                                        name='notify')
        self._thread.start()

    def _reader(self):
        while not self._stop:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            with self._cond:
                self._msgs.append((time.monotonic(), data.decode()))
                self._cond.notify_all()

    def close(self):
        self._stop = True
        self._thread.join()
        self.sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

    def messages(self):
        with self._cond:
            return list(self._msgs)

    def wait(self, pred, timeout=10, what='a notify message'):
        """The first (time, message) after none that pred accepts."""
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        with self._cond:
            while True:
                for m in self._msgs:
                    if pred(m[1]):
                        return m
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f'no {what} within {timeout} s; got '
                                         f'{[m for _, m in self._msgs]!r}')
                self._cond.wait(left)


def fields(msg):
    """'A=1\\nB=2' -> {'A': '1', 'B': '2'} (the last of repeated keys)."""
    return dict(line.split('=', 1) for line in msg.split('\n') if '=' in line)


class BlackHole:
    """A TCP port that accepts connections (the kernel's backlog) and never
    answers: a PostgreSQL that hangs."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(('127.0.0.1', 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self):
        self.sock.close()


class SocketActivatedAgent(h.Agent):
    """dbswapd started by systemd-socket-activate on its first client, as
    dbswapd.socket would: the agent must take the listening fd, not bind."""

    def argv(self):
        tool = shutil.which('systemd-socket-activate') or \
            '/usr/bin/systemd-socket-activate'
        return [tool, '-l', self.sock] + super().argv()


UNIT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..',
                        '..', 'packaging', 'systemd')


def unit_settings(name):
    """{'Key': 'last value'} of a unit file in packaging/systemd."""
    out = {}
    with open(os.path.join(UNIT_DIR, name)) as f:
        for line in f:
            line = line.strip()
            if '=' in line and not line.startswith(('#', ';', '[')):
                k, v = line.split('=', 1)
                out[k.strip()] = v.strip()
    return out


def unit_bool(value):
    return value.lower() in ('yes', 'true', 'on', '1')


# What systemd does for dbswapd.socket and dbswapd.service, as root, before
# it execs the agent: binds and listens on the socket (owned root:the
# socket's group, SocketMode=), passes it as fd 3 (LISTEN_FDS, LISTEN_PID),
# with PrivateUsers=yes puts the service in a user namespace where root and
# the service's user and group map to themselves and every other id is
# unmapped (the kernel shows it as 65534), and runs the agent as the
# service's user and group with no supplementary group.
#   UNIT_EXEC SOCK MODE SOCKET-GID UID GID PRIVATE-USERS UMASK -- ARGV...
UNIT_EXEC = r"""
import ctypes, os, socket, sys
path, mode, sgid, uid, gid, private, umask = sys.argv[1:8]
argv = sys.argv[9:]
mode, sgid, uid, gid = int(mode, 8), int(sgid), int(uid), int(gid)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(path)
os.chown(path, 0, sgid)
os.chmod(path, mode)
s.listen(128)
if s.fileno() == 3:
    os.set_inheritable(3, True)
else:
    os.dup2(s.fileno(), 3)
os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid()))
os.environ.pop('LISTEN_FDNAMES', None)
if private == '1':
    r, w = os.pipe()
    helper = os.fork()
    if helper == 0:
        # Still root in the initial namespace: writes the maps.
        os.read(r, 1)
        for f, i in (('uid_map', uid), ('gid_map', gid)):
            with open(f'/proc/{os.getppid()}/{f}', 'w') as m:
                m.write(f'0 0 1\n{i} {i} 1\n')
        os._exit(0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
        sys.exit('unshare(CLONE_NEWUSER): ' + os.strerror(ctypes.get_errno()))
    os.write(w, b'x')
    if os.waitpid(helper, 0)[1] != 0:
        sys.exit('the uid and gid maps were not written')
os.umask(int(umask, 8))
os.setgroups([])
os.setgid(gid)
os.setuid(uid)
os.execv(argv[0], argv)
"""

# A subscriber run as another user: prints the reply to its subscribe as
# JSON ({"type": "ok"} or {"type": "error", "code": ...}).
SUBSCRIBE = r"""
import json, sys
import harness as h
c = h.Client(sys.argv[1])
hello = c.hello(name='allow-test')
if hello['type'] != 'hello':
    print(json.dumps({'type': 'hello-' + hello['type'],
                      'code': hello.get('code')}))
    sys.exit(0)
r = c.subscribe([sys.argv[2]])
out = {'type': r['type'], 'code': r.get('code')}
if r['type'] != 'error':
    u = c.next_update(target=sys.argv[2])
    out['conninfo'] = u.get('conninfo')
print(json.dumps(out))
"""


class PackagedAgent(h.Agent):
    """dbswapd as dbswapd.socket and dbswapd.service start it (UNIT_EXEC),
    with the units' SocketMode=, PrivateUsers= and UMask= and stand-ins
    for their user and groups: service_user (a LocalUser) for User= and
    Group=, socket_gid for SocketGroup=."""

    def __init__(self, service_user, socket_gid, private_users, socket_mode,
                 umask, **kw):
        self.unit_exec = [service_user.uid, service_user.gid, socket_gid,
                          private_users, socket_mode, umask]
        super().__init__(**kw)

    def argv(self):
        uid, gid, sgid, private, mode, umask = self.unit_exec
        # Without the valgrind wrapper of a sanitizer run: its log files
        # go to a directory of root's that the service's user cannot
        # write.  This test is about ids, the others about memory.
        agent = super().argv()[len(h._wrapper(agent=True)):]
        return [sys.executable, '-I', '-c', UNIT_EXEC, self.sock,
                f'{mode:o}', str(sgid), str(uid), str(gid),
                '1' if private else '0', umask, '--'] + agent


class Systemd(ClusterTest):

    def notify_socket(self):
        ns = NotifySocket(os.path.join(self.tmp, 'notify'))
        self.addCleanup(ns.close)
        return ns

    def test_socket_activation_starts_the_agent_on_first_connect(self):
        self.write_url(self.password)
        agent = SocketActivatedAgent(env_files=[self.env_path], start=False)
        self.addCleanup(agent.close)
        agent.start()  # returns once a connect succeeded: that one started it
        agent.wait_log(r'listening on the socket passed by systemd')
        self.assertNotIn('listening on ' + agent.sock, agent.log())
        st = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['generation'] == 1 and s,
                        what='the first value published')
        self.assertTrue(st['valid'])
        # Subscribers are served on the inherited socket.
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        # Stopping leaves the socket file alone: it belongs to systemd.
        self.assertEqual(agent.stop(), 0)
        self.assertTrue(stat.S_ISSOCK(os.lstat(agent.sock).st_mode))

    def test_notify_ready_status_watchdog_reloading_stopping(self):
        # The primary hangs: its first validation ends only at the
        # connection timeout, and READY=1 must wait for it.
        hole = BlackHole()
        self.addCleanup(hole.close)
        # Under valgrind (DBSWAP_TEST_TIMEOUT_SCALE) the working target's
        # own validation must fit in it too.
        timeout_ms = int(800 * h.TIMEOUT_SCALE)
        self.write_env(f'DATABASE_URL=postgresql://{self.role}:x@127.0.0.1:'
                       f'{hole.port}/postgres\n'
                       f'REPORTS_URL={self.url()}\n'
                       f'DB_CONNECTION_TIMEOUT={timeout_ms}\n')
        ns = self.notify_socket()
        t0 = time.monotonic()
        agent = self.start_agent(targets=['DATABASE_URL', 'REPORTS_URL'],
                                 env={'NOTIFY_SOCKET': ns.path,
                                      'WATCHDOG_USEC': '200000'})
        t_ready, ready = ns.wait(lambda m: 'READY=1' in m.split('\n'),
                                 what='READY=1')
        self.assertGreaterEqual(t_ready - t0, timeout_ms / 1000 * 0.9,
                                f'READY=1 came {t_ready - t0:.3f} s after '
                                f'the start, before the first validation '
                                f'could have ended')
        st = h._status(agent, 10)
        by_name = {t['name']: t for t in st['targets']}
        self.assertEqual(by_name['DATABASE_URL']['state'], 'failed')
        self.assertEqual(by_name['REPORTS_URL']['generation'], 1)
        # The status line sums up each target.
        status = fields(ready).get('STATUS', '')
        self.assertIn('REPORTS_URL gen 1 primary', status)
        self.assertIn('DATABASE_URL no value', status)

        # The watchdog is pinged at half its period (100 ms).
        time.sleep(0.6)
        pings = [t for t, m in ns.messages() if m == 'WATCHDOG=1']
        self.assertGreaterEqual(len(pings), 3, ns.messages())

        # STATUS follows subscribers.
        sub = self.start_subscriber(agent, target='REPORTS_URL')
        sub.wait_line(r'^connect 1 ok$')
        ns.wait(lambda m: 'REPORTS_URL gen 1 primary 1/1 acked' in m,
                what='a STATUS with the subscriber')

        # SIGHUP: RELOADING=1 with the time, then READY=1.
        n = len(ns.messages())
        os.kill(agent.pid, signal.SIGHUP)
        agent.wait_log(r'SIGHUP: re-reading')
        _, reloading = ns.wait(lambda m: m.startswith('RELOADING=1'),
                               what='RELOADING=1')
        usec = int(fields(reloading)['MONOTONIC_USEC'])
        self.assertLess(abs(usec / 1e6 - time.monotonic()),
                        5 * h.TIMEOUT_SCALE)

        def ready_after_reload():
            kinds = [m.split('\n')[0] for _, m in ns.messages()[n:]
                     if m != 'WATCHDOG=1']
            i = next((i for i, k in enumerate(kinds)
                      if k.startswith('RELOADING=1')), None)
            return i is not None and 'READY=1' in kinds[i:]
        h.wait_for(ready_after_reload, what='READY=1 after RELOADING=1')

        # SIGTERM: STOPPING=1, the last message, and a clean exit.
        self.assertEqual(agent.stop(), 0)
        msgs = [m for _, m in ns.messages() if m != 'WATCHDOG=1']
        self.assertEqual(msgs[-1], 'STOPPING=1', msgs)
        order = [m.split('\n')[0].split('=')[0] for m in msgs]
        first = {k: order.index(k) for k in ('READY', 'RELOADING',
                                              'STOPPING')}
        self.assertLess(first['READY'], first['RELOADING'])
        self.assertLess(first['RELOADING'], first['STOPPING'])

    def test_sighup_retries_a_value_given_up_and_sigterm_with_subscribers(self):
        self.write_url(self.password)
        agent = self.start_agent()
        subs = [self.start_subscriber(agent) for _ in range(2)]
        for s in subs:
            s.wait_line(r'^connect 1 ok$')

        # A password the server does not know yet: given up after 6.
        new = fresh_password()
        self.write_url(new)
        agent.wait_log(r'gave up after 6 attempts', timeout=30)
        # The server learns it; only a reload tries again.
        self.cluster.set_password(self.role, new)
        os.kill(agent.pid, signal.SIGHUP)
        for s in subs:
            s.wait_line(r'^update DATABASE_URL 2 ')
            s.wait_line(r'^connect 2 ok$')

        # SIGTERM with subscribers attached: they see the agent go and keep
        # their value; the agent exits 0 and removes its socket.
        self.assertEqual(agent.stop(), 0)
        self.assertFalse(os.path.exists(agent.sock))
        for s in subs:
            self.assertIsNone(s.proc.poll(), 'a subscriber exited')
        self.assertRegex(agent.log(), r'SIGTERM: shutting down')

    def test_socket_group_and_mode(self):
        group = next((g for g in ('nogroup', 'postgres', 'daemon')
                      if _group(g)), None)
        if group is None:
            self.skipTest('no spare group on this machine')
        gid = _group(group).gr_gid
        self.write_url(self.password)
        agent = self.start_agent('--socket-group', group,
                                 '--socket-mode', '0660')
        st = os.lstat(agent.sock)
        self.assertEqual((st.st_gid, stat.S_IMODE(st.st_mode)), (gid, 0o660))
        # By number too; a group that does not exist is a usage error.
        agent2 = self.start_agent('--socket-group', str(gid))
        self.assertEqual(os.lstat(agent2.sock).st_gid, gid)
        bad = h.Agent(env_files=[self.env_path], start=False,
                      args=['--socket-group', 'no-such-group-dbswap'])
        self.addCleanup(bad.close)
        with self.assertRaises(h.ProcessError):
            bad.start(timeout=5)
        self.assertIn('no group named no-such-group-dbswap', bad.log())

    def test_packaged_unit_allow_rules_see_the_real_peers(self):
        """Under the packaged units' settings, --allow rules name real
        users and groups: the members of the socket's group connect, and
        each is served exactly the targets a rule gives it.  (With
        PrivateUsers=yes every peer but root and the agent's user reads
        as 65534, and no rule naming a user or a group ever matches.)"""
        service = unit_settings('dbswapd.service.in')
        sock_unit = unit_settings('dbswapd.socket.in')
        private = unit_bool(service.get('PrivateUsers', 'no'))
        mode = int(sock_unit['SocketMode'], 8)
        self.assertNotEqual(sock_unit['SocketGroup'], service['Group'],
                            'the apps\' group must not be the one that reads '
                            'the env files')
        agent_user = h.LocalUser()     # User=dbswap, Group=dbswap
        self.addCleanup(agent_user.close)
        alice, bob, carol = h.LocalUser(), h.LocalUser(), h.LocalUser()
        for u in (alice, bob, carol):
            self.addCleanup(u.close)
        _, clients_gid = h.local_group()  # SocketGroup=dbswap-clients
        reporters, reporters_gid = h.local_group()

        # The packaged layout: /etc/dbswap root:dbswap 0750, the env file
        # root:dbswap 0640 (tmpfiles.d, the example); /run/dbswap 0755.
        conf = tempfile.mkdtemp(prefix='dbswap-etc-')
        self.addCleanup(shutil.rmtree, conf, True)
        os.chown(conf, 0, agent_user.gid)
        os.chmod(conf, 0o750)
        env = os.path.join(conf, 'dbswap.env')
        reports_url = self.url()
        h.write_rename(env, f'DATABASE_URL={self.url()}\n'
                            f'REPORTS_URL={reports_url}\n')
        os.chown(env, 0, agent_user.gid)
        os.chmod(env, 0o640)
        run = tempfile.mkdtemp(prefix='dbswap-run-')
        self.addCleanup(shutil.rmtree, run, True)
        os.chmod(run, 0o755)

        agent = PackagedAgent(
            agent_user, clients_gid, private, mode,
            service.get('UMask', '0022'), env_files=[env],
            targets=['DATABASE_URL', 'REPORTS_URL'],
            sock=os.path.join(run, 'dbswap.sock'),
            args=['--allow', f'DATABASE_URL=user:{alice.name}',
                  '--allow', f'REPORTS_URL=group:{reporters}'])
        self.addCleanup(agent.close)
        agent.wait_log(r'listening on the socket passed by systemd')
        st = os.lstat(agent.sock)
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)),
                         (0, clients_gid, mode))
        h.wait_for(lambda: h.target_status(agent, 'REPORTS_URL')
                   ['generation'] == 1, what='the first values published')

        def subscribe(user, target, groups):
            r = user.run([sys.executable, '-c', SUBSCRIBE, agent.sock,
                          target], groups=groups)
            if r.returncode != 0:
                return {'type': 'failed', 'stderr': r.stderr[-300:]}
            return json.loads(r.stdout)

        in_clients = [clients_gid]
        # alice by name: DATABASE_URL, not REPORTS_URL.
        got = subscribe(alice, 'DATABASE_URL', in_clients)
        self.assertEqual(got.get('type'), 'ok',
                         f'{alice.name} (uid {alice.uid}), named by an '
                         f'--allow rule, was refused: {got}; the agent '
                         f'logged:\n{agent.log()[-1500:]}')
        self.assertEqual(got['conninfo'], self.url())
        got = subscribe(alice, 'REPORTS_URL', in_clients)
        self.assertEqual((got['type'], got['code']), ('error', 'forbidden'))
        # bob, in the socket's group and no rule's: neither.
        for target in ('DATABASE_URL', 'REPORTS_URL'):
            got = subscribe(bob, target, in_clients)
            self.assertEqual((got['type'], got['code']),
                             ('error', 'forbidden'), target)
        # bob with the reporters group: REPORTS_URL, by a group rule.
        got = subscribe(bob, 'REPORTS_URL', in_clients + [reporters_gid])
        self.assertEqual(got.get('type'), 'ok', got)
        self.assertEqual(got['conninfo'], reports_url)
        # carol, not in the socket's group, does not get in at all.
        got = subscribe(carol, 'DATABASE_URL', [reporters_gid])
        self.assertEqual(got['type'], 'failed')
        self.assertIn('Permission denied', got['stderr'])
        # The refusals name the peer as it is, not as nobody.
        self.assertRegex(agent.log(), rf'uid {bob.uid}\b')
        self.assertNotRegex(agent.log(), r'uid 65534\b')

    def test_structured_journal_entries(self):
        journal = '/run/systemd/journal/socket'
        if os.path.exists(journal) or os.geteuid() != 0:
            self.skipTest('a real journal runs here (or not root): not '
                          'played by the test')
        os.makedirs(os.path.dirname(journal), exist_ok=True)
        js = NotifySocket(journal)
        self.addCleanup(js.close)
        self.write_url(self.password)
        agent = h.Agent(env_files=[self.env_path], start=False)
        self.addCleanup(agent.close)
        # stderr is the journal stream when JOURNAL_STREAM names it.
        open(agent.stderr_path, 'ab').close()
        st = os.stat(agent.stderr_path)
        agent.env['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'
        agent.start()
        _, entry = js.wait(lambda m: 'DBSWAP_EVENT=published' in m,
                           what='a journal entry for the publish')
        f = fields(entry)
        self.assertEqual((f['DBSWAP_TARGET'], f['DBSWAP_GENERATION'],
                          f['PRIORITY'], f['SYSLOG_IDENTIFIER']),
                         ('DATABASE_URL', '1', '6', 'dbswapd'))
        self.assertIn('generation 1 published', f['MESSAGE'])
        self.assertNotIn(self.password, entry)
        # Entries go to the journal, not to stderr.
        self.assertNotIn('generation 1 published', agent.log())

    def test_notify_socket_nobody_reads(self):
        # PID 1 stuck: its notify socket never read.  With a watchdog
        # ping every millisecond its queue is full within a second; the
        # agent keeps answering (sd_notify() would wait), and READY=1 still
        # goes out once PID 1 reads again.
        path = os.path.join(self.tmp, 'notify')
        ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(ns.close)
        ns.bind(path)
        self.write_url(self.password)
        agent = self.start_agent(env={'NOTIFY_SOCKET': path,
                                      'WATCHDOG_USEC': '2000'})
        time.sleep(1)
        lat = status_latencies(self, agent, rounds=100, churn_each=1)
        p99 = percentile(lat, 99)
        print(f'notify socket unread: status p99 {p99 * 1000:.1f} ms')
        self.assertLess(p99, 0.5 * h.TIMEOUT_SCALE)
        ns.settimeout(5 * h.TIMEOUT_SCALE)
        msgs = []
        while not any('READY=1' in m.split('\n') for m in msgs):
            msgs.append(ns.recv(65536).decode())
        self.assertIn('WATCHDOG=1', msgs)

    def test_journal_nobody_reads(self):
        # journald stuck: its socket never read, and the stream that is
        # the agent's stderr not read either.  The agent keeps answering,
        # drops what neither takes, and says so once journald reads again.
        journal = '/run/systemd/journal/socket'
        if os.path.exists(journal) or os.geteuid() != 0:
            self.skipTest('a real journal runs here (or not root): not '
                          'played by the test')
        os.makedirs(os.path.dirname(journal), exist_ok=True)
        js = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(js.close)
        try:
            js.bind(journal)
        except OSError as e:
            self.skipTest(f'cannot play the journal: {e}')
        self.addCleanup(os.unlink, journal)
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(stream.close)
        stream.bind(os.path.join(self.tmp, 'stream'))
        stream.listen(1)
        self.write_url(self.password)
        agent = StderrAgent('connect:' + os.path.join(self.tmp, 'stream'),
                            journal=True, env_files=[self.env_path])
        self.addCleanup(agent.close)
        agent.start()
        conn, _ = stream.accept()
        self.addCleanup(conn.close)

        lat = status_latencies(self, agent)
        p99 = percentile(lat, 99)
        print(f'journal and stream unread: status p50 '
              f'{percentile(lat, 50) * 1000:.1f} ms, p99 '
              f'{p99 * 1000:.1f} ms over {len(lat)}')
        self.assertLess(p99, 0.5 * h.TIMEOUT_SCALE)

        # journald reads again: the entries queued are whole, and the next
        # one says how many never came.  The journal first, the stream
        # still unread: the note goes out with the first line that goes
        # out anywhere, and with the stream read first it went to the
        # stream whenever the agent logged a line before the journal was
        # read (a test timed out under load that way).
        js.setblocking(False)
        entries = []

        def drain():
            while True:
                try:
                    entries.append(js.recv(65536).decode())
                except BlockingIOError:
                    break

        def told():
            churn(agent, 1)
            drain()
            return next((e for e in entries if DROPPED.search(e)), None)
        drain()
        entry = h.wait_for(told, timeout=15,
                           what='a "log lines dropped" entry')
        f = fields(entry)
        self.assertEqual((f['PRIORITY'], f['DBSWAP_EVENT'],
                          f['SYSLOG_IDENTIFIER']),
                         ('4', 'log-dropped', 'dbswapd'))
        self.assertGreater(int(DROPPED.search(f['MESSAGE']).group(1)), 0)
        for e in entries:
            self.assertTrue(e.startswith('MESSAGE=') and e.endswith('\n'), e)
            self.assertIn('SYSLOG_IDENTIFIER=dbswapd', e)
        print(f'then: {f["MESSAGE"]}')

        # The lines that went to the stream (journald refused them) are
        # whole.
        conn.setblocking(False)
        text = read_all(conn.fileno()).decode()
        self.assertEqual(''.join(LINE.findall(text)), text, text[-500:])
        self.assertEqual(agent.stop(), 0)



def _group(name):
    try:
        return grp.getgrnam(name)
    except KeyError:
        return None


if __name__ == '__main__':
    main()
