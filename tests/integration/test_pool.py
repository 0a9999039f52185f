"""The libdbswap connection pool under load: password rotations, role
switches, several apps on one agent, agent restarts, a value that works in
the agent but not in the app, and an exhausted pool.

The app is pool-load ($DBSWAP_POOL_LOAD, tests/helpers/pool-load.c): N
threads acquiring, querying and releasing in a loop.  It prints a JSON
progress line every 500 ms and a JSON summary when it ends.

The pool acks a generation only once no connection on the old value
remains, so "every subscriber acked generation N" in the agent's status
means that the old value is out of use.
"""

import json
import os
import queue
import re
import subprocess
import threading
import time

import harness as h
from common import ClusterTest, PoolLoad, fresh_password, main

TARGET = 'DATABASE_URL'
ROTATIONS = 100
# Threads querying back to back on a 2-core machine starve new PostgreSQL
# backends for seconds (the agent's validations, the pool's new
# connections, other tests run in parallel): a 2 ms pause per iteration
# still leaves each thread at some 300 queries a second.
PAUSE = ('--pause-ms', 2)


class Psql:
    """One psql session as the superuser, SQL on its stdin: a rotation's
    ALTER ROLE costs a few ms instead of a new psql and login (some 300 ms
    on a machine busy with pool-load).  Stopped by the harness's cleanup
    too, like its own processes (the benchmarks use it as well)."""

    def __init__(self, cluster):
        env = h._pg_clean_env()
        env.update(PGHOST=cluster.sockdir, PGPORT=str(cluster.port),
                   PGUSER=cluster.superuser, PGDATABASE='postgres',
                   PGPASSWORD=cluster.superuser_password)
        self._key = h._register(self.close)
        self.proc = subprocess.Popen(
            [h._psql(), '-X', '-w', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1',
             '-f', '-'], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, env=env)
        self._pid_key = h._watch_pid(self.proc.pid)
        self._lines = queue.Queue()
        self._n = 0
        threading.Thread(target=self._reader, daemon=True).start()

    def _reader(self):
        for line in self.proc.stdout:
            self._lines.put(line.rstrip('\n'))
        self._lines.put(None)

    def query(self, sql, timeout=10):
        """Runs one statement; returns its output lines."""
        self._n += 1
        marker = f'-- done {self._n} --'
        self.proc.stdin.write(f'{sql};\n\\echo {marker}\n')
        self.proc.stdin.flush()
        out = []
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        while True:
            try:
                line = self._lines.get(
                    timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise h.PgError(f'psql: no answer within {timeout} s to '
                                f'{sql[:40]!r}') from None
            if line is None:
                raise h.PgError(f'psql ended: {" ".join(out)}')
            if line == marker:
                return out
            out.append(line)

    def set_password(self, role, password):
        self.query(f'ALTER ROLE {h.quote_ident(role)} '
                   f'PASSWORD {h.quote_literal(password)}')

    def sessions(self, role):
        return int(self.query('SELECT count(*) FROM pg_stat_activity WHERE '
                              f'usename = {h.quote_literal(role)}')[0])

    def close(self):
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.proc.stdout.close()
            h._unwatch(self._pid_key)
            self._pid_key = None
        finally:
            h._unregister(self._key)


class PoolTest(ClusterTest):
    """What the pool tests of every language share (no test of its own):
    a superuser session, a time budget, the wait for every pool's ack."""

    def setUp(self):
        super().setUp()
        self.deadline = None
        self.psql = Psql(self.cluster)
        self.addCleanup(self.psql.close)

    def budget(self, seconds):
        """Bounds the rest of the test: every wait below fails once this
        many seconds have passed."""
        self.deadline = time.monotonic() + seconds * h.TIMEOUT_SCALE

    def wait_acked(self, status, generation, loads, timeout=10):
        """Waits until the agent's current generation is `generation` and
        every load in loads (and nobody else) subscribes and acked it.
        Returns the target's status entry."""
        n = len(loads)
        deadline = time.monotonic() + timeout * h.TIMEOUT_SCALE
        if self.deadline is not None:
            deadline = min(deadline, self.deadline)
        while True:
            t = h.target_status(status, TARGET)
            if (t['generation'], t['subscribers'], t['acked']) == \
                    (generation, n, n):
                return t
            for load in loads:
                load.check_alive()
            if time.monotonic() > deadline:
                self.fail(f'generation {generation} not acked by {n} '
                          f'pool(s) in time; status: {t!r}; '
                          + '; '.join(l.describe() for l in loads))
            time.sleep(0.005)


class Pool(PoolTest):

    def start_load(self, agent, *args, env=None, name='pool-load'):
        load = PoolLoad(agent.sock, args=args + PAUSE, env=env, name=name)
        self.addCleanup(load.close)
        return load

    def start_agent_published(self):
        """The agent, once it has published its first generation."""
        agent = self.start_agent()
        self.wait_published(agent, 1)
        return agent

    def wait_published(self, agent, generation):
        # Status is polled only once the target has a generation: before,
        # the agent's status reply may be malformed when a client already
        # subscribes (the lagging array announces one entry and holds
        # none).
        agent.wait_log(rf'{TARGET}: generation {generation} published',
                       timeout=10)

    def rotate_password(self, role=None):
        """ALTER ROLE, then the env file: the order of a real rotation.
        Returns the new password."""
        role = role or self.role
        new = fresh_password()
        self.psql.set_password(role, new)
        self.write_env(f'{TARGET}={self.cluster.url(role, new)}\n')
        return new

    def status_client(self, agent):
        c = agent.client(name='test-pool-status')
        self.addCleanup(c.close)
        return c

    def wait_queries(self, load, more_than=0):
        return load.wait_progress(lambda p: p['queries'] > more_than,
                                  what=f'more than {more_than} queries')

    def check_summary(self, rc, s, load, generation):
        """The assertions every load run ends with."""
        self.assertEqual(s['failures'], 0, load.describe())
        self.assertEqual(rc, 0, load.describe())
        self.assertGreater(s['queries'], 0)
        self.assertEqual(s['generation'], generation, s)
        self.assertEqual(s['stats']['generation'], generation, s)
        self.assertEqual(s['stats']['old'], 0, s)

    def sessions_gone(self, role):
        # A backend leaves pg_stat_activity when its process has exited,
        # a moment after the pool closed the socket: allow for that.
        h.wait_for(lambda: self.psql.sessions(role) == 0, timeout=2,
                   interval=0.05, what=f'no session of {role} left')

    def test_password_rotated_100_times_under_load(self):
        self.budget(100)
        self.write_url(self.password)
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 8, '--tx')
        status = self.status_client(agent)
        self.wait_acked(status, 1, [load])
        before = self.wait_queries(load)['queries']

        t0 = time.monotonic()
        for i in range(ROTATIONS):
            # Between the ALTER ROLE and the switch the pool's current
            # value no longer opens connections: the pool must keep its
            # acquirers waiting, not fail them.
            self.rotate_password()
            self.wait_acked(status, 2 + i, [load])
        took = time.monotonic() - t0
        self.wait_queries(load, before)

        rc, s = load.stop()
        print(f'{ROTATIONS} rotations under load in {took:.1f} s, '
              f'{s["queries"]} queries; stats {s["stats"]}')
        self.check_summary(rc, s, load, 1 + ROTATIONS)
        self.assertGreaterEqual(s['stats']['switches'], ROTATIONS)
        self.assertEqual(s['current_user_at_end'], self.role)
        self.sessions_gone(self.role)  # dbswap_pool_free() closed them

    def test_two_roles_alternating(self):
        self.budget(100)
        roles = ['app_a', 'app_b']
        for role in roles:
            self.cluster.create_role(role, fresh_password())
        self.rotate_password(roles[0])
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 8, '--tx')
        status = self.status_client(agent)
        self.wait_acked(status, 1, [load])
        self.wait_queries(load)

        for i in range(ROTATIONS):
            old, new = roles[i % 2], roles[(i + 1) % 2]
            self.rotate_password(new)
            self.wait_acked(status, 2 + i, [load])
            if i % 10 == 9:
                self.sessions_gone(old)

        rc, s = load.stop()
        self.check_summary(rc, s, load, 1 + ROTATIONS)
        self.assertEqual(s['current_user_at_end'], roles[ROTATIONS % 2])
        self.sessions_gone(roles[(ROTATIONS + 1) % 2])

    def test_several_apps_share_one_agent(self):
        self.budget(60)
        self.write_url(self.password)
        agent = self.start_agent_published()
        loads = [self.start_load(agent, '--threads', 3, '--tx',
                                 name=f'pool-load-{i}') for i in range(3)]
        status = self.status_client(agent)
        self.wait_acked(status, 1, loads)
        for load in loads:
            self.wait_queries(load)

        for i in range(5):
            self.rotate_password()
            t = self.wait_acked(status, 2 + i, loads)
            self.assertEqual((t['subscribers'], t['acked']), (3, 3))
            self.assertEqual(t['lagging'], [])

        for load in loads:
            rc, s = load.stop()
            self.check_summary(rc, s, load, 6)
            self.assertEqual(s['current_user_at_end'], self.role)

    def test_agent_killed_and_restarted_under_load(self):
        self.budget(60)
        self.write_url(self.password)
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 8, '--tx')
        self.wait_acked(agent, 1, [load])
        self.wait_queries(load)
        self.rotate_password()
        self.wait_acked(agent, 2, [load])

        # Killed with the value unchanged: the pool keeps serving while
        # the agent is away, and acks the restarted agent's generation 1
        # (the same value) without switching.
        agent.kill()
        q = self.wait_queries(load)['queries']
        self.wait_queries(load, q)  # still serving with no agent
        agent.mark()
        agent.start()
        self.wait_published(agent, 1)
        self.wait_acked(agent, 1, [load])

        # Killed, and the value changed meanwhile (another role): the
        # restarted agent's generation 1, lower than the pool's, is new.
        other = 'app_d_' + self.role[-6:]
        self.cluster.create_role(other, fresh_password())
        agent.kill()
        self.rotate_password(other)
        agent.mark()
        agent.start()
        self.wait_published(agent, 1)
        self.wait_acked(agent, 1, [load])
        self.sessions_gone(self.role)

        # And a rotation after the restarts still reaches the pool.
        self.rotate_password(other)
        self.wait_acked(agent, 2, [load])

        rc, s = load.stop()
        self.check_summary(rc, s, load, 2)
        self.assertEqual(s['current_user_at_end'], other)
        self.assertGreaterEqual(s['stats']['switches'], 3)

    def test_value_that_fails_only_in_the_app_is_nacked(self):
        """A value can work for the agent and not for the app: here the
        app's libpq has PGSSLMODE=require in its environment and the
        server has no SSL.  The first value says sslmode=disable, which
        wins over the environment; the second leaves sslmode out, so the
        agent (default "prefer") connects and the app cannot."""
        self.budget(60)
        good = self.url() + '?sslmode=disable'
        self.write_env(f'{TARGET}={good}\n')
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 4, '--tx',
                               env={'PGSSLMODE': 'require'},
                               name='pool-load-ssl')
        status = self.status_client(agent)
        self.wait_acked(status, 1, [load])
        self.wait_queries(load)

        self.write_env(f'{TARGET}={self.url()}\n')

        def nacked():
            r = self.ctl(agent, 'status', '--json')
            for t in json.loads(r.stdout)['targets']:
                if t['name'] != TARGET or t['generation'] != 2:
                    continue
                for lag in t['lagging']:
                    if lag['pid'] == load.pid and lag.get('nacked') == 2:
                        return t, lag
            return None
        t, lag = h.wait_for(nacked, timeout=15, interval=0.05,
                            what='the pool\'s nack of generation 2 in status')
        self.assertEqual(t['acked'], 0)
        self.assertEqual(lag['name'], 'pool-load-ssl')
        self.assertIsInstance(lag['error'], str)
        self.assertTrue(lag['error'].strip(), lag)
        self.assertNotIn(self.password, lag['error'])

        # The pool stays on generation 1 and keeps serving.
        q = self.wait_queries(load)['queries']
        p = self.wait_queries(load, q)
        self.assertEqual(p['generation'], 1, p)
        self.assertEqual(p['old'], 0, p)

        # A value that works in the app too is taken at once.
        self.write_env(f'{TARGET}={good}&application_name=fixed\n')
        self.wait_acked(status, 3, [load])
        rc, s = load.stop()
        self.check_summary(rc, s, load, 3)
        self.assertGreaterEqual(s['stats']['failed_connects'], 1)

    def test_without_an_agent_the_environment_is_used(self):
        """No socket: the pool serves from $DATABASE_URL and says so once;
        an agent that appears later takes over (same value: the pool keeps
        its connections and acks)."""
        self.budget(40)
        sock = os.path.join(self.tmp, 'agent.sock')
        load = PoolLoad(sock, args=('--threads', 2, '--seconds', 6) + PAUSE,
                        env={TARGET: self.url()})
        self.addCleanup(load.close)
        load.wait_progress(lambda p: p['queries'] > 0, timeout=10,
                           what='queries before an agent exists')
        self.write_url(self.password)
        agent = h.Agent(env_files=[self.env_path], sock=sock)
        self.addCleanup(agent.close)
        self.wait_published(agent, 1)
        h.wait_for(lambda: h.target_status(agent, TARGET)['acked'] == 1,
                   timeout=10, what='the pool to ack the agent\'s value')
        rc, s = load.wait_exit(timeout=20)
        self.assertEqual(rc, 0, load.describe())
        self.assertEqual(s['failures'], 0)
        self.assertEqual(s['generation'], 1)
        err = load.stderr()
        self.assertEqual(err.count(f'using ${TARGET} from the environment'),
                         1, err)

    def test_agent_pool_settings_honoured(self):
        """pool-load started without --max and --min: DATABASE_POOL_MAX
        and _MIN from the agent's env file are the pool's max_size and
        min_size (the pool never grows past the max under 8 threads, and
        keeps the min open); a change of them applies live under load,
        with no new generation and no failed query."""
        self.budget(60)
        url = self.url()
        self.write_env(f'{TARGET}={url}\nDATABASE_POOL_MAX=3\n'
                       'DATABASE_POOL_MIN=2\n')
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 8, '--tx',
                               '--progress-ms', 100)
        p = load.wait_progress(lambda p: (p['min_size'], p['max_size']) ==
                               (2, 3) and p['queries'] > 0,
                               what='min_size 2, max_size 3')
        load.wait_progress(lambda q: q['queries'] > p['queries'] + 100,
                           what='queries on the pool of 3')
        h.wait_for(lambda: 2 <= self.psql.sessions(self.role) <= 3,
                   timeout=5, what='2 or 3 sessions of the role')
        sizes = [m['size'] for _, m in load.timeline()]
        self.assertLessEqual(max(sizes), 3, sizes)
        self.assertEqual(max(sizes), 3, 'never grew to the max under load')

        mark = len(load.timeline())
        self.write_env(f'{TARGET}={url}\nDATABASE_POOL_MAX=5\n'
                       'DATABASE_POOL_MIN=4\n')
        p = load.wait_progress(lambda p: (p['min_size'], p['max_size']) ==
                               (4, 5) and p['size'] >= 4,
                               what='min_size 4, max_size 5, 4 open')
        self.assertEqual(p['generation'], 1, p)
        h.wait_for(lambda: 4 <= self.psql.sessions(self.role) <= 5,
                   timeout=5, what='4 or 5 sessions of the role')
        self.assertLessEqual(max(m['size'] for _, m in
                                 load.timeline()[mark:]), 5)
        load.wait_progress(lambda q: q['queries'] > p['queries'] + 100,
                           what='queries on the pool of 5')
        rc, s = load.stop()
        self.check_summary(rc, s, load, 1)
        c = s['stats']['config']
        self.assertEqual((c['min_size'], c['max_size']), (4, 5), s)
        # The first value was the only switch: the sizes changed in place.
        self.assertEqual(s['stats']['switches'], 1, s)

    def test_exhausted_pool_times_out_acquires(self):
        """4 threads, 2 connections, each held 500 ms: the other threads'
        200 ms acquires time out, and pool-load still ends on time."""
        self.write_url(self.password)
        agent = self.start_agent_published()
        load = self.start_load(agent, '--threads', 4, '--max', 2,
                               '--hold', 500, '--acquire-ms', 200,
                               '--seconds', 3)
        rc, s = load.wait_exit(timeout=20)
        err = load.stderr()
        self.assertEqual(rc, 1, load.describe())
        self.assertGreater(s['failures'], 0)
        self.assertGreater(s['queries'], 0)
        self.assertGreater(s['stats']['timeouts'], 0, s)
        self.assertEqual(s['stats']['config']['max_size'], 2, s)
        self.assertLessEqual(s['stats']['size'], 2, s)
        self.assertIn('ETIMEDOUT', err)
        self.assertIn('pool exhausted', err)
        # Each failed acquire gave up after its 200 ms, not the default
        # 10 s (give a loaded machine some slack).
        waited = [int(x) for x in
                  re.findall(r'acquire failed after (\d+) ms', err)]
        self.assertTrue(waited, err)
        self.assertTrue(all(150 <= w <= 2000 for w in waited), waited)


if __name__ == '__main__':
    main()
