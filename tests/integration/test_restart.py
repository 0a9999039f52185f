"""Agent restarts with subscribers attached, and many subscribers at once."""

import signal
import time

import harness as h
from common import ClusterTest, main


class Restart(ClusterTest):

    def test_agent_restart_is_invisible_to_subscribers(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        threaded = self.start_subscriber(agent, args=['--thread'])
        for s in (sub, threaded):
            s.wait_line(r'^connect 1 ok$')

        for kill in (True, False):
            agent.restart(kill=kill)
            # Both come back, subscribe again and (same value) ack quietly.
            st = h.wait_for(lambda: (s := h.target_status(agent,
                                                          'DATABASE_URL'))
                            ['acked'] == 2 and s,
                            what='both subscribers back and acked')
            self.assertEqual(st['subscribers'], 2)
            self.assertEqual(st['generation'], 1)
            for s in (sub, threaded):
                self.assertEqual(len(s.updates()), 1, s.lines())

        # A rotation after the restarts reaches both.
        new, _ = self.rotate()
        for s in (sub, threaded):
            m = s.wait_line(r'^update DATABASE_URL 2 (.*)$')
            self.assertEqual(m.group(1), self.url(new))
            s.wait_line(r'^connect 2 ok$')

    def test_value_changed_while_agent_was_down(self):
        self.write_url(self.password)
        agent = self.start_agent()
        sub = self.start_subscriber(agent)
        sub.wait_line(r'^connect 1 ok$')
        agent.kill()
        new, _ = self.rotate()
        agent.start()
        m = sub.wait_line(r'^update DATABASE_URL 1 (.*)$', timeout=10)
        self.assertEqual(m.group(1), self.url(new))
        sub.wait_line(r'^connect 1 ok$')
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == 1, what='ack after restart')

    def test_many_subscribers(self):
        n_c, n_py = 40, 40
        self.write_url(self.password)
        agent = self.start_agent()
        subs = [self.start_subscriber(agent, args=['--no-connect'])
                for _ in range(n_c)]
        clients = []
        for _ in range(n_py):
            c = agent.client()
            self.addCleanup(c.close)
            c.subscribe(['DATABASE_URL'])
            u = c.next_update()
            c.ack('DATABASE_URL', u['generation'])
            clients.append(c)
        h.wait_for(lambda: h.target_status(agent, 'DATABASE_URL')
                   ['acked'] == n_c + n_py, what='all acked generation 1')

        new, t0 = self.rotate()
        for c in clients:
            u = c.next_update(target='DATABASE_URL')
            self.assertEqual((u['generation'], u['conninfo']),
                             (2, self.url(new)))
            c.ack('DATABASE_URL', 2)
        for s in subs:
            s.wait_line(r'^update DATABASE_URL 2 ')
        st = h.wait_for(lambda: (s := h.target_status(agent, 'DATABASE_URL'))
                        ['acked'] == n_c + n_py and s, what='all acked 2')
        print(f'{n_c + n_py} subscribers acked within '
              f'{(time.monotonic() - t0) * 1000:.0f} ms of the rename')
        self.assertEqual(st['subscribers'], n_c + n_py)
        self.assertEqual(st['lagging'], [])


if __name__ == '__main__':
    main()
