"""Failover benchmark: how long from a primary crash (pg_ctl stop -m
immediate) until the agent has the secondary in use and a pool under load
has acked it, with the agent's DEFAULT failover settings; next to the worst
cases that follow from the settings.

Two throwaway PostgreSQL clusters (same role and password on both), dbswapd
with only DATABASE_URL and DATABASE_URL_SECONDARY in its env file, and
pool-load (tests/helpers/pool-load.c) with 4 threads on a pool of 4.  Each
round: stop the primary -m immediate, poll the agent's status every 2 ms
and note when the primary is first seen suspect, then down, when the
secondary is current, and when every subscriber acked it; count pool-load's
failures; then start the primary again and `dbswapctl failback` to reset.

Then, unless --no-hang, one round of a different kind, labelled as such:
short settings written into the env file (applied live), the primary hung
with SIGSTOP (postmaster and children), and after SIGCONT the automatic
failback timed.

Run: ./dev.sh bench failover [--rounds N] [--no-hang]
(numbers vary with machine load)"""

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import harness as h
from common import PoolLoad

TARGET = 'DATABASE_URL'
THREADS = 4
CONFIRM_MS = 250  # the agent's confirmation interval after a failed check


def hang_worst(interval, timeout, threshold):
    """Worst time from a hang to the server declared down: the hang begins
    just after a check, the next check's query times out, then the other
    threshold - 1 checks start on new connections CONFIRM_MS apart (the
    first at once) and each times out too."""
    confirms = max(threshold - 2, 0) * CONFIRM_MS + timeout if threshold > 1 \
        else 0
    return interval + timeout + confirms


def hang_formula(interval, timeout, threshold):
    if threshold <= 1:
        return f'{interval} + {timeout} ms'
    return (f'{interval} + {timeout} + {threshold - 2} × {CONFIRM_MS} + '
            f'{timeout} ms')
POLL_S = 0.002
# The hang round's settings: short, so that it takes seconds.
HANG_SETTINGS = {'DB_HEALTH_CHECK_INTERVAL': 300, 'DB_CONNECTION_TIMEOUT': 500,
                 'DB_FAILURE_THRESHOLD': 3, 'DB_PRIMARY_RETRY_INTERVAL': 1500}
STEPS = [('suspect', 'primary seen suspect (a check failed)'),
         ('down', 'primary seen down'),
         ('current', 'secondary current (published)'),
         ('acked', 'every subscriber acked the secondary')]


def env_text(primary, secondary, role, password, settings=None):
    text = (f'{TARGET}={primary.url(role, password)}\n'
            f'{TARGET}_SECONDARY={secondary.url(role, password)}\n')
    for k, v in (settings or {}).items():
        text += f'{k}={v}\n'
    return text


def target(status):
    return h.target_status(status, TARGET)


def wait_status(status, predicate, timeout, what):
    """Polls status until predicate(target entry); returns (time, entry)."""
    deadline = time.monotonic() + timeout
    last = err = None
    while True:
        try:
            last = target(status)
            if predicate(last):
                return time.monotonic(), last
        except Exception as e:
            err = e
        if time.monotonic() > deadline:
            raise RuntimeError(f'no {what} within {timeout} s; last status '
                               f'{last!r}; last error {err!r}')
        time.sleep(0.01)


def in_use(t, role, subscribers=1):
    return (t['failover']['current'] == role and
            t['subscribers'] == t['acked'] == subscribers)


def all_up(t):
    return all(s['health'] == 'up' for s in t['servers'])


def timeline(status, t0, until, timeout=60):
    """Polls status every POLL_S from t0 (the fault) until until(entry);
    returns ({step: ms after t0}, last entry).  A step not seen (polling
    missed it) takes the time of the next one seen."""
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
            seen.setdefault('current', now)
            seen.setdefault('down', now)
            seen.setdefault('suspect', now)
        if until(t):
            for step, _ in STEPS:
                seen.setdefault(step, now)
            return seen, t
        if time.monotonic() > deadline:
            raise RuntimeError(f'no switch within {timeout} s after the '
                               f'fault; seen {seen}; status {t!r}')
        time.sleep(POLL_S)


def ctl(sock, *args):
    return subprocess.run([os.environ['DBSWAPCTL'], '--socket', sock, *args],
                          capture_output=True, text=True, timeout=30)


