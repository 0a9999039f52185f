"""The Node.js pool: createPool() (client-lib/node) against a plain
pg.Pool on the same server, and one password rotation under load through
it beside the libdbswap pool (section 'node' of tests/bench/run.py).

Throughput: two node-bench processes (tests/bench/node-bench.js, read
its header), one with a pg.Pool on the role's connection string, one
with a createPool() following the agent, both max = MAX with MAX
connections open, kept running and taking turns at what this script asks
(a process each, so that each pool's code runs as in an app: the only
kind of pool there): connect() + release() with no query, then
LOOPS_LIST concurrent async loops of `await pool.query('SELECT 1')` in
many short rounds (the order rotated every round), so that the noise of a
shared machine weighs on both alike; the ratio is reported as the median
of the rounds' ratios, with the spread, and as the ratio of the sums.
Then the same with two more processes whose pools' pg Client is a fake
that needs no server: the pools' own CPU time per query.

Rotation: for each kind (the Node pool through load.js, the C pool
through pool-load: the same load, LOAD_ARGS), a role, an env file and an
agent of its own; the load runs, then ROTATIONS times: ALTER ROLE on a
persistent superuser psql session (its clock_timestamp() just after is
the line between old- and new-password logins), the new env file renamed
in (the clock starts at the rename), then, every POLL_S, the agent's
status (the pool's ack of the new value) and pg_stat_activity (the role's
client backends that started before the ALTER ROLE: logged in with the
old password), until the ack came and no old-password backend is left."""

import json
import os
import select
import shlex
import statistics
import subprocess
import tempfile
import time

import benchlib
import harness as h
from common import NODE_LOAD, NodeLoad, PoolLoad, node_binary
from peers import OldConnections, steady_rate

NAME = 'node'
TITLE = 'Node.js pool'

TARGET = 'DATABASE_URL'
HERE = os.path.dirname(os.path.abspath(__file__))
NODE_BENCH = os.path.join(HERE, 'node-bench.js')
NODE_PKG = os.path.join(HERE, '..', '..', 'client-lib', 'node')
# The goal for SELECT 1 through createPool() against pg.Pool (issue 14),
# the same as the C pool's against raw PGconns.
TARGET_RATIO = 0.97
LOOPS_LIST = [1, 8]
MAX = 8
# The rotation's load: as the 'queries' section's, so that the C pool's
# figures compare.
THREADS = 8
PAUSE_MS = 1
PROGRESS_MS = 100
LOAD_ARGS = ['--threads', THREADS, '--min', THREADS, '--max', THREADS,
             '--tx', '--pause-ms', PAUSE_MS, '--progress-ms', PROGRESS_MS]
POLL_S = 0.005
ROTATION_TIMEOUT_S = 30
KINDS = [
    ('node', 'Node.js `createPool()` (load.js)'),
    ('c', 'libdbswap pool (pool-load)'),
]


def check_node():
    node = node_binary()
    if not os.path.isdir(os.path.join(NODE_PKG, 'node_modules', 'pg')):
        raise RuntimeError(f'{os.path.normpath(NODE_PKG)}/node_modules has '
                           f'no pg: run the benchmarks with ./dev.sh bench '
                           f'(it runs npm ci)')
    return node


# --------------------------------------------------------------------------
# Throughput

class Worker:
    """One node-bench process (tests/bench/node-bench.js: one pool, the
    loads the driver asks for, one JSON line each)."""

    def __init__(self, node, pool, sock, url, fake=False, pkg=None):
        self.name = f'node-bench --pool {pool}' + (' --fake' if fake else '')
        argv = [node, NODE_BENCH, '--pool', pool, '--max', str(MAX),
                '--target', TARGET, '--socket', sock]
        if fake:
            argv.append('--fake')
        if pkg:
            argv += ['--pkg', pkg]
        self.stderr = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True)
        self.proc.stdin.write((url if pool == 'pg' else '') + '\n')
        self.proc.stdin.flush()
        self.ready = self._read(30)

    def _read(self, timeout):
        r, _, _ = select.select([self.proc.stdout], [], [],
                                timeout * h.TIMEOUT_SCALE)
        line = self.proc.stdout.readline() if r else ''
        if not line:
            self.stderr.seek(0)
            err = self.stderr.read().decode(errors='replace').strip()
            raise RuntimeError(f'{self.name}: no answer (status '
                               f'{self.proc.poll()}): {err[-800:]}')
        return json.loads(line)

    def run(self, op, loops, seconds):
        self.proc.stdin.write(json.dumps({'op': op, 'loops': loops,
                                          'seconds': seconds}) + '\n')
        self.proc.stdin.flush()
        return self._read(seconds + 30)

    def close(self):
        """Ends it (EOF on its stdin); returns its last line, or None."""
        last = None
        try:
            if self.proc.poll() is None:
                self.proc.stdin.close()
                last = self._read(30)
                self.proc.wait(10)
        except (RuntimeError, OSError, ValueError,
                subprocess.TimeoutExpired):
            pass
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
                self.proc.wait()
            self.stderr.close()
        return last


