"""Pool overhead: what the libdbswap pool costs an app, against raw
persistent libpq connections (section 'pool' of tests/bench/run.py).

A throwaway PostgreSQL, dbswapd with one env file, and pool-bench
($DBSWAP_POOL_BENCH, tests/bench/pool-bench.c) with a pool of min = max =
THREADS: acquire + release with no query (1 and THREADS threads), then
SELECT 1 loops on raw persistent PGconns, through the pool, and on a
second set of raw PGconns, all in the one process, taking turns in rounds
with the order rotated every round (1 and THREADS threads).  Each round
gives a pool / raw ratio and an A/A ratio (the second raw set / the
first): the summary's ratio is the median of the rounds' pool / raw, and
the A/A beside it says how far from 1 the same measurement lands between
two identical loops.  pool-bench prints raw figures as JSON; rates and
ratios are derived here.  The pool under password rotations is the
'queries' section (queries.py)."""

import json
import os
import shlex
import statistics
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
    # Short rounds, many of them: other work on a shared machine comes and
    # goes within seconds, and each round gives one ratio.
    rounds = ctx.pick(3, 12)      # a multiple of 3: each kind in each place
    seconds = 1                   # each loop, each round
    pair_seconds = ctx.pick(1, 2)
    args = ['--target', TARGET, '--threads', str(THREADS),
            '--seconds', str(seconds), '--rounds', str(rounds),
            '--pair-seconds', str(pair_seconds)]
    expected = 2 * pair_seconds + 2 * 3 * (rounds * seconds + 1)
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
           # Not 'command': run.py keeps the bench's own command there.
           'bench_command': shlex.join(['pool-bench', '--socket', 'SOCK'] +
                                       args) + ' < conninfo'}
    for s in res['bench']['select']:
        st, aa = ratio_stats(s), ratio_stats(s, 'raw_b')
        ctx.log(f'{s["threads"]} thread(s): pool / raw {_r(st["median"])} '
                f'(quartiles {_r(st["q1"])} to {_r(st["q3"])}), A/A raw / '
                f'raw {_r(aa["median"])} ({_r(aa["q1"])} to {_r(aa["q3"])})')
    for c in checks(res):
        ctx.log(f'WARNING: {c}')
    return res


def rate(run):
    return run['ops'] / run['seconds'] if run['seconds'] else None


def ratio(pool, raw):
    p, r = rate(pool), rate(raw)
    return p / r if p is not None and r else None


def round_ratios(sel, name='pool'):
    """name / raw in each round ([] for a run from before raw_b, when
    name is raw_b)."""
    return [ratio(x[name], x['raw']) for x in sel['rounds'] if name in x]


def ratio_stats(sel, name='pool'):
    """name / raw queries/s: the rounds' ratios (median, quartiles,
    lowest, highest) and the ratio of the sums; None when not measured
    (raw_b in a run from before it)."""
    rs = [x for x in round_ratios(sel, name) if x is not None]
    if not rs:
        return None
    q = statistics.quantiles(rs, n=4, method='inclusive') \
        if len(rs) > 1 else [rs[0]] * 3
    return {'median': statistics.median(rs), 'q1': q[0], 'q3': q[2],
            'min': min(rs), 'max': max(rs), 'n': len(rs),
            'sums': ratio(sel[name], sel['raw']) if name in sel else None}


def checks(res):
    """A pool cannot serve the same queries faster than raw connections:
    a pool / raw above 1 is noise, which the A/A measures, or a fault of
    the measurement.  One sentence for each ratio above 1, saying which."""
    out = []
    for s in res['bench']['select']:
        st, aa = ratio_stats(s), ratio_stats(s, 'raw_b')
        if not st or st['median'] <= 1.0:
            continue
        what = (f'{s["threads"]} thread(s): pool / raw '
                f'{_r(st["median"])} > 1')
        if not aa:
            out.append(f'{what}, and this run has no A/A to tell noise')
        elif st['median'] <= aa['q3'] or st['median'] - 1 <= \
                abs(aa['median'] - 1):
            out.append(f'{what}, within the noise the A/A shows '
                       f'({_r(aa["median"])}, quartiles {_r(aa["q1"])} to '
                       f'{_r(aa["q3"])})')
        else:
            out.append(f'{what}, beyond the A/A ({_r(aa["median"])}, '
                       f'quartiles {_r(aa["q1"])} to {_r(aa["q3"])}): the '
                       f'measurement is off')
    return out


