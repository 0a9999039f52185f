"""The Go pool: pgxswap.Pool (client-lib/go) against a plain pgxpool.Pool
on the same server, and one password rotation under load through it
(section 'go' of tests/bench/run.py).  What is shared with section
'python' (tests/bench/python.py) is here too: the throughput driver and
its tables, and the rotation under load.

Throughput: one `pgxload bench` process (client-lib/go/internal/cmd/
pgxload/bench.go, read its header) with three pools of max = min = MAX,
MAX connections open: a pgxpool.Pool on the role's connection string,
a pgxswap.Pool following the agent, and a second pgxpool.Pool (an A/A
comparison: the resolution of the measurement on this machine).  For
each of LOOPS_LIST goroutines doing QueryRow("SELECT 1").Scan, many short
rounds in which the pools take turns (the order rotated every round), so
that the noise of a shared machine weighs on all alike; the ratio is the
median of the rounds' ratios, with the spread, and the ratio of the sums.

Rotation: as node.py's (read its header): a role, an env file and an
agent of its own; `pgxload load` runs (test_go.py's GoLoad, the same
load as node.py's LOAD_ARGS: 8 goroutines on min = max = 8, every other
iteration a transaction, 1 ms pause), then ALTER ROLE on a persistent
superuser session, the new env file renamed in (the clock starts at the
rename), and every POLL_S the agent's status (the pool's ack of the new
value) and pg_stat_activity (the role's backends that started before the
ALTER ROLE: old-password logins), until both are done.  In full mode the
libdbswap pool (pool-load) takes the same rotations in the same run, for
comparison (quick mode leaves it to section 'node')."""

import json
import os
import shlex
import statistics
import subprocess

import benchlib
import harness as h
from common import PoolLoad
from node import (POLL_S, TARGET, _load, _n, _r, _us, median_latency, rate,
                  ratio_stats, rotation_kind, sums)
from peers import OldConnections

NAME = 'go'
TITLE = 'Go pool'

# The goal for SELECT 1 through the adapter against the plain driver's
# pool, as for the C and Node pools.
TARGET_RATIO = 0.97
LOOPS_LIST = [1, 8]
MAX = 8
# The rotation's load: node.py's, so that the figures compare.
THREADS = 8
PAUSE_MS = 1
PROGRESS_MS = 100
LOAD_ARGS = ['--loops', THREADS, '--min', THREADS, '--max', THREADS,
             '--tx', '--pause-ms', PAUSE_MS, '--progress-ms', PROGRESS_MS]
C_LOAD_ARGS = ['--threads', THREADS, '--min', THREADS, '--max', THREADS,
               '--tx', '--pause-ms', PAUSE_MS, '--progress-ms', PROGRESS_MS]

# How this section names its pools in the tables.
SPEC = {
    'lang': 'Go',
    'base': 'pgx', 'base_b': 'pgx_b',
    'base_label': '`pgxpool.Pool`',
    'ours_label': '`pgxswap.Pool`',
    'unit': 'goroutine',
    'kinds': [('go', '`pgxswap.Pool` (pgxload load)'),
              ('c', 'libdbswap pool (pool-load)')],
}


def params(ctx):
    # Short turns, many rounds: other work on a shared machine comes and
    # goes within seconds, and each round's pools should see the same.
    return {'rounds': ctx.pick(3, 30), 'seconds': ctx.pick(0.4, 0.5),
            'warmup_seconds': ctx.pick(0.3, 1)}


# --------------------------------------------------------------------------
# Throughput

def run_worker(ctx, argv, url, p, what):
    """Runs a bench worker (pgxload bench, py-bench.py bench) with the
    connection string on its stdin; returns its JSON lines."""
    budget = (len(LOOPS_LIST) * 3 * (p['warmup_seconds'] +
                                     p['rounds'] * p['seconds']) + 60)
    r = subprocess.run(argv, input=url + '\n', capture_output=True,
                       text=True, timeout=budget * h.TIMEOUT_SCALE)
    lines = []
    for line in r.stdout.splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            pass
    if r.returncode != 0 or not any('end' in m for m in lines):
        raise RuntimeError(f'{what} exited with status {r.returncode}: '
                           f'{r.stderr.strip()[-800:]}')
    return lines


