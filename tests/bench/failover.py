"""Failover: a primary crashed (pg_ctl stop -m immediate) and a primary
hung (SIGSTOP of the postmaster and every backend), under load, with
dbswap and with libpq's own multi-host failover; next to the worst case
of a design that polls.

Two throwaway clusters with the same role and password.

dbswap: dbswapd with DATABASE_URL and DATABASE_URL_SECONDARY and the
DEFAULT failover settings; the app is pool-load (libdbswap pool of 4,
4 threads of SELECT 1 and short transactions, 2 ms pause).  Each crash
round: stop the primary, poll the agent's status every 2 ms for when the
primary is seen suspect, then down, the secondary published, and acked by
every subscriber; then start the primary again and `dbswapctl failback`.
The hang rounds: short settings applied live (interval 300 ms, timeout
500 ms), SIGSTOP, the same timeline, SIGCONT and the automatic failback;
in full mode one more hang round with the defaults.

libpq multi-host: libpq-load (the same load on 4 plain libpq connections,
`host=primary,secondary target_session_attrs=read-write`, reconnecting on
error, as an app without dbswap would).  Crash: the time until every
thread has a query through again.  Hang: how long it stays blocked (it
never recovers by itself: the window is bounded here).

Queries/s over time come from the load generators' progress lines (every
100 ms)."""

import os
import statistics
import subprocess
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
PROGRESS_MS = 100
PAUSE_MS = 2
LOAD = ('--threads', THREADS, '--tx', '--pause-ms', PAUSE_MS,
        '--progress-ms', PROGRESS_MS)
CONFIRM_MS = 250  # the agent's confirmation interval after a failed check
POLL_S = 0.002
SHORT = {'DB_HEALTH_CHECK_INTERVAL': 300, 'DB_CONNECTION_TIMEOUT': 500,
         'DB_FAILURE_THRESHOLD': 3, 'DB_PRIMARY_RETRY_INTERVAL': 1500}
POLLING = {'interval_s': 30, 'failures': 3}  # the design we compare with
STEPS = [('suspect', 'primary seen suspect (a check failed)'),
         ('down', 'primary seen down'),
         ('current', 'secondary published'),
         ('acked', 'every subscriber acked the secondary')]
BEFORE_S, AFTER_S = 1.0, 3.0  # the plots' window around a fault


def hang_worst(interval, timeout, threshold):
    """Worst time from a hang to the server declared down: the hang begins
    just after a check, the next check's query times out, then the other
    threshold - 1 checks start on new connections CONFIRM_MS apart (the
    first at once) and each times out too."""
    confirms = max(threshold - 2, 0) * CONFIRM_MS + timeout \
        if threshold > 1 else 0
    return interval + timeout + confirms


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


def failures_between(lines, t0, t1):
    """Failed queries counted between the progress lines around t0 and
    t1 (arrival times)."""
    before = [m for t, m in lines if t <= t0 and 'failures' in m]
    after = [m for t, m in lines if t >= t1 and 'failures' in m]
    if not before or not after:
        raise RuntimeError('no progress lines around the fault')
    return after[0]['failures'] - before[-1]['failures']


def window(lines, t0, after_s=AFTER_S):
    return [p for p in b.rate_series(lines, t0)
            if -BEFORE_S <= p[0] <= after_s]


def apply_settings(env, text, status, want):
    h.write_rename(env, text)
    status.reload()
    deadline = time.monotonic() + 10
    while h._status(status, None)['agent']['failover_settings'] != want:
        if time.monotonic() > deadline:
            raise RuntimeError(f'the settings {want} were not applied')
        time.sleep(0.05)


def dbswap_fault(ctx, kind, primary, status, load, timeout):
    """One fault ('crash' or 'hang') under load; returns its figures.  The
    primary is left stopped or paused."""
    errors = []

    def stop():
        try:
            primary.stop('immediate')
        except Exception as e:
            errors.append(e)
    time.sleep(BEFORE_S)
    t0 = time.monotonic()
    if kind == 'crash':
        th = threading.Thread(target=stop)
        th.start()
    else:
        primary.pause()
    try:
        steps = timeline(status, t0, timeout)
    finally:
        if kind == 'crash':
            th.join(60)
    if errors:
        raise errors[0]
    end = t0 + max(steps['acked'] / 1000 + 1.0, AFTER_S)
    load.wait_progress_after(end + PROGRESS_MS / 1000, timeout=timeout)
    lines = load.timeline()
    ctx.log(f'dbswap {kind}: ' + ', '.join(f'{k} {v:.0f} ms'
                                           for k, v in steps.items()))
    return {'steps_ms': steps, 'failures': failures_between(lines, t0, end),
            'qps': window(lines, t0, max(AFTER_S, steps['acked'] / 1000 +
                                         1.0))}


