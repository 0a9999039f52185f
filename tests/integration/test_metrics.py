"""The agent's metrics and health endpoints (agent/metrics.h), against a
real agent and two real PostgreSQL clusters: /metrics and /health scraped
with curl over HTTP (--metrics), and `dbswapctl metrics` over the socket.

What they must do:
  - /metrics is the Prometheus text exposition format (0.0.4), checked by
    a strict parser of our own here (every line, label escaping, family
    grouping, counter and histogram rules) and by `promtool check
    metrics` when promtool is on PATH;
  - its counters move with what happens: a rotation (publishes, the
    convergence histogram, validations), a failover
    (dbswap_server_switches_total, the server in use: one series per
    server, 0 or 1), a refused password (validations by result);
  - /health is 200 with the hotSwap-like fields when every target has a
    value and a server that neither refuses the credentials nor is down,
    503 otherwise, with the problem named;
  - `dbswapctl metrics` prints the same families, and shows a peer only
    the targets it may follow;
  - only loopback addresses are accepted (else exit 2); a port in use
    does not stop the agent: the listener is retried until it is free;
    requests are bounded (size,
    method) and a client that holds connections open does not stall the
    agent's loop; no secret is ever served.
"""

import json
import math
import os
import re
import shutil
import socket
import subprocess
import time
import unittest

import harness as h
from common import fresh_password, main
from test_failover import SHORT, TARGET, TwoClusters

NAME = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*$')
LABEL_NAME = re.compile(r'[a-zA-Z_][a-zA-Z0-9_]*')
TYPES = {'counter', 'gauge', 'histogram', 'summary', 'untyped'}


class ExpositionError(AssertionError):
    pass


def _value(s, where):
    if s in ('+Inf', 'Inf'):
        return math.inf
    if s == '-Inf':
        return -math.inf
    if s == 'NaN':
        return math.nan
    if not re.fullmatch(r'[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?', s):
        raise ExpositionError(f'{where}: not a number: {s!r}')
    return float(s)


def _labels(s, where):
    """Parses 'a="x",b="y\\"z"' strictly; returns (dict, rest of line)."""
    labels = {}
    i = 0
    while True:
        if s[i] == '}':
            return labels, s[i + 1:]
        m = LABEL_NAME.match(s, i)
        if not m:
            raise ExpositionError(f'{where}: bad label name at {s[i:]!r}')
        name = m.group(0)
        i = m.end()
        if s[i:i + 2] != '="':
            raise ExpositionError(f'{where}: expected =" after {name}')
        i += 2
        val = []
        while s[i] != '"':
            if s[i] == '\\':
                esc = s[i + 1]
                if esc not in '\\"n':
                    raise ExpositionError(f'{where}: bad escape \\{esc}')
                val.append('\n' if esc == 'n' else esc)
                i += 2
            elif s[i] == '\n':
                raise ExpositionError(f'{where}: raw newline in a label')
            else:
                val.append(s[i])
                i += 1
        i += 1
        if name in labels:
            raise ExpositionError(f'{where}: label {name} twice')
        if name.startswith('__'):
            raise ExpositionError(f'{where}: reserved label {name}')
        labels[name] = ''.join(val)
        if s[i] == ',':
            i += 1
        elif s[i] != '}':
            raise ExpositionError(f'{where}: expected , or }} at {s[i:]!r}')


