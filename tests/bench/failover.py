"""Failover: a primary crashed (`pg_ctl stop -m immediate`, and `kill -9`
of the postmaster alone) and a primary hung (SIGSTOP of the postmaster
and every backend), under load, with dbswap and with libpq's own
multi-host failover; next to the worst case of a design that polls.

Two throwaway clusters with the same role and password.

dbswap: dbswapd with DATABASE_URL and DATABASE_URL_SECONDARY; the app is
pool-load (libdbswap pool of 4, 4 threads of SELECT 1 and short
transactions, 2 ms pause).  Every round has an agent and a pool-load of
its own, started against two servers up: a first fault after a quiet
time, as in production (one agent through every round would hold the
restarted primary longer each time, as a crash loop: health.h's flaps).
While the fault lasts the agent's status is polled every 2 ms for when
the primary is seen suspect, then down, the secondary published, and
acked by every subscriber.  Crash rounds: the DEFAULT settings, the
primary stopped one way or the other and started again after the round.
Hang rounds: one with short settings (interval 300 ms, timeout 500 ms;
then SIGCONT and the automatic failback, timed), and one (quick) or three
(full) with the defaults, each started at a random point of the
heartbeat's second.

A hang is caught by the heartbeat: a cheap query on the agent's monitor
connection every min(1 s, check interval).  Unanswered after the late time
(min(1 s, timeout / 2)) it starts the confirming checks, on fresh
connections 250 ms apart, up to the threshold in flight counting the late
one, while it waits out its timeout; the threshold-th failure is the
server down.  Worst case from the hang: pace + late + (threshold - 2) x
250 ms + timeout (threshold 1: pace + timeout): 7.25 s with the defaults.

libpq multi-host: libpq-load (the same load on 4 plain libpq connections,
`host=primary,secondary target_session_attrs=read-write`, reconnecting on
error, as an app without dbswap would), a fresh process every round.
Crash rounds alternate with dbswap's, the same faults the same way.  Hang:
one round, how long it stays blocked (it never recovers by itself: the
window is bounded here).

"Queries flow again", for both alike: from the fault to the first of the
load generator's progress lines (every 5 ms) by which every failed query
of the round has failed and queries went through since the line before.
libpq-load also says when each of its threads had a query through again
after its failure (exact): reported beside it.  Queries/s over time come
from the same lines, 100 ms apart."""

import os
import random
import re
import statistics
import threading
import time
import urllib.parse

import benchlib as b
import harness as h
from common import PoolLoad
from test_failover import SETTING_FIELDS  # env variable -> status field

NAME = 'failover'
TITLE = 'Failover'

TARGET = 'DATABASE_URL'
THREADS = 4
PROGRESS_MS = 5    # the resolution of "queries flow again"
PLOT_STEP_S = 0.1  # queries/s over this long, for the plots
PROGRESS_EXCERPT_MS = 20  # progress lines kept past "queries flow again"
PAUSE_MS = 2
LOAD = ('--threads', THREADS, '--tx', '--pause-ms', PAUSE_MS,
        '--progress-ms', PROGRESS_MS)
# agent/health.h
CONFIRM_MS = 250    # HEALTH_CONFIRM_MS: between confirming checks
HEARTBEAT_MS = 1000  # HEALTH_HEARTBEAT_MS: the heartbeat's pace, at most
LATE_MS = 1000      # HEALTH_LATE_MS: a check this late starts confirming
POLL_S = 0.002
SHORT = {'DB_HEALTH_CHECK_INTERVAL': 300, 'DB_CONNECTION_TIMEOUT': 500,
         'DB_FAILURE_THRESHOLD': 3, 'DB_PRIMARY_RETRY_INTERVAL': 1500}
POLLING = {'interval_s': 30, 'failures': 3}  # the design we compare with
STEPS = [('suspect', 'primary seen suspect (a check failed)'),
         ('down', 'primary seen down'),
         ('current', 'secondary published'),
         ('acked', 'every subscriber acked the secondary')]
CRASHES = [('immediate', '`pg_ctl stop -m immediate`'),
           ('kill9', '`kill -9` of the postmaster')]
BEFORE_S = 1.0       # load before the fault
CRASH_AFTER_S = 2.0  # the crash rounds' window after it (and the plot's)
HANG_AFTER_S = 3.0   # at least this long after the fault in a hang round