def alternate(ctx, workers, loops, rounds, seconds, warmup, label):
    """rounds rounds of every worker in turn (the order rotated every
    round), seconds each, after an unmeasured warmup run of each:
    [{'order': [...], name: RUN, ...}, ...]."""
    names = list(workers)
    for w in workers.values():
        w.run('select', loops, warmup)
    out = []
    for r in range(rounds):
        k = r % len(names)
        order = names[k:] + names[:k]
        rnd = {'order': order}
        for name in order:
            rnd[name] = workers[name].run('select', loops, seconds)
        out.append(rnd)
    ctx.log(f'{label}, {_loops(loops)}: ' + ', '.join(
        f'{name} {sums(out, name)["rate"]:.0f}/s' for name in names))
    return out


def throughput(ctx, node, pg, tmp, compare_pkg=None):
    p = {'rounds': ctx.pick(4, 20), 'seconds': ctx.pick(0.5, 1),
         'fake_rounds': ctx.pick(2, 6), 'fake_seconds': ctx.pick(0.5, 1),
         'pair_seconds': ctx.pick(0.5, 2), 'warmup_seconds': ctx.pick(0.5, 1)}
    role, password = 'bench_node', h.secrets.token_hex(8)
    pg.create_role(role, password)
    url = pg.url(role, password)
    env = os.path.join(tmp, 'bench.env')
    h.write_rename(env, f'{TARGET}={url}\n')
    # pg_b: a second pg.Pool process in the same rounds (SELECT 1 only),
    # an A/A comparison: how far two identical pools differ here.
    kinds = [('pg', 'pg', None), ('dbswap', 'dbswap', None),
             ('pg_b', 'pg', None)]
    if compare_pkg:
        kinds.append(('dbswap_b', 'dbswap', compare_pkg))
    out = {**p, 'max': MAX, 'pools': [k for k, _, _ in kinds],
           'pairs': [], 'select': [], 'fake': [],
           'loadavg_before': os.getloadavg()}
    with h.Agent(env_files=[env]) as agent:
        agent.wait_log(rf'{TARGET}: generation 1 published')
        for fake in (False, True):
            workers = {}
            try:
                for name, pool, pkg in kinds:
                    if fake and name == 'pg_b':
                        continue
                    workers[name] = Worker(node, pool, agent.sock, url,
                                           fake=fake, pkg=pkg)
                out['pg_version'] = workers['pg'].ready['pg']
                if not fake:
                    for n in LOOPS_LIST:
                        entry = {'loops': n}
                        for name, w in workers.items():
                            if name == 'pg_b':
                                continue
                            w.run('pairs', n, min(0.5, p['pair_seconds']))
                            entry[name] = w.run('pairs', n,
                                                p['pair_seconds'])
                        out['pairs'].append(entry)
                    for n in LOOPS_LIST:
                        out['select'].append({'loops': n, 'rounds': alternate(
                            ctx, workers, n, p['rounds'], p['seconds'],
                            p['warmup_seconds'], 'SELECT 1')})
                else:
                    for n in LOOPS_LIST:
                        out['fake'].append({'loops': n, 'rounds': alternate(
                            ctx, workers, n, p['fake_rounds'],
                            p['fake_seconds'],
                            min(p['warmup_seconds'], p['fake_seconds']),
                            'fake client')})
            finally:
                ends = {name: w.close() for name, w in workers.items()}
            if not fake:
                out['dbswap_stats'] = (ends.get('dbswap') or {}).get('stats')
    out['loadavg_after'] = os.getloadavg()
    out['command'] = ('node tests/bench/node-bench.js --pool pg|dbswap '
                      f'[--fake] --max {MAX} --target {TARGET} --socket SOCK'
                      ' < connection-string, then commands')
    for s in out['select']:
        st = ratio_stats(s['rounds'])
        ctx.log(f'{_loops(s["loops"])}: createPool / pg.Pool median '
                f'{st["median"]:.3f} ({st["min"]:.3f} to {st["max"]:.3f}), '
                f'of the sums {st["sums"]:.3f}')
    return out


