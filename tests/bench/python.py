"""The Python pool: dbswap.psycopg.ConnectionPool (client-lib/python)
against a plain psycopg_pool.ConnectionPool on the same server, and one
password rotation under load through it (section 'python' of
tests/bench/run.py; the driver and the tables are go.py's, read its
header).

Throughput: one `py-bench.py bench` process (tests/bench/py-bench.py,
read its header) run with the venv's python ($DBSWAP_PY_VENV, else
build/py-venv: ./dev.sh makes it), with three pools of min = max = MAX,
MAX autocommit connections open: a psycopg_pool.ConnectionPool on the
role's connection string, a dbswap.psycopg.ConnectionPool following the
agent, and a second psycopg_pool.ConnectionPool (the A/A comparison).
For each of LOOPS_LIST threads doing `with pool.connection() as c:
c.execute('SELECT 1')`, many short rounds in which the pools take turns.
The GIL keeps the absolute numbers low (one thread runs Python at a
time, so 8 threads are not much faster than 1): the ratio is the figure.

Rotation: as go.py's, with `py-bench.py load` (8 threads on min = max =
8, every other iteration a transaction, 1 ms pause)."""

import glob
import os
import shlex
import subprocess

import harness as h
from common import JsonLines, PoolLoad
from go import (LOOPS_LIST, MAX, PAUSE_MS, PROGRESS_MS, TARGET, THREADS,
                C_COMMAND, _load, c_load, headlines, rotation,
                rotation_table, rounds_plot, throughput, throughput_table)

NAME = 'python'
TITLE = 'Python pool'

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, '..', '..'))
PY_BENCH = os.path.join(HERE, 'py-bench.py')
TARGET_RATIO = 0.97
LOAD_ARGS = ['--threads', THREADS, '--min', THREADS, '--max', THREADS,
             '--tx', '--pause-ms', PAUSE_MS, '--progress-ms', PROGRESS_MS]

SPEC = {
    'lang': 'Python',
    'base': 'pg', 'base_b': 'pg_b',
    'base_label': '`psycopg_pool.ConnectionPool`',
    'ours_label': '`dbswap.psycopg.ConnectionPool`',
    'unit': 'thread',
    'kinds': [('python', '`dbswap.psycopg.ConnectionPool` (py-bench.py '
               'load)'),
              ('c', 'libdbswap pool (pool-load)')],
}


def venv_python():
    venv = os.environ.get('DBSWAP_PY_VENV') or os.path.join(TOP, 'build',
                                                            'py-venv')
    python = os.path.join(venv, 'bin', 'python')
    if not os.access(python, os.X_OK) or not glob.glob(
            os.path.join(venv, 'lib', 'python3*', 'site-packages',
                         'psycopg_pool')):
        raise RuntimeError(
            f'no Python venv with psycopg_pool at {venv}: ./dev.sh makes it '
            f'(python3 -m venv build/py-venv && build/py-venv/bin/pip '
            f'install -r client-lib/python/requirements-test.txt), or set '
            f'DBSWAP_PY_VENV')
    return python


class PyLoad(PoolLoad):
    """py-bench.py load as PoolLoad (its lines are pool-load's, fewer
    fields)."""

    def __init__(self, python, sock, args=(), name='py-load', target=TARGET):
        argv = [python, PY_BENCH, 'load', '--socket', sock, '--target',
                target, '--name', name] + [str(a) for a in args]
        JsonLines.__init__(self, argv, None, name, None)


def run(ctx):
    python = venv_python()
    versions = subprocess.run(
        [python, '-c', 'import platform, psycopg, psycopg_pool; '
         'print(platform.python_version(), psycopg.__version__, '
         'psycopg_pool.__version__)'], capture_output=True, text=True,
        check=True).stdout.split()

    def argv_of(sock, p):
        return [python, PY_BENCH, 'bench', '--socket', sock, '--target',
                TARGET, '--max', str(MAX), '--loops',
                ','.join(map(str, LOOPS_LIST)), '--rounds', str(p['rounds']),
                '--seconds', str(p['seconds']), '--warmup',
                str(p['warmup_seconds'])]

    def py_load(sock, name):
        return PyLoad(python, sock, LOAD_ARGS, name=name)

    res = {'python': versions[0], 'psycopg': versions[1],
           'psycopg_pool': versions[2], 'cores': os.cpu_count(),
           'target_ratio': TARGET_RATIO, 'max': MAX, 'loops': LOOPS_LIST}
    with h.PgCluster() as pg:
        res['throughput'] = throughput(ctx, pg, ctx.tmp, SPEC, argv_of,
                                       'bench_py', 'py-bench.py bench')
        res['throughput']['command'] = (
            f'python tests/bench/py-bench.py bench --socket SOCK --target '
            f'{TARGET} --max {MAX} --loops {",".join(map(str, LOOPS_LIST))} '
            f'--rounds R --seconds S --warmup S < connection-string')
        res['rotation'] = rotation(
            ctx, pg, ctx.tmp, [('python', py_load), ('c', c_load)],
            {'python': shlex.join(['python', 'tests/bench/py-bench.py',
                                   'load', '--socket', 'SOCK', '--target',
                                   TARGET] + [str(a) for a in LOAD_ARGS]),
             'c': C_COMMAND})
    res['loadavg_end'] = os.getloadavg()
    return res


def markdown(res):
    b = res['throughput']
    out = [f'py-bench (`tests/bench/py-bench.py`), Python {res["python"]}, '
           f'psycopg {res["psycopg"]}, psycopg_pool {res["psycopg_pool"]}: a '
           f'plain `psycopg_pool.ConnectionPool` on the role\'s connection '
           f'string, `dbswap.psycopg.ConnectionPool` following the agent and '
           f'a second `psycopg_pool.ConnectionPool`, all in one process, '
           f'taking turns; each pool min_size = max_size = {b["max"]}, '
           f'autocommit, {b["max"]} connections open before anything is '
           f'measured; loopback PostgreSQL, {res["cores"]} cores.  An '
           f'iteration is `with pool.connection() as c: c.execute(\'SELECT '
           f'1\').fetchone()`: checkout, query, release.', '',
           throughput_table(res, SPEC),
           f'The pools take turns within each round (the order rotated '
           f'every round); each round gives one ratio, and the second '
           f'`psycopg_pool.ConnectionPool`\'s ratio to the first is the '
           f'resolution of this measurement here.  The GIL lets one thread '
           f'run Python at a time, so the absolute rates are low and 8 '
           f'threads gain little on 1; what the adapter adds per checkout '
           f'shows in the ratio.  Load average (1, 5, 15 min) before / '
           f'after: {_load(b.get("loadavg_before"))} / '
           f'{_load(b.get("loadavg_after"))}.  Command: `{b["command"]}`.',
           '', rotation_table(res, SPEC)]
    return '\n'.join(out) + '\n'


def plots(res, outdir):
    return rounds_plot(res, outdir, SPEC, 'python-rounds.png',
                       'SELECT 1 through dbswap.psycopg.ConnectionPool / '
                       'through psycopg_pool.ConnectionPool, per round')


def headline(res):
    return headlines(res, SPEC, 'python')
