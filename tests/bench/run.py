"""Every benchmark, with the peers measured in the same run: writes
results.json (every raw figure and the machine), results.md (the tables)
and the PNG plots into one directory.

Run: ./dev.sh bench [--quick] [--out DIR] [--only SECTION,...] [--render]

--quick takes a few minutes (fewer rounds, shorter loads: CI runs it to
check that the benchmarks still work, not their numbers); the default,
full mode, about 21 minutes on 2 cores.  --only runs some sections and
keeps the others' results from an earlier run in DIR (default
bench/results).  --render measures nothing: it writes results.md and the
plots again from results.json.

A section may also define headline(res) -> [[what, dbswap, the other,
ratio], ...]: the rows of the summary at the top of results.md.  When
every section in bench/results comes from a full run, that summary is
also written into README.md, between the markers below, so that the
README quotes the latest results."""

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

import benchlib

README_START = '<!-- bench-summary: written by ./dev.sh bench -->'
README_END = '<!-- /bench-summary -->'
SECTIONS = ['rotation', 'parse', 'queries', 'pool', 'node', 'go', 'python',
            'fanout', 'footprint', 'failover', 'peers']


def first_line(argv):
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (r.stdout or r.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return None


def machine():
    cpu = None
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    cpu = line.split(':', 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = None
    try:
        with open('/proc/meminfo') as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    import harness as h
    postgres = os.path.join(h._pg_bindir(), 'postgres')
    return {
        'cpu': cpu,
        'cores': os.cpu_count(),
        'memory_gib': round(mem_kib / 2**20, 1) if mem_kib else None,
        'kernel': platform.release(),
        'os': first_line(['sh', '-c', '. /etc/os-release && '
                          'echo "$PRETTY_NAME"']),
        'postgresql': first_line([postgres, '--version']),
        'pgbouncer': first_line(['pgbouncer', '--version']),
        'libpq': first_line(['pg_config', '--version']),
        'commit': first_line(['git', 'describe', '--always', '--dirty']),
    }


def machine_line(results):
    m = results['machine']
    return (f'Machine: {m["cpu"]}, {m["cores"]} cores, {m["memory_gib"]} '
            f'GiB; Linux {m["kernel"]}; {m["os"]}; {m["postgresql"]}; '
            f'{m["pgbouncer"]}; commit {m["commit"]}.  Every PostgreSQL is '
            f'a throwaway cluster on loopback with SCRAM-SHA-256, started by '
            f'the benchmark.')


def summary(results, link=''):
    """The headline rows of every section that has some, as a table."""
    rows = []
    for name in SECTIONS:
        res = results['sections'].get(name)
        mod = importlib.import_module(name)
        if res is None or 'error' in res or not hasattr(mod, 'headline'):
            continue
        for what, ours, theirs, ratio in mod.headline(res):
            rows.append([f'[{what}]({link}#{anchor(mod.TITLE)})', ours,
                         theirs, ratio])
    return benchlib.md_table(['', 'dbswap', 'the other way', 'ratio'], rows,
                             'lrrr')


def anchor(title):
    """GitHub's anchor for a heading."""
    keep = ''.join(c for c in title.lower() if c.isalnum() or c in ' -')
    return keep.replace(' ', '-')


def update_readme(path, results):
    with open(path) as f:
        text = f.read()
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise RuntimeError(f'{path}: no {README_START} ... {README_END} '
                           f'block to write the summary into')
    block = '\n'.join([
        README_START, '',
        f'`{results["command"]}`, {results["finished"][:10]}, '
        f'{results["seconds"] / 60:.0f} min.  ' + machine_line(results), '',
        summary(results, 'bench/results/results.md').rstrip(), ''])
    text = text[:start] + block + text[end:]
    with open(path + '.tmp', 'w') as f:
        f.write(text)
    os.rename(path + '.tmp', path)


def render(results):
    out = ['# dbswap benchmarks', '',
           f'Made by `{results["command"]}` on {results["finished"]} '
           f'({results["mode"]} mode, {results["seconds"] / 60:.1f} min).',
           '', machine_line(results) + '  Raw figures: `results.json`.', '',
           '## Summary', '', summary(results), '']
    for name in SECTIONS:
        res = results['sections'].get(name)
        if res is None:
            continue
        mod = importlib.import_module(name)
        out.append(f'## {mod.TITLE}')
        out.append('')
        if 'error' in res:
            out.append(f'**Failed** ({res["mode"]} mode): `{res["error"]}`')
        else:
            if res.get('command', results['command']) != \
                    results['command']:
                out.append(f'*Run again by `{res["command"]}` on '
                           f'{res["finished"]}.*')
                out.append('')
            out.append(mod.markdown(res).rstrip())
            for png, caption in res.get('_plots', []):
                out.append('')
                out.append(f'![{caption}]({png})')
        out.append('')
    return '\n'.join(out)


def write_outputs(results, out):
    with open(os.path.join(out, 'results.md'), 'w') as f:
        f.write(render(results))
    sections = results['sections'].values()
    if (all(r.get('mode') == 'full' and 'error' not in r for r in sections) and
            os.path.abspath(out) == os.path.abspath('bench/results')):
        update_readme('README.md', results)
        print('run.py: wrote the summary into README.md', file=sys.stderr)


def render_again(out):
    """After a change to how the results are shown, not to what is
    measured: the same figures, rendered again."""
    with open(os.path.join(out, 'results.json')) as f:
        results = json.load(f)
    for name, res in results['sections'].items():
        mod = importlib.import_module(name)
        if 'error' not in res and hasattr(mod, 'plots'):
            res['_plots'] = mod.plots(res, out)
    write_outputs(results, out)
    print(f'run.py: wrote {out}/results.md and the plots again from '
          f'results.json', file=sys.stderr)
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--quick', action='store_true')
    ap.add_argument('--out', default='bench/results')
    ap.add_argument('--only', help='comma-separated: ' + ','.join(SECTIONS))
    ap.add_argument('--render', action='store_true',
                    help='measure nothing: write results.md, the plots (and '
                    'the README summary) again from DIR/results.json')
    opt = ap.parse_args()
    if opt.render:
        return render_again(opt.out)
    only = opt.only.split(',') if opt.only else SECTIONS
    for name in only:
        if name not in SECTIONS:
            ap.error(f'--only: no section {name!r}; there are '
                     f'{", ".join(SECTIONS)}')
    if not benchlib.have_gnuplot():
        print('run.py: gnuplot not found (./dev.sh installs it)',
              file=sys.stderr)
        return 1
    os.makedirs(opt.out, exist_ok=True)
    path = os.path.join(opt.out, 'results.json')
    results = {'sections': {}}
    if opt.only and os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    mode = 'quick' if opt.quick else 'full'
    command = './dev.sh bench' + (' --quick' if opt.quick else '')
    if opt.only:
        command += ' --only ' + shlex.quote(opt.only)
    started = time.monotonic()
    partial = bool(opt.only) and 'command' in results
    if not partial:
        results.update(machine=machine(), mode=mode, command=command)
    failed = []
    for name in only:
        mod = importlib.import_module(name)
        tmp = tempfile.mkdtemp(prefix=f'dbswap-bench-{name}-')
        ctx = benchlib.Ctx(opt.quick, tmp, name)
        ctx.log('start')
        t0 = time.monotonic()
        try:
            res = mod.run(ctx)
            plots = []
            if hasattr(mod, 'plots'):
                plots = mod.plots(res, opt.out)
            res['_plots'] = plots
            mod.markdown(res)  # a section that cannot render fails here
        except Exception as e:
            traceback.print_exc()
            res = {'error': f'{type(e).__name__}: {e}'}
            failed.append(name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        res['mode'] = mode
        res['command'] = command
        res['seconds'] = round(time.monotonic() - t0, 1)
        res['finished'] = datetime.datetime.now().astimezone().isoformat(
            timespec='seconds')
        results['sections'][name] = res
        ctx.log(f'done in {res["seconds"]} s' +
                (' (FAILED)' if name in failed else ''))
    if not partial:
        results['seconds'] = round(time.monotonic() - started, 1)
        results['finished'] = datetime.datetime.now().astimezone().isoformat(
            timespec='seconds')
    with open(path + '.tmp', 'w') as f:
        json.dump(results, f, indent=1, sort_keys=True)
        f.write('\n')
    os.rename(path + '.tmp', path)
    write_outputs(results, opt.out)
    print(f'run.py: wrote {opt.out}/results.json, results.md and the plots '
          f'in {results["seconds"] / 60:.1f} min', file=sys.stderr)
    if failed:
        print(f'run.py: FAILED: {", ".join(failed)}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