# --------------------------------------------------------------------------
# One rotation under load

def start_node_load(sock, name):
    return NodeLoad('dbswap', sock, args=LOAD_ARGS, name=name, target=TARGET)


def start_c_load(sock, name):
    return PoolLoad(sock, args=LOAD_ARGS, name=name)


def rotation_kind(ctx, pg, mon, kind, tmp, rotations, pre, gap, start_load):
    """Rotations under the load start_load(sock, name) starts (a PoolLoad
    or one with its lines: progress with "queries" and "failures", a last
    line with "stats"); the other sections' too."""
    role, password = f'bench_rot_{kind}', h.secrets.token_hex(8)
    pg.create_role(role, password)
    env = os.path.join(tmp, f'{kind}.env')
    h.write_rename(env, f'{TARGET}={pg.url(role, password)}\n')
    with h.Agent(env_files=[env]) as agent, \
            agent.client(name='bench-status') as status:
        agent.wait_log(rf'{TARGET}: generation 1 published')

        def target():
            return h.target_status(status, TARGET)

        def in_use(t, seq):
            return (seq is not None and t['published_seq'] >= seq and
                    t['subscribers'] == t['acked'] == 1)

        load = start_load(agent.sock, f'bench-{kind}')
        rots = []
        try:
            load.wait_progress(lambda m: True, timeout=20,
                               what='a first progress line')
            h.wait_for(lambda: (t := target())['generation'] >= 1 and
                       in_use(t, t['value_seq']), timeout=10,
                       interval=POLL_S, what='the pool in use')
            time.sleep(pre)
            for i in range(rotations):
                load.check_alive()
                seq_before = target()['value_seq']
                failures_before = last_failures(load)
                password = h.secrets.token_hex(8)
                before = mon.alter_password(role, password)
                old_at, total_at = mon.count(role, before)
                t0 = rename_in(env, f'{TARGET}={pg.url(role, password)}\n')
                rot = {'t': t0, 'old_at_rotation': old_at,
                       'total_at_rotation': total_at, 'acked_ms': None,
                       'old_gone_ms': None, 'polls': 0}
                seq = None
                while True:
                    now = time.monotonic()
                    if now - t0 > ROTATION_TIMEOUT_S * h.TIMEOUT_SCALE:
                        break
                    if rot['acked_ms'] is None:
                        t = target()
                        if seq is None and t['value_seq'] > seq_before:
                            seq = t['value_seq']
                        if in_use(t, seq):
                            rot['acked_ms'] = (time.monotonic() - t0) * 1000
                    if rot['old_gone_ms'] is None:
                        old, total = mon.count(role, before)
                        if old == 0:
                            rot['old_gone_ms'] = \
                                (time.monotonic() - t0) * 1000
                    rot['polls'] += 1
                    if rot['acked_ms'] is not None and \
                            rot['old_gone_ms'] is not None:
                        break
                    time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))
                rot['old_left'] = mon.count(role, before)[0] \
                    if rot['old_gone_ms'] is None else 0
                time.sleep(gap)
                rot['failures'] = last_failures(load) - failures_before
                rots.append(rot)
                ctx.log(f'{kind}: rotation {i + 1}/{rotations}: old-password '
                        f'connections gone after '
                        f'{benchlib.fmt_ms(rot["old_gone_ms"])}, acked after '
                        f'{benchlib.fmt_ms(rot["acked_ms"])}, '
                        f'{rot["failures"]} failed')
            rc, final = load.stop()
            lines = load.timeline()
            errors = load.stderr().strip().splitlines()[-5:]
        finally:
            load.close()
    first = rots[0]['t'] if rots else time.monotonic()
    for rot in rots:
        # Queries/s from just before the rotation to the next one: the dip.
        rot['rate_before'] = steady_rate(lines, rot['t'] - pre + 0.5,
                                         rot['t'])
        series = benchlib.rate_series(lines, rot['t'], min_interval=0.02)
        after = [q for x, q in series if 0 < x <= gap]
        rot['lowest_rate_after'] = min(after) if after else None
        rot['t'] = round(rot['t'] - first, 3)
    return {'exit_status': rc, 'failures': final['failures'],
            'queries': final['queries'],
            'latency_us': final.get('latency_us'),
            'rotations': rots, 'errors': errors}