def hang_worst(interval, timeout, threshold):
    """Worst time from a hang to the server declared down: the hang begins
    just after a heartbeat answered; the next one, a pace later, is late
    after the late time and starts the confirming checks (the first at
    once, the others CONFIRM_MS apart, threshold in flight counting the
    late one); the last of them times out a timeout after it began."""
    pace = min(HEARTBEAT_MS, interval)
    if threshold <= 1:
        return pace + timeout
    late = min(LATE_MS, timeout / 2)
    return pace + late + (threshold - 2) * CONFIRM_MS + timeout


def hang_worst_text(interval, timeout, threshold):
    pace = min(HEARTBEAT_MS, interval)
    if threshold <= 1:
        terms = f'{pace} + {timeout}'
    else:
        terms = (f'{pace} + {min(LATE_MS, timeout / 2):g} + '
                 f'{threshold - 2} × {CONFIRM_MS} + {timeout}')
    return (f'{terms} ms = '
            f'{b.fmt_ms(hang_worst(interval, timeout, threshold))}')


def env_text(primary, secondary, role, password, settings=None):
    text = (f'{TARGET}={primary.url(role, password)}\n'
            f'{TARGET}_SECONDARY={secondary.url(role, password)}\n')
    for k, v in (settings or {}).items():
        text += f'{k}={v}\n'
    return text


def target(status):
    return h.target_status(status, TARGET)


def wait_status(status, predicate, timeout, what):
    deadline = time.monotonic() + timeout
    last = err = None
    while True:
        try:
            last = target(status)
            if predicate(last):
                return last
        except Exception as e:
            err = e
        if time.monotonic() > deadline:
            raise RuntimeError(f'no {what} within {timeout} s; last status '
                               f'{last!r}; last error {err!r}')
        time.sleep(0.01)


def in_use(t, role):
    return (t['failover']['current'] == role and
            t['subscribers'] == t['acked'] == 1)


def all_up(t):
    return all(s['health'] == 'up' for s in t['servers'])


def timeline(status, t0, timeout):
    """Polls status every POLL_S from t0 (the fault) until the secondary is
    in use and acked; returns {step: ms after t0}.  A step polling missed
    takes the time of the next one seen."""
    seen = {}
    deadline = t0 + timeout
    while True:
        t = target(status)
        now = (time.monotonic() - t0) * 1000
        health = t['servers'][0]['health']
        if health in ('suspect', 'down'):
            seen.setdefault('suspect', now)
        if health == 'down':
            seen.setdefault('down', now)
        if t['failover']['current'] == 'secondary':
            for step in ('suspect', 'down', 'current'):
                seen.setdefault(step, now)
        if in_use(t, 'secondary'):
            for step, _ in STEPS:
                seen.setdefault(step, now)
            return seen
        if time.monotonic() > deadline:
            raise RuntimeError(f'no switch within {timeout} s after the '
                               f'fault; seen {seen}; status {t!r}')
        time.sleep(POLL_S)


def inflict(primary, kind):
    """Starts the fault ('immediate', 'kill9' or 'hang'); returns (t0, a
    function that waits for its end).  A crash runs in a thread, so that
    the agent's status is polled from t0 on, not after pg_ctl's wait or
    the children's exit."""
    errors = []

    def crash():
        try:
            if kind == 'immediate':
                primary.stop('immediate')
            else:
                primary.kill_postmaster()
        except Exception as e:
            errors.append(e)
    t0 = time.monotonic()
    if kind == 'hang':
        primary.pause()
        return t0, lambda: None
    th = threading.Thread(target=crash)
    th.start()

    def join():
        th.join(60)
        if th.is_alive():
            raise RuntimeError(f'{kind}: the primary did not stop in 60 s')
        if errors:
            raise errors[0]
    return t0, join


def restore(primary, kind):
    if kind == 'hang':
        primary.resume()
    else:
        primary.start()


def progress(lines):
    return [m for _, m in lines
            if 't' in m and 'mono' in m and not m.get('final')]


def thin(lines, step=PLOT_STEP_S):
    """The progress lines at least step apart (by their own clock)."""
    out, last = [], None
    for arrival, m in lines:
        if 't' not in m or m.get('final'):
            continue
        t = m.get('mono', arrival)
        if last is None or t - last >= step:
            out.append((arrival, m))
            last = t
    return out


