"""What the benchmark sections share: the run's context, statistics,
Markdown tables and gnuplot plots.

A section is a module of tests/bench with:

    NAME = 'fanout'           its key in results.json
    TITLE = 'Fan-out'         its heading in results.md
    def run(ctx) -> dict      measures; returns JSON-able data: every raw
                              figure (lists of samples, time series) plus
                              the parameters it ran with
    def markdown(res) -> str  its part of results.md (no heading), from
                              res alone: no figure is written anywhere else
    def plots(res, outdir) -> [(file name, caption), ...]   optional

run.py calls them in order and writes results.json, results.md and the
plots.  The harness (PostgreSQL clusters, the agent, helper processes)
is tests/integration's harness.py and common.py."""

import math
import os
import shutil
import signal
import subprocess
import sys
import time

from common import JsonLines


class Ctx:
    """What a section gets: quick or full mode, a temp dir of its own (removed
    after it), where the helper binaries are, and log() for progress lines
    on stderr (the results go to the returned dict, not there)."""

    BINARIES = {
        'dbswapd': 'DBSWAPD',
        'dbswapctl': 'DBSWAPCTL',
        'subscriber': 'DBSWAP_TEST_SUBSCRIBER',
        'connect-floor': 'DBSWAP_CONNECT_FLOOR',
        'pool-load': 'DBSWAP_POOL_LOAD',
        'pool-bench': 'DBSWAP_POOL_BENCH',
        'env-bench': 'DBSWAP_ENV_BENCH',
        'libpq-load': 'DBSWAP_LIBPQ_LOAD',
        'fanout': 'DBSWAP_FANOUT',
    }

    def __init__(self, quick, tmp, section='bench'):
        self.quick = quick
        self.tmp = tmp
        self.section = section
        self.t0 = time.monotonic()

    def pick(self, quick, full):
        """The quick mode's value or the full mode's."""
        return quick if self.quick else full

    def bin(self, name):
        path = os.environ.get(self.BINARIES[name])
        if not path:
            raise RuntimeError(f'{self.BINARIES[name]} is not set: run the '
                               f'benchmarks with ./dev.sh bench')
        return path

    def log(self, *parts):
        print(f'[{time.monotonic() - self.t0:7.1f}s {self.section}]',
              *parts, file=sys.stderr, flush=True)


