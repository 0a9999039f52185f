"""Peers: one password rotation under load, done the dbswap way and the
ways people do it today, and what the extra hop of PgBouncer costs.

One throwaway PostgreSQL 15 cluster; one role per way, each with the same
load: THREADS threads, each on its own connection, SELECT 1 and every
other iteration a short transaction (BEGIN; SELECT; COMMIT), PAUSE_MS
between iterations so that two cores keep room for the new connections a
rotation needs.  Each way runs alone: PRE seconds of steady load, then
ALTER ROLE ... PASSWORD on the server (the server-side half of every
rotation, done first), then the new password goes where that way takes
it:

  dbswap          dbswapd watching an env file, the app on the libdbswap
                  pool (pool-load, min = max = THREADS); the env file is
                  replaced with rename(2)
  PgBouncer       libpq-load connected through PgBouncer (transaction
                  pooling, see pgbouncer.py); the new password goes into
                  PgBouncer's ini, then RELOAD
  PgBouncer + RECONNECT   the same, then the admin console's RECONNECT
  restart         libpq-load with the old conninfo gets SIGTERM, then a new
                  libpq-load starts with the new one (what a rollout or a
                  process manager does)

The clock starts at that step (the rename, the ini write, SIGTERM).  A
superuser session polls pg_stat_activity every POLL_S: client backends of
the role whose backend_start is before the ALTER ROLE are logged in with
the old password.  The way is done when none is left; PgBouncer keeps its
server connections for server_lifetime (3600 s by default), so the poll
stops after a bounded window and reports what is left.  Queries/s come from
the loads' progress lines (CLOCK_MONOTONIC, the clock of time.monotonic()).

Then the hop: SELECT 1 back to back (no pause) for a few seconds each, 1
and THREADS threads: libpq-load straight to PostgreSQL (raw persistent
connections), libpq-load through PgBouncer, pool-load through the
libdbswap pool; the kinds alternate within each round so that drift in
the machine weighs on all of them."""

import contextlib
import os
import re
import secrets
import statistics
import time

import benchlib
import harness as h
from common import PoolLoad
from pgbouncer import PgBouncer
from test_pool import Psql  # one psql session kept open

NAME = 'peers'
TITLE = 'Rotation the other ways: PgBouncer and restarts'

THREADS = 4
PAUSE_MS = 1
PROGRESS_MS = 100
# Left out at the start of a steady-rate window: threads still connecting.
WARMUP_S = 0.5
# No queries/s point for a shorter interval between two counts (the
# restart way's old process can end just after a progress line).
MIN_INTERVAL_S = 0.02
POLL_S = 0.1
TARGET = 'DATABASE_URL'
WAYS = [
    ('dbswap', 'dbswap (libdbswap pool)',
     'env file replaced (rename)'),
    ('pgbouncer', 'PgBouncer, RELOAD',
     'PgBouncer ini + RELOAD'),
    ('pgbouncer_reconnect', 'PgBouncer, RELOAD + RECONNECT',
     'PgBouncer ini + RELOAD, then RECONNECT'),
    ('restart', 'restart (plain libpq)',
     'SIGTERM, new process with the new conninfo'),
]
HOP_KINDS = [
    ('direct', 'libpq, straight to PostgreSQL'),
    ('pgbouncer', 'libpq through PgBouncer'),
    ('pool', 'libdbswap pool (pool-load)'),
]


# --------------------------------------------------------------------------
# The plain libpq app

