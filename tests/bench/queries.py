"""Queries during rotation: an app's queries through a libdbswap pool in
steady state, then while the password is rotated every second (section
'queries' of tests/bench/run.py).

A throwaway PostgreSQL, dbswapd with one env file, and pool-load
($DBSWAP_POOL_LOAD, tests/helpers/pool-load.c): THREADS threads on a pool
of min = max = THREADS, each looping acquire, SELECT 1 or (every other
iteration) a short transaction, release, then a PAUSE_MS pause.  First D
seconds in steady state; then a second pool-load for D seconds while this
script rotates the password every ROTATE_EVERY seconds: ALTER ROLE on a
persistent psql session, then the env file renamed in (the order of a
real rotation), each rotation's ack by the pool timed from the rename by
polling the agent's status.  After the last rotation the load runs until
the pool has acked it.

Why a pause: THREADS threads querying back to back and their THREADS
backends saturate a 2-core machine; the rate is then set by the CPUs, and
the rotation's SCRAM handshakes (the agent's validation, the pool's new
connections) show up as CPU contention of the whole machine.  With a short
pause the load leaves CPU free, the rate is set by the app, and what a
rotation costs the app shows as lost queries/s and as latency."""

import os
import re
import shlex
import time

import benchlib
import harness as h
from common import PoolLoad
from test_pool import Psql  # one psql session: an ALTER ROLE in a few ms

NAME = 'queries'
TITLE = 'Queries during rotation'

TARGET = 'DATABASE_URL'
THREADS = 8
PAUSE_MS = 1
ROTATE_EVERY = 1.0
STATUS_POLL_S = 0.005
MAX_ARROWS = 20  # rotation marks on the plot


def cpu_times():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + (v[4] if len(v) > 4 else 0)  # idle + iowait
    return sum(v) - idle, sum(v)


def cpu_busy(before, after):
    busy, total = (a - b for a, b in zip(after, before))
    return busy / total if total else None


def load_args(progress_ms):
    return ['--threads', THREADS, '--min', THREADS, '--max', THREADS,
            '--tx', '--pause-ms', PAUSE_MS, '--progress-ms', progress_ms]


def in_use(t, seq):
    """Whether the status entry t shows a value read at agent evaluation
    seq (or later) published and acked by the one subscriber."""
    return (seq is not None and t['published_seq'] >= seq and
            t['subscribers'] == t['acked'] == 1)


def progress_of(load):
    """pool-load's progress lines: [[mono, t, queries, failures,
    generation], ...]."""
    return [[m['mono'], m['t'], m['queries'], m['failures'], m['generation']]
            for _, m in load.timeline()]


def steady_run(agent, status, seconds, progress_ms):
    h.wait_for(lambda: h.target_status(status, TARGET)['generation'] >= 1,
               timeout=10, what='a first generation')
    c0 = cpu_times()
    load = PoolLoad(agent.sock, args=load_args(progress_ms) +
                    ['--seconds', seconds], name='bench-steady')
    try:
        rc, final = load.wait_exit(timeout=seconds + 60)
        busy = cpu_busy(c0, cpu_times())
        progress = progress_of(load)
    finally:
        load.close()
    return {'exit_status': rc, 'final': final, 'progress': progress,
            'cpu_busy': busy}


