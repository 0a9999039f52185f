#!/usr/bin/env python3
"""Installs the build into a temporary DESTDIR and checks the tree.

    check-install.py --meson MESON --builddir DIR [--cc CC...] [--require PATH]...

- every file `meson introspect --installed` lists is in DESTDIR, and each
  --require PATH (an absolute install path: the binaries, the library, the
  header, the .pc, the systemd files) is among them;
- with a prefix other than /usr, nothing lands outside the prefix;
- the library: libdbswap.so -> libdbswap.so.0 -> the real file, whose
  SONAME is libdbswap.so.0; the binaries are executable;
- a program that includes <dbswap.h> compiles and links with the flags of
  the installed dbswap.pc (its prefix moved into DESTDIR), so the header
  and the .pc work outside the source tree;
- the units pass `systemd-analyze verify` (with ExecStart pointed into
  DESTDIR), every man page their Documentation= names is installed when
  man pages are built, and the sysusers.d and tmpfiles.d files apply to an
  empty root: user and group dbswap, group dbswap-clients,
  sysconfdir/dbswap 0750 root:dbswap;
- the socket's group (apps) is not the group that reads sysconfdir/dbswap
  (the agent's), the socket is 0660, and the service has no
  PrivateUsers=yes (which hides the peers' uids from --allow);
- each man page meson lists is a non-empty roff file.

Exit 0 when all hold, 1 with the reasons otherwise, 77 (skip) when meson
itself is not found.
"""

import argparse
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile

failures = []


def fail(msg):
    failures.append(msg)
    print('FAIL: ' + msg, file=sys.stderr)


def run(cmd, **kw):
    return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, **kw)


def inside(destdir, path):
    """path (absolute, as installed) under destdir."""
    return os.path.join(destdir, path.lstrip('/'))


def check_library(destdir, installed):
    libs = [p for p in installed if re.search(r'/libdbswap\.so[.0-9]*$', p)]
    real = [p for p in libs if not os.path.islink(inside(destdir, p))]
    if len(real) != 1:
        fail(f'expected one real libdbswap.so.* file, got {real}')
        return
    libdir = os.path.dirname(real[0])
    so0 = inside(destdir, libdir + '/libdbswap.so.0')
    so = inside(destdir, libdir + '/libdbswap.so')
    for link, target in ((so, 'libdbswap.so.0'),
                         (so0, os.path.basename(real[0]))):
        if not os.path.islink(link):
            fail(f'{link} is not a symlink')
        elif os.readlink(link) != target:
            fail(f'{link} -> {os.readlink(link)}, expected {target}')
    if shutil.which('readelf'):
        out = run(['readelf', '-d', inside(destdir, real[0])]).stdout
        m = re.search(r'\(SONAME\)\s+Library soname: \[([^\]]+)\]', out)
        if not m or m.group(1) != 'libdbswap.so.0':
            fail(f'SONAME of {real[0]}: {m.group(1) if m else None}')


# How the README and the example build against libdbswap.
PKG_CONFIG_LINE = '$(pkg-config --cflags --libs dbswap)'


def check_compile(destdir, installed, cc, tmp):
    pcs = [p for p in installed if p.endswith('/dbswap.pc')]
    if not cc or not pcs or not shutil.which('pkg-config'):
        print('compile check skipped (no compiler, .pc or pkg-config)')
        return
    # The installed .pc as it is: it names its prefix relative to itself
    # (pkgconfig.relocatable), so it works from DESTDIR; the other packages
    # (libpq) come from the system.
    pcdir = os.path.dirname(inside(destdir, pcs[0]))
    env = dict(os.environ, PKG_CONFIG_PATH=pcdir)
    flags = run(['pkg-config', '--cflags', '--libs', 'dbswap'], env=env)
    if flags.returncode != 0:
        fail('pkg-config dbswap: ' + flags.stdout.strip())
        return
    # The shipped example, built the way its comment and the README say.
    example = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                           '..', 'client-lib', 'c', 'examples',
                           'pool-example.c')
    with open(example) as f:
        if PKG_CONFIG_LINE not in f.read():
            fail(f'{example}: its build line no longer uses '
                 f'"{PKG_CONFIG_LINE}" (keep it and the README\'s in step)')
    cmd = cc + ['-std=c11', '-Wall', '-Werror', example, '-pthread', '-o',
                os.path.join(tmp, 'pool-example')] + flags.stdout.split()
    out = run(cmd)
    if out.returncode != 0:
        fail('the example does not build against the installed dbswap.h and '
             'dbswap.pc:\n  ' + ' '.join(cmd) + '\n' + out.stdout)
    else:
        print('compiled and linked against the installed header and .pc')


