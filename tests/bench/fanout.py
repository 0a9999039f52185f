"""Fan-out: how long one update takes to reach N subscribers, N from 1 to
10,000 connections (quick mode: to 1,000).

One dbswapd with one target (no secondary: nothing monitored) and N
libdbswap clients, each subscribed to it and acking every update at once
from its callback, all in the fanout helper (tests/helpers/fanout.c): one
epoll loop per process, no thread per client.  A process holds at most as
many clients as its descriptor limit allows (four descriptors each), so
beyond that the N clients are split over several helper processes.

The trigger is the `reconnect` request (ipc/PROTOCOL.md): the agent
publishes the target's current value again as a new generation, to every
subscriber, without a validation round trip in the way (no secondary, so
no monitor connection to re-open either).  Per round:

  trigger → first / last delivered   from the moment this script sends the
      request (time.monotonic()) to the first and the last update callback
      among the N clients (the helpers' CLOCK_MONOTONIC, the same clock)
  publish → all acked    the agent's own figure, from its log line
      "generation G acked by all N subscriber(s), X ms after it was
      published"
  trigger → ok          the reply to the request, which the agent sends
      after it has queued the update to all N

Messages/s is N over the median trigger → last delivered.  One warm-up
round per N is not counted."""

import json
import math
import os
import queue
import resource
import subprocess
import threading
import time

import benchlib
import harness as h

NAME = 'fanout'
TITLE = 'Fan-out'

TARGET = 'DATABASE_URL'
# Must agree with tests/helpers/fanout.c.
FDS_PER_CLIENT = 4
FDS_SPARE = 64
CAP_SYS_RESOURCE = 24
BATCH = 200  # clients connecting at once, per helper process