def rotating_run(pg, psql, role, env, agent, status, seconds,
                 progress_ms):
    """Rotations at 0.5, 1.5, ... s after the load's threads started, for
    `seconds`; then waits until the pool acked the last and stops the load
    at `seconds` (or at that ack if later).

    The agent's generations do not count rotations: a value written while
    the previous one is being validated supersedes it.  So a rotation is
    followed by the agent's evaluation sequence: value_seq in the status
    once the agent has read the file, in use once published_seq reaches it
    and the pool acked the generation."""
    def target():
        return h.target_status(status, TARGET)

    load = PoolLoad(agent.sock, args=load_args(progress_ms),
                    name='bench-rotating')
    try:
        first = load.wait_progress(lambda p: True, what='a first line')
        start = first['mono'] - first['t']  # the threads' start
        c0 = cpu_times()
        t = h.wait_for(lambda: (t := target())['generation'] >= 1 and
                       in_use(t, t['value_seq']) and t, timeout=10,
                       interval=STATUS_POLL_S, what='the pool in use')
        seq_before = t['value_seq']
        rotations = []  # [{'t', 'alter_ms', 'seq', 'ack_ms'}], None: not seen
        k = 0
        while 0.5 + k * ROTATE_EVERY < seconds:
            at = start + 0.5 + k * ROTATE_EVERY
            time.sleep(max(0.0, at - time.monotonic()))
            password = h.secrets.token_hex(8)
            t_alter = time.monotonic()
            psql.set_password(role, password)
            t_write = time.monotonic()
            h.write_rename(env, f'{TARGET}={pg.url(role, password)}\n')
            k += 1
            rot = {'t': t_write - start, 'alter_ms':
                   (t_write - t_alter) * 1000, 'seq': None, 'ack_ms': None}
            rotations.append(rot)
            # Followed until the next rotation is due; the last one below.
            next_at = start + 0.5 + k * ROTATE_EVERY
            while time.monotonic() < next_at:
                load.check_alive()
                t = target()
                if rot['seq'] is None and t['value_seq'] > seq_before:
                    rot['seq'] = seq_before = t['value_seq']
                if in_use(t, rot['seq']):
                    rot['ack_ms'] = (time.monotonic() - t_write) * 1000
                    break
                time.sleep(STATUS_POLL_S)
        last = rotations[-1] if rotations else None
        if last and last['ack_ms'] is None:
            def done():
                t = target()
                if last['seq'] is None and t['value_seq'] > seq_before:
                    last['seq'] = t['value_seq']
                return in_use(t, last['seq'])
            try:
                h.wait_for(done, timeout=30, interval=STATUS_POLL_S,
                           what='the pool to ack the last rotation')
            except AssertionError as e:
                raise RuntimeError(
                    f'{e}; status {target()!r}; agent log:\n'
                    f'{h._tail(agent.log(), 30)}; {load.describe()}') \
                    from None
            last['ack_ms'] = (time.monotonic() - start - last['t']) * 1000
        generation = target()['generation']
        time.sleep(max(0.0, start + seconds - time.monotonic()))
        rc, final = load.stop()
        busy = cpu_busy(c0, cpu_times())
        progress = progress_of(load)
        log = agent.log()
    finally:
        load.close()
    return {'exit_status': rc, 'final': final, 'progress': progress,
            'cpu_busy': busy, 'rotations': rotations,
            'last_generation': generation,
            'first_generation': first['generation'],
            # Generations the pool could not use: the password had changed
            # again before it connected (the old value stays in use).
            'nacks': len(re.findall(r'bench-rotating\) cannot switch to',
                                    log))}


def run(ctx):
    seconds = ctx.pick(10, 60)
    progress_ms = ctx.pick(100, 250)
    res = {'threads': THREADS, 'pause_ms': PAUSE_MS, 'load_seconds': seconds,
           'rotate_every_s': ROTATE_EVERY, 'progress_ms': progress_ms,
           'status_poll_ms': STATUS_POLL_S * 1000, 'cores': os.cpu_count(),
           'command': shlex.join(['pool-load', '--socket', 'SOCK',
                                  '--target', TARGET] +
                                 [str(a) for a in load_args(progress_ms)])}
    with h.PgCluster() as pg:
        role, password = 'bench_queries', h.secrets.token_hex(8)
        pg.create_role(role, password)
        env = os.path.join(ctx.tmp, 'db.env')
        h.write_rename(env, f'{TARGET}={pg.url(role, password)}\n')
        psql = Psql(pg)
        try:
            with h.Agent(env_files=[env]) as agent, \
                    agent.client(name='bench-status') as status:
                agent.wait_log(rf'{TARGET}: generation 1 published')
                ctx.log(f'steady state, {seconds} s')
                res['steady'] = steady_run(agent, status, seconds,
                                           progress_ms)
                ctx.log(f'rotating every {ROTATE_EVERY:g} s, {seconds} s')
                res['rotating'] = rotating_run(pg, psql, role, env,
                                               agent, status, seconds,
                                               progress_ms)
        finally:
            psql.close()
    for key in ('steady', 'rotating'):
        f = res[key]['final']
        ctx.log(f'{key}: {qps(res[key]):.0f} queries/s, latency '
                f'{f["latency_us"]}, {f["failures"]} failed')
    return res


