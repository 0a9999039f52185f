"""The dbswap demo: the workflow the README teaches, on a throwaway
PostgreSQL pair, with an app on libdbswap's connection pool serving
queries the whole time.

  1. a primary and a streaming replica (pg_basebackup -R)
  2. an env file and dbswapd watching it
  3. the app: pool-load (tests/helpers/pool-load.c) on the C pool, its
     queries/s and failed queries shown after each step
  4. a rotation: ALTER ROLE, then dbswapctl set --wait
  5. dbswapctl rotate --admin --wait
  6. a wrong password, refused: the app stays on the value in force
  7. failover to the replica when the primary dies, failback when it is
     back
  8. dbswapctl status

Each command is printed as it runs, with $DEMO for the temp dir and
$DBSWAP_SOCKET set, so that a reader can repeat it (dbswapd, dbswapctl and
pool-load are in ./build: see the PATH line printed first).  Everything is
cleaned up at the end.

Run through ./dev.sh demo, which builds first and sets DBSWAPD, DBSWAPCTL
and DBSWAP_POOL_LOAD."""

import os
import re
import shlex
import subprocess
import sys
import tempfile
import time

import harness as h
from common import PoolLoad

TARGET = 'DATABASE_URL'
SECONDARY = 'DATABASE_URL_SECONDARY'
# Quick failover for the demo (the defaults are 30 s, 5 s, 3, 120 s).
FAILOVER = {'DB_HEALTH_CHECK_INTERVAL': 1000, 'DB_CONNECTION_TIMEOUT': 2000,
            'DB_FAILURE_THRESHOLD': 2, 'DB_PRIMARY_RETRY_INTERVAL': 4000}


def say(text=''):
    print(text, flush=True)


def step(n, text):
    say(f'\n{n}. {text}')


class Demo:
    def __init__(self, tmp):
        self.tmp = tmp
        self.env_path = os.path.join(tmp, 'app.env')
        self.sock = os.path.join(tmp, 'dbswapd.sock')
        self.ctl_bin = os.environ['DBSWAPCTL']
        self.app = None
        self.last = None  # (monotonic time, queries, failures) last shown

    def short(self, text):
        """text with the temp dir as $DEMO, as printed commands show it."""
        return text.replace(self.tmp, '$DEMO')

    def show(self, argv, stdin_shown=None, background=False):
        """Prints argv as a shell command, the temp dir as $DEMO (its
        name needs no quoting), stdin as a here-string."""
        line = ' '.join(shlex.quote(a) for a in argv).replace(self.tmp,
                                                              '$DEMO')
        if stdin_shown:
            line += f' <<<"{stdin_shown}"'
        say(f'   $ {line}' + (' &' if background else ''))

    def ctl(self, *args, stdin=None, stdin_shown=None, timeout=60,
            quiet=False):
        """Runs dbswapctl ARGS, printing the command and its output;
        returns its exit status."""
        self.show(['dbswapctl', *args], stdin_shown)
        r = subprocess.run([self.ctl_bin, *args], input=stdin,
                           capture_output=True, text=True, timeout=timeout,
                           env=dict(os.environ, DBSWAP_SOCKET=self.sock))
        if not quiet:
            for line in (r.stdout + r.stderr).splitlines():
                say('     ' + line)
        if r.returncode != 0:
            say(f'     (exit status {r.returncode})')
        return r.returncode

    # -- the app

    def app_line(self, what=''):
        """One line of the app's counters since the last one."""
        p = self.app.progress()
        if p is None:
            return
        now = time.monotonic()
        t0, q0, f0 = self.last or (now - p['t'], 0, 0)
        rate = (p['queries'] - q0) / max(now - t0, 1e-3)
        say(f'   [app] {rate:6.0f} queries/s, {p["queries"]} served, '
            f'{p["failures"]} failed ({p["failures"] - f0} since the last '
            f'line), pool on generation {p["generation"]}'
            + (f': {what}' if what else ''))
        self.last = (now, p['queries'], p['failures'])

    def app_until(self, predicate, what, timeout=30):
        """Shows the app's counters every second until predicate() is
        true; returns its value."""
        deadline = time.monotonic() + timeout
        next_line = time.monotonic() + 1
        while True:
            v = predicate()
            if v:
                return v
            if time.monotonic() > deadline:
                raise h.HarnessError(f'timed out waiting for {what}')
            if time.monotonic() >= next_line:
                self.app_line(f'waiting for {what}')
                next_line += 1
            time.sleep(0.05)

    def status(self):
        return h.target_status(self.agent, TARGET)

    def url_in_file(self):
        with open(self.env_path) as f:
            return re.search(rf'(?m)^{TARGET}=(.*)$', f.read()).group(1)