def analyze(lines, t0, end, acked_ms=None):
    """The figures of one round from the load's progress lines up to end:
    failed queries, when queries flow again (see the module's comment),
    the last failure (pool-load says when it was, to the ms) and, given
    the switch's time, the failures after it."""
    prog = progress(lines)
    before = [m for m in prog if m['mono'] <= t0]
    after = [m for m in prog if t0 < m['mono'] <= end]
    if not before or not after:
        raise RuntimeError('no progress lines around the fault')
    base, last = before[-1], after[-1]
    final = last['failures']
    failures = final - base['failures']
    flow = None
    if failures:
        # Queries counted in the line that brings the last failure may
        # have gone through before it, on the old server: only a later
        # line's count says they flow again (late by a line at most).
        settled = next(i for i, m in enumerate(after) if m['failures'] ==
                       final)
        for prev, m in zip(after[settled:], after[settled + 1:]):
            if m['queries'] > prev['queries']:
                flow = m
                break
    else:
        prev, stalled = base, False
        for m in after:
            if m['queries'] == prev['queries']:
                stalled = True
            elif stalled:
                flow = m
                break
            prev = m
        else:
            flow = after[0]  # no gap a progress line could see
    r = {'failures': failures,
         'flow_ms': (flow['mono'] - t0) * 1000 if flow else None}
    if failures and last.get('last_failure_t') is not None:
        r['last_failure_ms'] = (last['mono'] - last['t'] +
                                last['last_failure_t'] - t0) * 1000
    if acked_ms is not None:
        if not failures or r.get('last_failure_ms', 0) <= acked_ms + 1:
            r['failures_after_switch'] = 0
        else:  # counted from the last line before the switch: at most
            upto = [m for m in after if m['mono'] <= t0 + acked_ms / 1000]
            r['failures_after_switch'] = final - (upto or [base])[-1][
                'failures']
    r['qps'] = [p for p in b.rate_series(thin(lines), t0)
                if -BEFORE_S <= p[0] <= (end - t0)]
    # The lines around the switch, for whoever wants to check the above:
    # [ms from the fault, queries, failures].
    at = (r['flow_ms'] or 0) / 1000
    r['progress'] = [[round((m['mono'] - t0) * 1000, 2), m['queries'],
                      m['failures']] for m in [base] + after
                     if m is base or at - 0.1 <= m['mono'] - t0 <=
                     at + PROGRESS_EXCERPT_MS / 1000]
    return r


FAILURE_LINE = re.compile(r'^(?:pool|libpq)-load: thread (\d+): (.*)$', re.M)


def failed_by_thread(stderr):
    """{thread: failed queries} and a few of the messages, from the load
    generator's stderr (it describes its first 20 failures, each with its
    thread; libpq-load's failed connects are not queries)."""
    counts, messages = {}, []
    for thread, msg in FAILURE_LINE.findall(stderr):
        if msg.startswith('connect: '):
            continue
        counts[thread] = counts.get(thread, 0) + 1
        if len(messages) < 4 and msg not in messages:
            messages.append(msg[:200])
    return counts, messages


def dbswap_round(ctx, kind, primary, secondary, role, password,
                 settings=None, timeout=60):
    """One fault under load with an agent and a pool-load of their own;
    returns its figures.  The primary is started again (or resumed) after
    the round."""
    env = os.path.join(ctx.tmp, 'db.env')
    h.write_rename(env, env_text(primary, secondary, role, password,
                                 settings))
    r = {'kind': kind}
    try:
        with h.Agent(env_files=[env]) as agent, \
                agent.client(name='bench-status') as status:
            load = PoolLoad(agent.sock, args=LOAD + ('--max', THREADS),
                            name='bench-failover')
            try:
                wait_status(status, lambda t: in_use(t, 'primary') and
                            all_up(t) and len(t['servers']) == 2,
                            timeout=30, what='both servers up')
                r['settings'] = h._status(status, None)['agent'][
                    'failover_settings']
                load.wait_progress(lambda m: m['queries'] > 0)
                # A hang's time depends on where in the heartbeat's second
                # it falls: anywhere, uniformly.
                time.sleep(BEFORE_S + (random.uniform(0, HEARTBEAT_MS / 1000)
                                       if kind == 'hang' else 0))
                mark = len(agent.log())
                t0, join = inflict(primary, kind)
                try:
                    steps = timeline(status, t0, timeout)
                finally:
                    join()
                after = CRASH_AFTER_S if kind != 'hang' else HANG_AFTER_S
                end = t0 + max(steps['acked'] / 1000 + 1.0, after)
                load.wait_progress_after(end + 2 * PROGRESS_MS / 1000,
                                         timeout=timeout)
                if kind == 'hang' and settings:
                    # The automatic failback, at the short settings' pace.
                    primary.resume()
                    t1 = time.monotonic()
                    wait_status(status, lambda t: in_use(t, 'primary') and
                                all_up(t), timeout=60,
                                what='the automatic failback')
                    r['failback_ms'] = (time.monotonic() - t1) * 1000
                lines = load.timeline()
                rc, final = load.stop()
                r['queries'] = final['queries']
                by_thread, messages = failed_by_thread(load.stderr())
            finally:
                load.close()
            log = agent.log()[mark:]
    finally:
        restore(primary, kind)
    r['steps_ms'] = steps
    r.update(analyze(lines, t0, end, steps['acked']))
    r['failures_by_thread'], r['failure_messages'] = by_thread, messages
    ctx.log(f'dbswap {kind}: ' + ', '.join(
        f'{k} {v:.0f} ms' for k, v in steps.items()) +
        f'; queries flow again {fmt(r["flow_ms"])}; failed {r["failures"]} '
        f'{by_thread}; after the switch {r["failures_after_switch"]}' +
        (f'; failback {r["failback_ms"]:.0f} ms' if 'failback_ms' in r
         else ''))
    for line in log.splitlines():
        if 'primary' in line or 'secondary' in line:
            ctx.log('  agent: ' + line.strip()[:220])
    return r