def parse_exposition(text):
    """The text format, strictly: returns {family: {'type', 'help',
    'samples': [(name, labels, value)]}}; ExpositionError naming the line
    for anything the format does not allow or that we promise not to do
    (blank lines, timestamps, families split or declared twice)."""
    if not text.endswith('\n'):
        raise ExpositionError('the text does not end with a newline')
    fams = {}
    current = None
    series = set()

    def family_of(name):
        for suffix in ('_bucket', '_sum', '_count'):
            base = name[:-len(suffix)]
            if name.endswith(suffix) and fams.get(base, {}).get('type') \
                    in ('histogram', 'summary'):
                return base
        return name

    for n, line in enumerate(text.split('\n')[:-1], 1):
        where = f'line {n} {line!r}'
        if line == '':
            raise ExpositionError(f'{where}: blank line')
        if line.startswith('# HELP ') or line.startswith('# TYPE '):
            kind = line[2:6]
            name, _, rest = line[7:].partition(' ')
            if not NAME.match(name):
                raise ExpositionError(f'{where}: bad metric name')
            f = fams.setdefault(name, {'type': None, 'help': None,
                                       'samples': []})
            if f['samples'] or (current not in (None, name) and
                                (f['type'] or f['help'])):
                raise ExpositionError(f'{where}: {name} declared apart '
                                      'from its samples')
            key = kind.lower()
            if f[key] is not None:
                raise ExpositionError(f'{where}: second {kind} for {name}')
            if kind == 'TYPE' and rest not in TYPES:
                raise ExpositionError(f'{where}: unknown type {rest!r}')
            if kind == 'HELP' and re.search(r'\\[^\\n]', rest):
                raise ExpositionError(f'{where}: bad escape in HELP')
            f[key] = rest
            current = name
            continue
        if line.startswith('#'):
            continue
        m = re.match(r'([a-zA-Z_:][a-zA-Z0-9_:]*)', line)
        if not m:
            raise ExpositionError(f'{where}: bad sample')
        name = m.group(1)
        rest = line[m.end():]
        labels = {}
        if rest.startswith('{'):
            labels, rest = _labels(rest[1:], where)
        if not rest.startswith(' ') or ' ' in rest[1:]:
            raise ExpositionError(f'{where}: expected one space and a value '
                                  '(no timestamp)')
        value = _value(rest[1:], where)
        fam = family_of(name)
        if fam != current or fams[fam]['type'] is None:
            raise ExpositionError(f'{where}: sample of {fam} outside its '
                                  'family (declared with TYPE first, all '
                                  'lines together)')
        key = (name, tuple(sorted(labels.items())))
        if key in series:
            raise ExpositionError(f'{where}: series twice')
        series.add(key)
        fams[fam]['samples'].append((name, labels, value))
    for name, f in fams.items():
        if f['type'] is None or f['help'] is None:
            raise ExpositionError(f'{name}: no TYPE or no HELP')
        if f['type'] == 'counter':
            if not name.endswith('_total'):
                raise ExpositionError(f'{name}: a counter not named _total')
            for s in f['samples']:
                if s[2] < 0 or s[0] != name:
                    raise ExpositionError(f'{name}: bad counter sample {s}')
        if f['type'] == 'histogram':
            _check_histogram(name, f['samples'])
    return fams


def _check_histogram(name, samples):
    groups = {}
    for s, labels, v in samples:
        rest = tuple(sorted((k, x) for k, x in labels.items() if k != 'le'))
        g = groups.setdefault(rest, {'buckets': [], 'sum': None,
                                     'count': None})
        if s == name + '_bucket':
            if 'le' not in labels:
                raise ExpositionError(f'{name}: bucket without le')
            g['buckets'].append((_value(labels['le'], name), v))
        elif s == name + '_sum':
            g['sum'] = v
        elif s == name + '_count':
            g['count'] = v
        else:
            raise ExpositionError(f'{name}: stray sample {s}')
    for rest, g in groups.items():
        les = [le for le, _ in g['buckets']]
        counts = [c for _, c in g['buckets']]
        if les != sorted(les) or not les or les[-1] != math.inf:
            raise ExpositionError(f'{name}{rest}: buckets not ending in '
                                  f'+Inf, in order: {les}')
        if counts != sorted(counts):
            raise ExpositionError(f'{name}{rest}: buckets not cumulative')
        if g['count'] != counts[-1] or g['sum'] is None:
            raise ExpositionError(f'{name}{rest}: _count {g["count"]} is '
                                  f'not the +Inf bucket {counts[-1]}, or '
                                  'no _sum')


def value(fams, family, sample=None, **labels):
    """The value of the one sample of family (sample: its name, for a
    histogram's parts) whose labels include labels; 0 when there is none
    (a counter not yet counted)."""
    found = [v for s, lab, v in fams[family]['samples']
             if s == (sample or family) and
             all(lab.get(k) == x for k, x in labels.items())]
    if len(found) > 1:
        raise AssertionError(f'{family} {labels}: {len(found)} samples')
    return found[0] if found else 0


