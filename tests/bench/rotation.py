"""Rotation benchmark: how long from the moment a new credential is renamed
into the env file until (a) a subscriber has the update and (b) every
subscriber has acked it, against the floor of one SCRAM connection.

Run: ./dev.sh bench   (prints a table; numbers vary with machine load)"""

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

import harness as h

ROUNDS = 20
SUBSCRIBER_COUNTS = (1, 10, 100)


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p / 100))]


def floor_ms(url, n=ROUNDS):
    r = subprocess.run([os.environ['DBSWAP_CONNECT_FLOOR'], str(n)],
                       input=url + '\n', capture_output=True, text=True,
                       check=True)
    med, p95 = map(float, r.stdout.split())
    return med, p95


def rename_in(path, text):
    """Writes text to a temp file (fsynced), then renames it over path;
    returns the monotonic time of the rename, where the clock starts."""
    tmp = path + '.tmp'
    with open(tmp, 'w') as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    t0 = time.monotonic()
    os.rename(tmp, path)
    return t0


def bench(pg, n_subs, tmp):
    role = f'bench{n_subs}'
    password = h.secrets.token_hex(8)
    pg.create_role(role, password)
    env = os.path.join(tmp, f'bench{n_subs}.env')
    h.write_rename(env, f'DATABASE_URL={pg.url(role, password)}\n')
    with h.Agent(env_files=[env]) as agent:
        subs = [h.Subscriber(agent.sock, 'DATABASE_URL',
                             args=['--no-connect'])
                for _ in range(n_subs - 1)]
        try:
            with agent.client(name='bench') as probe, \
                    agent.client(name='bench-status') as status:
                probe.subscribe(['DATABASE_URL'])
                u = probe.next_update()
                probe.ack('DATABASE_URL', u['generation'])
                h.wait_for(lambda: h.target_status(status, 'DATABASE_URL')
                           ['acked'] == n_subs, timeout=30, what='acks')
                delivered, acked = [], []
                for i in range(ROUNDS):
                    password = h.secrets.token_hex(8)
                    pg.set_password(role, password)
                    t0 = rename_in(env, 'DATABASE_URL='
                                   f'{pg.url(role, password)}\n')
                    u = probe.next_update(timeout=10)
                    delivered.append((time.monotonic() - t0) * 1000)
                    probe.ack('DATABASE_URL', u['generation'])
                    while True:
                        t = h.target_status(status, 'DATABASE_URL')
                        if (t['generation'] == u['generation'] and
                                t['acked'] == n_subs):
                            break
                        time.sleep(0.001)
                    acked.append((time.monotonic() - t0) * 1000)
                log = agent.log()
                validated = [float(x) for x in re.findall(
                    r'validated in ([\d.]+) ms', log)][1:]
                fanout = [float(x) for x in re.findall(
                    r'acked by all \d+ subscriber\(s\), ([\d.]+) ms', log)][1:]
        finally:
            for s in subs:
                s.close()
    return delivered, acked, validated, fanout


def main():
    tmp = tempfile.mkdtemp(prefix='dbswap-bench-')
    try:
        with h.PgCluster() as pg:
            pg.create_role('floor', 'floor-pw')
            fmed, fp95 = floor_ms(pg.url('floor', 'floor-pw'))
            rows = []
            for n in SUBSCRIBER_COUNTS:
                rows.append((n,) + bench(pg, n, tmp))
        print(f'\nRotation latency, {ROUNDS} rotations each, loopback '
              f'PostgreSQL 15, SCRAM-SHA-256, {os.cpu_count()} cores')
        print(f'floor: one new connection + SELECT 1 = {fmed:.1f} ms median, '
              f'{fp95:.1f} ms p95\n')
        print('| subscribers | validation p50 | publish → all acked p50 '
              '| rename → update p50 | rename → all acked p50 | p95 '
              '| p50 / floor |')
        print('|---:|---:|---:|---:|---:|---:|---:|')
        for n, d, a, v, f in rows:
            print(f'| {n} | {statistics.median(v):.1f} ms | '
                  f'{statistics.median(f):.1f} ms | '
                  f'{statistics.median(d):.1f} ms | '
                  f'{statistics.median(a):.1f} ms | {pct(a, 95):.1f} ms | '
                  f'{statistics.median(a) / fmed:.2f}× |')
        print('\nvalidation and publish → all acked: from the agent\'s log; '
              'the rest measured by this\nscript, whose status polling '
              '(1 ms) adds to "all acked".')
    finally:
        subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