def throughput(ctx, pg, tmp, spec, argv_of, role, what):
    """The bench worker's rounds through an agent of its own: argv_of(sock)
    is its command line."""
    p = params(ctx)
    password = h.secrets.token_hex(8)
    pg.create_role(role, password)
    url = pg.url(role, password)
    env = os.path.join(tmp, f'{role}.env')
    h.write_rename(env, f'{TARGET}={url}\n')
    out = {**p, 'max': MAX, 'loadavg_before': os.getloadavg()}
    with h.Agent(env_files=[env]) as agent:
        agent.wait_log(rf'{TARGET}: generation 1 published')
        argv = argv_of(agent.sock, p)
        lines = run_worker(ctx, argv, url, p, what)
    out['loadavg_after'] = os.getloadavg()
    out['ready'] = next(m for m in lines if m.get('ready'))
    out['select'] = [{'loops': m['loops'], 'rounds': m['rounds']}
                     for m in lines if 'rounds' in m]
    out['dbswap_stats'] = next(m for m in lines if m.get('end'))['stats']
    base = spec['base']
    for s in out['select']:
        st = ratio_stats(s['rounds'], 'dbswap', base)
        ctx.log(f'SELECT 1, {units(spec, s["loops"])}: {base} '
                f'{sums(s["rounds"], base)["rate"]:.0f}/s, dbswap '
                f'{sums(s["rounds"], "dbswap")["rate"]:.0f}/s; ratio median '
                f'{st["median"]:.3f} ({st["min"]:.3f} to {st["max"]:.3f}), '
                f'of the sums {st["sums"]:.3f}')
    return out


# --------------------------------------------------------------------------
# One rotation under load

def rotation(ctx, pg, tmp, loads, commands):
    """loads: [(kind, start_load)]; in quick mode only the first (the
    adapter's; the C pool's is in section 'node')."""
    rotations = ctx.pick(1, 5)
    pre = ctx.pick(1.5, 3)
    gap = ctx.pick(1.5, 3)
    if ctx.quick:
        loads = loads[:1]
    out = {'rotations': rotations, 'pre_s': pre, 'gap_s': gap,
           'poll_ms': POLL_S * 1000, 'threads': THREADS,
           'pause_ms': PAUSE_MS, 'kinds': {}, 'command': commands}
    mon = OldConnections(pg)
    try:
        for kind, start_load in loads:
            ctx.log(f'rotation, {kind}: {rotations} rotation(s) under load')
            out['kinds'][kind] = rotation_kind(ctx, pg, mon, kind, tmp,
                                               rotations, pre, gap,
                                               start_load)
    finally:
        mon.close()
    return out


def c_load(sock, name):
    return PoolLoad(sock, args=C_LOAD_ARGS, name=name, target=TARGET)


C_COMMAND = shlex.join(['pool-load', '--socket', 'SOCK', '--target', TARGET]
                       + [str(a) for a in C_LOAD_ARGS])


# --------------------------------------------------------------------------