def main():
    tmp = tempfile.mkdtemp(prefix='dbswap-demo-')
    d = Demo(tmp)
    build = os.path.dirname(os.path.dirname(os.path.abspath(
        os.environ['DBSWAPD'])))
    say('The dbswap demo.  To repeat a command shown with $, first:')
    say(f'   $ export PATH={build}/agent:{build}/client-lib/ctl:{build}/tests:'
        '$PATH')
    say(f'   $ export DEMO={tmp} DBSWAP_SOCKET={tmp}/dbswapd.sock')
    try:
        run(d)
        say('\n9. Cleaned up: the app and dbswapd stopped, both clusters '
            'stopped and removed.')
    finally:
        subprocess.run(['rm', '-rf', tmp])
    return 0


def run(d):
    step(1, 'Two throwaway PostgreSQL 15 clusters: a primary and a streaming '
         'replica')
    with h.PgCluster() as pg:
        password = h.secrets.token_urlsafe(12)
        pg.create_role('app', password)
        say(f'   primary on 127.0.0.1:{pg.port} (initdb, pg_ctl start), '
            'role "app" with a random password:')
        say(f'   $ psql -h 127.0.0.1 -p {pg.port} -U postgres -c '
            '"CREATE ROLE app LOGIN PASSWORD \'...\'"')
        with pg.replica() as rep:
            say(f'   replica on 127.0.0.1:{rep.port}, a hot standby made '
                'by (as the postgres user)')
            say(f'   $ pg_basebackup -D replica/data -R -X stream -h '
                f'127.0.0.1 -p {pg.port} -U replicator && pg_ctl -D '
                'replica/data start')
            run_agent(d, pg, rep, password)


def run_agent(d, pg, rep, password):
    step(2, 'An env file, and dbswapd watching it')
    h.write_rename(d.env_path, "# the app's database\n"
                   f'{TARGET}={pg.url("app", password)}\n')
    say(f'   {d.short(d.env_path)}:')
    say(f'     # the app\'s database\n     {TARGET}=postgresql://app:****@'
        f'127.0.0.1:{pg.port}/postgres')
    d.show(['dbswapd', '--socket', d.sock, '--env', d.env_path],
           background=True)
    with h.Agent(env_files=[d.env_path], sock=d.sock) as agent:
        d.agent = agent
        agent.wait_log(r'generation 1 published')
        say('     ' + agent.log().splitlines()[-1])

        step(3, 'The app: 2 threads on a libdbswap pool (at most 4 '
             'connections), each running SELECT 1 in a loop')
        d.show(['pool-load', '--socket', d.sock, '--target', TARGET,
                '--threads', '2', '--max', '4', '--pause-ms', '2',
                '--name', 'demo-app'])
        with PoolLoad(d.sock, args=('--threads', 2, '--max', 4,
                                    '--pause-ms', 2),
                      name='demo-app') as app:
            d.app = app
            app.wait_progress(lambda p: p['queries'] > 0,
                              what='the first queries')
            time.sleep(1)
            d.app_line()
            run_steps(d, pg, rep)
            rc, summary = app.stop()
            lat = summary.get('latency_us') or {}
            say(f'   [app] done: {summary["queries"]} queries served, '
                f'{summary["failures"]} failed; latency p50 '
                f'{lat.get("p50")} µs, p99 {lat.get("p99")} µs')


