"""Footprint: what an idle dbswapd costs the host.  Memory (VmRSS, and the
peak VmHWM) with 0 and with 1,000 subscribers; CPU time and wake-ups per
second over an idle window (full mode 60 s, quick 10 s), with failover
configured and without.

Two agents run side by side over the same windows, each with one target:
  without failover   DATABASE_URL only: nothing is monitored
  with failover      DATABASE_URL and DATABASE_URL_SECONDARY (a second
                     throwaway cluster), the agent's defaults: a monitor
                     connection to each server, a health check every 30 s
Next to them, when it starts, an idle PgBouncer (tests/bench/pgbouncer.py)
in front of the primary with no client connected, for scale.

Figures from /proc: VmRSS and VmHWM (/proc/PID/status); CPU = utime +
stime (/proc/PID/stat) over the window; wake-ups = voluntary + involuntary
context switches of all the process's threads (/proc/PID/task/*/status)
over the window, a proxy: a process that sleeps in epoll_wait and wakes
up switches out voluntarily once per wake-up.  The subscribers are
libdbswap clients of the fanout helper (tests/helpers/fanout.c), one
epoll loop, connected and acked before the window starts."""

import glob
import os
import time

import benchlib
import harness as h
from fanout import Fanout

NAME = 'footprint'
TITLE = 'Footprint'

TARGET = 'DATABASE_URL'
SUBSCRIBERS = 1000
SETTLE_S = 1.0
TICK = os.sysconf('SC_CLK_TCK')


