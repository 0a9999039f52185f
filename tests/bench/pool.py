"""Pool benchmark: what the libdbswap pool costs an app, against raw
persistent libpq connections, in steady state and while the password
rotates every 300 ms.

Runs a throwaway PostgreSQL and dbswapd, then pool-bench
($DBSWAP_POOL_BENCH, tests/bench/pool-bench.c), which measures and prints
the tables.  When pool-bench prints "@rotate" this script changes the
password (ALTER ROLE, then the env file) every ROTATE_EVERY seconds for
ROTATE_FOR seconds, waits for the pool to ack the last one, and tells
pool-bench "done" on its stdin.

Run: ./dev.sh bench pool   (numbers vary with machine load)"""

import os
import shlex
import subprocess
import sys
import tempfile
import time

import harness as h
from test_pool import Psql  # one psql session: an ALTER ROLE in a few ms

THREADS = 8
SECONDS = 5
ROTATE_EVERY = 0.3
ROTATE_FOR = 5.0


def rotate(pg, psql, role, env, status):
    """Rotations every ROTATE_EVERY s for ROTATE_FOR s; then waits until
    the pool acked the last.  Returns (rotations, generation, seconds from
    the last write to its ack)."""
    n, last = 0, None
    start = time.monotonic()
    while n * ROTATE_EVERY < ROTATE_FOR:
        time.sleep(max(0.0, start + n * ROTATE_EVERY - time.monotonic()))
        password = h.secrets.token_hex(8)
        psql.set_password(role, password)
        h.write_rename(env, f'DATABASE_URL={pg.url(role, password)}\n')
        last = time.monotonic()
        n += 1
    t = h.wait_for(lambda: (t := h.target_status(status, 'DATABASE_URL'))
                   ['acked'] == t['subscribers'] == 1 and
                   t['value_seq'] == t['published_seq'] and t,
                   timeout=30, what='the pool to ack the last rotation')
    return n, t['generation'], time.monotonic() - last


def main():
    tmp = tempfile.mkdtemp(prefix='dbswap-bench-pool-')
    try:
        with h.PgCluster() as pg:
            role, password = 'bench_pool', h.secrets.token_hex(8)
            pg.create_role(role, password)
            env = os.path.join(tmp, 'db.env')
            h.write_rename(env, f'DATABASE_URL={pg.url(role, password)}\n')
            psql = Psql(pg)
            with h.Agent(env_files=[env]) as agent:
                agent.wait_log(r'DATABASE_URL: generation 1 published')
                cmd = [os.environ['DBSWAP_POOL_BENCH'],
                       '--socket', agent.sock, '--target', 'DATABASE_URL',
                       '--threads', str(THREADS), '--seconds', str(SECONDS)]
                bench = subprocess.Popen(cmd, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, text=True)
                try:
                    bench.stdin.write(pg.url(role, password) + '\n')
                    bench.stdin.flush()
                    out, rotated = [], None
                    for line in bench.stdout:
                        if line.strip() != '@rotate':
                            out.append(line)
                            continue
                        with agent.client(name='bench-status') as status:
                            rotated = rotate(pg, psql, role, env, status)
                        bench.stdin.write('done\n')
                        bench.stdin.close()
                    rc = bench.wait()
                finally:
                    if bench.poll() is None:
                        bench.kill()
                        bench.wait()
                    psql.close()
        if rc != 0 or rotated is None:
            sys.stdout.write(''.join(out))
            print(f'pool-bench failed (exit status {rc})', file=sys.stderr)
            return 1
        n, generation, ack_s = rotated
        print(f'\nlibdbswap pool, loopback PostgreSQL, SCRAM-SHA-256, '
              f'{os.cpu_count()} cores; pool min = max = {THREADS}')
        sys.stdout.write(''.join(out))
        print(f'rotations: {n} password changes, one every '
              f'{ROTATE_EVERY * 1000:.0f} ms for {ROTATE_FOR:g} s; the agent '
              f'reached generation {generation}; the last was acked by the '
              f'pool {ack_s * 1000:.0f} ms after its write')
        print('\ncommand: ./dev.sh bench pool, which runs tests/bench/pool.py:'
              f'\n  {shlex.join(["pool-bench"] + cmd[1:])} < conninfo')
    finally:
        subprocess.run(['rm', '-rf', tmp])
    return 0


if __name__ == '__main__':
    sys.exit(main())