def failback(ctx, agent, status):
    """dbswapctl failback (retried while the restarted primary is
    refused), then both servers up."""
    for _ in range(20):
        r = subprocess.run([ctx.bin('dbswapctl'), '--socket', agent.sock,
                            'failback', TARGET], capture_output=True,
                           text=True, timeout=30)
        if r.returncode == 0:
            break
        time.sleep(0.5)
    else:
        raise RuntimeError(f'dbswapctl failback: exit {r.returncode}: '
                           f'{r.stderr.strip()}')
    wait_status(status, lambda t: in_use(t, 'primary') and all_up(t),
                timeout=180, what='the primary in use and up again')


def dbswap(ctx, primary, secondary, role, password):
    env = os.path.join(ctx.tmp, 'db.env')
    h.write_rename(env, env_text(primary, secondary, role, password))
    res = {'crash': [], 'hang': []}
    with h.Agent(env_files=[env]) as agent, \
            agent.client(name='bench-status') as status:
        load = PoolLoad(agent.sock, args=LOAD + ('--max', THREADS),
                        name='bench-failover')
        try:
            wait_status(status, lambda t: in_use(t, 'primary') and
                        all_up(t) and len(t['servers']) == 2,
                        timeout=30, what='both servers up')
            res['defaults'] = h._status(status, None)['agent'][
                'failover_settings']
            for i in range(ctx.pick(1, 5)):
                res['crash'].append(dbswap_fault(ctx, 'crash', primary,
                                                 status, load, 60))
                primary.start()
                failback(ctx, agent, status)
            hangs = [('short', SHORT)]
            if not ctx.quick:
                hangs.append(('defaults', {}))
            for name, settings in hangs:
                want = {SETTING_FIELDS[k]: v for k, v in settings.items()}
                apply_settings(env, env_text(primary, secondary, role,
                                             password, settings),
                               status, {**res['defaults'], **want})
                wait_status(status, lambda t: in_use(t, 'primary') and
                            all_up(t), timeout=30, what='both servers up')
                try:
                    r = dbswap_fault(ctx, 'hang', primary, status, load, 120)
                finally:
                    primary.resume()
                r['settings'] = {**res['defaults'], **want}
                r['name'] = name
                res['hang'].append(r)
                failback(ctx, agent, status)
            rc, final = load.stop()
        finally:
            load.close()
    res['queries'], res['failures_total'] = final['queries'], \
        final['failures']
    return res


def libpq(ctx, primary, secondary, role, password):
    """libpq multi-host failover under the same load: a crash, then a hang
    watched for a bounded window."""
    q = urllib.parse.quote
    conninfo = (f'postgresql://{q(role, safe="")}:{q(password, safe="")}@'
                f'{primary.host}:{primary.port},{secondary.host}:'
                f'{secondary.port}/postgres?target_session_attrs=read-write')
    argv = [ctx.bin('libpq-load'), *[str(a) for a in LOAD],
            '--name', 'bench-multihost']
    res = {}
    for kind in ('crash', 'hang'):
        with b.JsonProc(argv, conninfo + '\n', 'libpq-load') as load:
            load.wait(lambda m: m.get('event') == 'ready', 30, 'ready')
            time.sleep(BEFORE_S)
            t0 = time.monotonic()
            if kind == 'crash':
                primary.stop('immediate')
                watch = ctx.pick(3.0, 5.0)
            else:
                primary.pause()
                watch = ctx.pick(5.0, 45.0)
            try:
                time.sleep(watch)
                final = load.stop(timeout=10)
            finally:
                if kind == 'crash':
                    primary.start()
                else:
                    primary.resume()
            lines = load.lines
        before = [m for t, m in lines if t <= t0 and 'failures' in m]
        recovered = [th['recovered_mono'] for th in final['threads']]
        r = {'watch_s': watch, 'qps': window(lines, t0, watch),
             'failures': final['failures'] - before[-1]['failures'],
             'connect_failures': final['connect_failures'] -
             before[-1]['connect_failures'],
             'stuck': final['stuck'],
             'longest_wait_ms': final['longest_wait_ms'],
             'recovered_ms': (max(recovered) - t0) * 1000
             if recovered and all(x is not None for x in recovered)
             else None}
        ctx.log(f'libpq multi-host {kind}: ' + ', '.join(
            f'{k} {v}' for k, v in r.items() if k != 'qps'))
        res[kind] = r
    return res


