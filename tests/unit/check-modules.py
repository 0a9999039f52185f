#!/usr/bin/env python3
"""The agent's modules depend on each other one way only.

A module is foo.c with foo.h (a header alone is a module too).  Module A
depends on B when foo.c or foo.h of A includes B's header.  Any cycle
fails, naming the modules on it and the lines that close it; on success
the layers are printed, bottom first, so that a reader sees the order.

Usage: check-modules.py AGENT_DIR
"""
import os
import re
import sys

INCLUDE = re.compile(r'^\s*#\s*include\s+"(?:agent/)?([^"/]+)\.h"')


def modules(top):
    deps = {}
    where = {}
    for name in sorted(os.listdir(top)):
        base, ext = os.path.splitext(name)
        if ext not in ('.c', '.h'):
            continue
        deps.setdefault(base, set())
        with open(os.path.join(top, name), encoding='utf-8') as f:
            for n, line in enumerate(f, 1):
                m = INCLUDE.match(line)
                if not m or m.group(1) == base:
                    continue
                if not os.path.exists(os.path.join(top, m.group(1) + '.h')):
                    continue  # common/, ipc/: below the agent
                deps[base].add(m.group(1))
                where.setdefault((base, m.group(1)), f'{name}:{n}')
    return deps, where


def cycles(deps):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(deps[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(deps):
        if v not in index:
            visit(v)
    return out


def layers(deps):
    level = {}

    def depth(v):
        if v not in level:
            level[v] = 1 + max((depth(w) for w in deps[v]), default=-1)
        return level[v]

    for v in deps:
        depth(v)
    rows = {}
    for v, d in level.items():
        rows.setdefault(d, []).append(v)
    return [sorted(rows[d]) for d in sorted(rows)]


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    deps, where = modules(sys.argv[1])
    if not deps:
        print(f'{sys.argv[1]}: no modules found', file=sys.stderr)
        return 2
    bad = cycles(deps)
    for comp in bad:
        print('cycle among: ' + ', '.join(comp))
        for a in comp:
            for b in sorted(deps[a] & set(comp)):
                print(f'  {where[(a, b)]}: {a} -> {b}')
    if bad:
        return 1
    for i, row in enumerate(layers(deps)):
        print(f'layer {i}: ' + ' '.join(row))
    return 0


if __name__ == '__main__':
    sys.exit(main())