def per_process():
    """Clients one fanout helper can hold: its soft descriptor limit is
    raised to the hard one (and past it, with CAP_SYS_RESOURCE)."""
    try:
        with open('/proc/self/status') as f:
            caps = next(int(line.split()[1], 16) for line in f
                        if line.startswith('CapEff:'))
        if caps >> CAP_SYS_RESOURCE & 1:
            with open('/proc/sys/fs/nr_open') as f:
                return (int(f.read()) - FDS_SPARE) // FDS_PER_CLIENT
    except (OSError, StopIteration, ValueError):
        pass
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 1 << 20
    return max(1, (hard - FDS_SPARE) // FDS_PER_CLIENT)


class Fanout:
    """n subscribers to target of the agent at sock, in as few fanout
    helper processes as the descriptor limit allows.  Their stderr goes to
    files in logdir."""

    def __init__(self, binary, sock, n, target, logdir, name='fanout'):
        per = per_process()
        shards = math.ceil(n / per)
        self.sizes = [n // shards + (1 if i < n % shards else 0)
                      for i in range(shards)]
        self.n = n
        self.procs, self.queues, self.errs = [], [], []
        self.held = [None] * len(self.sizes)  # a line read too early
        self.exits = []
        try:
            for i, size in enumerate(self.sizes):
                err = os.path.join(logdir, f'{name}-{n}-{i}.stderr')
                self.errs.append(err)
                with open(err, 'w') as ef:
                    p = subprocess.Popen(
                        [binary, '--socket', sock, '--name', name,
                         '--batch', str(BATCH), str(size), target],
                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                        stderr=ef, text=True)
                self.procs.append(p)
                q = queue.Queue()
                self.queues.append(q)
                threading.Thread(target=self._reader, args=(p, q),
                                 daemon=True).start()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _reader(proc, q):
        for line in proc.stdout:
            try:
                q.put(json.loads(line))
            except ValueError:
                pass
        q.put(None)

    def _stderr(self):
        out = []
        for path in self.errs:
            try:
                with open(path) as f:
                    out.append(h._tail(f.read(), 10))
            except OSError:
                pass
        return '\n'.join(out)

    def _next(self, i, deadline, what):
        if self.held[i] is not None:
            ev, self.held[i] = self.held[i], None
            return ev
        try:
            ev = self.queues[i].get(timeout=max(0.0, deadline -
                                                time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f'fanout: no {what} in time; stderr:\n'
                               f'{self._stderr()}') from None
        if ev is None:
            raise h.ProcessError(f'fanout exited before {what}; stderr:\n'
                                 f'{self._stderr()}')
        if ev.get('event') == 'exit':
            self.exits.append(ev)
        return ev

    def wait_ready(self, timeout=300):
        """Waits until every client had its first update; returns
        {'time': when the last process was ready, 'setup': its seconds
        from start to ready}."""
        deadline = time.monotonic() + timeout
        readies = []
        for i in range(len(self.procs)):
            while True:
                ev = self._next(i, deadline, 'ready line')
                if ev.get('event') == 'ready':
                    readies.append(ev)
                    break
        return {'time': max(r['time'] for r in readies),
                'setup': max(r['setup'] for r in readies)}

    def generation(self, generation, timeout=60):
        """The deliveries of generation, over every process: {'first',
        'last', 'clients'}."""
        deadline = time.monotonic() + timeout
        lines = []
        for i in range(len(self.procs)):
            while True:
                ev = self._next(i, deadline, f'generation {generation}')
                if ev.get('event') == 'generation' and \
                        ev['generation'] >= generation:
                    break
            if ev['generation'] == generation:
                lines.append(ev)
            else:  # this one never came to that process
                self.held[i] = ev
        if not lines:
            return {'first': None, 'last': None, 'clients': 0}
        return {'first': min(e['first'] for e in lines),
                'last': max(e['last'] for e in lines),
                'clients': sum(e['clients'] for e in lines)}

    @property
    def pids(self):
        return [p.pid for p in self.procs]

    def close(self):
        """Stops the helpers (SIGTERM); returns the log lines libdbswap
        reported in them."""
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for q in self.queues:
            while True:
                try:
                    ev = q.get(timeout=2)
                except queue.Empty:
                    break
                if ev is None:
                    break
                if ev.get('event') == 'exit':
                    self.exits.append(ev)
        return sum(e.get('log_lines', 0) for e in self.exits)


def wait_subscribers(ctrl, n, timeout=120):
    h.wait_for(lambda: h.target_status(ctrl, TARGET)['subscribers'] == n,
               timeout=timeout, interval=0.05, what=f'{n} subscribers')


def run_n(ctx, agent, ctrl, n, rounds):
    res = {'n': n, 'rounds': []}
    fo = Fanout(ctx.bin('fanout'), agent.sock, n, TARGET, ctx.tmp)
    try:
        res['processes'] = len(fo.procs)
        res['setup_s'] = fo.wait_ready()['setup']
        wait_subscribers(ctrl, n)
        for i in range(rounds + 1):
            time.sleep(0.1)
            mark = agent.mark()
            t0 = time.monotonic()
            ok = ctrl.reconnect(TARGET, timeout=60)
            t_ok = time.monotonic()
            if ok.get('type') != 'ok' or not ok.get('generation'):
                raise h.HarnessError(f'reconnect refused: {ok!r}')
            g = ok['generation']
            d = fo.generation(g)
            try:
                m = agent.wait_log(
                    rf'generation {g} acked by all (\d+) subscriber\(s\), '
                    rf'([\d.]+) ms after', timeout=60, since=mark)
                acked = float(m.group(2)) if int(m.group(1)) == n else None
            except TimeoutError:
                acked = None
            r = {'generation': g,
                 'ok_ms': (t_ok - t0) * 1000,
                 'first_ms': None if d['first'] is None
                 else (d['first'] - t0) * 1000,
                 'last_ms': None if d['last'] is None
                 else (d['last'] - t0) * 1000,
                 'delivered': d['clients'],
                 'acked_ms': acked}
            if i == 0:
                res['warmup'] = r
            else:
                res['rounds'].append(r)
    finally:
        res['client_log_lines'] = fo.close()
    # The next N starts on an agent without the last one's clients.
    wait_subscribers(ctrl, 0)
    return res


def run(ctx):
    counts = ctx.pick((1, 10, 100, 1000), (1, 10, 100, 1000, 10000))
    rounds = ctx.pick(5, 20)
    out = {'counts': list(counts), 'rounds': rounds, 'batch': BATCH,
           'per_process': per_process(), 'fds_per_client': FDS_PER_CLIENT,
           'results': []}
    with h.PgCluster() as pg:
        password = h.secrets.token_hex(12)
        pg.create_role('fanout', password)
        env = os.path.join(ctx.tmp, 'fanout.env')
        h.write_rename(env, f'{TARGET}={pg.url("fanout", password)}\n')
        with h.Agent(env_files=[env],
                     args=['--max-clients', str(max(counts) + 64)]) as agent:
            with agent.client(name='bench-fanout') as ctrl:
                h.wait_for(lambda: h.target_status(ctrl, TARGET)
                           ['generation'] >= 1, timeout=30,
                           what='the first value published')
                for n in counts:
                    ctx.log(f'{n} subscriber(s)')
                    res = run_n(ctx, agent, ctrl, n, rounds)
                    out['results'].append(res)
                    last = [r['last_ms'] for r in res['rounds']
                            if r['last_ms'] is not None]
                    ctx.log(f'{n}: ready in {res["setup_s"]:.2f} s, '
                            f'trigger → last p50 '
                            f'{benchlib.fmt_ms(benchlib.pct(last, 50))}')
    return out


def _stats(res):
    """Per N: medians and worst cases of the rounds."""
    rows = []
    for r in res['results']:
        rr = r['rounds']

        def col(key):
            return [x[key] for x in rr if x[key] is not None]
        last = col('last_ms')
        p50 = benchlib.pct(last, 50)
        rows.append({
            'n': r['n'], 'processes': r['processes'],
            'setup_s': r['setup_s'], 'rounds': len(rr),
            'complete': sum(1 for x in rr if x['delivered'] == r['n']),
            'first': benchlib.summary(col('first_ms')),
            'last': benchlib.summary(last),
            'acked': benchlib.summary(col('acked_ms')),
            'ok': benchlib.summary(col('ok_ms')),
            'rate': r['n'] / (p50 / 1000) if p50 else None,
            'log_lines': r.get('client_log_lines', 0),
        })
    return rows


def _fmt_rate(x):
    if x is None:
        return None
    if x >= 1e6:
        return f'{x / 1e6:.2f} M'
    if x >= 1e3:
        return f'{x / 1e3:.1f} k'
    return f'{x:.0f}'


def markdown(res):
    rows = _stats(res)
    f = benchlib.fmt_ms
    table = benchlib.md_table(
        ['subscribers', 'rounds (all delivered)', 'trigger → first p50',
         'trigger → last p50', 'last max', 'publish → all acked p50',
         'acked max', 'trigger → ok p50', 'messages/s', 'connect all'],
        [[f'{s["n"]:,}' + (f' ({s["processes"]} processes)'
                           if s['processes'] > 1 else ''),
          f'{s["rounds"]} ({s["complete"]})',
          f(s['first']['p50'], 2), f(s['last']['p50'], 2),
          f(s['last']['max'], 2),
          f(s['acked']['p50']), f(s['acked']['max']),
          f(s['ok']['p50'], 2), _fmt_rate(s['rate']),
          f(s['setup_s'] * 1000)] for s in rows])
    multi = [s for s in rows if s['processes'] > 1]
    notes = [
        f'One update (the `reconnect` request: the same value published '
        f'again as a new generation, no validation in the way) to N '
        f'subscribers, {res["rounds"]} rounds each after one warm-up.  '
        f'The subscribers are libdbswap clients in the fanout helper, '
        f'driven by one epoll loop per process (no thread per client), '
        f'each acking from its callback at once.',
        '',
        '- **trigger → first / last**: from the moment the request is '
        'sent to the first and the last update callback among the N '
        'clients (same monotonic clock).  It includes the helper\'s '
        'own work: one process reads and acks every update in turn, so '
        'the last delivery also waits for the helper\'s single thread '
        '(N apps in N processes would read in parallel).',
        '- **publish → all acked**: the agent\'s own figure from its log '
        '(from `target_publish` until the last ack was counted).',
        '- **trigger → ok**: the reply to the request, sent after the '
        'update has been queued to every subscriber.',
        '- **messages/s**: N / median trigger → last.  **connect all**: '
        'from the helper\'s start to every client having its first '
        f'update, connecting at most {res["batch"]} at a time per process.',
    ]
    if multi:
        notes.append(
            f'- A helper process holds at most {res["per_process"]:,} '
            f'clients ({res["fds_per_client"]} descriptors each under the '
            f'hard RLIMIT_NOFILE); '
            f'beyond that the clients are split over several processes, '
            f'and first/last are taken over all of them.')
    lines = sum(s['log_lines'] for s in rows)
    if lines:
        notes.append(f'- libdbswap logged {lines} line(s) in the helpers '
                     f'(lost or refused connections): see the raw data.')
    return table + '\n' + '\n'.join(notes) + '\n'


def plots(res, outdir):
    rows = [s for s in _stats(res) if s['last']['p50']]
    if not rows:
        return []
    out = []
    png = 'fanout-latency.png'
    benchlib.plot(
        os.path.join(outdir, png),
        'One update to N subscribers', 'subscribers (N)', 'ms',
        [{'title': 'trigger → last delivered (p50)',
          'points': [(s['n'], s['last']['p50']) for s in rows]},
         {'title': 'trigger → last delivered (max)',
          'points': [(s['n'], s['last']['max']) for s in rows]},
         {'title': 'publish → all acked (p50, agent)',
          'points': [(s['n'], s['acked']['p50']) for s in rows]}],
        logx=True, logy=True)
    out.append((png, 'Fan-out: time until the last of N subscribers has '
                'the update, and until all acked (log-log)'))
    png = 'fanout-rate.png'
    benchlib.plot(
        os.path.join(outdir, png),
        'Messages per second', 'subscribers (N)',
        'messages/s',
        [{'title': 'updates delivered/s (N / trigger → last, p50)',
          'points': [(s['n'], s['rate']) for s in rows]},
         {'title': 'acks counted/s (N / publish → all acked, p50)',
          'points': [(s['n'], s['n'] / (s['acked']['p50'] / 1000)
                      if s['acked']['p50'] else None) for s in rows]}],
        logx=True, logy=True)
    out.append((png, 'Fan-out: updates delivered and acks counted per '
                'second against N (log-log)'))
    return out


def headline(res):
    top = _stats(res)[-1]
    return [[f'fan-out: one update to {top["n"]:,} subscribers, publish → '
             f'all acked, p50', benchlib.fmt_ms(top['acked']['p50']),
             '—', '—'],
            [f'fan-out: updates delivered per second to {top["n"]:,} '
             f'subscribers', _fmt_rate(top['rate']), '—', '—']]