def failback(sock):
    """dbswapctl failback, retried while the just-started primary is
    refused."""
    for _ in range(20):
        r = ctl(sock, 'failback', TARGET)
        if r.returncode == 0:
            return
        time.sleep(0.5)
    raise RuntimeError(f'dbswapctl failback: exit {r.returncode}: '
                       f'{r.stderr.strip()}')


def crash_round(primary, status, load):
    """One round; returns ({step: ms}, pool-load failures in the round)."""
    before = load.wait_progress(lambda p: True)['failures']
    errors = []

    def stop():
        try:
            primary.stop('immediate')
        except Exception as e:
            errors.append(e)
    th = threading.Thread(target=stop)
    t0 = time.monotonic()
    th.start()
    try:
        steps, t = timeline(status, t0, lambda t: in_use(t, 'secondary'))
    finally:
        th.join(60)
    if errors:
        raise errors[0]
    after = load.wait_progress_after(t0 + steps['acked'] / 1000 + 1.0)
    return steps, after['failures'] - before


def reset(primary, agent, status):
    """The primary started again, failed back to, and seen up.  Returns
    (seconds from the failback until then, generations published beyond
    the failback's own: switches that undid it)."""
    primary.start()
    g = target(status)['generation']
    failback(agent.sock)
    t1 = time.monotonic()
    t, last = wait_status(status, lambda t: in_use(t, 'primary') and
                          all_up(t), timeout=180,
                          what='the primary in use and up again')
    return t - t1, last['generation'] - g - 1


def hang_round(primary, secondary, role, password, env, agent, status,
               load):
    """Short settings, SIGSTOP, SIGCONT: (steps, failback ms, failures,
    settings)."""
    h.write_rename(env, env_text(primary, secondary, role, password,
                                 HANG_SETTINGS))
    status.reload()
    want = {'health_check_interval_ms': 300, 'connection_timeout_ms': 500,
            'failure_threshold': 3, 'primary_retry_interval_ms': 1500}
    deadline = time.monotonic() + 10
    while h._status(status, None)['agent']['failover_settings'] != want:
        if time.monotonic() > deadline:
            raise RuntimeError('the short settings were not applied')
        time.sleep(0.05)
    wait_status(status, lambda t: in_use(t, 'primary') and all_up(t),
                timeout=30, what='both servers up')
    before = load.wait_progress(lambda p: True)['failures']
    t0 = time.monotonic()
    primary.pause()
    try:
        steps, t = timeline(status, t0, lambda t: in_use(t, 'secondary'))
        after = load.wait_progress_after(t0 + steps['acked'] / 1000 + 1.0)
    finally:
        t1 = time.monotonic()
        primary.resume()
    _, t = wait_status(status, lambda t: in_use(t, 'primary'), timeout=30,
                       what='the automatic failback')
    back_ms = (time.monotonic() - t1) * 1000
    return steps, back_ms, after['failures'] - before, want


def fmt_ms(ms):
    return f'{ms / 1000:.2f} s' if ms >= 10000 else f'{ms:.0f} ms'