def last_failures(load):
    lines = load.timeline()
    return lines[-1][1]['failures'] if lines else 0


def rename_in(path, text):
    """Writes text beside path (fsynced), renames it over path; returns the
    monotonic time of the rename."""
    tmp = path + '.new'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    t0 = time.monotonic()
    os.rename(tmp, path)
    return t0


def rotation(ctx, pg, tmp):
    rotations = ctx.pick(1, 5)
    pre = ctx.pick(1.5, 3)
    gap = ctx.pick(1.5, 3)
    out = {'rotations': rotations, 'pre_s': pre, 'gap_s': gap,
           'poll_ms': POLL_S * 1000, 'threads': THREADS,
           'pause_ms': PAUSE_MS, 'kinds': {},
           'command': {
               'node': shlex.join(['node', os.path.relpath(
                   NODE_LOAD, os.path.join(HERE, '..', '..')), '--pool',
                   'dbswap', '--socket', 'SOCK', '--target', TARGET] +
                   [str(a) for a in LOAD_ARGS]),
               'c': shlex.join(['pool-load', '--socket', 'SOCK', '--target',
                                TARGET] + [str(a) for a in LOAD_ARGS])}}
    mon = OldConnections(pg)
    try:
        for kind, _ in KINDS:
            ctx.log(f'rotation, {kind}: {rotations} rotation(s) under load')
            out['kinds'][kind] = rotation_kind(
                ctx, pg, mon, kind, tmp, rotations, pre, gap,
                start_node_load if kind == 'node' else start_c_load)
    finally:
        mon.close()
    return out


# --------------------------------------------------------------------------

def run(ctx):
    node = check_node()
    version = subprocess.run([node, '--version'], capture_output=True,
                             text=True).stdout.strip()
    res = {'node': version, 'cores': os.cpu_count(),
           'target_ratio': TARGET_RATIO, 'max': MAX,
           'loops': LOOPS_LIST}
    with h.PgCluster() as pg:
        res['throughput'] = throughput(ctx, node, pg, ctx.tmp)
        res['rotation'] = rotation(ctx, pg, ctx.tmp)
    res['loadavg_end'] = os.getloadavg()
    return res


# --------------------------------------------------------------------------
# Figures

def rate(run):
    return run['ops'] / run['seconds'] if run['seconds'] else None


def sums(rounds, name):
    ops = sum(r[name]['ops'] for r in rounds)
    secs = sum(r[name]['seconds'] for r in rounds)
    cpu = sum(r[name]['cpu_seconds'] for r in rounds)
    fails = sum(r[name]['failures'] for r in rounds)
    return {'rate': ops / secs if secs else None,
            'cpu_us': cpu * 1e6 / ops if ops else None, 'failures': fails}


def ratio_stats(rounds, name='dbswap', base='pg'):
    """createPool / pg.Pool queries/s: the rounds' ratios (median,
    quartiles, lowest, highest) and the ratio of the sums."""
    rs = [rate(r[name]) / rate(r[base]) for r in rounds
          if rate(r[base]) and rate(r[name]) is not None]
    if not rs:
        return None
    q = statistics.quantiles(rs, n=4, method='inclusive') \
        if len(rs) > 1 else [rs[0]] * 3
    a, b = sums(rounds, name)['rate'], sums(rounds, base)['rate']
    return {'median': statistics.median(rs), 'q1': q[0], 'q3': q[2],
            'min': min(rs), 'max': max(rs), 'n': len(rs),
            'sums': a / b if a and b else None}


def median_latency(rounds, name, key):
    vs = [r[name]['latency_us'][key] for r in rounds
          if r[name]['latency_us'] and r[name]['latency_us'][key]]
    return statistics.median(vs) if vs else None


def _n(x):
    return '—' if x is None else f'{x:.0f}'


def _r(x):
    return '—' if x is None else f'{x:.3f}'


def _us(x, digits=1):
    return '—' if x is None else f'{x:.{digits}f} µs'