class LibpqLoad(benchlib.JsonProc):
    """tests/helpers/libpq-load (read its header) on benchlib.JsonProc: the
    conninfo goes to its stdin, its JSON lines to .lines, its stderr to a
    file; stopped on every path out.  Timeouts here are scaled like the
    harness's."""

    def __init__(self, binary, conninfo, threads, args=(), name='libpq-load'):
        argv = [binary, '--threads', str(threads), '--name', name,
                '--progress-ms', str(PROGRESS_MS)] + [str(a) for a in args]
        super().__init__(argv, conninfo + '\n', name)

    def wait_connected(self, threads, timeout=10):
        """Waits until the process served and every thread is connected."""
        timeout *= h.TIMEOUT_SCALE
        self.wait(lambda m: m.get('event') == 'ready', timeout, 'ready')
        self.wait(lambda m: m.get('connected') == threads, timeout,
                  'line with every thread connected')

    def ready_mono(self):
        for _, m in self.lines:
            if m.get('event') == 'ready':
                return m['mono']
        return None

    def finish(self, timeout=10, stop=True):
        """SIGTERM (unless stop is false: it ends by itself, or was
        signalled already), waits for the exit; returns the final line."""
        timeout *= h.TIMEOUT_SCALE
        last = self.stop(timeout) if stop else self.wait_exit(timeout)
        if not last.get('final'):
            raise RuntimeError(f'{self.name} (status {self.proc.returncode})'
                               f' printed no final line; {self.describe()}')
        return last


def failure_messages(text, limit=5):
    """The distinct failure messages of a load generator's stderr (libpq's
    words, never a password), the thread numbers taken out, with how many
    times each came: [[message, count], ...], at most limit."""
    counts = {}
    for line in text.splitlines():
        msg = re.sub(r'^(libpq-load|pool-load): thread \d+: ', '', line)
        msg = ' '.join(msg.split())
        counts[msg] = counts.get(msg, 0) + 1
    return [[m, n] for m, n in list(counts.items())[:limit]]


def pgbouncer_warnings(log, limit=5):
    """PgBouncer's WARNING lines in log, without time, pid and socket:
    [[message, count], ...]."""
    counts = {}
    for line in log.splitlines():
        if ' WARNING ' not in line:
            continue
        msg = line.split(' WARNING ', 1)[1]
        msg = re.sub(r'^[CS]-0x[0-9a-f]+: \S+ ', '', msg)
        counts[msg] = counts.get(msg, 0) + 1
    return [[m, n] for m, n in list(counts.items())[:limit]]


# --------------------------------------------------------------------------
# Watching the role's server connections

class OldConnections(Psql):
    """A persistent superuser psql session that counts the role's client
    backends, and among them those that started before a moment of the
    server's clock (an old-password login)."""

    def count(self, role, before):
        """(old, total): client backends of role, and those among them
        that started before the server timestamp before."""
        old, total = self.query(
            'SELECT count(*) FILTER (WHERE backend_start < '
            f'{h.quote_literal(before)}::timestamptz), count(*) '
            'FROM pg_stat_activity WHERE backend_type = \'client backend\' '
            f'AND usename = {h.quote_literal(role)}')[0].split('|')
        return int(old), int(total)

    def alter_password(self, role, password):
        """ALTER ROLE ... PASSWORD in this session (no new login to disturb
        the load); returns the server's clock just after it, the line
        between old-password and new-password logins."""
        self.set_password(role, password)
        return self.query('SELECT clock_timestamp()')[0]


def steady_rate(lines, start, end):
    """Queries/s between the first count at or after start and the last at
    or before end, from lines [(arrival, dict)] (the final line included;
    a line's own "mono" when it has one); None without two such counts."""
    pts = [(m.get('mono', t), m['queries']) for t, m in lines
           if 'queries' in m]
    pts = [(t, q) for t, q in pts if start <= t <= end]
    if len(pts) < 2 or pts[-1][0] - pts[0][0] <= 0:
        return None
    return (pts[-1][1] - pts[0][1]) / (pts[-1][0] - pts[0][0])


def observe(mon, role, before, t0, post_s, window_s):
    """Polls the role's connections every POLL_S from t0: at least post_s
    (the load keeps running for the plot), then until no old-password
    connection is left or window_s has passed.  Returns (polls, the time
    the last old one was gone or None, old ones left at the end)."""
    polls, gone = [], None
    while True:
        now = time.monotonic()
        old, total = mon.count(role, before)
        polls.append((round(now - t0, 3), old, total))
        if old == 0 and gone is None:
            gone = now - t0
        if now - t0 >= post_s and (gone is not None or now - t0 >= window_s):
            return polls, gone, old
        time.sleep(max(0.0, POLL_S - (time.monotonic() - now)))