def qps(run):
    """Queries per second over the run's progress lines (from the threads'
    start to the last line)."""
    p = run['progress']
    return p[-1][2] / p[-1][1] if p and p[-1][1] > 0 else None


def series(run):
    """[(seconds since the threads started, queries/s in the interval
    ending there)] from the progress lines."""
    out, prev = [], (0.0, 0)
    for mono, t, q, _, _ in run['progress']:
        if t > prev[0]:
            out.append((round(t, 3), round((q - prev[1]) / (t - prev[0]), 1)))
        prev = (t, q)
    return out


def _ratio(a, b):
    return a / b if a is not None and b else None


def _us(x):
    return benchlib.fmt_ms(None if x is None else x / 1000, 2)


def markdown(res):
    st, ro = res['steady'], res['rotating']
    rots = ro['rotations']
    acks = [r['ack_ms'] for r in rots if r['ack_ms'] is not None]
    rows = []
    for label, run in (('steady state', st),
                       (f'password rotated every {res["rotate_every_s"]:g} s',
                        ro)):
        lat = run['final']['latency_us']
        rows.append([label, f'{qps(run):.0f}', _us(lat['p50']),
                     _us(lat['p99']), _us(lat['max']),
                     run['final']['failures'],
                     '—' if run['cpu_busy'] is None
                     else f'{run["cpu_busy"] * 100:.0f} %'])
    ls, lr = st['final']['latency_us'], ro['final']['latency_us']
    rows.append(['rotating / steady',
                 benchlib.fmt_ratio(_ratio(qps(ro), qps(st))),
                 benchlib.fmt_ratio(_ratio(lr['p50'], ls['p50'])),
                 benchlib.fmt_ratio(_ratio(lr['p99'], ls['p99'])),
                 benchlib.fmt_ratio(_ratio(lr['max'], ls['max'])), '', ''])
    n = res['threads']
    out = [f'{n} threads through one libdbswap pool (min = max = {n}) in '
           f'pool-load, each looping: acquire, `SELECT 1` or (every other '
           f'iteration) `BEGIN; SELECT pg_backend_pid(); COMMIT`, release, '
           f'then a {res["pause_ms"]} ms pause.  {res["load_seconds"]} s in '
           f'steady state, then {res["load_seconds"]} s (a second pool-load) '
           f'while the password changes every {res["rotate_every_s"]:g} s: '
           f'`ALTER ROLE` on a persistent psql session, then the env file '
           f'renamed in.  Latency: acquire to release of a successful '
           f'iteration.', '',
           benchlib.md_table(
               [f'{n} threads', 'queries/s', 'p50', 'p99', 'max',
                'failed queries', 'machine CPU busy'], rows)]
    sa = benchlib.summary(acks)
    fr = ro['final']
    last = rots[-1] if rots else None
    published = ro['last_generation'] - ro['first_generation']
    text = (f'{len(rots)} rotations; from the rename of the env file to the '
            f'pool\'s ack of it or a newer value (the agent validated it, the '
            f'pool opened {n} connections with it and drained the old ones): '
            f'p50 {benchlib.fmt_ms(sa["p50"])}, max '
            f'{benchlib.fmt_ms(sa["max"])}; {len(acks)} of {len(rots)} were '
            f'in use before the next rotation was due (status polled every '
            f'{res["status_poll_ms"]:g} ms).  The agent published '
            f'{published} new generations for them (a value written while '
            f'the one before is being validated supersedes it); ' +
            (f'the pool could not use {ro["nacks"]} of them (nacked: the '
             f'password had changed again before it connected; it stays on '
             f'the value it has, whose sessions live on).' if ro['nacks']
             else 'the pool switched to each one it was sent.'))
    if last:
        text += (f'  The last rotation was in use '
                 f'{benchlib.fmt_ms(last["ack_ms"])} after its rename; '
                 f'the pool ended on generation {fr["generation"]} (the '
                 f'agent\'s: {ro["last_generation"]}) with '
                 f'{fr["stats"]["old"]} old connection(s), '
                 f'{fr["stats"]["switches"]} switches and '
                 f'{fr["stats"]["opened"]} connections opened in all.')
    out += [text, '',
            f'The pause keeps the load below what {res["cores"]} cores can '
            f'do: without it, {n} threads querying back to back and their '
            f'{n} backends saturate the machine, the rate is set by the CPUs '
            f'and a rotation\'s SCRAM handshakes show as contention of the '
            f'whole machine.  With it the rate is set by the app, and what a '
            f'rotation costs the app shows as lost queries/s and latency.  '
            f'Command: `{res["command"]}`, with `--seconds '
            f'{res["load_seconds"]}` for the steady run.']
    return '\n'.join(out) + '\n'