class ParserSelfTest(unittest.TestCase):
    """The parser refuses what the format refuses: else the checks below
    could not fail."""

    GOOD = ('# HELP a_total A.\n# TYPE a_total counter\n'
            'a_total{x="q\\"\\\\\\n"} 1\n')

    def test_good(self):
        fams = parse_exposition(self.GOOD)
        self.assertEqual(fams['a_total']['samples'][0][1]['x'], 'q"\\\n')

    def test_bad(self):
        bad = [
            self.GOOD.replace('a_total{', 'a_total {'),
            self.GOOD.replace(' 1\n', ' 1 123\n'),        # timestamp
            self.GOOD.replace('counter', 'countr'),
            self.GOOD.replace('\\"', '\\t'),              # bad escape
            self.GOOD.replace('a_total', 'a', 3),         # counter name
            self.GOOD + 'a_total{x="y"} 2\n# HELP b B.\n# TYPE b gauge\n'
            'b 1\na_total{x="z"} 1\n',                    # split family
            self.GOOD + '\n',
            self.GOOD + self.GOOD,                        # declared twice
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 2\n'
            'h_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n',
            '# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} 1\n'
            'h_sum 1\nh_count 1\n',                       # no +Inf
            self.GOOD.rstrip('\n'),
        ]
        for text in bad:
            with self.subTest(text=text):
                with self.assertRaises((ExpositionError, IndexError)):
                    parse_exposition(text)


def curl(url, *args):
    """(status, headers text, body) of curl's request."""
    r = subprocess.run(['curl', '-sS', '--max-time', '10', '-D', '-',
                        *args, url], capture_output=True, timeout=20)
    if r.returncode != 0:
        raise AssertionError(f'curl {url}: exit {r.returncode}: '
                             f'{r.stderr.decode()}')
    head, _, body = r.stdout.partition(b'\r\n\r\n')
    status = int(head.split()[1])
    return status, head.decode(), body.decode()


