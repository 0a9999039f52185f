"""Event hooks (--on-event, agent/events.h) against a real agent and two
real PostgreSQL clusters.  A hook script of ours records each run (its
argv, its whole environment, where its stdin and stdout go, its process
group) in a file; the tests read those records.

What the agent must do:
  - run the hook on failover, failback, rotation-complete, rejected,
    gave-up, unavailable and split-brain (a refused manual failover), with DBSWAP_EVENT, DBSWAP_TARGET,
    DBSWAP_GENERATION, DBSWAP_SERVER, DBSWAP_REASON and DBSWAP_TIME right,
    and nothing else in the environment but PATH: no value, no password,
    no role name, none of the agent's own environment;
  - no shell: argv is [CMD, EVENT]; stdin /dev/null; stdout and stderr
    the agent's stderr;
  - at most 4 hooks at once, the rest queued (32) and then dropped with a
    log line; a hook over its time gets SIGTERM, then SIGKILL 2 s later,
    its whole process group; every event ends counted as ok, failed,
    killed, spawn-failed or dropped (dbswap_event_hooks_total);
  - a hook that hangs never stalls the agent: status answers at once
    while four of them run.
"""

import glob
import http.server
import json
import os
import shutil
import subprocess
import threading
import tempfile
import textwrap
import time
import unittest

import harness as h
from common import fresh_password, main
from test_failover import SHORT, TARGET, TwoClusters
import test_metrics

ENV_KEYS = {'PATH', 'DBSWAP_EVENT', 'DBSWAP_TARGET', 'DBSWAP_GENERATION',
            'DBSWAP_SERVER', 'DBSWAP_REASON', 'DBSWAP_TIME'}
RUNNING_MAX = 4      # EVENTS_RUNNING_MAX
KILL_GRACE_S = 2.0   # EVENTS_KILL_GRACE_MS

HOOK = '''\
#!/usr/bin/python3
# Records this run, then does what the mode file says: "" return at once,
# "sleep" wait on a child (sleep 300) ignoring SIGTERM.
import json, os, signal, subprocess, sys, time
d = {dir!r}
try:
    mode = open(os.path.join(d, 'mode')).read().strip()
except FileNotFoundError:
    mode = ''
# What execve passed (os.environ has Python's own LC_CTYPE, PEP 538).
env = dict(kv.split('=', 1) for kv in
           open('/proc/self/environ').read().split('\\0') if kv)
rec = {{'argv': sys.argv, 'env': env, 'pid': os.getpid(),
        'pgid': os.getpgid(0), 'start': time.time(),
        'stdin': os.readlink('/proc/self/fd/0'),
        'stdout': os.readlink('/proc/self/fd/1'), 'mode': mode}}
child = None
if mode == 'sleep':
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen(['sleep', '300'])
    rec['child'] = child.pid
tmp = os.path.join(d, '.%d' % os.getpid())
with open(tmp, 'w') as f:
    json.dump(rec, f)
os.rename(tmp, os.path.join(d, '%d-%d.json' % (time.time_ns(), os.getpid())))
print('hook %d says hello' % os.getpid(), flush=True)
if child:
    child.wait()
'''


def alive(pid):
    """Running (not a zombie)."""
    try:
        with open(f'/proc/{pid}/stat') as f:
            return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
    except FileNotFoundError:
        return False