# --------------------------------------------------------------------------
# The rotations

def rotate_dbswap(ctx, pg, mon, p, stack):
    role, old_pw, new_pw = p['role'], p['old'], p['new']
    env = os.path.join(ctx.tmp, 'app.env')
    h.write_rename(env, f'{TARGET}={pg.url(role, old_pw)}\n')
    agent = stack.enter_context(h.Agent(env_files=[env]))
    args = ['--threads', THREADS, '--max', THREADS, '--min', THREADS, '--tx',
            '--pause-ms', PAUSE_MS, '--progress-ms', PROGRESS_MS]
    load = PoolLoad(agent.sock, args=args, name='peers-dbswap')
    try:
        load.wait_progress(lambda m: True, what='the first progress line')
        time.sleep(p['pre'])
        before = mon.alter_password(role, new_pw)
        old_at = mon.count(role, before)[0]
        t0 = time.monotonic()
        h.write_rename(env, f'{TARGET}={pg.url(role, new_pw)}\n')
        polls, gone, left = observe(mon, role, before, t0, p['post'],
                                    p['window'])
        _, final = load.stop()
        lines = load.timeline()
        errors = failure_messages(load.stderr())
    finally:
        load.close()
    pre = steady_rate(lines, t0 - p['pre'] + WARMUP_S, t0)
    return dict(failures=final['failures'], connect_failures=None,
                old_at_rotation=old_at, old_gone_s=gone, old_left=left,
                polls=polls, rate_before=pre,
                rate=benchlib.rate_series(lines, t0,
                                          min_interval=MIN_INTERVAL_S),
                latency_us=final.get('latency_us'),
                progress_mono=any('mono' in m for _, m in lines),
                errors=errors, agent=agent)


def rotate_pgbouncer(ctx, pg, mon, p, stack, reconnect):
    role, old_pw, new_pw = p['role'], p['old'], p['new']
    pgb = stack.enter_context(PgBouncer(pg, role, old_pw))
    load = LibpqLoad(ctx.bin('libpq-load'), pgb.conninfo(), THREADS,
                     ['--tx', '--pause-ms', PAUSE_MS],
                     name='peers-pgbouncer')
    try:
        load.wait_connected(THREADS)
        time.sleep(p['pre'])
        before = mon.alter_password(role, new_pw)
        old_at = mon.count(role, before)[0]
        log_mark = len(pgb.log())
        t0 = time.monotonic()
        t_reload = pgb.set_password(new_pw)
        t_reconnect = pgb.reconnect() if reconnect else None
        polls, gone, left = observe(mon, role, before, t0, p['post'],
                                    p['window'])
        final = load.finish()
        lines = load.lines
        errors = failure_messages(load.stderr())
    finally:
        load.close()
    pre = steady_rate(lines, t0 - p['pre'] + WARMUP_S, t0)
    return dict(failures=final['failures'], errors=errors,
                pgbouncer_warnings=pgbouncer_warnings(pgb.log()[log_mark:]),
                connect_failures=final['connect_failures'],
                old_at_rotation=old_at, old_gone_s=gone, old_left=left,
                polls=polls, rate_before=pre,
                rate=benchlib.rate_series(lines, t0,
                                          min_interval=MIN_INTERVAL_S),
                latency_us=final['latency_us'],
                reload_ack_ms=(t_reload - t0) * 1000,
                reconnect_ack_ms=(t_reconnect - t0) * 1000
                if t_reconnect else None,
                pgbouncer=pgb)