def fmt(ms):
    return '—' if ms is None else f'{ms:.1f} ms'


def libpq_round(ctx, kind, primary, conninfo, watch):
    """The same load on libpq multi-host, a fresh process: a fault, watched
    for watch seconds."""
    argv = [ctx.bin('libpq-load'), *[str(a) for a in LOAD],
            '--name', 'bench-multihost']
    with b.JsonProc(argv, conninfo + '\n', 'libpq-load') as load:
        load.wait(lambda m: m.get('event') == 'ready', 30, 'ready')
        time.sleep(BEFORE_S)
        t0, join = inflict(primary, kind)
        try:
            time.sleep(max(0.0, t0 + watch - time.monotonic()))
            end = time.monotonic()
            final = load.stop(timeout=10)
        finally:
            try:
                join()
            finally:
                restore(primary, kind)
        lines = load.lines
        by_thread, messages = failed_by_thread(load.stderr())
    before = [m for t, m in lines if t <= t0 and 'failures' in m]
    recovered = [th['recovered_mono'] for th in final['threads']]
    r = {'kind': kind, 'watch_s': watch,
         'connect_failures': final['connect_failures'] -
         before[-1]['connect_failures'],
         'stuck': final['stuck'],
         'longest_wait_ms': final['longest_wait_ms'],
         'recovered_ms': (max(recovered) - t0) * 1000
         if recovered and all(x is not None for x in recovered) else None,
         'failures_by_thread': by_thread, 'failure_messages': messages}
    r.update(analyze(lines, t0, end))
    if kind == 'hang' and r['stuck']:
        r['flow_ms'] = None  # a line may count a thread not yet blocked
    ctx.log(f'libpq multi-host {kind}: queries flow again '
            f'{fmt(r["flow_ms"])}, every thread {fmt(r["recovered_ms"])}; '
            f'failed {r["failures"]} {by_thread}; connect failures '
            f'{r["connect_failures"]}; stuck {r["stuck"]}')
    return r