class Events(TwoClusters):

    def setUp(self):
        super().setUp()
        self.rec_dir = tempfile.mkdtemp(prefix='dbswap-events-')
        self.addCleanup(subprocess.run, ['rm', '-rf', self.rec_dir])
        self.hook = os.path.join(self.rec_dir, 'hook')
        with open(self.hook, 'w') as f:
            f.write(HOOK.format(dir=self.rec_dir))
        os.chmod(self.hook, 0o755)
        self.addCleanup(self.kill_hooks)

    def kill_hooks(self):
        for r in self.records():
            for pid in (r['pid'], r.get('child')):
                if pid and alive(pid):
                    os.kill(pid, 9)

    def mode(self, m):
        with open(os.path.join(self.rec_dir, 'mode'), 'w') as f:
            f.write(m)

    def start_hook_agent(self, *args, targets=()):
        agent = h.Agent(env_files=[self.env_path], targets=targets,
                        args=['--on-event', self.hook, *args])
        self.addCleanup(agent.close)
        self.agent = agent
        return agent

    def records(self):
        out = []
        for p in sorted(glob.glob(os.path.join(self.rec_dir, '*.json'))):
            with open(p) as f:
                out.append(json.load(f))
        return out

    def events(self, name=None):
        return [r for r in self.records()
                if name is None or r['env']['DBSWAP_EVENT'] == name]

    def wait_event(self, name, pred=lambda e: True, timeout=15):
        return h.wait_for(
            lambda: next((r for r in self.events(name) if pred(r['env'])),
                         None),
            timeout=timeout * h.TIMEOUT_SCALE,
            what=f'a {name} event; got '
            f'{[r["env"].get("DBSWAP_EVENT") for r in self.records()]}')

    def check_clean(self, secrets):
        """Every run: only our variables, no secret, no shell."""
        recs = self.records()
        self.assertTrue(recs)
        for r in recs:
            env = r['env']
            self.assertEqual(set(env), ENV_KEYS, env)
            self.assertEqual(r['argv'], [self.hook, env['DBSWAP_EVENT']])
            self.assertEqual(r['stdin'], '/dev/null')
            self.assertEqual(r['stdout'], self.agent.stderr_path)
            self.assertEqual(r['pgid'], r['pid'])
            self.assertRegex(env['DBSWAP_TIME'],
                             r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$')
            self.assertIn(env['DBSWAP_SERVER'],
                          ('primary', 'secondary', 'none'))
            for s in secrets:
                self.assertNotIn(s, json.dumps(r))

    def metrics(self, agent):
        r = self.ctl(agent, 'metrics')
        return test_metrics.parse_exposition(r.stdout)

    def test_failover_failback_rotation(self):
        self.write_env()
        agent = self.start_hook_agent()
        sub = h.Subscriber(agent.sock, TARGET)
        self.addCleanup(sub.close)
        self.wait_ready(agent, 1)
        first = self.wait_event('rotation-complete')['env']
        self.assertEqual((first['DBSWAP_TARGET'], first['DBSWAP_GENERATION'],
                          first['DBSWAP_SERVER'], first['DBSWAP_REASON']),
                         (TARGET, '1', 'primary', 'rotation'))
        old = self.password
        new = fresh_password()
        for c in (self.primary, self.secondary):
            c.set_password(self.role, new)
        self.password = new
        self.write_env()
        self.wait_event('rotation-complete',
                        lambda e: e['DBSWAP_GENERATION'] == '2')

        self.ctl(agent, 'failover', TARGET, '--wait=15')
        e = self.wait_event('failover')['env']
        self.assertEqual((e['DBSWAP_TARGET'], e['DBSWAP_GENERATION'],
                          e['DBSWAP_SERVER'], e['DBSWAP_REASON']),
                         (TARGET, '3', 'secondary', 'manual'))
        self.ctl(agent, 'failback', TARGET, '--wait=15')
        e = self.wait_event('failback')['env']
        self.assertEqual((e['DBSWAP_GENERATION'], e['DBSWAP_SERVER'],
                          e['DBSWAP_REASON']), ('4', 'primary', 'manual'))
        self.wait_event('rotation-complete',
                        lambda e: e['DBSWAP_GENERATION'] == '4' and
                        e['DBSWAP_REASON'] == 'manual')
        self.check_clean([old, new, self.role, 'postgresql:'])
        # The hooks' stdout is the agent's log.
        h.wait_for(lambda: 'says hello' in agent.log(),
                   what="the hook's output in the agent's log")
        fams = self.metrics(agent)
        self.assertEqual(test_metrics.value(fams, 'dbswap_events_total', target=TARGET,
                               event='failover'), 1)
        h.wait_for(lambda: test_metrics.value(self.metrics(agent),
                                 'dbswap_event_hooks_total', result='ok') ==
                   len(self.records()), what='every hook counted as ok')

    def test_rejected_then_gave_up(self):
        wrong = 'wrong-' + self.password
        self.write_env(primary_url=self.url(self.primary, wrong),
                       secondary=False)
        agent = self.start_hook_agent()
        e = self.wait_event('rejected')['env']
        self.assertEqual((e['DBSWAP_TARGET'], e['DBSWAP_GENERATION'],
                          e['DBSWAP_SERVER'], e['DBSWAP_REASON']),
                         (TARGET, '0', 'primary', 'authentication'))
        e = self.wait_event('gave-up', timeout=30)['env']
        self.assertEqual((e['DBSWAP_SERVER'], e['DBSWAP_REASON']),
                         ('primary', 'authentication'))
        # One per failed attempt but the last, which gave up.
        self.assertEqual(len(self.events('rejected')), 5)
        self.check_clean([wrong, self.password, self.role, 'postgresql:'])

    def test_unavailable(self):
        self.write_env(settings=SHORT)
        agent = self.start_hook_agent()
        self.wait_ready(agent, 0)
        self.primary.stop()
        self.secondary.stop()
        e = self.wait_event('unavailable', timeout=20)['env']
        self.assertEqual((e['DBSWAP_TARGET'], e['DBSWAP_SERVER'],
                          e['DBSWAP_REASON']), (TARGET, 'none', 'unavailable'))
        self.check_clean([self.password, self.role, 'postgresql:'])

    def test_bounded_timed_and_never_stalls(self):
        # Eight targets whose password the server refuses: eight rejected
        # events at once, then more at each retry, then eight gave-up.
        wrong = 'wrong-' + self.password
        names = [f'T{i}_URL' for i in range(8)]
        h.write_rename(self.env_path, ''.join(
            f'{n}={self.url(self.primary, wrong)}\n' for n in names))
        self.mode('sleep')
        t0 = time.monotonic()
        agent = self.start_hook_agent('--on-event-timeout', '1',
                                      targets=names)
        most = 0
        status_s = []
        seen_full = False
        while time.monotonic() - t0 < 2.5:
            live = [r for r in self.records() if alive(r['pid'])]
            most = max(most, len(live))
            if len(live) == RUNNING_MAX:
                seen_full = True
                t = time.monotonic()
                h.target_status(agent, names[0])
                status_s.append(time.monotonic() - t)
            time.sleep(0.02)
        self.assertTrue(seen_full, 'never saw 4 hooks running')
        self.assertLessEqual(most, RUNNING_MAX)
        # The loop answers while the hooks hang.
        self.assertLess(max(status_s), 1.0, status_s)
        self.mode('')
        first = [r for r in self.records() if r['mode'] == 'sleep']
        self.assertEqual(len(first), RUNNING_MAX)
        # Over their time (1 s): SIGTERM, ignored, then SIGKILL 2 s later,
        # the child sleep with them (the process group).
        for r in first:
            h.wait_for(lambda: not alive(r['pid']) and
                       not alive(r['child']), timeout=5,
                       what=f'hook {r["pid"]} and its child killed')
            # The hook notes its start after Python's own (up to a few
            # hundred ms on a busy machine), which the agent's clock
            # counts: SIGTERM alone (ignored) would have ended it at 1 s.
            gone = time.time() - r['start']
            self.assertGreaterEqual(gone, 1 + KILL_GRACE_S - 0.6)
        # Everything drains; every event ends counted once.
        def settled():
            fams = self.metrics(agent)
            events = sum(v for _, _, v in
                         fams['dbswap_events_total']['samples'])
            hooks = {lab['result']: v for _, lab, v in
                     fams['dbswap_event_hooks_total']['samples']}
            gave_up = sum(1 for n in names if test_metrics.value(
                fams, 'dbswap_events_total', target=n, event='gave-up'))
            running = [r for r in self.records() if alive(r['pid'])]
            if gave_up == len(names) and not running and \
                    sum(hooks.values()) == events:
                return hooks
            return None
        hooks = h.wait_for(settled, timeout=30, interval=0.2,
                           what='every event counted as a hook result')
        self.assertEqual(hooks.get('killed'), RUNNING_MAX, hooks)
        self.assertGreaterEqual(hooks.get('dropped', 0), 1, hooks)
        self.assertGreaterEqual(hooks.get('ok', 0), 1, hooks)
        self.assertRegex(agent.log(), r'event hooks: .* dropped')
        self.assertRegex(agent.log(), r'killed after \d+ ms')
        self.check_clean([wrong, self.role, 'postgresql:'])


    def test_split_brain_refusal(self):
        """Both servers writable and the pair unknown (the role may not
        read the identity, as in test_failover_safety): a manual failover
        is refused, and that is an event."""
        fns = ('pg_control_system()', 'pg_control_checkpoint()')

        def grant(c):
            c.resume()
            if not c.running:
                c.start()
            for f in fns:
                c.durable_sql(f'GRANT EXECUTE ON FUNCTION {f} TO PUBLIC')
        for c in (self.primary, self.secondary):
            self.addCleanup(grant, c)
            for f in fns:
                c.durable_sql(f'REVOKE EXECUTE ON FUNCTION {f} FROM PUBLIC')
        self.write_env()
        agent = self.start_hook_agent()
        t = self.wait_ready(agent, 0)
        self.assertEqual(t['failover']['pair'], 'unknown')
        r = self.ctl(agent, 'failover', TARGET, check=False)
        self.assertNotEqual(r.returncode, 0, r.stdout)
        e = self.wait_event('split-brain')['env']
        self.assertEqual((e['DBSWAP_TARGET'], e['DBSWAP_SERVER'],
                          e['DBSWAP_REASON'], e['DBSWAP_GENERATION']),
                         (TARGET, 'primary', 'manual', '1'))
        self.check_clean([self.password, self.role, 'postgresql:'])

    @unittest.skipUnless(shutil.which('curl'), 'curl is not installed')
    def test_webhook_example(self):
        """packaging/examples/on-event-webhook.sh as the hook, posting to
        a local HTTP server: a failover arrives as JSON."""
        posts = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers['Content-Length'])
                posts.append((self.path, self.headers['Content-Type'],
                              json.loads(self.rfile.read(n))))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *a):
                pass

        srv = http.server.HTTPServer(('127.0.0.1', 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        self.addCleanup(srv.server_close)
        self.addCleanup(srv.shutdown)
        conf = os.path.join(self.rec_dir, 'webhook.curl')
        with open(conf, 'w') as f:
            f.write(f'url = "http://127.0.0.1:{srv.server_port}/hooks/x"\n')
        src = os.path.join(os.path.dirname(__file__), '..', '..',
                           'packaging', 'examples', 'on-event-webhook.sh')
        with open(src) as f:
            text = f.read()
        self.assertIn('CONF=/etc/dbswap/webhook.curl\n', text)
        with open(self.hook, 'w') as f:
            f.write(text.replace('CONF=/etc/dbswap/webhook.curl\n',
                                 f'CONF={conf}\n'))
        self.write_env()
        agent = self.start_hook_agent()
        self.wait_ready(agent, 0)
        self.ctl(agent, 'failover', TARGET, '--wait=15')
        h.wait_for(lambda: posts, what='the webhook post')
        path, ctype, body = posts[0]
        self.assertEqual((path, ctype), ('/hooks/x', 'application/json'))
        self.assertRegex(body['text'], r'^dbswap on \S+: DATABASE_URL failed '
                         r'over to the secondary \(manual\) \[generation 2, '
                         r'\d{4}-\d\d-\d\dT')
        self.assertEqual(body['content'], body['text'])


if __name__ == '__main__':
    main()