def _ns(x):
    if x is None:
        return '—'
    return f'{x:.0f} ns' if x < 1000 else f'{x / 1000:.2f} µs'


def _load(v):
    return ', '.join(f'{x:.2f}' for x in v) if v else '—'


def _loops(n):
    return f'{n} loop' + ('s' if n > 1 else '')


def aa_stats(s):
    """The A/A comparison of a 'select' entry (a second pg.Pool process
    against the first), or None when the run had none."""
    if not s['rounds'] or 'pg_b' not in s['rounds'][0]:
        return None
    return ratio_stats(s['rounds'], 'pg_b')


def aa_rows(sel):
    aa = [aa_stats(s) for s in sel]
    if not any(aa):
        return []
    both = []
    for s in sel:
        rs = [rate(r['dbswap']) * 2 / (rate(r['pg']) + rate(r['pg_b']))
              for r in s['rounds'] if rate(r['pg']) and rate(r['pg_b'])]
        both.append(f'{_r(statistics.median(rs))}' if rs else '—')
    return [['A/A: a second `pg.Pool` process / `pg.Pool`, median of the '
             'rounds (quartiles): how far two identical pools differ here'] +
            [f'{_r(x["median"])} ({_r(x["q1"])} to {_r(x["q3"])})'
             if x else '—' for x in aa],
            ['`createPool()` / the mean of both `pg.Pool` processes, median '
             'of the rounds'] + both]