def run(ctx):
    rounds = ctx.pick(2, 7)
    with h.PgCluster() as primary, h.PgCluster() as secondary:
        role, password = 'bench_failover', h.secrets.token_hex(8)
        for c in (primary, secondary):
            c.create_role(role, password)
        q = urllib.parse.quote
        conninfo = (f'postgresql://{q(role, safe="")}:'
                    f'{q(password, safe="")}@{primary.host}:{primary.port},'
                    f'{secondary.host}:{secondary.port}/postgres'
                    f'?target_session_attrs=read-write')
        d = {'crash': [], 'hang': []}
        lq = {'crash': []}
        # Crash rounds: each fault with dbswap and with libpq in turn, the
        # one that goes first alternating, so that whatever else the
        # machine does falls on both alike.
        for i in range(rounds):
            for j, (kind, _) in enumerate(CRASHES):
                turn = [lambda: d['crash'].append(dbswap_round(
                            ctx, kind, primary, secondary, role, password)),
                        lambda: lq['crash'].append(libpq_round(
                            ctx, kind, primary, conninfo, CRASH_AFTER_S))]
                for go in (turn if (i + j) % 2 == 0 else turn[::-1]):
                    go()
        d['defaults'] = d['crash'][0]['settings']
        for name, settings in [('short', SHORT)] + \
                [('defaults', None)] * ctx.pick(1, 3):
            r = dbswap_round(ctx, 'hang', primary, secondary, role, password,
                             settings, timeout=120)
            r['name'] = name
            d['hang'].append(r)
        lq['hang'] = libpq_round(ctx, 'hang', primary, conninfo,
                                 ctx.pick(5.0, 20.0))
    for r in d['hang']:
        want = {**d['defaults'],
                **{SETTING_FIELDS[k]: v for k, v in
                   (SHORT if r['name'] == 'short' else {}).items()}}
        if r['settings'] != want:
            raise RuntimeError(f'hang {r["name"]}: the agent ran with '
                               f'{r["settings"]}, not {want}')
    d['queries'] = sum(r['queries'] for r in d['crash'] + d['hang'])
    d['failures_total'] = sum(r['failures'] for r in d['crash'] + d['hang'])
    return {'dbswap': d, 'libpq': lq, 'polling': POLLING,
            'params': {'threads': THREADS, 'load': [str(a) for a in LOAD],
                       'pause_ms': PAUSE_MS, 'progress_ms': PROGRESS_MS,
                       'confirm_ms': CONFIRM_MS, 'heartbeat_ms': HEARTBEAT_MS,
                       'late_ms': LATE_MS, 'rounds': rounds}}


# -- rendering; results.json from before the kill -9 rounds (one libpq
# crash, no "kind", no "flow_ms") render too, their crash as the
# immediate one and the agent's ack or libpq's last thread as the time
# queries flow again.

def _crash_rounds(res, design, kind):
    rounds = res[design]['crash']
    if isinstance(rounds, dict):
        rounds = [rounds]
    return [r for r in rounds if r.get('kind', 'immediate') == kind]


def flow(r):
    if 'flow_ms' in r:
        return r['flow_ms']
    if 'steps_ms' in r:
        return r['steps_ms']['acked']
    return r.get('recovered_ms')


def _old(res):
    return not all('flow_ms' in r for r in _crash_rounds(res, 'dbswap',
                                                         'immediate'))


def med(values):
    v = [x for x in values if x is not None]
    return statistics.median(v) if v else None


def med_max(values, f=b.fmt_ms):
    """'median (max)', or the one value; '—' with none; 'never' for a round
    that did not get there."""
    v = [x for x in values if x is not None]
    if not v:
        return '—'
    text = f(v[0]) if len(values) == 1 else \
        f'{f(statistics.median(v))} ({f(max(v))})'
    missing = len(values) - len(v)
    return text + (f', {missing} of {len(values)} never' if missing else '')


def _count(x):
    return f'{x:g}'


def hang_rounds(res, name):
    return [r for r in res['dbswap']['hang'] if r.get('name') == name]