def print_steps(rounds):
    print('| from the fault to | median | max |')
    print('|---|---:|---:|')
    for step, label in STEPS:
        values = [r[step] for r in rounds]
        print(f'| {label} | {fmt_ms(statistics.median(values))} | '
              f'{fmt_ms(max(values))} |')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--rounds', type=int, default=5)
    ap.add_argument('--no-hang', action='store_true',
                    help='skip the SIGSTOP round with short settings')
    opt = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix='dbswap-bench-failover-')
    try:
        with h.PgCluster() as primary, h.PgCluster() as secondary:
            role, password = 'bench_failover', h.secrets.token_hex(8)
            for c in (primary, secondary):
                c.create_role(role, password)
            env = os.path.join(tmp, 'db.env')
            h.write_rename(env, env_text(primary, secondary, role, password))
            with h.Agent(env_files=[env]) as agent, \
                    agent.client(name='bench-status') as status:
                load_args = ('--threads', THREADS, '--max', THREADS, '--tx',
                             '--pause-ms', 2)
                load = PoolLoad(agent.sock, args=load_args,
                                name='bench-failover')
                try:
                    wait_status(status, lambda t: in_use(t, 'primary') and
                                all_up(t) and len(t['servers']) == 2,
                                timeout=30, what='both servers up')
                    settings = h._status(status, None)['agent'][
                        'failover_settings']
                    crashes, failures, resets = [], [], []
                    for i in range(opt.rounds):
                        steps, failed = crash_round(primary, status, load)
                        crashes.append(steps)
                        failures.append(failed)
                        print(f'round {i + 1}: ' + ', '.join(
                            f'{k} {v:.0f} ms' for k, v in steps.items()) +
                            f'; {failed} pool-load failure(s)',
                            file=sys.stderr)
                        resets.append(reset(primary, agent, status))
                    hang = None
                    if not opt.no_hang:
                        hang = hang_round(primary, secondary, role, password,
                                          env, agent, status, load)
                    rc, summary = load.stop()
                finally:
                    load.close()
    finally:
        subprocess.run(['rm', '-rf', tmp])

    interval = settings['health_check_interval_ms']
    timeout = settings['connection_timeout_ms']
    threshold = settings['failure_threshold']
    print(f'\nFailover, loopback PostgreSQL 15 x 2, SCRAM-SHA-256, '
          f'{os.cpu_count()} cores; pool-load {THREADS} threads on a pool of '
          f'{THREADS}; {opt.rounds} rounds of pg_ctl stop -m immediate on '
          f'the primary')
    print(f'agent settings (defaults): health check interval {interval} ms, '
          f'connection timeout {timeout} ms, failure threshold {threshold}, '
          f'primary retry interval '
          f'{settings["primary_retry_interval_ms"]} ms\n')
    print_steps(crashes)
    print(f'| pool-load failures per round (pool of {THREADS}) | '
          f'{statistics.median(failures):g} | {max(failures)} |')
    print('\nworst cases, computed from the settings above:\n')
    print('| design, fault | time to declare the primary down |')
    print('|---|---:|')
    print(f'| polling only: a check every interval, down after {threshold} '
          f'failed ({interval / 1000:g} s × {threshold}) | '
          f'{fmt_ms(interval * threshold)} |')
    print(f'| this agent, crash: the monitor connection closes, a new '
          f'connection at once, then {threshold - 1} confirmations '
          f'{CONFIRM_MS} ms apart | {fmt_ms((threshold - 1) * CONFIRM_MS)} |')
    print(f'| this agent, hang: up to an interval to the next check, its '
          f'timeout, then {threshold - 1} confirmations on new connections '
          f'started {CONFIRM_MS} ms apart, each running into the timeout '
          f'({hang_formula(interval, timeout, threshold)}) | '
          f'{fmt_ms(hang_worst(interval, timeout, threshold))} |')
    print('\n(then the secondary is validated with a new connection, '
          'published, and the pools switch: the rows above "secondary '
          'current" and "acked")')
    slow = [r for r, _ in resets if r > 5]
    undone = [n for _, n in resets if n > 0]
    if slow or undone:
        print(f'\nnote: in {len(slow)} of {len(resets)} resets the primary '
              f'was in use and up only {max(r for r, _ in resets):.0f} s '
              f'after `dbswapctl failback`; in {len(undone)} the agent '
              f'switched again after the manual failback (it did not stay '
              f'on the restarted primary)')

    if hang:
        steps, back_ms, failed, hs = hang
        hi, ht, hth = (hs['health_check_interval_ms'],
                       hs['connection_timeout_ms'], hs['failure_threshold'])
        hr = hs['primary_retry_interval_ms']
        print(f'\nHANG ROUND, NOT THE DEFAULTS: one round with short '
              f'settings (interval {hi} ms, timeout {ht} ms, threshold '
              f'{hth}, retry {hr} ms), the primary hung with SIGSTOP '
              f'(postmaster and children), then SIGCONT\n')
        print('| from SIGSTOP to | time |')
        print('|---|---:|')
        for step, label in STEPS:
            print(f'| {label} | {fmt_ms(steps[step])} |')
        print(f'| worst case to down: {hang_formula(hi, ht, hth)} | '
              f'{fmt_ms(hang_worst(hi, ht, hth))} |')
        print(f'\npool-load failures in the hang round: {failed}; '
              f'SIGCONT -> automatic failback acked: {fmt_ms(back_ms)} '
              f'(expected about retry {hr} + {hth - 1} × interval {hi} = '
              f'{fmt_ms(hr + (hth - 1) * hi)} at most, plus the checks)')

    print(f'\npool-load: {summary["queries"]} queries, '
          f'{summary["failures"]} failures in all, exit status {rc}')
    print('\ncommand: ./dev.sh bench failover, which runs '
          'tests/bench/failover.py:\n  ' +
          shlex.join(['pool-load', '--socket', 'SOCK', '--target', TARGET] +
                     [str(a) for a in load_args]))
    return 0


if __name__ == '__main__':
    sys.exit(main())
