"""Python pool benchmark worker, for tests/bench/python.py: run with the
venv's python (psycopg, psycopg-pool; the dbswap package is taken from
client-lib/python/src beside this tree).

  py-bench.py bench --socket PATH [--target NAME] [--max M] [--loops 1,8]
                    [--rounds R] [--seconds S] [--warmup S] < conninfo

stdin's first line is the role's connection string (a secret: never in
argv, never printed).  Three pools in this one process, each min_size =
max_size = M (default 8), autocommit connections, M opened before
anything is measured: "pg", a psycopg_pool.ConnectionPool on the
connection string; "dbswap", a dbswap.psycopg.ConnectionPool following
the agent's target; "pg_b", a second psycopg_pool.ConnectionPool, the A/A
comparison (how far two identical pools differ here).  For each number of
threads N in --loops: each pool runs unmeasured for --warmup seconds,
then --rounds rounds in which each pool in turn (the order rotated every
round) runs N threads of `with pool.connection() as c:
c.execute('SELECT 1').fetchone()` for --seconds.  One pool runs at a
time, so the process's CPU time during a run is that pool's.  Lines out,
JSON: {"ready": true, "python", "psycopg", "psycopg_pool", "max"}, then
one per N:

  {"loops": N, "rounds": [{"order": [...], "pg": RUN, "dbswap": RUN,
   "pg_b": RUN}, ...]}

RUN: {"seconds": wall, "cpu_seconds": process CPU time, "ops": n,
"failures": n, "latency_us": {"p50", "p99", "max"}}; last {"end": true,
"stats": the dbswap pool's get_stats() and generation}.

  py-bench.py load --socket PATH [--target NAME] [--threads N] [--tx]
                   [--pause-ms MS] [--progress-ms MS] [--max N] [--min N]

A dbswap.psycopg.ConnectionPool and N threads that loop: SELECT 1 or,
with --tx, every other iteration BEGIN; SELECT pg_backend_pid(); COMMIT;
then a pause.  Progress lines as pool-load's ({"t", "mono", "queries",
"failures", "generation"}); after SIGTERM or SIGINT the threads finish
their iteration and a last line follows: {"queries", "failures",
"generation", "stats": get_stats(), "current_user_at_end"}.

Exit status 0 when nothing failed, 1 otherwise, 2 for bad usage."""

import argparse
import json
import os
import platform
import signal
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                '..', '..', 'client-lib', 'python', 'src'))

import psycopg  # noqa: E402
import psycopg_pool  # noqa: E402

from dbswap.psycopg import ConnectionPool  # noqa: E402

FAILURE_BACKOFF_S = 0.01
MAX_ERRORS_SHOWN = 20

_out_lock = threading.Lock()
_errors_shown = 0


def emit(obj):
    with _out_lock:
        sys.stdout.write(json.dumps(obj) + '\n')
        sys.stdout.flush()


def report(what, err):
    """The first MAX_ERRORS_SHOWN failures to stderr (the exception's type
    and message: psycopg's and dbswap's carry no password)."""
    global _errors_shown
    with _out_lock:
        _errors_shown += 1
        if _errors_shown <= MAX_ERRORS_SHOWN:
            print(f'py-bench: {what}: {type(err).__name__}: {err}',
                  file=sys.stderr, flush=True)