def pct(values, p):
    """The p-th percentile (nearest rank) of values; None if empty."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(len(s) * p / 100) - 1))]


def summary(values):
    """{'n', 'p50', 'p99', 'max', 'min', 'mean'} of a list of numbers."""
    if not values:
        return {'n': 0, 'p50': None, 'p99': None, 'max': None, 'min': None,
                'mean': None}
    return {'n': len(values), 'p50': pct(values, 50), 'p99': pct(values, 99),
            'max': max(values), 'min': min(values),
            'mean': sum(values) / len(values)}


def fmt_ms(ms, digits=1):
    """A duration given in ms, for a table: '—' for None, seconds from 10 s;
    digits decimals below 10 ms."""
    if ms is None:
        return '—'
    if ms >= 10000:
        return f'{ms / 1000:.1f} s'
    if ms >= 100:
        return f'{ms:.0f} ms'
    return f'{ms:.{digits if ms < 10 else 1}f} ms'


def fmt_ratio(x, digits=2):
    return '—' if x is None else f'{x:.{digits}f}×'


def md_table(header, rows, align=None):
    """A Markdown table.  align: one character per column, 'l' or 'r'
    (default: first column left, the others right)."""
    align = align or 'l' + 'r' * (len(header) - 1)
    sep = ['---:' if a == 'r' else '---' for a in align]
    lines = ['| ' + ' | '.join(str(h) for h in header) + ' |',
             '| ' + ' | '.join(sep) + ' |']
    for row in rows:
        lines.append('| ' + ' | '.join('—' if c is None else str(c)
                                       for c in row) + ' |')
    return '\n'.join(lines) + '\n'


def have_gnuplot():
    return shutil.which('gnuplot') is not None


def _quote(s):
    return '"' + str(s).replace('\\', '\\\\').replace('"', '\\"') + '"'


def plot(png, title, xlabel, ylabel, series, logx=False, logy=False,
         yrange=None, xrange=None, size=(800, 450), arrows=(),
         key='top left'):
    """Draws series into the PNG file png with gnuplot (pngcairo).

    series: [{'title': str, 'points': [(x, y), ...],
              'style': 'linespoints' (default), 'lines', 'dashed' or
                       'steps'}, ...]
    yrange/xrange: (low, high), either may be None.  arrows: vertical
    lines [(x, label), ...] (e.g. the moment of a fault).  key: where the
    legend goes inside the graph (gnuplot's words).  The data goes
    to png's name + '.dat' beside it, kept so the plot can be redrawn."""
    dat = os.path.splitext(png)[0] + '.dat'
    with open(dat, 'w') as f:
        for s in series:
            f.write(f'# {s["title"]}\n')
            for x, y in s['points']:
                f.write(f'{x} {"NaN" if y is None else y}\n')
            f.write('\n\n')
    cmds = [f'set terminal pngcairo size {size[0]},{size[1]} '
            f'font "sans,10" noenhanced',
            f'set output {_quote(png)}',
            f'set title {_quote(title)}',
            f'set xlabel {_quote(xlabel)}',
            f'set ylabel {_quote(ylabel)}',
            'set grid', f'set key inside {key} opaque box']
    if logx:
        cmds.append('set logscale x')
    if logy:
        cmds.append('set logscale y')
    for axis, r in (('y', yrange), ('x', xrange)):
        if r:
            lo, hi = ('*' if v is None else v for v in r)
            cmds.append(f'set {axis}range [{lo}:{hi}]')
    for x, label in arrows:
        cmds.append(f'set arrow from {x}, graph 0 to {x}, graph 1 nohead '
                    f'dashtype 2 lc rgb "gray40"')
        cmds.append(f'set label {_quote(label)} at {x}, graph 0.97 '
                    f'offset 0.5,0 tc rgb "gray30"')
    parts = []
    for i, s in enumerate(series):
        style = s.get('style', 'linespoints')
        style = {'linespoints': 'linespoints pt 7 ps 0.6', 'lines': 'lines',
                 'dashed': 'lines dashtype 2', 'steps': 'steps'}[style]
        parts.append(f'{_quote(dat)} index {i} using 1:2 with {style} '
                     f'lw 2 title {_quote(s["title"])}')
    cmds.append('plot ' + ', \\\n     '.join(parts))
    subprocess.run(['gnuplot'], input='\n'.join(cmds) + '\n', text=True,
                   check=True, capture_output=True)


class JsonProc(JsonLines):
    """A helper that prints JSON lines (libpq-load, fanout), as
    common.JsonLines, with the benchmarks' way to wait for it and stop it
    (their failures are RuntimeError)."""

    def wait(self, predicate, timeout=30, what='a line'):
        """The first line (a dict) for which predicate is true, waiting."""
        deadline = time.monotonic() + timeout
        i = 0
        with self._cond:
            while True:
                while i < len(self.lines):
                    if predicate(self.lines[i][1]):
                        return self.lines[i][1]
                    i += 1
                left = deadline - time.monotonic()
                if self._eof or left <= 0:
                    raise RuntimeError(f'no {what} from {self.describe()}')
                self._cond.wait(left)

    def terminate(self, sig=None):
        """Signals it (SIGTERM by default) if it is still running, without
        waiting; returns the monotonic time just before the signal."""
        t = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        return t

    def stop(self, timeout=30, sig=None):
        """Signals it (SIGTERM by default), waits for it to end; returns
        its last line."""
        self.terminate(sig)
        return self.wait_exit(timeout)

    def wait_exit(self, timeout=30):
        """Waits for it to end by itself (no signal); returns its last
        line.  Raises, leaving it running for close(), when it does not
        end within timeout seconds or printed nothing."""
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f'{self.name} did not end within {timeout} '
                               f's; {self.describe()}') from None
        self._thread.join(10)
        if not self.lines:
            raise RuntimeError(f'{self.name} printed nothing; '
                               f'{self.describe()}')
        return self.lines[-1][1]


def rate_series(lines, t0, key='queries', min_interval=0):
    """Queries/s over time from progress lines [(arrival, dict)]: points
    (seconds after t0, rate) between consecutive lines, each at the
    interval's end.  Uses the line's own "mono" when it has one.  An
    interval shorter than min_interval seconds gives no point (too short
    for a rate); the next interval starts at its end."""
    points, prev = [], None
    for arrival, m in lines:
        if key not in m or m.get('final'):
            continue
        t = m.get('mono', arrival)
        if prev and t > prev[0] and t - prev[0] >= min_interval:
            points.append((round(t - t0, 3),
                           round((m[key] - prev[1]) / (t - prev[0]), 1)))
        prev = (t, m[key])
    return points