def markdown(res):
    t = b = res['throughput']
    out = [f'node-bench (`tests/bench/node-bench.js`), Node {res["node"]}, '
           f'pg {b["pg_version"]}: a plain `pg.Pool` on the role\'s '
           f'connection string and `createPool()` following the agent, each '
           f'in a Node process of its own, both processes kept running, '
           f'taking turns; each pool max = {b["max"]}, idle timeout off, '
           f'{b["max"]} connections open before anything is measured; '
           f'loopback PostgreSQL, {res["cores"]} cores.  An iteration is '
           f'`await pool.query(\'SELECT 1\')`: checkout, query, release.',
           '']

    cols = [_loops(p['loops']) for p in b['pairs']]

    def per_pair(run, key='seconds'):
        return run[key] * 1e9 / run['ops'] if run['ops'] else None

    rows = [['`pg.Pool`: wall time per pair (all loops together) / CPU '
             'time per pair'] +
            [f'{_ns(per_pair(p["pg"]))} / '
             f'{_ns(per_pair(p["pg"], "cpu_seconds"))}' for p in b['pairs']],
            ['`createPool()`: wall time per pair / CPU time per pair'] +
            [f'{_ns(per_pair(p["dbswap"]))} / '
             f'{_ns(per_pair(p["dbswap"], "cpu_seconds"))}'
             for p in b['pairs']],
            ['failures, `pg.Pool` / `createPool()`'] +
            [f'{p["pg"]["failures"]} / {p["dbswap"]["failures"]}'
             for p in b['pairs']]]
    out.append(benchlib.md_table(
        [f'`connect()` + `release()`, no query, {b["pair_seconds"]:g} s']
        + cols, rows))

    sel = b['select']
    cols = [_loops(s['loops']) for s in sel]
    st = [ratio_stats(s['rounds']) for s in sel]
    su = [(sums(s['rounds'], 'pg'), sums(s['rounds'], 'dbswap'))
          for s in sel]
    rows = [['`pg.Pool`, queries/s'] + [_n(p['rate']) for p, _ in su],
            ['`createPool()`, queries/s'] + [_n(d['rate']) for _, d in su],
            [f'**`createPool()` / `pg.Pool`, median of the rounds** (goal '
             f'≥ {res["target_ratio"]})'] +
            [f'**{_r(x["median"])}**' for x in st],
            ['the rounds\' ratios: quartiles'] +
            [f'{_r(x["q1"])} to {_r(x["q3"])}' for x in st],
            ['the rounds\' ratios: lowest to highest'] +
            [f'{_r(x["min"])} to {_r(x["max"])}' for x in st],
            ['ratio of the sums over all rounds'] +
            [_r(x['sums']) for x in st],
            *aa_rows(sel),
            ['Node CPU time per query, `pg.Pool` / `createPool()`'] +
            [f'{_us(p["cpu_us"])} / {_us(d["cpu_us"])}' for p, d in su],
            ['latency p50, `pg.Pool` / `createPool()` (median of the rounds)']
            + [f'{_n(median_latency(s["rounds"], "pg", "p50"))} / '
               f'{_n(median_latency(s["rounds"], "dbswap", "p50"))} µs'
               for s in sel],
            ['latency p99, `pg.Pool` / `createPool()` (median of the rounds)']
            + [f'{_n(median_latency(s["rounds"], "pg", "p99"))} / '
               f'{_n(median_latency(s["rounds"], "dbswap", "p99"))} µs'
               for s in sel],
            ['failures, `pg.Pool` / `createPool()`'] +
            [f'{p["failures"]} / {d["failures"]}' for p, d in su]]
    out.append(benchlib.md_table(
        [f'`SELECT 1` loops, {b["rounds"]} rounds of {b["seconds"]:g} s '
         f'per pool'] + cols, rows))
    out.append(f'The processes take turns within each round (the order '
               f'rotated every round), in rounds this short because other '
               f'work on a shared machine comes and goes within seconds; '
               f'each round gives one ratio.  A third process, a second '
               f'`pg.Pool`, takes its turn too: its ratio to the first is '
               f'the resolution of this measurement on this machine.  With '
               f'8 loops the one Node thread is the bottleneck (its CPU time '
               f'per query sets the rate): what the pool adds per query '
               f'shows there in full.  Load average (1, 5, 15 min) before / '
               f'after: '
               f'{_load(t.get("loadavg_before"))} / '
               f'{_load(t.get("loadavg_after"))}.')
    out.append('')

    fake = b.get('fake') or []
    if fake:
        cols = [_loops(s['loops']) for s in fake]
        fs = [(sums(s['rounds'], 'pg'), sums(s['rounds'], 'dbswap'))
              for s in fake]
        rows = [['`pg.Pool`, CPU time per query'] +
                [_us(p['cpu_us'], 2) for p, _ in fs],
                ['`createPool()`, CPU time per query'] +
                [_us(d['cpu_us'], 2) for _, d in fs],
                ['what `createPool()` adds per query'] +
                [_us(d['cpu_us'] - p['cpu_us'], 2)
                 if d['cpu_us'] and p['cpu_us'] else '—' for p, d in fs]]
        out.append(benchlib.md_table(
            [f'the pools\' own cost: a fake pg Client, no server, '
             f'{b["fake_rounds"]} rounds of {b["fake_seconds"]:g} s']
            + cols, rows))
        out.append('The same loops, two more processes taking turns, on '
                   'pools whose pg `Client` is a fake that answers every '
                   'query in `setImmediate` (node-bench\'s `FakeClient`): no '
                   'socket, no server, so the process\'s CPU time per query '
                   'is the pool\'s own work.')
        out.append('')
    out.append(f'Command: `{t["command"]}`.')
    out.append('')

    ro = res['rotation']
    rows = []
    for kind, label in KINDS:
        k = ro['kinds'].get(kind)
        if not k:
            continue
        rots = k['rotations']
        gone = [r['old_gone_ms'] for r in rots]
        acked = [r['acked_ms'] for r in rots]

        def med(vs):
            vs = [v for v in vs if v is not None]
            return statistics.median(vs) if vs else None

        def worst(vs):
            return None if not vs or None in vs else max(vs)

        before = med([r['rate_before'] for r in rots])
        low = [r['lowest_rate_after'] for r in rots
               if r['lowest_rate_after'] is not None]
        rows.append([label, k['failures'],
                     '/'.join(str(r['old_at_rotation']) for r in rots),
                     f'{benchlib.fmt_ms(med(gone))} / '
                     f'{benchlib.fmt_ms(worst(gone))}',
                     f'{benchlib.fmt_ms(med(acked))} / '
                     f'{benchlib.fmt_ms(worst(acked))}',
                     _n(before),
                     f'{min(low):.0f}' + (f' ({min(low) / before * 100:.0f}%)'
                                          if before else '')
                     if low else '—'])
    out.append(benchlib.md_table(
        ['pool', 'failed queries', 'old-password connections at each '
         'rotation', 'all old-password connections gone after: median / '
         'worst', 'new value acked after: median / worst',
         'queries/s before', f'lowest queries/s in the {ro["gap_s"]:g} s '
         f'after (100 ms bins)'], rows, 'lrrrrrr'))
    out.append(f'{ro["rotations"]} rotation(s) for each pool, '
               f'{ro["gap_s"]:g} s apart, under the same load: '
               f'{ro["threads"]} loops/threads on min = max = '
               f'{ro["threads"]} connections, `SELECT 1` and every other '
               f'iteration `BEGIN; SELECT pg_backend_pid(); COMMIT`, '
               f'{ro["pause_ms"]} ms pause.  Each: `ALTER ROLE` on a '
               f'persistent superuser session, then the env file renamed '
               f'in; the clock starts at the rename.  Old-password '
               f'connections: the role\'s client backends in '
               f'`pg_stat_activity` that started before the `ALTER ROLE`; '
               f'acked: the agent\'s status shows the new value acked by the '
               f'pool (which acks once no connection of the old value is '
               f'left); both polled every {ro["poll_ms"]:g} ms.  Commands: '
               f'`{ro["command"]["node"]}` and `{ro["command"]["c"]}`.')
    return '\n'.join(out) + '\n'