def run(ctx):
    # test_go's helpers: the go command, its environment, pgxload built
    # once into a temp dir.
    from test_go import GoLoad, go_binary, go_env, pgxload
    go = go_binary()
    version = subprocess.run([go, 'env', 'GOVERSION'], capture_output=True,
                             text=True, env=go_env()).stdout.strip()
    binary = pgxload()

    def argv_of(sock, p):
        return [binary, 'bench', '--socket', sock, '--target', TARGET,
                '--max', str(MAX), '--loops', ','.join(map(str, LOOPS_LIST)),
                '--rounds', str(p['rounds']), '--seconds', str(p['seconds']),
                '--warmup', str(p['warmup_seconds'])]

    def go_load(sock, name):
        return GoLoad(sock, LOAD_ARGS, name=name, target=TARGET)

    res = {'go': version, 'cores': os.cpu_count(),
           'target_ratio': TARGET_RATIO, 'max': MAX, 'loops': LOOPS_LIST}
    with h.PgCluster() as pg:
        res['throughput'] = throughput(ctx, pg, ctx.tmp, SPEC, argv_of,
                                       'bench_go', 'pgxload bench')
        res['throughput']['command'] = (
            f'pgxload bench --socket SOCK --target {TARGET} --max {MAX} '
            f'--loops {",".join(map(str, LOOPS_LIST))} --rounds R --seconds '
            f'S --warmup S < connection-string')
        res['rotation'] = rotation(
            ctx, pg, ctx.tmp, [('go', go_load), ('c', c_load)],
            {'go': shlex.join(['pgxload', 'load', '--socket', 'SOCK',
                               '--target', TARGET] +
                              [str(a) for a in LOAD_ARGS]),
             'c': C_COMMAND})
    res['loadavg_end'] = os.getloadavg()
    return res


# --------------------------------------------------------------------------
# Figures (shared with python.py)

def units(spec, n):
    return f'{n} {spec["unit"]}' + ('s' if n > 1 else '')


def _med(vs):
    vs = [v for v in vs if v is not None]
    return statistics.median(vs) if vs else None


def mean_ratio(rounds, spec):
    """The adapter's queries/s over the mean of both plain pools', median
    of the rounds: less of one plain pool's noise than the ratio to it."""
    a, b = spec['base'], spec['base_b']
    rs = [rate(r['dbswap']) * 2 / (rate(r[a]) + rate(r[b])) for r in rounds
          if rate(r[a]) and rate(r[b])]
    return statistics.median(rs) if rs else None


def throughput_table(res, spec):
    b = res['throughput']
    base, bb = spec['base'], spec['base_b']
    bl, ol = spec['base_label'], spec['ours_label']
    sel = b['select']
    cols = [units(spec, s['loops']) for s in sel]
    st = [ratio_stats(s['rounds'], 'dbswap', base) for s in sel]
    aa = [ratio_stats(s['rounds'], bb, base) for s in sel]
    su = [(sums(s['rounds'], base), sums(s['rounds'], 'dbswap'))
          for s in sel]
    rows = [[f'{bl}, queries/s'] + [_n(p['rate']) for p, _ in su],
            [f'{ol}, queries/s'] + [_n(d['rate']) for _, d in su],
            [f'**{ol} / {bl}, median of the rounds** (goal '
             f'≥ {res["target_ratio"]})'] +
            [f'**{_r(x["median"])}**' for x in st],
            ['the rounds\' ratios: quartiles'] +
            [f'{_r(x["q1"])} to {_r(x["q3"])}' for x in st],
            ['the rounds\' ratios: lowest to highest'] +
            [f'{_r(x["min"])} to {_r(x["max"])}' for x in st],
            ['ratio of the sums over all rounds'] +
            [_r(x['sums']) for x in st],
            [f'A/A: a second {bl} / {bl}, median of the rounds (quartiles): '
             f'how far two identical pools differ here'] +
            [f'{_r(x["median"])} ({_r(x["q1"])} to {_r(x["q3"])})'
             for x in aa],
            [f'{ol} / the mean of both {bl}s, median of the rounds'] +
            [_r(mean_ratio(s['rounds'], spec)) for s in sel],
            [f'CPU time per query (the whole process: driver, pool, GC), '
             f'{bl} / {ol}'] +
            [f'{_us(p["cpu_us"])} / {_us(d["cpu_us"])}' for p, d in su],
            [f'latency p50, {bl} / {ol} (median of the rounds)'] +
            [f'{_n(median_latency(s["rounds"], base, "p50"))} / '
             f'{_n(median_latency(s["rounds"], "dbswap", "p50"))} µs'
             for s in sel],
            [f'latency p99, {bl} / {ol} (median of the rounds)'] +
            [f'{_n(median_latency(s["rounds"], base, "p99"))} / '
             f'{_n(median_latency(s["rounds"], "dbswap", "p99"))} µs'
             for s in sel],
            [f'failures, {bl} / {ol}'] +
            [f'{p["failures"]} / {d["failures"]}' for p, d in su]]
    return benchlib.md_table(
        [f'`SELECT 1`, {b["rounds"]} rounds of {b["seconds"]:g} s per pool']
        + cols, rows)