def rotate_restart(ctx, pg, mon, p):
    role, old_pw, new_pw = p['role'], p['old'], p['new']
    binary = ctx.bin('libpq-load')
    args = ['--tx', '--pause-ms', PAUSE_MS]
    old = LibpqLoad(binary, pg.keyvalue(role, old_pw), THREADS, args,
                    name='peers-restart-old')
    new = None
    try:
        old.wait_connected(THREADS)
        time.sleep(p['pre'])
        before = mon.alter_password(role, new_pw)
        old_at = mon.count(role, before)[0]
        t0 = old.terminate()
        old_final = old.finish(stop=False)
        # The new process starts once the old one has gone, as a process
        # manager or a rollout with one replica would do it.
        new = LibpqLoad(binary, pg.keyvalue(role, new_pw), THREADS, args,
                        name='peers-restart-new')
        polls, gone, left = observe(mon, role, before, t0, p['post'],
                                    p['window'])
        new.wait_connected(THREADS)
        new_final = new.finish()
        ready = new.ready_mono()
        # One series of counts: the old process's final line becomes a
        # plain count (the edge of the gap), the new one's go on from it.
        q_old = old_final['queries']
        lines = [(t, m) for t, m in old.lines if not m.get('final')] + \
            [(old_final['mono'], {'mono': old_final['mono'],
                                  'queries': q_old})] + \
            [(t, {**m, 'queries': m['queries'] + q_old})
             for t, m in new.lines if 'queries' in m]
        errors = failure_messages(old.stderr() + new.stderr())
    finally:
        old.close()
        if new is not None:
            new.close()
    pre = steady_rate(old.lines, t0 - p['pre'] + WARMUP_S, t0)
    gap = ready - t0
    return dict(failures=old_final['failures'] + new_final['failures'],
                errors=errors,
                connect_failures=old_final['connect_failures'] +
                new_final['connect_failures'],
                old_at_rotation=old_at, old_gone_s=gone, old_left=left,
                polls=polls, rate_before=pre,
                rate=benchlib.rate_series(lines, t0,
                                          min_interval=MIN_INTERVAL_S),
                latency_us=new_final['latency_us'],
                old_exit_ms=(old_final['mono'] - t0) * 1000,
                gap_ms=gap * 1000,
                not_served_estimate=round(pre * gap) if pre else None)


# --------------------------------------------------------------------------
# The extra hop

def hop_run(ctx, kind, threads, seconds, pg, p, agent, pgb):
    """One back-to-back SELECT 1 run; returns (queries/s over the run after
    its first WARMUP_S (every thread connected by then), p50 latency of an
    iteration in µs)."""
    if kind == 'pool':
        args = ['--threads', threads, '--max', threads, '--min', threads,
                '--seconds', seconds]
        load = PoolLoad(agent.sock, args=args, name=f'peers-hop-{threads}')
        try:
            _, final = load.wait_exit(seconds + 30)
            lines = load.timeline() + [(final['mono'], final)]
        finally:
            load.close()
        # pool-load's t counts from when its threads started.
        start = [m['mono'] for _, m in lines if m.get('t', 0) >= WARMUP_S]
    else:
        conninfo = pg.keyvalue(p['role'], p['new']) if kind == 'direct' \
            else pgb.conninfo()
        load = LibpqLoad(ctx.bin('libpq-load'), conninfo, threads,
                         ['--seconds', seconds], name=f'peers-hop-{kind}')
        try:
            final = load.finish(seconds + 30, stop=False)
            lines = load.lines
            ready = load.ready_mono()
        finally:
            load.close()
        start = [ready + WARMUP_S] if ready else []
    if final['failures']:
        raise AssertionError(f'{kind}: {final["failures"]} failed queries '
                             f'in the throughput run')
    lat = final.get('latency_us') or {}
    if not start:
        return None, lat.get('p50')
    return steady_rate(lines, start[0], float('inf')), lat.get('p50')


def hop(ctx, pg, p, agent, pgb, threads_list, seconds, rounds):
    runs = {kind: {str(n): [] for n in threads_list}
            for kind, _ in HOP_KINDS}
    p50 = {kind: {str(n): [] for n in threads_list}
           for kind, _ in HOP_KINDS}
    kinds = [k for k, _ in HOP_KINDS]
    for r in range(rounds):
        order = kinds[r % len(kinds):] + kinds[:r % len(kinds)]
        for n in threads_list:
            for kind in order:
                q, lat = hop_run(ctx, kind, n, seconds, pg, p, agent, pgb)
                ctx.log(f'hop round {r + 1}/{rounds}, {n} thread(s), '
                        f'{kind}: {q:.0f} queries/s' if q else
                        f'hop {kind}: no rate')
                runs[kind][str(n)].append(q)
                p50[kind][str(n)].append(lat)
    return runs, p50


