"""Bad values are never published: the last good value stays in force and
the reason shows in status, with passwords masked."""

import os

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


if __name__ == '__main__':
    main()
