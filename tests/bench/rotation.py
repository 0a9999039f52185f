"""Rotation latency: from the rename(2) of a new env file (plaintext, or
sealed with the agent's key) to the last subscriber's ack, for 1 to 1,000
subscriber processes, against the floor of one validation on the agent's
own code path measured in the same run and against each rotation's own
validation as the agent logged it; and where the time goes.

Each row: a role of its own, dbswapd --verbose watching one env file, N-1
subscriber processes (tests/helpers/subscriber.c --no-connect: libdbswap,
acking each update as it arrives) plus this script's own client, which
notes when its update arrives and acks it.  A round: ALTER ROLE on the
server (a psql session kept open), the new file written beside the old
one and fsynced (sealed beforehand by dbswapctl encrypt), then the clock
starts at rename(); the script polls the agent's status every ms until
the new generation is acked by all N.  The agent's log gives the parts:
its first inotify event to the read, the read, decrypt and parse, the
validation connection, publish to the last ack.  One more row has a
libdbswap pool (pool-load, 4 connections, light load) as the subscriber:
its ack waits for the pool's own new connections and the old ones'
drain (this script's client is the row's second subscriber).

The floor: tests/helpers/connect-floor.c links the agent's probe
(agent/probe.c on common/loop.c, libpq's reads through agent/authguard.c)
and prints what the agent logs as "validated in" for each probe, against
the same server with a SCRAM role of its own; it runs in batches before,
between and after the rows, so that the machine's drift weighs on it as
on the rows.  A rotation contains one validation, so its time over its
own validation cannot be below 1; checks() lists what would say the
measurement is wrong (and run() logs it)."""

import os
import re
import subprocess
import time

import benchlib as b
import harness as h
from test_pool import Psql

NAME = 'rotation'
TITLE = 'Rotation latency'

TARGET = 'DATABASE_URL'
POLL_S = 0.001  # status polling while a rotation is under way
POOL_ARGS = ('--threads', 2, '--min', 4, '--max', 4, '--pause-ms', 5)

READ_RE = re.compile(r': read ([\d.]+) ms after its first event; read, '
                     r'decrypted and parsed in ([\d.]+) ms$', re.M)
VALIDATED_RE = re.compile(rf'{TARGET}: value validated in '
                          r'([\d.]+) ms', re.M)
ACKED_RE = re.compile(rf'{TARGET}: generation (\d+) acked by all (\d+) '
                      r'subscriber\(s\), ([\d.]+) ms', re.M)


def connect_floor(ctx, url, n):
    r = subprocess.run([ctx.bin('connect-floor'), str(n)], input=url + '\n',
                       capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f'connect-floor exited {r.returncode}: '
                           f'{r.stderr.strip()[-500:]}')
    return [float(x) for x in r.stdout.split()]


def own_ratios(r):
    """Each rotation's rename → all acked over its own validation (the
    agent's log): at least 1 unless the measurement is wrong."""
    return [a / v for a, v in zip(r['rename_to_all_acked_ms'],
                                  r['validation_ms']) if v > 0]


def overheads(r):
    """Each rotation's rename → all acked minus its own validation: the
    agent's own work (and this script's polling)."""
    return [a - v for a, v in zip(r['rename_to_all_acked_ms'],
                                  r['validation_ms'])]


def agent_path(res):
    """Whether the floor was measured on the agent's code path (runs from
    before issue 16 measured a blocking PQconnectdb + SELECT 1)."""
    return res.get('floor_path') == 'probe'


