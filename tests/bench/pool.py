"""Pool overhead: what the libdbswap pool costs an app, against raw
persistent libpq connections (section 'pool' of tests/bench/run.py).

A throwaway PostgreSQL, dbswapd with one env file, and pool-bench
($DBSWAP_POOL_BENCH, tests/bench/pool-bench.c) with a pool of min = max =
THREADS: acquire + release with no query (1 and THREADS threads), then
SELECT 1 loops on raw persistent PGconns and through the pool, raw and
pool alternating in rounds so that drift in the machine weighs on both
(1 and THREADS threads).  pool-bench prints raw figures as JSON; rates
and ratios are derived here.  The pool under password rotations is the
'queries' section (queries.py)."""

import json
import os
import shlex
import subprocess

import benchlib
import harness as h

NAME = 'pool'
TITLE = 'Pool overhead'

THREADS = 8
TARGET = 'DATABASE_URL'
# The README's goal for SELECT 1 through the pool against raw PGconns.
TARGET_RATIO = 0.97


def run(ctx):
    rounds = ctx.pick(2, 5)
    seconds = ctx.pick(1, 3)       # each loop, each round
    pair_seconds = ctx.pick(1, 2)
    args = ['--target', TARGET, '--threads', str(THREADS),
            '--seconds', str(seconds), '--rounds', str(rounds),
            '--pair-seconds', str(pair_seconds)]
    expected = 2 * pair_seconds + 2 * 2 * rounds * seconds
    with h.PgCluster() as pg:
        role, password = 'bench_pool', h.secrets.token_hex(8)
        pg.create_role(role, password)
        env = os.path.join(ctx.tmp, 'db.env')
        h.write_rename(env, f'{TARGET}={pg.url(role, password)}\n')
        with h.Agent(env_files=[env]) as agent:
            agent.wait_log(rf'{TARGET}: generation 1 published')
            ctx.log(f'pool-bench: {rounds} rounds of {seconds} s, '
                    f'about {expected} s')
            r = subprocess.run([ctx.bin('pool-bench'), '--socket',
                                agent.sock] + args,
                               input=pg.url(role, password) + '\n',
                               capture_output=True, text=True,
                               timeout=expected + 120)
    if not r.stdout.strip():
        raise RuntimeError(f'pool-bench exited {r.returncode} with no '
                           f'output: {r.stderr.strip()[-500:]}')
    res = {'bench': json.loads(r.stdout),
           'exit_status': r.returncode,
           'stderr': r.stderr.strip().splitlines()[-10:],
           'threads': THREADS, 'rounds': rounds, 'loop_seconds': seconds,
           'pair_seconds': pair_seconds, 'target_ratio': TARGET_RATIO,
           'cores': os.cpu_count(),
           'command': shlex.join(['pool-bench', '--socket', 'SOCK'] + args)
           + ' < conninfo'}
    for s in res['bench']['select']:
        ctx.log(f'{s["threads"]} thread(s): pool / raw = '
                f'{ratio(s["pool"], s["raw"]):.3f}')
    return res


def rate(run):
    return run['ops'] / run['seconds'] if run['seconds'] else None


def ratio(pool, raw):
    p, r = rate(pool), rate(raw)
    return p / r if p is not None and r else None


def round_ratios(sel):
    return [ratio(x['pool'], x['raw']) for x in sel['rounds']]


def _ns(x):
    if x is None:
        return '—'
    return f'{x:.0f} ns' if x < 1000 else f'{x / 1000:.2f} µs'


def _us(x):
    return '—' if x is None else f'{x:.0f} µs'


def _n(x):
    return '—' if x is None else f'{x:.0f}'


def _r(x):
    return '—' if x is None else f'{x:.3f}'