def check_units(destdir, installed, man_pages, tmp):
    units = [p for p in installed
             if re.search(r'/systemd/system/dbswapd\.(service|socket)$', p)]
    if not units:
        return
    # systemd-analyze verify checks that ExecStart= is executable: point it
    # at the binary in DESTDIR; the rest of each unit stays as installed.
    sbin = [p for p in installed if p.endswith('/dbswapd')]
    unitdir = os.path.join(tmp, 'units')
    os.makedirs(unitdir)
    docs = set()
    for u in units:
        with open(inside(destdir, u)) as f:
            text = f.read()
        for line in text.splitlines():
            if line.startswith('Documentation='):
                docs.update(line.split('=', 1)[1].split())
        for s in sbin:
            text = text.replace(s, inside(destdir, s))
        with open(os.path.join(unitdir, os.path.basename(u)), 'w') as f:
            f.write(text)
    if shutil.which('systemd-analyze'):
        out = run(['systemd-analyze', 'verify', '--man=no'] +
                  [os.path.join(unitdir, os.path.basename(u)) for u in units])
        if out.returncode != 0 or out.stdout.strip():
            fail('systemd-analyze verify:\n' + out.stdout)
        else:
            print('systemd-analyze verify: ' +
                  ', '.join(os.path.basename(u) for u in units) + ' OK')
    if man_pages:
        names = {os.path.basename(p) for p in man_pages}
        for d in sorted(docs):
            m = re.fullmatch(r'man:([^()]+)\((\w+)\)', d)
            if m and f'{m.group(1)}.{m.group(2)}' not in names:
                fail(f'the units name {d}, which is not installed')