def plots(res, outdir):
    series = []
    for s in res['throughput']['select']:
        rs = [rate(r['dbswap']) / rate(r['pg']) for r in s['rounds']
              if rate(r['pg'])]
        series.append({'title': _loops(s['loops']),
                       'points': list(enumerate(rs, 1))})
        if aa_stats(s):
            rs = [rate(r['pg_b']) / rate(r['pg']) for r in s['rounds']
                  if rate(r['pg'])]
            series.append({'title': f'{_loops(s["loops"])}, A/A: pg.Pool / '
                           f'pg.Pool', 'style': 'dashed',
                           'points': list(enumerate(rs, 1))})
    n = res['throughput']['rounds']
    series.append({'title': f'goal {res["target_ratio"]}', 'style': 'lines',
                   'points': [(0.5, res['target_ratio']),
                              (n + 0.5, res['target_ratio'])]})
    png = 'node-rounds.png'
    benchlib.plot(os.path.join(outdir, png),
                  'SELECT 1 through createPool() / through pg.Pool, per round',
                  'round', 'createPool / pg.Pool queries/s', series,
                  xrange=(0.5, n + 0.5))
    return [(png, f'createPool() / pg.Pool queries/s in each of the {n} '
             f'rounds of {res["throughput"]["seconds"]:g} s')]


def headline(res):
    rows = []
    for s in res['throughput']['select']:
        st = ratio_stats(s['rounds'])
        p, d = sums(s['rounds'], 'pg'), sums(s['rounds'], 'dbswap')
        aa = aa_stats(s)
        rows.append([f'Node.js: `SELECT 1` through `createPool()`, '
                     f'{_loops(s["loops"])}, queries/s (ratio: median of '
                     f'{st["n"]} rounds, quartiles {_r(st["q1"])} to '
                     f'{_r(st["q3"])}' +
                     (f'; A/A `pg.Pool` / `pg.Pool`: {_r(aa["median"])}'
                      if aa else '') + ')', _n(d['rate']),
                     f'`pg.Pool`: {_n(p["rate"])}',
                     benchlib.fmt_ratio(st['median'], 3)])
    kinds = res['rotation']['kinds']
    k, c = kinds.get('node'), kinds.get('c')
    if k:
        def med(kk, key):
            vs = [r[key] for r in kk['rotations'] if r[key] is not None]
            return statistics.median(vs) if vs else None
        ours = (f'{k["failures"]} failed; '
                f'{benchlib.fmt_ms(med(k, "old_gone_ms"))}, acked '
                f'{benchlib.fmt_ms(med(k, "acked_ms"))}')
        theirs = '—'
        ratio = '—'
        if c:
            theirs = (f'libdbswap pool: {c["failures"]} failed; '
                      f'{benchlib.fmt_ms(med(c, "old_gone_ms"))}, acked '
                      f'{benchlib.fmt_ms(med(c, "acked_ms"))}')
            a, b = med(k, 'old_gone_ms'), med(c, 'old_gone_ms')
            ratio = benchlib.fmt_ratio(a / b if a and b else None)
        rows.append([f'Node.js `createPool()`, one rotation under load '
                     f'({THREADS} loops): failed queries; every connection '
                     f'on the new password after, median', ours, theirs,
                     ratio])
    return rows