def pct(sorted_values, p):
    if not sorted_values:
        return None
    i = max(0, min(len(sorted_values) - 1,
                   -(-len(sorted_values) * p // 100) - 1))
    return round(sorted_values[int(i)])


def select_one(pool):
    with pool.connection() as conn:
        if conn.execute('SELECT 1').fetchone()[0] != 1:
            raise RuntimeError('SELECT 1: unexpected result')


def timed(pool, loops, seconds):
    """loops threads of SELECT 1 on pool for seconds: one RUN."""
    counts = [0] * loops
    fails = [0] * loops
    lats = [[] for _ in range(loops)]
    clock = time.perf_counter
    deadline = None

    def loop(i):
        lat = lats[i]
        n = 0
        while True:
            t0 = clock()
            if t0 >= deadline:
                break
            try:
                select_one(pool)
            except Exception as e:
                fails[i] += 1
                report('SELECT 1', e)
                time.sleep(FAILURE_BACKOFF_S)
                continue
            lat.append(clock() - t0)
            n += 1
        counts[i] = n

    threads = [threading.Thread(target=loop, args=(i,), daemon=True)
               for i in range(loops)]
    cpu0 = time.process_time()
    t0 = clock()
    deadline = t0 + seconds
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = clock() - t0
    cpu = time.process_time() - cpu0
    all_lat = sorted(x * 1e6 for lat in lats for x in lat)
    return {'seconds': wall, 'cpu_seconds': cpu, 'ops': sum(counts),
            'failures': sum(fails),
            'latency_us': {'p50': pct(all_lat, 50), 'p99': pct(all_lat, 99),
                           'max': round(all_lat[-1]) if all_lat else None}}


def warm(pool, n):
    conns = [pool.getconn(timeout=30) for _ in range(n)]
    for c in conns:
        pool.putconn(c)


def stats(pool):
    s = dict(pool.get_stats())
    s['generation'] = pool.generation
    return s


def bench(opt):
    url = sys.stdin.readline().strip()
    if not url:
        print('py-bench: no connection string on stdin', file=sys.stderr)
        return 2
    kwargs = {'autocommit': True, 'application_name': 'py-bench'}

    def plain(name):
        p = psycopg_pool.ConnectionPool(url, min_size=opt.max,
                                        max_size=opt.max, kwargs=kwargs,
                                        name=name, open=False)
        p.open(wait=True, timeout=30)
        return p

    pools = {}
    try:
        pools['pg'] = plain('py-bench-pg')
        pools['dbswap'] = ConnectionPool(opt.target, socket=opt.socket,
                                         name='py-bench', min_size=opt.max,
                                         max_size=opt.max, kwargs=kwargs)
        pools['dbswap'].wait(timeout=30)
        pools['pg_b'] = plain('py-bench-pg-b')
        for p in pools.values():
            warm(p, opt.max)
        names = list(pools)
        emit({'ready': True, 'python': platform.python_version(),
              'psycopg': psycopg.__version__,
              'psycopg_pool': psycopg_pool.__version__, 'max': opt.max})
        failed = 0
        for n in opt.loops:
            for name in names:
                timed(pools[name], n, opt.warmup)
            rounds = []
            for r in range(opt.rounds):
                k = r % len(names)
                order = names[k:] + names[:k]
                rnd = {'order': order}
                for name in order:
                    rnd[name] = timed(pools[name], n, opt.seconds)
                    failed += rnd[name]['failures']
                rounds.append(rnd)
            emit({'loops': n, 'rounds': rounds})
        emit({'end': True, 'stats': stats(pools['dbswap'])})
    finally:
        for p in pools.values():
            p.close()
    return 1 if failed or _errors_shown else 0


def load(opt):
    pool = ConnectionPool(opt.target, socket=opt.socket, name=opt.name,
                          min_size=opt.min or None, max_size=opt.max or None,
                          kwargs={'autocommit': True,
                                  'application_name': opt.name})
    try:
        pool.wait(timeout=30)
        queries = failures = 0
        lock = threading.Lock()
        stop = threading.Event()
        start = time.monotonic()

        def loop(i):
            nonlocal queries, failures
            it = 0
            while not stop.is_set():
                try:
                    with pool.connection(timeout=10) as conn:
                        if opt.tx and it % 2 == 1:
                            with conn.transaction():
                                conn.execute('SELECT pg_backend_pid()'
                                             ).fetchone()
                        else:
                            conn.execute('SELECT 1').fetchone()
                    with lock:
                        queries += 1
                except Exception as e:
                    with lock:
                        failures += 1
                    report(f'thread {i}: {time.monotonic() - start:.3f} s', e)
                it += 1
                if opt.pause_ms:
                    time.sleep(opt.pause_ms / 1000)

        done = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: done.set())
        threads = [threading.Thread(target=loop, args=(i,), daemon=True)
                   for i in range(opt.threads)]
        for t in threads:
            t.start()
        while not done.wait(opt.progress_ms / 1000):
            now = time.monotonic()
            emit({'t': round(now - start, 3), 'mono': now,
                  'queries': queries, 'failures': failures,
                  'generation': pool.generation})
        stop.set()
        for t in threads:
            t.join(30)
        user = None
        try:
            with pool.connection(timeout=10) as conn:
                user = conn.execute('SELECT current_user').fetchone()[0]
        except Exception as e:
            report('the last query', e)
        emit({'queries': queries, 'failures': failures,
              'generation': pool.generation, 'stats': stats(pool),
              'current_user_at_end': user})
        return 1 if failures or user is None else 0
    finally:
        pool.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='mode', required=True)
    b = sub.add_parser('bench')
    b.add_argument('--socket', required=True)
    b.add_argument('--target', default='DATABASE_URL')
    b.add_argument('--max', type=int, default=8)
    b.add_argument('--loops', default='1,8')
    b.add_argument('--rounds', type=int, default=10)
    b.add_argument('--seconds', type=float, default=1)
    b.add_argument('--warmup', type=float, default=1)
    ld = sub.add_parser('load')
    ld.add_argument('--socket', required=True)
    ld.add_argument('--target', default='DATABASE_URL')
    ld.add_argument('--name', default='py-bench-load')
    ld.add_argument('--threads', type=int, default=8)
    ld.add_argument('--tx', action='store_true')
    ld.add_argument('--pause-ms', type=float, default=1)
    ld.add_argument('--progress-ms', type=float, default=100)
    ld.add_argument('--max', type=int, default=0)
    ld.add_argument('--min', type=int, default=0)
    opt = ap.parse_args()
    if opt.mode == 'bench':
        try:
            opt.loops = [int(x) for x in opt.loops.split(',')]
        except ValueError:
            ap.error('--loops: comma-separated whole numbers')
        if min(opt.loops) < 1 or opt.max < 1 or opt.rounds < 1 or \
                opt.seconds <= 0:
            ap.error('--loops, --max, --rounds: from 1; --seconds: above 0')
        return bench(opt)
    return load(opt)


if __name__ == '__main__':
    sys.exit(main())
