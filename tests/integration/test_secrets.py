"""No password ever leaks: a primary and a secondary with distinctive
passwords go through a rotation, a crash and failover, a failback, a manual
failover and failback, a wrong password, a file with a syntax error and a
bad enc:v1: value; then the agent's log, its argv and environment, the
status JSON and every dbswapctl output (but watch --show-secret) are
searched for every password used."""

import json
import os
import subprocess

import harness as h
from common import fresh_password, main
from test_failover import SECONDARY_VAR, TARGET, TwoClusters

CTL = os.environ.get('DBSWAPCTL', '')


class Secrets(TwoClusters):

    def run_ctl(self, agent, *args, input=None, expect=0, timeout=20):
        r = subprocess.run([CTL, '--socket', agent.sock, *args], input=input,
                           capture_output=True, text=True,
                           timeout=timeout * h.TIMEOUT_SCALE)
        self.assertEqual(r.returncode, expect,
                         f'dbswapctl {args}: {r.stdout!r} {r.stderr!r}')
        self.outputs.append(f'$ dbswapctl {" ".join(args)}\n'
                            f'{r.stdout}{r.stderr}')
        return r

    def current(self, agent):
        return h.target_status(agent, TARGET)['failover']['current']

    def test_no_password_leaks(self):
        self.outputs = []
        self.write_env()
        agent = self.start_agent()
        sub = h.Subscriber(agent.sock, TARGET)
        self.addCleanup(sub.close)
        sub.wait_line(r'^connect 1 ok$')
        watch = subprocess.Popen([CTL, '--socket', agent.sock, 'watch',
                                  TARGET], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        self.addCleanup(watch.kill)
        used = [self.password]
        statuses = []

        def snapshot():
            statuses.append(json.dumps(h._status(agent, 5)))
            self.run_ctl(agent, 'status')
            self.run_ctl(agent, 'status', '--json')

        # A rotation of both servers' password, with set --wait.
        new = fresh_password('rotated')
        used.append(new)
        for c in (self.primary, self.secondary):
            c.set_password(self.role, new)
        self.password = new
        r = self.run_ctl(agent, 'set', self.env_path, f'{TARGET}=-',
                         f'{SECONDARY_VAR}=-', '--wait',
                         input=f'{self.url(self.primary)}\n'
                               f'{self.url(self.secondary)}\n')
        self.assertIn('done', r.stdout)
        snapshot()

        # A crash of the primary: failover.
        self.primary.stop('immediate')
        h.wait_for(lambda: self.current(agent) == 'secondary', timeout=15,
                   what='failover to the secondary')
        snapshot()

        # The primary back, failback by hand; then a manual round trip.
        self.primary.start()
        self.run_ctl(agent, 'failback', TARGET, '--wait')
        self.assertEqual(self.current(agent), 'primary')
        self.run_ctl(agent, 'failover', TARGET, '--wait')
        self.assertEqual(self.current(agent), 'secondary')
        self.run_ctl(agent, 'failback', TARGET, '--wait')
        self.assertEqual(self.current(agent), 'primary')
        snapshot()

        # A wrong password: rejected.
        bad = fresh_password('wrong')
        used.append(bad)
        r = self.run_ctl(agent, 'set', self.env_path, f'{TARGET}=-',
                         '--wait=10', input=self.url(self.primary, bad) + '\n',
                         expect=4)
        self.assertIn('password authentication failed', r.stdout + r.stderr)
        snapshot()

        # A syntax error in a file holding yet another password.
        broken = fresh_password('broken')
        used.append(broken)
        h.write_rename(self.env_path,
                       f'{TARGET}="{self.url(self.primary, broken)}\n')
        h.wait_for(lambda: h.file_status(agent, self.env_path)['state'] ==
                   'error', what='syntax error')
        snapshot()

        # A bad enc:v1: value beside a plain password (no key held).
        beside = fresh_password('beside')
        used.append(beside)
        h.write_rename(self.env_path,
                       f'OTHER_URL={self.url(self.secondary, beside)}\n'
                       f'{TARGET}=enc:v1:{beside}AAAA\n')
        f = h.wait_for(lambda: (s := h.file_status(agent, self.env_path))
                       ['error'] and s['error'].startswith(
                           f'{self.env_path}:2:') and s,
                       what='the bad enc: value refused')
        self.assertEqual(f['state'], 'error')
        snapshot()

        # Still on the primary with the rotated password.
        t = h.target_status(agent, TARGET)
        self.assertEqual((t['failover']['current'], t['valid']),
                         ('primary', True))
        watch.terminate()
        out, _ = watch.communicate(timeout=10)
        self.outputs.append('$ dbswapctl watch\n' + out)
        self.assertRegex(out, r'generation \d+ \(manual\)')
        shown = subprocess.run([CTL, '--socket', agent.sock, 'watch', TARGET,
                                '--count', '1', '--show-secret'],
                               capture_output=True, text=True,
                               timeout=10).stdout
        self.assertIn(new, shown)  # the search would find it

        everything = '\n'.join(self.outputs + statuses) + agent.log()
        with open(f'/proc/{agent.pid}/cmdline', 'rb') as fh:
            everything += fh.read().decode('utf-8', 'replace')
        with open(f'/proc/{agent.pid}/environ', 'rb') as fh:
            everything += fh.read().decode('utf-8', 'replace')
        for secret in used:
            self.assertNotIn(secret, everything, f'{secret} leaked')
        self.assertIn('failover', everything)  # the outputs are there


if __name__ == '__main__':
    main()