# --------------------------------------------------------------------------

def run(ctx):
    pre = ctx.pick(2, 5)
    post = ctx.pick(3, 10)
    window = ctx.pick(10, 60)
    hop_seconds = ctx.pick(2, 5)
    hop_rounds = ctx.pick(2, 3)
    hop_threads = [1, THREADS]
    res = dict(threads=THREADS, pause_ms=PAUSE_MS, pre_s=pre, post_s=post,
               window_s=window, poll_ms=POLL_S * 1000,
               hop_seconds=hop_seconds, hop_rounds=hop_rounds,
               hop_threads=hop_threads, ways={},
               progress_ms=PROGRESS_MS, warmup_s=WARMUP_S,
               pool_load_progress_ms=PROGRESS_MS)
    with contextlib.ExitStack() as stack:
        pg = stack.enter_context(h.PgCluster())
        mon = OldConnections(pg)
        stack.callback(mon.close)
        params = {}
        for way, _, _ in WAYS:
            role = 'peer_' + way
            old_pw, new_pw = secrets.token_hex(12), secrets.token_hex(12)
            pg.create_role(role, old_pw)
            params[way] = dict(role=role, old=old_pw, new=new_pw, pre=pre,
                               post=post, window=window)
        for way, label, _ in WAYS:
            ctx.log(f'rotation: {label}')
            p = params[way]
            if way == 'dbswap':
                r = rotate_dbswap(ctx, pg, mon, p, stack)
            elif way.startswith('pgbouncer'):
                r = rotate_pgbouncer(ctx, pg, mon, p, stack,
                                     way == 'pgbouncer_reconnect')
            else:
                r = rotate_restart(ctx, pg, mon, p)
            live = {k: r.pop(k) for k in ('agent', 'pgbouncer') if k in r}
            if 'agent' in live:
                agent = live['agent']
            if way == 'pgbouncer':
                pgb = live['pgbouncer']
                res['pgbouncer_server_lifetime'] = pgb.setting(
                    'server_lifetime')
            ctx.log(f'  failures {r["failures"]}, old-password connections '
                    f'gone after {r["old_gone_s"]} s (left: {r["old_left"]})')
            res['ways'][way] = r
        # The hop: the dbswap way's agent and role (already rotated), the
        # first PgBouncer, the restart way's role for direct connections.
        ctx.log('the extra hop: SELECT 1 back to back')
        res['hop'], res['hop_p50_us'] = hop(
            ctx, pg, params['restart'], agent, pgb, hop_threads, hop_seconds,
            hop_rounds)
    return res


# --------------------------------------------------------------------------
# Rendering

def _s(sec):
    return benchlib.fmt_ms(None if sec is None else sec * 1000)


def _gone(r, window):
    if r['old_gone_s'] is not None:
        return _s(r['old_gone_s'])
    return f'not within {window} s ({r["old_left"]} left)'


