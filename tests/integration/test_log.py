"""Logging never blocks the agent (issue 13): with stderr a pipe nobody
reads, the agent keeps answering; the lines it could not write are
dropped, whole, and counted, and the next line that goes through says how
many.  The same with the journal's socket is in test_systemd.py, beside
the other test that plays /run/systemd/journal/socket (two tests must not
bind it at once)."""

import fcntl
import os
import re
import socket
import sys
import time

import harness as h
from common import ClusterTest, main

# The agent's stderr, reopened by a wrapper before it execs the agent:
# argv[1] is a path to open for writing (a pipe through /proc/PID/fd/N)
# or "connect:PATH", a unix stream socket to connect to, with a small send
# buffer so that a few lines fill it; argv[2] "journal" sets
# JOURNAL_STREAM to the new stderr, as systemd does for a service whose
# stderr is the journal; the agent's command line follows.
WRAPPER = r'''
import os, socket, sys
where, journal, argv = sys.argv[1], sys.argv[2] == 'journal', sys.argv[3:]
if where.startswith('connect:'):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    s.connect(where[len('connect:'):])
    fd = s.detach()
else:
    fd = os.open(where, os.O_WRONLY)
os.dup2(fd, 2)
os.close(fd)
if journal:
    st = os.fstat(2)
    os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'
os.execvp(argv[0], argv)
'''

# A line of ours, whole: the program name, a level, text, newline.
LINE = re.compile(r'dbswapd: (?:error|warning|notice|info|debug): [^\n]+\n')
DROPPED = re.compile(r'(\d+) log lines dropped: the log reader was not '
                     r'keeping up')
O_NONBLOCK = 0o4000


class StderrAgent(h.Agent):
    """dbswapd with its stderr where the test says, not in a file (its
    log() is then empty)."""

    def __init__(self, stderr, journal=False, **kw):
        self.stderr_to = stderr
        self.journal = journal
        super().__init__(start=False, **kw)

    def argv(self):
        return [sys.executable, '-c', WRAPPER, self.stderr_to,
                'journal' if self.journal else '-'] + super().argv()


def churn(agent, n):
    """n clients that say hello and go: a log line each."""
    hello = h.encode_frame({'type': 'hello', 'version': 1, 'name': 'churn',
                            'pid': 0})
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(2 * h.TIMEOUT_SCALE)
        try:
            s.connect(agent.sock)
            s.sendall(hello)
        finally:
            s.close()


def status_latencies(test, agent, rounds=300, churn_each=5):
    """Status round trips (seconds) on one connection while clients come
    and go; fails the test when the agent stops answering."""
    probe = h.Client(agent.sock, timeout=2)
    test.addCleanup(probe.close)
    probe.hello()
    lat = []
    for i in range(rounds):
        churn(agent, churn_each)
        t0 = time.monotonic()
        try:
            st = probe.status()
        except TimeoutError:
            test.fail(f'status unanswered for 2 s after {i} rounds of '
                      f'{churn_each} clients: the agent is stuck writing a '
                      f'log line')
        lat.append(time.monotonic() - t0)
        test.assertEqual(st['type'], 'status')
    return lat


def percentile(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p / 100))]


def fd_flags(pid, fd):
    with open(f'/proc/{pid}/fdinfo/{fd}') as f:
        for line in f:
            if line.startswith('flags:'):
                return int(line.split()[1], 8)
    raise AssertionError(f'no flags in /proc/{pid}/fdinfo/{fd}')


def read_all(fd):
    """What a non-blocking descriptor has for us now."""
    out = bytearray()
    while True:
        try:
            b = os.read(fd, 65536)
        except BlockingIOError:
            return bytes(out)
        if not b:
            return bytes(out)
        out += b


class Log(ClusterTest):

    def test_stderr_a_pipe_nobody_reads(self):
        r, w = os.pipe()
        self.addCleanup(os.close, r)
        # One page: a few dozen lines fill it.
        fcntl.fcntl(w, fcntl.F_SETPIPE_SZ, 4096)
        self.write_url(self.password)
        agent = StderrAgent(f'/proc/{os.getpid()}/fd/{w}',
                            env_files=[self.env_path])
        self.addCleanup(agent.close)
        try:
            agent.start()
        finally:
            os.close(w)  # the agent has its own; the read end stays open

        lat = status_latencies(self, agent)
        p99 = percentile(lat, 99)
        print(f'stderr a full pipe: status p50 '
              f'{percentile(lat, 50) * 1000:.1f} ms, p99 {p99 * 1000:.1f} '
              f'ms, worst {max(lat) * 1000:.1f} ms over {len(lat)}')
        self.assertLess(p99, 0.5 * h.TIMEOUT_SCALE)
        # The agent wrote on a description of its own: the one it was
        # given (which other processes may share) is left blocking.
        self.assertFalse(fd_flags(agent.pid, 2) & O_NONBLOCK)

        # The reader is back: the next line says how many went missing.
        os.set_blocking(r, False)
        out = read_all(r).decode()
        self.assertGreater(len(out), 3000)

        def told():
            nonlocal out
            churn(agent, 1)
            out += read_all(r).decode()
            return DROPPED.search(out)
        m = h.wait_for(told, what='a "log lines dropped" line')
        self.assertGreater(int(m.group(1)), 0)
        self.assertRegex(out, r'dbswapd: warning: \d+ log lines dropped')
        # Whole lines only: each went in all or nothing.
        self.assertEqual(''.join(LINE.findall(out)), out, out[-500:])
        print(f'then: {m.group(0)}')
        self.assertEqual(agent.stop(), 0)


if __name__ == '__main__':
    main()