def rotation_table(res, spec):
    ro = res['rotation']
    rows = []
    for kind, label in spec['kinds']:
        k = ro['kinds'].get(kind)
        if not k:
            continue
        rots = k['rotations']
        gone = [r['old_gone_ms'] for r in rots]
        acked = [r['acked_ms'] for r in rots]

        def worst(vs):
            return None if not vs or None in vs else max(vs)

        before = _med([r['rate_before'] for r in rots])
        low = [r['lowest_rate_after'] for r in rots
               if r['lowest_rate_after'] is not None]
        rows.append([label, k['failures'],
                     '/'.join(str(r['old_at_rotation']) for r in rots),
                     f'{benchlib.fmt_ms(_med(gone))} / '
                     f'{benchlib.fmt_ms(worst(gone))}',
                     f'{benchlib.fmt_ms(_med(acked))} / '
                     f'{benchlib.fmt_ms(worst(acked))}',
                     _n(before),
                     f'{min(low):.0f}' + (f' ({min(low) / before * 100:.0f}%)'
                                          if before else '')
                     if low else '—'])
    out = [benchlib.md_table(
        ['pool', 'failed queries', 'old-password connections at each '
         'rotation', 'all old-password connections gone after: median / '
         'worst', 'new value acked after: median / worst',
         'queries/s before', f'lowest queries/s in the {ro["gap_s"]:g} s '
         f'after (100 ms bins)'], rows, 'lrrrrrr')]
    cmds = ' and '.join(f'`{ro["command"][k]}`' for k, _ in spec['kinds']
                        if k in ro['kinds'])
    out.append(f'{ro["rotations"]} rotation(s) for each pool, '
               f'{ro["gap_s"]:g} s apart, under the same load as section '
               f'Node.js pool\'s: {ro["threads"]} {spec["unit"]}s on min = '
               f'max = {ro["threads"]} connections, `SELECT 1` and every '
               f'other iteration `BEGIN; SELECT pg_backend_pid(); COMMIT`, '
               f'{ro["pause_ms"]} ms pause.  Each: `ALTER ROLE` on a '
               f'persistent superuser session, then the env file renamed '
               f'in; the clock starts at the rename.  Old-password '
               f'connections: the role\'s client backends in '
               f'`pg_stat_activity` that started before the `ALTER ROLE`; '
               f'acked: the agent\'s status shows the new value acked by the '
               f'pool; both polled every {ro["poll_ms"]:g} ms.' +
               ('' if 'c' in ro['kinds'] else '  (Quick mode: the '
                'libdbswap pool\'s row is in section Node.js pool.)') +
               f'  Commands: {cmds}.')
    return '\n'.join(out)


def markdown(res):
    b = res['throughput']
    r = b['ready']
    out = [f'pgxload bench (`client-lib/go/internal/cmd/pgxload/bench.go`), '
           f'{res["go"]}, pgx {r["pgx"]}, GOMAXPROCS {r["gomaxprocs"]}: a '
           f'plain `pgxpool.Pool` on the role\'s connection string, '
           f'`pgxswap.Pool` following the agent and a second '
           f'`pgxpool.Pool`, all in one process, taking turns; each pool '
           f'MaxConns = MinConns = {b["max"]}, {b["max"]} connections open '
           f'before anything is measured; loopback PostgreSQL, '
           f'{res["cores"]} cores.  An iteration is `pool.QueryRow(ctx, '
           f'"SELECT 1").Scan(&one)`: checkout, query, release.', '',
           throughput_table(res, SPEC),
           f'The pools take turns within each round (the order rotated '
           f'every round), in rounds this short because other work on a '
           f'shared machine comes and goes within seconds; each round gives '
           f'one ratio.  The second `pgxpool.Pool` takes its turn too: its '
           f'ratio to the first is the resolution of this measurement here.  '
           f'Load average (1, 5, 15 min) before / after: '
           f'{_load(b.get("loadavg_before"))} / '
           f'{_load(b.get("loadavg_after"))}.  Command: '
           f'`{b["command"]}`.', '',
           rotation_table(res, SPEC)]
    return '\n'.join(out) + '\n'