def run(ctx):
    with h.PgCluster() as primary, h.PgCluster() as secondary:
        role, password = 'bench_failover', h.secrets.token_hex(8)
        for c in (primary, secondary):
            c.create_role(role, password)
        res = {'dbswap': dbswap(ctx, primary, secondary, role, password)}
        res['libpq'] = libpq(ctx, primary, secondary, role, password)
    res['polling'] = POLLING
    res['params'] = {'threads': THREADS, 'load': [str(a) for a in LOAD],
                     'pause_ms': PAUSE_MS, 'confirm_ms': CONFIRM_MS}
    return res


def median_step(rounds, step):
    return statistics.median(r['steps_ms'][step] for r in rounds)


def markdown(res):
    d, lq, poll = res['dbswap'], res['libpq'], res['polling']
    s = d['defaults']
    crash = d['crash']
    short = [r for r in d['hang'] if r['name'] == 'short'][0]
    dflt = [r for r in d['hang'] if r['name'] == 'defaults']
    interval, timeout = s['health_check_interval_ms'], \
        s['connection_timeout_ms']
    threshold = s['failure_threshold']
    out = [f'The same load on both: {res["params"]["threads"]} threads of '
           f'`SELECT 1` and short transactions '
           f'({res["params"].get("pause_ms", PAUSE_MS)} ms pause).  dbswap: the '
           f'agent\'s defaults (check interval {interval} ms, timeout '
           f'{timeout} ms, threshold {threshold}), a libdbswap pool of '
           f'{res["params"]["threads"]}; {len(crash)} crash round(s), medians '
           f'(max).  libpq: `host=primary,secondary '
           f'target_session_attrs=read-write`, each thread reconnecting on '
           f'error.  Times from the fault (the launch of `pg_ctl stop -m '
           f'immediate`, or SIGSTOP).', '']

    def steps_cell(rounds, step):
        v = [r['steps_ms'][step] for r in rounds]
        return f'{b.fmt_ms(statistics.median(v))} ({b.fmt_ms(max(v))})'
    rows = [[label] + [steps_cell(crash, step)] +
            [b.fmt_ms(short['steps_ms'][step])] +
            ([b.fmt_ms(dflt[0]['steps_ms'][step])] if dflt else [])
            for step, label in STEPS]
    rows.append(['failed queries'] +
                [f'{statistics.median(r["failures"] for r in crash):g} '
                 f'({max(r["failures"] for r in crash)})',
                 short['failures']] +
                ([dflt[0]['failures']] if dflt else []))
    hs = short['settings']
    header = ['dbswap, from the fault to', 'crash, defaults',
              f'hang, interval {hs["health_check_interval_ms"]} ms, '
              f'timeout {hs["connection_timeout_ms"]} ms']
    if dflt:
        header.append('hang, defaults')
    out.append(b.md_table(header, rows))

    def worst(i, t, n):
        return hang_worst(i, t, n)
    lc, lh = lq['crash'], lq['hang']
    acked = median_step(crash, 'acked')
    rows = [
        ['dbswap', f'{b.fmt_ms(acked)} (acked on the secondary)',
         f'{statistics.median(r["failures"] for r in crash):g}',
         f'{b.fmt_ms(short["steps_ms"]["acked"])} with a '
         f'{short["settings"]["health_check_interval_ms"]} ms interval'
         + (f'; {b.fmt_ms(dflt[0]["steps_ms"]["acked"])} with the defaults'
            if dflt else '') +
         f' (worst case {b.fmt_ms(worst(interval, timeout, threshold))})',
         f'{short["failures"]}'],
        ['libpq multi-host, reconnect on error',
         b.fmt_ms(lc['recovered_ms']) if lc['recovered_ms'] is not None
         else f'not within {lc["watch_s"]:g} s',
         f'{lc["failures"]}',
         b.fmt_ms(lh['recovered_ms']) if lh['recovered_ms'] is not None
         else f'never: {lh["stuck"]} of {res["params"]["threads"]} threads '
              f'still blocked after {lh["watch_s"]:g} s',
         f'{lh["failures"]}'],
        [f'polling: a check every {poll["interval_s"]} s, down after '
         f'{poll["failures"]} failures (computed)',
         f'up to {poll["interval_s"] * poll["failures"]} s', '—',
         f'up to {poll["interval_s"] * poll["failures"]} s', '—'],
    ]
    out.append(b.md_table(['design', 'crash: queries flow again after',
                           'failed queries', 'hang: queries flow again '
                           'after', 'failed queries'], rows))
    out.append(f'On a crash the agent moves every app as soon as it is sure: '
               f'its monitor connection closed and a new connection was '
               f'refused (or dropped unanswered, or told the server shuts '
               f'down); a failure that leaves doubt is confirmed '
               f'({threshold} checks, {res["params"]["confirm_ms"]} ms '
               f'apart).  libpq moves each connection on its first error, '
               f'one reconnect at a time.  dbswap is the only one that leaves a hung primary: libpq waits on '
               f'the socket forever, and a poller waits for its checks.  '
               f'Each of the crash\'s failed queries is one that was running '
               f'on the primary when it died; none fails after the switch.  '
               f'Worst case to leave a hung primary with the defaults: '
               f'{interval} + {timeout} + {max(threshold - 2, 0)} × '
               f'{res["params"]["confirm_ms"]} + {timeout} ms = '
               f'{b.fmt_ms(worst(interval, timeout, threshold))}: lower '
               f'`DB_HEALTH_CHECK_INTERVAL` where hangs matter.')
    return '\n'.join(out)