def plots(res, outdir):
    st, ro = res['steady'], res['rotating']
    steady_rate = qps(st)
    end = max([p[1] for p in ro['progress']] + [res['load_seconds']])
    sers = [{'title': 'password rotated every '
             f'{res["rotate_every_s"]:g} s', 'points': series(ro),
             'style': 'lines'},
            {'title': 'steady state (its own run)', 'points': series(st),
             'style': 'lines'},
            {'title': 'steady state, mean', 'style': 'lines',
             'points': [(0, steady_rate), (end, steady_rate)]}]
    # One dashed line per rename, unlabelled (labels would crowd the
    # plot; the caption says what they are); beyond MAX_ARROWS they would
    # hide the curves, and the rotations are regular anyway.
    rots = ro['rotations']
    arrows = [(round(r['t'], 3), '') for r in rots] \
        if len(rots) <= MAX_ARROWS else []
    png = 'queries-rotation.png'
    benchlib.plot(os.path.join(outdir, png),
                  f'{res["threads"]} threads through the pool: queries/s '
                  f'every {res["progress_ms"]} ms',
                  'seconds since the load started', 'queries/s', sers,
                  yrange=(0, None), xrange=(0, end), arrows=arrows,
                  size=(1000, 500))
    if arrows:
        when = 'dashed lines: the renames'
    elif rots:
        when = (f'renames at {rots[0]["t"]:.1f} s, then every '
                f'{res["rotate_every_s"]:g} s')
    else:
        when = 'no rotation'
    return [(png, f'Queries/s through the pool, in {res["progress_ms"]} ms '
             f'intervals, while the password changes every '
             f'{res["rotate_every_s"]:g} s ({when}), against a steady-state '
             f'run')]


def headline(res):
    st, ro = res['steady'], res['rotating']
    ls, lr = st['final']['latency_us'], ro['final']['latency_us']
    return [[f'{res["threads"]} threads through a pool while the password '
             f'changes every {res["rotate_every_s"]:g} s: failed queries, '
             f'queries/s, p99',
             f'{ro["final"]["failures"]}, {qps(ro):.0f}/s, p99 '
             f'{_us(lr["p99"])}',
             f'steady state: {st["final"]["failures"]}, {qps(st):.0f}/s, '
             f'p99 {_us(ls["p99"])}',
             f'{benchlib.fmt_ratio(_ratio(qps(ro), qps(st)))} queries/s']]