def rounds_plot(res, outdir, spec, png, title):
    series = []
    base = spec['base']
    for s in res['throughput']['select']:
        rs = [rate(r['dbswap']) / rate(r[base]) for r in s['rounds']
              if rate(r[base])]
        series.append({'title': units(spec, s['loops']),
                       'points': list(enumerate(rs, 1))})
        rs = [rate(r[spec['base_b']]) / rate(r[base]) for r in s['rounds']
              if rate(r[base])]
        series.append({'title': f'{units(spec, s["loops"])}, A/A',
                       'style': 'dashed', 'points': list(enumerate(rs, 1))})
    n = res['throughput']['rounds']
    series.append({'title': f'goal {res["target_ratio"]}', 'style': 'lines',
                   'points': [(0.5, res['target_ratio']),
                              (n + 0.5, res['target_ratio'])]})
    benchlib.plot(os.path.join(outdir, png), title, 'round',
                  'adapter / plain pool queries/s', series,
                  xrange=(0.5, n + 0.5))
    return [(png, f'{title}, in each of the {n} rounds of '
             f'{res["throughput"]["seconds"]:g} s')]


def plots(res, outdir):
    return rounds_plot(res, outdir, SPEC, 'go-rounds.png',
                       'SELECT 1 through pgxswap.Pool / through '
                       'pgxpool.Pool, per round')


def headlines(res, spec, ours_kind):
    rows = []
    base = spec['base']
    for s in res['throughput']['select']:
        st = ratio_stats(s['rounds'], 'dbswap', base)
        aa = ratio_stats(s['rounds'], spec['base_b'], base)
        p, d = sums(s['rounds'], base), sums(s['rounds'], 'dbswap')
        rows.append([f'{spec["lang"]}: `SELECT 1` through '
                     f'{spec["ours_label"]}, {units(spec, s["loops"])}, '
                     f'queries/s (ratio: median of {st["n"]} rounds, '
                     f'quartiles {_r(st["q1"])} to {_r(st["q3"])}; A/A '
                     f'{spec["base_label"]} / {spec["base_label"]}: '
                     f'{_r(aa["median"])}; against the mean of both: '
                     f'{_r(mean_ratio(s["rounds"], spec))})', _n(d['rate']),
                     f'{spec["base_label"]}: {_n(p["rate"])}',
                     benchlib.fmt_ratio(st['median'], 3)])
    kinds = res['rotation']['kinds']
    k, c = kinds.get(ours_kind), kinds.get('c')
    if k:
        def med(kk, key):
            return _med([r[key] for r in kk['rotations']])
        ours = (f'{k["failures"]} failed; '
                f'{benchlib.fmt_ms(med(k, "old_gone_ms"))}, acked '
                f'{benchlib.fmt_ms(med(k, "acked_ms"))}')
        theirs = ratio = '—'
        if c:
            theirs = (f'libdbswap pool: {c["failures"]} failed; '
                      f'{benchlib.fmt_ms(med(c, "old_gone_ms"))}, acked '
                      f'{benchlib.fmt_ms(med(c, "acked_ms"))}')
            a, b = med(k, 'old_gone_ms'), med(c, 'old_gone_ms')
            ratio = benchlib.fmt_ratio(a / b if a and b else None)
        rows.append([f'{spec["lang"]} {spec["ours_label"]}, one rotation '
                     f'under load ({THREADS} {spec["unit"]}s): failed '
                     f'queries; every connection on the new password after, '
                     f'median', ours, theirs, ratio])
    return rows


def headline(res):
    return headlines(res, SPEC, 'go')