def bench_command(res):
    """pool-bench's command line (runs before 'bench_command' kept it in
    'command', where run.py now writes its own)."""
    return res.get('bench_command') or res.get('command', '—')


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

    cols = [f'{s["threads"]} thread' + ('s' if s['threads'] > 1 else '')
            for s in sel]
    st = [ratio_stats(s) for s in sel]
    aa = [ratio_stats(s, 'raw_b') for s in sel]
    has_aa = any(aa)

    def q(x):
        return f'{_r(x["q1"])} to {_r(x["q3"])}' if x else '—'

    def lo_hi(x):
        return f'{_r(x["min"])} to {_r(x["max"])}' if x else '—'

    def both(s):
        rs = [rate(r['pool']) * 2 / (rate(r['raw']) + rate(r['raw_b']))
              for r in s['rounds'] if 'raw_b' in r and rate(r['raw']) and
              rate(r['raw_b'])]
        return _r(statistics.median(rs)) if rs else '—'

    rows = [['raw `PGconn`, queries/s'] + [_n(rate(s['raw'])) for s in sel]]
    if has_aa:
        rows.append(['raw `PGconn`, second set (A/A), queries/s'] +
                    [_n(rate(s['raw_b'])) if 'raw_b' in s else '—'
                     for s in sel])
    rows += [['through the pool, queries/s'] +
             [_n(rate(s['pool'])) for s in sel],
             [f'**pool / raw, median of the rounds** (goal ≥ '
              f'{res["target_ratio"]})'] +
             [f'**{_r(x["median"]) if x else "—"}**' for x in st],
             ['pool / raw: the rounds\' quartiles'] + [q(x) for x in st],
             ['pool / raw: lowest to highest round'] + [lo_hi(x) for x in st],
             ['pool / raw: ratio of the sums over all rounds'] +
             [_r(x['sums']) if x else '—' for x in st]]
    if has_aa:
        rows += [['A/A: second raw set / raw, median of the rounds '
                  '(quartiles): how far two identical loops differ here'] +
                 [f'{_r(x["median"])} ({q(x)})' if x else '—' for x in aa],
                 ['A/A: lowest to highest round'] + [lo_hi(x) for x in aa],
                 ['pool / the mean of both raw sets, median of the rounds'] +
                 [both(s) for s in sel]]
    rows += [['latency p50, raw / pool'] +
             [f'{lat(s["raw"], "p50")} / {lat(s["pool"], "p50")}'
              for s in sel],
             ['latency p99, raw / pool'] +
             [f'{lat(s["raw"], "p99")} / {lat(s["pool"], "p99")}'
              for s in sel],
             ['failures, raw / pool'] +
             [f'{s["raw"]["failures"]} / {s["pool"]["failures"]}'
              for s in sel]]
    turn = 'taking turns' if has_aa else 'alternating'
    out.append(benchlib.md_table(
        [f'`SELECT 1` loop, {b["rounds"]} rounds of {b["seconds"]} s, '
         f'{turn}'] + cols, rows))
    if has_aa:
        out.append(f'All in one process: the pool\'s {n} connections and '
                   f'two sets of {n} raw `PGconn`s (one per thread), every '
                   f'connection warmed by {b.get("warm_seconds", 0):g} s of '
                   f'the loop before anything is timed.  In each round the '
                   f'three loops take turns (raw, pool, second raw set; the '
                   f'order rotated every round, so each comes first, second '
                   f'and last as often), and the round gives one pool / raw '
                   f'ratio; the rounds are short because other work on a '
                   f'shared machine comes and goes within seconds.  The A/A '
                   f'ratio, the second raw set over the first, measures two '
                   f'identical loops: it would be 1 but for the noise, and '
                   f'its spread is the resolution of pool / raw on this '
                   f'machine.  A pool cannot run the same queries faster '
                   f'than raw connections: a pool / raw above 1 within the '
                   f'A/A\'s spread is that noise, one beyond it would be a '
                   f'fault of the measurement (the bench logs either).  '
                   f'With {n} threads on {res["cores"]} cores the threads '
                   f'and their backends share the CPUs, so per-pair wall '
                   f'time includes waiting for one.  Command: '
                   f'`{bench_command(res)}`' +
                   (f' (exit status {res["exit_status"]})'
                    if res['exit_status'] else '') + '.')
    else:
        out.append(f'Each round runs the raw loop, then the pool loop (this '
                   f'run predates the A/A loop and the rotated order).  With '
                   f'{n} threads on {res["cores"]} cores the threads and '
                   f'their backends share the CPUs, so per-pair wall time '
                   f'includes waiting for one.  Command: '
                   f'`{bench_command(res)}`'
                   + (f' (exit status {res["exit_status"]})'
                      if res['exit_status'] else '') + '.')
    warnings = checks(res)
    if warnings:
        out.append('')
        out.append('**Check:** ' + '; '.join(warnings) + '.')
    return '\n'.join(out) + '\n'