def markdown(res):
    d, lq, poll, p = res['dbswap'], res['libpq'], res['polling'], \
        res['params']
    s = d['defaults']
    interval, timeout = s['health_check_interval_ms'], \
        s['connection_timeout_ms']
    threshold = s['failure_threshold']
    old = _old(res)
    kinds = [(k, label) for k, label in CRASHES
             if _crash_rounds(res, 'dbswap', k)]
    crash = {k: _crash_rounds(res, 'dbswap', k) for k, _ in kinds}
    lcrash = {k: _crash_rounds(res, 'libpq', k) for k, _ in kinds}
    n = len(crash['immediate'])
    out = [f'The same load on both: {p["threads"]} threads of `SELECT 1` and '
           f'short transactions ({p.get("pause_ms", PAUSE_MS)} ms pause).  '
           f'dbswap: a libdbswap pool of {p["threads"]}, the agent\'s '
           f'defaults (check interval {interval} ms, timeout {timeout} ms, '
           f'threshold {threshold}).  libpq: `host=primary,secondary '
           f'target_session_attrs=read-write`, each thread reconnecting on '
           f'error.  Times from the fault (the launch of `pg_ctl stop -m '
           f'immediate`, the SIGKILL, the SIGSTOP).']
    if old:
        out[-1] += (f'  {n} dbswap crash round(s), medians (max), and one of '
                    f'libpq\'s.  (Results of an older version of this '
                    f'benchmark, before the `kill -9` rounds and the '
                    f'progress-line measure: dbswap\'s "queries flow again" '
                    f'is the agent\'s ack, libpq\'s its last thread through '
                    f'again; the agent that ran may predate the heartbeat '
                    f'that the worst case below assumes.)')
    else:
        out[-1] += (f'  {n} crash round(s) of each kind and design, '
                    f'alternating: medians (max).')
        out[-1] += (f'  "Queries flow again": the load generator\'s first '
                    f'progress line (every {p["progress_ms"]} ms) by which '
                    f'every failed query of the round has failed and queries '
                    f'went through since the line before: the same measure '
                    f'for both.  Every round of dbswap\'s has an agent of its '
                    f'own, started with both servers up (a first crash, not '
                    f'a crash loop, which the agent holds back).')
    out.append('')

    # Crashes.
    header = ['crash'] + [label for _, label in kinds]
    rows = [['dbswap: queries flow again'] +
            [med_max([flow(r) for r in crash[k]]) for k, _ in kinds],
            ['libpq multi-host: queries flow again'] +
            [med_max([flow(r) for r in lcrash[k]]) for k, _ in kinds]]
    if not old:
        rows.append(['libpq multi-host: its last thread through again'] +
                    [med_max([r['recovered_ms'] for r in lcrash[k]])
                     for k, _ in kinds])
    rows.append(['dbswap / libpq (medians)'] + [
        b.fmt_ratio(med([flow(r) for r in crash[k]]) /
                    med([flow(r) for r in lcrash[k]]))
        if med([flow(r) for r in lcrash[k]]) else '—' for k, _ in kinds])
    for step, label in STEPS[1:]:
        rows.append([f'dbswap: {label}'] +
                    [med_max([r['steps_ms'][step] for r in crash[k]])
                     for k, _ in kinds])
    rows.append([f'dbswap: failed queries a round (a pool of '
                 f'{p["threads"]} connections)'] +
                [med_max([r['failures'] for r in crash[k]], _count)
                 for k, _ in kinds])
    if not old:
        rows.append(['dbswap: most failed on one thread; after the switch '
                     '(all rounds)'] +
                    [f'{max_per_thread(crash[k])}; '
                     f'{sum(r["failures_after_switch"] for r in crash[k])}'
                     for k, _ in kinds])
    rows.append(['libpq multi-host: failed queries a round'] +
                [med_max([r['failures'] for r in lcrash[k]], _count)
                 for k, _ in kinds])
    out.append(b.md_table(header, rows))

    # Hangs.
    short = hang_rounds(res, 'short')
    dflt = hang_rounds(res, 'defaults')
    hcols = [(short, f'short settings (interval '
                     f'{short[0]["settings"]["health_check_interval_ms"]} ms, '
                     f'timeout {short[0]["settings"]["connection_timeout_ms"]}'
                     f' ms)')]
    if dflt:
        hcols.append((dflt, f'defaults ({len(dflt)} round(s))'))
    rows = [[f'dbswap: {label}'] +
            [med_max([r['steps_ms'][step] for r in rs]) for rs, _ in hcols]
            for step, label in STEPS]
    rows.append(['dbswap: queries flow again'] +
                [med_max([flow(r) for r in rs]) for rs, _ in hcols])
    rows.append(['worst case to the primary seen down (computed, see '
                 'below)'] +
                [b.fmt_ms(hang_worst(
                    rs[0]['settings']['health_check_interval_ms'],
                    rs[0]['settings']['connection_timeout_ms'],
                    rs[0]['settings']['failure_threshold']))
                 for rs, _ in hcols])
    rows.append(['dbswap: failed queries a round'] +
                [med_max([r['failures'] for r in rs], _count)
                 for rs, _ in hcols])
    if 'failback_ms' in short[0]:
        rows.append([f'dbswap: automatic failback after SIGCONT (retry '
                     f'interval '
                     f'{short[0]["settings"]["primary_retry_interval_ms"]} '
                     f'ms)'] + [b.fmt_ms(short[0]['failback_ms'])] +
                    ['—'] * (len(hcols) - 1))
    out.append(b.md_table(['hang (SIGSTOP)'] + [c for _, c in hcols], rows))

    # The designs side by side.
    lh = lq['hang']
    threads = p['threads']
    dh = dflt or short
    worst = hang_worst(interval, timeout, threshold)
    hang_cell = (f'{med_max([flow(r) for r in dh])} with the '
                 f'{"defaults" if dflt else "short settings"}; worst case '
                 f'to down {b.fmt_ms(worst)}')
    rows = [
        ['dbswap'] + [med_max([flow(r) for r in crash[k]]) for k, _ in kinds] +
        [med_max([r['failures'] for c in crash.values() for r in c],
                 _count), hang_cell,
         med_max([r['failures'] for r in dh], _count)],
        ['libpq multi-host, reconnect on error'] +
        [med_max([flow(r) for r in lcrash[k]]) for k, _ in kinds] +
        [med_max([r['failures'] for c in lcrash.values() for r in c],
                 _count),
         b.fmt_ms(lh['recovered_ms']) if lh['recovered_ms'] is not None
         else f'never: {lh["stuck"]} of {threads} threads still blocked '
              f'after {lh["watch_s"]:g} s',
         f'{lh["failures"]}'],
        [f'polling: a check every {poll["interval_s"]} s, down after '
         f'{poll["failures"]} failures (computed)'] +
        [f'up to {poll["interval_s"] * poll["failures"]} s'] * len(kinds) +
        ['—', f'up to {poll["interval_s"] * poll["failures"]} s', '—'],
    ]
    out.append(b.md_table(
        ['design'] + [f'crash ({label}): queries flow again after'
                      for _, label in kinds] +
        ['failed queries (crash)', 'hang: queries flow again after',
         'failed queries (hang)'], rows))
    pace = min(p.get('heartbeat_ms', HEARTBEAT_MS), interval)
    out.append(
        f'On a crash the agent moves every app as soon as it is sure: its '
        f'monitor connection closed (or said the server shuts down) and a '
        f'new connection was refused (or dropped unanswered, or told the '
        f'server shuts down); a failure that leaves doubt is confirmed '
        f'({threshold} checks, {p["confirm_ms"]} ms apart).  ' +
        ('After `kill -9` of the postmaster nothing listens any more and its '
         'backends end as they notice its death (a busy one once it next '
         'waits for its client), which the monitor connection sees as it '
         'sees `pg_ctl stop -m immediate`.  '
         if 'kill9' in crash else '') +
        f'Between the primary seen down and the secondary published the '
        f'agent validates the secondary on a new connection, and after the '
        f'switch the pool opens connections to it: two logins one after the '
        f'other, where libpq makes one, moving each connection on its first '
        f'error, one reconnect at a time.  A failed query is one that was '
        f'running on the primary when it died, or the next one on a '
        f'connection to it that had not seen it yet.')
    if not old and any(max_per_thread(c) > 1 for c in crash.values()):
        out[-1] += (f'  A thread whose query failed may take another such '
                    f'connection from the pool before the switch, and fail '
                    f'again: the failures of a round stay within the pool\'s '
                    f'{threads} connections.')
    out.append('')
    out.append(
        f'A hang (SIGSTOP, a frozen host, a network black hole) leaves '
        f'every connection open: only a question left unanswered shows it.  '
        f'The agent\'s heartbeat asks the monitor connection every {pace} ms; '
        f'one unanswered after {min(p.get("late_ms", LATE_MS), timeout / 2):g}'
        f' ms starts the confirming checks on fresh connections '
        f'({p["confirm_ms"]} ms apart, up to the threshold in flight counting '
        f'the late one) while it waits out its timeout, and failure number '
        f'{threshold} (the threshold) is the server down.  Worst case with '
        f'the defaults: {hang_worst_text(interval, timeout, threshold)} (pace '
        f'+ late + (threshold − 2) × {p["confirm_ms"]} + timeout) to the '
        f'primary down, and the switch takes a few ms more: '
        f'{"within" if worst <= 2 * timeout else "more than"} 2 × '
        f'`DB_CONNECTION_TIMEOUT`; a shorter `DB_CONNECTION_TIMEOUT` '
        f'shortens it.  The pool then shuts down the connections blocked on '
        f'the hung server: one failed query each.  libpq waits on the socket '
        f'forever; a design that polls every {poll["interval_s"]} s and '
        f'wants {poll["failures"]} failures takes up to '
        f'{poll["interval_s"] * poll["failures"]} s.')
    return '\n'.join(out)