def checks(res):
    """What says a ratio cannot be trusted, one sentence each: a rotation
    shorter than its own validation, a row whose p50 is below the floor's
    median."""
    out = []
    floor = b.pct(res['floor_ms'], 50)
    for r in res['rows']:
        low = [x for x in own_ratios(r) if x < 1.0]
        if low:
            out.append(f'{label(r)}, {kind(r)}: {len(low)} of {r["rounds"]} '
                       f'rotations took less than their own validation '
                       f'(lowest {min(low):.2f}×): the log lines and the '
                       f'rounds do not match')
        p50 = b.pct(r['rename_to_all_acked_ms'], 50)
        if floor and p50 / floor < 1.0:
            out.append(f'{label(r)}, {kind(r)}: p50 {p50:.1f} ms is below '
                       f'the floor\'s median {floor:.1f} ms '
                       f'({p50 / floor:.2f}×)' +
                       ('' if agent_path(res) else
                        ': that floor was not measured on the agent\'s '
                        'code path') +
                       '; the rotations\' own validations: p50 '
                       f'{b.pct(r["validation_ms"], 50):.1f} ms')
    return out


def rename_in(path, data):
    """Writes data beside path (fsynced), renames it over path; returns the
    monotonic time of the rename: where the clock starts."""
    tmp = path + '.new'
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    t0 = time.monotonic()
    os.rename(tmp, path)
    return t0


