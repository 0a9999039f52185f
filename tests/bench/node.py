"""The Node.js pool: createPool() (client-lib/node) against a plain
pg.Pool on the same server, and one password rotation under load through
it beside the libdbswap pool (section 'node' of tests/bench/run.py).

Throughput: node-bench (tests/bench/node-bench.js, read its header), one
Node process with a pg.Pool on the role's connection string and a
createPool() following the agent, both max = MAX with MAX connections
open: connect() + release() with no query, then LOOPS_LIST concurrent
async loops of `await pool.query('SELECT 1')`, the two pools in turn in
many short rounds (the order rotated every round), so that the noise of a
shared machine weighs on both alike; the ratio is reported as the median
of the rounds' ratios, with the spread, and as the ratio of the sums.
Then the same loops on a fake pg Client that needs no server: the pools'
own CPU time per query.

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
import shlex
import statistics
import subprocess
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

def throughput(ctx, node, pg, tmp):
    rounds = ctx.pick(3, 20)
    seconds = ctx.pick(0.5, 1)
    fake_rounds = ctx.pick(2, 5)
    fake_seconds = ctx.pick(0.5, 1)
    pair_seconds = ctx.pick(0.5, 2)
    warmup = ctx.pick(0.5, 1)
    args = ['--target', TARGET, '--loops', ','.join(map(str, LOOPS_LIST)),
            '--max', MAX, '--rounds', rounds, '--seconds', seconds,
            '--pair-seconds', pair_seconds, '--warmup-seconds', warmup,
            '--fake-rounds', fake_rounds, '--fake-seconds', fake_seconds]
    args = [str(a) for a in args]
    n = len(LOOPS_LIST)
    expected = n * (2 * pair_seconds + 1 + 2 * warmup + 2 * rounds * seconds
                    + 2 * min(warmup, fake_seconds)
                    + 2 * fake_rounds * fake_seconds)
    role, password = 'bench_node', h.secrets.token_hex(8)
    pg.create_role(role, password)
    env = os.path.join(tmp, 'bench.env')
    h.write_rename(env, f'{TARGET}={pg.url(role, password)}\n')
    with h.Agent(env_files=[env]) as agent:
        agent.wait_log(rf'{TARGET}: generation 1 published')
        ctx.log(f'node-bench: {rounds} rounds of {seconds:g} s, about '
                f'{expected:.0f} s')
        load0 = os.getloadavg()
        r = subprocess.run([node, NODE_BENCH, '--socket', agent.sock] + args,
                           input=pg.url(role, password) + '\n',
                           capture_output=True, text=True,
                           timeout=expected + 120)
        load1 = os.getloadavg()
    if not r.stdout.strip():
        raise RuntimeError(f'node-bench exited {r.returncode} with no '
                           f'output: {r.stderr.strip()[-800:]}')
    out = {'bench': json.loads(r.stdout), 'exit_status': r.returncode,
           'stderr': [x for x in r.stderr.strip().splitlines()
                      if 'round' not in x][-10:],
           'loadavg_before': load0, 'loadavg_after': load1,
           'command': shlex.join(['node', 'tests/bench/node-bench.js',
                                  '--socket', 'SOCK'] + args)
           + ' < connection-string'}
    for s in out['bench']['select']:
        st = ratio_stats(s['rounds'])
        ctx.log(f'{s["loops"]} loop(s): createPool / pg.Pool median '
                f'{st["median"]:.3f} ({st["min"]:.3f} to {st["max"]:.3f}), '
                f'of the sums {st["sums"]:.3f}')
    return out


# --------------------------------------------------------------------------
# One rotation under load

def rotation_kind(ctx, pg, mon, kind, tmp, rotations, pre, gap):
    role, password = f'bench_node_rot_{kind}', h.secrets.token_hex(8)
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

        if kind == 'node':
            load = NodeLoad('dbswap', agent.sock, args=LOAD_ARGS,
                            name=f'bench-{kind}', target=TARGET)
        else:
            load = PoolLoad(agent.sock, args=LOAD_ARGS, name=f'bench-{kind}')
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
            'queries': final['queries'], 'latency_us': final['latency_us'],
            'rotations': rots, 'errors': errors,
            'rate': benchlib.rate_series(lines, first, min_interval=0.02)}


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
            out['kinds'][kind] = rotation_kind(ctx, pg, mon, kind, tmp,
                                               rotations, pre, gap)
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


def markdown(res):
    t = res['throughput']
    b = t['bench']
    pools = b['pools']
    out = [f'node-bench (`tests/bench/node-bench.js`) in one Node '
           f'{res["node"]} process (pg {b["pg"]}): a plain `pg.Pool` on the '
           f'role\'s connection string and `createPool()` following the '
           f'agent, each max = {b["max"]}, idle timeout off, {b["max"]} '
           f'connections open before anything is measured; loopback '
           f'PostgreSQL, {res["cores"]} cores.  An iteration is `await '
           f'pool.query(\'SELECT 1\')`: checkout, query, release.', '']

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
    out.append(f'The pools take turns within each round (the order rotated '
               f'every round), in rounds this short because other work on '
               f'a shared machine comes and goes within seconds; each round '
               f'gives one ratio.  With 8 loops the one Node thread is the '
               f'bottleneck (its CPU time per query sets the rate): what the '
               f'pool adds per query shows there in full.  Load average '
               f'(1, 5, 15 min) before / after: '
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
        out.append('The same loops on pools whose pg `Client` is a fake that '
                   'answers every query in `setImmediate` (node-bench\'s '
                   '`FakeClient`): no socket, no server, so the process\'s '
                   'CPU time per query is the pools\' own work.')
        out.append('')
    out.append(f'Command: `{t["command"]}`' +
               (f' (exit status {t["exit_status"]})' if t['exit_status']
                else '') + '.')
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
    for s in res['throughput']['bench']['select']:
        rs = [rate(r['dbswap']) / rate(r['pg']) for r in s['rounds']
              if rate(r['pg'])]
        series.append({'title': _loops(s['loops']),
                       'points': list(enumerate(rs, 1))})
    n = res['throughput']['bench']['rounds']
    series.append({'title': f'goal {res["target_ratio"]}', 'style': 'lines',
                   'points': [(0.5, res['target_ratio']),
                              (n + 0.5, res['target_ratio'])]})
    png = 'node-rounds.png'
    benchlib.plot(os.path.join(outdir, png),
                  'SELECT 1 through createPool() / through pg.Pool, per round',
                  'round', 'createPool / pg.Pool queries/s', series,
                  xrange=(0.5, n + 0.5))
    return [(png, f'createPool() / pg.Pool queries/s in each of the {n} '
             f'rounds of {res["throughput"]["bench"]["seconds"]:g} s')]


def headline(res):
    rows = []
    for s in res['throughput']['bench']['select']:
        st = ratio_stats(s['rounds'])
        p, d = sums(s['rounds'], 'pg'), sums(s['rounds'], 'dbswap')
        rows.append([f'Node.js: `SELECT 1` through `createPool()`, '
                     f'{_loops(s["loops"])}, queries/s (ratio: median of '
                     f'{st["n"]} rounds, {_r(st["min"])} to '
                     f'{_r(st["max"])})', _n(d['rate']),
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