def max_per_thread(rounds):
    return max([max(r.get('failures_by_thread', {}).values(), default=0)
                for r in rounds], default=0)


def settings_label(s):
    return (f'{b.fmt_ms(s["health_check_interval_ms"])} interval, '
            f'{b.fmt_ms(s["connection_timeout_ms"])} timeout')


def typical(rounds):
    """The round whose "queries flow again" is the median's (the lower of
    two), for the plots."""
    ranked = sorted((r for r in rounds if flow(r) is not None), key=flow)
    return ranked[(len(ranked) - 1) // 2] if ranked else rounds[0]


def plots(res, outdir):
    d, lq = res['dbswap'], res['libpq']
    short = hang_rounds(res, 'short')
    dflt = hang_rounds(res, 'defaults')
    hang = [(f'dbswap, {settings_label(short[0]["settings"])}',
             short[0]['qps'])]
    if dflt:
        r = typical(dflt)
        hang.append((f'dbswap, defaults '
                     f'({settings_label(r["settings"])})', r['qps']))
    hang.append(('libpq multi-host, reconnect on error', lq['hang']['qps']))
    hang_end = max([lq['hang']['watch_s']] +
                   [p[-1][0] for _, p in hang if p])
    crash = []
    for kind, label in CRASHES:
        for design, name in (('dbswap', 'dbswap (libdbswap pool)'),
                             ('libpq', 'libpq multi-host, reconnect on '
                                       'error')):
            rounds = _crash_rounds(res, design, kind)
            if rounds:
                crash.append((f'{name}, {label.replace("`", "")}',
                              typical(rounds)['qps']))
    out = []
    for png, title, series, xmax in (
            ('failover-crash.png', 'Queries/s through a primary crash',
             crash, CRASH_AFTER_S),
            ('failover-hang.png', 'Queries/s through a hung primary '
             '(SIGSTOP)',
             hang, hang_end)):
        b.plot(os.path.join(outdir, png), title,
               'seconds from the fault', 'queries/s',
               [{'title': t, 'points': p, 'style': 'lines'}
                for t, p in series],
               xrange=(-BEFORE_S, xmax), yrange=(0, None),
               arrows=[(0, 'fault')], key='bottom right')
        out.append((png, title))
    return out


def headline(res):
    d, lq, poll = res['dbswap'], res['libpq'], res['polling']
    s = d['defaults']
    rows = []
    for kind, label in CRASHES:
        ours = [flow(r) for r in _crash_rounds(res, 'dbswap', kind)]
        theirs = [flow(r) for r in _crash_rounds(res, 'libpq', kind)]
        if not ours:
            continue
        mo, mt = med(ours), med(theirs)
        rows.append([f'primary crashed ({label}): queries flow again after '
                     f'(median)', b.fmt_ms(mo),
                     'libpq multi-host: ' + (b.fmt_ms(mt) if mt is not None
                                             else 'not recovered'),
                     b.fmt_ratio(mo / mt) if mt else '—'])
    dflt = hang_rounds(res, 'defaults')
    short = hang_rounds(res, 'short')
    worst = hang_worst(s['health_check_interval_ms'],
                       s['connection_timeout_ms'], s['failure_threshold'])
    polling_ms = poll['interval_s'] * poll['failures'] * 1000
    lh = lq['hang']
    if dflt:
        seen = [flow(r) for r in dflt]
        ours = (f'{b.fmt_ms(med(seen))}' +
                (f' (max {b.fmt_ms(max(x for x in seen if x is not None))})'
                 if len(seen) > 1 else '') +
                f'; worst case to down {b.fmt_ms(worst)}')
    else:
        ours = (f'{b.fmt_ms(flow(short[0]))} '
                f'({short[0]["settings"]["health_check_interval_ms"]} ms '
                f'checks); worst case to down with the defaults '
                f'{b.fmt_ms(worst)}')
    never = (f'never ({lh["stuck"]} of {res["params"]["threads"]} threads '
             f'blocked after {lh["watch_s"]:g} s)'
             if lh.get('recovered_ms') is None else
             b.fmt_ms(lh['recovered_ms']))
    rows.append(['primary hung (SIGSTOP), defaults: queries flow again after',
                 ours,
                 f'libpq multi-host: {never}; polling {poll["interval_s"]} s '
                 f'× {poll["failures"]}: up to {b.fmt_ms(polling_ms)}',
                 f'{b.fmt_ratio(worst / polling_ms)} of polling\'s (worst '
                 f'cases)'])
    return rows
