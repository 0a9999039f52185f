"""Env files however they are laid out and whatever sits at their path:
symlink layouts written through the link, at the target and re-pointed;
FIFOs, sockets, devices and directories at an env path (which once hung
the agent); a slow writer whose prefix is a valid value (which was once
published); reads that fail for a while (EMFILE)."""

import os
import resource
import signal
import socket
import stat
import threading
import time

import harness as h
from common import ClusterTest, fresh_password, main


def identity(path):
    """What status calls the file's identity (common/util.c)."""
    st = os.stat(path)
    return f'{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}'


def relink(target, link):
    """Points link at target the way `ln -sfn` and deploy tools do: a new
    link renamed over the old one."""
    tmp = link + '.new'
    os.symlink(target, tmp)
    os.rename(tmp, link)


class Files(ClusterTest):

    def line(self, password):
        return f'DATABASE_URL={self.url(password)}\n'

    def new_password(self):
        p = fresh_password()
        self.cluster.set_password(self.role, p)
        return p

    def follow(self, env_path):
        agent = self.start_agent(env_files=[env_path])
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        return agent, sub

    def expect(self, agent, sub, gen, password, real):
        """Generation gen with password reaches the subscriber, and status
        says the file is ok and names the version at real."""
        m = sub.wait_line(rf'^update DATABASE_URL {gen} (.*)$')
        self.assertEqual(m.group(1), self.url(password))
        f = h.wait_for(lambda: (f := h.file_status(agent, agent.env_files[0]))
                       ['state'] == 'ok' and f['identity'] == identity(real)
                       and f, what=f'file ok at {real}')
        self.assertIsNone(f['error'])
        st = h.target_status(agent, 'DATABASE_URL')
        self.assertEqual((st['generation'], st['state']), (gen, 'ok'))

    def check_layout(self, env_path, real, repoint):
        """real() is the file env_path resolves to now; repoint(text) puts
        a new file with text behind the links and returns its path."""
        agent, sub = self.follow(env_path)
        gen = 1
        # Written through the link (the link stays a link).
        p = self.new_password()
        h.write_truncate(env_path, self.line(p))
        self.assertTrue(os.path.islink(env_path) or
                        os.path.islink(os.path.dirname(env_path)))
        gen += 1
        self.expect(agent, sub, gen, p, real())
        # The target replaced by rename in its own directory, then
        # written in place there: writers that know nothing of the link.
        for how in (h.write_rename, h.write_inplace):
            p = self.new_password()
            how(real(), self.line(p))
            gen += 1
            self.expect(agent, sub, gen, p, real())
        # The link re-pointed at a new file.
        p = self.new_password()
        old = real()
        new = repoint(self.line(p))
        self.assertEqual(real(), new)
        gen += 1
        self.expect(agent, sub, gen, p, new)
        # The old file no longer counts; the new one does.
        h.write_rename(old, self.line(fresh_password('stale')))
        p = self.new_password()
        h.write_rename(new, self.line(p))
        gen += 1
        self.expect(agent, sub, gen, p, new)
        self.assertEqual(len(sub.updates()), gen, sub.updates())

    def test_link_same_directory(self):
        real = os.path.join(self.tmp, 'real.env')
        h.write_rename(real, self.line(self.password))
        link = os.path.join(self.tmp, 'app.env')
        os.symlink('real.env', link)

        def repoint(text):
            other = os.path.join(self.tmp, 'other.env')
            h.write_rename(other, text)
            relink('other.env', link)
            return other
        self.check_layout(link, lambda: os.path.realpath(link), repoint)

    def test_link_other_directory(self):
        d = os.path.join(self.tmp, 'secrets')
        os.mkdir(d)
        real = os.path.join(d, 'db.env')
        h.write_rename(real, self.line(self.password))
        link = os.path.join(self.tmp, 'app.env')
        os.symlink(real, link)

        def repoint(text):
            d2 = os.path.join(self.tmp, 'secrets2')
            os.mkdir(d2)
            h.write_rename(os.path.join(d2, 'db.env'), text)
            relink(os.path.join(d2, 'db.env'), link)
            return os.path.join(d2, 'db.env')
        self.check_layout(link, lambda: os.path.realpath(link), repoint)

    def test_link_chain(self):
        d = os.path.join(self.tmp, 'etc')
        os.mkdir(d)
        real = os.path.join(d, 'real.env')
        h.write_rename(real, self.line(self.password))
        os.symlink('real.env', os.path.join(d, 'current.env'))
        os.symlink(os.path.join(d, 'current.env'),
                   os.path.join(self.tmp, 'l1'))
        link = os.path.join(self.tmp, 'app.env')
        os.symlink('l1', link)

        def repoint(text):
            # The middle of the chain moves on.
            h.write_rename(os.path.join(d, 'next.env'), text)
            relink('next.env', os.path.join(d, 'current.env'))
            return os.path.join(d, 'next.env')
        self.check_layout(link, lambda: os.path.realpath(link), repoint)

    def test_link_directory(self):
        """current -> releases/N, as deploy tools lay out releases."""
        rel = os.path.join(self.tmp, 'releases')
        os.makedirs(os.path.join(rel, '1'))
        h.write_rename(os.path.join(rel, '1', 'app.env'),
                       self.line(self.password))
        cur = os.path.join(self.tmp, 'current')
        os.symlink('releases/1', cur)
        path = os.path.join(cur, 'app.env')

        def repoint(text):
            os.mkdir(os.path.join(rel, '2'))
            h.write_rename(os.path.join(rel, '2', 'app.env'), text)
            relink('releases/2', cur)
            return os.path.join(rel, '2', 'app.env')
        self.check_layout(path, lambda: os.path.realpath(path), repoint)

    def test_dbswapctl_set_through_a_link(self):
        """set edits the file the link points to and leaves the link."""
        real = os.path.join(self.tmp, 'real.env')
        h.write_rename(real, self.line(self.password))
        link = os.path.join(self.tmp, 'app.env')
        os.symlink('real.env', link)
        agent, sub = self.follow(link)
        p = self.new_password()
        r = self.ctl(agent, 'set', link, 'DATABASE_URL=-', '--wait=10',
                     stdin=self.url(p) + '\n')
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.islink(link))
        self.expect(agent, sub, 2, p, real)

    def test_bom_and_carriage_returns(self):
        """A file saved with a UTF-8 BOM (editors on other systems) is read;
        a lone CR is refused with line and column, the value kept."""
        h.write_rename(self.env_path, b'\xef\xbb\xbf' +
                       self.line(self.password).encode())
        agent, sub = self.follow(self.env_path)
        self.assertEqual(sub.updates()[0][1], self.url())
        p = self.new_password()
        h.write_rename(self.env_path, f'# rotated\rDATABASE_URL='
                       f'{self.url(p)}\r\n')
        f = h.wait_for(lambda: (f := h.file_status(agent, self.env_path))
                       ['state'] == 'error' and f, what='file refused')
        self.assertIn(':1:10: carriage return not followed by a line feed',
                      f['error'])
        self.assertNotIn(p, f['error'])
        self.assertEqual(len(sub.updates()), 1)
        h.write_rename(self.env_path, b'\xef\xbb\xbf' +
                       self.line(p).replace('\n', '\r\n').encode())
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        self.assertEqual(m.group(1), self.url(p))

    # ------------------------------------------------------------------
    # Special files

    def assert_responsive(self, agent):
        """status answers at once, many times in a row."""
        with agent.client() as c:
            worst = 0
            for _ in range(20):
                t0 = time.monotonic()
                c.status()
                worst = max(worst, time.monotonic() - t0)
        self.assertLess(worst, 1.0 * h.TIMEOUT_SCALE)

    def special_files(self):
        """(name, make(path), type word in the error)."""
        def fifo(p):
            os.mkfifo(p, 0o600)

        def sock(p):
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.bind(p)
            self.addCleanup(s.close)

        def device(p):
            os.symlink('/dev/zero', p)

        def directory(p):
            os.mkdir(p)

        def link_to_fifo(p):
            os.mkfifo(p + '.fifo', 0o600)
            os.symlink(os.path.basename(p) + '.fifo', p)
        return [('fifo', fifo, 'a FIFO'), ('socket', sock, 'a socket'),
                ('device', device, 'a character device'),
                ('directory', directory, 'a directory'),
                ('link to a fifo', link_to_fifo, 'a FIFO')]

    def test_special_file_at_start(self):
        """The agent starts, answers and says what is wrong; a regular
        file put there later is read."""
        for name, make, word in self.special_files():
            with self.subTest(name):
                path = os.path.join(self.tmp, name.replace(' ', '-') + '.env')
                make(path)
                agent = self.start_agent(env_files=[path])
                self.assert_responsive(agent)
                f = h.file_status(agent, path)
                self.assertEqual(f['state'], 'error')
                self.assertIn(word, f['error'])
                self.assertIn(path, f['error'])
                # Replaced by a regular file (by rename: the way writers
                # replace a file).
                tmp = path + '.tmp'
                h.write_truncate(tmp, self.line(self.password))
                if os.path.isdir(path) and not os.path.islink(path):
                    os.rmdir(path)
                os.rename(tmp, path)
                st = h.wait_for(lambda: (s := h.target_status(
                    agent, 'DATABASE_URL'))['generation'] == 1 and s,
                    what='published once a regular file is there')
                self.assertEqual(st['state'], 'ok')
                agent.close()

    def test_special_file_while_running(self):
        """A FIFO renamed over the file: the last good value stays, the
        agent answers, and a restart does not hang either."""
        self.write_url(self.password)
        agent, sub = self.follow(self.env_path)
        fifo = os.path.join(self.tmp, 'fifo')
        os.mkfifo(fifo, 0o600)
        os.rename(fifo, self.env_path)
        f = h.wait_for(lambda: (f := h.file_status(agent, self.env_path))
                       ['state'] == 'error' and f, what='file error')
        self.assertIn('is a FIFO (named pipe), not a regular file',
                      f['error'])
        self.assert_responsive(agent)
        st = h.target_status(agent, 'DATABASE_URL')
        self.assertEqual((st['generation'], st['valid']), (1, True))
        agent.restart()
        self.assert_responsive(agent)
        f = h.file_status(agent, self.env_path)
        self.assertIn('a FIFO', f['error'])
        # dbswapctl set refuses it at once rather than hang.
        r = self.ctl(agent, 'set', self.env_path, 'X=1', check=False,
                     timeout=10)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('is a FIFO (named pipe), not a regular file', r.stderr)

    # ------------------------------------------------------------------
    # Writers still at work

    def test_slow_writer_with_a_valid_prefix(self):
        """A writer that pauses mid-value for longer than the watcher
        holds a report: what it wrote so far ('.../app' of
        '.../app_staging') is a valid value of its own, and must not be
        published."""
        base = 'db' + os.urandom(3).hex()
        for db in (base, base + '_staging'):
            self.cluster.create_database(db)
        self.write_env(f'DATABASE_URL={self.cluster.url(self.role, self.password, base + "_staging")}\n')
        agent, sub = self.follow(self.env_path)
        p = self.new_password()
        full = self.cluster.url(self.role, p, base + '_staging')
        prefix = full[:-len('_staging')]
        self.assertEqual(prefix, self.cluster.url(self.role, p, base))
        self.assertTrue(self.cluster.can_connect(prefix))
        fd = os.open(self.env_path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, f'DATABASE_URL={prefix}'.encode())
            # Past the watcher's 2 s hold, and well past a validation.
            f = h.wait_for(lambda: (f := h.file_status(agent, self.env_path))
                           ['state'] == 'writing' and f, timeout=5,
                           what='file state writing')
            self.assertIn('open for writing', f['error'])
            time.sleep(1.5)
            self.assertEqual(h.target_status(agent, 'DATABASE_URL')
                             ['generation'], 1)
            os.write(fd, b'_staging\n')
        finally:
            os.close(fd)
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        self.assertEqual(m.group(1), full)
        time.sleep(0.3)
        self.assertEqual([c for _, c in sub.updates()],
                         [self.cluster.url(self.role, self.password,
                                           base + '_staging'), full])

    def test_slow_writer_without_a_lease(self):
        """Where the kernel grants no read lease (an agent that does not
        own the file and has no CAP_LEASE in the initial user namespace,
        as under the packaged unit's PrivateUsers=), inotify tells that a
        writer is at work: the prefix is not published, not even by a
        reload during the pause."""
        base = 'db' + os.urandom(3).hex()
        for db in (base, base + '_staging'):
            self.cluster.create_database(db)
        self.write_env(f'DATABASE_URL={self.cluster.url(self.role, self.password, base + "_staging")}\n')
        os.chmod(self.env_path, 0o644)
        os.chown(self.env_path, 65534, 65534)
        # Root in a user namespace of its own: no capability over a file
        # of another user.
        agent = h.Agent(env_files=[self.env_path],
                        binary=['unshare', '--user', '--map-root-user',
                                os.environ['DBSWAPD']])
        self.addCleanup(agent.close)
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        p = self.new_password()
        full = self.cluster.url(self.role, p, base + '_staging')
        prefix = full[:-len('_staging')]
        fd = os.open(self.env_path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, f'DATABASE_URL={prefix}'.encode())
            f = h.wait_for(lambda: (f := h.file_status(agent, self.env_path))
                           ['state'] == 'writing' and f, timeout=5,
                           what='file state writing')
            agent.send_signal(signal.SIGHUP)
            agent.wait_log(r'SIGHUP: re-reading the env files')
            time.sleep(1)
            t = h.target_status(agent, 'DATABASE_URL')
            self.assertEqual((t['generation'], t['state']), (1, 'ok'))
            self.assertEqual(h.file_status(agent, self.env_path)['state'],
                             'writing')
            os.write(fd, b'_staging\n')
        finally:
            os.close(fd)
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$')
        self.assertEqual(m.group(1), full)
        self.assertEqual(len(sub.updates()), 2)

    # ------------------------------------------------------------------
    # Reads that fail for a while

    def test_out_of_descriptors_during_a_rotation(self):
        """The agent runs out of descriptors (clients took them) just as
        the file changes: the read fails, is retried, and the rotation
        lands once descriptors are free, with no second write."""
        self.write_url(self.password)
        agent, sub = self.follow(self.env_path)
        used = len(os.listdir(f'/proc/{agent.pid}/fd'))
        limit = used + 4
        resource.prlimit(agent.pid, resource.RLIMIT_NOFILE, (limit, limit))
        clients = []
        try:
            # Take every descriptor left: accept stops (EMFILE) when the
            # table is full; connections past that wait in the backlog.
            for _ in range(8):
                c = h.Client(agent.sock)
                clients.append(c)
            agent.wait_log(r'cannot accept clients: Too many open files')
            p = self.new_password()
            self.write_url(p)
            agent.wait_log(r'app\.env: cannot open: Too many open files; '
                           r'retrying in \d+ ms')
            self.assertEqual(len(sub.updates()), 1)
        finally:
            for c in clients:
                c.close()
        m = sub.wait_line(r'^update DATABASE_URL 2 (.*)$', timeout=10)
        self.assertEqual(m.group(1), self.url(p))
        agent.wait_log(r'app\.env: readable again')
        f = h.file_status(agent, self.env_path)
        self.assertEqual(f['state'], 'ok')


if __name__ == '__main__':
    main()