@unittest.skipUnless(shutil.which('curl'), 'curl is not installed')
class Metrics(TwoClusters):

    def start_metrics_agent(self, *args):
        self.port = h._free_port()
        agent = h.Agent(env_files=[self.env_path],
                        args=['--metrics', f'127.0.0.1:{self.port}', *args])
        self.addCleanup(agent.close)
        self.agent = agent
        return agent

    def start_subscriber(self, agent):
        sub = h.Subscriber(agent.sock, TARGET)
        self.addCleanup(sub.close)
        return sub

    def scrape(self, check=True):
        status, head, body = curl(f'http://127.0.0.1:{self.port}/metrics')
        self.assertEqual(status, 200)
        self.assertIn('text/plain; version=0.0.4', head)
        fams = parse_exposition(body)
        if check:
            self.check_names(fams)
            self.promtool(body)
        return fams, body

    def check_names(self, fams):
        for name, f in fams.items():
            self.assertTrue(name.startswith('dbswap_'), name)
            if f['type'] == 'histogram':
                self.assertTrue(name.endswith('_seconds'), name)

    def promtool(self, body):
        tool = shutil.which('promtool')
        if not tool:
            return
        r = subprocess.run([tool, 'check', 'metrics'], input=body,
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, f'promtool: {r.stdout}{r.stderr}')

    def health(self):
        status, head, body = curl(f'http://127.0.0.1:{self.port}/health')
        self.assertIn('application/json', head)
        return status, json.loads(body)

    def assert_no_secret(self, *texts):
        for text in texts:
            for secret in (self.password, 'postgresql://', self.role):
                self.assertNotIn(secret, text)

    def test_rotation_and_failover_move_the_counters(self):
        self.write_env()
        agent = self.start_metrics_agent()
        sub = self.start_subscriber(agent)
        self.wait_ready(agent, 1)
        fams, body = self.scrape()
        self.assert_no_secret(body)
        self.assertEqual(value(fams, 'dbswap_target_generation',
                               target=TARGET), 1)
        self.assertEqual(value(fams, 'dbswap_target_available',
                               target=TARGET), 1)
        self.assertEqual(value(fams, 'dbswap_target_server', target=TARGET,
                               server='primary'), 1)
        self.assertEqual(value(fams, 'dbswap_target_subscribers',
                               target=TARGET), 1)
        self.assertEqual(value(fams, 'dbswap_target_lagging_subscribers',
                               target=TARGET), 0)
        self.assertEqual(value(fams, 'dbswap_server_up', target=TARGET,
                               server='secondary'), 1)
        self.assertGreaterEqual(value(fams, 'dbswap_validations_total',
                                      target=TARGET, server='primary',
                                      result='ok'), 1)
        self.assertGreaterEqual(value(fams, 'dbswap_clients'), 1)
        self.assertGreater(value(fams, 'dbswap_health_check_seconds',
                                 'dbswap_health_check_seconds_count',
                                 target=TARGET, server='primary'), 0)
        converged = value(fams, 'dbswap_convergence_seconds',
                          'dbswap_convergence_seconds_count', target=TARGET)
        status, doc = self.health()
        self.assertEqual(status, 200)
        t = doc['targets'][TARGET]
        self.assertEqual((doc['status'], t['healthy'], t['currentDatabase'],
                          t['failoverAvailable'], t['lastFailover'],
                          t['timeSinceFailover']),
                         ('ok', True, 'primary', True, None, None))
        self.assertEqual(t['failureCount'], 0)

        # A rotation: a new generation, acked by the subscriber.
        new = fresh_password()
        for c in (self.primary, self.secondary):
            c.set_password(self.role, new)
        self.password = new
        self.write_env()
        self.wait_status(agent, lambda t: t['generation'] == 2 and
                         t['acked'] == 1, timeout=15, what='generation 2 '
                         'acked')
        fams, body = self.scrape()
        self.assert_no_secret(body)
        self.assertEqual(value(fams, 'dbswap_target_generation',
                               target=TARGET), 2)
        self.assertEqual(value(fams, 'dbswap_target_converged_generation',
                               target=TARGET), 2)
        self.assertEqual(value(fams, 'dbswap_publishes_total',
                               target=TARGET, reason='rotation'), 2)
        self.assertEqual(value(fams, 'dbswap_convergence_seconds',
                               'dbswap_convergence_seconds_count',
                               target=TARGET), converged + 1)
        self.assertEqual(value(fams, 'dbswap_events_total', target=TARGET,
                               event='rotation-complete'), converged + 1)
        # Publishes on the primary: no failover counted (the first
        # publish picks a server, it does not change one).
        self.assertEqual(fams['dbswap_server_switches_total']['samples'], [])

        # A manual failover: the server in use and the failover counter.
        self.ctl(agent, 'failover', TARGET, '--wait=15')
        fams, body = self.scrape()
        self.assertEqual(value(fams, 'dbswap_server_switches_total',
                               target=TARGET, reason='manual',
                               to='secondary'), 1)
        self.assertEqual(value(fams, 'dbswap_target_server', target=TARGET,
                               server='secondary'), 1)
        self.assertEqual(value(fams, 'dbswap_target_server', target=TARGET,
                               server='primary'), 0)
        # One series per server, always: the old one reads 0, it does not
        # vanish.
        self.assertEqual(sorted((lab['server'], v) for _, lab, v in
                                fams['dbswap_target_server']['samples']),
                         [('none', 0), ('primary', 0), ('secondary', 1)])
        self.assertEqual(value(fams, 'dbswap_events_total', target=TARGET,
                               event='failover'), 1)
        status, doc = self.health()
        t = doc['targets'][TARGET]
        self.assertEqual((status, t['currentDatabase'], t['failovers']),
                         (200, 'secondary', 1))
        self.assertRegex(t['lastFailover'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:'
                         r'\d\dZ$')
        self.assertLess(abs(t['lastFailoverEpoch'] - time.time()), 60)
        self.assertGreaterEqual(t['timeSinceFailover'], 0)

        # The subscriber leaving is counted as closed, not dropped.
        sub.close()
        h.wait_for(lambda: value(self.scrape(False)[0],
                                 'dbswap_client_disconnects_total',
                                 reason='closed') >= 1,
                   what='the subscriber counted as gone')

    def test_refused_password_is_503_and_counted(self):
        self.write_env(primary_url=self.url(self.primary, 'wrong-' +
                                            self.password), secondary=False)
        agent = self.start_metrics_agent()
        self.wait_status(agent, lambda t: t['state'] == 'failed',
                         timeout=15, what='the first validation to fail')
        status, doc = self.health()
        self.assertEqual(status, 503)
        self.assertEqual((doc['status'], doc['targets'][TARGET]['healthy'],
                          doc['targets'][TARGET]['currentDatabase']),
                         ('unavailable', False, 'none'))
        fams, body = self.scrape()
        self.assert_no_secret(body)
        self.assertGreaterEqual(value(fams, 'dbswap_validations_total',
                                      target=TARGET, server='primary',
                                      result='rejected'), 1)
        self.assertEqual(value(fams, 'dbswap_validations_total',
                               target=TARGET, server='primary',
                               result='ok'), 0)
        self.assertEqual(value(fams, 'dbswap_target_available',
                               target=TARGET), 0)
        # Fixed: 200 again.
        self.write_env(secondary=False)
        h.wait_for(lambda: self.health()[0] == 200, timeout=15,
                   what='/health 200 after the password is fixed')

    def test_dbswapctl_metrics(self):
        """The socket shows a peer what status shows it in full: the
        targets it may follow.  An admin who may not follow a target
        (status: its brief form) gets no series of it either."""
        user = h.LocalUser()
        self.addCleanup(user.close)
        admin = h.LocalUser()
        self.addCleanup(admin.close)
        self.write_env()
        agent = self.start_metrics_agent('--socket-mode', '0666',
                                         '--admin', f'uid:{admin.uid}')
        os.chmod(agent.dir, 0o711)
        self.wait_ready(agent, 0)
        r = self.ctl(agent, 'metrics')
        fams = parse_exposition(r.stdout)
        self.check_names(fams)
        self.promtool(r.stdout)
        http, _ = self.scrape()
        self.assertEqual(sorted(fams), sorted(http))
        self.assertEqual(value(fams, 'dbswap_target_generation',
                               target=TARGET), 1)
        self.assert_no_secret(r.stdout)
        # A local user who may not follow the target, and an admin who
        # may not: the families, no series naming it.
        for who in (user, admin):
            ctl = [os.environ['DBSWAPCTL'], '--socket', agent.sock]
            st = who.run(ctl + ['status', '--json'])
            self.assertEqual(st.returncode, 0, st.stderr)
            t = [t for t in json.loads(st.stdout)['targets']
                 if t['name'] == TARGET][0]
            self.assertTrue(t['redacted'], t)
            r = who.run(ctl + ['metrics'])
            self.assertEqual(r.returncode, 0, r.stderr)
            fams = parse_exposition(r.stdout)
            self.assertEqual(sorted(fams), sorted(http))
            self.assertNotIn(TARGET, r.stdout, who.name)
            self.assertEqual(r.stdout.count('target='), 0, who.name)

    def test_loopback_only(self):
        for addr in ('0.0.0.0:9187', '10.1.2.3:9187', '[::]:9187',
                     '127.0.0.1', '127.0.0.1:0', '127.0.0.1:99999',
                     'example.com:80'):
            with self.subTest(addr=addr):
                r = subprocess.run([os.environ['DBSWAPD'], '--metrics', addr],
                                   capture_output=True, text=True, timeout=10)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn('--metrics', r.stderr)

    def test_port_in_use(self):
        """A --metrics port in use does not stop the agent (under
        Restart=on-failure that would be the start-limit trap): the error
        logged, the socket served, dbswap_metrics_listener_up 0 over it,
        and the endpoint listening once the port is free (retried with
        backoff from 1 s)."""
        self.write_env(secondary=False)
        held = socket.socket()
        self.addCleanup(held.close)
        held.bind(('127.0.0.1', 0))
        held.listen()
        self.port = held.getsockname()[1]
        agent = h.Agent(env_files=[self.env_path],
                        args=['--metrics', f'127.0.0.1:{self.port}'])
        self.addCleanup(agent.close)
        self.wait_status(agent, lambda t: t['generation'] == 1, timeout=15,
                         what='generation 1 with the port in use')
        h.wait_for(lambda: 'cannot listen: Address already in use' in
                   agent.log(), what='the bind error logged')
        self.assertRegex(agent.log(), rf'--metrics 127.0.0.1:{self.port}: '
                         r'cannot listen: Address already in use')
        fams = parse_exposition(self.ctl(agent, 'metrics').stdout)
        self.assertEqual(value(fams, 'dbswap_metrics_listener_up'), 0)
        self.assertEqual(value(fams, 'dbswap_target_generation',
                               target=TARGET), 1)
        # Held past a retry or two, then freed.
        time.sleep(2)
        self.assertTrue(agent.running)
        held.close()

        def up():
            try:
                return curl(f'http://127.0.0.1:{self.port}/health')[0] == 200
            except AssertionError:
                return False
        h.wait_for(up, timeout=10 * h.TIMEOUT_SCALE,
                   what='the endpoint up once the port is free')
        fams, _ = self.scrape()
        self.assertEqual(value(fams, 'dbswap_metrics_listener_up'), 1)
        self.assertIn('metrics: serving /metrics and /health', agent.log())
        self.assertTrue(agent.running)

    def test_rejected_on_the_server_in_use_is_503(self):
        """The server in use refuses the published credentials (the
        password changed behind the agent's back): the health monitor
        says rejected, the agent keeps the server (a rejection is not a
        failure), and /health says 503 with the reason;
        dbswap_target_available reads 0.  The password back and a
        reconnect: 200 again."""
        self.write_env(settings=SHORT)
        agent = self.start_metrics_agent()
        self.wait_ready(agent, 0)
        h.wait_for(lambda: self.health()[0] == 200, timeout=15,
                   what='/health 200')
        self.addCleanup(self.primary.set_password, self.role, self.password)
        self.primary.set_password(self.role, fresh_password())
        self.primary.terminate_sessions(self.role)
        h.wait_for(lambda: self.health()[0] == 503, timeout=15,
                   what='/health 503 with the primary refusing the '
                   'credentials')
        status, doc = self.health()
        t = doc['targets'][TARGET]
        self.assertEqual((status, doc['status'], t['healthy'], t['problem'],
                          t['currentDatabase']),
                         (503, 'unavailable', False,
                          'credentials rejected by the primary', 'primary'))
        fams, body = self.scrape()
        self.assert_no_secret(body, json.dumps(doc))
        self.assertEqual(value(fams, 'dbswap_target_available',
                               target=TARGET), 0)
        self.assertEqual(value(fams, 'dbswap_server_up', target=TARGET,
                               server='primary'), 0)
        self.primary.set_password(self.role, self.password)
        self.ctl(agent, 'reconnect', TARGET)
        h.wait_for(lambda: self.health()[0] == 200, timeout=15,
                   what='/health 200 with the password back')

    def test_requests_are_bounded_and_the_loop_never_waits(self):
        self.write_env(secondary=False)
        agent = self.start_metrics_agent()
        self.wait_status(agent, lambda t: t['generation'] == 1, timeout=15,
                         what='generation 1')
        base = f'http://127.0.0.1:{self.port}'
        self.assertEqual(curl(base + '/nope')[0], 404)
        self.assertEqual(curl(base + '/metrics', '-X', 'POST', '-d', 'x')[0],
                         405)
        # A request line and headers past the limit: refused, not read.
        status, _, _ = curl(base + '/metrics', '-H',
                            'X-Big: ' + 'a' * 20000)
        self.assertIn(status, (413, 414, 431))
        # Clients that connect and send half a request, more than the
        # connection limit: the agent's socket and the endpoint answer
        # all the same (the extra ones wait in the backlog or are closed).
        held = []
        try:
            for _ in range(12):
                s = socket.create_connection(('127.0.0.1', self.port),
                                             timeout=5)
                s.sendall(b'GET /metrics HTTP/1.1\r\nHost: x\r\n')
                held.append(s)
            t0 = time.monotonic()
            h.target_status(agent, TARGET)
            self.assertLess(time.monotonic() - t0, 1.0)
            for s in held[:6]:
                s.close()
            del held[:6]
            status, _, body = curl(base + '/health')
            self.assertEqual(status, 200)
        finally:
            for s in held:
                s.close()
        self.assertTrue(agent.running)


if __name__ == '__main__':
    main()