def run_steps(d, pg, rep):
    step(4, 'A rotation as the README teaches it: the new password on the '
         'server, then in the file')
    new = h.secrets.token_urlsafe(12)
    say(f'   $ psql -h 127.0.0.1 -p {pg.port} -U postgres -c "ALTER ROLE '
        'app PASSWORD \'$NEW\'"')
    pg.set_password('app', new)
    gen = d.status()['generation']
    d.ctl('set', d.env_path, f'{TARGET}=-', '--wait', stdin=pg.url('app', new)
          + '\n', stdin_shown=f'postgresql://app:$NEW@127.0.0.1:{pg.port}'
          '/postgres')
    d.app_until(lambda: d.app.progress()['generation'] > gen,
                'the pool on the new generation')
    d.app_line('the pool switched' if d.app.progress()['failures'] ==
               d.last[2] else 'the pool switched (with failures!)')

    step(5, 'dbswapctl rotate: a new random password, set on the server '
         '(a SCRAM verifier: the plaintext never reaches it), written into '
         'the file, and followed until every subscriber acked')
    admin = os.path.join(d.tmp, 'admin.conninfo')
    fd = os.open(admin, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'w') as f:
        f.write(pg.url('postgres', pg.superuser_password) + '\n')
    say(f'   {d.short(admin)} (mode 0600) holds an admin conninfo: '
        f'postgresql://postgres:****@127.0.0.1:{pg.port}/postgres')
    gen = d.status()['generation']
    d.ctl('rotate', d.env_path, TARGET, '--admin', admin, '--wait')
    d.app_until(lambda: d.app.progress()['generation'] > gen,
                'the pool on the new generation')
    d.app_line()

    step(6, 'A wrong password written into the file is refused: nothing is '
         'published, the app keeps the value in force')
    good = d.url_in_file()
    gen = d.status()['generation']
    d.ctl('set', d.env_path, f'{TARGET}=-', '--wait',
          stdin=re.sub(r'(//app:)[^@]*@', r'\1not-the-password@', good)
          + '\n', stdin_shown=f'postgresql://app:not-the-password@'
          f'127.0.0.1:{pg.port}/postgres')
    d.app_line(f'still on generation {gen}')
    d.ctl('status')
    say('   Putting the good value back (the same as the one in force: '
        'nothing new is published):')
    d.ctl('set', d.env_path, f'{TARGET}=-', '--wait', stdin=good + '\n',
          stdin_shown=f'postgresql://app:$PASSWORD@127.0.0.1:{pg.port}'
          '/postgres')

    step(7, 'Failover: the replica as the secondary, faster checks for the '
         'demo')
    secondary = good.replace(f':{pg.port}/', f':{rep.port}/')
    d.ctl('set', d.env_path, f'{SECONDARY}=-',
          *(f'{k}={v}' for k, v in FAILOVER.items()), '--wait',
          stdin=secondary + '\n',
          stdin_shown=f'postgresql://app:$PASSWORD@127.0.0.1:{rep.port}'
          '/postgres')
    d.app_until(lambda: (t := d.status())['failover']['failover_available']
                and all(s['health'] == 'up' for s in t['servers']),
                'both servers checked')
    say('   The primary dies:')
    say(f'   $ pg_ctl -D primary/data stop -m immediate')
    t0 = time.monotonic()
    pg.stop('immediate')
    t = d.app_until(lambda: (t := d.status())['failover']['current'] ==
                    'secondary' and t['acked'] == t['subscribers'] and t,
                    'the switch to the replica')
    d.app_until(lambda: d.app.progress()['generation'] >= t['generation'],
                'the pool on the replica')
    d.app_line(f'on the replica (read-only) {time.monotonic() - t0:.1f} s '
               'after the crash')
    for line in d.agent.log().splitlines():
        if re.search(rf'{TARGET}: failover to the secondary', line):
            say('     ' + line)
    say('   The primary is back:')
    say(f'   $ pg_ctl -D primary/data start')
    pg.start()
    t0 = time.monotonic()
    t = d.app_until(lambda: (t := d.status())['failover']['current'] ==
                    'primary' and t['acked'] == t['subscribers'] and t,
                    'the failback (after DB_PRIMARY_RETRY_INTERVAL)',
                    timeout=60)
    d.app_until(lambda: d.app.progress()['generation'] >=
                t['generation'], 'the pool on the primary')
    d.app_line(f'back on the primary {time.monotonic() - t0:.1f} s after '
               'it started')
    for line in d.agent.log().splitlines():
        if re.search(rf'{TARGET}: failback to the primary', line):
            say('     ' + line)

    step(8, 'dbswapctl status')
    d.ctl('status')


if __name__ == '__main__':
    sys.exit(main())