class Subscribers:
    """n subscriber processes, output discarded (it holds the conninfo)."""

    def __init__(self, ctx, sock, n):
        self.procs = []
        try:
            for _ in range(n):
                self.procs.append(subprocess.Popen(
                    [ctx.bin('subscriber'), '--socket', sock, '--no-connect',
                     TARGET], stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        except BaseException:
            self.close()
            raise

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs = []


class Row:
    """One row's set-up: role, env file, agent, subscribers."""

    def __init__(self, ctx, pg, psql, n, sealed, pool, key, pub):
        self.ctx, self.pg, self.psql = ctx, pg, psql
        self.n, self.sealed, self.pool = n, sealed, pool
        self.pub = pub
        self.role = f'rot_{n}_{"enc" if sealed else "plain"}' + \
            ('_pool' if pool else '')
        self.password = h.secrets.token_hex(8)
        pg.create_role(self.role, self.password)
        self.env = os.path.join(ctx.tmp, self.role + '.env')
        rename_in(self.env, self.content(self.password))
        # A state directory, as the packaged unit has: every accepted
        # value is saved (on the agent's writer thread).
        args = ['--verbose', '--state-dir',
                os.path.join(ctx.tmp, self.role + '.state')] + \
            (['--key', key] if sealed else [])
        self.agent = h.Agent(env_files=[self.env], args=args)
        self.subs = self.load = None

    def content(self, password):
        text = f'{TARGET}={self.pg.url(self.role, password)}\n'.encode()
        if not self.sealed:
            return text
        return subprocess.run([self.ctx.bin('dbswapctl'), 'encrypt',
                               '--pubkey', self.pub], input=text,
                              capture_output=True, check=True).stdout

    def close(self):
        for x in (self.subs, self.load, self.agent):
            if x:
                x.close()


def measure(ctx, row, rounds):
    """rounds rotations; returns the raw figures of the row."""
    from common import PoolLoad
    agent = row.agent
    agent.wait_log(rf'{TARGET}: generation 1 published')
    if row.pool:
        row.load = PoolLoad(agent.sock, args=POOL_ARGS, name='bench-rotation')
    else:
        row.subs = Subscribers(ctx, agent.sock, row.n - 1)
    delivered, acked = [], []
    with agent.client(name='bench') as probe, \
            agent.client(name='bench-status') as status:
        probe.subscribe([TARGET])
        u = probe.next_update()
        probe.ack(TARGET, u['generation'])
        h.wait_for(lambda: (t := h.target_status(status, TARGET))[
            'subscribers'] == t['acked'] == row.n, timeout=120,
            what=f'{row.n} subscribers acked')
        for i in range(rounds):
            password = h.secrets.token_hex(8)
            row.psql.set_password(row.role, password)
            data = row.content(password)
            t0 = rename_in(row.env, data)
            u = probe.next_update(timeout=30)
            delivered.append((time.monotonic() - t0) * 1000)
            probe.ack(TARGET, u['generation'])
            deadline = t0 + 60
            while True:
                t = h.target_status(status, TARGET)
                if t['generation'] == u['generation'] and \
                        t['acked'] == row.n:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f'generation {u["generation"]} not '
                                       f'acked by {row.n} within 60 s: {t}')
                time.sleep(POLL_S)
            acked.append((time.monotonic() - t0) * 1000)
            # Let the subscribers' own work (and the pool's drain) end
            # before the next round's clock starts.
            time.sleep(0.02)
    log = agent.log()
    reads = [m for m in READ_RE.findall(log)][-rounds:]
    validated = [float(x) for x in VALIDATED_RE.findall(log)][-rounds:]
    fanout = [float(ms) for g, n, ms in ACKED_RE.findall(log)
              if int(g) > 1][-rounds:]
    if not (len(reads) == len(validated) == len(fanout) == rounds):
        raise RuntimeError(f'{row.role}: the agent logged {len(reads)} '
                           f'reads, {len(validated)} validations, '
                           f'{len(fanout)} acks by all for {rounds} rounds')
    return {
        'subscribers': row.n, 'sealed': row.sealed, 'pool': row.pool,
        'rounds': rounds,
        'rename_to_all_acked_ms': acked,
        'rename_to_update_ms': delivered,
        'settle_ms': [float(a) for a, _ in reads],
        'read_decrypt_parse_ms': [float(p) for _, p in reads],
        'validation_ms': validated,
        'publish_to_all_acked_ms': fanout,
    }


def run(ctx):
    counts = ctx.pick((1, 10, 100), (1, 10, 100, 1000))
    rounds = ctx.pick(10, 50)
    floor_n = ctx.pick(5, 20)  # each batch: before, between, after rows
    key = os.path.join(ctx.tmp, 'agent.key')
    pub = subprocess.run([ctx.bin('dbswapctl'), 'keygen', '--out', key],
                         capture_output=True, text=True,
                         check=True).stdout.strip()
    rows = []
    with h.PgCluster() as pg:
        pg.create_role('floor', 'floor-pw')
        psql = Psql(pg)
        batches = []
        try:
            plan = [(n, sealed, False) for sealed in (False, True)
                    for n in counts] + [(2, False, True)]
            for n, sealed, pool in plan:
                batches.append(connect_floor(ctx, pg.url('floor', 'floor-pw'),
                                             floor_n))
                row = Row(ctx, pg, psql, n, sealed, pool, key, pub)
                try:
                    rows.append(measure(ctx, row, rounds))
                finally:
                    row.close()
                r = rows[-1]
                ctx.log(f'{n} subscriber(s){" sealed" if sealed else ""}'
                        f'{" pool" if pool else ""}: p50 '
                        f'{b.pct(r["rename_to_all_acked_ms"], 50):.1f} ms, '
                        f'its validations {b.pct(r["validation_ms"], 50):.1f}'
                        f' ms, the floor before it '
                        f'{b.pct(batches[-1], 50):.1f} ms')
            batches.append(connect_floor(ctx, pg.url('floor', 'floor-pw'),
                                         floor_n))
        finally:
            psql.close()
    floor = [x for batch in batches for x in batch]
    ctx.log(f'floor (the agent\'s validation, {len(floor)} probes): median '
            f'{b.pct(floor, 50):.1f} ms, p99 {b.pct(floor, 99):.1f} ms')
    res = {'floor_ms': floor, 'floor_batches_ms': batches,
           'floor_path': 'probe', 'rows': rows,
           'params': {'rounds': rounds, 'subscriber_counts': list(counts),
                      'floor_rounds': len(floor), 'floor_batch': floor_n,
                      'pool_load_args': [str(a) for a in POOL_ARGS]}}
    for c in checks(res):
        ctx.log(f'WARNING: {c}')
    return res


def kind(r):
    return 'sealed' if r['sealed'] else 'plaintext'


def label(r):
    if r['pool']:
        return '1 libdbswap pool (4 connections, under load) + 1 process'
    return f'{r["subscribers"]:,} subscriber process' + \
        ('es' if r['subscribers'] > 1 else '')


def floor_text(res):
    """How the floor of res was measured, for the section's text."""
    f, p = res['floor_ms'], res['params']
    figures = (f'median **{b.pct(f, 50):.1f} ms**, p99 '
               f'{b.pct(f, 99):.1f} ms over {p["floor_rounds"]} probes')
    if not agent_path(res):
        return (f'The floor is one new libpq connection with SCRAM-SHA-256 '
                f'plus `SELECT 1` (a blocking `PQconnectdb`, not the '
                f'agent\'s code path: this run predates the floor measured '
                f'on it), measured in the same run: {figures}.')
    return (f'The floor is one validation as the agent does it: '
            f'`tests/helpers/connect-floor.c` links the agent\'s own probe '
            f'(`agent/probe.c`: libpq\'s non-blocking connect on the '
            f'agent\'s event loop, its reads before login through the '
            f'agent\'s guard, `agent/authguard.c`; SCRAM-SHA-256 over '
            f'loopback; then the agent\'s check query, `PROBE_QUERY`), runs '
            f'it with the agent\'s options against the same server, and '
            f'times it as the agent does, from `probe_start()` to the '
            f'callback: the figure the agent logs as "validated in".  '
            f'It runs in the same run, in batches of {p["floor_batch"]} '
            f'before, between and after the rows (each batch after one '
            f'untimed probe: the agent\'s first value was validated when it '
            f'started): {figures}.  Every '
            f'rotation contains one such validation, so no validated '
            f'rotation can be faster; only the process (this one does '
            f'nothing else) and the moment differ.')


def markdown(res):
    floor = b.pct(res['floor_ms'], 50)
    rows = res['rows']
    p = res['params']
    out = [f'From the `rename(2)` of the new env file to the ack of the '
           f'last subscriber, {p["rounds"]} rotations per row.  ' +
           floor_text(res), '']
    table = []
    for r in rows:
        a = b.summary(r['rename_to_all_acked_ms'])
        vs_floor = a['p50'] / floor
        table.append([label(r), kind(r),
                      b.fmt_ms(a['p50']), b.fmt_ms(a['p99']),
                      b.fmt_ms(a['max']),
                      b.fmt_ms(b.pct(r['validation_ms'], 50)),
                      b.fmt_ms(b.pct(overheads(r), 50), 2),
                      b.fmt_ratio(vs_floor) + (' ⚠' if vs_floor < 1 else ''),
                      b.fmt_ratio(b.pct(own_ratios(r), 50))])
    out.append(b.md_table(['subscribers', 'env file', 'p50', 'p99', 'max',
                           'its validation, p50', 'minus its validation, '
                           'p50', 'p50 / floor',
                           '÷ its validation, median'], table, 'llrrrrrrr'))
    out.append('"Its validation" is the validation connect of the same '
               'rotations, as the agent logged it (`dbswapd --verbose`); '
               '"minus its validation" takes each rotation\'s own off its '
               'rename → all acked: the agent\'s own overhead (settling, '
               'read, publish, the fan-out and the acks) plus this script\'s '
               'status polling.  "÷ its validation" is each rotation over its '
               'own validation, the median of the row: it cannot be below '
               '1× for a validated rotation, whatever the machine does '
               'meanwhile.  "p50 / floor" compares the medians of two '
               'samples taken in two processes at different moments: it '
               'may land on either side of that, and on a busy machine '
               'below 1×, which would say the floor was measured at a '
               'slower moment, not that a rotation beat it; one below 1× is '
               'marked ⚠ and logged by the bench.')
    out.append('')
    warnings = checks(res)
    if warnings:
        out.append('**Check:** ' + '; '.join(warnings) + '.')
        out.append('')
    out.append('Where the time goes (medians; the first four from the '
               'agent\'s log, `dbswapd --verbose`):\n')
    table = []
    for r in rows:
        e2e = b.pct(r['rename_to_all_acked_ms'], 50)
        parts = [b.pct(r[k], 50) for k in
                 ('settle_ms', 'read_decrypt_parse_ms', 'validation_ms',
                  'publish_to_all_acked_ms')]
        table.append([label(r), kind(r)] +
                     [b.fmt_ms(x, 2) for x in parts] +
                     [b.fmt_ms(e2e - sum(parts), 2), b.fmt_ms(e2e)])
    out.append(b.md_table(
        ['subscribers', 'env file', 'inotify event → read',
         'read, decrypt, parse', 'validation connect',
         'publish → all acked', 'the rest', 'rename → all acked'],
        table, 'llrrrrrr'))
    out.append('"inotify event → read" is the agent\'s settling: it waits '
               '1 ms after an event that completes a write (a rename into '
               'place, a close after writing) for more to come.  "publish → '
               'all acked" is the fan-out plus each subscriber\'s ack; for '
               'the pool it includes the pool\'s own new connections (SCRAM '
               'again, several at once) and the old ones\' drain: that '
               'row\'s ack is the moment the old password can be revoked.  '
               '"The rest" is the kernel\'s delivery of the inotify event, '
               f'the event loop, and this script\'s '
               f'{POLL_S * 1000:g} ms status polling.  '
               'Subscribers are separate processes on libdbswap; each '
               'rotation starts after the previous one was acked.  With '
               'many processes on few cores, "publish → all acked" is '
               'mostly the scheduler running each '
               'process once to read its update and ack it: the Fan-out '
               'section below delivers to as many connections in one '
               'process.')
    return '\n'.join(out)


def plots(res, outdir):
    floor = b.pct(res['floor_ms'], 50)
    series = []
    for sealed in (False, True):
        rows = [r for r in res['rows'] if r['sealed'] == sealed and
                not r['pool']]
        kind = 'sealed' if sealed else 'plaintext'
        for q in (50, 99):
            series.append({'title': f'{kind}, p{q}', 'points': [
                (r['subscribers'], b.pct(r['rename_to_all_acked_ms'], q))
                for r in rows]})
    ns = [r['subscribers'] for r in res['rows']]
    series.append({'title': 'floor: one validation on the agent\'s code '
                   '(median)' if agent_path(res) else
                   'floor: one SCRAM connect (median)',
                   'points': [(min(ns), floor), (max(ns), floor)],
                   'style': 'dashed'})
    png = 'rotation.png'
    b.plot(os.path.join(outdir, png),
           'Rotation: rename of the env file to the last ack',
           'subscriber processes', 'ms', series, logx=True, logy=True)
    return [(png, 'Rotation latency against the number of subscribers')]


def headline(res):
    """The ratio is each rotation's over its own validation (the median of
    the row): at least 1× by construction, unlike a ratio of medians taken
    at different moments."""
    floor = b.pct(res['floor_ms'], 50)
    what = ('one validation, the agent\'s code' if agent_path(res) else
            'one new SCRAM connection')
    rows = []
    plain = [r for r in res['rows'] if not r['pool'] and not r['sealed']]
    sealed = [r for r in res['rows'] if not r['pool'] and r['sealed']]
    pool = [r for r in res['rows'] if r['pool']]
    for r in tuple(plain) + tuple(sealed[-1:]) + tuple(pool):
        p50 = b.pct(r['rename_to_all_acked_ms'], 50)
        own = b.pct(r['validation_ms'], 50)
        rows.append([f'rotation, {label(r)}, {kind(r)}: rename → all acked, '
                     f'p50 (ratio: each rotation ÷ its own validation, '
                     f'median of {r["rounds"]})', b.fmt_ms(p50),
                     f'its validation: {b.fmt_ms(own)}; floor ({what}): '
                     f'{b.fmt_ms(floor)}',
                     b.fmt_ratio(b.pct(own_ratios(r), 50))])
    return rows
