"""Env file parsing: how long the agent's parser (common/env.c) takes on
the worst 256 KiB inputs found for it (section 'parse' of
tests/bench/run.py).

env-bench ($DBSWAP_ENV_BENCH, tests/bench/env-bench.c) builds each input,
exactly ENV_FILE_MAX bytes (the largest env file the agent reads), and
times env_parse_with() on it over a lower layer looked up as the agent's
layers.c does; one JSON line per case.  No PostgreSQL, no agent: the
parse runs on the agent's event loop, so its worst case is a stall of the
loop, and the goal is well under 50 ms.  The rotation section's "read,
decrypt, parse" column is the same parser on a one-line file."""

import json
import subprocess

import benchlib

NAME = 'parse'
TITLE = 'Env file parsing'

GOAL_MS = 50

# What each case of env-bench stresses (its comment has the details).
CASES = {
    'refs-undefined': '`A=${B}` on every line, `B` defined nowhere',
    'refs-lower': '`A=${L}` on every line, `L` only in a lower layer of '
                  '256 KiB',
    'distinct-names': '`V1=${V0}`, `V2=${V0}`, ...: 21,000 distinct names',
    'skipped-defaults': '`${S:-${B}}` over and over, `S` set, `B` 63 KiB',
    'used-defaults': '`${U:-${U:-...x}}` 8 deep, `U` unset',
    'literal': 'long literal values, no expansion (the floor)',
}


def run(ctx):
    runs = ctx.pick(5, 30)
    argv = [ctx.bin('env-bench'), '--runs', str(runs)]
    ctx.log(f'env-bench: {len(CASES)} cases, {runs} runs each')
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    cases = [json.loads(line) for line in r.stdout.splitlines()
             if line.strip()]
    if r.returncode != 0 or not cases:
        raise RuntimeError(f'env-bench exited {r.returncode}: '
                           f'{r.stderr.strip()[-500:]}')
    for c in cases:
        ctx.log(f'{c["case"]}: median {c["median_ms"]:.2f} ms, max '
                f'{c["max_ms"]:.2f} ms')
    return {'cases': cases, 'runs': runs, 'goal_ms': GOAL_MS,
            'bench_command': f'env-bench --runs {runs}'}


def markdown(res):
    rows = []
    for c in res['cases']:
        rows.append([f'{c["case"]}: {CASES.get(c["case"], "")}',
                     f'{c["entries"]:,}', benchlib.fmt_ms(c['median_ms'], 2),
                     benchlib.fmt_ms(c['max_ms'], 2),
                     'ok' if c['status'] == 'ok' else c['status']])
    out = [f'env-bench (`tests/bench/env-bench.c`): each input is exactly '
           f'{res["cases"][0]["bytes"] // 1024} KiB, the largest env file '
           f'the agent reads, parsed {res["runs"]} times; goal: every case '
           f'well under {res["goal_ms"]} ms (the parse runs on the agent\'s '
           f'event loop).', '',
           benchlib.md_table(['input', 'definitions', 'median', 'max',
                              'result'], rows, 'lrrrl'),
           f'Only the parse is timed.  Command: `{res["bench_command"]}`.']
    return '\n'.join(out) + '\n'


def headline(res):
    worst = max(res['cases'], key=lambda c: c['max_ms'])
    return [[f'env file parse, worst 256 KiB input ({worst["case"]}), max',
             benchlib.fmt_ms(worst['max_ms'], 2),
             f'goal: under {res["goal_ms"]} ms', '—']]