def snapshot(pid):
    """{'cpu_s', 'switches', 'rss_kib', 'hwm_kib'} of process pid now."""
    with open(f'/proc/{pid}/stat') as f:
        # Past the command name, which may hold blanks and parentheses.
        fields = f.read().rsplit(')', 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICK  # utime, stime
    mem = {}
    with open(f'/proc/{pid}/status') as f:
        for line in f:
            k, _, v = line.partition(':')
            if k in ('VmRSS', 'VmHWM'):
                mem[k] = int(v.split()[0])
    switches = 0
    for path in glob.glob(f'/proc/{pid}/task/*/status'):
        try:
            with open(path) as f:
                for line in f:
                    if line.startswith(('voluntary_ctxt_switches',
                                        'nonvoluntary_ctxt_switches')):
                        switches += int(line.split()[1])
        except OSError:
            pass  # a thread that just ended
    return {'cpu_s': cpu, 'switches': switches, 'rss_kib': mem['VmRSS'],
            'hwm_kib': mem['VmHWM'], 't': time.monotonic()}


def window(pids, seconds):
    """Idle figures of each process over seconds: {name: {...}}."""
    before = {name: snapshot(pid) for name, pid in pids.items()}
    time.sleep(seconds)
    out = {}
    for name, pid in pids.items():
        a, b = before[name], snapshot(pid)
        dt = b['t'] - a['t']
        out[name] = {'seconds': dt,
                     'cpu_ms': (b['cpu_s'] - a['cpu_s']) * 1000,
                     'switches': b['switches'] - a['switches'],
                     'wakeups_per_s': (b['switches'] - a['switches']) / dt,
                     'rss_kib': b['rss_kib'], 'hwm_kib': b['hwm_kib']}
    return out


def start_pgbouncer(pg, role, password):
    """An idle PgBouncer, or the reason there is none."""
    try:
        from pgbouncer import PgBouncer
        return PgBouncer(pg, role, password), None
    except Exception as e:  # optional: the agents' figures stand alone
        return None, f'{type(e).__name__}: {e}'


def run(ctx):
    seconds = ctx.pick(10, 60)
    out = {'window_s': seconds, 'subscribers': SUBSCRIBERS,
           'clock_tick_hz': TICK}
    with h.PgCluster() as pg1, h.PgCluster() as pg2:
        role, password = 'footprint', h.secrets.token_hex(12)
        for pg in (pg1, pg2):
            pg.create_role(role, password)
        plain = os.path.join(ctx.tmp, 'plain.env')
        failover = os.path.join(ctx.tmp, 'failover.env')
        h.write_rename(plain, f'{TARGET}={pg1.url(role, password)}\n')
        h.write_rename(failover, f'{TARGET}={pg1.url(role, password)}\n'
                       f'{TARGET}_SECONDARY={pg2.url(role, password)}\n')
        args = ['--max-clients', str(SUBSCRIBERS + 64)]
        # Each with a state directory, as the packaged unit has.
        state = [os.path.join(ctx.tmp, f'{name}.state')
                 for name in ('plain', 'failover')]
        with h.Agent(env_files=[plain],
                     args=args + ['--state-dir', state[0]]) as a_plain, \
                h.Agent(env_files=[failover],
                        args=args + ['--state-dir', state[1]]) as a_fo, \
                a_plain.client(name='bench-footprint') as c_plain, \
                a_fo.client(name='bench-footprint') as c_fo:
            h.wait_for(lambda: h.target_status(c_plain, TARGET)
                       ['generation'] >= 1, timeout=30,
                       what='the first value (without failover)')
            h.wait_for(lambda: all(s['health'] == 'up' for s in
                                   h.target_status(c_fo, TARGET)['servers'])
                       and len(h.target_status(c_fo, TARGET)['servers']) == 2,
                       timeout=60, what='both servers checked and up')
            pgb, why = start_pgbouncer(pg1, role, password)
            try:
                agents = {'plain': a_plain, 'failover': a_fo}
                pids = {k: a.pid for k, a in agents.items()}
                if pgb:
                    pids['pgbouncer'] = pgb.proc.pid
                else:
                    out['pgbouncer_skipped'] = why
                    ctx.log(f'no PgBouncer: {why}')
                time.sleep(SETTLE_S)
                ctx.log(f'idle, 0 subscribers, {seconds} s')
                out['idle'] = window(pids, seconds)

                before = {k: snapshot(a.pid) for k, a in agents.items()}
                fanouts = {k: Fanout(ctx.bin('fanout'), a.sock, SUBSCRIBERS,
                                     TARGET, ctx.tmp, name=f'footprint-{k}')
                           for k, a in agents.items()}
                try:
                    out['connect'] = {}
                    for k, fo in fanouts.items():
                        ready = fo.wait_ready()
                        c = c_plain if k == 'plain' else c_fo
                        h.wait_for(lambda: h.target_status(c, TARGET)
                                   ['acked'] == SUBSCRIBERS, timeout=60,
                                   what=f'{SUBSCRIBERS} subscribers acked')
                        after = snapshot(agents[k].pid)
                        out['connect'][k] = {
                            'setup_s': ready['setup'],
                            'cpu_ms': (after['cpu_s'] -
                                       before[k]['cpu_s']) * 1000}
                    time.sleep(SETTLE_S)
                    ctx.log(f'idle, {SUBSCRIBERS} subscribers, {seconds} s')
                    out['subscribed'] = window(
                        {k: a.pid for k, a in agents.items()}, seconds)
                finally:
                    for fo in fanouts.values():
                        fo.close()
            finally:
                if pgb:
                    pgb.close()
            st = h.target_status(c_fo, TARGET)
            out['health_checks'] = sum(s.get('checks') or 0
                                       for s in st['servers'])
    return out


LABELS = {'plain': 'dbswapd, without failover',
          'failover': 'dbswapd, with failover (2 servers monitored)',
          'pgbouncer': 'PgBouncer, idle, no client'}


def _cpu(ms, hz):
    """CPU time counted in clock ticks: none seen is below one tick."""
    if ms is None:
        return None
    if ms == 0:
        return f'< {1000 / hz:.0f} ms'
    return f'{ms:.0f} ms'


def _mib(kib):
    return None if kib is None else f'{kib / 1024:.1f} MiB'


def markdown(res):
    idle, sub = res['idle'], res.get('subscribed', {})
    n = res['subscribers']
    hz = res['clock_tick_hz']
    rows = []
    for k in ('plain', 'failover', 'pgbouncer'):
        if k not in idle:
            continue
        i, s = idle[k], sub.get(k)
        rows.append([
            LABELS[k],
            _mib(i['rss_kib']), _mib(i['hwm_kib']),
            _mib(s['rss_kib']) if s else '—',
            _mib(s['hwm_kib']) if s else '—',
            _cpu(i['cpu_ms'], hz), f'{i["wakeups_per_s"]:.2f}',
            _cpu(s['cpu_ms'], hz) if s else '—',
            f'{s["wakeups_per_s"]:.2f}' if s else '—'])
    table = benchlib.md_table(
        ['process', 'RSS, 0 subs', 'peak (HWM)', f'RSS, {n:,} subs',
         'peak (HWM)', f'CPU / {res["window_s"]} s idle',
         'wake-ups/s', f'CPU / {res["window_s"]} s, {n:,} subs',
         f'wake-ups/s, {n:,} subs'], rows)
    notes = [
        f'Each figure is over one idle window of {res["window_s"]} s, '
        f'the processes measured side by side; "{n:,} subs": {n:,} '
        f'libdbswap subscribers (the fanout helper) connected and acked '
        f'before the window.  RSS and peak: VmRSS and VmHWM at the end '
        f'of the window.  CPU: utime + stime over the window (clock ticks '
        f'of 1/{hz} s).  **Wake-ups/s is a proxy**: the voluntary + '
        f'involuntary context switches of all the process\'s threads '
        f'(`/proc/PID/task/*/status`) per second.',
        '',
        f'With failover the agent holds a monitor connection to each '
        f'server and checks each every 30 s (its defaults), '
        f'{res.get("health_checks", "—")} checks in all by the end; a '
        f'window shorter than that interval may see none.']
    conn = res.get('connect')
    if conn:
        parts = [f'{LABELS[k].split(", ", 1)[1]}: '
                 f'{c["cpu_ms"]:.0f} ms of CPU (all connected in '
                 f'{c["setup_s"] * 1000:.0f} ms)' for k, c in conn.items()]
        notes.append('')
        notes.append(f'Accepting the {n:,} subscribers (hello, subscribe, '
                     f'first update, ack) cost the agent ' +
                     '; '.join(parts) + '.')
    if res.get('pgbouncer_skipped'):
        notes.append('')
        notes.append(f'PgBouncer was not measured: '
                     f'`{res["pgbouncer_skipped"]}`.')
    elif 'pgbouncer' in idle:
        notes.append('')
        notes.append('PgBouncer: `pool_mode = transaction`, no client '
                     'connected, so no server connection either; not '
                     'measured with subscribers (it has none).')
    return table + '\n' + '\n'.join(notes) + '\n'


def plots(res, outdir):
    return []


def headline(res):
    idle, sub = res['idle'], res.get('subscribed', {})
    rows = []
    bouncer = idle.get('pgbouncer')
    for key in ('plain', 'failover'):
        a = idle[key]
        theirs, ratio = '—', '—'
        if bouncer:
            theirs = (f'PgBouncer idle: {_mib(bouncer["rss_kib"])}, '
                      f'{bouncer["wakeups_per_s"]:.2f} wake-ups/s')
            ratio = f'{a["rss_kib"] / bouncer["rss_kib"]:.2f}× memory'
        with_subs = sub.get(key)
        rows.append([f'{LABELS[key]}: RSS idle'
                     + (f' / with {res["subscribers"]:,} subscribers'
                        if with_subs else '') + ', wake-ups/s idle',
                     f'{_mib(a["rss_kib"])}'
                     + (f' / {_mib(with_subs["rss_kib"])}' if with_subs
                        else '') + f', {a["wakeups_per_s"]:.2f}/s',
                     theirs, ratio])
    return rows
