"""Every way programs write files reaches subscribers, and no subscriber
ever sees a half-written value."""

import os

import harness as h
from common import ClusterTest, fresh_password, main


class WritePatterns(ClusterTest):

    def check_pattern(self, how):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        written = {self.url()}
        for gen in (2, 3, 4):
            new = fresh_password()
            self.cluster.set_password(self.role, new)
            # A longer file than before and a shorter one, with padding
            # comments, so partial reads would differ from both.
            pad = '# padding\n' * (gen * 40)
            self.write_env(f'{pad}DATABASE_URL={self.url(new)}\n{pad}', how)
            written.add(self.url(new))
            m = sub.wait_line(rf'^update DATABASE_URL {gen} (.*)$')
            self.assertEqual(m.group(1), self.url(new))
            sub.wait_line(rf'^connect {gen} ok$')
        for gen, conninfo in sub.updates():
            self.assertIn(conninfo, written, f'partial value at gen {gen}')
        # The agent never even tried a partial value.
        self.assertNotRegex(agent.log(), 'failed validation|cannot parse|:\\d+:\\d+: ')

    def test_inplace(self):
        self.check_pattern(h.write_inplace)

    def test_truncate_then_write(self):
        self.check_pattern(h.write_truncate)

    def test_write_temp_then_rename(self):
        self.check_pattern(h.write_rename)

    def test_delete_then_recreate(self):
        self.check_pattern(h.write_delete_recreate)

    def test_slow_writer(self):
        self.check_pattern(h.write_slow)

    def test_kubernetes_data_symlink_swap(self):
        d = os.path.join(self.tmp, 'secret-volume')
        os.mkdir(d)
        h.k8s_setup(d, {'app.env': f'DATABASE_URL={self.url()}\n'})
        self.env_path = os.path.join(d, 'app.env')
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        for gen in (2, 3):
            new = fresh_password()
            self.cluster.set_password(self.role, new)
            h.k8s_update(d, {'app.env': f'DATABASE_URL={self.url(new)}\n'})
            m = sub.wait_line(rf'^update DATABASE_URL {gen} (.*)$')
            self.assertEqual(m.group(1), self.url(new))
        self.assertEqual(len(sub.updates()), 3)


if __name__ == '__main__':
    main()