def check_sysusers_tmpfiles(destdir, installed, tmp):
    sysusers = [p for p in installed if '/sysusers.d/' in p]
    tmpfiles = [p for p in installed if '/tmpfiles.d/' in p]
    if not sysusers:
        return
    root = os.path.join(tmp, 'root')
    os.makedirs(os.path.join(root, 'etc'))
    if not shutil.which('systemd-sysusers'):
        print('sysusers check skipped (no systemd-sysusers)')
        return
    out = run(['systemd-sysusers', '--root=' + root] +
              [inside(destdir, p) for p in sysusers])
    if out.returncode != 0:
        fail('systemd-sysusers: ' + out.stdout)
        return
    with open(os.path.join(root, 'etc/passwd')) as f:
        users = {l.split(':')[0]: l.strip().split(':') for l in f}
    with open(os.path.join(root, 'etc/group')) as f:
        groups = {l.split(':')[0]: l.strip().split(':') for l in f}
    u = users.get('dbswap')
    if not u or 'dbswap' not in groups:
        fail(f'sysusers made no user and group dbswap: {users} {groups}')
        return
    if 'dbswap-clients' not in groups:
        fail(f'sysusers made no group dbswap-clients: {groups}')
        return
    if u[3] != groups['dbswap'][2]:
        fail(f'user dbswap has the primary gid {u[3]}, not dbswap\'s')
    if not u[6].endswith('nologin'):
        fail(f'user dbswap has the shell {u[6]}')
    print(f'sysusers: user dbswap uid {u[2]}, group dbswap gid {u[3]}, '
          f'group dbswap-clients gid {groups["dbswap-clients"][2]}, '
          f'shell {u[6]}')
    if not tmpfiles or not shutil.which('systemd-tmpfiles'):
        return
    if os.geteuid() != 0:
        print('tmpfiles check skipped (it chowns: needs root)')
        return
    out = run(['systemd-tmpfiles', '--root=' + root, '--create'] +
              [inside(destdir, p) for p in tmpfiles])
    if out.returncode != 0:
        fail('systemd-tmpfiles: ' + out.stdout)
        return
    found = False
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.basename(dirpath) == 'dbswap' and 'etc' in dirpath:
            st = os.stat(dirpath)
            found = True
            want = (0o750, 0, int(groups['dbswap'][2]))
            got = (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if got != want:
                fail(f'{dirpath}: mode/uid/gid {got}, expected {want}')
            else:
                print(f'tmpfiles: {dirpath[len(root):]} 0750 root:dbswap')
    if not found:
        fail('tmpfiles made no .../etc/dbswap')


def unit_settings(text):
    """{'Key': 'last value'} of a unit file's lines."""
    out = {}
    for line in text.splitlines():
        if '=' in line and not line.lstrip().startswith(('#', ';', '[')):
            k, v = line.split('=', 1)
            out[k.strip()] = v.strip()
    return out


def check_groups(destdir, installed):
    """Apps connect through the socket's group; the env files are read by
    the service's group: never the same group, or every app reads every
    password from the files, whatever --allow says."""
    def read(pattern):
        ps = [p for p in installed if re.search(pattern, p)]
        if not ps:
            return None
        with open(inside(destdir, ps[0])) as f:
            return f.read()
    service, sock = read(r'/dbswapd\.service$'), read(r'/dbswapd\.socket$')
    tmpfiles = read(r'/tmpfiles\.d/dbswap\.conf$')
    if service is None or sock is None:
        return
    svc, skt = unit_settings(service), unit_settings(sock)
    if skt.get('SocketGroup') != 'dbswap-clients':
        fail(f'dbswapd.socket: SocketGroup={skt.get("SocketGroup")}, '
             f'expected dbswap-clients')
    if skt.get('SocketMode') != '0660':
        fail(f'dbswapd.socket: SocketMode={skt.get("SocketMode")}, '
             f'expected 0660')
    if skt.get('SocketGroup') == svc.get('Group'):
        fail(f'the socket\'s group is the service\'s, {svc.get("Group")}: '
             f'apps would read the env files')
    if svc.get('PrivateUsers', 'no') not in ('no', 'false', '0', 'off'):
        fail(f'dbswapd.service: PrivateUsers={svc["PrivateUsers"]}: '
             f'peers would read as 65534 to --allow')
    for key in ('MemoryMax', 'TasksMax'):
        if key not in svc:
            fail(f'dbswapd.service: no {key}=')
    if tmpfiles is not None:
        for line in tmpfiles.splitlines():
            f = line.split()
            if len(f) >= 5 and f[0] == 'd' and f[1].endswith('/dbswap'):
                if f[4] != svc.get('Group') or f[4] == skt.get('SocketGroup'):
                    fail(f'tmpfiles.d: {f[1]} group {f[4]}: expected the '
                         f'service\'s ({svc.get("Group")}), not the '
                         f'socket\'s')
    print(f'groups: socket {skt.get("SocketGroup")} {skt.get("SocketMode")}, '
          f'service and env files {svc.get("Group")}')


def check_man(destdir, man_pages):
    for p in man_pages:
        path = inside(destdir, p)
        with open(path, 'rb') as f:
            head = f.read(4096)
        if not head or not re.search(rb'^\.TH ', head, re.M):
            fail(f'{p}: not a man page (no .TH line)')
    if man_pages:
        print('man pages: ' + ' '.join(sorted(os.path.basename(p)
                                              for p in man_pages)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--meson', nargs='+', required=True)
    ap.add_argument('--builddir', required=True)
    ap.add_argument('--cc', nargs='*', default=[])
    ap.add_argument('--require', action='append', default=[])
    ap.add_argument('--man-pages', choices=['enabled', 'disabled', 'auto'],
                    default='auto')
    args = ap.parse_args()
    meson = args.meson
    if not shutil.which(meson[0]) and not os.path.exists(meson[0]):
        print('meson not found: skipped')
        return 77

    intro = run(meson + ['introspect', '--installed', args.builddir])
    if intro.returncode != 0:
        print(intro.stdout, file=sys.stderr)
        return 1
    installed = sorted(set(json.loads(intro.stdout).values()))
    opts = json.loads(run(meson + ['introspect', '--buildoptions',
                                   args.builddir]).stdout)
    prefix = next(o['value'] for o in opts if o['name'] == 'prefix')

    with tempfile.TemporaryDirectory(prefix='dbswap-install-') as tmp:
        destdir = os.path.join(tmp, 'dest')
        out = run(meson + ['install', '-C', args.builddir, '--no-rebuild',
                           '--quiet', '--destdir', destdir])
        if out.returncode != 0:
            print(out.stdout, file=sys.stderr)
            fail('meson install failed')
            return 1

        for p in installed:
            if not os.path.lexists(inside(destdir, p)):
                fail(f'meson lists {p}, not installed')
        for p in args.require:
            if p not in installed:
                fail(f'{p} is not installed')
        if prefix != '/usr':
            for p in installed:
                if not p.startswith(prefix.rstrip('/') + '/'):
                    fail(f'{p} is outside the prefix {prefix}')
        # Anything in DESTDIR that meson does not list (a stray file).
        listed = {inside(destdir, p) for p in installed}
        for dirpath, _, files in os.walk(destdir):
            for f in files:
                path = os.path.join(dirpath, f)
                if path not in listed and not os.path.islink(path):
                    fail(f'{path[len(destdir):]} installed but not listed')

        for p in installed:
            if re.search(r'/s?bin/[^/]+$', p):
                if not os.access(inside(destdir, p), os.X_OK):
                    fail(f'{p} is not executable')
        check_library(destdir, installed)
        check_compile(destdir, installed, args.cc, tmp)

        man_pages = [p for p in installed
                     if re.search(r'/man/man\w+/[^/]+\.\w+$', p)]
        if args.man_pages == 'enabled' and not man_pages:
            fail('man pages enabled, none installed')
        check_man(destdir, man_pages)
        check_units(destdir, installed, man_pages, tmp)
        check_groups(destdir, installed)
        check_sysusers_tmpfiles(destdir, installed, tmp)

        print(f'{len(installed)} files installed under {prefix}:')
        for p in installed:
            print('  ' + p)
    if failures:
        print(f'{len(failures)} failure(s)', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