def _back(r):
    """Seconds from the rotation until the role again had as many
    connections as at the rotation, none of them old; None if never."""
    for t, old, total in r['polls']:
        if old == 0 and total >= r['old_at_rotation']:
            return t
    return None


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def markdown(res):
    out = []
    ways = res['ways']
    out.append(
        f'One password rotation under load, four ways, each alone on one '
        f'throwaway cluster: {res["threads"]} threads on {res["threads"]} '
        f'connections, `SELECT 1` and every other iteration a short '
        f'transaction, {res["pause_ms"]} ms pause between iterations.  '
        f'The password is changed on the server first (`ALTER ROLE`), then '
        f'where each way takes it; the clock starts there.  "Old-password '
        f'connections" are the role\'s client backends in '
        f'`pg_stat_activity` that logged in before the `ALTER ROLE` '
        f'(polled every {res["poll_ms"]:.0f} ms for up to '
        f'{res["window_s"]} s).  Queries/s before: over the last '
        f'{res["pre_s"] - res["warmup_s"]:g} s before the rotation.')
    out.append('')
    rows = []
    for way, label, how in WAYS:
        r = ways.get(way)
        if r is None:
            continue
        notes = []
        if r.get('gap_ms') is not None:
            notes.append(f'serving again after {benchlib.fmt_ms(r["gap_ms"])}'
                         f' (old process gone after '
                         f'{benchlib.fmt_ms(r["old_exit_ms"])})')
        if r.get('reconnect_ack_ms') is not None:
            notes.append(f'RECONNECT acknowledged after '
                         f'{benchlib.fmt_ms(r["reconnect_ack_ms"])}')
        elif r.get('reload_ack_ms') is not None:
            notes.append(f'RELOAD acknowledged after '
                         f'{benchlib.fmt_ms(r["reload_ack_ms"])}')
        cf = r.get('connect_failures')
        after = [q for t, q in r['rate'] if 0 < t <= res['post_s']]
        low = min(after) if after else None
        before = r.get('rate_before')
        rows.append([label, how, r['failures'],
                     '—' if cf is None else cf,
                     r.get('not_served_estimate'),
                     None if before is None else f'{before:.0f}',
                     None if low is None else
                     f'{low:.0f}' + (f' ({low / before:.0%})'
                                     if before else ''),
                     r['old_at_rotation'], _gone(r, res['window_s']),
                     _s(_back(r)), '; '.join(notes) or ''])
    out.append(benchlib.md_table(
        ['way', 'the new password goes', 'failed queries',
         'failed connects', 'queries not served (estimate)',
         'queries/s before', f'lowest queries/s in the {res["post_s"]} s '
         f'after ({res["progress_ms"]} ms bins)',
         'old-password connections at the rotation',
         'all old-password connections gone after',
         'as many connections as before, all new-password, after', 'notes'],
        rows, 'llrrrrrrrrl'))
    for way, label, _ in WAYS:
        r = ways.get(way)
        if not r or not r['failures']:
            continue
        said = ', '.join(f'`{m}`' + (f' (×{n})' if n > 1 else '')
                         for m, n in r.get('errors', []))
        line = f'{label}, failed queries: {r["failures"]}; the app saw {said}'
        warn = r.get('pgbouncer_warnings')
        if warn:
            line += '; PgBouncer logged ' + ', '.join(
                f'`{m}`' + (f' (×{n})' if n > 1 else '') for m, n in warn)
        out.append(line + '.')
        out.append('')
    rs = ways.get('restart')
    if rs and rs.get('rate_before'):
        out.append(
            f'Queries not served: the restart way\'s steady rate before the '
            f'rotation ({rs["rate_before"]:.0f} queries/s) times the time '
            f'from SIGTERM until the new process\'s first query '
            f'({benchlib.fmt_ms(rs["gap_ms"])}): an estimate, not a count.  '
            f'The other ways serve throughout.')
        out.append('')
    pb = ways.get('pgbouncer')
    if pb:
        if pb['old_gone_s'] is None:
            out.append(
                f'PgBouncer takes a new `password=` in `[databases]` on '
                f'RELOAD for new server connections only: the '
                f'{pb["old_left"]} it had kept working on the old login '
                f'for the whole {res["window_s"]} s window, and would until '
                f'`server_lifetime` ({res["pgbouncer_server_lifetime"]} s, '
                f'the default) or an idle timeout '
                f'closes them; until then the old password cannot be '
                f'revoked without breaking them.')
        else:
            out.append(
                f'PgBouncer with RELOAD alone had no old-password server '
                f'connection left after {_s(pb["old_gone_s"])}.')
        out.append('')
    rc = ways.get('pgbouncer_reconnect')
    if rc:
        after = [q for t, q in rc['rate'] if 0 < t <= res['post_s']]
        out.append(
            f'RECONNECT (PgBouncer 1.18\'s admin console) closes each server '
            f'connection when it is next released, in transaction pooling '
            f'after its current transaction (failed queries: '
            f'{rc["failures"]}), and no old-password connection was left '
            f'after {_gone(rc, res["window_s"])}.  '
            + ('It also drops at once a server login that is under way '
               '("connect string changed" in its log), and PgBouncer 1.18 '
               'takes that for a failed login: a client waiting for a '
               'server connection gets the `server_login_retry` error '
               'above, a failed query for the app.  '
               if any('server_login_retry' in m for m, _ in
                      rc.get('pgbouncer_warnings') or []) else '')
            + f'PgBouncer opens the new '
            f'connections as clients wait for them: the role had its '
            f'{rc["old_at_rotation"]} connections back '
            + (f'after {_s(_back(rc))}' if _back(rc) is not None else
               f'not within the {rc["polls"][-1][0]:.1f} s observed')
            + (f', and queries/s fell to {min(after):.0f} in the worst '
               f'{res["progress_ms"]} ms meanwhile.' if after else '.'))
        out.append('')
    hop_res = res.get('hop')
    if hop_res:
        threads = [str(n) for n in res['hop_threads']]
        med = {k: {n: _median(hop_res[k][n]) for n in threads}
               for k, _ in HOP_KINDS}
        header = ['`SELECT 1` back to back']
        for n in threads:
            header += [f'{n} thread{"s" if n != "1" else ""}: queries/s',
                       'vs direct']
        rows = []
        for kind, label in HOP_KINDS:
            row = [label]
            for n in threads:
                q, d = med[kind][n], med['direct'][n]
                row += [None if q is None else f'{q:.0f}',
                        benchlib.fmt_ratio(q / d if q and d else None)]
            rows.append(row)
        out.append(
            f'The extra hop: each run {res["hop_seconds"]} s of `SELECT 1` '
            f'with no pause, each thread on its own connection (the pool: '
            f'min = max = threads); the median of {res["hop_rounds"]} '
            f'rounds, the kinds alternating within each round; the first '
            f'{res["warmup_s"]:g} s of each run left out.')
        out.append('')
        out.append(benchlib.md_table(header, rows))
    return '\n'.join(out)