def markdown(res):
    b = res['bench']
    pairs, sel = b['pairs'], b['select']
    n = b['threads']
    cols = [f'{p["threads"]} thread' + ('s' if p['threads'] > 1 else '')
            for p in pairs]
    out = [f'pool-bench (`tests/bench/pool-bench.c`) on a libdbswap pool of '
           f'min = max = {n}, filled before anything is measured, against '
           f'one raw persistent `PGconn` per thread; loopback PostgreSQL, '
           f'{res["cores"]} cores.  A pool iteration is acquire, `SELECT 1`, '
           f'release; a raw one is `SELECT 1`.', '']

    def per_pair(p):
        return p['seconds'] * p['threads'] * 1e9 / p['ops'] \
            if p['ops'] else None

    def cpu_pair(p):
        return p['cpu_seconds'] * 1e9 / p['ops'] if p['ops'] else None

    out.append(benchlib.md_table(
        [f'acquire + release, no query, {b["pair_seconds"]} s'] + cols,
        [['per pair, one thread\'s wall time'] +
         [_ns(per_pair(p)) for p in pairs],
         ['pairs per second, all threads'] +
         [f'{p["ops"] / p["seconds"] / 1e6:.2f} M' for p in pairs],
         ['process CPU time per pair (the pool\'s thread included)'] +
         [_ns(cpu_pair(p)) for p in pairs],
         ['failures'] + [p['failures'] for p in pairs]]))

    def lat(run, key):
        return _us((run['latency_us'] or {}).get(key))

    def spread(s):
        rs = [x for x in round_ratios(s) if x is not None]
        return f'{min(rs):.3f} to {max(rs):.3f}' if rs else '—'

    cols = [f'{s["threads"]} thread' + ('s' if s['threads'] > 1 else '')
            for s in sel]
    out.append(benchlib.md_table(
        [f'`SELECT 1` loop, {b["rounds"]} alternating rounds of '
         f'{b["seconds"]} s each'] + cols,
        [['raw `PGconn`, queries/s'] + [_n(rate(s['raw'])) for s in sel],
         ['through the pool, queries/s'] + [_n(rate(s['pool'])) for s in sel],
         [f'**pool / raw** (goal ≥ {res["target_ratio"]})'] +
         [f'**{_r(ratio(s["pool"], s["raw"]))}**' for s in sel],
         ['pool / raw, lowest to highest round'] + [spread(s) for s in sel],
         ['latency p50, raw / pool'] +
         [f'{lat(s["raw"], "p50")} / {lat(s["pool"], "p50")}' for s in sel],
         ['latency p99, raw / pool'] +
         [f'{lat(s["raw"], "p99")} / {lat(s["pool"], "p99")}' for s in sel],
         ['failures, raw / pool'] +
         [f'{s["raw"]["failures"]} / {s["pool"]["failures"]}'
          for s in sel]]))
    out.append(f'Each round runs the raw loop, then the pool loop; the ratio '
               f'is of the sums over all rounds.  With {n} threads on '
               f'{res["cores"]} cores the threads and their backends share '
               f'the CPUs, so per-pair wall time includes waiting for one.  '
               f'Command: `{res["command"]}`'
               + (f' (exit status {res["exit_status"]})'
                  if res['exit_status'] else '') + '.')
    return '\n'.join(out) + '\n'


def plots(res, outdir):
    b = res['bench']
    series = []
    for s in b['select']:
        pts = [(i + 1, r) for i, r in enumerate(round_ratios(s))]
        series.append({'title': f'{s["threads"]} thread' +
                       ('s' if s['threads'] > 1 else ''), 'points': pts})
    n = b['rounds']
    series.append({'title': f'goal {res["target_ratio"]}', 'style': 'lines',
                   'points': [(0.5, res['target_ratio']),
                              (n + 0.5, res['target_ratio'])]})
    png = 'pool-rounds.png'
    benchlib.plot(os.path.join(outdir, png),
                  'SELECT 1 through the pool / on raw PGconns, per round',
                  'round (raw loop, then pool loop)', 'pool / raw queries/s',
                  series, xrange=(0.5, n + 0.5))
    return [(png, f'Pool / raw queries/s in each of the {n} alternating '
             f'rounds of {b["seconds"]} s')]


def headline(res):
    b = res['bench']
    rows = []
    pairs = ', '.join(_ns(p['seconds'] * p['threads'] * 1e9 / p['ops'])
                      if p['ops'] else '—' for p in b['pairs'])
    threads = ' / '.join(str(p['threads']) for p in b['pairs'])
    rows.append([f'pool: acquire + release, {threads} thread(s)', pairs,
                 '—', '—'])
    for s in b['select']:
        rows.append([f'`SELECT 1` through the pool, {s["threads"]} '
                     f'thread(s), queries/s', _n(rate(s['pool'])),
                     f'raw persistent `PGconn`: {_n(rate(s["raw"]))}',
                     benchlib.fmt_ratio(ratio(s['pool'], s['raw']), 3)])
    return rows