def settings_label(s):
    return (f'{b.fmt_ms(s["health_check_interval_ms"])} interval, '
            f'{b.fmt_ms(s["connection_timeout_ms"])} timeout')


def plots(res, outdir):
    d, lq = res['dbswap'], res['libpq']
    short = [r for r in d['hang'] if r['name'] == 'short'][0]
    dflt = [r for r in d['hang'] if r['name'] == 'defaults']
    hang = [(f'dbswap, {settings_label(short["settings"])}', short['qps'])]
    if dflt:
        hang.append((f'dbswap, defaults '
                     f'({settings_label(dflt[0]["settings"])})',
                     dflt[0]['qps']))
    hang.append(('libpq multi-host, reconnect on error', lq['hang']['qps']))
    hang_end = max([lq['hang']['watch_s']] +
                   [p[-1][0] for _, p in hang if p])
    out = []
    for png, title, series, xmax in (
            ('failover-crash.png', 'Queries/s through a primary crash',
             [('dbswap (libdbswap pool)', d['crash'][0]['qps']),
              ('libpq multi-host, reconnect on error', lq['crash']['qps'])],
             AFTER_S),
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
    acked = median_step(d['crash'], 'acked')
    short = [r for r in d['hang'] if r['name'] == 'short'][0]
    dflt = [r for r in d['hang'] if r['name'] == 'defaults']
    worst = hang_worst(s['health_check_interval_ms'],
                       s['connection_timeout_ms'], s['failure_threshold'])
    polling_ms = poll['interval_s'] * poll['failures'] * 1000
    lc = lq['crash']['recovered_ms']
    return [
        ['primary crashed: queries flow again after', b.fmt_ms(acked),
         'libpq multi-host: ' + (b.fmt_ms(lc) if lc is not None else
                                 'not recovered'),
         b.fmt_ratio(acked / lc) if lc else '—'],
        ['primary hung: queries flow again after',
         f'{b.fmt_ms(short["steps_ms"]["acked"])} '
         f'({short["settings"]["health_check_interval_ms"]} ms checks)' +
         (f'; {b.fmt_ms(dflt[0]["steps_ms"]["acked"])} with the defaults'
          if dflt else '') + f' (worst case {b.fmt_ms(worst)})',
         f'libpq multi-host: never; polling {poll["interval_s"]} s × '
         f'{poll["failures"]}: up to {b.fmt_ms(polling_ms)}',
         f'{b.fmt_ratio(worst / polling_ms)} (worst cases)'],
    ]
