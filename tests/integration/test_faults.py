"""Bad values are never published: the last good value stays in force and
the reason shows in status, with passwords masked."""

import os
import subprocess
import tempfile
import time

import harness as h
from common import ClusterTest, fresh_password, main


class Faults(ClusterTest):

    def setUp(self):
        super().setUp()
        self.write_url(self.password)
        self.agent = self.start_agent()
        self.sub = self.start_subscriber(self.agent)
        self.sub.wait_line(r'^connect 1 ok$')

    def status(self):
        return h.target_status(self.agent, 'DATABASE_URL')

    def assert_kept(self, st, *secrets):
        self.assertEqual(st['generation'], 1)
        self.assertTrue(st['valid'])
        self.assertEqual(len(self.sub.updates()), 1)
        for s in (self.password,) + secrets:
            self.assertNotIn(s, str(st))
            self.assertNotIn(s, self.agent.log())

    def wait_failed(self, pattern):
        st = h.wait_for(lambda: (s := self.status())['state'] == 'failed'
                        and s, what='state failed')
        self.assertRegex(st['error'], pattern)
        return st

    def test_wrong_password(self):
        bad = fresh_password('wrong')
        self.write_url(bad)
        st = self.wait_failed(r'failed validation: .*password authentication '
                              r'failed for user "app_')
        self.assertIn(':****@', st['error'])
        self.assert_kept(st, bad)
        # A fix is taken at once.
        new, _ = self.rotate()
        self.sub.wait_line(r'^update DATABASE_URL 2 ')
        self.assertIsNone(self.status()['error'])

    def test_unreachable_server(self):
        self.write_env(f'DATABASE_URL=postgresql://{self.role}:{self.password}'
                       '@127.0.0.1:1/postgres\n')
        st = self.wait_failed(r'Connection refused|could not connect')
        self.assert_kept(st)

    def test_not_a_conninfo(self):
        bad = fresh_password('garbage')
        self.write_env(f'DATABASE_URL="host=db {bad}"\n')
        st = self.wait_failed(r'not a valid libpq connection string')
        self.assert_kept(st, bad)
        self.assertNotIn(bad, st['error'])

    def test_syntax_error_rejects_the_whole_file(self):
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        # A valid new URL, then a broken line: nothing of it may be used.
        self.write_env(f'DATABASE_URL={self.url(new)}\n'
                       f'OTHER="unterminated {new}\n')
        f = h.wait_for(lambda: (s := h.file_status(self.agent, self.env_path))
                       ['state'] == 'error' and s, what='file error')
        self.assertRegex(f['error'], rf'^{self.env_path}:2:\d+: ')
        self.assertNotIn(new, f['error'])
        st = self.status()
        self.assertEqual(st['state'], 'ok')
        self.assert_kept(st, new)
        # Fixing the file publishes its value.
        self.write_url(new)
        self.sub.wait_line(r'^update DATABASE_URL 2 ')
        self.assertEqual(h.file_status(self.agent, self.env_path)['state'],
                         'ok')

    def test_file_deleted_keeps_values(self):
        os.unlink(self.env_path)
        f = h.wait_for(lambda: (s := h.file_status(self.agent, self.env_path))
                       ['state'] == 'missing' and s, what='file missing')
        self.assertIn('missing', f['error'])
        self.assert_kept(self.status())
        self.write_url(self.password)
        h.wait_for(lambda: h.file_status(self.agent, self.env_path)
                   ['state'] == 'ok', what='file back')
        self.assert_kept(self.status())

    def test_variable_removed_keeps_value(self):
        self.write_env('OTHER=1\n')
        st = h.wait_for(lambda: (s := self.status())['state'] == 'unset'
                        and s, what='state unset')
        self.assertIn('no longer defined', st['error'])
        self.assert_kept(st)

    # -- faults in files and directories (issue 7)

    def wait_file(self, state, path=None):
        path = path or self.env_path
        return h.wait_for(lambda: (s := h.file_status(self.agent, path))
                          ['state'] == state and s, what=f'file {state}')

    def test_env_file_permissions_are_not_checked(self):
        # No mode policy for env files (README "Security" means key files,
        # agent/keys.h; test_encryption.py covers those): a world-readable
        # env file is read like any other.  This pins that down.
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        self.write_url(new, how=lambda p, t: h.write_rename(p, t, 0o666))
        self.sub.wait_line(r'^update DATABASE_URL 2 ')
        self.assertEqual(h.file_status(self.agent, self.env_path)['state'],
                         'ok')

    def test_directory_deleted_and_recreated(self):
        subprocess.run(['rm', '-rf', self.tmp], check=True)
        f = self.wait_file('missing')
        self.assertIn(self.env_path, f['error'])
        self.assertIn('missing', f['error'])
        self.assert_kept(self.status())
        time.sleep(0.3)  # a few of the watcher's retries find nothing
        self.assert_kept(self.status())
        new = fresh_password()
        self.cluster.set_password(self.role, new)
        os.mkdir(self.tmp)
        self.write_url(new)
        self.sub.wait_line(r'^update DATABASE_URL 2 ')
        self.wait_file('ok')
        st = self.status()
        self.assertEqual(st['generation'], 2)
        self.assertIsNone(st['error'])
        self.assertNotIn(new, self.agent.log())

    def test_disk_full_during_set(self):
        mnt = os.path.join(self.tmp, 'small')
        os.mkdir(mnt)
        r = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=256k',
                            'tmpfs', mnt], capture_output=True, text=True)
        if r.returncode != 0:
            self.skipTest(f'cannot mount a tmpfs: {r.stderr.strip()}')
        # Registered before the agent: unmounted after it is stopped.
        self.addCleanup(subprocess.run, ['umount', '-l', mnt])
        path = os.path.join(mnt, 'app.env')
        h.write_rename(path, f'DATABASE_URL={self.url()}\n')
        agent = self.start_agent(env_files=[path])
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        # Fill the file system: what is left is less than one page.
        fd = os.open(os.path.join(mnt, 'filler'), os.O_WRONLY | os.O_CREAT)
        try:
            while True:
                os.write(fd, b'\0' * 512)
        except OSError:
            pass
        finally:
            os.close(fd)
        vfs = os.statvfs(mnt)
        self.assertLess(vfs.f_bavail * vfs.f_frsize, 4096)
        with open(path, 'rb') as f:
            before = f.read()
        new = fresh_password('full')
        self.cluster.set_password(self.role, new)
        big = self.url(new) + '?application_name=' + 'x' * 8192
        r = subprocess.run([os.environ['DBSWAPCTL'], '--socket', agent.sock,
                            'set', path, 'DATABASE_URL=-'],
                           input=big + '\n', capture_output=True, text=True,
                           timeout=10)
        self.assertEqual(r.returncode, 1, r)
        self.assertIn(path, r.stderr)
        self.assertRegex(r.stderr, r'No space left on device')
        print(f'dbswapctl set on a full disk: {r.stderr.strip()}')
        self.assertNotIn(new, r.stdout + r.stderr)
        with open(path, 'rb') as f:
            self.assertEqual(f.read(), before)
        self.assertEqual(sorted(os.listdir(mnt)), ['app.env', 'filler'])
        time.sleep(0.2)
        st = h.target_status(agent, 'DATABASE_URL')
        self.assertEqual((st['generation'], st['valid']), (1, True))
        self.assertEqual(h.file_status(agent, path)['state'], 'ok')
        self.assertEqual(len(sub.updates()), 1)  # the first value only

    def test_huge_file_refused(self):
        rss0 = vm_rss_kib(self.agent.pid)
        new = fresh_password('huge')
        self.cluster.set_password(self.role, new)
        line = '# ' + 'x' * 1021 + '\n'
        text = f'DATABASE_URL={self.url(new)}\n' + line * (10 * 1024)
        self.write_env(text)
        f = self.wait_file('error')
        self.assertIn(self.env_path, f['error'])
        self.assertRegex(f['error'], r'over the 262144 byte limit')
        self.assert_kept(self.status(), new)
        # Again, in place and growing: the read is bounded too.
        with open(self.env_path, 'a') as fh:
            fh.write(line * 1024)
        time.sleep(0.3)
        self.assertEqual(h.file_status(self.agent, self.env_path)['state'],
                         'error')
        self.assert_kept(self.status(), new)
        rss1 = vm_rss_kib(self.agent.pid)
        self.assertLess(rss1, rss0 + 4096, (rss0, rss1))

    def test_symlink_outside_the_directory(self):
        """The agent follows a symlink wherever it points (no policy on
        where), and watches where it points too: a change to the target
        in its own directory is seen at once (it once waited for a
        reload while status said ok)."""
        other = tempfile.mkdtemp(prefix='dbswap-test-other-')
        self.addCleanup(subprocess.run, ['rm', '-rf', other])
        real = os.path.join(other, 'real.env')
        p2 = fresh_password()
        self.cluster.set_password(self.role, p2)
        h.write_rename(real, f'DATABASE_URL={self.url(p2)}\n')
        tmp_link = self.env_path + '.lnk'
        os.symlink(real, tmp_link)
        os.rename(tmp_link, self.env_path)
        self.sub.wait_line(r'^update DATABASE_URL 2 ')
        self.wait_file('ok')
        # A write to the target in its own directory is seen.
        p3 = fresh_password()
        self.cluster.set_password(self.role, p3)
        h.write_rename(real, f'DATABASE_URL={self.url(p3)}\n')
        m = self.sub.wait_line(r'^update DATABASE_URL 3 (.*)$')
        self.assertEqual(m.group(1), self.url(p3))
        self.assertEqual(self.status()['generation'], 3)
        self.wait_file('ok')

    def test_server_restarted_during_validation(self):
        self.write_env(f'DATABASE_URL={self.url()}\n'
                       'DB_CONNECTION_TIMEOUT=1000\n')
        h.wait_for(lambda: h._status(self.agent, 5)['agent']
                   ['failover_settings']['connection_timeout_ms'] == 1000, what='timeout 1 s')
        new = fresh_password('restart')
        self.cluster.set_password(self.role, new)
        self.cluster.pause()
        try:
            self.write_env(f'DATABASE_URL={self.url(new)}\n'
                           'DB_CONNECTION_TIMEOUT=1000\n')
            st = h.wait_for(lambda: (s := self.status())['error'] and s,
                            timeout=5, what='validation timed out')
            self.assertIn('failed validation', st['error'])
            self.assertRegex(st['error'], r'no answer within 1000 ms')
            self.assertIn(':****@', st['error'])
            self.assert_kept(st, new)
            # The server is restarted (stopped while hung, then started).
            self.cluster.stop('fast')
            self.assert_kept(self.status(), new)
        finally:
            self.cluster.resume()
            if not self.cluster.running:
                self.cluster.start()
        self.sub.wait_line(r'^update DATABASE_URL 2 ', timeout=20)
        st = self.status()
        self.assertEqual(st['generation'], 2)
        self.assertIsNone(st['error'])
        self.assertNotIn(new, self.agent.log())


def vm_rss_kib(pid):
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])
    raise AssertionError(f'no VmRSS for pid {pid}')


if __name__ == '__main__':
    main()