def plots(res, outdir):
    b = res['bench']
    series = []
    for s in b['select']:
        threads = f'{s["threads"]} thread' + ('s' if s['threads'] > 1 else '')
        series.append({'title': f'pool / raw, {threads}', 'points':
                       [(i + 1, r) for i, r in enumerate(round_ratios(s))]})
        aa = round_ratios(s, 'raw_b')
        if aa:
            series.append({'title': f'A/A raw / raw, {threads}',
                           'style': 'dashed', 'points':
                           [(i + 1, r) for i, r in enumerate(aa)]})
    n = b['rounds']
    series.append({'title': f'goal {res["target_ratio"]}', 'style': 'lines',
                   'points': [(0.5, res['target_ratio']),
                              (n + 0.5, res['target_ratio'])]})
    png = 'pool-rounds.png'
    benchlib.plot(os.path.join(outdir, png),
                  'SELECT 1 through the pool / on raw PGconns, per round',
                  'round', 'queries/s ratio', series, xrange=(0.5, n + 0.5))
    return [(png, f'Pool / raw and A/A queries/s in each of the {n} rounds '
             f'of {b["seconds"]} s' if any(round_ratios(s, 'raw_b')
                                            for s in b['select']) else
             f'Pool / raw queries/s in each of the {n} alternating rounds of '
             f'{b["seconds"]} s')]


def headline(res):
    b = res['bench']
    rows = []
    pairs = ', '.join(_ns(p['seconds'] * p['threads'] * 1e9 / p['ops'])
                      if p['ops'] else '—' for p in b['pairs'])
    threads = ' / '.join(str(p['threads']) for p in b['pairs'])
    rows.append([f'pool: acquire + release, {threads} thread(s)', pairs,
                 '—', '—'])
    for s in b['select']:
        st, aa = ratio_stats(s), ratio_stats(s, 'raw_b')
        rows.append([f'`SELECT 1` through the pool, {s["threads"]} '
                     f'thread(s), queries/s (ratio: median of {st["n"]} '
                     f'rounds, quartiles {_r(st["q1"])} to {_r(st["q3"])}; ' +
                     (f'A/A raw / raw: {_r(aa["median"])}, quartiles '
                      f'{_r(aa["q1"])} to {_r(aa["q3"])})' if aa else
                      'no A/A in this run)'), _n(rate(s['pool'])),
                     f'raw persistent `PGconn`: {_n(rate(s["raw"]))}',
                     benchlib.fmt_ratio(st['median'], 3)])
    return rows