def headline(res):
    ways, rows = res['ways'], []
    d = ways.get('dbswap')
    pb, rc = ways.get('pgbouncer'), ways.get('pgbouncer_reconnect')
    rs = ways.get('restart')
    if d and pb and rc:
        rows.append(['one rotation under load: every connection on the new '
                     'password after', _gone(d, res['window_s']),
                     f'PgBouncer RELOAD: {_gone(pb, res["window_s"])}; '
                     f'+ RECONNECT: {_gone(rc, res["window_s"])}', '—'])
    if d and rs:
        rows.append(['one rotation under load: failed queries',
                     f'{d["failures"]}',
                     f'restart: {rs["failures"]}, and about '
                     f'{rs["not_served_estimate"]} not served in a '
                     f'{benchlib.fmt_ms(rs["gap_ms"])} gap', '—'])
    hop_res = res.get('hop')
    if hop_res:
        n = str(res['hop_threads'][-1])
        direct = _median(hop_res['direct'][n])
        pool = _median(hop_res['pool'][n])
        bouncer = _median(hop_res['pgbouncer'][n])
        if direct and pool and bouncer:
            rows.append([f'SELECT 1 queries/s vs direct libpq, {n} threads',
                         benchlib.fmt_ratio(pool / direct),
                         f'through PgBouncer: '
                         f'{benchlib.fmt_ratio(bouncer / direct)}',
                         benchlib.fmt_ratio(pool / bouncer)])
    return rows


def plots(res, outdir):
    series = []
    for way, label, _ in WAYS:
        r = res['ways'].get(way)
        if r and r.get('rate'):
            pts = [(t, q) for t, q in r['rate']
                   if -res['pre_s'] <= t <= res['post_s']]
            series.append({'title': label, 'points': pts, 'style': 'lines'})
    if not series:
        return []
    png = 'peers-rotation-qps.png'
    benchlib.plot(os.path.join(outdir, png),
                  'queries/s through one password rotation',
                  'seconds from the rotation', 'queries/s', series,
                  yrange=(0, None), arrows=[(0, 'rotation')],
                  key='bottom right')
    return [(png, f'Queries/s through one password rotation, '
                  f'{res["threads"]} threads, each way alone (progress '
                  f'every {res["progress_ms"]} ms)')]
